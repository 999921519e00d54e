/* The interposition library (libckalloc_preload.so): shared state between
 * preload.c (pools, init, fork, the PyTorch entry points) and hooks.c (the
 * exported CUDA runtime/driver symbols, cuGetProcAddress and dlsym). */
#ifndef CK_PRELOAD_H
#define CK_PRELOAD_H

#include "ckalloc/ckalloc.h"
#include "cuda_abi.h"

#include <stdatomic.h>
#include <stddef.h>

#define CKP_MAX_DEVICES 64
#define CKP_HIDDEN __attribute__((visibility("hidden")))

/* The driver as it is underneath us (never our hooks). NULL members: the
 * driver lacks that entry point (or there is no driver: host backend). */
typedef struct ckp_driver {
    void *lib;
    ck_pfn_cuGetProcAddress_v2 cuGetProcAddress_v2;
    ck_pfn_cuGetProcAddress cuGetProcAddress;
    ck_pfn_cuMemAlloc_v2 cuMemAlloc_v2;
    ck_pfn_cuMemFree_v2 cuMemFree_v2;
    ck_pfn_cuMemAllocAsync cuMemAllocAsync, cuMemAllocAsync_ptsz;
    ck_pfn_cuMemFreeAsync cuMemFreeAsync, cuMemFreeAsync_ptsz;
    ck_pfn_cuMemGetInfo_v2 cuMemGetInfo_v2;
    ck_pfn_cuStreamDestroy_v2 cuStreamDestroy_v2;
    ck_pfn_cuStreamBeginCapture_v2 cuStreamBeginCapture_v2, cuStreamBeginCapture_v2_ptsz;
    ck_pfn_cuStreamEndCapture cuStreamEndCapture, cuStreamEndCapture_ptsz;
    ck_pfn_cuStreamIsCapturing cuStreamIsCapturing;
    ck_pfn_cuCtxGetCurrent cuCtxGetCurrent;
    ck_pfn_cuCtxGetDevice cuCtxGetDevice;
    ck_pfn_cuCtxSynchronize cuCtxSynchronize;
    ck_pfn_cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRetain;
    ck_pfn_cuInit cuInit;
    ck_pfn_cuDeviceGetCount cuDeviceGetCount;
    const char *load_error; /* lib NULL: why dlopen failed */
} ckp_driver;

/* lookup.c: the entry points we replace, by exported name, and our hook
 * for a name (NULL if we do not replace it). */
#define CKP_NHOOKS 21
CKP_HIDDEN extern const char *const ckp_hook_names[CKP_NHOOKS];
CKP_HIDDEN void *ckp_hook_by_name(const char *name);

/* dlsym as the C library defines it (ours is a hook). */
CKP_HIDDEN void *ckp_real_dlsym(void *handle, const char *name);
/* The driver underneath, loaded on first use; never NULL (members may be). */
CKP_HIDDEN const ckp_driver *ckp_driver_get(void);

/* preload.c: the first use of the driver by a hook says once on stderr what
 * the program will get (no driver, no device, backend=host; with verbose=1
 * also when all is well). */
CKP_HIDDEN void ckp_driver_report(const ckp_driver *d);
/* CKALLOC_CONF verbose=1. */
CKP_HIDDEN int ckp_verbose(void);

/* What a hook should do with a request. */
typedef enum ckp_route { CKP_OURS, CKP_REAL } ckp_route;

/* The pool for the calling thread's current device, or CKP_REAL when the
 * call belongs to the driver: no pool can be had, the current context is not
 * the device's primary context, or the stream is capturing a graph (the
 * driver then gives its own answer, error or not). */
CKP_HIDDEN ckp_route ckp_route_alloc(ck_pool **pool, CUstream s, int is_async);

/* Free ptr if one of our pools owns it: CKP_OURS with *err set (success, or
 * CUDA_ERROR_INVALID_VALUE for a double free or interior pointer), or
 * CKP_REAL when no pool knows the address. sync: wait for the device first
 * (cudaFree/cuMemFree semantics). */
CKP_HIDDEN ckp_route ckp_free(void *ptr, CUstream s, int sync, CUresult *err);

/* Free/total memory as our budget presents it. */
CKP_HIDDEN CUresult ckp_mem_info(size_t *free_b, size_t *total_b);

/* A stream is about to be destroyed: drop it from every pool's books. */
CKP_HIDDEN void ckp_stream_gone(CUstream s);

/* Graph capture bookkeeping: begins/ends seen through our hooks. */
CKP_HIDDEN void ckp_capture_begin(void);
CKP_HIDDEN void ckp_capture_end(void);

/* ck_status -> driver error code (runtime codes have the same numbers for
 * these cases). */
CKP_HIDDEN CUresult ckp_cu_error(ck_status s);

#endif
