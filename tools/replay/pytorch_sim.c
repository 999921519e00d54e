/* PyTorch's native caching allocator policy, simulated (see pytorch_sim.h).
 * The free blocks of each pool are kept in an array sorted by (stream, size,
 * address), as PyTorch's std::set of blocks is, so best fit is a binary
 * search. */
#include "pytorch_sim.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PT_MIN_BLOCK 512u                     /* kMinBlockSize */
#define PT_SMALL_SIZE (1024u * 1024u)         /* kSmallSize: small pool up to here */
#define PT_SMALL_BUFFER (2u * 1024u * 1024u)  /* kSmallBuffer: small pool segments */
#define PT_LARGE_BUFFER (20u * 1024u * 1024u) /* kLargeBuffer: segments for < 10 MiB */
#define PT_MIN_LARGE_ALLOC (10u * 1024u * 1024u)
#define PT_ROUND_LARGE (2u * 1024u * 1024u)

typedef struct pt_block {
    uint64_t addr, size;
    uint32_t stream;
    uint8_t small, allocated;
    struct pt_block *prev, *next; /* neighbours in the segment */
} pt_block;

typedef struct pt_pool {
    pt_block **v;
    size_t n, cap;
} pt_pool;

struct pt_sim {
    pt_pool pools[2]; /* [0] large, [1] small */
    uint64_t next_addr;
    pt_sim_stats st;
};

uint64_t pt_sim_round_size(uint64_t size) {
    if (size < PT_MIN_BLOCK) return PT_MIN_BLOCK;
    return (size + PT_MIN_BLOCK - 1) / PT_MIN_BLOCK * PT_MIN_BLOCK;
}

uint64_t pt_sim_segment_size(uint64_t rounded) {
    if (rounded <= PT_SMALL_SIZE) return PT_SMALL_BUFFER;
    if (rounded < PT_MIN_LARGE_ALLOC) return PT_LARGE_BUFFER;
    return (rounded + PT_ROUND_LARGE - 1) / PT_ROUND_LARGE * PT_ROUND_LARGE;
}

/* (stream, size, addr) order. */
static int before(const pt_block *a, uint32_t stream, uint64_t size, uint64_t addr) {
    if (a->stream != stream) return a->stream < stream;
    if (a->size != size) return a->size < size;
    return a->addr < addr;
}

/* First index whose block is not before (stream, size, addr). */
static size_t lower_bound(const pt_pool *p, uint32_t stream, uint64_t size, uint64_t addr) {
    size_t lo = 0, hi = p->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (before(p->v[mid], stream, size, addr)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void *xalloc(void *old, size_t n) {
    void *p = old ? realloc(old, n) : calloc(1, n);
    if (!p) {
        fputs("ckalloc-replay: out of host memory in the PyTorch policy simulation\n", stderr);
        exit(1);
    }
    return p;
}

static void pool_insert(pt_pool *p, pt_block *b) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->v = xalloc(p->v, p->cap * sizeof *p->v);
    }
    size_t i = lower_bound(p, b->stream, b->size, b->addr);
    memmove(&p->v[i + 1], &p->v[i], (p->n - i) * sizeof *p->v);
    p->v[i] = b;
    p->n++;
}

static void pool_remove(pt_pool *p, const pt_block *b) {
    size_t i = lower_bound(p, b->stream, b->size, b->addr);
    if (i < p->n && p->v[i] == b) {
        memmove(&p->v[i], &p->v[i + 1], (p->n - i - 1) * sizeof *p->v);
        p->n--;
    }
}

pt_sim *pt_sim_new(uint64_t limit) {
    pt_sim *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->st.limit = limit;
    s->next_addr = PT_ROUND_LARGE;
    return s;
}

void pt_sim_destroy(pt_sim *s) {
    if (!s) return;
    /* Free blocks are in the pools; allocated ones belong to the caller's
     * handles, which the caller frees first (pt_sim_free). */
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < s->pools[k].n; i++) free(s->pools[k].v[i]);
        free(s->pools[k].v);
    }
    free(s);
}

/* release_cached_blocks(): cudaFree every wholly free segment. */
static void release_cached(pt_sim *s) {
    for (int k = 0; k < 2; k++) {
        pt_pool *p = &s->pools[k];
        size_t w = 0;
        for (size_t i = 0; i < p->n; i++) {
            pt_block *b = p->v[i];
            if (!b->prev && !b->next) {
                s->st.reserved_bytes -= b->size;
                s->st.segment_frees++;
                free(b);
            } else {
                p->v[w++] = b;
            }
        }
        p->n = w;
    }
}

int pt_sim_malloc(pt_sim *s, uint64_t size, uint32_t stream, void **handle, char *err,
                  size_t errn) {
    uint64_t rs = pt_sim_round_size(size);
    int small = rs <= PT_SMALL_SIZE;
    pt_pool *pool = &s->pools[small];
    pt_block *b = NULL;
    size_t i = lower_bound(pool, stream, rs, 0);
    if (i < pool->n && pool->v[i]->stream == stream) {
        b = pool->v[i];
        pool_remove(pool, b);
    } else {
        uint64_t seg = pt_sim_segment_size(rs);
        if (s->st.limit && s->st.reserved_bytes + seg > s->st.limit) {
            s->st.num_alloc_retries++;
            release_cached(s);
        }
        if (s->st.limit && s->st.reserved_bytes + seg > s->st.limit) {
            char a[32], r[32], l[32];
            s->st.num_ooms++;
            snprintf(err, errn,
                     "PyTorch's policy (simulated): out of memory: a segment of %s does not fit "
                     "(reserved %s of the limit %s after releasing the cache)",
                     ck__fmt_bytes(seg, a, sizeof a),
                     ck__fmt_bytes(s->st.reserved_bytes, r, sizeof r),
                     ck__fmt_bytes(s->st.limit, l, sizeof l));
            return -1;
        }
        b = xalloc(NULL, sizeof *b);
        b->addr = s->next_addr;
        b->size = seg;
        b->stream = stream;
        b->small = (uint8_t)small;
        s->next_addr += (seg + PT_ROUND_LARGE - 1) / PT_ROUND_LARGE * PT_ROUND_LARGE;
        s->st.reserved_bytes += seg;
        s->st.segment_allocs++;
        if (s->st.reserved_bytes > s->st.peak_reserved_bytes)
            s->st.peak_reserved_bytes = s->st.reserved_bytes;
    }
    uint64_t rest = b->size - rs;
    if (small ? rest >= PT_MIN_BLOCK : rest > PT_SMALL_SIZE) {
        pt_block *r = xalloc(NULL, sizeof *r);
        r->addr = b->addr + rs;
        r->size = rest;
        r->stream = b->stream;
        r->small = b->small;
        r->prev = b;
        r->next = b->next;
        if (b->next) b->next->prev = r;
        b->next = r;
        b->size = rs;
        pool_insert(pool, r);
    }
    b->allocated = 1;
    s->st.allocated_bytes += b->size;
    if (s->st.allocated_bytes > s->st.peak_allocated_bytes)
        s->st.peak_allocated_bytes = s->st.allocated_bytes;
    *handle = b;
    return 0;
}

void pt_sim_free(pt_sim *s, void *handle) {
    pt_block *b = handle;
    pt_pool *pool = &s->pools[b->small];
    b->allocated = 0;
    s->st.allocated_bytes -= b->size;
    pt_block *n = b->prev;
    if (n && !n->allocated) { /* merge into the free block before */
        pool_remove(pool, n);
        n->size += b->size;
        n->next = b->next;
        if (b->next) b->next->prev = n;
        free(b);
        b = n;
    }
    n = b->next;
    if (n && !n->allocated) {
        pool_remove(pool, n);
        b->size += n->size;
        b->next = n->next;
        if (n->next) n->next->prev = b;
        free(n);
    }
    pool_insert(pool, b);
}

void pt_sim_get_stats(const pt_sim *s, pt_sim_stats *out) { *out = s->st; }
