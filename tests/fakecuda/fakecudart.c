/* ckfakecudart: a stand-in for libcudart that reaches the driver the way the
 * real runtime does: dlopen("libcuda.so.1"), dlsym its cuGetProcAddress_v2,
 * then every driver entry point through that. So under LD_PRELOAD the
 * preload library sees these calls at both layers exactly as it would see
 * cudart's: the exported cuda* functions (runtime hooks) and the driver
 * pointers handed out by cuGetProcAddress (driver hooks).
 *
 * Only what the preload tests call exists. Runtime error codes used here have
 * the same numbers as the driver's for these cases. The primary context of
 * the current device (cudaSetDevice, default 0) is made current on first use,
 * as cudart does. */
#include "cuda_abi.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RT_API __attribute__((visibility("default")))

typedef int cudaError_t;
typedef CUstream cudaStream_t;

static struct {
    ck_pfn_cuGetProcAddress_v2 gpa;
    ck_pfn_cuInit init;
    ck_pfn_cuDevicePrimaryCtxRetain retain;
    ck_pfn_cuCtxSetCurrent set_current;
    ck_pfn_cuMemAlloc_v2 alloc;
    ck_pfn_cuMemFree_v2 free_;
    ck_pfn_cuMemAllocAsync alloc_async;
    ck_pfn_cuMemFreeAsync free_async;
    ck_pfn_cuMemGetInfo_v2 info;
    ck_pfn_cuStreamCreate stream_create;
    ck_pfn_cuStreamDestroy_v2 stream_destroy;
    ck_pfn_cuStreamBeginCapture_v2 begin_capture;
    ck_pfn_cuStreamEndCapture end_capture;
    ck_pfn_cuCtxSynchronize ctx_sync;
    int ok;
    cudaError_t err; /* why not ok, as the real runtime says it */
} drv;
static pthread_once_t drv_once = PTHREAD_ONCE_INIT;
static __thread int tl_device;
static __thread int tl_ready = -1; /* device whose context this thread made current */

static void load(void) {
    /* CKFAKECUDART_DRIVER: the driver to load (tests name a missing one). */
    const char *lib = getenv("CKFAKECUDART_DRIVER");
    drv.err = 35; /* cudaErrorInsufficientDriver: what cudart says without a driver */
    void *h = dlopen(lib && *lib ? lib : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;
    *(void **)&drv.gpa = dlsym(h, "cuGetProcAddress_v2");
    if (!drv.gpa) return;
    drv.err = 3; /* cudaErrorInitializationError */
#define GET(field, name) \
    if (drv.gpa(name, (void **)&drv.field, 13000, 0, NULL) != CUDA_SUCCESS) return
    GET(init, "cuInit");
    GET(retain, "cuDevicePrimaryCtxRetain");
    GET(set_current, "cuCtxSetCurrent");
    GET(alloc, "cuMemAlloc");
    GET(free_, "cuMemFree");
    GET(alloc_async, "cuMemAllocAsync");
    GET(free_async, "cuMemFreeAsync");
    GET(info, "cuMemGetInfo");
    GET(stream_create, "cuStreamCreate");
    GET(stream_destroy, "cuStreamDestroy");
    GET(begin_capture, "cuStreamBeginCapture");
    GET(end_capture, "cuStreamEndCapture");
    GET(ctx_sync, "cuCtxSynchronize");
#undef GET
    CUresult r = drv.init(0);
    drv.ok = r == CUDA_SUCCESS;
    /* cudaErrorNoDevice (100) has the driver's number. */
    if (r == CUDA_ERROR_NO_DEVICE) drv.err = 100;
}

/* Lazy runtime init: the driver, then this thread's current context. */
static cudaError_t ready(void) {
    pthread_once(&drv_once, load);
    if (!drv.ok) return drv.err;
    if (tl_ready == tl_device) return 0;
    CUcontext ctx;
    CUresult r = drv.retain(&ctx, tl_device);
    if (r == CUDA_SUCCESS) r = drv.set_current(ctx);
    if (r == CUDA_SUCCESS) tl_ready = tl_device;
    return r;
}

#define READY()                   \
    do {                          \
        cudaError_t e_ = ready(); \
        if (e_) return e_;        \
    } while (0)

RT_API cudaError_t cudaSetDevice(int dev) {
    tl_device = dev;
    return ready();
}
RT_API cudaError_t cudaGetDevice(int *dev) {
    if (!dev) return 1;
    *dev = tl_device;
    return 0;
}
RT_API cudaError_t cudaMalloc(void **p, size_t n) {
    READY();
    if (!p) return 1;
    if (n == 0) {
        *p = NULL;
        return 0;
    }
    CUdeviceptr d = 0;
    cudaError_t e = drv.alloc(&d, n);
    if (e == 0) *p = (void *)(uintptr_t)d;
    return e;
}
RT_API cudaError_t cudaFree(void *p) {
    READY();
    if (!p) return 0;
    drv.ctx_sync();
    return drv.free_((CUdeviceptr)(uintptr_t)p);
}
RT_API cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
    READY();
    if (!p) return 1;
    CUdeviceptr d = 0;
    cudaError_t e = drv.alloc_async(&d, n, s);
    if (e == 0) *p = (void *)(uintptr_t)d;
    return e;
}
RT_API cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    READY();
    return drv.free_async((CUdeviceptr)(uintptr_t)p, s);
}
RT_API cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    READY();
    return drv.info(free_b, total_b);
}
RT_API cudaError_t cudaStreamCreate(cudaStream_t *s) {
    READY();
    return drv.stream_create(s, 0);
}
RT_API cudaError_t cudaStreamDestroy(cudaStream_t s) {
    READY();
    return drv.stream_destroy(s);
}
RT_API cudaError_t cudaStreamBeginCapture(cudaStream_t s, int mode) {
    READY();
    return drv.begin_capture(s, mode);
}
RT_API cudaError_t cudaStreamEndCapture(cudaStream_t s, void **graph) {
    READY();
    return drv.end_capture(s, graph);
}
RT_API cudaError_t cudaDeviceSynchronize(void) {
    READY();
    return drv.ctx_sync();
}
/* Driver entry points for the program, through the driver's own lookup. */
RT_API cudaError_t cudaGetDriverEntryPoint(const char *symbol, void **fn, unsigned long long flags,
                                           int *status) {
    READY();
    return drv.gpa(symbol, fn, 13000, flags, status);
}
