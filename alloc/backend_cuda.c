/* The cuda backend: the driver's virtual memory API (cuMemAddressReserve,
 * cuMemCreate, cuMemMap, cuMemSetAccess, cuMemUnmap, cuMemRelease) plus
 * streams, events and async copies.
 *
 * The driver is dlopen'ed at run time (CKALLOC_CUDA_LIB, else libcuda.so.1)
 * and never linked, so every binary starts on a machine without a GPU and
 * reports "no CUDA device"; CI points CKALLOC_CUDA_LIB at tests/fakecuda.
 *
 * Every op that calls the driver makes the device's primary context current
 * for the call and puts the caller's context back afterwards: a trainer that
 * drives another device on this thread must not find its context switched.
 * All state here is fixed after create, so ops need no lock.
 */
#include "backend.h"
#include "cuda_abi.h"
#include "internal.h"
#include "launch.h" /* kernels/: replay plans, launched by kernels/launch.c */

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#define CUDA_DEFAULT_LIB "libcuda.so.1"
#define CUDA_GRAN_ROUND (2 * CK_MiB)

/* Every symbol resolved at load; the field type is ck_pfn_<name>. */
#define CK_CUDA_SYMBOLS(X)                 \
    X(cuInit)                              \
    X(cuDeviceGetCount)                    \
    X(cuDeviceGet)                         \
    X(cuDeviceTotalMem_v2)                 \
    X(cuDeviceGetAttribute)                \
    X(cuDevicePrimaryCtxRetain)            \
    X(cuDevicePrimaryCtxRelease_v2)        \
    X(cuCtxSetCurrent)                     \
    X(cuCtxGetCurrent)                     \
    X(cuGetErrorString)                    \
    X(cuMemGetInfo_v2)                     \
    X(cuMemAddressReserve)                 \
    X(cuMemAddressFree)                    \
    X(cuMemCreate)                         \
    X(cuMemRelease)                        \
    X(cuMemMap)                            \
    X(cuMemUnmap)                          \
    X(cuMemSetAccess)                      \
    X(cuMemGetAllocationGranularity)       \
    X(cuStreamCreate)                      \
    X(cuStreamDestroy_v2)                  \
    X(cuStreamSynchronize)                 \
    X(cuStreamWaitEvent)                   \
    X(cuStreamIsCapturing)                 \
    X(cuEventCreate)                       \
    X(cuEventDestroy_v2)                   \
    X(cuEventRecord)                       \
    X(cuEventQuery)                        \
    X(cuEventSynchronize)                  \
    X(cuMemcpyAsync)                       \
    X(cuMemsetD8Async)

typedef struct cuda_fns {
#define X(name) ck_pfn_##name name;
    CK_CUDA_SYMBOLS(X)
#undef X
    ck_pfn_cuEventElapsedTime cuEventElapsedTime; /* _v2 where the driver has it */
    /* Replay only, so resolved when present: a driver without them still
     * backs a pool, and replay says what is missing. */
    ck_pfn_cuModuleLoadData cuModuleLoadData;
    ck_pfn_cuModuleGetFunction cuModuleGetFunction;
    ck_pfn_cuModuleUnload cuModuleUnload;
    ck_pfn_cuLaunchKernel cuLaunchKernel;
    /* The tier engine's pinned host memory, resolved when present. */
    ck_pfn_cuMemHostRegister_v2 cuMemHostRegister_v2;
    ck_pfn_cuMemHostUnregister cuMemHostUnregister;
} cuda_fns;

typedef struct cuda_backend {
    ck_backend base;
    void *lib;
    cuda_fns fn;
    CUdevice dev;
    CUcontext ctx;
    int fd_handles; /* request POSIX fd handles; atomic: create may clear it */
    ck__gpu *gpu;   /* replay: the kernel module and cuBLASLt, loaded on first use */
} cuda_backend;

static cuda_backend *cb(ck_backend *b) { return (cuda_backend *)b; }

static CUmemAllocationProp alloc_prop(const cuda_backend *c, int fd_handles) {
    CUmemAllocationProp p;
    memset(&p, 0, sizeof p);
    p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p.location.id = c->dev;
    /* An fd handle type keeps CUDA IPC and NCCL working on our memory. */
    p.requestedHandleTypes =
        fd_handles ? CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR : CU_MEM_HANDLE_TYPE_NONE;
    return p;
}

static const char *lib_path(void) {
    const char *p = getenv("CKALLOC_CUDA_LIB");
    return (p && *p) ? p : CUDA_DEFAULT_LIB;
}

/* RTLD_NODELETE: the driver starts threads in cuInit, and unmapping its code
 * under them (after our dlclose) would crash at exit. dlclose still drops
 * our reference. */
static void *open_lib(void) { return dlopen(lib_path(), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE); }

/* Resolve every entry point; returns the first missing name, or NULL. */
static const char *resolve(void *lib, cuda_fns *fn) {
#define X(name)                                   \
    *(void **)&fn->name = dlsym(lib, #name);      \
    if (!fn->name)                                \
        return #name;
    CK_CUDA_SYMBOLS(X)
#undef X
    *(void **)&fn->cuEventElapsedTime = dlsym(lib, "cuEventElapsedTime_v2");
    if (!fn->cuEventElapsedTime)
        *(void **)&fn->cuEventElapsedTime = dlsym(lib, "cuEventElapsedTime");
    if (!fn->cuEventElapsedTime)
        return "cuEventElapsedTime";
    *(void **)&fn->cuModuleLoadData = dlsym(lib, "cuModuleLoadData");
    *(void **)&fn->cuModuleGetFunction = dlsym(lib, "cuModuleGetFunction");
    *(void **)&fn->cuModuleUnload = dlsym(lib, "cuModuleUnload");
    *(void **)&fn->cuLaunchKernel = dlsym(lib, "cuLaunchKernel");
    *(void **)&fn->cuMemHostRegister_v2 = dlsym(lib, "cuMemHostRegister_v2");
    *(void **)&fn->cuMemHostUnregister = dlsym(lib, "cuMemHostUnregister");
    return NULL;
}

static const char *cu_str(const cuda_fns *fn, CUresult r) {
    return ck__cu_error_string(fn->cuGetErrorString, r);
}

/* CK_ERR_BACKEND naming the call and the driver's words for r. */
static ck_status cu_fail(cuda_backend *c, const char *call, CUresult r) {
    return ck__err(CK_ERR_BACKEND, "%s failed: %s (CUresult %d)", call, cu_str(&c->fn, r),
                   (int)r);
}

/* Make our context current; *prev gets what to restore. */
static ck_status ctx_enter(cuda_backend *c, CUcontext *prev) {
    CUresult r = c->fn.cuCtxGetCurrent(prev);
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuCtxGetCurrent", r);
    if (*prev != c->ctx && (r = c->fn.cuCtxSetCurrent(c->ctx)) != CUDA_SUCCESS)
        return cu_fail(c, "cuCtxSetCurrent", r);
    return CK_OK;
}

static void ctx_leave(cuda_backend *c, CUcontext prev) {
    if (prev != c->ctx)
        c->fn.cuCtxSetCurrent(prev);
}

/* Wraps one driver call in ctx_enter/ctx_leave and maps its result. */
#define CU_CALL(c, name, ...)                              \
    do {                                                   \
        CUcontext prev_;                                   \
        ck_status st_ = ctx_enter((c), &prev_);            \
        if (st_ != CK_OK)                                  \
            return st_;                                    \
        CUresult r_ = (c)->fn.name(__VA_ARGS__);           \
        ctx_leave((c), prev_);                             \
        if (r_ != CUDA_SUCCESS)                            \
            return cu_fail((c), #name, r_);                \
        return CK_OK;                                      \
    } while (0)

/* ---- memory ------------------------------------------------------------ */

static ck_status cuda_mem_info(ck_backend *b, uint64_t *free_bytes, uint64_t *total_bytes) {
    cuda_backend *c = cb(b);
    size_t f = 0, t = 0;
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    CUresult r = c->fn.cuMemGetInfo_v2(&f, &t);
    ctx_leave(c, prev);
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuMemGetInfo", r);
    *free_bytes = f;
    *total_bytes = t;
    return CK_OK;
}

static ck_status cuda_reserve(ck_backend *b, size_t size, uintptr_t *va) {
    cuda_backend *c = cb(b);
    CUdeviceptr p = 0;
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    CUresult r = c->fn.cuMemAddressReserve(&p, size, b->granularity, 0, 0);
    ctx_leave(c, prev);
    if (r == CUDA_ERROR_OUT_OF_MEMORY)
        return ck__err(CK_ERR_NOMEM, "cuMemAddressReserve of %zu bytes failed: %s", size,
                       cu_str(&c->fn, r));
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuMemAddressReserve", r);
    *va = (uintptr_t)p;
    return CK_OK;
}

static ck_status cuda_unreserve(ck_backend *b, uintptr_t va, size_t size) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuMemAddressFree, (CUdeviceptr)va, size);
}

static ck_status cuda_create(ck_backend *b, size_t size, ck_phys *out) {
    cuda_backend *c = cb(b);
    CUmemGenericAllocationHandle h = 0;
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    int fd_handles = __atomic_load_n(&c->fd_handles, __ATOMIC_RELAXED);
    CUmemAllocationProp prop = alloc_prop(c, fd_handles);
    CUresult r = c->fn.cuMemCreate(&h, size, &prop, 0);
    /* Some setups (containers, vGPU) advertise fd handles but refuse them;
     * the memory is still usable without IPC, so stop asking for them. */
    if (fd_handles && (r == CUDA_ERROR_NOT_SUPPORTED || r == CUDA_ERROR_NOT_PERMITTED ||
                       r == CUDA_ERROR_INVALID_VALUE)) {
        prop = alloc_prop(c, 0);
        r = c->fn.cuMemCreate(&h, size, &prop, 0);
        if (r == CUDA_SUCCESS)
            __atomic_store_n(&c->fd_handles, 0, __ATOMIC_RELAXED);
    }
    ctx_leave(c, prev);
    if (r == CUDA_ERROR_OUT_OF_MEMORY)
        return ck__err(CK_ERR_NOMEM, "cuMemCreate of %zu bytes on device %d failed: %s", size,
                       b->device, cu_str(&c->fn, r));
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuMemCreate", r);
    *out = (ck_phys)h;
    return CK_OK;
}

static ck_status cuda_release(ck_backend *b, ck_phys h) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuMemRelease, (CUmemGenericAllocationHandle)h);
}

/* n handles of `chunk` bytes back to back from va: one cuMemMap each (a
 * mapping can only be unmapped whole, so one per handle keeps every chunk
 * releasable on its own), then one cuMemSetAccess over the run. On failure
 * nothing stays mapped: the caller treats a failed map as no map. */
static ck_status cuda_map(ck_backend *b, uintptr_t va, size_t chunk, size_t n, const ck_phys *h) {
    cuda_backend *c = cb(b);
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    size_t done = 0;
    CUresult r = CUDA_SUCCESS;
    for (; done < n; done++) {
        r = c->fn.cuMemMap((CUdeviceptr)(va + done * chunk), chunk, 0,
                           (CUmemGenericAllocationHandle)h[done], 0);
        if (r != CUDA_SUCCESS)
            break;
    }
    const char *what = "cuMemMap";
    if (r == CUDA_SUCCESS) {
        CUmemAccessDesc acc;
        memset(&acc, 0, sizeof acc);
        acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        acc.location.id = c->dev;
        acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        r = c->fn.cuMemSetAccess((CUdeviceptr)va, n * chunk, &acc, 1);
        what = "cuMemSetAccess";
    }
    if (r != CUDA_SUCCESS) {
        while (done > 0) {
            done--;
            c->fn.cuMemUnmap((CUdeviceptr)(va + done * chunk), chunk);
        }
        ctx_leave(c, prev);
        return cu_fail(c, what, r);
    }
    ctx_leave(c, prev);
    return CK_OK;
}

static ck_status cuda_unmap(ck_backend *b, uintptr_t va, size_t size) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuMemUnmap, (CUdeviceptr)va, size);
}

/* ---- copies ------------------------------------------------------------ */

static ck_status cuda_memcpy_async(ck_backend *b, void *dst, const void *src, size_t n,
                                   ck_stream s) {
    cuda_backend *c = cb(b);
    /* Unified addressing: the driver tells host from device pointers. */
    CU_CALL(c, cuMemcpyAsync, (CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, n,
            (CUstream)s);
}

static ck_status cuda_memset_async(ck_backend *b, void *dst, int value, size_t n,
                                   ck_stream s) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuMemsetD8Async, (CUdeviceptr)(uintptr_t)dst, (unsigned char)value, n,
            (CUstream)s);
}

/* ---- streams ----------------------------------------------------------- */

static ck_status cuda_stream_create(ck_backend *b, ck_stream *out) {
    cuda_backend *c = cb(b);
    CUstream s = NULL;
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    /* Default flags, like cudaStreamCreate: ordered after legacy-stream work. */
    CUresult r = c->fn.cuStreamCreate(&s, CU_STREAM_DEFAULT);
    ctx_leave(c, prev);
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuStreamCreate", r);
    *out = (ck_stream)s;
    return CK_OK;
}

/* cuStreamDestroy returns before the stream's work is done; ckalloc's
 * contract (and the pool, which counts a destroyed stream's frees as done)
 * needs it finished, so wait first. */
static ck_status cuda_stream_destroy(ck_backend *b, ck_stream s) {
    cuda_backend *c = cb(b);
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    const char *call = "cuStreamSynchronize";
    CUresult r = c->fn.cuStreamSynchronize((CUstream)s);
    if (r == CUDA_SUCCESS) {
        call = "cuStreamDestroy";
        r = c->fn.cuStreamDestroy_v2((CUstream)s);
    }
    ctx_leave(c, prev);
    return r == CUDA_SUCCESS ? CK_OK : cu_fail(c, call, r);
}

static ck_status cuda_stream_sync(ck_backend *b, ck_stream s) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuStreamSynchronize, (CUstream)s);
}

static ck_status cuda_stream_capturing(ck_backend *b, ck_stream s, int *capturing) {
    cuda_backend *c = cb(b);
    CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_NONE;
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    CUresult r = c->fn.cuStreamIsCapturing((CUstream)s, &cs);
    ctx_leave(c, prev);
    /* Asking about the legacy stream while another stream captures in global
     * mode is itself an error: a capture is under way, so say so. */
    if (r == CUDA_ERROR_STREAM_CAPTURE_IMPLICIT) {
        *capturing = 1;
        return CK_OK;
    }
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuStreamIsCapturing", r);
    *capturing = cs != CU_STREAM_CAPTURE_STATUS_NONE;
    return CK_OK;
}

static ck_status cuda_stream_wait_event(ck_backend *b, ck_stream s, ck_event e) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuStreamWaitEvent, (CUstream)s, (CUevent)e, 0);
}

/* ---- events ------------------------------------------------------------ */

static ck_status event_make(ck_backend *b, ck_event *out, unsigned flags) {
    cuda_backend *c = cb(b);
    CUevent e = NULL;
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    CUresult r = c->fn.cuEventCreate(&e, flags);
    ctx_leave(c, prev);
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuEventCreate", r);
    *out = (ck_event)e;
    return CK_OK;
}

/* ck_event_create's: default flags keep timing on, so event_elapsed works. */
static ck_status cuda_event_create(ck_backend *b, ck_event *out) {
    return event_make(b, out, CU_EVENT_DEFAULT);
}

/* The pool's fences are only waited on and queried: without timing a
 * record is cheaper (the driver skips the timestamp). */
static ck_status cuda_fence_create(ck_backend *b, ck_event *out) {
    return event_make(b, out, CU_EVENT_DISABLE_TIMING);
}

static ck_status cuda_event_destroy(ck_backend *b, ck_event e) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuEventDestroy_v2, (CUevent)e);
}

static ck_status cuda_event_record(ck_backend *b, ck_event e, ck_stream s) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuEventRecord, (CUevent)e, (CUstream)s);
}

static ck_status cuda_event_query(ck_backend *b, ck_event e) {
    cuda_backend *c = cb(b);
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    CUresult r = c->fn.cuEventQuery((CUevent)e);
    ctx_leave(c, prev);
    if (r == CUDA_ERROR_NOT_READY)
        return CK_ERR_NOT_READY; /* an answer, not a failure: no sentence */
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuEventQuery", r);
    return CK_OK;
}

static ck_status cuda_event_sync(ck_backend *b, ck_event e) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuEventSynchronize, (CUevent)e);
}

static ck_status cuda_event_elapsed(ck_backend *b, ck_event start, ck_event end, float *ms) {
    cuda_backend *c = cb(b);
    CU_CALL(c, cuEventElapsedTime, ms, (CUevent)start, (CUevent)end);
}

/* ---- replay ------------------------------------------------------------ */

/* One kernel launch (or one cuBLASLt matmul) on s, in our context; the
 * module is loaded at the first call (kernels/launch.c). */
static ck_status cuda_replay(ck_backend *b, const struct ck__plan *plan, ck_stream s) {
    cuda_backend *c = cb(b);
    CUcontext prev;
    ck_status st = ctx_enter(c, &prev);
    if (st != CK_OK)
        return st;
    st = ck__gpu_replay(c->gpu, plan, (CUstream)s);
    ctx_leave(c, prev);
    return st;
}

/* ---- lifetime ---------------------------------------------------------- */

static void cuda_destroy(ck_backend *b) {
    cuda_backend *c = cb(b);
    if (!c)
        return;
    if (c->gpu) {
        /* cuModuleUnload and cublasLtDestroy need our context current; a
         * pool that never replayed makes no driver call here. */
        CUcontext prev;
        if (ck__gpu_has_driver_state(c->gpu) && ctx_enter(c, &prev) == CK_OK) {
            ck__gpu_free(c->gpu, 1);
            ctx_leave(c, prev);
        } else {
            ck__gpu_free(c->gpu, 0);
        }
        c->gpu = NULL;
    }
    c->fn.cuDevicePrimaryCtxRelease_v2(c->dev);
    dlclose(c->lib);
    free(c);
}

/* ---- pinned host memory ------------------------------------------------ */

static ck_status cuda_host_pin(ck_backend *b, void *p, size_t n) {
    cuda_backend *c = cb(b);
    if (!c->fn.cuMemHostRegister_v2 || !c->fn.cuMemHostUnregister)
        return ck__err(CK_ERR_BACKEND, "the CUDA driver has no cuMemHostRegister_v2 / "
                                       "cuMemHostUnregister: host memory cannot be pinned");
    CU_CALL(c, cuMemHostRegister_v2, p, n, CU_MEMHOSTREGISTER_PORTABLE);
}

static ck_status cuda_host_unpin(ck_backend *b, void *p) {
    cuda_backend *c = cb(b);
    if (!c->fn.cuMemHostUnregister) return CK_OK;
    CU_CALL(c, cuMemHostUnregister, p);
}

static ck_status cuda_pci_id(ck_backend *b, int *domain, int *bus, int *dev) {
    cuda_backend *c = cb(b);
    CUresult r = c->fn.cuDeviceGetAttribute(domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, c->dev);
    if (r == CUDA_SUCCESS) r = c->fn.cuDeviceGetAttribute(bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, c->dev);
    if (r == CUDA_SUCCESS) r = c->fn.cuDeviceGetAttribute(dev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, c->dev);
    return r == CUDA_SUCCESS ? CK_OK : cu_fail(c, "cuDeviceGetAttribute(PCI ids)", r);
}

static const struct ck_backend_ops cuda_ops = {
    .destroy = cuda_destroy,
    .mem_info = cuda_mem_info,
    .reserve = cuda_reserve,
    .unreserve = cuda_unreserve,
    .create = cuda_create,
    .release = cuda_release,
    .map = cuda_map,
    .unmap = cuda_unmap,
    .memcpy_async = cuda_memcpy_async,
    .memset_async = cuda_memset_async,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_sync = cuda_stream_sync,
    .stream_capturing = cuda_stream_capturing,
    .stream_wait_event = cuda_stream_wait_event,
    .event_create = cuda_event_create,
    .fence_create = cuda_fence_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .event_query = cuda_event_query,
    .event_sync = cuda_event_sync,
    .event_elapsed = cuda_event_elapsed,
    .replay = cuda_replay,
    .host_pin = cuda_host_pin,
    .host_unpin = cuda_host_unpin,
    .pci_id = cuda_pci_id,
};

/* Everything after the primary context is retained; on failure the caller
 * releases it. */
static ck_status setup_device(cuda_backend *c) {
    cuda_fns *fn = &c->fn;
    int vmm = 0, fd = 0;
    CUresult r = fn->cuDeviceGetAttribute(
        &vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, c->dev);
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuDeviceGetAttribute(VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED)", r);
    if (!vmm)
        return ck__err(CK_ERR_BACKEND,
                       "CUDA device %d does not support the virtual memory management API",
                       c->base.device);
    if (fn->cuDeviceGetAttribute(&fd, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
                                 c->dev) != CUDA_SUCCESS)
        fd = 0;

    c->fd_handles = fd == 1;

    size_t gran = 0;
    CUmemAllocationProp prop = alloc_prop(c, c->fd_handles);
    r = fn->cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuMemGetAllocationGranularity", r);
    if (gran == 0)
        gran = CUDA_GRAN_ROUND;
    c->base.granularity = (size_t)ck__align_up(gran, CUDA_GRAN_ROUND);

    size_t total = 0;
    r = fn->cuDeviceTotalMem_v2(&total, c->dev);
    if (r != CUDA_SUCCESS)
        return cu_fail(c, "cuDeviceTotalMem", r);
    c->base.total_mem = total;
    return CK_OK;
}

ck_status ck__backend_cuda_create(const ck_pool_options *opts, ck_backend **out) {
    int ordinal = opts ? opts->device : 0;
    cuda_backend *c = calloc(1, sizeof *c);
    if (!c)
        return ck__err(CK_ERR_NOMEM, "out of host memory creating the cuda backend");

    c->lib = open_lib();
    if (!c->lib) {
        const char *why = dlerror();
        ck_status st = ck__err(CK_ERR_NO_DEVICE, "no CUDA driver: could not load %s (%s)",
                               lib_path(), why ? why : "unknown error");
        free(c);
        return st;
    }
    ck_status st = CK_OK;
    const char *missing = resolve(c->lib, &c->fn);
    if (missing) {
        st = ck__err(CK_ERR_NO_DEVICE, "no CUDA driver: %s lacks %s (driver too old?)",
                     lib_path(), missing);
        goto fail_lib;
    }

    CUresult r = c->fn.cuInit(0);
    if (r != CUDA_SUCCESS) {
        st = ck__err(CK_ERR_NO_DEVICE, "no CUDA device: cuInit failed: %s (CUresult %d)",
                     cu_str(&c->fn, r), (int)r);
        goto fail_lib;
    }
    int count = 0;
    r = c->fn.cuDeviceGetCount(&count);
    if (r != CUDA_SUCCESS || count <= 0) {
        st = ck__err(CK_ERR_NO_DEVICE, "no CUDA device: the driver reports %d devices", count);
        goto fail_lib;
    }
    if (ordinal < 0 || ordinal >= count) {
        st = ck__err(CK_ERR_INVALID, "CUDA device %d does not exist (%d device%s: 0..%d)",
                     ordinal, count, count == 1 ? "" : "s", count - 1);
        goto fail_lib;
    }
    r = c->fn.cuDeviceGet(&c->dev, ordinal);
    if (r != CUDA_SUCCESS) {
        st = cu_fail(c, "cuDeviceGet", r);
        goto fail_lib;
    }
    r = c->fn.cuDevicePrimaryCtxRetain(&c->ctx, c->dev);
    if (r != CUDA_SUCCESS) {
        st = cu_fail(c, "cuDevicePrimaryCtxRetain", r);
        goto fail_lib;
    }

    c->base.ops = &cuda_ops;
    c->base.name = "cuda";
    c->base.device = ordinal;
    st = setup_device(c);
    if (st == CK_OK) {
        ck__gpu_fns gf = {
            .cuModuleLoadData = c->fn.cuModuleLoadData,
            .cuModuleGetFunction = c->fn.cuModuleGetFunction,
            .cuModuleUnload = c->fn.cuModuleUnload,
            .cuLaunchKernel = c->fn.cuLaunchKernel,
            .cuDeviceGetAttribute = c->fn.cuDeviceGetAttribute,
            .cuGetErrorString = c->fn.cuGetErrorString,
        };
        c->gpu = ck__gpu_new(&gf, c->dev); /* no driver call: loads at the first replay */
        if (!c->gpu)
            st = ck__err(CK_ERR_NOMEM, "out of host memory creating the cuda backend");
    }
    if (st != CK_OK) {
        c->fn.cuDevicePrimaryCtxRelease_v2(c->dev);
        goto fail_lib;
    }
    *out = &c->base;
    return CK_OK;

fail_lib:
    dlclose(c->lib);
    free(c);
    return st;
}

int ck__cuda_available(void) {
    void *lib = open_lib();
    if (!lib)
        return 0;
    ck_pfn_cuInit init;
    ck_pfn_cuDeviceGetCount get_count;
    *(void **)&init = dlsym(lib, "cuInit");
    *(void **)&get_count = dlsym(lib, "cuDeviceGetCount");
    int count = 0;
    /* A driver without the VMM entry points cannot back a pool either. */
    int ok = init && get_count && dlsym(lib, "cuMemCreate") && init(0) == CUDA_SUCCESS &&
             get_count(&count) == CUDA_SUCCESS && count > 0;
    dlclose(lib);
    return ok;
}
