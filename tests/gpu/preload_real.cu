// A plain CUDA program, as libckalloc_preload.so meets it in the wild: the
// runtime API (cudaMalloc/cudaFree, cudaMallocAsync/cudaFreeAsync on three
// streams, cudaMemGetInfo) and the driver API reached through the runtime's
// driver entry point (cuMemAlloc_v2/cuMemFree_v2), with kernels that write a
// pattern into every block and check it again just before the block is
// freed, so overlapping or reused-too-early memory shows up as bad bytes.
//
// It knows nothing of ckalloc. When it finds ckalloc_preload_pool in the
// process (it runs under LD_PRELOAD=libckalloc_preload.so) it also reads the
// pool's stats through dlsym and reports them.
//
// Prints one JSON line. Exit 0 pass, 1 fail, 77 skipped (no CUDA device).
// tests/gpu/preload_real.sh runs it plain and under the preload library.
#include <ckalloc/ckalloc.h> // types only: nothing of libckalloc is linked
#include <cuda.h>            // driver types only: libcuda is reached through cudart
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

const int kStreams = 3;
const int kRounds = 48;   // async rounds per stream
const int kLive = 4;      // blocks kept live per stream (checked again at free)
const size_t kMiB = (size_t)1 << 20;

struct Failure {
    int count = 0;
    std::string first;
    void add(const std::string &what) {
        if (count++ == 0) first = what;
        fprintf(stderr, "preload_real: FAIL: %s\n", what.c_str());
    }
} g_fail;

bool cuda_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return true;
    g_fail.add(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
    return false;
}

__device__ __host__ inline unsigned char pattern(size_t i, unsigned seed) {
    return (unsigned char)(((i * 2654435761u) >> 11) ^ seed ^ (i >> 20));
}

__global__ void fill_kernel(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = pattern(i, seed);
}

__global__ void check_kernel(const unsigned char *p, size_t n, unsigned seed,
                             unsigned long long *bad) {
    unsigned long long mine = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        mine += p[i] != pattern(i, seed);
    if (mine) atomicAdd(bad, mine);
}

unsigned grid_for(size_t n) {
    size_t g = (n + 255) / 256;
    return (unsigned)(g < 1 ? 1 : g > 1024 ? 1024 : g);
}

void fill(void *p, size_t n, unsigned seed, cudaStream_t s) {
    fill_kernel<<<grid_for(n), 256, 0, s>>>((unsigned char *)p, n, seed);
}

void check(const void *p, size_t n, unsigned seed, unsigned long long *bad, cudaStream_t s) {
    check_kernel<<<grid_for(n), 256, 0, s>>>((const unsigned char *)p, n, seed, bad);
}

// Sizes from a few bytes to tens of MiB, the mix a training step makes.
size_t size_at(int i) {
    static const size_t sizes[] = {1,          700,        4096,        65536 + 3, 1 * kMiB,
                                   3 * kMiB + 5, 512,      24 * kMiB,   200000,    8 * kMiB,
                                   2 * kMiB,   48 * kMiB + 511};
    return sizes[(size_t)i % (sizeof sizes / sizeof sizes[0])];
}

// The pool's stats when libckalloc_preload.so is in the process.
struct CkView {
    bool present = false;
    ck_stats st;
    bool read(int dev) {
        typedef ck_pool *(*pool_fn)(int);
        typedef ck_status (*stats_fn)(ck_pool *, ck_stats *);
        pool_fn pool = (pool_fn)dlsym(RTLD_DEFAULT, "ckalloc_preload_pool");
        stats_fn get = (stats_fn)dlsym(RTLD_DEFAULT, "ck_get_stats");
        if (!pool || !get) return false;
        present = true;
        ck_pool *p = pool(dev);
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        return p && get(p, &st) == CK_OK;
    }
};

typedef CUresult (*cu_mem_alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*cu_mem_free_t)(CUdeviceptr);

void *driver_entry(const char *name) {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    cudaError_t e = cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &q);
#else
    cudaError_t e = cudaGetDriverEntryPoint(name, &fn, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn) {
        g_fail.add(std::string("driver entry point ") + name + ": " + cudaGetErrorName(e));
        return nullptr;
    }
    return fn;
}

} // namespace

int main() {
    auto t0 = std::chrono::steady_clock::now();
    const char *pre = getenv("LD_PRELOAD");
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        printf("{\"test\":\"preload_real\",\"skipped\":\"no CUDA device (%s)\"}\n",
               e == cudaSuccess ? "0 devices" : cudaGetErrorName(e));
        return 77;
    }
    const int dev = 0;
    cudaDeviceProp prop;
    if (!cuda_ok(cudaSetDevice(dev), "cudaSetDevice") ||
        !cuda_ok(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties"))
        return 1;
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);

    size_t free0 = 0, total0 = 0;
    cuda_ok(cudaMemGetInfo(&free0, &total0), "cudaMemGetInfo (start)");

    // One bad-byte counter per stream plus one for the synchronous tests,
    // themselves allocated through cudaMalloc.
    unsigned long long *bad = nullptr;
    if (!cuda_ok(cudaMalloc((void **)&bad, (kStreams + 1) * sizeof *bad), "cudaMalloc (counters)"))
        return 1;
    cuda_ok(cudaMemset(bad, 0, (kStreams + 1) * sizeof *bad), "cudaMemset (counters)");
    unsigned long long *bad_sync = bad + kStreams;
    long allocs = 1, frees = 0;
    unsigned long long bytes_checked = 0;
    std::string malloc0;

    // ---- cudaMalloc / cudaFree, legacy default stream ----
    {
        std::vector<void *> ps;
        std::vector<size_t> ns;
        for (int i = 0; i < 8; i++) {
            void *p = nullptr;
            size_t n = size_at(i * 5 + 1);
            if (!cuda_ok(cudaMalloc(&p, n), "cudaMalloc")) break;
            allocs++;
            fill(p, n, 100 + i, 0);
            ps.push_back(p);
            ns.push_back(n);
        }
        for (size_t i = 0; i < ps.size(); i++) {
            check(ps[i], ns[i], 100 + (unsigned)i, bad_sync, 0);
            bytes_checked += ns[i];
        }
        // A spot check from the host too, so the kernels are not only
        // checking themselves.
        if (!ps.empty()) {
            std::vector<unsigned char> h(ns[0] < 4096 ? ns[0] : 4096);
            if (cuda_ok(cudaMemcpy(h.data(), ps[0], h.size(), cudaMemcpyDeviceToHost), "cudaMemcpy D2H"))
                for (size_t i = 0; i < h.size(); i++)
                    if (h[i] != pattern(i, 100)) {
                        g_fail.add("host readback of the first cudaMalloc block differs");
                        break;
                    }
        }
        for (void *p : ps)
            if (cuda_ok(cudaFree(p), "cudaFree")) frees++;
        // Size 0: whatever CUDA answers, the preloaded run must answer the
        // same (the wrapper compares malloc0 between the two runs).
        void *z = (void *)&z;
        cudaError_t e0 = cudaMalloc(&z, 0);
        malloc0 = std::string(cudaGetErrorName(e0)) + (z ? "/non-null" : "/null");
        if (e0 == cudaSuccess && z) cudaFree(z);
        cudaGetLastError();
        cuda_ok(cudaFree(nullptr), "cudaFree(NULL)");
    }

    // ---- cudaMallocAsync / cudaFreeAsync on three streams ----
    cudaStream_t st[kStreams];
    cudaEvent_t ev[kStreams];
    for (int k = 0; k < kStreams; k++) {
        cuda_ok(cudaStreamCreateWithFlags(&st[k], cudaStreamNonBlocking), "cudaStreamCreate");
        cuda_ok(cudaEventCreateWithFlags(&ev[k], cudaEventDisableTiming), "cudaEventCreate");
    }
    struct Live {
        void *p;
        size_t n;
        unsigned seed;
    };
    std::vector<Live> live[kStreams];
    unsigned seed = 1000;
    for (int r = 0; r < kRounds && g_fail.count == 0; r++) {
        for (int k = 0; k < kStreams; k++) {
            size_t n = size_at(r * kStreams + k);
            void *p = nullptr;
            if (!cuda_ok(cudaMallocAsync(&p, n, st[k]), "cudaMallocAsync")) break;
            allocs++;
            seed++;
            fill(p, n, seed, st[k]);
            check(p, n, seed, &bad[k], st[k]);
            bytes_checked += n;
            if (r % 5 == 4) {
                // Hand the block to the next stream: it checks it after an
                // event and frees it there.
                int j = (k + 1) % kStreams;
                cuda_ok(cudaEventRecord(ev[k], st[k]), "cudaEventRecord");
                cuda_ok(cudaStreamWaitEvent(st[j], ev[k], 0), "cudaStreamWaitEvent");
                check(p, n, seed, &bad[j], st[j]);
                bytes_checked += n;
                if (cuda_ok(cudaFreeAsync(p, st[j]), "cudaFreeAsync (other stream)")) frees++;
                continue;
            }
            live[k].push_back({p, n, seed});
            if (live[k].size() > (size_t)kLive) {
                Live old = live[k].front();
                live[k].erase(live[k].begin());
                check(old.p, old.n, old.seed, &bad[k], st[k]); // nobody wrote over it
                bytes_checked += old.n;
                if (cuda_ok(cudaFreeAsync(old.p, st[k]), "cudaFreeAsync")) frees++;
            }
        }
    }
    size_t free_mid = 0, total_mid = 0;
    cuda_ok(cudaMemGetInfo(&free_mid, &total_mid), "cudaMemGetInfo (busy)");
    CkView ck_mid;
    ck_mid.read(dev);
    for (int k = 0; k < kStreams; k++) {
        for (Live &l : live[k]) {
            check(l.p, l.n, l.seed, &bad[k], st[k]);
            bytes_checked += l.n;
            if (cuda_ok(cudaFreeAsync(l.p, st[k]), "cudaFreeAsync (drain)")) frees++;
        }
        live[k].clear();
    }
    for (int k = 0; k < kStreams; k++) cuda_ok(cudaStreamSynchronize(st[k]), "cudaStreamSynchronize");

    // ---- driver API through the runtime's driver entry point ----
    cu_mem_alloc_t cu_alloc = (cu_mem_alloc_t)driver_entry("cuMemAlloc");
    cu_mem_free_t cu_free = (cu_mem_free_t)driver_entry("cuMemFree");
    int driver_blocks = 0;
    if (cu_alloc && cu_free) {
        const size_t n1 = 8 * kMiB + 77, n2 = 1000;
        CUdeviceptr d1 = 0, d2 = 0;
        CUresult c1 = cu_alloc(&d1, n1), c2 = cu_alloc(&d2, n2);
        if (c1 != CUDA_SUCCESS || c2 != CUDA_SUCCESS) {
            g_fail.add("cuMemAlloc_v2 returned " + std::to_string((int)c1) + "/" + std::to_string((int)c2));
        } else {
            allocs += 2;
            driver_blocks = 2;
            fill((void *)d1, n1, 7, 0);
            fill((void *)d2, n2, 8, 0);
            check((void *)d1, n1, 7, bad_sync, 0);
            check((void *)d2, n2, 8, bad_sync, 0);
            bytes_checked += n1 + n2;
            cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize (driver blocks)");
            if (cu_free(d1) == CUDA_SUCCESS) frees++;
            else g_fail.add("cuMemFree_v2 failed");
            // A driver allocation freed through the runtime: allowed by CUDA.
            if (cuda_ok(cudaFree((void *)d2), "cudaFree of a cuMemAlloc block")) frees++;
        }
        // And the other way round: cudaMalloc memory freed by cuMemFree.
        void *p = nullptr;
        if (cuda_ok(cudaMalloc(&p, 3 * kMiB), "cudaMalloc (for cuMemFree)")) {
            allocs++;
            fill(p, 3 * kMiB, 9, 0);
            check(p, 3 * kMiB, 9, bad_sync, 0);
            bytes_checked += 3 * kMiB;
            cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
            if (cu_free((CUdeviceptr)p) == CUDA_SUCCESS) frees++;
            else g_fail.add("cuMemFree_v2 of a cudaMalloc block failed");
        }
    }

    cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    cuda_ok(cudaGetLastError(), "kernel launch");
    unsigned long long hbad[kStreams + 1] = {0};
    cuda_ok(cudaMemcpy(hbad, bad, sizeof hbad, cudaMemcpyDeviceToHost), "cudaMemcpy (counters)");
    unsigned long long bad_bytes = 0;
    for (int k = 0; k <= kStreams; k++) bad_bytes += hbad[k];
    if (bad_bytes) g_fail.add(std::to_string(bad_bytes) + " bytes did not hold their pattern");
    if (cuda_ok(cudaFree(bad), "cudaFree (counters)")) frees++;
    if (allocs != frees) g_fail.add("allocations and frees do not match");
    for (int k = 0; k < kStreams; k++) {
        cudaEventDestroy(ev[k]);
        cuda_ok(cudaStreamDestroy(st[k]), "cudaStreamDestroy");
    }
    size_t free1 = 0, total1 = 0;
    cuda_ok(cudaMemGetInfo(&free1, &total1), "cudaMemGetInfo (end)");
    CkView ck;
    bool ck_read = ck.read(dev);
    // How the preload's hooks matched cudart's cuGetProcAddress answers: by
    // the driver's exported address, or by base name (the driver handed out
    // internal addresses). -1: no preload in the process.
    long hooks_by_address = -1, hooks_by_name = -1;
    typedef void (*matches_fn)(unsigned long *, unsigned long *);
    if (matches_fn m = (matches_fn)dlsym(RTLD_DEFAULT, "ckalloc_preload_hook_matches")) {
        unsigned long a = 0, n = 0;
        m(&a, &n);
        hooks_by_address = (long)a;
        hooks_by_name = (long)n;
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

    std::string pre_json = pre ? pre : "";
    for (size_t i = 0; i < pre_json.size(); i++)
        if (pre_json[i] == '"' || pre_json[i] == '\\') pre_json[i] = '_';
    std::string first = g_fail.first;
    for (char &c : first)
        if (c == '"' || c == '\\') c = '\'';
    printf("{\"test\":\"preload_real\",\"ok\":%s,\"failures\":%d,\"first_failure\":\"%s\","
           "\"device\":\"%s\",\"cc\":\"%d.%d\",\"runtime\":%d,\"driver\":%d,\"ld_preload\":\"%s\","
           "\"ckalloc_in_process\":%s,\"malloc0\":\"%s\",\"allocs\":%ld,\"frees\":%ld,\"driver_api_blocks\":%d,"
           "\"bytes_checked\":%llu,\"bad_bytes\":%llu,"
           "\"mem_free_start\":%zu,\"mem_total_start\":%zu,\"mem_free_busy\":%zu,"
           "\"mem_total_busy\":%zu,\"mem_free_end\":%zu,\"mem_total_end\":%zu,\"ms\":%.1f,"
           "\"hooks_by_address\":%ld,\"hooks_by_name\":%ld",
           g_fail.count ? "false" : "true", g_fail.count, first.c_str(), prop.name, prop.major,
           prop.minor, rt, drv, pre_json.c_str(), ck.present ? "true" : "false", malloc0.c_str(), allocs, frees,
           driver_blocks, bytes_checked, bad_bytes, free0, total0, free_mid, total_mid, free1,
           total1, ms, hooks_by_address, hooks_by_name);
    if (ck_read)
        printf(",\"ck\":{\"budget\":%llu,\"allocation_allocated\":%llu,\"allocation_current\":%lld,"
               "\"allocation_peak_busy\":%lld,\"allocated_bytes_peak\":%lld,"
               "\"physical_bytes_peak\":%lld,\"reserved_bytes_current\":%lld,\"num_ooms\":%llu}",
               (unsigned long long)ck.st.budget, (unsigned long long)ck.st.allocation.allocated,
               (long long)ck.st.allocation.current, (long long)ck_mid.st.allocation.peak,
               (long long)ck.st.allocated_bytes.peak, (long long)ck.st.physical_bytes.peak,
               (long long)ck.st.reserved_bytes.current, (unsigned long long)ck.st.num_ooms);
    printf("}\n");
    return g_fail.count ? 1 : 0;
}
