/* libckalloc_preload.so: one ckalloc pool per CUDA device behind the CUDA
 * allocation entry points of a program nobody changed.
 *
 * - CKALLOC_CONF is parsed when the library loads: a bad value prints one
 *   line naming the key and the process exits with status 2, before the job
 *   has done any work on a configuration the user did not ask for.
 * - Pools are created lazily, on the first allocation for a device (the
 *   device of the calling thread's current context).
 * - fork: the child forgets the parent's pools (their CUDA state does not
 *   survive a fork) and makes its own if it allocates.
 * - Frees inside a graph capture are held back until the capture ends, and
 *   allocations on a capturing stream go to the driver (they become graph
 *   memory nodes), so ckalloc never maps memory while a graph is captured. */
#include "preload.h"

#include "ckalloc/preload.h" /* the public declarations of what this file exports */
#include "pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define CKP_API __attribute__((visibility("default")))

typedef struct deferred {
    void *ptr;
    CUstream stream;
    ck_pool *pool;
} deferred;

static struct {
    pthread_mutex_t mu;
    ck_pool_options opts;
    char trace[4096], snapshot[4096];
    _Atomic(ck_pool *) pools[CKP_MAX_DEVICES];
    ck_pool *orphans[CKP_MAX_DEVICES]; /* a fork child: the parent's pools, kept reachable */
    char *failed[CKP_MAX_DEVICES]; /* why a device's pool could not be made */
    int warned[CKP_MAX_DEVICES];   /* that failure has been printed on stderr */
    _Atomic(CUcontext) primary[CKP_MAX_DEVICES];
    atomic_int captures;           /* graph captures in progress */
    atomic_uint gen;               /* bumped in a fork child: stale caches */
    deferred *held;                /* frees made during a capture */
    size_t nheld, capheld;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ------------------------------------------------------------ start-up -- */

static void fork_prepare(void) { pthread_mutex_lock(&g.mu); }
static void fork_parent(void) { pthread_mutex_unlock(&g.mu); }
static void fork_child(void) {
    /* The parent's pools hold CUDA handles that mean nothing here; leak
     * them (their memory is the parent's) and start afresh. */
    for (int i = 0; i < CKP_MAX_DEVICES; i++) {
        if (atomic_load(&g.pools[i])) g.orphans[i] = atomic_load(&g.pools[i]);
        atomic_store(&g.pools[i], NULL);
        atomic_store(&g.primary[i], NULL);
        free(g.failed[i]);
        g.failed[i] = NULL;
        g.warned[i] = 0;
    }
    atomic_store(&g.captures, 0);
    g.nheld = 0;
    atomic_fetch_add(&g.gen, 1);
    pthread_mutex_unlock(&g.mu);
}

static void copy_path(const char **field, char *buf, size_t n) {
    if (!*field) return;
    snprintf(buf, n, "%s", *field);
    *field = buf;
}

__attribute__((constructor)) static void ckp_start(void) {
    ck_pool_options_init(&g.opts);
    const char *conf = getenv("CKALLOC_CONF");
    if (ck_options_parse(&g.opts, conf) != CK_OK) {
        fprintf(stderr, "ckalloc: CKALLOC_CONF: %s\n", ck_last_error());
        exit(2);
    }
    /* The parser's strings live in this thread's storage: keep copies. */
    copy_path(&g.opts.trace_path, g.trace, sizeof g.trace);
    copy_path(&g.opts.snapshot_path, g.snapshot, sizeof g.snapshot);
    /* "auto" would fall back to host memory without a GPU: never hand that to
     * a CUDA program. Only an explicit backend=host gets host memory. */
    if (g.opts.backend == CK_BACKEND_AUTO) g.opts.backend = CK_BACKEND_CUDA;
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int ckp_verbose(void) { return g.opts.verbose; }

static void budget_text(char *buf, size_t n) {
    if (g.opts.budget) {
        double v = (double)g.opts.budget;
        const char *unit = "bytes";
        if (v >= 0x1p30) v /= 0x1p30, unit = "GiB";
        else if (v >= 0x1p20) v /= 0x1p20, unit = "MiB";
        snprintf(buf, n, "budget %.4g %s per device", v, unit);
    } else if (g.opts.budget_fraction > 0) {
        snprintf(buf, n, "budget %.4g%% of each device's memory", g.opts.budget_fraction * 100);
    } else {
        snprintf(buf, n, "no budget (each device's memory)");
    }
}

/* Once, at the first hook that reaches the driver. Problems are always said;
 * the line for a working set-up only with verbose=1. Never at load time: a
 * process that never calls CUDA (a shell under an exported LD_PRELOAD) hears
 * nothing. */
void ckp_driver_report(const ckp_driver *d) {
    const char *lib = getenv("CKALLOC_CUDA_LIB");
    if (!lib || !*lib) lib = "libcuda.so.1";
    if (g.opts.backend == CK_BACKEND_HOST)
        fprintf(stderr, "ckalloc: preload: backend=host: the CUDA allocation calls are not served "
                        "(host memory is never handed to CUDA calls) and go to the CUDA driver; "
                        "host pools serve only ckalloc_torch_malloc and the ck_* API\n");
    if (!d->lib) {
        fprintf(stderr,
                "ckalloc: preload: no CUDA driver (%s); the hooks are in place and pass every "
                "call on, so the program gets the CUDA runtime's own errors\n",
                d->load_error ? d->load_error : lib);
        return;
    }
    int count = 0;
    CUresult r = d->cuInit ? d->cuInit(0) : CUDA_ERROR_NOT_INITIALIZED;
    if (r == CUDA_SUCCESS && d->cuDeviceGetCount) r = d->cuDeviceGetCount(&count);
    if (r != CUDA_SUCCESS || count <= 0) {
        char why[64];
        if (r != CUDA_SUCCESS) snprintf(why, sizeof why, "cuInit: CUresult %d", (int)r);
        else snprintf(why, sizeof why, "the driver reports 0 devices");
        fprintf(stderr,
                "ckalloc: preload: no CUDA device (%s, %s); the hooks are in place and pass every "
                "call on, so the program gets the driver's own errors\n",
                why, lib);
        return;
    }
    if (!g.opts.verbose || g.opts.backend == CK_BACKEND_HOST) return;
    char budget[96];
    budget_text(budget, sizeof budget);
    fprintf(stderr,
            "ckalloc: preload: active on %d CUDA device%s (%s), %s; a device's pool is made at its "
            "first allocation\n",
            count, count == 1 ? "" : "s", lib, budget);
}

/* --------------------------------------------------------------- pools -- */

static void warn_no_pool(int dev, const char *why, const char *then) {
    fprintf(stderr, "ckalloc: no pool for device %d (%s); %s\n", dev, why, then);
}

/* What happens to a call that finds no pool, for the warning. */
#define CKP_TO_DRIVER "its allocations go to the CUDA driver"
#define CKP_TO_TORCH "ckalloc_torch_malloc returns NULL, which PyTorch reports as out of memory"


/* The pool for dev, or NULL with ck_last_error() saying why. warn: when
 * there is none, print that on stderr (once per device) with what happens
 * to the call instead (CKP_TO_DRIVER for hooked allocations, CKP_TO_TORCH
 * for the pluggable allocator); ckalloc_preload_pool passes NULL, since its
 * caller gets the reason from ck_last_error() and prints what it likes. */
static ck_pool *pool_for(int dev, const char *warn) {
    if (dev < 0 || dev >= CKP_MAX_DEVICES) {
        ck__err(CK_ERR_INVALID, "ckalloc: device %d is out of range (0..%d)", dev,
                CKP_MAX_DEVICES - 1);
        return NULL;
    }
    ck_pool *p = atomic_load_explicit(&g.pools[dev], memory_order_acquire);
    if (p) return p;
    /* Created without holding g.mu, so our lock never nests around the
     * library's (live stats, snapshots) and fork handlers cannot deadlock.
     * Two threads racing here both create; the loser destroys its pool. */
    pthread_mutex_lock(&g.mu);
    char *why = g.failed[dev] ? strdup(g.failed[dev]) : NULL;
    int say = why && warn && !g.warned[dev];
    if (say) g.warned[dev] = 1;
    pthread_mutex_unlock(&g.mu);
    if (why) {
        if (say) warn_no_pool(dev, why, warn);
        ck__err(CK_ERR_NO_DEVICE, "%s", why);
        free(why);
        return NULL;
    }
    ck_pool_options o = g.opts;
    o.device = dev;
    if (ck_pool_create(&p, &o) != CK_OK) {
        pthread_mutex_lock(&g.mu);
        if (!g.failed[dev]) g.failed[dev] = strdup(ck_last_error());
        int say = warn && !g.warned[dev];
        if (say) g.warned[dev] = 1;
        pthread_mutex_unlock(&g.mu);
        if (say) warn_no_pool(dev, ck_last_error(), warn);
        return NULL;
    }
    ck_pool *expect = NULL;
    if (!atomic_compare_exchange_strong(&g.pools[dev], &expect, p)) {
        ck_pool_destroy(p);
        p = expect;
    }
    return p;
}

CKP_API ck_pool *ckalloc_preload_pool(int device) { return pool_for(device, NULL); }

/* ---------------------------------------------------- current device --- */

static __thread struct {
    CUcontext ctx;
    int dev;
    int primary;
    unsigned gen;
} tl_cur;

/* The device of the current context, and whether that context is the
 * device's primary one (the runtime's, and the one our pools map into). */
static CUresult current_device(int *dev, int *primary) {
    const ckp_driver *d = ckp_driver_get();
    if (!d->cuCtxGetCurrent || !d->cuCtxGetDevice || !d->cuDevicePrimaryCtxRetain)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUcontext ctx = NULL;
    CUresult r = d->cuCtxGetCurrent(&ctx);
    if (r != CUDA_SUCCESS) return r;
    if (!ctx) return CUDA_ERROR_INVALID_CONTEXT;
    unsigned gen = atomic_load_explicit(&g.gen, memory_order_relaxed);
    if (ctx == tl_cur.ctx && gen == tl_cur.gen) {
        *dev = tl_cur.dev;
        *primary = tl_cur.primary;
        return CUDA_SUCCESS;
    }
    CUdevice dv;
    if ((r = d->cuCtxGetDevice(&dv)) != CUDA_SUCCESS) return r;
    if (dv < 0 || dv >= CKP_MAX_DEVICES) return CUDA_ERROR_INVALID_DEVICE;
    CUcontext pc = atomic_load(&g.primary[dv]);
    if (!pc) {
        /* Retained for the life of the process, like the pools' own. */
        if ((r = d->cuDevicePrimaryCtxRetain(&pc, dv)) != CUDA_SUCCESS) return r;
        CUcontext expect = NULL;
        atomic_compare_exchange_strong(&g.primary[dv], &expect, pc);
    }
    tl_cur.ctx = ctx;
    tl_cur.dev = *dev = dv;
    tl_cur.primary = *primary = ctx == pc;
    tl_cur.gen = gen;
    return CUDA_SUCCESS;
}

static int capturing(CUstream s) {
    const ckp_driver *d = ckp_driver_get();
    CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_NONE;
    if (!d->cuStreamIsCapturing || d->cuStreamIsCapturing(s, &st) != CUDA_SUCCESS) return 1;
    return st != CU_STREAM_CAPTURE_STATUS_NONE;
}

ckp_route ckp_route_alloc(ck_pool **pool, CUstream s, int is_async) {
    if (g.opts.backend == CK_BACKEND_HOST) return CKP_REAL; /* host pools are for the API */
    int dev, primary;
    if (current_device(&dev, &primary) != CUDA_SUCCESS || !primary) return CKP_REAL;
    /* While any capture runs, synchronous allocations and allocations on a
     * capturing stream are the driver's (graph memory nodes, or the error
     * the driver gives for them). */
    if (atomic_load_explicit(&g.captures, memory_order_relaxed) > 0 &&
        (!is_async || capturing(s)))
        return CKP_REAL;
    ck_pool *p = pool_for(dev, CKP_TO_DRIVER);
    if (!p) return CKP_REAL;
    *pool = p;
    return CKP_OURS;
}

/* ----------------------------------------------------------------- free -- */

static ck_pool *owner_of(void *ptr) {
    for (int i = 0; i < CKP_MAX_DEVICES; i++) {
        ck_pool *p = atomic_load_explicit(&g.pools[i], memory_order_acquire);
        if (p && ck__pool_contains(p, ptr)) return p;
    }
    return NULL;
}

static void hold(void *ptr, CUstream s, ck_pool *p) {
    pthread_mutex_lock(&g.mu);
    if (g.nheld == g.capheld) {
        size_t cap = g.capheld ? 2 * g.capheld : 64;
        deferred *n = realloc(g.held, cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&g.mu);
            ck_free(p, ptr, (ck_stream)s); /* cannot hold it: free now rather than lose it */
            return;
        }
        g.held = n;
        g.capheld = cap;
    }
    g.held[g.nheld++] = (deferred){ptr, s, p};
    pthread_mutex_unlock(&g.mu);
}

static void sync_device_of(ck_pool *p) {
    const ckp_driver *d = ckp_driver_get();
    int dev, primary;
    if (current_device(&dev, &primary) == CUDA_SUCCESS && primary &&
        atomic_load(&g.pools[dev]) == p) {
        if (d->cuCtxSynchronize) d->cuCtxSynchronize();
        return;
    }
    /* Another device or context is current: wait on the pool's device. */
    ck_stream_synchronize(p, NULL);
}

ckp_route ckp_free(void *ptr, CUstream s, int sync, CUresult *err) {
    *err = CUDA_SUCCESS;
    if (!ptr) return CKP_REAL;
    ck_pool *p = NULL;
    int in_capture = atomic_load_explicit(&g.captures, memory_order_relaxed) > 0;
    if (sync || in_capture) {
        if (!(p = owner_of(ptr))) return CKP_REAL;
        if (in_capture && (sync || capturing(s))) {
            hold(ptr, sync ? NULL : s, p);
            return CKP_OURS;
        }
        if (sync) sync_device_of(p);
        if (ck_free(p, ptr, sync ? NULL : (ck_stream)s) != CK_OK) *err = CUDA_ERROR_INVALID_VALUE;
        return CKP_OURS;
    }
    /* The fast path: try the pools; only a miss asks who owns the address. */
    for (int i = 0; i < CKP_MAX_DEVICES; i++) {
        p = atomic_load_explicit(&g.pools[i], memory_order_acquire);
        if (!p) continue;
        ck_status st = ck_free(p, ptr, (ck_stream)s);
        if (st == CK_OK) return CKP_OURS;
        if (st == CK_ERR_DOUBLE_FREE || (st == CK_ERR_NOT_OWNED && ck__pool_contains(p, ptr))) {
            *err = CUDA_ERROR_INVALID_VALUE; /* what the driver says to a bad pointer */
            return CKP_OURS;
        }
    }
    return CKP_REAL;
}

void ckp_capture_begin(void) { atomic_fetch_add(&g.captures, 1); }

void ckp_capture_end(void) {
    int left = atomic_fetch_sub(&g.captures, 1) - 1;
    if (left < 0) atomic_fetch_add(&g.captures, 1); /* an end we never saw begin */
    if (left != 0) return;
    pthread_mutex_lock(&g.mu);
    deferred *list = g.held;
    size_t n = g.nheld;
    g.held = NULL;
    g.nheld = g.capheld = 0;
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < n; i++) ck_free(list[i].pool, list[i].ptr, (ck_stream)list[i].stream);
    free(list);
}

void ckp_stream_gone(CUstream s) {
    for (int i = 0; i < CKP_MAX_DEVICES; i++) {
        ck_pool *p = atomic_load_explicit(&g.pools[i], memory_order_acquire);
        if (p) ck__pool_stream_gone(p, (ck_stream)s);
    }
}

/* ------------------------------------------------------------ mem info -- */

CUresult ckp_mem_info(size_t *free_b, size_t *total_b) {
    const ckp_driver *d = ckp_driver_get();
    if (!d->cuMemGetInfo_v2) return CUDA_ERROR_NOT_INITIALIZED;
    size_t f = 0, t = 0;
    CUresult r = d->cuMemGetInfo_v2(&f, &t);
    if (r != CUDA_SUCCESS || !free_b || !total_b) return r;
    uint64_t cap = g.opts.budget;
    /* budget=90%: of the device's total, as the pool resolves it. */
    if (!cap && g.opts.budget_fraction > 0) cap = (uint64_t)(g.opts.budget_fraction * (double)t);
    int dev, primary;
    ck_pool *p = NULL;
    if (current_device(&dev, &primary) == CUDA_SUCCESS) p = atomic_load(&g.pools[dev]);
    uint64_t total = cap && cap < t ? cap : t;
    uint64_t avail = f < total ? f : total;
    if (p) {
        /* Free is what the budget still allows: the total less live bytes,
         * but no more than the driver's free memory plus our own cache. */
        ck_stats st = {.struct_size = sizeof st};
        if (ck_get_stats(p, &st) == CK_OK) {
            uint64_t live = (uint64_t)st.allocated_bytes.current;
            uint64_t held = (uint64_t)st.physical_bytes.current;
            uint64_t cache = held > live ? held - live : 0;
            avail = total > live ? total - live : 0;
            if (avail > f + cache) avail = f + cache;
        }
    }
    *free_b = (size_t)avail;
    *total_b = (size_t)total;
    return CUDA_SUCCESS;
}

CUresult ckp_cu_error(ck_status s) {
    switch (s) {
    case CK_OK: return CUDA_SUCCESS;
    case CK_ERR_NOMEM: return CUDA_ERROR_OUT_OF_MEMORY;
    case CK_ERR_NO_DEVICE: return CUDA_ERROR_NO_DEVICE;
    case CK_ERR_INVALID:
    case CK_ERR_NOT_OWNED:
    case CK_ERR_DOUBLE_FREE: return CUDA_ERROR_INVALID_VALUE;
    default: return CUDA_ERROR_UNKNOWN;
    }
}

/* ---------------------------------------- PyTorch's pluggable allocator -- */

CKP_API void *ckalloc_torch_malloc(ssize_t size, int device, CUstream stream) {
    if (size <= 0) return NULL;
    ck_pool *p = pool_for(device, CKP_TO_TORCH);
    void *ptr = NULL;
    if (!p || ck_malloc(p, &ptr, (size_t)size, (ck_stream)stream) != CK_OK) return NULL;
    return ptr;
}

CKP_API void ckalloc_torch_free(void *ptr, ssize_t size, int device, CUstream stream) {
    (void)size;
    if (!ptr) return;
    ck_pool *p = pool_for(device, CKP_TO_TORCH);
    if (!p || ck_free(p, ptr, (ck_stream)stream) != CK_OK)
        fprintf(stderr, "ckalloc: ckalloc_torch_free: %s\n", ck_last_error());
}
