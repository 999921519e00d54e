/* The caching allocator: heaps, blocks, rounds and the public API (the
 * physical layer under it is phys.c).
 * See pool.h for the picture. Everything below runs under pool->mu. */
#include "pool.h"
#include "policy.h"

#include <stdlib.h>
#include <string.h>

/* The registry entry of stream s; the default stream without a call. */
static inline ck_status stream_idx(ck_pool *p, ck_stream s, const char *fn, uint32_t *idx) {
    if (!s) {
        *idx = 0;
        return CK_OK;
    }
    return ck__stream_lookup(p, s, fn, idx);
}

/* ---------------------------------------------------------------- bins -- */

static unsigned bin_index(size_t size) {
    size_t u = size / CK_ROUND; /* >= 1 */
    if (u < 16) return (unsigned)u;
    unsigned fl = 63u - (unsigned)__builtin_clzll((unsigned long long)u);
    unsigned sl = (unsigned)(u >> (fl - 4)) & 15u;
    unsigned idx = 16u + (fl - 4u) * 16u + sl;
    return idx < CK_NBINS ? idx : CK_NBINS - 1;
}

static void bin_insert(ck_heap *h, ck_block *b) {
    unsigned i = bin_index(b->size);
    b->bin = (uint16_t)i;
    b->fprev = NULL;
    b->fnext = h->bins[i];
    if (b->fnext) b->fnext->fprev = b;
    h->bins[i] = b;
    h->bitmap[i / 64] |= 1ull << (i % 64);
}

static void bin_remove(ck_heap *h, ck_block *b) {
    unsigned i = b->bin;
    if (b->fprev) b->fprev->fnext = b->fnext;
    else h->bins[i] = b->fnext;
    if (b->fnext) b->fnext->fprev = b->fprev;
    if (!h->bins[i]) h->bitmap[i / 64] &= ~(1ull << (i % 64));
    b->fprev = b->fnext = NULL;
}

/* First non-empty bin at or above i, or CK_NBINS. */
static unsigned bin_next(const ck_heap *h, unsigned i) {
    while (i < CK_NBINS) {
        uint64_t w = h->bitmap[i / 64] & (~0ull << (i % 64));
        if (w) return (i / 64) * 64 + (unsigned)__builtin_ctzll(w);
        i = (i / 64 + 1) * 64;
    }
    return CK_NBINS;
}

/* ------------------------------------------------------------- rounds -- */

/* Owner of a free block merged from frees on different streams: no stream
 * may reuse it before a round fences it. */
#define CK_STREAM_NOBODY ((ck_stream)(uintptr_t)-1)

static int fenced(const ck_pool *p, const ck_block *b) { return b->free_round < p->round_done; }

/* Not a stream: "any stream", for asking whether a free block would serve
 * once the frees on it are fenced. */
#define CK_STREAM_ANY ((ck_stream)(uintptr_t)-2)

static int usable_on(const ck_pool *p, const ck_block *b, ck_stream s) {
    return b->stream == s || fenced(p, b) || s == CK_STREAM_ANY;
}

/* ------------------------------------------------------- block structs -- */

static ck_block *block_new(ck_pool *p) {
    if (!p->block_free) {
        enum { N = 256 };
        ck_block *slab = calloc(N, sizeof *slab);
        if (!slab) return NULL;
        if (ck__grow_array(&p->slabs, &p->cap_slabs, p->nslabs, sizeof *p->slabs, 16) != 0) {
            free(slab);
            return NULL;
        }
        p->slabs[p->nslabs++] = slab;
        for (int i = N - 1; i >= 0; i--) {
            slab[i].hnext = p->block_free;
            p->block_free = &slab[i];
        }
    }
    ck_block *b = p->block_free;
    p->block_free = b->hnext;
    memset(b, 0, sizeof *b);
    return b;
}

static void block_delete(ck_pool *p, ck_block *b) {
    free(b->uses);
    free(b->pend);
    b->uses = NULL;
    b->pend = NULL;
    b->hnext = p->block_free;
    p->block_free = b;
}

/* ---------------------------------------------------------------- hash -- */

static size_t hslot(const ck_pool *p, uintptr_t a) {
    return (size_t)(((uint64_t)(a / CK_ROUND) * 0x9E3779B97F4A7C15ull) >> (64 - p->hbits));
}

static void hash_grow(ck_pool *p) {
    int bits = p->hbits + 1;
    size_t n = (size_t)1 << bits;
    ck_block **t = calloc(n, sizeof *t);
    if (!t) return; /* keep the longer chains */
    ck_block **old = p->htab;
    size_t oldn = p->hmask + 1;
    p->htab = t;
    p->hbits = bits;
    p->hmask = n - 1;
    for (size_t i = 0; i < oldn; i++) {
        ck_block *b = old[i];
        while (b) {
            ck_block *nx = b->hnext;
            size_t s = hslot(p, b->addr);
            b->hnext = t[s];
            t[s] = b;
            b = nx;
        }
    }
    free(old);
}

static void hash_insert(ck_pool *p, ck_block *b) {
    size_t s = hslot(p, b->addr);
    b->hnext = p->htab[s];
    p->htab[s] = b;
    if (++p->hcount > p->hmask + 1) hash_grow(p);
}

static void hash_remove(ck_pool *p, ck_block *b) {
    ck_block **pp = &p->htab[hslot(p, b->addr)];
    while (*pp != b) pp = &(*pp)->hnext;
    *pp = b->hnext;
    b->hnext = NULL;
    p->hcount--;
}

static ck_block *hash_find(const ck_pool *p, uintptr_t a) {
    ck_block *b = p->htab[hslot(p, a)];
    while (b && b->addr != a) b = b->hnext;
    return b;
}

/* ------------------------------------------------------------- regions -- */

static ck_status region_add(ck_pool *p, size_t min_size, ck_block **free_block) {
    size_t size = p->va_default;
    if (size < min_size) size = (size_t)ck__align_up(min_size, p->gran);
    ck_block *b = block_new(p);
    if (!b) return ck__err(CK_ERR_NOMEM, "out of host memory for region bookkeeping");
    ck_region *r;
    ck_status s = ck__region_new(p, size, &r);
    if (s != CK_OK) {
        block_delete(p, b);
        return s;
    }
    r->next = p->regions;
    p->regions = r;
    b->addr = r->va;
    b->size = size;
    b->region = r;
    r->last = b;
    b->state = BLK_FREE;
    b->free_round = 0; /* untouched VA is safe for every stream */
    b->stream = NULL;
    hash_insert(p, b);
    bin_insert(&p->large, b);
    *free_block = b;
    return CK_OK;
}

/* ------------------------------------------------------- split / merge -- */

/* Cut b at off: [b->addr + off, end) becomes a new block right after b with
 * b's state, stream and stamp (hashed, not binned). NULL when the host is
 * out of memory for its struct. */
static ck_block *cut(ck_pool *p, ck_block *b, size_t off) {
    ck_block *r = block_new(p);
    if (!r) return NULL;
    r->addr = b->addr + off;
    r->size = b->size - off;
    r->prev = b;
    r->next = b->next;
    if (b->next) b->next->prev = r;
    else if (!b->small) b->region->last = r;
    b->next = r;
    r->region = b->region;
    r->page = b->page;
    r->small = b->small;
    r->state = b->state;
    r->stream = b->stream;
    r->free_round = b->free_round;
    r->free_seq = b->free_seq;
    r->freed = 0; /* a remainder's address was never handed out */
    b->size = off;
    hash_insert(p, r);
    return r;
}

/* Merge free block n, the block right after lo, into lo (both out of their
 * bins). lo keeps its address, so its hash entry stays valid. */
static void absorb_next(ck_pool *p, ck_block *lo, ck_block *n) {
    /* The merged block is as restricted as its less safe half: two unfenced
     * halves freed on different streams belong to no stream until the next
     * round fences them (merging anyway keeps pages and ranges whole). */
    if (fenced(p, lo) && !fenced(p, n)) {
        lo->stream = n->stream;
        lo->free_round = n->free_round;
        lo->free_seq = n->free_seq;
    } else if (!fenced(p, lo) && !fenced(p, n)) {
        if (lo->stream != n->stream) lo->stream = CK_STREAM_NOBODY;
        if (n->free_round > lo->free_round) lo->free_round = n->free_round;
        if (n->free_seq > lo->free_seq) lo->free_seq = n->free_seq;
    }
    lo->next = n->next;
    if (lo->next) lo->next->prev = lo;
    else if (!lo->small) lo->region->last = lo;
    lo->size += n->size;
    hash_remove(p, n);
    block_delete(p, n);
}

/* ----------------------------------------------------------------- find -- */

/* Large blocks that start on a chunk boundary: pages (then exactly one
 * chunk) and blocks of align_min or more, which then share at most their
 * last chunk, so evicting one gives back all but 2 MiB of it. */
static int chunk_aligned(const ck_pool *p, size_t size) {
    return size >= p->align_min || size == CK_PAGE_SIZE;
}

/* Where a block of size would start inside free block b, or 0 if it does
 * not fit there. */
static uintptr_t fit_at(const ck_pool *p, const ck_block *b, size_t size, int align) {
    uintptr_t a = align ? (uintptr_t)ck__align_up(b->addr, p->gran) : b->addr;
    return a + size <= b->addr + b->size && a >= b->addr ? a : 0;
}

enum { SCAN_LIMIT = 32 };

/* Best fit for size usable on stream s, or NULL; *at: where it starts. */
static ck_block *heap_find(const ck_pool *p, const ck_heap *h, size_t size, ck_stream s, int align,
                           uintptr_t *at) {
    unsigned i = bin_index(size);
    ck_block *best = NULL;
    int scanned = 0;
    for (ck_block *b = h->bins[i]; b && scanned < SCAN_LIMIT; b = b->fnext, scanned++) {
        if (b->size < size || !usable_on(p, b, s) || !fit_at(p, b, size, align)) continue;
        if (!best || b->size < best->size) best = b;
        if (b->size == size) break;
    }
    for (i = best ? CK_NBINS : bin_next(h, i + 1); i < CK_NBINS; i = bin_next(h, i + 1)) {
        scanned = 0;
        for (ck_block *b = h->bins[i]; b && scanned < SCAN_LIMIT; b = b->fnext, scanned++) {
            if (!usable_on(p, b, s) || !fit_at(p, b, size, align)) continue;
            if (!best || b->size < best->size) best = b;
        }
        if (best) break;
    }
    if (best) *at = fit_at(p, best, size, align);
    return best;
}

/* The start inside free large block b for a block of size that costs the
 * budget least: the fewest chunks no resident block holds (unmapped ones
 * must be mapped; idle ones inside cannot be released to make room), then
 * the fewest unmapped. Candidates: the block's start, its end, and starts
 * or ends on chunk boundaries (aligned requests: chunk boundaries only).
 * *cost gets that unheld count in bytes, *need the unmapped bytes. Returns
 * 0 if it does not fit. */
static uintptr_t place_mapped(const ck_pool *p, const ck_block *b, size_t size, int align,
                              size_t *cost, size_t *need) {
    const ck_region *r = b->region;
    uintptr_t lo = fit_at(p, b, size, align), end = b->addr + b->size;
    if (!lo) return 0;
    /* Nothing at or above map_top was ever mapped: stop the scan there. */
    uintptr_t hi = end - size;
    if (r->map_top + size < end) hi = r->map_top > lo ? r->map_top : lo;
    if (!align) hi = hi & ~(uintptr_t)(CK_ROUND - 1);
    uintptr_t best = lo;
    size_t best_need, best_cost = ck__phys_cost(p, r, lo, size, &best_need);
    uintptr_t first = (uintptr_t)ck__align_up(lo, p->gran);
    for (uintptr_t c = first; c <= hi + p->gran && (best_cost || best_need); c += p->gran) {
        uintptr_t cand[3] = {c, c >= lo + size ? c - size : 0, c == first ? hi : 0};
        for (int k = 0; k < 3; k++) {
            uintptr_t x = cand[k];
            if (!x || x < lo || x > hi || (align && x % p->gran)) continue;
            size_t ne, co = ck__phys_cost(p, r, x, size, &ne);
            if (co < best_cost || (co == best_cost && ne < best_need)) {
                best_cost = co;
                best_need = ne;
                best = x;
            }
        }
    }
    *cost = best_cost;
    *need = best_need;
    return best;
}

/* Under budget pressure, search every usable free block (no scan limit) and
 * prefer the place that costs the budget least (place_mapped), then the
 * smallest block. */
static ck_block *heap_find_mapped(const ck_pool *p, size_t size, ck_stream s, int align,
                                  uintptr_t *at, size_t *need) {
    const ck_heap *h = &p->large;
    ck_block *best = NULL;
    size_t best_cost = SIZE_MAX;
    *need = SIZE_MAX;
    for (unsigned i = bin_next(h, bin_index(size)); i < CK_NBINS; i = bin_next(h, i + 1)) {
        for (ck_block *b = h->bins[i]; b; b = b->fnext) {
            if (b->size < size || !usable_on(p, b, s)) continue;
            size_t co = 0, ne = 0;
            uintptr_t a = place_mapped(p, b, size, align, &co, &ne);
            if (!a) continue;
            if (co < best_cost || (co == best_cost && (ne < *need || (ne == *need && b->size < best->size)))) {
                best = b;
                best_cost = co;
                *need = ne;
                *at = a;
            }
        }
    }
    return best;
}

/* Take [at, at+size) out of free block b of heap h: the head before at and
 * the tail after it go back to the bins as free blocks. Returns the block,
 * or NULL (b's range back in the bins) when the host is out of memory for
 * a block struct. */
static ck_block *take(ck_pool *p, ck_heap *h, ck_block *b, uintptr_t at, size_t size) {
    bin_remove(h, b);
    if (at > b->addr) {
        ck_block *n = cut(p, b, at - b->addr);
        bin_insert(h, b);
        if (!n) return NULL;
        b = n;
    }
    if (b->size > size) {
        /* Sizes are multiples of CK_ROUND, so a tail is never too small to
         * be a block. Without a struct for it, handing out the whole block
         * would hold chunks the caller did not map: fail instead. */
        ck_block *t = cut(p, b, size);
        if (!t) {
            bin_insert(h, b);
            return NULL;
        }
        bin_insert(h, t);
    }
    return b;
}

/* --------------------------------------------------------- free blocks -- */

static void small_page_return(ck_pool *p, ck_block *sb);

/* The spare page is a whole free page, not space split off a page in use:
 * it leaves the inactive_split stats while parked. */
static void spare_park(ck_pool *p, ck_block *sb) {
    p->spare_page = sb;
    ck__stat_add(&p->c->inactive_split_bytes, -(int64_t)sb->size);
    ck__stat_add(&p->c->inactive_split, -1);
}

static ck_block *spare_unpark(ck_pool *p) {
    ck_block *sb = p->spare_page;
    p->spare_page = NULL;
    ck__stat_add(&p->c->inactive_split_bytes, (int64_t)sb->size);
    ck__stat_add(&p->c->inactive_split, 1);
    return sb;
}

/* b (either heap) is now free: its chunks stop being held (large blocks),
 * then coalesce, bin, and give back what is whole. */
static ck_block *coalesce_and_bin(ck_pool *p, ck_block *b);

static void page_unquick(ck_pool *p, ck_block *b);

static void block_make_free(ck_pool *p, ck_block *b) {
    /* The last busy block of its page: merge the page's quick blocks first,
     * so that the page ends whole (from ck_free and from pending_process). */
    if (b->small && p->nquick && b->page->nlive == 1) page_unquick(p, b);
    if (!b->small && !b->evicted) ck__phys_drop(p, b->region, b->addr, b->size, b->free_round);
    b->evicted = 0;
    b->state = BLK_FREE;
    b->requested = 0;
    if (b->small) {
        ck__stat_add(&p->c->inactive_split_bytes, (int64_t)b->size);
        ck__stat_add(&p->c->inactive_split, 1);
        b->page->nlive--;
    }
    coalesce_and_bin(p, b);
}

/* Free block b (stats counted, out of every list): merge it with free
 * neighbours (not those on quick lists), bin it, give back a whole page.
 * Returns the merged block (NULL when its page went back). */
static ck_block *coalesce_and_bin(ck_pool *p, ck_block *b) {
    ck_heap *h = b->small ? &p->small : &p->large;
    ck_block *n = b->prev;
    if (n && n->state == BLK_FREE && !n->quick) {
        bin_remove(h, n);
        absorb_next(p, n, b);
        b = n;
        if (b->small) ck__stat_add(&p->c->inactive_split, -1);
    }
    n = b->next;
    if (n && n->state == BLK_FREE && !n->quick) {
        bin_remove(h, n);
        absorb_next(p, b, n);
        if (b->small) ck__stat_add(&p->c->inactive_split, -1);
    }
    if (b->small && !b->prev && !b->next) {
        /* The whole page is free: keep one spare, return the rest. */
        if (!p->spare_page && p->opts.release != CK_RELEASE_EAGER) {
            spare_park(p, b);
            bin_insert(h, b);
            return b;
        }
        small_page_return(p, b);
        return NULL;
    }
    bin_insert(h, b);
    return b;
}

/* ------------------------------------------------------------ quick lists -- */

static inline void quick_unlink(ck_pool *p, ck_block *b) {
    size_t c = b->size / CK_ROUND;
    if (b->fprev) b->fprev->fnext = b->fnext;
    else p->quick[c] = b->fnext;
    if (b->fnext) b->fnext->fprev = b->fprev;
    if (!p->quick[c]) p->quick_map[c / 64] &= ~(1ull << (c % 64));
    b->fprev = b->fnext = NULL;
    b->quick = 0;
    p->nquick_class[c]--;
    p->nquick--;
    p->quick_bytes -= b->size;
}

/* Freed small block b (stamped, counted out of the live stats) goes on its
 * size's quick list instead of being merged, if there is room and its page
 * keeps other live blocks: 1 if so. */
static inline int quick_push(ck_pool *p, ck_block *b) {
    size_t c = b->size / CK_ROUND;
    if (b->page->nlive < 2 || p->nquick_class[c] >= CK_QUICK_PER_CLASS ||
        p->quick_bytes + b->size > CK_QUICK_MAX_BYTES || p->opts.release == CK_RELEASE_EAGER)
        return 0;
    b->page->nlive--;
    b->state = BLK_FREE;
    b->requested = 0;
    b->evicted = 0;
    b->quick = 1;
    b->fprev = NULL;
    b->fnext = p->quick[c];
    if (b->fnext) b->fnext->fprev = b;
    p->quick[c] = b;
    p->quick_map[c / 64] |= 1ull << (c % 64);
    p->nquick_class[c]++;
    p->nquick++;
    p->quick_bytes += b->size;
    ck__stat_up(&p->c->inactive_split_bytes, b->size);
    ck__stat_up(&p->c->inactive_split, 1);
    return 1;
}

/* The newest quick block of exactly size, if stream s may use it. */
static inline ck_block *quick_pop(ck_pool *p, size_t size, ck_stream s) {
    ck_block *b = p->quick[size / CK_ROUND];
    if (!b || !usable_on(p, b, s)) return NULL;
    quick_unlink(p, b);
    ck__stat_down(&p->c->inactive_split_bytes, b->size);
    ck__stat_down(&p->c->inactive_split, 1);
    return b;
}

/* Merge every quick block back into the heap (on a miss, under pressure,
 * on trim): the lists only ever defer coalescing. */
static void quick_flush(ck_pool *p) {
    for (size_t w = 0; p->nquick && w < sizeof p->quick_map / sizeof p->quick_map[0]; w++)
        while (p->quick_map[w]) {
            size_t c = w * 64 + (size_t)__builtin_ctzll(p->quick_map[w]);
            while (p->quick[c]) {
                ck_block *b = p->quick[c];
                quick_unlink(p, b);
                coalesce_and_bin(p, b);
            }
        }
}

/* Freed large block b (stamped, counted out of the live stats) is kept
 * whole in one of CK_LQUICK_N slots, its chunks still held: 1 if so. It
 * costs no memory a merged free block would not: chunks under free ranges
 * stay mapped until pressure or trim either way, and both (and any large
 * request that misses) merge the kept blocks back first. */
static inline int lquick_push(ck_pool *p, ck_block *b) {
    if (p->nlquick >= CK_LQUICK_N || b->evicted || p->opts.release == CK_RELEASE_EAGER) return 0;
    b->state = BLK_FREE;
    b->requested = 0;
    b->quick = 1;
    p->lquick[p->nlquick++] = b;
    p->lquick_bytes += b->size;
    return 1;
}

/* A kept large block of exactly size that stream s may use, taken out. */
static inline ck_block *lquick_pop(ck_pool *p, size_t size, ck_stream s) {
    for (uint32_t i = 0; i < p->nlquick; i++) {
        ck_block *b = p->lquick[i];
        if (b->size != size || !usable_on(p, b, s)) continue;
        p->lquick[i] = p->lquick[--p->nlquick];
        p->lquick_bytes -= b->size;
        b->quick = 0;
        return b;
    }
    return NULL;
}

/* Give every kept large block back to the heap: its chunks are dropped
 * (stamped with its free) and it coalesces. On a large miss, under
 * pressure, on trim. */
static void lquick_flush(ck_pool *p) {
    while (p->nlquick) {
        ck_block *b = p->lquick[--p->nlquick];
        p->lquick_bytes -= b->size;
        b->quick = 0;
        block_make_free(p, b); /* drops its chunks, stamped with its free */
    }
}

/* b, the last live block of its page, is about to be freed: merge the
 * page's quick blocks first, so that freeing b leaves the page whole. */
static void page_unquick(ck_pool *p, ck_block *b) {
    ck_block *q = b;
    while (q->prev) q = q->prev;
    while (q) {
        ck_block *nx = q->next;
        if (q->quick) {
            quick_unlink(p, q);
            q = coalesce_and_bin(p, q); /* b is live: the page stays */
            nx = q->next;
        }
        q = nx;
    }
}

/* sb covers its whole page (and is out of the small bins): hand the page
 * back to the large heap. */
static void small_page_return(ck_pool *p, ck_block *sb) {
    ck_block *pg = sb->page;
    ck__stat_add(&p->c->inactive_split_bytes, -(int64_t)sb->size);
    ck__stat_add(&p->c->inactive_split, -1);
    pg->stream = sb->stream;
    pg->free_round = sb->free_round;
    pg->free_seq = sb->free_seq;
    pg->freed = sb->freed;
    pg->is_page = 0;
    hash_remove(p, sb);
    block_delete(p, sb);
    hash_insert(p, pg);
    block_make_free(p, pg);
}

static void spare_page_drop(ck_pool *p) {
    if (!p->spare_page) return;
    ck_block *sb = spare_unpark(p);
    bin_remove(&p->small, sb);
    small_page_return(p, sb);
}

/* ---------------------------------------------------------- allocation -- */

/* release=eager: give back every idle chunk the streams have passed.
 * Never blocks; what is not fenced yet goes on a later call. */
void ck__pool_eager_release(ck_pool *p) {
    if (p->opts.release != CK_RELEASE_EAGER) return;
    spare_page_drop(p);
    if (!p->nidle) return;
    ck__round_poll(p, 0);
    ck__round_issue(p);
    ck__phys_release(p, SIZE_MAX, 0, 0);
}

/* Free the pending blocks whose record_stream events have passed. The list
 * is oldest first; oldest_only stops at the first that has not (the cheap
 * poll ck_malloc makes: one query while the oldest waits). */
static void pending_process_(ck_pool *p, int wait, int oldest_only) {
    ck_block *b = p->pending;
    while (b) {
        ck_block *nx = b->fnext;
        int done = 1;
        for (uint32_t i = 0; i < b->npend && done; i++) done = ck__event_passed(p, b->pend[i], wait);
        if (!done && oldest_only) return;
        if (done) {
            if (b->fprev) b->fprev->fnext = b->fnext;
            else p->pending = b->fnext;
            if (b->fnext) b->fnext->fprev = b->fprev;
            else p->pending_tail = b->fprev;
            b->fprev = b->fnext = NULL;
            for (uint32_t i = 0; i < b->npend; i++) ck__event_put(p, b->pend[i]);
            free(b->pend);
            b->pend = NULL;
            b->npend = 0;
            p->npending--;
            ck__stat_add(&p->c->active, -1);
            ck__stat_add(&p->c->active_bytes, -(int64_t)b->size);
            block_make_free(p, b);
        }
        b = nx;
    }
}

static void pending_process(ck_pool *p, int wait) { pending_process_(p, wait, 0); }

static uint64_t live_bytes(const ck_pool *p) { return (uint64_t)p->c->allocated_bytes.current; }

/* The limit p->budget stands for, named as the user knows it: the budget
 * they set, else the device's memory (on the host backend the simulated
 * device size, config key host_mem, which defaults to this machine's RAM). */
static const char *limit_name(const ck_pool *p) {
    if (p->opts.budget) return "the budget";
    if (strcmp(p->be->name, "host") == 0)
        return p->opts.host_mem ? "host_mem (the host backend's simulated device size)"
                                : "host_mem (the host backend's simulated device size, by default "
                                  "this machine's RAM)";
    return "the device's memory";
}

/* Why a request of `size` found no room under p->budget: too big for the
 * limit on its own, or the limit is full. */
static const char *over_limit(const ck_pool *p, size_t size, char *buf, size_t n) {
    char a[32], b[32];
    const char *lim = limit_name(p);
    if ((uint64_t)ck__align_up(size, p->gran) > p->budget)
        snprintf(buf, n, "the request of %s exceeds %s, %s", ck__fmt_bytes(size, a, sizeof a), lim,
                 ck__fmt_bytes(p->budget, b, sizeof b));
    else
        snprintf(buf, n, "%s is reached", lim);
    return buf;
}

static ck_status nomem(ck_pool *p, size_t size, ck_stream s, const char *why_in) {
    char why[512];
    snprintf(why, sizeof why, "%s", why_in); /* why_in may be the error buffer itself */
    char a[32], bud[32], live[32], cached[32], largest[32], phys[32], pend[32], on[48];
    if (s) snprintf(on, sizeof on, "stream %p", (void *)s);
    else snprintf(on, sizeof on, "the default stream");
    uint64_t phys_now = (uint64_t)p->c->physical_bytes.current;
    uint64_t lv = live_bytes(p);
    uint64_t pb = (uint64_t)(p->c->active_bytes.current - p->c->allocated_bytes.current);
    uint64_t off = p->tier ? ck__tier_released_bytes(p) : 0; /* live, not on the device */
    uint64_t resident = lv > off ? lv - off : 0;
    uint64_t cache = phys_now > resident + pb ? phys_now - resident - pb : 0;
    char offs[32];
    return ck__err(CK_ERR_NOMEM,
                   "out of memory: cannot allocate %s on %s (%s); %s %s, live %s in "
                   "%lld allocations, pending %s (freed, waiting for streams given to "
                   "ck_record_stream), cached %s (largest free range %s), physical %s, offloaded "
                   "or dropped %s (live, their device memory given back)",
                   ck__fmt_bytes(size, a, sizeof a), on, why,
                   p->opts.budget ? "budget" : "no budget set, limit",
                   ck__fmt_bytes(p->budget, bud, sizeof bud), ck__fmt_bytes(lv, live, sizeof live),
                   (long long)p->c->allocation.current, ck__fmt_bytes(pb, pend, sizeof pend),
                   ck__fmt_bytes(cache, cached, sizeof cached),
                   ck__fmt_bytes(ck__largest_free(p), largest, sizeof largest),
                   ck__fmt_bytes(phys_now, phys, sizeof phys), ck__fmt_bytes(off, offs, sizeof offs));
}

/* Everything the pool can do without failing anyone to let `need` more
 * bytes be mapped under the budget, keeping [keep_a, keep_a+keep_n): wait
 * for the streams (so every free and record_stream wait is fenced), then
 * release idle chunks oldest first. 1 if there is room. */
static int budget_room(ck_pool *p, size_t need, uintptr_t keep_a, size_t keep_n) {
    uint64_t phys = (uint64_t)p->c->physical_bytes.current;
    if (phys + need <= p->budget) return 1;
    size_t want = (size_t)(phys + need - p->budget);
    size_t got = ck__phys_release(p, want, keep_a, keep_n);
    if ((uint64_t)p->c->physical_bytes.current + need > p->budget && p->tier) {
        /* Then the tier engine: stashed tensors still resident go. */
        ck__tier_reclaim(p, (size_t)((uint64_t)p->c->physical_bytes.current + need - p->budget));
        got += ck__phys_release(p, SIZE_MAX, keep_a, keep_n);
    }
    if (got) ck__cnt_inc(&p->c->num_alloc_retries);
    return (uint64_t)p->c->physical_bytes.current + need <= p->budget;
}

/* Under pressure: make every free and pending block reusable by everyone
 * (wait for the streams and for ck_record_stream's events). */
static void settle(ck_pool *p) {
    pending_process(p, 1);
    ck__pool_quiesce(p);
    if (p->tier) ck__tier_reclaim(p, 0); /* stashes whose copies are done give memory back */
    quick_flush(p);
    lquick_flush(p);
    spare_page_drop(p); /* last: the waits above can free a whole page */
}

/* A free region tail can be unusable on stream s because a block freed on
 * another stream merged into it. The part above used_top was never handed
 * out, so it is safe for every stream: split it off and offer it. */
static ck_block *pristine_tail(ck_pool *p, size_t size, ck_stream s, int align, uintptr_t *at) {
    for (ck_region *r = p->regions; r; r = r->next) {
        ck_block *t = r->last;
        uintptr_t cut_at = (uintptr_t)ck__align_up(r->used_top, p->gran), end = t->addr + t->size;
        if (t->state != BLK_FREE || usable_on(p, t, s) || cut_at <= t->addr || cut_at >= end ||
            end - cut_at < size)
            continue;
        bin_remove(&p->large, t);
        ck_block *n = cut(p, t, cut_at - t->addr);
        bin_insert(&p->large, t);
        if (!n) return NULL;
        n->free_round = 0;
        n->stream = NULL;
        bin_insert(&p->large, n);
        *at = fit_at(p, n, size, align);
        return n;
    }
    return NULL;
}

/* Growing at the end of a region (the untouched tail), map a little ahead
 * so a run of growing allocations costs fewer map calls: 1/48 of what is
 * mapped, at most 256 MiB, never past the budget or the region. The ahead
 * chunks are idle until a block lands on them, so pressure or trim can give
 * them back at once. 1/48 is measured: on the generated 1b/7b/13b traces
 * 1/64 left more map calls and 1/32 put the slack at the peak above 5%
 * (1b LoRA). */
static size_t grow_ahead(const ck_pool *p, const ck_block *b, uintptr_t at, size_t size,
                         size_t need) {
    if (b->next || need == 0) return 0;
    uint64_t extra = (uint64_t)p->c->mapped_bytes.current / 48;
    if (extra > 256 * CK_MiB) extra = 256 * CK_MiB;
    uint64_t phys = (uint64_t)p->c->physical_bytes.current;
    uint64_t room = p->budget > phys + need ? p->budget - phys - need : 0;
    if (extra > room) extra = room;
    uintptr_t end = b->addr + b->size;
    if (extra > end - (at + size)) extra = end - (at + size);
    return (size_t)(extra / p->gran * p->gran);
}

/* Free block b (found for any stream) is not usable on s yet: wait for the
 * stream that freed it to pass the free (one event; a whole round when
 * frees of several streams merged in b). Returns 1 if b is usable on s
 * now. Never during a graph capture (nothing is waited for then). */
static int fence_wait(ck_pool *p, ck_block *b, ck_stream s) {
    if (usable_on(p, b, s)) return 1;
    if (b->stream == CK_STREAM_NOBODY) {
        /* Frees of several streams merged: only a round fences it. */
        return ck__round_wait_bounded(p, b->free_round) && usable_on(p, b, s);
    }
    if (!ck__stream_passed(p, b->stream, b->free_seq)) return 0;
    b->free_round = 0; /* every free in it has passed: safe for every stream */
    return 1;
}

/* Find (or make) a mapped large block of `size` usable on s. */
__attribute__((noinline)) static ck_status large_get(ck_pool *p, size_t size, ck_stream s,
                                                    ck_block **out) {
    int align = chunk_aligned(p, size);
    uintptr_t at = 0;
    lquick_flush(p); /* a miss: the kept blocks merge back, so best fit sees them */
    ck_block *b = heap_find(p, &p->large, size, s, align, &at);
    if (b && ck__phys_unmapped(p, b->region, at, size) == 0) goto got;

    /* Slow path: let other streams' frees and record_stream waits finish. */
    pending_process(p, 0);
    ck__round_poll(p, 0);
    ck__round_issue(p);
    b = heap_find(p, &p->large, size, s, align, &at);
    if (!b) b = pristine_tail(p, size, s, align, &at);
    if (b && ck__phys_unmapped(p, b->region, at, size) == 0) goto got;
    /* Mapped memory freed on another stream would serve once that stream's
     * work passes the free: wait for that rather than map more (the pool's
     * footprint then follows live bytes however many streams there are). */
    {
        uintptr_t any_at;
        ck_block *any = heap_find(p, &p->large, size, CK_STREAM_ANY, align, &any_at);
        if (any && ck__phys_unmapped(p, any->region, any_at, size) == 0 && fence_wait(p, any, s)) {
            b = any;
            at = any_at;
            goto got;
        }
    }

    int capturing = 0;
    if (p->be->ops->stream_capturing(p->be, s, &capturing) == CK_OK && capturing)
        return nomem(p, size, s,
                     "the stream is capturing a CUDA graph and ckalloc maps no memory during "
                     "capture; run one step before capturing so the pool is warm");

    size_t need = b ? ck__phys_unmapped(p, b->region, at, size) : (size_t)ck__align_up(size, p->gran);
    if ((uint64_t)p->c->physical_bytes.current + need > p->budget) {
        /* Under pressure: wait for every stream, then look again (every
         * usable free block, placed where the least is unmapped) before
         * releasing anything. */
        settle(p);
        b = heap_find_mapped(p, size, s, align, &at, &need);
        if (b && need == 0) goto got;
        if (!b) need = (size_t)ck__align_up(size, p->gran);
        if (!budget_room(p, need, b ? at : 0, b ? size : 0)) {
            char why[256];
            return nomem(p, size, s, over_limit(p, size, why, sizeof why));
        }
    }
    if (!b) {
        ck_status st = region_add(p, size + (align ? p->gran : 0), &b);
        if (st != CK_OK) return st;
        at = fit_at(p, b, size, align);
    }
    ck_status st = ck__phys_map(p, b->region, at, size + grow_ahead(p, b, at, size, need));
    if (st == CK_ERR_NOMEM && p->nidle) {
        /* The device itself is full: give back cached memory and retry.
         * Only the streams are waited for: settle() could free (and merge
         * away) the block b we hold. */
        ck__pool_quiesce(p);
        if (ck__phys_release(p, SIZE_MAX, at, size)) ck__cnt_inc(&p->c->num_alloc_retries);
        st = ck__phys_map(p, b->region, at, size);
    }
    if (st == CK_ERR_NOMEM) return nomem(p, size, s, ck_last_error());
    if (st != CK_OK) return st;
got:;
    ck_block *g = take(p, &p->large, b, at, size);
    if (!g) return nomem(p, size, s, "out of host memory for block bookkeeping");
    ck__phys_hold(p, g->region, g->addr, g->size);
    if (g->addr + g->size > g->region->used_top) g->region->used_top = g->addr + g->size;
    *out = g;
    return CK_OK;
}

__attribute__((noinline)) static ck_status small_get(ck_pool *p, size_t size, ck_stream s,
                                                    ck_block **out) {
    uintptr_t at = 0;
    ck_block *b = quick_pop(p, size, s);
    if (b) {
        b->page->nlive++;
        *out = b;
        return CK_OK;
    }
    quick_flush(p); /* a miss: the best fit is among merged holes, as without the lists */
    b = heap_find(p, &p->small, size, s, 0, &at);
    if (!b) {
        /* Space in pages other streams freed: fence it rather than carve
         * a new page (a page per stream is how footprint grows with them). */
        ck_block *any = heap_find(p, &p->small, size, CK_STREAM_ANY, 0, &at);
        if (any && fence_wait(p, any, s)) b = any;
    }
    if (!b) {
        ck_block *pg;
        ck_status st = large_get(p, CK_PAGE_SIZE, s, &pg);
        /* Under pressure large_get waited for the streams: free space in
         * pages that other streams used may serve now. */
        if (st == CK_ERR_NOMEM && (b = heap_find(p, &p->small, size, s, 0, &at)) != NULL) {
            ck__clear_error();
            goto got;
        }
        if (st != CK_OK) return st;
        b = block_new(p);
        if (!b) {
            pg->free_round = p->round_issued;
            block_make_free(p, pg);
            return ck__err(CK_ERR_NOMEM, "out of host memory for block bookkeeping");
        }
        hash_remove(p, pg);
        pg->is_page = 1;
        pg->nlive = 0;
        pg->state = BLK_LIVE;
        b->addr = pg->addr;
        b->size = pg->size;
        b->region = pg->region;
        b->page = pg;
        b->small = 1;
        b->state = BLK_FREE;
        /* The page's free space is as safe as the range it came from. */
        b->stream = pg->stream;
        b->free_round = pg->free_round;
        b->free_seq = pg->free_seq;
        hash_insert(p, b);
        ck__stat_add(&p->c->inactive_split_bytes, (int64_t)b->size);
        ck__stat_add(&p->c->inactive_split, 1);
        bin_insert(&p->small, b);
        at = b->addr;
    }
got:
    if (b == p->spare_page) spare_unpark(p);
    size_t before = b->size;
    b = take(p, &p->small, b, at, size);
    if (!b) return ck__err(CK_ERR_NOMEM, "out of host memory for block bookkeeping");
    ck__stat_add(&p->c->inactive_split_bytes, -(int64_t)b->size);
    if (b->size == before) ck__stat_add(&p->c->inactive_split, -1);
    b->page->nlive++;
    *out = b;
    return CK_OK;
}

/* What a pool with a trace or CKALLOC_CHECK does after each successful
 * malloc or free (one test of p->op_hooks on the cached path for both). */
__attribute__((noinline)) static void op_hooks(ck_pool *p, ck_trace_action action, uintptr_t addr, size_t size,
                                               ck_stream s) {
    if (p->trace) ck__trace_add(p->trace, action, addr, size, (uintptr_t)s);
    if (p->debug_check)
        ck__pool_check_or_abort(p, action == CK_TRACE_ALLOC ? "ck_malloc" : "ck_free");
}

CK_API ck_status ck_malloc(ck_pool *p, void **ptr, size_t size, ck_stream stream) {
    if (!p || !ptr) return ck__err(CK_ERR_INVALID, "ck_malloc: %s is NULL", p ? "ptr" : "pool");
    if (size == 0) return ck__err(CK_ERR_INVALID, "ck_malloc: size is 0");
    if (size > CK_MAX_ALLOC)
        return ck__err(CK_ERR_INVALID, "ck_malloc: size %zu is larger than any device (max %zu)",
                       size, (size_t)CK_MAX_ALLOC);
    size_t rs = (size_t)ck__align_up(size, CK_ROUND);
    pool_lock(p);
    uint32_t sidx;
    ck_status st = stream_idx(p, stream, "ck_malloc", &sidx);
    if (st != CK_OK) {
        pool_unlock(p);
        return st;
    }
    if (p->npending) pending_process_(p, 0, 1);
    ck_block *b; /* the cached paths first */
    if (rs <= CK_SMALL_MAX) {
        if ((b = quick_pop(p, rs, stream)) != NULL) b->page->nlive++;
        else st = small_get(p, rs, stream, &b);
    } else if ((b = p->nlquick ? lquick_pop(p, rs, stream) : NULL) == NULL) {
        st = large_get(p, rs, stream, &b);
    }
    if (st != CK_OK) {
        if (st == CK_ERR_NOMEM) ck__cnt_inc(&p->c->num_ooms);
        if (p->trace) ck__trace_add(p->trace, CK_TRACE_ALLOC_FAIL, 0, size, (uintptr_t)stream);
        ck__ring_push(p, CK_RING_ALLOC_FAIL, 0, size, stream);
        pool_unlock(p);
        return st;
    }
    b->state = BLK_LIVE;
    b->freed = 0;
    b->requested = size;
    b->stream = stream;
    ck__stat_up(&p->c->allocation, 1);
    ck__stat_up(&p->c->active, 1);
    ck__stat_up(&p->c->allocated_bytes, b->size);
    ck__stat_up(&p->c->active_bytes, b->size);
    ck__stat_up(&p->c->requested_bytes, size);
    ck__ring_push(p, CK_RING_ALLOC, b->addr, size, stream);
    if (p->op_hooks) op_hooks(p, CK_TRACE_ALLOC, b->addr, size, stream);
    pool_unlock(p);
    *ptr = (void *)b->addr;
    return CK_OK;
}

/* The block at ptr if it is live, else an error naming what ptr is. */
static ck_status not_live(ck_pool *p, void *ptr, const char *fn, ck_block *b);

static inline ck_status live_block(ck_pool *p, void *ptr, const char *fn, ck_block **out) {
    ck_block *b = ptr ? hash_find(p, (uintptr_t)ptr) : NULL;
    if (b && b->state == BLK_LIVE) {
        *out = b;
        return CK_OK;
    }
    return not_live(p, ptr, fn, b);
}

ck_status ck__live_block(ck_pool *p, void *ptr, const char *fn, ck_block **out) {
    return live_block(p, ptr, fn, out);
}

/* What ptr is when it is not a live block (b: the block at ptr, if any). */
__attribute__((noinline)) static ck_status not_live(ck_pool *p, void *ptr, const char *fn, ck_block *b) {
    if (!ptr) return ck__err(CK_ERR_INVALID, "%s: ptr is NULL", fn);
    if (b && b->freed) return ck__err(CK_ERR_DOUBLE_FREE, "%s: %p was already freed", fn, ptr);
    if (ck__region_of(p, (uintptr_t)ptr))
        return ck__err(CK_ERR_NOT_OWNED,
                       "%s: %p is inside the pool but is not the start of a live allocation "
                       "(freed before, or an interior pointer)",
                       fn, ptr);
    return ck__err(CK_ERR_NOT_OWNED, "%s: %p was not allocated by this pool", fn, ptr);
}

CK_API ck_status ck_free(ck_pool *p, void *ptr, ck_stream stream) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_free: pool is NULL");
    pool_lock(p);
    ck_block *b = NULL;
    uint32_t sidx;
    /* The stream first: a stale one is refused even with a NULL ptr. */
    ck_status st = stream_idx(p, stream, "ck_free", &sidx);
    if (st == CK_OK && !ptr) { /* like free(NULL) and cudaFree(NULL): nothing to do */
        pool_unlock(p);
        return CK_OK;
    }
    if (st == CK_OK) st = live_block(p, ptr, "ck_free", &b);
    if (st != CK_OK) {
        pool_unlock(p);
        return st;
    }
    uintptr_t addr = b->addr;
    size_t req = b->requested;
    ck__stat_down(&p->c->allocation, 1);
    ck__stat_down(&p->c->allocated_bytes, b->size);
    ck__stat_down(&p->c->requested_bytes, b->requested);
    ck__ring_push(p, CK_RING_FREE, b->addr, b->requested, stream);
    b->stream = stream;
    b->free_round = p->round_issued;
    b->free_seq = p->free_seq++;
    b->freed = 1;
    if (!p->sent[sidx].dirty) ck__mark_dirty(p, sidx);
    /* Now and then start a round without waiting for it, so frees get
     * fenced in the background and other streams can reuse them. */
    if (++p->frees_since_round >= CK_ROUND_EVERY) {
        p->frees_since_round = 0;
        ck__round_poll(p, 0);
        ck__round_issue(p);
    }

    if (b->uses) { /* the rare case: streams given to ck_record_stream */
        /* Those still alive (a destroyed one has finished its work): wait
         * for them before reuse. */
        uint32_t nrec = 0;
        for (uint32_t i = 0; i < b->nuses; i++) {
            uint32_t k = (uint32_t)(b->uses[i] >> 32);
            if (k != sidx && p->sent[k].gen == (uint32_t)b->uses[i]) b->uses[nrec++] = b->uses[i];
        }
        if (nrec) b->pend = malloc(nrec * sizeof *b->pend);
        for (uint32_t i = 0; i < nrec; i++) {
            ck_stream us = p->sent[b->uses[i] >> 32].s;
            ck_event e;
            if (b->pend && ck__event_record(p, us, &e) == CK_OK) {
                b->pend[b->npend++] = e;
                continue;
            }
            /* No event to wait on: wait for that stream now rather than risk
             * handing the block out while it is still in use there. */
            p->be->ops->stream_sync(p->be, us);
        }
        free(b->uses);
        b->uses = NULL;
        b->nuses = b->cap_uses = 0;
    }
    if (b->tier_hook) { /* tagged, or a recipe's input: the tier engine's */
        ck_event tev[2];
        uint32_t nt = ck__tier_on_free(p, b, tev);
        ck_event *np = nt ? realloc(b->pend, (b->npend + nt) * sizeof *np) : b->pend;
        for (uint32_t i = 0; i < nt; i++) {
            if (np) {
                np[b->npend++] = tev[i];
            } else { /* no room to wait later: wait now */
                ck__event_passed(p, tev[i], 1);
                ck__event_put(p, tev[i]);
            }
        }
        if (np) b->pend = np;
    }
    b->requested = 0;
    if (b->npend) {
        b->state = BLK_PENDING;
        b->fnext = NULL; /* appended: the list is oldest first */
        b->fprev = p->pending_tail;
        if (p->pending_tail) p->pending_tail->fnext = b;
        else p->pending = b;
        p->pending_tail = b;
        p->npending++;
    } else {
        ck__stat_down(&p->c->active, 1);
        ck__stat_down(&p->c->active_bytes, b->size);
        if (b->small ? quick_push(p, b) : lquick_push(p, b)) {
            if (p->op_hooks) op_hooks(p, CK_TRACE_FREE, addr, req, stream);
            pool_unlock(p);
            return CK_OK;
        }
        uint64_t idle = p->nidle;
        block_make_free(p, b);
        if (p->nidle != idle) ck__pool_eager_release(p); /* chunks went idle */
    }
    if (p->op_hooks) op_hooks(p, CK_TRACE_FREE, addr, req, stream);
    pool_unlock(p);
    return CK_OK;
}

CK_API ck_status ck_record_stream(ck_pool *p, void *ptr, ck_stream stream) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_record_stream: pool is NULL");
    pool_lock(p);
    ck_block *b = NULL;
    /* The allocation stream counts too: freeing on another stream must wait
     * for it when the caller says it uses the block. */
    uint32_t sidx;
    ck_status st = ck__stream_lookup(p, stream, "ck_record_stream", &sidx);
    if (st == CK_OK) st = live_block(p, ptr, "ck_record_stream", &b);
    if (st == CK_OK) {
        uint64_t u = (uint64_t)sidx << 32 | p->sent[sidx].gen;
        uint32_t i = 0;
        while (i < b->nuses && b->uses[i] != u) i++;
        if (i == b->nuses) {
            if (b->nuses == b->cap_uses) {
                uint32_t cap = b->cap_uses ? b->cap_uses * 2 : 4;
                uint64_t *nu = realloc(b->uses, cap * sizeof *nu);
                if (!nu) st = ck__err(CK_ERR_NOMEM, "ck_record_stream: out of host memory");
                else {
                    b->uses = nu;
                    b->cap_uses = cap;
                }
            }
            if (st == CK_OK) b->uses[b->nuses++] = u;
        }
    }
    pool_unlock(p);
    return st;
}

CK_API ck_status ck_trim(ck_pool *p, size_t *released) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_trim: pool is NULL");
    pool_lock(p);
    /* Trim is synchronous: wait for every stream and every ck_record_stream
     * event, so memory that is idle now is given back now. */
    settle(p);
    size_t got = ck__phys_release(p, SIZE_MAX, 0, 0);
    pool_unlock(p);
    if (released) *released = got;
    return CK_OK;
}

/* ------------------------------------------------- the tier engine's hold -- */

ck_status ck__evict_locked(ck_pool *p, ck_block *b, size_t *released) {
    size_t got = 0;
    if (b->evicted) return ck__err(CK_ERR_INVALID, "evict: %p is evicted already", (void *)b->addr);
    /* chunk_align=auto: from the first eviction on, blocks of 4 MiB or
     * more start on a chunk, so later ones give back all but 2 MiB. */
    if (p->opts.chunk_align == 0 && p->align_min > CK_ALIGN_MIN) p->align_min = CK_ALIGN_MIN;
    b->evicted = 1;
    /* A small block shares its page: nothing of it can be given back,
     * but it counts as not resident all the same. */
    if (!b->small) {
        ck__phys_drop(p, b->region, b->addr, b->size, 0);
        got = ck__phys_release_under(p, b->region, b->addr, b->size);
    }
    if (released) *released = got;
    return CK_OK;
}

ck_status ck__restore_locked(ck_pool *p, ck_block *b) {
    ck_status st = CK_OK;
    if (!b->evicted) return ck__err(CK_ERR_INVALID, "restore: %p is not evicted", (void *)b->addr);
    if (!b->small) {
        size_t need = ck__phys_unmapped(p, b->region, b->addr, b->size);
        if ((uint64_t)p->c->physical_bytes.current + need > p->budget) {
            settle(p);
            if (!budget_room(p, need, b->addr, b->size)) {
                char why[256];
                st = nomem(p, b->size, b->stream, over_limit(p, b->size, why, sizeof why));
            }
        }
        if (st == CK_OK) {
            st = ck__phys_map(p, b->region, b->addr, b->size);
            if (st == CK_ERR_NOMEM) st = nomem(p, b->size, b->stream, ck_last_error());
        }
        if (st == CK_OK) ck__phys_hold(p, b->region, b->addr, b->size);
    }
    if (st == CK_OK) b->evicted = 0;
    return st;
}

ck_status ck__pool_evict(ck_pool *p, void *ptr, size_t *released) {
    if (!p) return ck__err(CK_ERR_INVALID, "evict: pool is NULL");
    pool_lock(p);
    ck_block *b = NULL;
    size_t got = 0;
    ck_status st = live_block(p, ptr, "evict", &b);
    if (st == CK_OK) st = ck__evict_locked(p, b, &got);
    pool_unlock(p);
    if (released) *released = got;
    return st;
}

ck_status ck__pool_restore(ck_pool *p, void *ptr) {
    if (!p) return ck__err(CK_ERR_INVALID, "restore: pool is NULL");
    pool_lock(p);
    ck_block *b = NULL;
    ck_status st = live_block(p, ptr, "restore", &b);
    if (st == CK_OK) st = ck__restore_locked(p, b);
    pool_unlock(p);
    return st;
}

/* ------------------------------------------------------ create/destroy -- */

CK_API ck_status ck_pool_create(ck_pool **out, const ck_pool_options *opts) {
    if (!out) return ck__err(CK_ERR_INVALID, "ck_pool_create: out is NULL");
    ck_pool_options o;
    ck_pool_options_init(&o);
    if (opts) {
        if (opts->struct_size == 0 || opts->struct_size > sizeof o)
            return ck__err(CK_ERR_INVALID,
                           "ck_pool_create: options struct_size %zu is not one this library knows "
                           "(call ck_pool_options_init)",
                           opts->struct_size);
        memcpy(&o, opts, opts->struct_size);
        o.struct_size = sizeof o;
    }
    if (o.backend != CK_BACKEND_AUTO && o.backend != CK_BACKEND_HOST && o.backend != CK_BACKEND_CUDA)
        return ck__err(CK_ERR_INVALID, "ck_pool_create: unknown backend %d", (int)o.backend);
    if (o.release != CK_RELEASE_PRESSURE && o.release != CK_RELEASE_EAGER)
        return ck__err(CK_ERR_INVALID, "ck_pool_create: unknown release policy %d", (int)o.release);
    if (o.budget == 0 && o.budget_fraction != 0 && !(o.budget_fraction > 0 && o.budget_fraction <= 1))
        return ck__err(CK_ERR_INVALID,
                       "ck_pool_create: budget_fraction %g is not a share of device memory (0 < f <= 1)",
                       o.budget_fraction);

    /* A policy file first: a mistake in it creates nothing, and its budget
     * stands in for one the options do not set. */
    ck_policy *pol = NULL;
    if (o.policy_path) {
        ck_status ps = ck__policy_read(o.policy_path, &pol);
        if (ps != CK_OK) return ps;
        if (o.budget == 0 && o.budget_fraction == 0 && pol->budget) o.budget = pol->budget;
    }
    o.policy_path = NULL; /* read; nothing keeps the caller's string */

    ck_backend *be = NULL;
    ck_status s;
    /* auto is cuda: host memory only when backend=host is written, the same
     * rule as the preload library's. */
    if (o.backend == CK_BACKEND_HOST)
        s = ck__backend_host_create(&o, &be);
    else
        s = ck__backend_cuda_create(&o, &be);
    if (s != CK_OK) ck__policy_free(pol);
    if (s == CK_ERR_NO_DEVICE && o.backend == CK_BACKEND_AUTO) {
        char why[768];
        snprintf(why, sizeof why, "%s", ck_last_error());
        return ck__err(s, "ck_pool_create: backend=auto: %s; set backend=host to use host memory",
                       why);
    }
    if (s != CK_OK) return s;
    /* budget=90%: a share of what the backend has (host: host_mem). */
    if (o.budget == 0 && o.budget_fraction > 0) {
        o.budget = (uint64_t)(o.budget_fraction * (double)be->total_mem);
        if (o.budget == 0) o.budget = 1;
    }

    ck_pool *p = calloc(1, sizeof *p);
    if (!p) {
        ck__policy_free(pol);
        be->ops->destroy(be);
        return ck__err(CK_ERR_NOMEM, "ck_pool_create: out of host memory");
    }
    p->be = be;
    p->opts = o;
    /* Private counters until ck__live_attach moves them into shared memory. */
    p->c = &p->c_private;
    p->seq = &p->seq_private;
    p->gran = be->granularity;
    p->align_min = o.chunk_align ? o.chunk_align : UINT64_MAX; /* auto: none until an eviction */
    const char *chk = getenv("CKALLOC_CHECK");
    p->debug_check = chk && chk[0] == '1';
    p->budget = o.budget ? o.budget : be->total_mem;
    /* The first reservation: 1.5 x the device, at most CK_VA_DEFAULT_MAX (a
     * 1 TiB simulated host device would ask for 1.5 TiB, more than some
     * address-space layouts hold, sanitizers' among them); more regions are
     * reserved when it runs out. */
    uint64_t va = o.va_size ? o.va_size : be->total_mem + be->total_mem / 2;
    if (!o.va_size && va > CK_VA_DEFAULT_MAX) va = CK_VA_DEFAULT_MAX;
    p->va_default = (size_t)ck__align_up(va < p->gran ? p->gran : va, p->gran);
    /* Round 0 is "before anything": blocks stamped 0 are safe everywhere. */
    p->round_issued = p->round_done = 1;
    p->ring_tick0 = ck__ring_clock();
    p->ring_ns0 = ck__now_ns();
    p->hbits = 10;
    p->hmask = ((size_t)1 << p->hbits) - 1;
    p->htab = calloc(p->hmask + 1, sizeof *p->htab);
    ck_lock_init(&p->mu);
    if (!p->htab) s = ck__err(CK_ERR_NOMEM, "ck_pool_create: out of host memory");
    if (s == CK_OK) s = ck__streams_init(p);
    if (s == CK_OK && o.trace_path) {
        p->trace_path = strdup(o.trace_path);
        p->opts.trace_path = p->trace_path;
        s = p->trace_path ? ck__trace_open(p->trace_path, &p->trace)
                          : ck__err(CK_ERR_NOMEM, "ck_pool_create: out of host memory");
    }
    ck_block *first;
    if (s == CK_OK) s = region_add(p, p->va_default, &first);
    if (s == CK_OK) s = ck__snapshot_attach(p);
    if (s == CK_OK && pol) s = ck__tier_set_policy(p, pol); /* takes it */
    else ck__policy_free(pol);
    p->op_hooks = p->trace != NULL || p->debug_check;
    if (s != CK_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ck_last_error());
        ck_pool_destroy(p);
        return ck__err(s, "%s", msg);
    }
    /* Last, so the slot shows the backend, device and budget in force. */
    if (p->opts.live) ck__live_attach(p);
    *out = p;
    return CK_OK;
}

CK_API ck_status ck_pool_destroy(ck_pool *p) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_pool_destroy: pool is NULL");
    /* The snapshot shows the pool as it was in use, before teardown. */
    ck_status result = ck__snapshot_detach(p);
    ck__live_detach(p);
    pool_lock(p);
    if (p->tier) ck__tier_destroy(p); /* copies finish; host memory goes back */
    pending_process(p, 1);
    ck__pool_quiesce(p);
    /* Unmap and release every chunk, then the regions. */
    while (p->regions) {
        ck_region *r = p->regions;
        p->regions = r->next;
        ck__region_delete(p, r);
    }
    for (size_t i = 0; i < p->nround_ev; i++) p->be->ops->event_destroy(p->be, p->round_ev[i]);
    for (size_t i = 0; i < p->nsent; i++) /* fence_wait's events, one per stream at most */
        if (p->sent[i].fev) p->be->ops->event_destroy(p->be, p->sent[i].fev);
    for (size_t i = 0; i < p->nev_cache; i++) p->be->ops->event_destroy(p->be, p->ev_cache[i]);
    for (size_t i = 0; i <= p->hmask && p->htab; i++)
        for (ck_block *b = p->htab[i]; b; b = b->hnext) {
            free(b->uses);
            free(b->pend);
        }
    for (size_t i = 0; i < p->nslabs; i++) free(p->slabs[i]);
    if (p->trace) {
        ck_status ts = ck__trace_close(p->trace);
        if (ts != CK_OK) result = ts;
    }
    p->be->ops->destroy(p->be);
    free(p->slabs);
    free(p->htab);
    free(p->round_ev);
    free(p->ev_cache);
    ck__streams_free(p);
    free(p->orphans);
    free(p->trace_path);
    pool_unlock(p);
    free(p);
    return result;
}

CK_API const char *ck_pool_backend(const ck_pool *p) { return p ? p->be->name : "none"; }

/* Used by stats.c: the largest free range whose chunks are all mapped. */
/* The smallest size bin i holds (bin_index's inverse); bins above the last
 * hold nothing smaller than SIZE_MAX. */
static size_t bin_min_size(unsigned i) {
    if (i >= CK_NBINS) return SIZE_MAX;
    if (i < 16) return (size_t)i * CK_ROUND;
    unsigned fl = (i - 16) / 16 + 4, sl = (i - 16) % 16;
    return ((size_t)(16 + sl) << (fl - 4)) * CK_ROUND;
}

/* Highest non-empty bin at or below i, or -1. */
static int bin_prev(const ck_heap *h, int i) {
    while (i >= 0) {
        uint64_t w = h->bitmap[i / 64] & (~0ull >> (63 - i % 64));
        if (w) return (i / 64) * 64 + 63 - __builtin_clzll(w);
        i = (i / 64) * 64 - 1;
    }
    return -1;
}

/* Longest mapped run inside free large block b (nothing above map_top was
 * ever mapped), or 0 as soon as it cannot beat best. */
static uint64_t mapped_run(const ck_pool *p, const ck_block *b, uint64_t best) {
    const ck_region *r = b->region;
    uintptr_t end = b->addr + b->size, run_start = b->addr;
    if (end > r->map_top) end = r->map_top;
    if (end <= b->addr || end - b->addr <= best) return 0;
    for (size_t c = ck__chunk_of(p, r, b->addr), last = ck__chunk_of(p, r, end - 1); c <= last; c++) {
        uintptr_t cva = r->va + c * p->gran;
        if (!r->chunk[c].mapped) {
            run_start = cva + p->gran;
            if (end - run_start <= best) break; /* what is left cannot beat it */
            continue;
        }
        uintptr_t stop = cva + p->gran < end ? cva + p->gran : end;
        if (stop > run_start && stop - run_start > best) best = stop - run_start;
    }
    return best;
}

/* Used by stats.c: the largest free range whose chunks are all mapped.
 * Bins are walked from the largest down and the walk stops at a bin whose
 * blocks are all smaller than the best range found, so the cost follows the
 * few largest free blocks, not every free block or the reserved VA. */
uint64_t ck__largest_free(ck_pool *p) {
    uint64_t best = 0;
    /* Kept large blocks are free and hold their chunks: mapped throughout. */
    for (uint32_t k = 0; k < p->nlquick; k++)
        if (p->lquick[k]->size > best) best = p->lquick[k]->size;
    int i = bin_prev(&p->small, CK_NBINS - 1);
    for (; i >= 0 && bin_min_size((unsigned)i + 1) > best; i = bin_prev(&p->small, i - 1))
        for (ck_block *b = p->small.bins[i]; b; b = b->fnext)
            if (b->size > best) best = b->size;
    for (i = bin_prev(&p->large, CK_NBINS - 1); i >= 0 && bin_min_size((unsigned)i + 1) > best;
         i = bin_prev(&p->large, i - 1))
        for (ck_block *b = p->large.bins[i]; b; b = b->fnext) {
            uint64_t run = b->size > best ? mapped_run(p, b, best) : 0;
            if (run > best) best = run;
        }
    return best;
}

/* ------------------------------------------------ interposition helpers -- */

int ck__pool_contains(ck_pool *p, const void *ptr) {
    pool_lock(p);
    int in = ck__region_of(p, (uintptr_t)ptr) != NULL;
    pool_unlock(p);
    return in;
}

/* The block holding address a of region r (every byte of a region belongs
 * to one hashed block that starts at or below it, on a 512-byte boundary).
 * Probing down finds small blocks and nearby starts at once; a start far
 * below is found walking the region's large blocks from its end. */
static ck_block *block_holding(const ck_pool *p, const ck_region *r, uintptr_t a) {
    uintptr_t q = a & ~(uintptr_t)(CK_ROUND - 1);
    for (int probes = 0; probes < 4096 && q >= r->va; probes++, q -= CK_ROUND) {
        ck_block *b = hash_find(p, q);
        if (b) return b;
    }
    for (ck_block *b = r->last; b; b = b->prev)
        if (b->addr <= a) return b->is_page ? NULL : b; /* a page's small blocks are all hashed */
    return NULL;
}

/* The live block of region r holding [a, a+n), or NULL with *why. */
static ck_block *span_in(ck_pool *p, ck_region *r, uintptr_t a, size_t n, const char **why) {
    ck_block *b = block_holding(p, r, a);
    if (!b || b->state != BLK_LIVE) {
        *why = "is not inside a live allocation (freed, or never allocated)";
        return NULL;
    }
    if (n > b->size || a - b->addr > b->size - n) {
        *why = "runs past the end of its allocation";
        return NULL;
    }
    return b;
}

ck_block *ck__span_block(ck_pool *p, const void *ptr, size_t n, const char **why) {
    ck_region *r = ck__region_of(p, (uintptr_t)ptr);
    if (!r) {
        *why = "is not inside the pool";
        return NULL;
    }
    return span_in(p, r, (uintptr_t)ptr, n, why);
}

/* Lock held: as ck__pool_span. */
static int span_locked(ck_pool *p, const void *ptr, size_t n, const char **why) {
    uintptr_t a = (uintptr_t)ptr;
    ck_region *r = ck__region_of(p, a);
    if (!r) return 0;
    ck_block *b = span_in(p, r, a, n, why);
    if (!b) return -1;
    if (b->evicted) {
        *why = "is not resident (its pages are unmapped)";
        return -1;
    }
    for (size_t i = ck__chunk_of(p, r, a), e = ck__chunk_of(p, r, a + n - 1); i <= e; i++)
        if (!r->chunk[i].mapped) {
            *why = "is not resident (its pages are unmapped)";
            return -1;
        }
    return 1;
}

int ck__pool_span(ck_pool *p, const void *ptr, size_t n, const char **why) {
    pool_lock(p);
    int res = span_locked(p, ptr, n, why);
    pool_unlock(p);
    return res;
}

int ck__pool_span_locked(ck_pool *p, const void *ptr, size_t n, const char **why) {
    return span_locked(p, ptr, n, why);
}

/* A foreign stream is about to be destroyed (the preload's cuStreamDestroy
 * hook): frees on it since the last round are fenced by waiting for it, and
 * its entry goes. */
void ck__pool_stream_gone(ck_pool *p, ck_stream s) {
    pool_lock(p);
    uint32_t idx;
    if (s && ck__stream_lookup(p, s, "stream destroy", &idx) == CK_OK) {
        /* Always wait: frees covered by a round still in flight (not dirty)
         * would otherwise count as passed once the entry is gone. */
        p->be->ops->stream_sync(p->be, s);
        ck__stream_retire(p, idx);
    }
    ck__clear_error();
    pool_unlock(p);
}
