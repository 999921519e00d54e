/* The slice of the CUDA driver ABI that ckalloc uses, declared here so the
 * library never includes <cuda.h> nor links libcuda: the driver is dlopen'ed
 * at run time (backend_cuda.c) and the same declarations serve the stand-in
 * driver in tests/fakecuda. Values and layouts are copied from cuda.h (CUDA
 * 12/13); they are part of the driver's stable ABI. */
#ifndef CK_CUDA_ABI_H
#define CK_CUDA_ABI_H

#ifdef __cuda_cuda_h__
#error "cuda_abi.h stands in for cuda.h; include one or the other"
#endif

#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUmod_st *CUmodule;   /* replay kernels (kernels/launch.c) */
typedef struct CUfunc_st *CUfunction;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;

/* CUresult values we test for or produce. */
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_JIT_COMPILER_NOT_FOUND = 221,
    CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
    CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED = 713,
    CUDA_ERROR_ILLEGAL_STATE = 401,
    CUDA_ERROR_NOT_PERMITTED = 800,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
    CUDA_ERROR_STREAM_CAPTURE_UNMATCHED = 903,
    CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906,
    CUDA_ERROR_UNKNOWN = 999
};

/* CUdevice_attribute */
typedef int CUdevice_attribute;
enum {
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33,
    CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID = 34,
    CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID = 50,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 102,
    CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED = 103
};

typedef enum CUmemAllocationType_enum {
    CU_MEM_ALLOCATION_TYPE_INVALID = 0x0,
    CU_MEM_ALLOCATION_TYPE_PINNED = 0x1
} CUmemAllocationType;

typedef enum CUmemAllocationHandleType_enum {
    CU_MEM_HANDLE_TYPE_NONE = 0x0,
    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 0x1
} CUmemAllocationHandleType;

typedef enum CUmemLocationType_enum {
    CU_MEM_LOCATION_TYPE_INVALID = 0x0,
    CU_MEM_LOCATION_TYPE_DEVICE = 0x1
} CUmemLocationType;

typedef enum CUmemAccess_flags_enum {
    CU_MEM_ACCESS_FLAGS_PROT_NONE = 0x0,
    CU_MEM_ACCESS_FLAGS_PROT_READ = 0x1,
    CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 0x3
} CUmemAccess_flags;

typedef enum CUmemAllocationGranularity_flags_enum {
    CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0x0,
    CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 0x1
} CUmemAllocationGranularity_flags;

typedef enum CUstreamCaptureStatus_enum {
    CU_STREAM_CAPTURE_STATUS_NONE = 0,
    CU_STREAM_CAPTURE_STATUS_ACTIVE = 1,
    CU_STREAM_CAPTURE_STATUS_INVALIDATED = 2
} CUstreamCaptureStatus;

enum { CU_STREAM_DEFAULT = 0x0, CU_STREAM_NON_BLOCKING = 0x1 };
enum { CU_EVENT_DEFAULT = 0x0, CU_EVENT_DISABLE_TIMING = 0x2 };

typedef struct CUmemLocation_st {
    CUmemLocationType type;
    int id;
} CUmemLocation;

typedef struct CUmemAllocationProp_st {
    CUmemAllocationType type;
    CUmemAllocationHandleType requestedHandleTypes;
    CUmemLocation location;
    void *win32HandleMetaData; /* must be NULL off Windows */
    struct {
        unsigned char compressionType;
        unsigned char gpuDirectRDMACapable;
        unsigned short usage;
        unsigned char reserved[4];
    } allocFlags;
} CUmemAllocationProp;

typedef struct CUmemAccessDesc_st {
    CUmemLocation location;
    CUmemAccess_flags flags;
} CUmemAccessDesc;

/* Entry points, by exported name (the _v2 names are what cuda.h's macros
 * resolve to; the unsuffixed ones are the legacy ABI and must not be used). */
typedef CUresult (*ck_pfn_cuInit)(unsigned int flags);
typedef CUresult (*ck_pfn_cuDeviceGetCount)(int *count);
typedef CUresult (*ck_pfn_cuDeviceGet)(CUdevice *dev, int ordinal);
typedef CUresult (*ck_pfn_cuDeviceTotalMem_v2)(size_t *bytes, CUdevice dev);
typedef CUresult (*ck_pfn_cuDeviceGetAttribute)(int *pi, CUdevice_attribute attr, CUdevice dev);
typedef CUresult (*ck_pfn_cuDevicePrimaryCtxRetain)(CUcontext *ctx, CUdevice dev);
typedef CUresult (*ck_pfn_cuDevicePrimaryCtxRelease_v2)(CUdevice dev);
typedef CUresult (*ck_pfn_cuCtxSetCurrent)(CUcontext ctx);
typedef CUresult (*ck_pfn_cuCtxGetCurrent)(CUcontext *ctx);
typedef CUresult (*ck_pfn_cuGetErrorString)(CUresult err, const char **str);
/* The driver's name for r, or a fixed phrase when it has none (or no
 * cuGetErrorString). */
static inline const char *ck__cu_error_string(ck_pfn_cuGetErrorString get, CUresult r) {
    const char *s = NULL;
    if (get && get(r, &s) != 0) s = NULL;
    return s ? s : "unrecognized error code";
}
typedef CUresult (*ck_pfn_cuMemGetInfo_v2)(size_t *free_bytes, size_t *total_bytes);
typedef CUresult (*ck_pfn_cuMemAddressReserve)(CUdeviceptr *ptr, size_t size, size_t alignment,
                                               CUdeviceptr addr, unsigned long long flags);
typedef CUresult (*ck_pfn_cuMemAddressFree)(CUdeviceptr ptr, size_t size);
typedef CUresult (*ck_pfn_cuMemCreate)(CUmemGenericAllocationHandle *h, size_t size,
                                       const CUmemAllocationProp *prop, unsigned long long flags);
typedef CUresult (*ck_pfn_cuMemRelease)(CUmemGenericAllocationHandle h);
typedef CUresult (*ck_pfn_cuMemMap)(CUdeviceptr ptr, size_t size, size_t offset,
                                    CUmemGenericAllocationHandle h, unsigned long long flags);
typedef CUresult (*ck_pfn_cuMemUnmap)(CUdeviceptr ptr, size_t size);
typedef CUresult (*ck_pfn_cuMemSetAccess)(CUdeviceptr ptr, size_t size,
                                          const CUmemAccessDesc *desc, size_t count);
typedef CUresult (*ck_pfn_cuMemGetAllocationGranularity)(size_t *gran,
                                                         const CUmemAllocationProp *prop,
                                                         CUmemAllocationGranularity_flags option);
typedef CUresult (*ck_pfn_cuStreamCreate)(CUstream *s, unsigned int flags);
typedef CUresult (*ck_pfn_cuStreamDestroy_v2)(CUstream s);
typedef CUresult (*ck_pfn_cuStreamSynchronize)(CUstream s);
typedef CUresult (*ck_pfn_cuStreamWaitEvent)(CUstream s, CUevent e, unsigned int flags);
typedef CUresult (*ck_pfn_cuStreamIsCapturing)(CUstream s, CUstreamCaptureStatus *status);
typedef CUresult (*ck_pfn_cuEventCreate)(CUevent *e, unsigned int flags);
typedef CUresult (*ck_pfn_cuEventDestroy_v2)(CUevent e);
typedef CUresult (*ck_pfn_cuEventRecord)(CUevent e, CUstream s);
typedef CUresult (*ck_pfn_cuEventQuery)(CUevent e);
typedef CUresult (*ck_pfn_cuEventSynchronize)(CUevent e);
typedef CUresult (*ck_pfn_cuEventElapsedTime)(float *ms, CUevent start, CUevent end);
typedef CUresult (*ck_pfn_cuMemcpyAsync)(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s);
typedef CUresult (*ck_pfn_cuMemHostRegister_v2)(void *p, size_t n, unsigned int flags);
typedef CUresult (*ck_pfn_cuMemHostUnregister)(void *p);
#define CU_MEMHOSTREGISTER_PORTABLE 0x01
typedef CUresult (*ck_pfn_cuMemsetD8Async)(CUdeviceptr dst, unsigned char uc, size_t n,
                                           CUstream s);
/* The replay kernels (kernels/launch.c): a fatbin embedded in the library,
 * loaded into the primary context at the first replay. */
typedef CUresult (*ck_pfn_cuModuleLoadData)(CUmodule *module, const void *image);
typedef CUresult (*ck_pfn_cuModuleGetFunction)(CUfunction *fn, CUmodule module, const char *name);
typedef CUresult (*ck_pfn_cuModuleUnload)(CUmodule module);
typedef CUresult (*ck_pfn_cuLaunchKernel)(CUfunction f, unsigned int grid_x, unsigned int grid_y,
                                          unsigned int grid_z, unsigned int block_x,
                                          unsigned int block_y, unsigned int block_z,
                                          unsigned int shared_bytes, CUstream s, void **params,
                                          void **extra);

/* Used only by the interposition library (preload/). */
typedef CUresult (*ck_pfn_cuMemAlloc_v2)(CUdeviceptr *dptr, size_t bytesize);
typedef CUresult (*ck_pfn_cuMemFree_v2)(CUdeviceptr dptr);
typedef CUresult (*ck_pfn_cuMemAllocAsync)(CUdeviceptr *dptr, size_t bytesize, CUstream s);
typedef CUresult (*ck_pfn_cuMemFreeAsync)(CUdeviceptr dptr, CUstream s);
typedef CUresult (*ck_pfn_cuCtxGetDevice)(CUdevice *dev);
typedef CUresult (*ck_pfn_cuCtxSynchronize)(void);
typedef CUresult (*ck_pfn_cuStreamBeginCapture_v2)(CUstream s, int mode);
typedef CUresult (*ck_pfn_cuStreamEndCapture)(CUstream s, void **graph);
typedef CUresult (*ck_pfn_cuGetProcAddress_v2)(const char *symbol, void **pfn, int cuda_version,
                                              unsigned long long flags, int *status);
typedef CUresult (*ck_pfn_cuGetProcAddress)(const char *symbol, void **pfn, int cuda_version,
                                           unsigned long long flags);

#endif
