/* Pinned host memory for offloaded tensors.
 *
 * Preferred: a private jemalloc arena whose extent hooks hand out memory
 * that is mapped, placed on the GPU's NUMA node (hwloc) and page-locked
 * (the backend's host_pin: cuMemHostRegister on cuda). jemalloc is loaded
 * with dlopen(RTLD_LOCAL) and reached only through mallocx/dallocx/mallctl,
 * so loading ckalloc never replaces the program's malloc. Extents are never
 * given back to the system while the pool lives (dalloc opts out), so a
 * training loop's steady-state steps pin nothing new.
 *
 * Fallback, when jemalloc cannot be loaded (not installed, or, with
 * Debian's build, no static TLS left for it in a process that did not
 * start with it: "cannot allocate memory in static TLS block"): ckalloc's
 * own cache of whole pinned buffers. host_alloc=jemalloc makes that an
 * error instead; host_alloc=cache skips jemalloc.
 *
 * In front of either, whole buffers given back are kept for the next
 * request of their size, so an offload of the same size each step makes no
 * allocator call. Both are bounded by host_budget. Called with the pool
 * lock held. */
#ifndef CK_HOSTMEM_H
#define CK_HOSTMEM_H

#include "pool.h"

typedef struct ck_hbuf {
    void *p;
    size_t cap;
} ck_hbuf;

/* One mapping made by the jemalloc hooks (jemalloc may split it; it is
 * unpinned and unmapped when every part of it is destroyed). */
typedef struct ck_hmap {
    uintptr_t base;
    size_t size, destroyed;
} ck_hmap;

struct ck_je_hooks; /* hostmem.c */

typedef struct ck_hostmem {
    uint64_t budget;  /* host_budget in force */
    uint64_t held;    /* bytes mapped and pinned, in use or cached */
    uint64_t pins;    /* mappings pinned so far (a steady state adds none) */
    int over_budget;  /* the last failure was host_budget's */
    /* the fallback cache */
    ck_hbuf *cache;
    size_t ncache, cap_cache;
    /* jemalloc */
    int je;           /* 0 not tried, 1 in use, -1 not available (why) */
    char why[192];
    unsigned arena;
    struct ck_je_hooks *hooks;
    ck_hmap *maps;
    size_t nmaps, cap_maps;
    /* NUMA placement */
    int numa;         /* the node bound to, -1 none */
    char numa_why[128];
} ck_hostmem;

void ck__host_init(ck_pool *p, ck_hostmem *h);
/* A pinned buffer of at least n bytes: *cap gets its size. CK_ERR_NOMEM
 * naming host_budget when it does not fit even after dropping the cache. */
ck_status ck__host_get(ck_pool *p, ck_hostmem *h, size_t n, void **out, size_t *cap);
/* Give it back (for reuse). */
void ck__host_put(ck_pool *p, ck_hostmem *h, void *buf, size_t cap);
/* Unpin and unmap every cached buffer; returns the bytes given back. */
uint64_t ck__host_trim(ck_pool *p, ck_hostmem *h);
/* At pool destroy, every buffer returned: release everything. */
void ck__host_fini(ck_pool *p, ck_hostmem *h);

/* Which allocator serves (for stats and tests): "jemalloc", "cache", or
 * "none yet"; *why (may be NULL) gets the reason jemalloc is not in use. */
const char *ck__host_allocator(const ck_hostmem *h, const char **why);
/* 1 if this process's malloc resolves into jemalloc (ckalloc must never make
 * it so: its jemalloc is private). */
int ck__host_malloc_is_jemalloc(void);

#endif
