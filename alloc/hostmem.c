/* Pinned host memory (see hostmem.h): a private jemalloc arena with extent
 * hooks, or ckalloc's own cache of whole buffers; NUMA placement with hwloc.
 * Both libraries are loaded at run time (dlopen, RTLD_LOCAL), so nothing
 * links them and a process without them still works. */
#include "hostmem.h"

#include "internal.h"

#include <dlfcn.h>
#if __has_include(<hwloc.h>)
#include <hwloc.h>
#define CK_HAVE_HWLOC 1
#endif
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HOST_SMALL_UNIT ((size_t)64 << 10)
#define HOST_UNIT ((size_t)2 << 20)

/* ---- jemalloc's ABI (5.x), declared here so no header is needed -------- */

typedef struct je_extent_hooks je_extent_hooks;
struct je_extent_hooks {
    void *(*alloc)(je_extent_hooks *, void *, size_t, size_t, bool *, bool *, unsigned);
    bool (*dalloc)(je_extent_hooks *, void *, size_t, bool, unsigned);
    void (*destroy)(je_extent_hooks *, void *, size_t, bool, unsigned);
    bool (*commit)(je_extent_hooks *, void *, size_t, size_t, size_t, unsigned);
    bool (*decommit)(je_extent_hooks *, void *, size_t, size_t, size_t, unsigned);
    bool (*purge_lazy)(je_extent_hooks *, void *, size_t, size_t, size_t, unsigned);
    bool (*purge_forced)(je_extent_hooks *, void *, size_t, size_t, size_t, unsigned);
    bool (*split)(je_extent_hooks *, void *, size_t, size_t, size_t, bool, unsigned);
    bool (*merge)(je_extent_hooks *, void *, size_t, void *, size_t, bool, unsigned);
};
#define JE_MALLOCX_TCACHE_NONE ((int)((-1 + 2) << 8))
#define JE_MALLOCX_ARENA(a) ((((int)(a)) + 1) << 20)
#define JE_MALLOCX_LG_ALIGN(la) ((int)(la))

typedef struct je_fns {
    void *(*mallocx)(size_t, int);
    void (*dallocx)(void *, int);
    size_t (*sallocx)(const void *, int);
    int (*mallctl)(const char *, void *, size_t *, void *, size_t);
} je_fns;

/* The hooks jemalloc calls, with the pool they serve (jemalloc passes the
 * hooks pointer back: the container holds the context). */
struct ck_je_hooks {
    je_extent_hooks hooks; /* first */
    ck_pool *p;
    ck_hostmem *h;
};

static pthread_once_t je_once = PTHREAD_ONCE_INIT;
static je_fns je;
static char je_err[160];

static void je_load(void) {
    const char *lib = getenv("CKALLOC_JEMALLOC_LIB");
    if (!lib || !*lib) lib = "libjemalloc.so.2";
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(je_err, sizeof je_err, "%s", e ? e : "dlopen failed");
        return;
    }
    *(void **)&je.mallocx = dlsym(h, "mallocx");
    *(void **)&je.dallocx = dlsym(h, "dallocx");
    *(void **)&je.sallocx = dlsym(h, "sallocx");
    *(void **)&je.mallctl = dlsym(h, "mallctl");
    if (!je.mallocx || !je.dallocx || !je.sallocx || !je.mallctl) {
        snprintf(je_err, sizeof je_err, "%s has no mallocx/dallocx/sallocx/mallctl", lib);
        memset(&je, 0, sizeof je);
    }
}

int ck__host_malloc_is_jemalloc(void) {
    void *own = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info in;
    if (own && dladdr(own, &in) && in.dli_fname && strstr(in.dli_fname, "jemalloc")) return 1;
    void *j = dlopen("libjemalloc.so.2", RTLD_NOW | RTLD_NOLOAD);
    if (!j) return 0;
    void *jm = dlsym(j, "malloc");
    dlclose(j);
    return own && own == jm;
}

#ifdef CK_HAVE_HWLOC
/* ---- hwloc: the GPU's NUMA node -------------------------------------------- */

typedef struct hw_fns {
    unsigned (*get_api_version)(void);
    int (*topology_init)(hwloc_topology_t *);
    int (*topology_load)(hwloc_topology_t);
    void (*topology_destroy)(hwloc_topology_t);
    int (*set_type_filter)(hwloc_topology_t, hwloc_obj_type_t, enum hwloc_type_filter_e);
    int (*get_type_depth)(hwloc_topology_t, hwloc_obj_type_t);
    unsigned (*get_nbobjs_by_depth)(hwloc_topology_t, int);
    hwloc_obj_t (*get_obj_by_depth)(hwloc_topology_t, int, unsigned);
    int (*set_area_membind)(hwloc_topology_t, const void *, size_t, hwloc_const_bitmap_t,
                            hwloc_membind_policy_t, int);
    int (*bitmap_first)(hwloc_const_bitmap_t);
} hw_fns;

static pthread_once_t hw_once = PTHREAD_ONCE_INIT;
static hw_fns hw;
static hwloc_topology_t hw_topo;
static char hw_err[128];

static void hw_load(void) {
    void *h = dlopen("libhwloc.so.15", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(hw_err, sizeof hw_err, "hwloc not loaded (libhwloc.so.15)");
        return;
    }
    *(void **)&hw.get_api_version = dlsym(h, "hwloc_get_api_version");
    *(void **)&hw.topology_init = dlsym(h, "hwloc_topology_init");
    *(void **)&hw.topology_load = dlsym(h, "hwloc_topology_load");
    *(void **)&hw.topology_destroy = dlsym(h, "hwloc_topology_destroy");
    *(void **)&hw.set_type_filter = dlsym(h, "hwloc_topology_set_type_filter");
    *(void **)&hw.get_type_depth = dlsym(h, "hwloc_get_type_depth");
    *(void **)&hw.get_nbobjs_by_depth = dlsym(h, "hwloc_get_nbobjs_by_depth");
    *(void **)&hw.get_obj_by_depth = dlsym(h, "hwloc_get_obj_by_depth");
    *(void **)&hw.set_area_membind = dlsym(h, "hwloc_set_area_membind");
    *(void **)&hw.bitmap_first = dlsym(h, "hwloc_bitmap_first");
    if (!hw.get_api_version || !hw.topology_init || !hw.topology_load || !hw.set_type_filter ||
        !hw.get_type_depth || !hw.get_nbobjs_by_depth || !hw.get_obj_by_depth ||
        !hw.set_area_membind || !hw.bitmap_first || !hw.topology_destroy ||
        (hw.get_api_version() >> 16) != (HWLOC_API_VERSION >> 16)) {
        snprintf(hw_err, sizeof hw_err, "libhwloc.so.15 is not the hwloc 2.x this was built for");
        memset(&hw, 0, sizeof hw);
        return;
    }
    if (hw.topology_init(&hw_topo) != 0) {
        snprintf(hw_err, sizeof hw_err, "hwloc_topology_init failed");
        memset(&hw, 0, sizeof hw);
        return;
    }
    hw.set_type_filter(hw_topo, HWLOC_OBJ_PCI_DEVICE, HWLOC_TYPE_FILTER_KEEP_ALL);
    hw.set_type_filter(hw_topo, HWLOC_OBJ_BRIDGE, HWLOC_TYPE_FILTER_KEEP_ALL);
    if (hw.topology_load(hw_topo) != 0) {
        hw.topology_destroy(hw_topo);
        snprintf(hw_err, sizeof hw_err, "hwloc_topology_load failed");
        memset(&hw, 0, sizeof hw);
    }
}

static int is_io(hwloc_obj_type_t t) {
    return t == HWLOC_OBJ_BRIDGE || t == HWLOC_OBJ_PCI_DEVICE || t == HWLOC_OBJ_OS_DEVICE ||
           t == HWLOC_OBJ_MISC;
}

/* The nodeset next to PCI device (domain, bus, dev), or NULL with why. */
static hwloc_const_bitmap_t gpu_nodeset(int domain, int bus, int dev, const char **why) {
    pthread_once(&hw_once, hw_load);
    if (!hw.topology_load) {
        *why = hw_err;
        return NULL;
    }
    int depth = hw.get_type_depth(hw_topo, HWLOC_OBJ_PCI_DEVICE);
    unsigned n = depth == HWLOC_TYPE_DEPTH_UNKNOWN ? 0 : hw.get_nbobjs_by_depth(hw_topo, depth);
    for (unsigned i = 0; i < n; i++) {
        hwloc_obj_t o = hw.get_obj_by_depth(hw_topo, depth, i);
        if (!o || o->attr->pcidev.domain != domain || o->attr->pcidev.bus != bus ||
            o->attr->pcidev.dev != dev)
            continue;
        while (o && (is_io(o->type) || !o->nodeset)) o = o->parent;
        if (o && o->nodeset) return o->nodeset;
    }
    *why = "hwloc does not see the GPU's PCI device";
    return NULL;
}

#endif

/* Bind [m, m+n) to the GPU's NUMA node when there is one to bind to. */
static void numa_place(ck_pool *p, ck_hostmem *h, void *m, size_t n) {
    if (h->numa == -2) return; /* decided: nothing to do */
    int domain = 0, bus = 0, dev = 0;
    const char *why = "";
#ifdef CK_HAVE_HWLOC
    hwloc_const_bitmap_t set = NULL;
#else
    const void *set = NULL;
#endif
    if (!p->be->ops->pci_id || p->be->ops->pci_id(p->be, &domain, &bus, &dev) != CK_OK)
        why = "no GPU (the host backend): memory stays where the kernel puts it";
    else {
#ifdef CK_HAVE_HWLOC
        set = gpu_nodeset(domain, bus, dev, &why);
#else
        why = "built without hwloc's headers: no NUMA placement";
#endif
    }
    if (!set) {
        snprintf(h->numa_why, sizeof h->numa_why, "%s", why);
        h->numa = -2;
        return;
    }
#ifdef CK_HAVE_HWLOC
    if (hw.set_area_membind(hw_topo, m, n, set, HWLOC_MEMBIND_BIND,
                            HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_MIGRATE) == 0)
        h->numa = hw.bitmap_first(set);
    else
        snprintf(h->numa_why, sizeof h->numa_why, "hwloc_set_area_membind refused");
#else
    (void)m, (void)n;
#endif
}

/* ---- one pinned mapping ------------------------------------------------------ */

static char *budget_msg(ck_hostmem *h, size_t want, char *buf, size_t n) {
    char a[32], bud[32], held[32];
    snprintf(buf, n,
             "out of pinned host memory: %s more would exceed host_budget %s (%s held for "
             "offloaded tensors); raise host_budget or offload less",
             ck__fmt_bytes(want, a, sizeof a), ck__fmt_bytes(h->budget, bud, sizeof bud),
             ck__fmt_bytes(h->held, held, sizeof held));
    return buf;
}

/* Map, place and pin `size` bytes aligned to `align` (a power of two). */
static void *pin_new(ck_pool *p, ck_hostmem *h, size_t size, size_t align) {
    if (h->held + size > h->budget) {
        h->over_budget = 1;
        return NULL;
    }
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    if (align < pg) align = pg;
    size_t span = size + align - pg;
    char *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    uintptr_t a = ((uintptr_t)m + align - 1) & ~(uintptr_t)(align - 1);
    if (a > (uintptr_t)m) munmap(m, a - (uintptr_t)m);
    if ((uintptr_t)m + span > a + size) munmap((void *)(a + size), (uintptr_t)m + span - (a + size));
    numa_place(p, h, (void *)a, size);
    if (p->be->ops->host_pin && p->be->ops->host_pin(p->be, (void *)a, size) != CK_OK) {
        munmap((void *)a, size);
        return NULL;
    }
    h->held += size;
    h->pins++;
    ck__stat_add(&p->c->host_bytes, (int64_t)size);
    return (void *)a;
}

static void pin_drop(ck_pool *p, ck_hostmem *h, void *buf, size_t size) {
    if (p->be->ops->host_unpin) p->be->ops->host_unpin(p->be, buf);
    munmap(buf, size);
    h->held -= size;
    ck__stat_add(&p->c->host_bytes, -(int64_t)size);
}

/* ---- the jemalloc extent hooks ------------------------------------------------ */

static ck_hostmem *hooks_mem(je_extent_hooks *eh) { return ((struct ck_je_hooks *)eh)->h; }
static ck_pool *hooks_pool(je_extent_hooks *eh) { return ((struct ck_je_hooks *)eh)->p; }

static void *hk_alloc(je_extent_hooks *eh, void *new_addr, size_t size, size_t align, bool *zero,
                      bool *commit, unsigned arena) {
    (void)arena;
    ck_hostmem *h = hooks_mem(eh);
    if (new_addr) return NULL; /* no growing in place */
    if (ck__grow_array(&h->maps, &h->cap_maps, h->nmaps, sizeof *h->maps, 16) != 0) return NULL;
    void *m = pin_new(hooks_pool(eh), h, size, align);
    if (!m) return NULL;
    h->maps[h->nmaps++] = (ck_hmap){(uintptr_t)m, size, 0};
    *zero = true;
    *commit = true;
    return m;
}

/* Keep every extent (pinned) for reuse until the arena is destroyed. */
static bool hk_dalloc(je_extent_hooks *eh, void *a, size_t n, bool c, unsigned i) {
    (void)eh, (void)a, (void)n, (void)c, (void)i;
    return true;
}

static void hk_destroy(je_extent_hooks *eh, void *addr, size_t size, bool c, unsigned i) {
    (void)c, (void)i;
    ck_hostmem *h = hooks_mem(eh);
    for (size_t k = 0; k < h->nmaps; k++) {
        ck_hmap *mp = &h->maps[k];
        if ((uintptr_t)addr < mp->base || (uintptr_t)addr >= mp->base + mp->size) continue;
        mp->destroyed += size;
        if (mp->destroyed >= mp->size) { /* every part of it: unpin the whole */
            pin_drop(hooks_pool(eh), h, (void *)mp->base, mp->size);
            h->maps[k] = h->maps[--h->nmaps];
        }
        return;
    }
}

static bool hk_commit(je_extent_hooks *eh, void *a, size_t n, size_t o, size_t l, unsigned i) {
    (void)eh, (void)a, (void)n, (void)o, (void)l, (void)i;
    return false; /* always committed */
}

/* Decommit and purge would hand pinned pages back: opt out. */
static bool hk_keep(je_extent_hooks *eh, void *a, size_t n, size_t o, size_t l, unsigned i) {
    (void)eh, (void)a, (void)n, (void)o, (void)l, (void)i;
    return true;
}

static bool hk_split(je_extent_hooks *eh, void *a, size_t n, size_t na, size_t nb, bool c,
                     unsigned i) {
    (void)eh, (void)a, (void)n, (void)na, (void)nb, (void)c, (void)i;
    return false; /* parts of one mapping stay in its record */
}

/* Merge only parts of one mapping: a pinned registration is whole. */
static bool hk_merge(je_extent_hooks *eh, void *a, size_t na, void *b, size_t nb, bool c,
                     unsigned i) {
    (void)nb, (void)c, (void)i;
    ck_hostmem *h = hooks_mem(eh);
    for (size_t k = 0; k < h->nmaps; k++) {
        ck_hmap *mp = &h->maps[k];
        if ((uintptr_t)a >= mp->base && (uintptr_t)a + na <= mp->base + mp->size)
            return !((uintptr_t)b >= mp->base && (uintptr_t)b < mp->base + mp->size);
    }
    return true;
}

static int je_start(ck_pool *p, ck_hostmem *h) {
    pthread_once(&je_once, je_load);
    if (!je.mallctl) {
        snprintf(h->why, sizeof h->why, "jemalloc not loaded: %s", je_err);
        return -1;
    }
    struct ck_je_hooks *hk = calloc(1, sizeof *hk);
    if (!hk) {
        snprintf(h->why, sizeof h->why, "out of host memory");
        return -1;
    }
    hk->hooks = (je_extent_hooks){hk_alloc, hk_dalloc, hk_destroy, hk_commit, hk_keep,
                                  hk_keep,  hk_keep,   hk_split,   hk_merge};
    hk->p = p;
    hk->h = h;
    je_extent_hooks *ptr = &hk->hooks;
    unsigned arena = 0;
    size_t sz = sizeof arena;
    int r = je.mallctl("arenas.create", &arena, &sz, &ptr, sizeof ptr);
    if (r != 0) {
        snprintf(h->why, sizeof h->why, "jemalloc refused arenas.create (%d)", r);
        free(hk);
        return -1;
    }
    h->hooks = hk;
    h->arena = arena;
    return 0;
}

/* ---- the interface -------------------------------------------------------------- */

void ck__host_init(ck_pool *p, ck_hostmem *h) {
    memset(h, 0, sizeof *h);
    h->budget = p->opts.host_budget;
    if (!h->budget) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        uint64_t ram = (pages > 0 && psz > 0) ? (uint64_t)pages * (uint64_t)psz : 16 * CK_GiB;
        h->budget = ram / 2;
    }
    h->numa = -1;
    snprintf(h->numa_why, sizeof h->numa_why, "no pinned memory yet");
    if (p->opts.host_alloc == CK_HOST_ALLOC_CACHE) {
        h->je = -1;
        snprintf(h->why, sizeof h->why, "host_alloc=cache");
    }
}

const char *ck__host_allocator(const ck_hostmem *h, const char **why) {
    if (why) *why = h->je < 0 ? h->why : "";
    return h->je > 0 ? "jemalloc" : h->je < 0 ? "cache" : "none yet";
}

static size_t host_round(size_t n) {
    size_t u = n < HOST_UNIT ? HOST_SMALL_UNIT : HOST_UNIT;
    return (n + u - 1) / u * u;
}

/* A cached buffer goes back to where it came from: jemalloc's arena (which
 * keeps its pinned extents for reuse) or the system. */
static void cache_drop(ck_pool *p, ck_hostmem *h, ck_hbuf b) {
    if (h->je > 0) je.dallocx(b.p, JE_MALLOCX_TCACHE_NONE);
    else pin_drop(p, h, b.p, b.cap);
}

uint64_t ck__host_trim(ck_pool *p, ck_hostmem *h) {
    uint64_t got = 0;
    while (h->ncache) {
        ck_hbuf b = h->cache[--h->ncache];
        cache_drop(p, h, b);
        got += b.cap;
    }
    return got;
}

ck_status ck__host_get(ck_pool *p, ck_hostmem *h, size_t n, void **out, size_t *cap) {
    char msg[256];
    size_t want = host_round(n);
    if (h->je == 0) {
        h->je = je_start(p, h) == 0 ? 1 : -1;
        if (h->je < 0 && p->opts.host_alloc == CK_HOST_ALLOC_JEMALLOC)
            return ck__err(CK_ERR_BACKEND, "host_alloc=jemalloc: %s", h->why);
    }
    /* Whole buffers freed before come back first (an offload of the same
     * size each step takes no allocator call at all). */
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < h->ncache; i++)
        if (h->cache[i].cap >= want && h->cache[i].cap / 2 <= want &&
            (best == SIZE_MAX || h->cache[i].cap < h->cache[best].cap))
            best = i;
    if (best != SIZE_MAX) {
        *out = h->cache[best].p;
        *cap = h->cache[best].cap;
        h->cache[best] = h->cache[--h->ncache];
        return CK_OK;
    }
    if (h->je > 0) {
        for (int tries = 0;; tries++) {
            h->over_budget = 0;
            void *m = je.mallocx(want, JE_MALLOCX_ARENA(h->arena) | JE_MALLOCX_TCACHE_NONE |
                                           JE_MALLOCX_LG_ALIGN(12));
            if (m) {
                *out = m;
                *cap = want;
                return CK_OK;
            }
            if (!h->ncache || tries) /* the cache's buffers back to the arena, then once more */
                return ck__err(CK_ERR_NOMEM, "%s",
                               h->over_budget ? budget_msg(h, want, msg, sizeof msg)
                                              : "out of pinned host memory (jemalloc could not map or pin more)");
            ck__host_trim(p, h);
        }
    }
    /* Make room under host_budget from the cache, largest first. */
    while (h->held + want > h->budget && h->ncache) {
        size_t big = 0;
        for (size_t i = 1; i < h->ncache; i++)
            if (h->cache[i].cap > h->cache[big].cap) big = i;
        ck_hbuf b = h->cache[big];
        h->cache[big] = h->cache[--h->ncache];
        pin_drop(p, h, b.p, b.cap);
    }
    if (h->held + want > h->budget) return ck__err(CK_ERR_NOMEM, "%s", budget_msg(h, want, msg, sizeof msg));
    h->over_budget = 0;
    void *m = pin_new(p, h, want, HOST_SMALL_UNIT);
    if (!m) {
        char a[32];
        return ck__err(CK_ERR_NOMEM, "out of host memory: cannot map and pin %s for an offloaded tensor",
                       ck__fmt_bytes(want, a, sizeof a));
    }
    *out = m;
    *cap = want;
    return CK_OK;
}

void ck__host_put(ck_pool *p, ck_hostmem *h, void *buf, size_t cap) {
    if (ck__grow_array(&h->cache, &h->cap_cache, h->ncache, sizeof *h->cache, 16) != 0) {
        cache_drop(p, h, (ck_hbuf){buf, cap});
        return;
    }
    h->cache[h->ncache++] = (ck_hbuf){buf, cap};
}

void ck__host_fini(ck_pool *p, ck_hostmem *h) {
    ck__host_trim(p, h);
    if (h->je > 0) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "arena.%u.destroy", h->arena);
        je.mallctl(cmd, NULL, NULL, NULL, 0); /* destroy hooks unpin and unmap */
        /* Anything jemalloc did not hand back (it should have): unpin it. */
        while (h->nmaps) {
            ck_hmap mp = h->maps[--h->nmaps];
            pin_drop(p, h, (void *)mp.base, mp.size);
        }
        free(h->hooks);
    }
    free(h->maps);
    free(h->cache);
    memset(h, 0, sizeof *h);
}
