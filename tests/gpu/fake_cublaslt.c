/* A stand-in libcublasLt.so.13 for the library's search order
 * (tests/unit/test_cublaslt_search.c): every symbol linear_cublaslt.c
 * resolves, nothing that computes. Built twice, FAKE_CREATE_OK 0 or 1:
 *   0: cublasLtCreate fails (the library moves on to the next candidate);
 *   1: cublasLtCreate succeeds, then the first descriptor call fails, so a
 *      linear replay's error names which copy was used.
 * cublasLtGetStatusString answers "fake cuBLASLt " FAKE_TAG. */
#include <stddef.h>

#define FK_EXPORT __attribute__((visibility("default")))
enum { FK_NOT_INITIALIZED = 1, FK_NOT_SUPPORTED = 15 };

FK_EXPORT const char *cublasLtGetStatusString(int status) {
    (void)status;
    return "fake cuBLASLt " FAKE_TAG;
}

FK_EXPORT int cublasLtCreate(void **handle) {
    static int h;
    if (!handle)
        return FK_NOT_INITIALIZED;
    *handle = FAKE_CREATE_OK ? (void *)&h : NULL;
    return FAKE_CREATE_OK ? 0 : FK_NOT_INITIALIZED;
}

FK_EXPORT int cublasLtDestroy(void *handle) {
    (void)handle;
    return 0;
}

FK_EXPORT int cublasLtMatmulDescCreate(void **desc, int compute, int scale) {
    (void)compute;
    (void)scale;
    if (desc)
        *desc = NULL;
    return FK_NOT_SUPPORTED;
}

/* Resolved, never reached (the descriptor call above fails first). */
#define FK_UNREACHED(name) \
    FK_EXPORT int name(void) { return FK_NOT_SUPPORTED; }
FK_UNREACHED(cublasLtMatmulDescDestroy)
FK_UNREACHED(cublasLtMatmulDescSetAttribute)
FK_UNREACHED(cublasLtMatrixLayoutCreate)
FK_UNREACHED(cublasLtMatrixLayoutDestroy)
FK_UNREACHED(cublasLtMatmulPreferenceCreate)
FK_UNREACHED(cublasLtMatmulPreferenceDestroy)
FK_UNREACHED(cublasLtMatmulPreferenceSetAttribute)
FK_UNREACHED(cublasLtMatmulAlgoGetHeuristic)
FK_UNREACHED(cublasLtMatmul)
