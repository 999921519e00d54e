/* ckfakecuda: a stand-in for libcuda.so.1 with host memory behind it, so the
 * cuda backend's own code runs in CI (CKALLOC_CUDA_LIB=/path/libckfakecuda.so).
 *
 * It follows the driver's VMM rules closely enough to catch misuse:
 * - cuMemAddressReserve: mmap(PROT_NONE, MAP_NORESERVE), aligned.
 * - cuMemCreate: a memfd of the handle's size, so contents are real and
 *   survive unmap + remap (at the same or another address).
 * - cuMemMap: mmap(MAP_SHARED|MAP_FIXED) of the memfd inside a reservation;
 *   the range stays PROT_NONE until cuMemSetAccess, as on a GPU.
 * - cuMemUnmap: exactly one earlier mapping; PROT_NONE again afterwards.
 * - cuMemRelease of a mapped handle frees it at its last unmap.
 * - Streams run work at once; events complete at once (unless
 *   CKFAKECUDA_NOT_READY says otherwise); elapsed time comes from
 *   CLOCK_MONOTONIC stamps taken at record.
 * - Calls that need a context fail with CUDA_ERROR_INVALID_CONTEXT unless a
 *   retained primary context is current on the calling thread.
 * - Copies and sets touching a reservation must stay inside mappings with
 *   access (else CUDA_ERROR_INVALID_VALUE instead of a crash).
 *
 * Environment, read at every cuInit:
 *   CKFAKECUDA_DEVICES=N       device count (default 1; 0: cuInit fails)
 *   CKFAKECUDA_TOTAL_MEM=B     bytes per device (default 8 GiB; K/M/G/T ok)
 *   CKFAKECUDA_FAIL_CREATE=N   the Nth cuMemCreate fails (once)
 *   CKFAKECUDA_FAIL_MAP=N      the Nth cuMemMap fails (once)
 *   CKFAKECUDA_FAIL_ACCESS=N   the Nth cuMemSetAccess fails (once)
 *   CKFAKECUDA_FAIL_CODE=C     CUresult of injected failures (default:
 *                              OUT_OF_MEMORY for create, UNKNOWN otherwise)
 *   CKFAKECUDA_FD_HANDLES=0|1|2 POSIX fd handles: 0 unsupported, 1 supported
 *                              (default), 2 advertised but refused by
 *                              cuMemCreate (CUDA_ERROR_NOT_SUPPORTED)
 *   CKFAKECUDA_NO_VMM=1        report no virtual memory management support
 *   CKFAKECUDA_NOT_READY=N     a recorded event answers CUDA_ERROR_NOT_READY
 *                              to its first N queries (until a synchronize)
 *   CKFAKECUDA_CAPTURING=1     every stream reports an active graph capture
 *   CKFAKECUDA_CC=NN           compute capability reported (default 90); below
 *                              80 cuModuleLoadData answers NO_BINARY_FOR_GPU
 *   CKFAKECUDA_SMS=N           multiprocessor count (default 132)
 *   CKFAKECUDA_FAIL_LAUNCH=N   the Nth cuLaunchKernel fails (once; code as
 *                              above, default LAUNCH_OUT_OF_RESOURCES)
 *   CKFAKECUDA_PROC_INTERNAL=1 cuGetProcAddress answers with internal
 *                              wrappers, not the exported functions, for
 *                              the entry points the preload library hooks
 *
 * Replay kernels: cuModuleLoadData accepts an image that starts with the
 * fatbin magic (0xBA55ED50) and knows the kernels kernels/launch.h names;
 * cuLaunchKernel runs nothing but records each launch (kernel, grid, block,
 * shared bytes, stream and a copy of the ck__plan its one parameter points
 * to) for ckfake_launch_get, and counts it.
 *
 * For the preload tests it also implements the classic allocator
 * (cuMemAlloc_v2/cuMemFree_v2, cuMemAllocAsync/cuMemFreeAsync, plain malloc
 * behind them, counted), cuGetProcAddress(_v2) the way cudart uses it, and
 * cuStreamBeginCapture_v2/cuStreamEndCapture with a per-stream capture flag.
 * It is also built as libcuda.so.1 so programs link and load it by that name.
 *
 * Only cuEventElapsedTime is exported (not _v2), so the backend's fallback
 * to the older name is what CI runs.
 */
#include "cuda_abi.h"
#include "launch.h" /* the replay kernels' names and their ck__plan parameter */

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define FK_API __attribute__((visibility("default")))
#define FK_GRAN ((size_t)2 << 20)
#define FK_MAX_DEV 16
#define FK_MAGIC_STREAM 0x66616b6573747231ull
#define FK_MAGIC_EVENT 0x66616b6565766e31ull

struct CUctx_st {
    int dev;
    int refs;
};

struct CUstream_st {
    uint64_t magic;
    int capturing;
    struct CUstream_st *next;
};

/* cuMemAlloc'ed blocks (the classic allocator). */
typedef struct fk_alloc {
    void *p;
    size_t size;
    struct fk_alloc *next;
} fk_alloc;

struct CUevent_st {
    uint64_t magic;
    int recorded;
    uint64_t not_ready; /* queries left that answer NOT_READY */
    CUstream stream;    /* where it was last recorded */
    uint64_t stamp_ns;
    unsigned flags; /* as created: CU_EVENT_DISABLE_TIMING has no elapsed time */
    struct CUevent_st *next;
};

typedef struct fk_handle {
    CUmemGenericAllocationHandle id;
    int fd;
    size_t size;
    int maps;     /* live mappings of this handle */
    int released; /* cuMemRelease called; freed at the last unmap */
    struct fk_handle *next;
} fk_handle;

typedef struct fk_res {
    uintptr_t va;
    size_t size;
    struct fk_res *next;
} fk_res;

typedef struct fk_map {
    uintptr_t va;
    size_t size;
    fk_handle *h;
    int prot; /* PROT_* now in force */
    struct fk_map *next;
} fk_map;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_init;
static int g_ndev;
static uint64_t g_total;
static uint64_t g_used; /* bytes of live handles (memory still alive) */
static struct CUctx_st g_ctx[FK_MAX_DEV];
static fk_handle *g_handles;
static fk_res *g_res;
static fk_map *g_maps;
static struct CUstream_st *g_streams;
static struct CUevent_st *g_events;
static CUmemGenericAllocationHandle g_next_id = 0x1000;
static unsigned long g_n_handles, g_n_maps, g_n_res, g_n_streams, g_n_events;
static uint64_t g_fail_create, g_fail_map, g_fail_access; /* 0 = never */
static uint64_t g_calls_create, g_calls_map, g_calls_access;
static int g_fail_code; /* 0 = per-call default */
static int g_fd_handles = 1;
static int g_no_vmm;
static uint64_t g_not_ready;
static int g_capturing;
static __thread CUcontext tl_ctx;
static int g_cc = 90, g_sms = 132;
static uint64_t g_fail_launch, g_calls_launch;

/* ---- helpers ----------------------------------------------------------- */

static uint64_t env_u64(const char *name, uint64_t dflt) {
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s)
        return dflt;
    switch (*end) {
    case 'k': case 'K': v <<= 10; break;
    case 'm': case 'M': v <<= 20; break;
    case 'g': case 'G': v <<= 30; break;
    case 't': case 'T': v <<= 40; break;
    default: break;
    }
    return v;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Initialized, and a retained primary context current on this thread. */
static CUresult need_ctx(void) {
    if (!g_init)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!tl_ctx || tl_ctx->refs <= 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    return CUDA_SUCCESS;
}

/* The special handles CU_STREAM_LEGACY and CU_STREAM_PER_THREAD. */
#define FK_STREAM_LEGACY ((CUstream)0x1)
#define FK_STREAM_PER_THREAD ((CUstream)0x2)

static int stream_ok(CUstream s) {
    if (!s || s == FK_STREAM_LEGACY || s == FK_STREAM_PER_THREAD)
        return 1; /* the default streams */
    for (struct CUstream_st *p = g_streams; p; p = p->next)
        if (p == s)
            return 1;
    return 0;
}

static int event_ok(CUevent e) {
    for (struct CUevent_st *p = g_events; p; p = p->next)
        if (p == e)
            return 1;
    return 0;
}

static fk_handle *find_handle(CUmemGenericAllocationHandle id) {
    for (fk_handle *h = g_handles; h; h = h->next)
        if (h->id == id)
            return h;
    return NULL;
}

static void free_handle(fk_handle *h) {
    for (fk_handle **pp = &g_handles; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    close(h->fd);
    g_used -= h->size;
    g_n_handles--;
    free(h);
}

static fk_res *res_containing(uintptr_t p) {
    for (fk_res *r = g_res; r; r = r->next)
        if (p >= r->va && p - r->va < r->size)
            return r;
    return NULL;
}

/* Lowest reservation start above p, or UINTPTR_MAX. */
static uintptr_t next_res_start(uintptr_t p) {
    uintptr_t best = UINTPTR_MAX;
    for (fk_res *r = g_res; r; r = r->next)
        if (r->va > p && r->va < best)
            best = r->va;
    return best;
}

static fk_map *map_containing(uintptr_t p) {
    for (fk_map *m = g_maps; m; m = m->next)
        if (p >= m->va && p - m->va < m->size)
            return m;
    return NULL;
}

static int overlaps_map(uintptr_t va, size_t size) {
    for (fk_map *m = g_maps; m; m = m->next)
        if (va < m->va + m->size && m->va < va + size)
            return 1;
    return 0;
}

/* Bytes in reservations must be mapped with prot; other bytes are host
 * memory (unified addressing) and are the caller's business. */
static int range_ok(uintptr_t a, size_t n, int prot) {
    uintptr_t end = a + n, p = a;
    if (end < a)
        return 0;
    while (p < end) {
        if (res_containing(p)) {
            fk_map *m = map_containing(p);
            if (!m || (m->prot & prot) != prot)
                return 0;
            p = m->va + m->size;
        } else {
            p = next_res_start(p);
        }
    }
    return 1;
}

static int fault_fires(uint64_t *calls, uint64_t *fail_at) {
    ++*calls;
    if (*fail_at && *calls == *fail_at) {
        *fail_at = 0; /* once */
        return 1;
    }
    return 0;
}

static int prop_ok(const CUmemAllocationProp *prop) {
    return prop && prop->type == CU_MEM_ALLOCATION_TYPE_PINNED &&
           prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE && prop->location.id >= 0 &&
           prop->location.id < g_ndev && prop->win32HandleMetaData == NULL &&
           (prop->requestedHandleTypes == CU_MEM_HANDLE_TYPE_NONE ||
            prop->requestedHandleTypes == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
}

#define LOCKED(expr)                     \
    do {                                 \
        pthread_mutex_lock(&g_mu);       \
        CUresult r_ = (expr);            \
        pthread_mutex_unlock(&g_mu);     \
        return r_;                       \
    } while (0)

/* ---- init, devices, contexts ------------------------------------------- */

FK_API CUresult cuInit(unsigned int flags) {
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    uint64_t n = env_u64("CKFAKECUDA_DEVICES", 1);
    g_ndev = n > FK_MAX_DEV ? FK_MAX_DEV : (int)n;
    g_total = env_u64("CKFAKECUDA_TOTAL_MEM", (uint64_t)8 << 30);
    g_fail_create = env_u64("CKFAKECUDA_FAIL_CREATE", 0);
    g_fail_map = env_u64("CKFAKECUDA_FAIL_MAP", 0);
    g_fail_access = env_u64("CKFAKECUDA_FAIL_ACCESS", 0);
    g_fail_code = (int)env_u64("CKFAKECUDA_FAIL_CODE", 0);
    g_fd_handles = (int)env_u64("CKFAKECUDA_FD_HANDLES", 1);
    g_no_vmm = env_u64("CKFAKECUDA_NO_VMM", 0) != 0;
    g_not_ready = env_u64("CKFAKECUDA_NOT_READY", 0);
    g_capturing = env_u64("CKFAKECUDA_CAPTURING", 0) != 0;
    g_cc = (int)env_u64("CKFAKECUDA_CC", 90);
    g_sms = (int)env_u64("CKFAKECUDA_SMS", 132);
    g_fail_launch = env_u64("CKFAKECUDA_FAIL_LAUNCH", 0);
    g_calls_create = g_calls_map = g_calls_access = 0;
    for (int i = 0; i < FK_MAX_DEV; i++)
        g_ctx[i].dev = i;
    g_init = g_ndev > 0;
    pthread_mutex_unlock(&g_mu);
    return g_ndev > 0 ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
}

FK_API CUresult cuDeviceGetCount(int *count) {
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    CUresult r = g_init ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
    if (r == CUDA_SUCCESS)
        *count = g_ndev;
    pthread_mutex_unlock(&g_mu);
    return r;
}

static CUresult dev_check(CUdevice d) {
    if (!g_init)
        return CUDA_ERROR_NOT_INITIALIZED;
    return d >= 0 && d < g_ndev ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

FK_API CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
    if (!dev)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    CUresult r = dev_check(ordinal);
    if (r == CUDA_SUCCESS)
        *dev = ordinal;
    pthread_mutex_unlock(&g_mu);
    return r;
}

FK_API CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
    if (!name || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    CUresult r = dev_check(dev);
    pthread_mutex_unlock(&g_mu);
    if (r == CUDA_SUCCESS) {
        strncpy(name, "ckfakecuda host device", (size_t)len - 1);
        name[len - 1] = '\0';
    }
    return r;
}

FK_API CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
    if (!bytes)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    CUresult r = dev_check(dev);
    if (r == CUDA_SUCCESS)
        *bytes = (size_t)g_total;
    pthread_mutex_unlock(&g_mu);
    return r;
}

FK_API CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attr, CUdevice dev) {
    if (!pi)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    CUresult r = dev_check(dev);
    if (r == CUDA_SUCCESS) {
        switch (attr) {
        case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: *pi = !g_no_vmm; break;
        case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
            *pi = g_fd_handles != 0;
            break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = g_cc / 10; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = g_cc % 10; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = g_sms; break;
        case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *pi = 0x17 + dev; break;
        default: *pi = 0; break;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

FK_API CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
    if (!ctx)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    CUresult r = dev_check(dev);
    if (r == CUDA_SUCCESS) {
        g_ctx[dev].refs++;
        *ctx = &g_ctx[dev];
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

FK_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    pthread_mutex_lock(&g_mu);
    CUresult r = dev_check(dev);
    if (r == CUDA_SUCCESS) {
        if (g_ctx[dev].refs <= 0)
            r = CUDA_ERROR_INVALID_CONTEXT;
        else
            g_ctx[dev].refs--;
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

static CUresult ctx_set(CUcontext ctx) {
    if (!g_init)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (ctx && (ctx < &g_ctx[0] || ctx >= &g_ctx[FK_MAX_DEV]))
        return CUDA_ERROR_INVALID_CONTEXT;
    tl_ctx = ctx;
    return CUDA_SUCCESS;
}

FK_API CUresult cuCtxSetCurrent(CUcontext ctx) { LOCKED(ctx_set(ctx)); }

static CUresult ctx_get(CUcontext *ctx) {
    if (!g_init)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!ctx)
        return CUDA_ERROR_INVALID_VALUE;
    *ctx = tl_ctx;
    return CUDA_SUCCESS;
}

FK_API CUresult cuCtxGetCurrent(CUcontext *ctx) { LOCKED(ctx_get(ctx)); }

FK_API CUresult cuGetErrorString(CUresult err, const char **str) {
    if (!str)
        return CUDA_ERROR_INVALID_VALUE;
    switch (err) {
    case CUDA_SUCCESS: *str = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *str = "invalid argument"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *str = "out of memory"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *str = "initialization error"; break;
    case CUDA_ERROR_NO_DEVICE: *str = "no CUDA-capable device is detected"; break;
    case CUDA_ERROR_INVALID_DEVICE: *str = "invalid device ordinal"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *str = "invalid device context"; break;
    case CUDA_ERROR_INVALID_HANDLE: *str = "invalid resource handle"; break;
    case CUDA_ERROR_NOT_READY: *str = "device not ready"; break;
    case CUDA_ERROR_NOT_PERMITTED: *str = "operation not permitted"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *str = "operation not supported"; break;
    case CUDA_ERROR_UNKNOWN: *str = "unknown error"; break;
    default: *str = NULL; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

/* ---- memory ------------------------------------------------------------ */

static CUresult mem_get_info(size_t *free_bytes, size_t *total_bytes) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!free_bytes || !total_bytes)
        return CUDA_ERROR_INVALID_VALUE;
    *total_bytes = (size_t)g_total;
    *free_bytes = (size_t)(g_used < g_total ? g_total - g_used : 0);
    return CUDA_SUCCESS;
}

FK_API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
    LOCKED(mem_get_info(free_bytes, total_bytes));
}

static CUresult get_gran(size_t *gran, const CUmemAllocationProp *prop,
                         CUmemAllocationGranularity_flags option) {
    if (!g_init)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!gran || !prop_ok(prop) ||
        (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
         option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
        return CUDA_ERROR_INVALID_VALUE;
    *gran = FK_GRAN;
    return CUDA_SUCCESS;
}

FK_API CUresult cuMemGetAllocationGranularity(size_t *gran, const CUmemAllocationProp *prop,
                                              CUmemAllocationGranularity_flags option) {
    LOCKED(get_gran(gran, prop, option));
}

static CUresult address_reserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                CUdeviceptr addr, unsigned long long flags) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!ptr || size == 0 || size % FK_GRAN || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (alignment == 0)
        alignment = FK_GRAN;
    if ((alignment & (alignment - 1)) || alignment % FK_GRAN)
        return CUDA_ERROR_INVALID_VALUE;
    (void)addr; /* only a hint, as in the driver */
    size_t span = size + alignment;
    if (span < size)
        return CUDA_ERROR_OUT_OF_MEMORY;
    fk_res *res = malloc(sizeof *res);
    if (!res)
        return CUDA_ERROR_OUT_OF_MEMORY;
    void *base = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        free(res);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    uintptr_t b = (uintptr_t)base;
    uintptr_t va = (b + alignment - 1) & ~(uintptr_t)(alignment - 1);
    if (va > b)
        munmap(base, va - b);
    if (b + span > va + size)
        munmap((void *)(va + size), b + span - (va + size));
    res->va = va;
    res->size = size;
    res->next = g_res;
    g_res = res;
    g_n_res++;
    *ptr = (CUdeviceptr)va;
    return CUDA_SUCCESS;
}

FK_API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                    CUdeviceptr addr, unsigned long long flags) {
    LOCKED(address_reserve(ptr, size, alignment, addr, flags));
}

static CUresult address_free(CUdeviceptr ptr, size_t size) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    for (fk_res **pp = &g_res; *pp; pp = &(*pp)->next) {
        fk_res *res = *pp;
        if (res->va != (uintptr_t)ptr || res->size != size)
            continue;
        /* Stricter than needed, on purpose: freeing VA with live mappings
         * is a leak in the caller. */
        if (overlaps_map(res->va, res->size))
            return CUDA_ERROR_INVALID_VALUE;
        munmap((void *)res->va, res->size);
        *pp = res->next;
        free(res);
        g_n_res--;
        return CUDA_SUCCESS;
    }
    return CUDA_ERROR_INVALID_VALUE;
}

FK_API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) { LOCKED(address_free(ptr, size)); }

static CUresult mem_create(CUmemGenericAllocationHandle *out, size_t size,
                           const CUmemAllocationProp *prop, unsigned long long flags) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!out || size == 0 || size % FK_GRAN || flags != 0 || !prop_ok(prop))
        return CUDA_ERROR_INVALID_VALUE;
    if (prop->requestedHandleTypes == CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR &&
        g_fd_handles != 1)
        return g_fd_handles == 0 ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_SUPPORTED;
    if (fault_fires(&g_calls_create, &g_fail_create))
        return g_fail_code ? g_fail_code : CUDA_ERROR_OUT_OF_MEMORY;
    if (g_used + size > g_total || g_used + size < g_used)
        return CUDA_ERROR_OUT_OF_MEMORY;
    fk_handle *h = calloc(1, sizeof *h);
    if (!h)
        return CUDA_ERROR_OUT_OF_MEMORY;
    h->fd = memfd_create("ckfakecuda", MFD_CLOEXEC);
    if (h->fd < 0 || ftruncate(h->fd, (off_t)size) != 0) {
        if (h->fd >= 0)
            close(h->fd);
        free(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    h->id = g_next_id++;
    h->size = size;
    h->next = g_handles;
    g_handles = h;
    g_used += size;
    g_n_handles++;
    *out = h->id;
    return CUDA_SUCCESS;
}

FK_API CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size,
                            const CUmemAllocationProp *prop, unsigned long long flags) {
    LOCKED(mem_create(h, size, prop, flags));
}

static CUresult mem_release(CUmemGenericAllocationHandle id) {
    if (!g_init)
        return CUDA_ERROR_NOT_INITIALIZED;
    fk_handle *h = find_handle(id);
    if (!h || h->released)
        return CUDA_ERROR_INVALID_VALUE;
    if (h->maps > 0)
        h->released = 1; /* the driver keeps it alive until the last unmap */
    else
        free_handle(h);
    return CUDA_SUCCESS;
}

FK_API CUresult cuMemRelease(CUmemGenericAllocationHandle h) { LOCKED(mem_release(h)); }

static CUresult mem_map(CUdeviceptr ptr, size_t size, size_t offset,
                        CUmemGenericAllocationHandle id, unsigned long long flags) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    uintptr_t va = (uintptr_t)ptr;
    fk_handle *h = find_handle(id);
    if (!h || h->released || offset != 0 || flags != 0 || size != h->size || va % FK_GRAN)
        return CUDA_ERROR_INVALID_VALUE;
    fk_res *res = res_containing(va);
    if (!res || size > res->va + res->size - va || overlaps_map(va, size))
        return CUDA_ERROR_INVALID_VALUE;
    if (fault_fires(&g_calls_map, &g_fail_map))
        return g_fail_code ? g_fail_code : CUDA_ERROR_UNKNOWN;
    fk_map *m = malloc(sizeof *m);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (mmap((void *)va, size, PROT_NONE, MAP_SHARED | MAP_FIXED, h->fd, 0) == MAP_FAILED) {
        free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    m->va = va;
    m->size = size;
    m->h = h;
    m->prot = PROT_NONE;
    m->next = g_maps;
    g_maps = m;
    h->maps++;
    g_n_maps++;
    return CUDA_SUCCESS;
}

FK_API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                         CUmemGenericAllocationHandle h, unsigned long long flags) {
    LOCKED(mem_map(ptr, size, offset, h, flags));
}

static CUresult mem_set_access(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                               size_t count) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!desc || count == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int prot = PROT_NONE;
    for (size_t i = 0; i < count; i++) {
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE || desc[i].location.id < 0 ||
            desc[i].location.id >= g_ndev)
            return CUDA_ERROR_INVALID_VALUE;
        switch (desc[i].flags) {
        case CU_MEM_ACCESS_FLAGS_PROT_NONE: break;
        case CU_MEM_ACCESS_FLAGS_PROT_READ: prot |= PROT_READ; break;
        case CU_MEM_ACCESS_FLAGS_PROT_READWRITE: prot |= PROT_READ | PROT_WRITE; break;
        default: return CUDA_ERROR_INVALID_VALUE;
        }
    }
    /* The range must be whole, back-to-back mappings (simpler than the
     * driver, which also takes parts of one). */
    uintptr_t va = (uintptr_t)ptr, end = va + size;
    for (uintptr_t p = va; p < end;) {
        fk_map *m = map_containing(p);
        if (!m || m->va != p || m->size > end - p)
            return CUDA_ERROR_INVALID_VALUE;
        p += m->size;
    }
    if (fault_fires(&g_calls_access, &g_fail_access))
        return g_fail_code ? g_fail_code : CUDA_ERROR_UNKNOWN;
    for (uintptr_t p = va; p < end;) {
        fk_map *m = map_containing(p);
        if (mprotect((void *)m->va, m->size, prot) != 0)
            return CUDA_ERROR_UNKNOWN;
        m->prot = prot;
        p += m->size;
    }
    return CUDA_SUCCESS;
}

FK_API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                               size_t count) {
    LOCKED(mem_set_access(ptr, size, desc, count));
}

static CUresult mem_unmap(CUdeviceptr ptr, size_t size) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    for (fk_map **pp = &g_maps; *pp; pp = &(*pp)->next) {
        fk_map *m = *pp;
        if (m->va != (uintptr_t)ptr || m->size != size)
            continue;
        /* Back to reserved-but-inaccessible; MAP_FIXED swaps atomically. */
        if (mmap((void *)m->va, m->size, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
                 0) == MAP_FAILED)
            return CUDA_ERROR_UNKNOWN;
        *pp = m->next;
        fk_handle *h = m->h;
        free(m);
        g_n_maps--;
        if (--h->maps == 0 && h->released)
            free_handle(h);
        return CUDA_SUCCESS;
    }
    return CUDA_ERROR_INVALID_VALUE;
}

FK_API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) { LOCKED(mem_unmap(ptr, size)); }

/* ---- copies: done at once, under the lock so no unmap races them -------- */

static CUresult memcpy_now(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!stream_ok(s))
        return CUDA_ERROR_INVALID_HANDLE;
    if (n == 0)
        return CUDA_SUCCESS;
    if (!dst || !src || !range_ok((uintptr_t)dst, n, PROT_WRITE) ||
        !range_ok((uintptr_t)src, n, PROT_READ))
        return CUDA_ERROR_INVALID_VALUE;
    memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
    return CUDA_SUCCESS;
}

FK_API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    LOCKED(memcpy_now(dst, src, n, s));
}

static CUresult memset_now(CUdeviceptr dst, unsigned char uc, size_t n, CUstream s) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!stream_ok(s))
        return CUDA_ERROR_INVALID_HANDLE;
    if (n == 0)
        return CUDA_SUCCESS;
    if (!dst || !range_ok((uintptr_t)dst, n, PROT_WRITE))
        return CUDA_ERROR_INVALID_VALUE;
    memset((void *)(uintptr_t)dst, uc, n);
    return CUDA_SUCCESS;
}

/* Pinned host ranges (cuMemHostRegister_v2): the real driver refuses to
 * register an overlapping range and to unregister an unknown pointer. */
typedef struct fk_pin {
    uintptr_t p;
    size_t n;
} fk_pin;
static fk_pin fk_pins[4096];
static size_t fk_npins;

static CUresult host_register(void *p, size_t n, unsigned int flags) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!p || n == 0 || (flags & ~0x0fu))
        return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < fk_npins; i++)
        if ((uintptr_t)p < fk_pins[i].p + fk_pins[i].n && fk_pins[i].p < (uintptr_t)p + n)
            return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    if (fk_npins == sizeof fk_pins / sizeof fk_pins[0])
        return CUDA_ERROR_OUT_OF_MEMORY;
    fk_pins[fk_npins++] = (fk_pin){(uintptr_t)p, n};
    return CUDA_SUCCESS;
}

static CUresult host_unregister(void *p) {
    for (size_t i = 0; i < fk_npins; i++)
        if (fk_pins[i].p == (uintptr_t)p) {
            fk_pins[i] = fk_pins[--fk_npins];
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
}

FK_API CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned int flags) {
    LOCKED(host_register(p, n, flags));
}
FK_API CUresult cuMemHostUnregister(void *p) { LOCKED(host_unregister(p)); }

FK_API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char uc, size_t n, CUstream s) {
    LOCKED(memset_now(dst, uc, n, s));
}

/* ---- streams ----------------------------------------------------------- */

static CUresult stream_create(CUstream *out, unsigned int flags) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!out || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s = calloc(1, sizeof *s);
    if (!s)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->magic = FK_MAGIC_STREAM;
    s->next = g_streams;
    g_streams = s;
    g_n_streams++;
    *out = s;
    return CUDA_SUCCESS;
}

FK_API CUresult cuStreamCreate(CUstream *s, unsigned int flags) { LOCKED(stream_create(s, flags)); }

static CUresult stream_destroy(CUstream s) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    for (struct CUstream_st **pp = &g_streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            /* Its work is done (it always is here); forget the pointer. */
            for (struct CUevent_st *e = g_events; e; e = e->next)
                if (e->stream == s) {
                    e->stream = NULL;
                    e->not_ready = 0;
                }
            s->magic = 0;
            free(s);
            g_n_streams--;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_HANDLE;
}

FK_API CUresult cuStreamDestroy_v2(CUstream s) { LOCKED(stream_destroy(s)); }

static CUresult stream_check(CUstream s) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    return stream_ok(s) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static unsigned long g_stream_syncs; /* cuStreamSynchronize calls that succeeded */

static CUresult stream_sync(CUstream s) {
    CUresult r = stream_check(s);
    if (r != CUDA_SUCCESS)
        return r;
    g_stream_syncs++;
    for (struct CUevent_st *e = g_events; e; e = e->next)
        if (e->stream == s)
            e->not_ready = 0;
    return CUDA_SUCCESS;
}

FK_API CUresult cuStreamSynchronize(CUstream s) { LOCKED(stream_sync(s)); }

static CUresult stream_wait_event(CUstream s, CUevent e, unsigned int flags) {
    CUresult r = stream_check(s);
    if (r != CUDA_SUCCESS)
        return r;
    if (!event_ok(e))
        return CUDA_ERROR_INVALID_HANDLE;
    return flags == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FK_API CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int flags) {
    LOCKED(stream_wait_event(s, e, flags));
}

static CUresult stream_is_capturing(CUstream s, CUstreamCaptureStatus *st) {
    CUresult r = stream_check(s);
    if (r != CUDA_SUCCESS)
        return r;
    if (!st)
        return CUDA_ERROR_INVALID_VALUE;
    int cap = g_capturing || (s && s != FK_STREAM_LEGACY && s != FK_STREAM_PER_THREAD &&
                              s->capturing);
    *st = cap ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
}

FK_API CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus *st) {
    LOCKED(stream_is_capturing(s, st));
}

/* ---- events ------------------------------------------------------------ */

static CUresult event_create(CUevent *out, unsigned int flags) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUevent_st *e = calloc(1, sizeof *e);
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->magic = FK_MAGIC_EVENT;
    e->flags = flags;
    e->next = g_events;
    g_events = e;
    g_n_events++;
    *out = e;
    return CUDA_SUCCESS;
}

FK_API CUresult cuEventCreate(CUevent *e, unsigned int flags) { LOCKED(event_create(e, flags)); }

static CUresult event_destroy(CUevent e) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    for (struct CUevent_st **pp = &g_events; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            e->magic = 0;
            free(e);
            g_n_events--;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_HANDLE;
}

FK_API CUresult cuEventDestroy_v2(CUevent e) { LOCKED(event_destroy(e)); }

static CUresult event_record(CUevent e, CUstream s) {
    CUresult r = stream_check(s);
    if (r != CUDA_SUCCESS)
        return r;
    if (!event_ok(e))
        return CUDA_ERROR_INVALID_HANDLE;
    e->recorded = 1;
    e->stamp_ns = now_ns();
    e->not_ready = g_not_ready;
    e->stream = s;
    return CUDA_SUCCESS;
}

FK_API CUresult cuEventRecord(CUevent e, CUstream s) { LOCKED(event_record(e, s)); }

static CUresult event_check(CUevent e) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    return event_ok(e) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static CUresult event_query(CUevent e) {
    CUresult r = event_check(e);
    if (r != CUDA_SUCCESS)
        return r;
    if (e->not_ready) {
        e->not_ready--;
        return CUDA_ERROR_NOT_READY;
    }
    return CUDA_SUCCESS;
}

static CUresult event_sync(CUevent e) {
    CUresult r = event_check(e);
    if (r == CUDA_SUCCESS)
        e->not_ready = 0;
    return r;
}

/* Work runs at once, so an event is complete unless told to pretend. */
FK_API CUresult cuEventQuery(CUevent e) { LOCKED(event_query(e)); }
FK_API CUresult cuEventSynchronize(CUevent e) { LOCKED(event_sync(e)); }

static CUresult event_elapsed(float *ms, CUevent a, CUevent b) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!ms)
        return CUDA_ERROR_INVALID_VALUE;
    if (!event_ok(a) || !event_ok(b) || !a->recorded || !b->recorded)
        return CUDA_ERROR_INVALID_HANDLE;
    if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING) /* as the driver answers */
        return CUDA_ERROR_INVALID_HANDLE;
    if (a->not_ready || b->not_ready)
        return CUDA_ERROR_NOT_READY;
    *ms = (float)((double)((int64_t)(b->stamp_ns - a->stamp_ns)) / 1e6);
    return CUDA_SUCCESS;
}

FK_API CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) {
    LOCKED(event_elapsed(ms, a, b));
}

/* ---- the classic allocator, capture, proc addresses ------------------- */

static fk_alloc *g_allocs;
static unsigned long g_n_allocs, g_alloc_calls, g_free_calls;

static CUresult mem_alloc(CUdeviceptr *dptr, size_t size) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!dptr || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    g_alloc_calls++;
    if (g_used + size > g_total)
        return CUDA_ERROR_OUT_OF_MEMORY;
    fk_alloc *a = calloc(1, sizeof *a);
    void *p = NULL;
    if (!a || posix_memalign(&p, 256, size) != 0) {
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->p = p;
    a->size = size;
    a->next = g_allocs;
    g_allocs = a;
    g_n_allocs++;
    g_used += size;
    *dptr = (CUdeviceptr)(uintptr_t)p;
    return CUDA_SUCCESS;
}

static CUresult mem_free(CUdeviceptr dptr) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    g_free_calls++;
    for (fk_alloc **pp = &g_allocs; *pp; pp = &(*pp)->next)
        if ((uintptr_t)(*pp)->p == dptr) {
            fk_alloc *a = *pp;
            *pp = a->next;
            g_used -= a->size;
            g_n_allocs--;
            free(a->p);
            free(a);
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_VALUE;
}

FK_API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t size) { LOCKED(mem_alloc(dptr, size)); }
FK_API CUresult cuMemFree_v2(CUdeviceptr dptr) { LOCKED(mem_free(dptr)); }

static CUresult mem_alloc_async(CUdeviceptr *dptr, size_t size, CUstream s) {
    CUresult r = stream_check(s);
    return r != CUDA_SUCCESS ? r : mem_alloc(dptr, size);
}
static CUresult mem_free_async(CUdeviceptr dptr, CUstream s) {
    CUresult r = stream_check(s);
    return r != CUDA_SUCCESS ? r : mem_free(dptr);
}
FK_API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream s) {
    LOCKED(mem_alloc_async(dptr, size, s));
}
FK_API CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream s) { LOCKED(mem_free_async(dptr, s)); }
FK_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream s) {
    LOCKED(mem_alloc_async(dptr, size, s));
}
FK_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s) {
    LOCKED(mem_free_async(dptr, s));
}

/* What cudart's cudaMalloc does with a memory pool we do not interpose;
 * a test uses it to get a pointer the preload library has never seen. */
FK_API CUresult ckfake_alloc_direct(CUdeviceptr *dptr, size_t size) {
    LOCKED(mem_alloc(dptr, size));
}

static CUresult ctx_device(CUdevice *dev) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!dev)
        return CUDA_ERROR_INVALID_VALUE;
    *dev = tl_ctx->dev;
    return CUDA_SUCCESS;
}
FK_API CUresult cuCtxGetDevice(CUdevice *dev) { LOCKED(ctx_device(dev)); }
FK_API CUresult cuCtxSynchronize(void) { LOCKED(need_ctx()); }
FK_API CUresult cuDriverGetVersion(int *v) {
    if (!v)
        return CUDA_ERROR_INVALID_VALUE;
    *v = 13000;
    return CUDA_SUCCESS;
}

static CUresult capture_set(CUstream s, int on) {
    CUresult r = stream_check(s);
    if (r != CUDA_SUCCESS)
        return r;
    if (!s || s == FK_STREAM_LEGACY || s == FK_STREAM_PER_THREAD)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    if (s->capturing == on)
        return on ? CUDA_ERROR_ILLEGAL_STATE : CUDA_ERROR_STREAM_CAPTURE_UNMATCHED;
    s->capturing = on;
    return CUDA_SUCCESS;
}
FK_API CUresult cuStreamBeginCapture_v2(CUstream s, int mode) {
    (void)mode;
    LOCKED(capture_set(s, 1));
}
/* The graph is not modelled: *graph is set to NULL. */
FK_API CUresult cuStreamEndCapture(CUstream s, void **graph) {
    if (graph)
        *graph = NULL;
    LOCKED(capture_set(s, 0));
}

/* The driver's own lookup, as cudart uses it: base names ("cuMemAlloc") give
 * the newest version ("_v2"), the per-thread flag the "_ptsz" variant. A
 * table, not dlsym: the real driver never goes through (interposable) dlsym. */
FK_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
                                    unsigned long long flags, int *status);
FK_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version,
                                 unsigned long long flags);
/* CKFAKECUDA_PROC_INTERNAL=1: like a driver whose cuGetProcAddress answers
 * with internal functions, not its exported symbols, the entry points the
 * preload library replaces come back as these wrappers (other addresses,
 * same behaviour). */
static CUresult fk_int_cuMemAlloc_v2(CUdeviceptr *d, size_t n) { return cuMemAlloc_v2(d, n); }
static CUresult fk_int_cuMemFree_v2(CUdeviceptr d) { return cuMemFree_v2(d); }
static CUresult fk_int_cuMemGetInfo_v2(size_t *f, size_t *t) { return cuMemGetInfo_v2(f, t); }
static CUresult fk_int_cuMemAllocAsync(CUdeviceptr *d, size_t n, CUstream s) {
    return cuMemAllocAsync(d, n, s);
}
static CUresult fk_int_cuMemAllocAsync_ptsz(CUdeviceptr *d, size_t n, CUstream s) {
    return cuMemAllocAsync_ptsz(d, n, s);
}
static CUresult fk_int_cuMemFreeAsync(CUdeviceptr d, CUstream s) { return cuMemFreeAsync(d, s); }
static CUresult fk_int_cuMemFreeAsync_ptsz(CUdeviceptr d, CUstream s) {
    return cuMemFreeAsync_ptsz(d, s);
}
static CUresult fk_int_cuStreamDestroy_v2(CUstream s) { return cuStreamDestroy_v2(s); }
static CUresult fk_int_cuStreamBeginCapture_v2(CUstream s, int mode) {
    return cuStreamBeginCapture_v2(s, mode);
}
static CUresult fk_int_cuStreamEndCapture(CUstream s, void **g) { return cuStreamEndCapture(s, g); }
static CUresult fk_int_cuGetProcAddress_v2(const char *sym, void **pfn, int v,
                                           unsigned long long flags, int *status) {
    return cuGetProcAddress_v2(sym, pfn, v, flags, status);
}

#define FK_PROC(base, fn) {base, 0, (void *)fn, NULL}
#define FK_PROC_PTDS(base, fn) {base, 1, (void *)fn, (void *)fk_int_##fn}
#define FK_PROC_HOOKED(base, fn) {base, 0, (void *)fn, (void *)fk_int_##fn}
static const struct {
    const char *name;
    int ptds;
    void *fn;
    void *internal; /* what CKFAKECUDA_PROC_INTERNAL=1 answers instead */
} fk_procs[] = {
    FK_PROC("cuInit", cuInit),
    FK_PROC("cuDeviceGet", cuDeviceGet),
    FK_PROC("cuDeviceGetCount", cuDeviceGetCount),
    FK_PROC("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain),
    FK_PROC("cuCtxSetCurrent", cuCtxSetCurrent),
    FK_PROC("cuCtxGetCurrent", cuCtxGetCurrent),
    FK_PROC("cuCtxGetDevice", cuCtxGetDevice),
    FK_PROC("cuCtxSynchronize", cuCtxSynchronize),
    FK_PROC_HOOKED("cuMemAlloc", cuMemAlloc_v2),
    FK_PROC_HOOKED("cuMemFree", cuMemFree_v2),
    FK_PROC_HOOKED("cuMemGetInfo", cuMemGetInfo_v2),
    FK_PROC_HOOKED("cuMemAllocAsync", cuMemAllocAsync),
    FK_PROC_PTDS("cuMemAllocAsync", cuMemAllocAsync_ptsz),
    FK_PROC_HOOKED("cuMemFreeAsync", cuMemFreeAsync),
    FK_PROC_PTDS("cuMemFreeAsync", cuMemFreeAsync_ptsz),
    FK_PROC("cuStreamCreate", cuStreamCreate),
    FK_PROC_HOOKED("cuStreamDestroy", cuStreamDestroy_v2),
    FK_PROC("cuStreamSynchronize", cuStreamSynchronize),
    FK_PROC("cuStreamIsCapturing", cuStreamIsCapturing),
    FK_PROC_HOOKED("cuStreamBeginCapture", cuStreamBeginCapture_v2),
    FK_PROC_HOOKED("cuStreamEndCapture", cuStreamEndCapture),
    FK_PROC("cuMemcpyAsync", cuMemcpyAsync),
    FK_PROC("cuMemsetD8Async", cuMemsetD8Async),
    FK_PROC("cuMemHostRegister", cuMemHostRegister_v2),
    FK_PROC("cuMemHostUnregister", cuMemHostUnregister),
    FK_PROC_HOOKED("cuGetProcAddress", cuGetProcAddress_v2),
};

FK_API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
                                    unsigned long long flags, int *status) {
    (void)cuda_version;
    if (!symbol || !pfn)
        return CUDA_ERROR_INVALID_VALUE;
    void *f = NULL;
    int ptds = (flags & 2) != 0; /* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
    const char *inl = getenv("CKFAKECUDA_PROC_INTERNAL");
    int internal = inl && strcmp(inl, "1") == 0;
    for (size_t i = 0; i < sizeof fk_procs / sizeof fk_procs[0]; i++)
        if (strcmp(fk_procs[i].name, symbol) == 0 && (!f || fk_procs[i].ptds == ptds))
            f = internal && fk_procs[i].internal ? fk_procs[i].internal : fk_procs[i].fn;
    if (status)
        *status = f ? 0 : 1; /* CU_GET_PROC_ADDRESS_SUCCESS / SYMBOL_NOT_FOUND */
    *pfn = f;
    return f ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}
FK_API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version,
                                 unsigned long long flags) {
    return cuGetProcAddress_v2(symbol, pfn, cuda_version, flags, NULL);
}


/* ---- modules and kernel launches (the replay kernels) ------------------ */

#define FK_MAGIC_MODULE 0x66616b656d6f6431ull
#define FK_FATBIN_MAGIC 0xBA55ED50u
#define FK_MAX_LAUNCHES 4096 /* recorded; later launches are only counted */

static const char *const fk_kernel_names[] = {CK_KERNEL_EW, CK_KERNEL_NORM, CK_KERNEL_ROPE};
#define FK_NKERNELS (sizeof fk_kernel_names / sizeof fk_kernel_names[0])

struct CUfunc_st {
    struct CUmod_st *mod;
    const char *name;
};

struct CUmod_st {
    uint64_t magic;
    struct CUfunc_st fn[FK_NKERNELS];
    struct CUmod_st *next;
};

typedef struct fk_launch {
    const char *name;
    unsigned grid[3], block[3], shmem;
    CUstream stream;
    unsigned char params[sizeof(ck__plan)];
} fk_launch;

static struct CUmod_st *g_modules;
static unsigned long g_n_modules, g_module_loads, g_n_launches;
static fk_launch *g_launches; /* the first FK_MAX_LAUNCHES since the last reset */

static CUresult module_load(CUmodule *mod, const void *image) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!mod || !image)
        return CUDA_ERROR_INVALID_VALUE;
    uint32_t magic;
    memcpy(&magic, image, sizeof magic);
    if (magic != FK_FATBIN_MAGIC)
        return CUDA_ERROR_INVALID_IMAGE;
    if (g_cc < 80) /* the library's fatbin has nothing below sm_80 */
        return CUDA_ERROR_NO_BINARY_FOR_GPU;
    struct CUmod_st *m = calloc(1, sizeof *m);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->magic = FK_MAGIC_MODULE;
    for (size_t i = 0; i < FK_NKERNELS; i++) {
        m->fn[i].mod = m;
        m->fn[i].name = fk_kernel_names[i];
    }
    m->next = g_modules;
    g_modules = m;
    g_n_modules++;
    g_module_loads++;
    *mod = m;
    return CUDA_SUCCESS;
}

FK_API CUresult cuModuleLoadData(CUmodule *mod, const void *image) { LOCKED(module_load(mod, image)); }

static int module_ok(CUmodule m) {
    for (struct CUmod_st *p = g_modules; p; p = p->next)
        if (p == m)
            return 1;
    return 0;
}

static CUresult module_get_function(CUfunction *fn, CUmodule m, const char *name) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!fn || !name)
        return CUDA_ERROR_INVALID_VALUE;
    if (!module_ok(m))
        return CUDA_ERROR_INVALID_HANDLE;
    for (size_t i = 0; i < FK_NKERNELS; i++)
        if (strcmp(name, m->fn[i].name) == 0) {
            *fn = &m->fn[i];
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_NOT_FOUND;
}

FK_API CUresult cuModuleGetFunction(CUfunction *fn, CUmodule m, const char *name) {
    LOCKED(module_get_function(fn, m, name));
}

static CUresult module_unload(CUmodule m) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    for (struct CUmod_st **pp = &g_modules; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            m->magic = 0;
            free(m);
            g_n_modules--;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_HANDLE;
}

FK_API CUresult cuModuleUnload(CUmodule m) { LOCKED(module_unload(m)); }

static CUresult launch_kernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                              unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params,
                              void **extra) {
    CUresult r = need_ctx();
    if (r != CUDA_SUCCESS)
        return r;
    if (!f || !module_ok(f->mod))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!stream_ok(s))
        return CUDA_ERROR_INVALID_HANDLE;
    /* Every replay kernel takes one ck__plan, passed through params. */
    if (!params || !params[0] || extra)
        return CUDA_ERROR_INVALID_VALUE;
    if (!gx || !gy || !gz || !bx || !by || !bz || (uint64_t)bx * by * bz > 1024 ||
        gy > 65535 || gz > 65535 || shmem > 48 * 1024)
        return CUDA_ERROR_INVALID_VALUE;
    if (g_fail_launch && ++g_calls_launch == g_fail_launch)
        return g_fail_code ? g_fail_code : CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    if (g_n_launches < FK_MAX_LAUNCHES) {
        if (!g_launches && !(g_launches = calloc(FK_MAX_LAUNCHES, sizeof *g_launches)))
            return CUDA_ERROR_OUT_OF_MEMORY;
        fk_launch *l = &g_launches[g_n_launches];
        l->name = f->name;
        l->grid[0] = gx;
        l->grid[1] = gy;
        l->grid[2] = gz;
        l->block[0] = bx;
        l->block[1] = by;
        l->block[2] = bz;
        l->shmem = shmem;
        l->stream = s;
        memcpy(l->params, params[0], sizeof l->params);
    }
    g_n_launches++;
    return CUDA_SUCCESS;
}

FK_API CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                               unsigned int bx, unsigned int by, unsigned int bz,
                               unsigned int shmem, CUstream s, void **params, void **extra) {
    LOCKED(launch_kernel(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra));
}

/* Launch i (0 = the first since the last ckfake_launch_reset): its kernel's
 * name (copied into name, name_cap bytes), grid, block, shared bytes,
 * stream, and up to params_cap bytes of its ck__plan (*params_len gets the
 * plan's size). Any out-pointer may be NULL. Returns 0, or -1 when there is
 * no such launch on record. */
FK_API int ckfake_launch_get(unsigned long i, char *name, size_t name_cap, unsigned grid[3],
                             unsigned block[3], unsigned *shmem, void **stream, void *params,
                             size_t params_cap, size_t *params_len) {
    pthread_mutex_lock(&g_mu);
    int ok = i < g_n_launches && i < FK_MAX_LAUNCHES && g_launches;
    if (ok) {
        const fk_launch *l = &g_launches[i];
        if (name && name_cap)
            snprintf(name, name_cap, "%s", l->name);
        if (grid)
            memcpy(grid, l->grid, sizeof l->grid);
        if (block)
            memcpy(block, l->block, sizeof l->block);
        if (shmem)
            *shmem = l->shmem;
        if (stream)
            *stream = l->stream;
        if (params)
            memcpy(params, l->params, params_cap < sizeof l->params ? params_cap : sizeof l->params);
        if (params_len)
            *params_len = sizeof l->params;
    }
    pthread_mutex_unlock(&g_mu);
    return ok ? 0 : -1;
}

/* Forget the recorded launches (ckfake_launches counts from 0 again). */
FK_API void ckfake_launch_reset(void) {
    pthread_mutex_lock(&g_mu);
    free(g_launches);
    g_launches = NULL;
    g_n_launches = 0;
    pthread_mutex_unlock(&g_mu);
}

/* ---- counters for tests ------------------------------------------------ */

/* Live events created with timing on (no CU_EVENT_DISABLE_TIMING); g_mu held. */
static unsigned long fk_events_timing(void) {
    unsigned long n = 0;
    for (const struct CUevent_st *e = g_events; e; e = e->next)
        n += !(e->flags & CU_EVENT_DISABLE_TIMING);
    return n;
}

#define FK_COUNTER(name, var)         \
    FK_API unsigned long name(void) { \
        pthread_mutex_lock(&g_mu);    \
        unsigned long v = (var);      \
        pthread_mutex_unlock(&g_mu);  \
        return v;                     \
    }

/* Handles whose memory is alive (released-but-mapped ones included). */
FK_COUNTER(ckfake_live_handles, g_n_handles)
FK_COUNTER(ckfake_live_mappings, g_n_maps)
FK_COUNTER(ckfake_live_reservations, g_n_res)
FK_COUNTER(ckfake_live_streams, g_n_streams)
FK_COUNTER(ckfake_stream_syncs, g_stream_syncs)
FK_COUNTER(ckfake_live_events, g_n_events)
FK_COUNTER(ckfake_live_events_timing, fk_events_timing())
FK_COUNTER(ckfake_used_bytes, (unsigned long)g_used)
FK_COUNTER(ckfake_ctx_refs, (unsigned long)g_ctx[0].refs)
/* The classic allocator: blocks alive, and calls that reached it. */
FK_COUNTER(ckfake_memalloc_live, g_n_allocs)
FK_COUNTER(ckfake_memalloc_calls, g_alloc_calls)
FK_COUNTER(ckfake_memfree_calls, g_free_calls)
/* Replay kernels: modules loaded now, cuModuleLoadData successes ever, and
 * kernel launches since the last ckfake_launch_reset. */
FK_COUNTER(ckfake_live_modules, g_n_modules)
FK_COUNTER(ckfake_module_loads, g_module_loads)
FK_COUNTER(ckfake_launches, g_n_launches)

/* Our definitions must match the ABI the backend calls through. */
#define FK_SIG(name) \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&name), ck_pfn_##name), #name);
FK_SIG(cuInit)
FK_SIG(cuDeviceGetCount)
FK_SIG(cuDeviceGet)
FK_SIG(cuDeviceTotalMem_v2)
FK_SIG(cuDeviceGetAttribute)
FK_SIG(cuDevicePrimaryCtxRetain)
FK_SIG(cuDevicePrimaryCtxRelease_v2)
FK_SIG(cuCtxSetCurrent)
FK_SIG(cuCtxGetCurrent)
FK_SIG(cuGetErrorString)
FK_SIG(cuMemGetInfo_v2)
FK_SIG(cuMemAddressReserve)
FK_SIG(cuMemAddressFree)
FK_SIG(cuMemCreate)
FK_SIG(cuMemRelease)
FK_SIG(cuMemMap)
FK_SIG(cuMemUnmap)
FK_SIG(cuMemSetAccess)
FK_SIG(cuMemGetAllocationGranularity)
FK_SIG(cuStreamCreate)
FK_SIG(cuStreamDestroy_v2)
FK_SIG(cuStreamSynchronize)
FK_SIG(cuStreamWaitEvent)
FK_SIG(cuStreamIsCapturing)
FK_SIG(cuEventCreate)
FK_SIG(cuEventDestroy_v2)
FK_SIG(cuEventRecord)
FK_SIG(cuEventQuery)
FK_SIG(cuEventSynchronize)
FK_SIG(cuEventElapsedTime)
FK_SIG(cuMemcpyAsync)
FK_SIG(cuMemsetD8Async)
FK_SIG(cuMemHostRegister_v2)
FK_SIG(cuMemHostUnregister)
FK_SIG(cuMemAlloc_v2)
FK_SIG(cuMemFree_v2)
FK_SIG(cuMemAllocAsync)
FK_SIG(cuMemFreeAsync)
FK_SIG(cuCtxGetDevice)
FK_SIG(cuCtxSynchronize)
FK_SIG(cuStreamBeginCapture_v2)
FK_SIG(cuStreamEndCapture)
FK_SIG(cuGetProcAddress_v2)
FK_SIG(cuGetProcAddress)
FK_SIG(cuModuleLoadData)
FK_SIG(cuModuleGetFunction)
FK_SIG(cuModuleUnload)
FK_SIG(cuLaunchKernel)
