/* ck__pool_check: everything the pool's structure promises, checked from
 * scratch. The randomized model tests run it after every operation, and
 * CKALLOC_CHECK=1 in the environment makes every pool run it after each
 * ck_malloc and ck_free, aborting with the broken invariant (slow: for
 * chasing a bug in a real program). Call with the lock held or with no
 * other thread inside the pool. O(blocks + chunks). */
#include "pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ptrvec {
    const void **v;
    size_t n, cap;
    int oom;
} ptrvec;

static void pv_push(ptrvec *a, const void *x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        const void **v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            a->oom = 1;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
}

static int cmp_ptr(const void *x, const void *y) {
    uintptr_t a = (uintptr_t) * (const void *const *)x, b = (uintptr_t) * (const void *const *)y;
    return a < b ? -1 : a > b;
}

static const void *pv_sort(ptrvec *a) { /* returns a duplicate, if any */
    if (a->n) qsort(a->v, a->n, sizeof *a->v, cmp_ptr);
    for (size_t i = 1; i < a->n; i++)
        if (a->v[i] == a->v[i - 1]) return a->v[i];
    return NULL;
}

static int pv_has(const ptrvec *a, const void *x) {
    return a->n && bsearch(&x, a->v, a->n, sizeof *a->v, cmp_ptr) != NULL;
}

static size_t hslot(const ck_pool *p, uintptr_t a) {
    return (size_t)(((uint64_t)(a / CK_ROUND) * 0x9E3779B97F4A7C15ull) >> (64 - p->hbits));
}

typedef struct checker {
    char *why;
    size_t n;
    int bad;
} checker;

static void fail(checker *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(checker *k, const char *fmt, ...) {
    if (k->bad++) return; /* the first failure is the one to read */
    va_list ap;
    va_start(ap, fmt);
    if (k->why && k->n) vsnprintf(k->why, k->n, fmt, ap);
    va_end(ap);
}

#define CHK(cond, ...)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fail(k, __VA_ARGS__);                                                                  \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)
#define CHK_EQ(a, b)                                                                               \
    CHK((long long)(a) == (long long)(b), "%s is %lld, should be %lld (%s)", #a, (long long)(a),   \
        (long long)(b), #b)

/* Holds its chunks: live or pending and not evicted, or a large block kept
 * whole on the large quick slots. */
static int resident_busy(const ck_block *b) {
    return (b->state != BLK_FREE || (b->quick && !b->small)) && !b->evicted;
}

static void check(ck_pool *p, checker *k) {
    ptrvec inbin = {0}, inhash = {0}, seen = {0}, inquick = {0};
    uint32_t *want = NULL;
    const void *dup;
    /* bins */
    for (int h = 0; h < 2; h++) {
        const ck_heap *heap = h ? &p->small : &p->large;
        for (unsigned i = 0; i < CK_NBINS; i++) {
            int bit = (int)((heap->bitmap[i / 64] >> (i % 64)) & 1);
            CHK(bit == (heap->bins[i] != NULL), "heap %d bin %u: bitmap bit %d", h, i, bit);
            const ck_block *prev = NULL;
            for (const ck_block *b = heap->bins[i]; b; b = b->fnext) {
                CHK(b->fprev == prev, "heap %d bin %u: list links", h, i);
                CHK_EQ(b->bin, i);
                CHK(b->state == BLK_FREE, "block %#lx in a bin is not free", (unsigned long)b->addr);
                CHK_EQ(b->small, h);
                pv_push(&inbin, b);
                prev = b;
            }
        }
    }
    CHK(!(dup = pv_sort(&inbin)), "block %p is in two bins", dup);
    /* quick lists */
    uint64_t nquick = 0, quick_bytes = 0;
    for (size_t c = 0; c < CK_QUICK_CLASSES; c++) {
        uint32_t n = 0;
        for (const ck_block *b = p->quick[c]; b; b = b->fnext) {
            CHK(b->quick && b->small && b->state == BLK_FREE && b->size == c * CK_ROUND,
                "quick list %zu holds block %#lx (size %zu, state %d)", c, (unsigned long)b->addr,
                b->size, b->state);
            CHK(++n <= CK_QUICK_PER_CLASS, "quick list %zu is longer than its cap", c);
            pv_push(&inquick, b);
            quick_bytes += b->size;
        }
        CHK_EQ(p->nquick_class[c], n);
        nquick += n;
    }
    CHK_EQ(p->nquick, nquick);
    CHK_EQ(p->quick_bytes, quick_bytes);
    uint64_t lquick_bytes = 0;
    CHK(p->nlquick <= CK_LQUICK_N, "%u large quick blocks", p->nlquick);
    for (uint32_t i = 0; i < p->nlquick; i++) {
        const ck_block *b = p->lquick[i];
        CHK(b->quick && !b->small && !b->is_page && b->state == BLK_FREE && !b->evicted,
            "large quick slot %u holds block %#lx (state %d)", i, (unsigned long)b->addr, b->state);
        pv_push(&inquick, b);
        lquick_bytes += b->size;
    }
    CHK_EQ(p->lquick_bytes, lquick_bytes);
    CHK(!(dup = pv_sort(&inquick)), "block %p is on a quick list twice", dup);
    for (size_t i = 0; i <= p->hmask; i++)
        for (const ck_block *b = p->htab[i]; b; b = b->hnext) {
            CHK(hslot(p, b->addr) == i, "block %#lx in the wrong hash slot", (unsigned long)b->addr);
            pv_push(&inhash, b);
        }
    CHK(!(dup = pv_sort(&inhash)), "block %p is hashed twice", dup);
    CHK_EQ(inhash.n, p->hcount);

    int64_t live_n = 0, live_b = 0, pend_n = 0, pend_b = 0, isplit_n = 0, isplit_b = 0;
    int64_t mapped_n = 0, runs = 0;
    uint64_t idle_n = 0;
    size_t npages = 0;
    for (ck_region *r = p->regions; r; r = r->next) {
        CHK_EQ(r->size % p->gran, 0);
        CHK_EQ(r->nchunks, r->size / p->gran);
        CHK(r->used_top >= r->va && r->used_top <= r->va + r->size, "region %#lx: used_top",
            (unsigned long)r->va);
        free(want);
        want = calloc(r->nchunks, sizeof *want); /* resident busy blocks per chunk */
        CHK(want != NULL, "out of host memory for the check");
        ck_block *first = r->last;
        CHK(first != NULL && first->next == NULL, "region %#lx: last block", (unsigned long)r->va);
        while (first->prev) first = first->prev;
        CHK(first->addr == r->va, "region %#lx: first block at %#lx", (unsigned long)r->va,
            (unsigned long)first->addr);
        uintptr_t at = r->va;
        for (ck_block *b = first; b; b = b->next) {
            CHK(b->addr == at, "region %#lx: gap or overlap at %#lx (block %#lx)",
                (unsigned long)r->va, (unsigned long)at, (unsigned long)b->addr);
            CHK(b->size > 0 && b->size % CK_ROUND == 0 && b->addr % CK_ROUND == 0,
                "block %#lx: size %zu", (unsigned long)b->addr, b->size);
            CHK(b->region == r && !b->small, "block %#lx: region or small flag", (unsigned long)b->addr);
            CHK(b->next ? b->next->prev == b : r->last == b, "block %#lx: address links",
                (unsigned long)b->addr);
            pv_push(&seen, b);
            if (b->is_page) {
                npages++;
                CHK_EQ(b->state, BLK_LIVE);
                CHK(b->addr % p->gran == 0, "page %#lx does not start on a chunk",
                    (unsigned long)b->addr);
                CHK(!pv_has(&inhash, b) && !pv_has(&inbin, b), "page host %#lx hashed or binned",
                    (unsigned long)b->addr);
                const ck_block *sb = NULL;
                for (const ck_block *c = p->htab[hslot(p, b->addr)]; c; c = c->hnext)
                    if (c->addr == b->addr) sb = c;
                CHK(sb != NULL && sb->prev == NULL, "page %#lx has no small block at its start",
                    (unsigned long)b->addr);
                uintptr_t sat = b->addr;
                uint32_t busy_small = 0;
                for (; sb; sb = sb->next) {
                    busy_small += sb->state != BLK_FREE;
                    CHK(sb->addr == sat, "page %#lx: gap at %#lx", (unsigned long)b->addr,
                        (unsigned long)sat);
                    CHK(sb->small && sb->page == b && sb->region == r && !sb->is_page,
                        "small block %#lx: links", (unsigned long)sb->addr);
                    CHK(sb->size > 0 && sb->size % CK_ROUND == 0, "small block %#lx: size",
                        (unsigned long)sb->addr);
                    CHK(!sb->next || sb->next->prev == sb, "small block %#lx: links",
                        (unsigned long)sb->addr);
                    CHK(pv_has(&inhash, sb), "small block %#lx not in the hash",
                        (unsigned long)sb->addr);
                    pv_push(&seen, sb);
                    CHK(sb->quick == pv_has(&inquick, sb), "small block %#lx: quick flag %d",
                        (unsigned long)sb->addr, sb->quick);
                    if (sb->state == BLK_FREE) {
                        CHK(sb->quick ? !pv_has(&inbin, sb) : pv_has(&inbin, sb),
                            "free small block %#lx not in a bin or a quick list",
                            (unsigned long)sb->addr);
                        if (sb != p->spare_page) {
                            isplit_n++;
                            isplit_b += (int64_t)sb->size;
                        } else {
                            CHK(sb->addr == b->addr && sb->size == b->size && !sb->next,
                                "spare page is not a whole page");
                        }
                    } else {
                        CHK(!pv_has(&inbin, sb), "busy small block %#lx in a bin",
                            (unsigned long)sb->addr);
                        if (sb->state == BLK_LIVE) {
                            live_n++;
                            live_b += (int64_t)sb->size;
                        } else {
                            CHK_EQ(sb->state, BLK_PENDING);
                            pend_n++;
                            pend_b += (int64_t)sb->size;
                        }
                    }
                    sat = sb->addr + sb->size;
                }
                CHK(sat == b->addr + b->size, "page %#lx: small blocks end at %#lx",
                    (unsigned long)b->addr, (unsigned long)sat);
                CHK(b->nlive == busy_small, "page %#lx: nlive %u, %u small blocks busy",
                    (unsigned long)b->addr, b->nlive, busy_small);
            } else {
                CHK(pv_has(&inhash, b), "large block %#lx not in the hash", (unsigned long)b->addr);
                CHK(b->quick == pv_has(&inquick, b), "large block %#lx: quick flag %d",
                    (unsigned long)b->addr, b->quick);
                if (b->state == BLK_FREE) {
                    CHK(b->quick ? !pv_has(&inbin, b) : pv_has(&inbin, b),
                        "free large block %#lx not in a bin or a quick slot", (unsigned long)b->addr);
                    CHK(!b->evicted, "free block %#lx marked evicted", (unsigned long)b->addr);
                } else {
                    CHK(!pv_has(&inbin, b), "busy large block %#lx in a bin", (unsigned long)b->addr);
                    CHK(b->size < p->align_min || !p->opts.chunk_align || b->addr % p->gran == 0,
                        "block %#lx of %zu B does not start on a chunk", (unsigned long)b->addr,
                        b->size);
                    if (b->state == BLK_LIVE) {
                        live_n++;
                        live_b += (int64_t)b->size;
                    } else {
                        CHK_EQ(b->state, BLK_PENDING);
                        pend_n++;
                        pend_b += (int64_t)b->size;
                    }
                }
            }
            if (b->state != BLK_FREE)
                CHK(b->addr + b->size <= r->used_top, "busy block %#lx above used_top",
                    (unsigned long)b->addr);
            if (resident_busy(b)) {
                for (size_t i = ck__chunk_of(p, r, b->addr), e = ck__chunk_of(p, r, b->addr + b->size - 1);
                     i <= e; i++) {
                    CHK(r->chunk[i].mapped, "resident block %#lx (%zu B) has unmapped chunk %zu",
                        (unsigned long)b->addr, b->size, i);
                    want[i]++;
                }
            }
            at = b->addr + b->size;
        }
        CHK(at == r->va + r->size, "region %#lx: blocks end at %#lx", (unsigned long)r->va,
            (unsigned long)at);
        /* chunks and the idle list */
        uint64_t idle_here = 0;
        for (size_t i = 0; i < r->nchunks; i++) {
            const ck_chunk *c = &r->chunk[i];
            CHK(c->nres == want[i], "chunk %zu of region %#lx: nres %u, should be %u", i,
                (unsigned long)r->va, c->nres, want[i]);
            CHK(c->idle == (c->mapped && c->nres == 0), "chunk %zu: idle %d, mapped %d, nres %u", i,
                c->idle, c->mapped, c->nres);
            if (c->mapped) {
                mapped_n++;
                if (i == 0 || !r->chunk[i - 1].mapped) runs++;
            } else {
                CHK(c->h == 0 && !c->iprev && !c->inext, "unmapped chunk %zu keeps a handle or links", i);
            }
            idle_here += c->idle;
        }
        uint64_t listed = 0;
        for (uint32_t x = r->idle_head, prev = 0; x; prev = x, x = r->chunk[x - 1].inext) {
            CHK(x <= r->nchunks && r->chunk[x - 1].idle, "idle list holds chunk %u, not idle", x - 1);
            CHK(r->chunk[x - 1].iprev == prev, "idle list links at chunk %u", x - 1);
            if (!r->chunk[x - 1].inext) CHK(r->idle_tail == x, "idle list tail");
            CHK(++listed <= idle_here, "idle list of region %#lx loops or holds extra chunks",
                (unsigned long)r->va);
        }
        CHK(listed == idle_here, "region %#lx: %llu chunks idle, %llu listed", (unsigned long)r->va,
            (unsigned long long)idle_here, (unsigned long long)listed);
        idle_n += idle_here;
    }
    CHK_EQ(p->nidle, idle_n);
    CHK(!(dup = pv_sort(&seen)), "block %p appears twice", dup);
    CHK_EQ(seen.n, inhash.n + npages);
    for (size_t i = 0; i < inbin.n; i++) CHK(pv_has(&seen, inbin.v[i]), "a binned block is in no region");
    for (size_t i = 0; i < inhash.n; i++) CHK(pv_has(&seen, inhash.v[i]), "a hashed block is in no region");
    size_t npend = 0;
    for (ck_block *b = p->pending, *prev = NULL; b; prev = b, b = b->fnext) {
        CHK(b->fprev == prev && b->state == BLK_PENDING, "pending list at %#lx", (unsigned long)b->addr);
        if (!b->fnext) CHK(p->pending_tail == b, "pending list tail");
        npend++;
    }
    if (!p->pending) CHK(p->pending_tail == NULL, "pending list tail without a head");
    CHK_EQ(npend, p->npending);
    CHK_EQ((int64_t)npend, pend_n);
    if (p->spare_page)
        CHK(p->spare_page->small && p->spare_page->state == BLK_FREE && !p->spare_page->prev &&
                !p->spare_page->next,
            "spare page is not a whole free page");
    CHK(p->round_done <= p->round_issued, "round done %llu past issued %llu",
        (unsigned long long)p->round_done, (unsigned long long)p->round_issued);
    if (p->round_done == p->round_issued) CHK_EQ(p->nround_ev, 0);
    const ck_counters *c = p->c;
    CHK_EQ(c->allocation.current, live_n);
    CHK_EQ(c->allocated_bytes.current, live_b);
    CHK_EQ(c->active.current, live_n + pend_n);
    CHK_EQ(c->active_bytes.current, live_b + pend_b);
    CHK_EQ(c->inactive_split.current, isplit_n);
    CHK_EQ(c->inactive_split_bytes.current, isplit_b);
    CHK_EQ(c->segment.current, runs);
    CHK_EQ(c->mapped_bytes.current, mapped_n * (int64_t)p->gran);
    CHK_EQ(c->reserved_bytes.current, mapped_n * (int64_t)p->gran);
    /* orphans: unmapped handles the driver has not released yet */
    CHK_EQ(c->physical_bytes.current, (mapped_n + (int64_t)p->norphans) * (int64_t)p->gran);
    CHK(c->num_map_calls <= (uint64_t)mapped_n + c->num_unmap_calls, "map calls %llu, unmaps %llu, %lld chunks mapped",
        (unsigned long long)c->num_map_calls, (unsigned long long)c->num_unmap_calls, (long long)mapped_n);
    CHK_EQ((int64_t)(c->num_create_calls - c->num_release_calls), mapped_n + (int64_t)p->norphans);
    CHK((uint64_t)c->physical_bytes.current <= p->budget, "physical %lld over budget %llu",
        (long long)c->physical_bytes.current, (unsigned long long)p->budget);
    CHK(!inbin.oom && !inhash.oom && !seen.oom, "out of host memory for the check");
out:
    free(want);
    free(inquick.v);
    free(inbin.v);
    free(inhash.v);
    free(seen.v);
}

void ck__pool_check_or_abort(ck_pool *p, const char *after) {
    char why[512];
    if (ck__pool_check(p, why, sizeof why) == 0) return;
    fprintf(stderr, "ckalloc: CKALLOC_CHECK: the pool is inconsistent after %s: %s\n", after, why);
    abort();
}

int ck__pool_check(ck_pool *p, char *why, size_t n) {
    checker k = {why, n, 0};
    if (why && n) why[0] = 0;
    check(p, &k);
    if (!k.bad && ck__tier_check(p, why, n) != 0) k.bad = 1;
    return k.bad ? -1 : 0;
}
