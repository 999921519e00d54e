/* A runtime-API program (links the stand-in libcudart, which reaches the
 * driver through cuGetProcAddress like the real one) run under
 * LD_PRELOAD=libckalloc_preload.so with CKALLOC_CONF=budget=1G. */
#include "ckp_check.h"
#include "cuda_abi.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int cudaError_t;
typedef CUstream cudaStream_t;
cudaError_t cudaMalloc(void **, size_t);
cudaError_t cudaFree(void *);
cudaError_t cudaMallocAsync(void **, size_t, cudaStream_t);
cudaError_t cudaFreeAsync(void *, cudaStream_t);
cudaError_t cudaMemGetInfo(size_t *, size_t *);
cudaError_t cudaStreamCreate(cudaStream_t *);
cudaError_t cudaStreamDestroy(cudaStream_t);
cudaError_t cudaGetDriverEntryPoint(const char *, void **, unsigned long long, int *);
CUresult ckfake_alloc_direct(CUdeviceptr *, size_t);

#define MiB ((size_t)1 << 20)

int main(void) {
    CHECK(preloaded());
    /* The first call of the program: no context exists yet. */
    void *a = NULL;
    CHECK(cudaMalloc(&a, 3 * MiB) == 0 && a);
    memset(a, 0x5a, 3 * MiB);
    CHECK(ckfake_memalloc_calls() == 0);
    CHECK(pool_stats().allocation.current == 1);
    void *z = (void *)1;
    CHECK(cudaMalloc(&z, 0) == 0 && z == NULL);

    size_t f, t;
    CHECK(cudaMemGetInfo(&f, &t) == 0);
    CHECK(t == ((size_t)1 << 30));
    CHECK(f + 3 * MiB <= t);

    cudaStream_t s[3];
    for (int i = 0; i < 3; i++) CHECK(cudaStreamCreate(&s[i]) == 0);
    void *b[3];
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < 3; i++) CHECK(cudaMallocAsync(&b[i], (size_t)(r + 1) * MiB, s[i]) == 0);
        for (int i = 0; i < 3; i++) CHECK(cudaFreeAsync(b[i], s[i]) == 0);
    }
    CHECK(pool_stats().allocation.current == 1);

    /* Driver entry points handed out by the runtime are ours too. */
    CUresult (*alloc)(CUdeviceptr *, size_t) = NULL;
    CHECK(cudaGetDriverEntryPoint("cuMemAlloc", (void **)&alloc, 0, NULL) == 0 && alloc);
    CUdeviceptr d;
    CHECK(alloc(&d, MiB) == CUDA_SUCCESS);
    CHECK(pool_stats().allocation.current == 2);
    CHECK(cudaFree((void *)(uintptr_t)d) == 0);

    CHECK(cudaFree(a) == 0);
    CHECK(cudaFree(a) == 1);    /* cudaErrorInvalidValue, as the driver says */
    CHECK(cudaFree(NULL) == 0);
    CUdeviceptr foreign;
    CHECK(ckfake_alloc_direct(&foreign, MiB) == CUDA_SUCCESS);
    CHECK(cudaFree((void *)(uintptr_t)foreign) == 0);
    CHECK(ckfake_memalloc_live() == 0);
    CHECK(ckfake_memalloc_calls() == 1); /* only the direct one */
    for (int i = 0; i < 3; i++) CHECK(cudaStreamDestroy(s[i]) == 0);
    CHECK(pool_stats().allocation.current == 0);

    /* How the driver hooks got in: CKP_EXPECT_MATCH=address (the driver
     * answers with its exported functions) or name (internal addresses,
     * CKFAKECUDA_PROC_INTERNAL=1). */
    void (*matches)(unsigned long *, unsigned long *) =
        (void (*)(unsigned long *, unsigned long *))dlsym(RTLD_DEFAULT,
                                                           "ckalloc_preload_hook_matches");
    CHECK(matches);
    unsigned long by_address = 0, by_name = 0;
    matches(&by_address, &by_name);
    const char *expect = getenv("CKP_EXPECT_MATCH");
    if (expect && strcmp(expect, "name") == 0) CHECK(by_name > 0 && by_address == 0);
    else CHECK(by_address > 0 && by_name == 0);
    printf("ok: ckp_runtime (hooks matched by %s: %lu by address, %lu by name)\n",
           by_name ? "name" : "address", by_address, by_name);
    return 0;
}
