// A kernel writes into ckalloc memory and the host checks it, so
// compute-sanitizer has a real kernel touching pool memory to look at.
// Exit 0 pass, 1 fail, 77 skipped (no CUDA device).
#include <ckalloc/ckalloc.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

__global__ void fill(unsigned *p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = (unsigned)(i * 2654435761u) ^ seed;
}

static int run_once(ck_pool *pool, cudaStream_t st, size_t words, unsigned seed) {
    void *d = nullptr;
    if (ck_malloc(pool, &d, words * sizeof(unsigned), (ck_stream)st) != CK_OK) {
        printf("FAIL: ck_malloc %zu B: %s\n", words * sizeof(unsigned), ck_last_error());
        return 0;
    }
    fill<<<256, 256, 0, st>>>((unsigned *)d, words, seed);
    std::vector<unsigned> h(words);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(h.data(), d, words * sizeof(unsigned), cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(st);
    size_t bad = 0;
    for (size_t i = 0; e == cudaSuccess && i < words; i++)
        bad += h[i] != ((unsigned)(i * 2654435761u) ^ seed);
    int ok = e == cudaSuccess && bad == 0;
    printf("%s: kernel fill of %zu words at %p (%s, %zu bad)\n", ok ? "ok" : "FAIL", words, d,
           cudaGetErrorString(e), bad);
    if (ck_free(pool, d, (ck_stream)st) != CK_OK) {
        printf("FAIL: ck_free: %s\n", ck_last_error());
        ok = 0;
    }
    return ok;
}

int main() {
    unsetenv("CKALLOC_CUDA_LIB"); // a kernel needs the real driver
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    ck_pool *pool = nullptr;
    ck_status s = ck_pool_create_conf(&pool, "backend=cuda");
    if (s == CK_ERR_NO_DEVICE) {
        printf("skipped: no CUDA device (%s)\n", ck_last_error());
        return 77;
    }
    if (s != CK_OK) {
        printf("FAIL: ck_pool_create_conf: %s\n", ck_last_error());
        return 1;
    }
    cudaStream_t st;
    if (cudaStreamCreate(&st) != cudaSuccess) {
        printf("FAIL: cudaStreamCreate\n");
        return 1;
    }
    int ok = 1;
    // Small page, large block, then the large block again (reused memory).
    ok &= run_once(pool, st, 1000, 1);
    ok &= run_once(pool, st, (size_t)24 << 20, 2);
    ok &= run_once(pool, st, (size_t)24 << 20, 3);
    cudaStreamDestroy(st);
    if (ck_pool_destroy(pool) != CK_OK) {
        printf("FAIL: ck_pool_destroy: %s\n", ck_last_error());
        ok = 0;
    }
    printf("%s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
