/* A runtime-API program (links only the stand-in libcudart, which loads the
 * driver at run time as the real one does) for the cases where there is no
 * driver or no device. It prints the code of each call on stdout, one
 * line, so a test can compare the answers with and without
 * LD_PRELOAD=libckalloc_preload.so: they must be the same. */
#include "cuda_abi.h"

#include <stddef.h>
#include <stdio.h>

typedef int cudaError_t;
cudaError_t cudaMalloc(void **, size_t);
cudaError_t cudaFree(void *);
cudaError_t cudaMemGetInfo(size_t *, size_t *);

int main(void) {
    size_t f = 0, t = 0;
    void *p = NULL;
    cudaError_t info1 = cudaMemGetInfo(&f, &t);
    cudaError_t mal = cudaMalloc(&p, 1 << 20);
    cudaError_t fr = mal == 0 ? cudaFree(p) : cudaFree(NULL);
    cudaError_t info2 = cudaMemGetInfo(&f, &t);
    printf("cudaMemGetInfo=%d cudaMalloc=%d cudaFree=%d cudaMemGetInfo=%d\n", info1, mal, fr,
           info2);
    return 0;
}
