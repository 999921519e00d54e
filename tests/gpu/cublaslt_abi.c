/* kernels/cublaslt_abi.h (the hand-declared cuBLASLt ABI the library calls
 * through dlopen) against the toolkit's own headers: every enum value, and
 * the size and layout of every struct passed by value or through a pointer.
 * Built only where cublasLt.h is found; the checks are at compile time, the
 * program just says so. Needs no GPU. */
#include <cublasLt.h>
#include <library_types.h>

#include "cublaslt_abi.h"

#include <stddef.h>
#include <stdio.h>

#define SAME(name) _Static_assert((long)CK_##name == (long)name, #name " differs from cublasLt.h");

SAME(CUBLAS_STATUS_SUCCESS)
SAME(CUBLAS_STATUS_NOT_INITIALIZED)
SAME(CUBLAS_STATUS_ALLOC_FAILED)
SAME(CUBLAS_STATUS_INVALID_VALUE)
SAME(CUBLAS_STATUS_ARCH_MISMATCH)
SAME(CUBLAS_STATUS_EXECUTION_FAILED)
SAME(CUBLAS_STATUS_INTERNAL_ERROR)
SAME(CUBLAS_STATUS_NOT_SUPPORTED)
SAME(CUBLAS_OP_N)
SAME(CUBLAS_OP_T)
SAME(CUBLAS_COMPUTE_32F)
SAME(CUDA_R_32F)
SAME(CUDA_R_16F)
SAME(CUDA_R_16BF)
SAME(CUBLASLT_MATMUL_DESC_TRANSA)
SAME(CUBLASLT_MATMUL_DESC_TRANSB)
SAME(CUBLASLT_MATMUL_DESC_EPILOGUE)
SAME(CUBLASLT_MATMUL_DESC_BIAS_POINTER)
SAME(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE)
SAME(CUBLASLT_EPILOGUE_DEFAULT)
SAME(CUBLASLT_EPILOGUE_BIAS)
SAME(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)
SAME(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES)
SAME(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES)
SAME(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES)
SAME(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES)

/* enums travel as int */
_Static_assert(sizeof(cublasStatus_t) == sizeof(ck_cublasStatus_t), "cublasStatus_t");
_Static_assert(sizeof(cublasComputeType_t) == sizeof(ck_cublasComputeType_t), "compute type");
_Static_assert(sizeof(cudaDataType_t) == sizeof(ck_cudaDataType_t), "cudaDataType_t");
_Static_assert(sizeof(cublasLtMatmulDescAttributes_t) == sizeof(ck_cublasLtMatmulDescAttributes_t),
               "desc attributes");
_Static_assert(sizeof(cublasLtMatmulPreferenceAttributes_t) ==
                   sizeof(ck_cublasLtMatmulPreferenceAttributes_t),
               "preference attributes");
/* the attribute values' own types, as the header documents them */
_Static_assert(sizeof(cublasOperation_t) == sizeof(int32_t), "TRANSA/TRANSB are int32_t");
_Static_assert(sizeof(cublasLtEpilogue_t) == sizeof(uint32_t), "EPILOGUE is uint32_t");

/* by-value and by-pointer structs */
_Static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(ck_cublasLtMatmulAlgo_t), "algo size");
_Static_assert(sizeof(cublasLtMatmulHeuristicResult_t) ==
                   sizeof(ck_cublasLtMatmulHeuristicResult_t),
               "heuristic result size");
_Static_assert(offsetof(cublasLtMatmulHeuristicResult_t, algo) ==
                   offsetof(ck_cublasLtMatmulHeuristicResult_t, algo),
               "heuristic result: algo");
_Static_assert(offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize) ==
                   offsetof(ck_cublasLtMatmulHeuristicResult_t, workspaceSize),
               "heuristic result: workspaceSize");
_Static_assert(offsetof(cublasLtMatmulHeuristicResult_t, state) ==
                   offsetof(ck_cublasLtMatmulHeuristicResult_t, state),
               "heuristic result: state");
_Static_assert(offsetof(cublasLtMatmulHeuristicResult_t, wavesCount) ==
                   offsetof(ck_cublasLtMatmulHeuristicResult_t, wavesCount),
               "heuristic result: wavesCount");
_Static_assert(sizeof(cublasLtHandle_t) == sizeof(ck_cublasLtHandle_t), "handle");
_Static_assert(sizeof(cublasLtMatmulDesc_t) == sizeof(ck_cublasLtMatmulDesc_t), "desc");
_Static_assert(sizeof(cublasLtMatrixLayout_t) == sizeof(ck_cublasLtMatrixLayout_t), "layout");
_Static_assert(sizeof(cublasLtMatmulPreference_t) == sizeof(ck_cublasLtMatmulPreference_t),
               "preference");
_Static_assert(sizeof(cudaStream_t) == sizeof(void *), "stream");

/* Each entry point called with the argument list linear_cublaslt.c uses,
 * inside sizeof: type-checked (count and conversions), never evaluated,
 * so nothing here links libcublasLt. */
#define CALLS(h, d, l, p, res, got, one, zero)                                                   \
    (sizeof(cublasLtCreate(&h)) + sizeof(cublasLtDestroy(h)) +                                  \
     sizeof(cublasLtGetStatusString(CUBLAS_STATUS_SUCCESS)) +                                   \
     sizeof(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F)) +                     \
     sizeof(cublasLtMatmulDescDestroy(d)) +                                                     \
     sizeof(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &got, sizeof got)) + \
     sizeof(cublasLtMatrixLayoutCreate(&l, CUDA_R_16BF, (uint64_t)1, (uint64_t)1, (int64_t)1)) + \
     sizeof(cublasLtMatrixLayoutDestroy(l)) + sizeof(cublasLtMatmulPreferenceCreate(&p)) +     \
     sizeof(cublasLtMatmulPreferenceDestroy(p)) +                                               \
     sizeof(cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,   \
                                                 &got, sizeof got)) +                           \
     sizeof(cublasLtMatmulAlgoGetHeuristic(h, d, l, l, l, l, p, 1, &res, &got)) +               \
     sizeof(cublasLtMatmul(h, d, &one, 0, l, 0, l, &zero, 0, l, 0, l, &res.algo, 0, (size_t)0,  \
                           (cudaStream_t)0)))

_Static_assert(__builtin_types_compatible_p(__typeof__(cublasLtGetStatusString(0)), const char *),
               "cublasLtGetStatusString returns const char *");
_Static_assert(__builtin_types_compatible_p(__typeof__(cublasLtCreate(0)), cublasStatus_t),
               "cublasLt entry points return cublasStatus_t");

int main(void) {
    cublasLtHandle_t h = 0;
    cublasLtMatmulDesc_t d = 0;
    cublasLtMatrixLayout_t l = 0;
    cublasLtMatmulPreference_t p = 0;
    cublasLtMatmulHeuristicResult_t res;
    int got = 0;
    float one = 1, zero = 0;
    size_t n = CALLS(h, d, l, p, res, got, one, zero);
    (void)h, (void)d, (void)l, (void)p, (void)res, (void)one, (void)zero;
    printf("ok: kernels/cublaslt_abi.h matches cublasLt.h (cuBLAS %d.%d; %zu bytes of results "
           "type-checked)\n",
           CUBLAS_VER_MAJOR, CUBLAS_VER_MINOR, n);
    return 0;
}
