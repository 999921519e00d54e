/* The slice of the cuBLASLt ABI the cuda backend's linear uses, declared by
 * hand so the library neither includes <cublasLt.h> nor links libcublasLt:
 * the library is dlopen'ed at the first linear (linear_cublaslt.c).
 *
 * Values and layouts are copied from cublasLt.h, cublas_api.h and
 * library_types.h (CUDA 12 and 13 agree on all of them). Every name carries
 * a ck_ / CK_ prefix so that tests/gpu/cublaslt_abi.c can include this file
 * next to the real headers and check each value, size and offset. */
#ifndef CK_CUBLASLT_ABI_H
#define CK_CUBLASLT_ABI_H

#include <stddef.h>
#include <stdint.h>

/* cublasStatus_t */
typedef int ck_cublasStatus_t;
enum {
    CK_CUBLAS_STATUS_SUCCESS = 0,
    CK_CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CK_CUBLAS_STATUS_ALLOC_FAILED = 3,
    CK_CUBLAS_STATUS_INVALID_VALUE = 7,
    CK_CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CK_CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CK_CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CK_CUBLAS_STATUS_NOT_SUPPORTED = 15
};

/* cublasOperation_t (an int32_t attribute) */
enum { CK_CUBLAS_OP_N = 0, CK_CUBLAS_OP_T = 1 };

/* cublasComputeType_t */
typedef int ck_cublasComputeType_t;
enum { CK_CUBLAS_COMPUTE_32F = 68 };

/* cudaDataType_t */
typedef int ck_cudaDataType_t;
enum { CK_CUDA_R_32F = 0, CK_CUDA_R_16F = 2, CK_CUDA_R_16BF = 14 };

/* cublasLtMatmulDescAttributes_t */
typedef int ck_cublasLtMatmulDescAttributes_t;
enum {
    CK_CUBLASLT_MATMUL_DESC_TRANSA = 3,          /* int32_t */
    CK_CUBLASLT_MATMUL_DESC_TRANSB = 4,          /* int32_t */
    CK_CUBLASLT_MATMUL_DESC_EPILOGUE = 7,        /* uint32_t */
    CK_CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,    /* const void * */
    CK_CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26  /* int32_t (cudaDataType_t) */
};

/* cublasLtEpilogue_t */
enum { CK_CUBLASLT_EPILOGUE_DEFAULT = 1, CK_CUBLASLT_EPILOGUE_BIAS = 4 };

/* cublasLtMatmulPreferenceAttributes_t */
typedef int ck_cublasLtMatmulPreferenceAttributes_t;
enum {
    CK_CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,  /* uint64_t */
    CK_CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5, /* uint32_t, default 256 */
    CK_CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
    CK_CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
    CK_CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8
};

/* Opaque handles: pointers to library-owned objects. */
typedef struct ck_cublasLtContext *ck_cublasLtHandle_t;
typedef struct ck_cublasLtMatmulDescOpaque *ck_cublasLtMatmulDesc_t;
typedef struct ck_cublasLtMatrixLayoutOpaque *ck_cublasLtMatrixLayout_t;
typedef struct ck_cublasLtMatmulPreferenceOpaque *ck_cublasLtMatmulPreference_t;

/* Semi-opaque, by value. */
typedef struct {
    uint64_t data[8];
} ck_cublasLtMatmulAlgo_t;

typedef struct {
    ck_cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    ck_cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} ck_cublasLtMatmulHeuristicResult_t;

/* Entry points, by exported name. cudaStream_t is the driver's CUstream. */
typedef ck_cublasStatus_t (*ck_pfn_cublasLtCreate)(ck_cublasLtHandle_t *handle);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtDestroy)(ck_cublasLtHandle_t handle);
typedef const char *(*ck_pfn_cublasLtGetStatusString)(ck_cublasStatus_t status);
typedef size_t (*ck_pfn_cublasLtGetVersion)(void);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatmulDescCreate)(ck_cublasLtMatmulDesc_t *desc,
                                                             ck_cublasComputeType_t compute,
                                                             ck_cudaDataType_t scale_type);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatmulDescDestroy)(ck_cublasLtMatmulDesc_t desc);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatmulDescSetAttribute)(
    ck_cublasLtMatmulDesc_t desc, ck_cublasLtMatmulDescAttributes_t attr, const void *buf,
    size_t size);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatrixLayoutCreate)(ck_cublasLtMatrixLayout_t *layout,
                                                               ck_cudaDataType_t type,
                                                               uint64_t rows, uint64_t cols,
                                                               int64_t ld);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatrixLayoutDestroy)(ck_cublasLtMatrixLayout_t layout);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatmulPreferenceCreate)(
    ck_cublasLtMatmulPreference_t *pref);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatmulPreferenceDestroy)(
    ck_cublasLtMatmulPreference_t pref);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatmulPreferenceSetAttribute)(
    ck_cublasLtMatmulPreference_t pref, ck_cublasLtMatmulPreferenceAttributes_t attr,
    const void *buf, size_t size);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatmulAlgoGetHeuristic)(
    ck_cublasLtHandle_t handle, ck_cublasLtMatmulDesc_t desc, ck_cublasLtMatrixLayout_t a,
    ck_cublasLtMatrixLayout_t b, ck_cublasLtMatrixLayout_t c, ck_cublasLtMatrixLayout_t d,
    ck_cublasLtMatmulPreference_t pref, int requested,
    ck_cublasLtMatmulHeuristicResult_t results[], int *returned);
typedef ck_cublasStatus_t (*ck_pfn_cublasLtMatmul)(
    ck_cublasLtHandle_t handle, ck_cublasLtMatmulDesc_t desc, const void *alpha, const void *a,
    ck_cublasLtMatrixLayout_t adesc, const void *b, ck_cublasLtMatrixLayout_t bdesc,
    const void *beta, const void *c, ck_cublasLtMatrixLayout_t cdesc, void *d,
    ck_cublasLtMatrixLayout_t ddesc, const ck_cublasLtMatmulAlgo_t *algo, void *workspace,
    size_t workspace_bytes, void *stream);

#endif
