// Alloc+free pairs on a transformer-like size mix: ckalloc (backend=cuda,
// cache warm) vs cudaMalloc/cudaFree vs cudaMallocAsync/cudaFreeAsync (its
// pool kept warm too: release threshold = max). Prints one JSON line.
//
//   bench_cuda_alloc [pairs]     (default 5000: a few seconds; cudaMalloc
//                                 of the large sizes dominates)
//
// Exit 0 measured, 77 skipped (no CUDA device: one JSON line says so),
// 1 a call failed, 2 bad usage.
//
// Mix (fixed seed): 70% small, 512 B - 1 MiB (log-uniform, 512 B multiples),
// 30% large, 2 - 64 MiB (log-uniform, 2 MiB multiples) - the shapes of
// activations and gradients in a 7B fine-tune step.
#include <ckalloc/ckalloc.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng() { // splitmix64: same sequence everywhere
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unit() { return (double)(rng() >> 11) / 9007199254740992.0; }

static size_t log_uniform(double lo, double hi, size_t quantum) {
    double v = std::exp(std::log(lo) + unit() * (std::log(hi) - std::log(lo)));
    size_t s = ((size_t)v + quantum - 1) / quantum * quantum;
    return s < (size_t)lo ? (size_t)lo : s;
}

static double now_ns() {
    return (double)std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

static void die(const char *what, const char *why) {
    fprintf(stderr, "bench_cuda_alloc: %s: %s\n", what, why);
    exit(1);
}
#define CU(x)                                          \
    do {                                               \
        cudaError_t e_ = (x);                          \
        if (e_ != cudaSuccess)                         \
            die(#x, cudaGetErrorString(e_));           \
    } while (0)
#define CK(x)                                          \
    do {                                               \
        if ((x) != CK_OK)                              \
            die(#x, ck_last_error());                  \
    } while (0)

int main(int argc, char **argv) {
    long pairs = 5000;
    if (argc > 2) {
        fprintf(stderr, "usage: bench_cuda_alloc [pairs]\n");
        return 2;
    }
    if (argc == 2) {
        char *end = nullptr;
        pairs = strtol(argv[1], &end, 10);
        if (end == argv[1] || *end || pairs <= 0 || pairs > 100000000) {
            fprintf(stderr, "bench_cuda_alloc: pairs must be a whole number from 1 to 100000000, not '%s'\n",
                    argv[1]);
            return 2;
        }
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("{\"bench\":\"cuda_alloc\",\"skipped\":\"no CUDA device\"}\n");
        return 77;
    }

    std::vector<size_t> sizes((size_t)pairs);
    for (auto &s : sizes)
        s = unit() < 0.7 ? log_uniform(512, 1 << 20, 512) : log_uniform(2 << 20, 64 << 20, 2 << 20);

    cudaDeviceProp prop;
    CU(cudaSetDevice(0));
    CU(cudaGetDeviceProperties(&prop, 0));
    cudaStream_t st;
    CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));

    // ckalloc: one pass to warm the cache, then the timed pass.
    ck_pool *pool = nullptr;
    if (ck_pool_create_conf(&pool, "backend=cuda") != CK_OK) {
        // cudart sees a device: ckalloc failing to open it is a failure.
        fprintf(stderr, "bench_cuda_alloc: ckalloc cannot open the CUDA device cudart sees: %s\n",
                ck_last_error());
        return 1;
    }
    void *p = nullptr;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t s : sizes) {
            CK(ck_malloc(pool, &p, s, (ck_stream)st));
            CK(ck_free(pool, p, (ck_stream)st));
        }
    }
    double t0 = now_ns();
    for (size_t s : sizes) {
        CK(ck_malloc(pool, &p, s, (ck_stream)st));
        CK(ck_free(pool, p, (ck_stream)st));
    }
    double ck_ns = (now_ns() - t0) / (double)pairs;
    CU(cudaStreamSynchronize(st));
    CK(ck_pool_destroy(pool));

    // cudaMalloc / cudaFree (cudaFree synchronizes the device every time).
    for (size_t i = 0; i < sizes.size() && i < 64; i++) {
        CU(cudaMalloc(&p, sizes[i]));
        CU(cudaFree(p));
    }
    t0 = now_ns();
    for (size_t s : sizes) {
        CU(cudaMalloc(&p, s));
        CU(cudaFree(p));
    }
    double cm_ns = (now_ns() - t0) / (double)pairs;

    // cudaMallocAsync on the device's default pool, kept warm.
    cudaMemPool_t mp;
    CU(cudaDeviceGetDefaultMemPool(&mp, 0));
    uint64_t keep = UINT64_MAX;
    CU(cudaMemPoolSetAttribute(mp, cudaMemPoolAttrReleaseThreshold, &keep));
    for (size_t s : sizes) {
        CU(cudaMallocAsync(&p, s, st));
        CU(cudaFreeAsync(p, st));
    }
    CU(cudaStreamSynchronize(st));
    t0 = now_ns();
    for (size_t s : sizes) {
        CU(cudaMallocAsync(&p, s, st));
        CU(cudaFreeAsync(p, st));
    }
    double ca_ns = (now_ns() - t0) / (double)pairs;
    CU(cudaStreamSynchronize(st));
    CU(cudaStreamDestroy(st));

    printf("{\"bench\":\"cuda_alloc\",\"device\":\"%s\",\"pairs\":%ld,"
           "\"ckalloc_ns_per_pair\":%.1f,\"cudaMalloc_ns_per_pair\":%.1f,"
           "\"cudaMallocAsync_ns_per_pair\":%.1f,\"ratio_cudaMalloc_over_ckalloc\":%.2f,"
           "\"ratio_cudaMallocAsync_over_ckalloc\":%.2f}\n",
           prop.name, pairs, ck_ns, cm_ns, ca_ns, cm_ns / ck_ns, ca_ns / ck_ns);
    return 0;
}
