/* The exported CUDA entry points, and cuGetProcAddress (how cudart and
 * cudaGetDriverEntryPoint get every driver function; the dlsym hook that
 * hands cudart our cuGetProcAddress is in lookup.c).
 *
 * Each hook asks preload.c whether the call is ours (an allocation for the
 * current device's pool, a pointer one of our pools owns); anything else goes
 * to the function underneath, so the program sees the driver's own answer. */
#include "preload.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define CKP_API __attribute__((visibility("default")))

typedef int cudaError_t;
typedef CUstream cudaStream_t;

/* ------------------------------------------------------- real symbols -- */

static ckp_driver drv;
static pthread_once_t drv_once = PTHREAD_ONCE_INIT;

static char load_error[512];

static void load_driver(void) {
    const char *path = getenv("CKALLOC_CUDA_LIB");
    drv.lib = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!drv.lib) {
        const char *why = dlerror();
        snprintf(load_error, sizeof load_error, "%s", why ? why : "dlopen failed");
        drv.load_error = load_error;
        return;
    }
#define R(name) *(void **)&drv.name = ckp_real_dlsym(drv.lib, #name)
    R(cuGetProcAddress_v2);
    R(cuGetProcAddress);
    R(cuMemAlloc_v2);
    R(cuMemFree_v2);
    R(cuMemAllocAsync);
    R(cuMemAllocAsync_ptsz);
    R(cuMemFreeAsync);
    R(cuMemFreeAsync_ptsz);
    R(cuMemGetInfo_v2);
    R(cuStreamDestroy_v2);
    R(cuStreamBeginCapture_v2);
    R(cuStreamBeginCapture_v2_ptsz);
    R(cuStreamEndCapture);
    R(cuStreamEndCapture_ptsz);
    R(cuStreamIsCapturing);
    R(cuCtxGetCurrent);
    R(cuCtxGetDevice);
    R(cuCtxSynchronize);
    R(cuDevicePrimaryCtxRetain);
    R(cuInit);
    R(cuDeviceGetCount);
#undef R
}

static atomic_int drv_reported;

const ckp_driver *ckp_driver_get(void) {
    pthread_once(&drv_once, load_driver);
    /* Outside the once: the report calls cuInit, which may come back here. */
    if (!atomic_load_explicit(&drv_reported, memory_order_relaxed) &&
        !atomic_exchange(&drv_reported, 1))
        ckp_driver_report(&drv);
    return &drv;
}

/* The runtime underneath (a dynamically linked libcudart), for pointers and
 * calls that are not ours. */
#define REAL_RT(type, name)                                             \
    static type real_##name(void) {                                     \
        static _Atomic(void *) fn; /* racing threads store the same value */ \
        void *f = atomic_load_explicit(&fn, memory_order_relaxed);      \
        if (!f) {                                                       \
            f = ckp_real_dlsym(RTLD_NEXT, #name);                       \
            atomic_store_explicit(&fn, f, memory_order_relaxed);        \
        }                                                               \
        type t;                                                         \
        *(void **)&t = f;                                               \
        return t;                                                       \
    }

typedef cudaError_t (*rt_malloc_t)(void **, size_t);
typedef cudaError_t (*rt_free_t)(void *);
typedef cudaError_t (*rt_malloc_async_t)(void **, size_t, cudaStream_t);
typedef cudaError_t (*rt_free_async_t)(void *, cudaStream_t);
typedef cudaError_t (*rt_info_t)(size_t *, size_t *);
REAL_RT(rt_malloc_t, cudaMalloc)
REAL_RT(rt_free_t, cudaFree)
REAL_RT(rt_malloc_async_t, cudaMallocAsync)
REAL_RT(rt_free_async_t, cudaFreeAsync)
REAL_RT(rt_malloc_async_t, cudaMallocAsync_ptsz)
REAL_RT(rt_free_async_t, cudaFreeAsync_ptsz)
REAL_RT(rt_info_t, cudaMemGetInfo)

enum { cudaErrorInitializationError = 3, cudaErrorInsufficientDriver = 35 };

/* ------------------------------------------------- allocation, common -- */

#define CU_STREAM_PER_THREAD_HANDLE ((CUstream)0x2)

static CUresult alloc_common(CUdeviceptr *dptr, size_t size, CUstream s, int is_async, int *ours) {
    ck_pool *p = NULL;
    *ours = 0;
    if (!dptr || size == 0) return CUDA_ERROR_INVALID_VALUE;
    if (ckp_route_alloc(&p, s, is_async) == CKP_REAL) return CUDA_SUCCESS;
    *ours = 1;
    void *ptr = NULL;
    ck_status st = ck_malloc(p, &ptr, size, (ck_stream)s);
    if (st == CK_OK) *dptr = (CUdeviceptr)(uintptr_t)ptr;
    return ckp_cu_error(st);
}

/* ----------------------------------------------------------- driver API -- */

CKP_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size) {
    int ours;
    CUresult r = alloc_common(dptr, size, NULL, 0, &ours);
    if (ours || r != CUDA_SUCCESS) return r;
    const ckp_driver *d = ckp_driver_get();
    return d->cuMemAlloc_v2 ? d->cuMemAlloc_v2(dptr, size) : CUDA_ERROR_NOT_INITIALIZED;
}

CKP_API CUresult cuMemFree_v2(CUdeviceptr dptr) {
    CUresult err;
    if (ckp_free((void *)(uintptr_t)dptr, NULL, 1, &err) == CKP_OURS) return err;
    const ckp_driver *d = ckp_driver_get();
    return d->cuMemFree_v2 ? d->cuMemFree_v2(dptr) : CUDA_ERROR_NOT_INITIALIZED;
}

static CUresult alloc_async(CUdeviceptr *dptr, size_t size, CUstream s, ck_pfn_cuMemAllocAsync real) {
    int ours;
    CUresult r = alloc_common(dptr, size, s, 1, &ours);
    if (ours || r != CUDA_SUCCESS) return r;
    return real ? real(dptr, size, s) : CUDA_ERROR_NOT_INITIALIZED;
}

static CUresult free_async(CUdeviceptr dptr, CUstream s, ck_pfn_cuMemFreeAsync real) {
    CUresult err;
    if (ckp_free((void *)(uintptr_t)dptr, s, 0, &err) == CKP_OURS) return err;
    return real ? real(dptr, s) : CUDA_ERROR_NOT_INITIALIZED;
}

CKP_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream s) {
    return alloc_async(dptr, size, s, ckp_driver_get()->cuMemAllocAsync);
}
CKP_API CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) {
    return free_async(dptr, s, ckp_driver_get()->cuMemFreeAsync);
}
/* Per-thread default stream variants: the null stream means this thread's. */
CKP_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream s) {
    return alloc_async(dptr, size, s ? s : CU_STREAM_PER_THREAD_HANDLE,
                       ckp_driver_get()->cuMemAllocAsync_ptsz);
}
CKP_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) {
    return free_async(dptr, s ? s : CU_STREAM_PER_THREAD_HANDLE,
                      ckp_driver_get()->cuMemFreeAsync_ptsz);
}

CKP_API CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b) {
    return ckp_mem_info(free_b, total_b);
}

CKP_API CUresult cuStreamDestroy_v2(CUstream s) {
    const ckp_driver *d = ckp_driver_get();
    if (!d->cuStreamDestroy_v2) return CUDA_ERROR_NOT_INITIALIZED;
    ckp_stream_gone(s);
    return d->cuStreamDestroy_v2(s);
}

static CUresult begin_capture(CUstream s, int mode, ck_pfn_cuStreamBeginCapture_v2 real) {
    if (!real) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = real(s, mode);
    if (r == CUDA_SUCCESS) ckp_capture_begin();
    return r;
}
static CUresult end_capture(CUstream s, void **graph, ck_pfn_cuStreamEndCapture real) {
    if (!real) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = real(s, graph);
    /* An invalidated capture has ended too. */
    if (r == CUDA_SUCCESS || r == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED) ckp_capture_end();
    return r;
}
CKP_API CUresult cuStreamBeginCapture_v2(CUstream s, int mode) {
    return begin_capture(s, mode, ckp_driver_get()->cuStreamBeginCapture_v2);
}
CKP_API CUresult cuStreamBeginCapture_v2_ptsz(CUstream s, int mode) {
    return begin_capture(s, mode, ckp_driver_get()->cuStreamBeginCapture_v2_ptsz);
}
CKP_API CUresult cuStreamEndCapture(CUstream s, void **graph) {
    return end_capture(s, graph, ckp_driver_get()->cuStreamEndCapture);
}
CKP_API CUresult cuStreamEndCapture_ptsz(CUstream s, void **graph) {
    return end_capture(s, graph, ckp_driver_get()->cuStreamEndCapture_ptsz);
}

/* ---------------------------------------------------------- runtime API -- */

static cudaError_t rt_alloc(void **p, size_t size, cudaStream_t s, int is_async,
                            rt_malloc_async_t real_async) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    if (size == 0 && !is_async) {
        *p = NULL; /* cudaMalloc(&p, 0) succeeds with NULL */
        return 0;
    }
    CUdeviceptr d = 0;
    int ours;
    CUresult r = alloc_common(&d, size, s, is_async, &ours);
    if (ours || r != CUDA_SUCCESS) {
        if (r == CUDA_SUCCESS) *p = (void *)(uintptr_t)d;
        return r;
    }
    if (is_async) return real_async ? real_async(p, size, s) : cudaErrorInitializationError;
    rt_malloc_t rm = real_cudaMalloc();
    return rm ? rm(p, size) : cudaErrorInitializationError;
}

static cudaError_t rt_free(void *p, cudaStream_t s, int is_async, rt_free_async_t real_async) {
    CUresult err;
    if (ckp_free(p, s, !is_async, &err) == CKP_OURS) return err;
    if (is_async) return real_async ? real_async(p, s) : cudaErrorInitializationError;
    rt_free_t rf = real_cudaFree();
    return rf ? rf(p) : cudaErrorInitializationError;
}

CKP_API cudaError_t cudaMalloc(void **p, size_t size) { return rt_alloc(p, size, NULL, 0, NULL); }
CKP_API cudaError_t cudaFree(void *p) { return rt_free(p, NULL, 0, NULL); }
CKP_API cudaError_t cudaMallocAsync(void **p, size_t size, cudaStream_t s) {
    return rt_alloc(p, size, s, 1, real_cudaMallocAsync());
}
CKP_API cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    return rt_free(p, s, 1, real_cudaFreeAsync());
}
CKP_API cudaError_t cudaMallocAsync_ptsz(void **p, size_t size, cudaStream_t s) {
    return rt_alloc(p, size, s ? s : CU_STREAM_PER_THREAD_HANDLE, 1, real_cudaMallocAsync_ptsz());
}
CKP_API cudaError_t cudaFreeAsync_ptsz(void *p, cudaStream_t s) {
    return rt_free(p, s ? s : CU_STREAM_PER_THREAD_HANDLE, 1, real_cudaFreeAsync_ptsz());
}

CKP_API cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    /* The runtime initialises its context on first use; let it, then
     * answer from the driver with our budget. Whatever we cannot answer
     * (no driver, no device, no context) gets the runtime's own code. */
    const ckp_driver *d = ckp_driver_get();
    rt_info_t ri = real_cudaMemGetInfo();
    if (!d->cuCtxGetCurrent || !d->cuMemGetInfo_v2)
        return ri ? ri(free_b, total_b) : cudaErrorInsufficientDriver;
    CUcontext ctx = NULL;
    if (d->cuCtxGetCurrent(&ctx) == CUDA_SUCCESS && !ctx && ri) {
        cudaError_t e = ri(free_b, total_b);
        if (e) return e;
    }
    CUresult r = ckp_mem_info(free_b, total_b);
    if (r != CUDA_SUCCESS && ri) return ri(free_b, total_b);
    return r;
}

/* --------------------------------------------------------- the lookups -- */

/* The driver's answer to cuGetProcAddress is a real function pointer: swap
 * it for our hook when it is one we replace. Matching by address keeps the
 * driver's own version resolution (base name + cudaVersion + per-thread flag
 * -> "_v2", "_ptsz", ...). A driver may answer with internal addresses that
 * match no exported symbol; then the request itself is matched by name. */
static void *real_table[CKP_NHOOKS];
static pthread_once_t real_table_once = PTHREAD_ONCE_INIT;

static void fill_real_table(void) {
    const ckp_driver *d = ckp_driver_get();
    for (size_t i = 0; i < CKP_NHOOKS; i++)
        if (d->lib && strncmp(ckp_hook_names[i], "cuda", 4) != 0) /* cuda* are cudart's */
            real_table[i] = ckp_real_dlsym(d->lib, ckp_hook_names[i]);
}

static const char *hook_by_address(void *fn) {
    if (!fn) return NULL;
    pthread_once(&real_table_once, fill_real_table);
    for (size_t i = 0; i < CKP_NHOOKS; i++)
        if (real_table[i] == fn) return ckp_hook_names[i];
    return NULL;
}

/* The fallback when the driver answers with an address it does not export
 * (its internal functions): the name we replace for a request by base name,
 * ABI version and per-thread flag, as cudart asks ("cuMemAlloc", 3020), or
 * NULL. Older ABI versions (32-bit cuMemAlloc, ...) are not ours. */
static const char *hook_by_request(const char *symbol, int cuda_version,
                                   unsigned long long flags) {
    static const struct {
        const char *base;
        int since;
        const char *name, *ptds_name;
    } map[] = {
        {"cuMemAlloc", 3020, "cuMemAlloc_v2", NULL},
        {"cuMemFree", 3020, "cuMemFree_v2", NULL},
        {"cuMemGetInfo", 3020, "cuMemGetInfo_v2", NULL},
        {"cuMemAllocAsync", 11020, "cuMemAllocAsync", "cuMemAllocAsync_ptsz"},
        {"cuMemFreeAsync", 11020, "cuMemFreeAsync", "cuMemFreeAsync_ptsz"},
        {"cuStreamDestroy", 4000, "cuStreamDestroy_v2", NULL},
        {"cuStreamBeginCapture", 10010, "cuStreamBeginCapture_v2", "cuStreamBeginCapture_v2_ptsz"},
        {"cuStreamEndCapture", 10000, "cuStreamEndCapture", "cuStreamEndCapture_ptsz"},
        {"cuGetProcAddress", 12000, "cuGetProcAddress_v2", NULL},
        {"cuGetProcAddress", 11030, "cuGetProcAddress", NULL},
    };
    int ptds = (flags & 2) != 0; /* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].base, symbol) == 0 && cuda_version >= map[i].since)
            return ptds && map[i].ptds_name ? map[i].ptds_name : map[i].name;
    return NULL;
}

static atomic_ulong matched_by_address, matched_by_name;

CKP_API void ckalloc_preload_hook_matches(unsigned long *by_address, unsigned long *by_name) {
    if (by_address) *by_address = atomic_load(&matched_by_address);
    if (by_name) *by_name = atomic_load(&matched_by_name);
}

/* Swap the driver's answer for our hook; say how (verbose, once per way). */
static void swap_answer(const char *symbol, void **pfn, int cuda_version,
                        unsigned long long flags) {
    const char *name = hook_by_address(*pfn);
    atomic_ulong *count = &matched_by_address;
    if (!name) {
        if (!(name = hook_by_request(symbol, cuda_version, flags))) return;
        count = &matched_by_name;
    }
    void *h = ckp_hook_by_name(name);
    if (!h || h == *pfn) return; /* already ours (a driver whose own lookups we interpose) */
    *pfn = h;
    if (atomic_fetch_add(count, 1) == 0 && ckp_verbose()) {
        if (count == &matched_by_address)
            fprintf(stderr,
                    "ckalloc: preload: driver hooks matched by address (cuGetProcAddress(\"%s\", "
                    "%d, flags %llu) gave the driver's exported %s)\n",
                    symbol, cuda_version, flags, name);
        else
            fprintf(stderr,
                    "ckalloc: preload: driver hooks matched by name (cuGetProcAddress(\"%s\", "
                    "%d, flags %llu) gave an address the driver does not export; hooked as %s)\n",
                    symbol, cuda_version, flags, name);
    }
}

CKP_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
                                     unsigned long long flags, int *status) {
    const ckp_driver *d = ckp_driver_get();
    CUresult r;
    if (d->cuGetProcAddress_v2)
        r = d->cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, status);
    else if (d->cuGetProcAddress)
        r = d->cuGetProcAddress(symbol, pfn, cuda_version, flags);
    else
        return CUDA_ERROR_NOT_INITIALIZED;
    if (r == CUDA_SUCCESS && pfn && *pfn && symbol) swap_answer(symbol, pfn, cuda_version, flags);
    return r;
}

CKP_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version,
                                  unsigned long long flags) {
    return cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, NULL);
}

