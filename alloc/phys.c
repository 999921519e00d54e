/* The physical layer: VA regions and the memory under them, per chunk.
 *
 * Every chunk (the backend's granularity, 2 MiB) that holds memory has a
 * physical handle and a mapping of its own, so it can be unmapped and
 * released alone, whatever was mapped with it: physical memory follows the
 * resident blocks chunk by chunk. Driver work is batched where CUDA allows:
 * a run of unmapped chunks is mapped with one backend call (one map per
 * handle, one access call over the run). Unmapping is per chunk, since CUDA
 * unmaps exactly what one map mapped.
 *
 * A chunk counts the resident large blocks that touch it (nres; a page of
 * small blocks is one large block). At nres == 0 a mapped chunk is *idle*:
 * it sits on its region's idle list, oldest first, stamped with the round
 * of the last free that touched it, and can be released once that round is
 * fenced (pool.h). Everything here runs under the pool lock.
 */
#include "pool.h"

#include <stdlib.h>
#include <string.h>

size_t ck__chunk_of(const ck_pool *p, const ck_region *r, uintptr_t a) {
    return (a - r->va) / p->gran;
}

/* ---------------------------------------------------------- idle list -- */

static void idle_add(ck_pool *p, ck_region *r, size_t i) {
    ck_chunk *c = &r->chunk[i];
    c->idle = 1;
    c->inext = 0;
    c->iprev = r->idle_tail;
    if (r->idle_tail) r->chunk[r->idle_tail - 1].inext = (uint32_t)(i + 1);
    else r->idle_head = (uint32_t)(i + 1);
    r->idle_tail = (uint32_t)(i + 1);
    p->nidle++;
}

static void idle_remove(ck_pool *p, ck_region *r, size_t i) {
    ck_chunk *c = &r->chunk[i];
    if (c->iprev) r->chunk[c->iprev - 1].inext = c->inext;
    else r->idle_head = c->inext;
    if (c->inext) r->chunk[c->inext - 1].iprev = c->iprev;
    else r->idle_tail = c->iprev;
    c->iprev = c->inext = 0;
    c->idle = 0;
    p->nidle--;
}

/* ------------------------------------------------------ map and unmap -- */

/* The `segment` stat counts mapped runs (maximal ranges of mapped chunks):
 * mapping chunk i joins, extends or starts one. */
static int run_delta(const ck_region *r, size_t i, int mapping) {
    int left = i > 0 && r->chunk[i - 1].mapped;
    int right = i + 1 < r->nchunks && r->chunk[i + 1].mapped;
    int d = 1 - left - right; /* 1 new run, 0 extends one, -1 joins two */
    return mapping ? d : -d;
}

/* A handle the driver would not release: kept, still counted in
 * physical_bytes (the memory is still held), and released at the next
 * chance (ck__phys_release, destroy). */
static void orphan_add(ck_pool *p, ck_phys h) {
    if (ck__grow_array(&p->orphans, &p->cap_orphans, p->norphans, sizeof h, 8) == 0)
        p->orphans[p->norphans++] = h;
}

/* Release the orphans the driver now takes; returns the bytes given back. */
static size_t orphans_retry(ck_pool *p) {
    size_t got = 0;
    for (size_t i = 0; i < p->norphans;) {
        if (p->be->ops->release(p->be, p->orphans[i]) == CK_OK) {
            ck__cnt_inc(&p->c->num_release_calls);
            ck__stat_add(&p->c->physical_bytes, -(int64_t)p->gran);
            p->orphans[i] = p->orphans[--p->norphans];
            got += p->gran;
        } else {
            i++;
        }
    }
    return got;
}

/* Unmap chunk i and release its handle. Returns the physical bytes given
 * back (0 when the release failed and the handle became an orphan), or -1
 * when the unmap failed: then nothing changed and the chunk stays mapped
 * (and idle) for a later try. The counters count calls that took effect. */
static long chunk_unmap(ck_pool *p, ck_region *r, size_t i) {
    ck_chunk *c = &r->chunk[i];
    uintptr_t va = r->va + i * p->gran;
    if (p->be->ops->unmap(p->be, va, p->gran) != CK_OK) return -1;
    ck__cnt_inc(&p->c->num_unmap_calls);
    if (c->idle) idle_remove(p, r, i);
    ck_phys h = c->h;
    c->mapped = 0;
    c->h = 0;
    ck__stat_add(&p->c->segment, run_delta(r, i, 0));
    ck__stat_add(&p->c->mapped_bytes, -(int64_t)p->gran);
    ck__stat_add(&p->c->reserved_bytes, -(int64_t)p->gran);
    if (p->be->ops->release(p->be, h) != CK_OK) {
        orphan_add(p, h);
        return 0;
    }
    ck__cnt_inc(&p->c->num_release_calls);
    ck__stat_add(&p->c->physical_bytes, -(int64_t)p->gran);
    return (long)p->gran;
}

/* Map chunks [first, first+n) of r, all unmapped: one handle each, one
 * backend map call for the run. They start idle and pristine (round 0). */
static ck_status map_run(ck_pool *p, ck_region *r, size_t first, size_t n) {
    ck_phys stack[64] = {0}, *h = n <= 64 ? stack : malloc(n * sizeof *h);
    if (!h) return ck__err(CK_ERR_NOMEM, "out of host memory for chunk bookkeeping");
    ck_status s = CK_OK;
    size_t made = 0;
    for (; made < n && s == CK_OK; made++) {
        s = p->be->ops->create(p->be, p->gran, &h[made]);
        if (s != CK_OK) break;
    }
    if (s == CK_OK) s = p->be->ops->map(p->be, r->va + first * p->gran, p->gran, n, h);
    if (s != CK_OK) {
        for (size_t k = 0; k < made; k++)
            if (p->be->ops->release(p->be, h[k]) != CK_OK) {
                /* Held after all: count it as created and physical. */
                ck__cnt_inc(&p->c->num_create_calls);
                ck__stat_add(&p->c->physical_bytes, (int64_t)p->gran);
                orphan_add(p, h[k]);
            }
        if (h != stack) free(h);
        return s;
    }
    for (size_t k = 0; k < n; k++) {
        ck_chunk *c = &r->chunk[first + k];
        c->h = h[k];
        c->free_round = 0;
        ck__stat_add(&p->c->segment, run_delta(r, first + k, 1));
        c->mapped = 1;
        if (c->nres == 0) idle_add(p, r, first + k);
    }
    if (h != stack) free(h);
    for (size_t k = 0; k < n; k++) ck__cnt_inc(&p->c->num_create_calls);
    ck__cnt_inc(&p->c->num_map_calls); /* one backend call maps the run */
    uintptr_t top = r->va + (first + n) * p->gran;
    if (top > r->map_top) r->map_top = top;
    int64_t bytes = (int64_t)(n * p->gran);
    ck__stat_add(&p->c->mapped_bytes, bytes);
    ck__stat_add(&p->c->reserved_bytes, bytes);
    ck__stat_add(&p->c->physical_bytes, bytes);
    ck__ring_push(p, CK_RING_MAP, r->va + first * p->gran, n * p->gran, NULL);
    return CK_OK;
}

ck_status ck__phys_map(ck_pool *p, ck_region *r, uintptr_t a, size_t n) {
    size_t i = ck__chunk_of(p, r, a), last = ck__chunk_of(p, r, a + n - 1);
    size_t done_lo = i; /* runs mapped by this call so far start at or after here */
    ck_status s = CK_OK;
    while (i <= last) {
        if (r->chunk[i].mapped) {
            i++;
            continue;
        }
        size_t j = i;
        while (j <= last && !r->chunk[j].mapped) j++;
        s = map_run(p, r, i, j - i);
        if (s != CK_OK) break;
        i = j;
    }
    if (s != CK_OK) {
        /* Give back what this call mapped: those chunks are still idle and
         * pristine (nobody holds them yet). Idle pristine chunks mapped
         * earlier in the range (map-ahead nobody used) go too; that is
         * harmless, as no block ever held them. */
        for (size_t k = done_lo; k < i; k++) {
            ck_chunk *c = &r->chunk[k];
            if (c->mapped && c->idle && c->free_round == 0 && c->nres == 0 &&
                chunk_unmap(p, r, k) >= 0)
                ck__ring_push(p, CK_RING_UNMAP, r->va + k * p->gran, p->gran, NULL);
        }
    }
    return s;
}

size_t ck__phys_unmapped(const ck_pool *p, const ck_region *r, uintptr_t a, size_t n) {
    size_t missing = 0;
    for (size_t i = ck__chunk_of(p, r, a), last = ck__chunk_of(p, r, a + n - 1); i <= last; i++)
        if (!r->chunk[i].mapped) missing += p->gran;
    return missing;
}

size_t ck__phys_cost(const ck_pool *p, const ck_region *r, uintptr_t a, size_t n, size_t *unmapped) {
    size_t unheld = 0, missing = 0;
    for (size_t i = ck__chunk_of(p, r, a), last = ck__chunk_of(p, r, a + n - 1); i <= last; i++) {
        if (r->chunk[i].nres == 0) unheld += p->gran;
        if (!r->chunk[i].mapped) missing += p->gran;
    }
    *unmapped = missing;
    return unheld;
}

/* ------------------------------------------------------------ holding -- */

void ck__phys_hold(ck_pool *p, ck_region *r, uintptr_t a, size_t n) {
    for (size_t i = ck__chunk_of(p, r, a), last = ck__chunk_of(p, r, a + n - 1); i <= last; i++) {
        ck_chunk *c = &r->chunk[i];
        if (c->nres++ == 0 && c->idle) idle_remove(p, r, i);
    }
}

void ck__phys_drop(ck_pool *p, ck_region *r, uintptr_t a, size_t n, uint64_t round) {
    for (size_t i = ck__chunk_of(p, r, a), last = ck__chunk_of(p, r, a + n - 1); i <= last; i++) {
        ck_chunk *c = &r->chunk[i];
        if (round > c->free_round) c->free_round = round;
        if (--c->nres == 0 && c->mapped) idle_add(p, r, i);
    }
}

/* ------------------------------------------------------------ release -- */

/* Give chunk i back; the bytes released, or -1 if its unmap failed twice
 * (then it stays mapped and idle, for a later call). */
static long release_chunk(ck_pool *p, ck_region *r, size_t i) {
    long got = chunk_unmap(p, r, i);
    if (got < 0) got = chunk_unmap(p, r, i);
    if (got >= 0) ck__ring_push(p, CK_RING_UNMAP, r->va + i * p->gran, p->gran, NULL);
    return got;
}

size_t ck__phys_release(ck_pool *p, size_t want, uintptr_t keep_a, size_t keep_n) {
    size_t got = p->norphans ? orphans_retry(p) : 0;
    for (ck_region *r = p->regions; r && got < want; r = r->next) {
        uint32_t k = r->idle_head;
        while (k && got < want) {
            size_t i = k - 1;
            k = r->chunk[i].inext;
            uintptr_t va = r->va + i * p->gran;
            int keep = keep_n && va < keep_a + keep_n && keep_a < va + p->gran;
            if (keep || r->chunk[i].free_round >= p->round_done) continue;
            long n = release_chunk(p, r, i);
            if (n > 0) got += (size_t)n;
        }
    }
    if (p->norphans) got += orphans_retry(p); /* one made just now may go at once */
    return got;
}

size_t ck__phys_release_under(ck_pool *p, ck_region *r, uintptr_t a, size_t n) {
    size_t got = 0;
    for (size_t i = ck__chunk_of(p, r, a), last = ck__chunk_of(p, r, a + n - 1); i <= last; i++) {
        ck_chunk *c = &r->chunk[i];
        if (!c->mapped || c->nres) continue;
        uintptr_t va = r->va + i * p->gran;
        int inside = va >= a && va + p->gran <= a + n;
        /* A chunk wholly under the block held only the block's own bytes,
         * whose stream has passed (the caller's promise); a chunk it shares
         * with free space waits for the frees there to be fenced. */
        if (!inside && c->free_round >= p->round_done) continue;
        long k = release_chunk(p, r, i);
        if (k > 0) got += (size_t)k;
    }
    return got;
}

void ck__phys_release_all(ck_pool *p, ck_region *r) {
    /* Teardown: a chunk whose unmap fails twice is left to the process's
     * exit (injected faults fire once). */
    for (size_t i = 0; i < r->nchunks; i++)
        if (r->chunk[i].mapped) release_chunk(p, r, i);
    if (p->norphans) orphans_retry(p);
    if (p->norphans) orphans_retry(p);
}

/* ------------------------------------------------------------ regions -- */

ck_status ck__region_new(ck_pool *p, size_t size, ck_region **out) {
    ck_region *r = calloc(1, sizeof *r);
    if (!r) return ck__err(CK_ERR_NOMEM, "out of host memory for region bookkeeping");
    r->nchunks = size / p->gran;
    if (r->nchunks > UINT32_MAX - 1) {
        free(r);
        return ck__err(CK_ERR_INVALID, "a VA region of %zu bytes has more chunks than ckalloc counts",
                       size);
    }
    /* calloc: the pages of a large chunk table stay untouched until used. */
    r->chunk = calloc(r->nchunks, sizeof *r->chunk);
    ck_status s = r->chunk ? p->be->ops->reserve(p->be, size, &r->va)
                           : ck__err(CK_ERR_NOMEM, "out of host memory for region bookkeeping");
    if (s != CK_OK) {
        free(r->chunk);
        free(r);
        return s;
    }
    r->size = size;
    r->used_top = r->map_top = r->va;
    *out = r;
    return CK_OK;
}

void ck__region_delete(ck_pool *p, ck_region *r) {
    ck__phys_release_all(p, r);
    p->be->ops->unreserve(p->be, r->va, r->size);
    free(r->chunk);
    free(r);
}

ck_region *ck__region_of(const ck_pool *p, uintptr_t a) {
    for (ck_region *r = p->regions; r; r = r->next)
        if (a >= r->va && a < r->va + r->size) return r;
    return NULL;
}
