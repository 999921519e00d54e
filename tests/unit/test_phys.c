/* The physical layer (alloc/phys.c) and what rests on it.
 *
 *  - backend conformance: the map/unmap/release rules of backend.h, checked
 *    on the host backend and on the cuda backend over the stand-in driver;
 *  - evict/restore, the tier engine's hold on a live block (white box:
 *    ck__pool_evict, ck__pool_restore, ck__pool_span, ck__pool_check);
 *  - regressions for "false out of memory" (a request refused although the
 *    pool could have served it), each built so that it fails on a pool with
 *    the defect, and a randomized model check that calls a NOMEM false when
 *    the same request succeeds right after ck_trim. */
#include "testutil.h"

#include "backend.h"
#include "internal.h"
#include "pool.h" /* white box: tests link ckalloc_internal */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (2 * MiB)

#ifdef CKALLOC_SANITIZED
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

static uint64_t rng_state;
static uint64_t rnd(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }
static void seed_rng(unsigned seed) { rng_state = 0x9E3779B97F4A7C15ull * (seed + 1); }

/* The pool's own invariant checker; no other thread is inside the pool. */
static void wb_check(ck_pool *p) {
    char why[512];
    if (ck__pool_check(p, why, sizeof why) != 0) ck_abort_msg("pool check: %s", why);
}

static size_t round512(size_t n) { return (n + 511) / 512 * 512; }

/* 1 resident live allocation, -1 not (evicted, freed, ...), 0 outside. */
static int span_of(ck_pool *p, void *ptr, size_t n) {
    const char *why = NULL;
    return ck__pool_span(p, ptr, n, &why);
}

/* ================================================================================
 * 1. Backend conformance (backend.h), one body for both backends
 * ================================================================================ */

/* Every byte of [va, va+n) is v (sampled every 4 KiB plus both ends). */
static void expect_fill(uintptr_t va, size_t n, unsigned char v) {
    const unsigned char *q = (const unsigned char *)va;
    for (size_t i = 0; i < n; i += 4096) REQ(q[i] == v);
    REQ(q[n - 1] == v);
}

static void conformance(ck_backend *b, int host) {
    const struct ck_backend_ops *o = b->ops;
    const size_t g = b->granularity;
    ck_assert_uint_eq(g, CHUNK);
    uintptr_t va = 0;
    ASSERT_OK(o->reserve(b, 8 * g, &va));
    ck_assert_uint_eq(va % g, 0);
    ck_phys h[3] = {0}, x[2] = {0}, big = 0;
    for (int i = 0; i < 3; i++) ASSERT_OK(o->create(b, g, &h[i]));
    for (int i = 0; i < 2; i++) ASSERT_OK(o->create(b, g, &x[i]));
    ASSERT_OK(o->create(b, 2 * g, &big));

    /* Three handles mapped back to back with one call (chunks 1..3): the
     * whole run is readable and writable, each chunk its own memory. */
    uintptr_t at = va + g;
    ASSERT_OK(o->map(b, at, g, 3, h));
    for (int i = 0; i < 3; i++) memset((void *)(at + (size_t)i * g), 0x40 + i, g);
    for (int i = 0; i < 3; i++) expect_fill(at + (size_t)i * g, g, (unsigned char)(0x40 + i));

    /* Mapping over a mapped chunk is refused, alone or as the tail of a run
     * that starts on a free chunk; the refused run leaves nothing mapped
     * (chunk 0 maps afterwards) and the mapped chunks keep their bytes. */
    ck_assert_int_eq(o->map(b, at + g, g, 1, &x[0]), CK_ERR_BACKEND);
    ck_assert_int_eq(o->map(b, va, g, 2, x), CK_ERR_BACKEND);
    ASSERT_OK(o->map(b, va, g, 1, &x[0]));
    memset((void *)va, 0x11, g);
    expect_fill(va, g, 0x11);
    ASSERT_OK(o->unmap(b, va, g));
    for (int i = 0; i < 3; i++) expect_fill(at + (size_t)i * g, g, (unsigned char)(0x40 + i));

    /* Unmap takes exactly one mapping: not two at once, not half of one,
     * not one starting mid-chunk, not an unmapped chunk. Nothing changes. */
    ck_assert_int_eq(o->unmap(b, at, 2 * g), CK_ERR_BACKEND);
    ck_assert_int_eq(o->unmap(b, at, g / 2), CK_ERR_BACKEND);
    ck_assert_int_eq(o->unmap(b, at + g / 2, g), CK_ERR_BACKEND);
    ck_assert_int_eq(o->unmap(b, va, g), CK_ERR_BACKEND);
    for (int i = 0; i < 3; i++) expect_fill(at + (size_t)i * g, g, (unsigned char)(0x40 + i));

    /* Release of a mapped handle: the host backend refuses it (ckalloc never
     * does it); the stand-in driver, like CUDA, accepts it and frees the
     * memory at the handle's last unmap. */
    unsigned long live0 = host ? 0 : fake_counter("ckfake_live_handles");
    if (host) {
        uint64_t fr0 = 0, fr1 = 0, tot = 0;
        ASSERT_OK(o->mem_info(b, &fr0, &tot));
        ck_assert_int_eq(o->release(b, h[1]), CK_ERR_BACKEND);
        ASSERT_OK(o->mem_info(b, &fr1, &tot));
        ck_assert_uint_eq(fr1, fr0); /* the handle's memory still counts */
    } else {
        ASSERT_OK(o->release(b, h[1]));
        ck_assert_uint_eq(fake_counter("ckfake_live_handles"), live0);
    }
    expect_fill(at + g, g, 0x41);

    /* Each chunk unmaps alone. */
    for (int i = 0; i < 3; i++) ASSERT_OK(o->unmap(b, at + (size_t)i * g, g));
    if (!host) {
        ck_assert_uint_eq(fake_counter("ckfake_live_handles"), live0 - 1); /* freed at unmap */
        ck_assert_int_eq(o->release(b, h[1]), CK_ERR_BACKEND);              /* gone */
    }
    for (int i = 0; i < 3; i++)
        if (host || i != 1) ASSERT_OK(o->release(b, h[i]));

    /* A run with a handle of another size is refused and leaves nothing
     * mapped (the stand-in maps x[0] first and must take it back): the
     * right handles then map at the same address. */
    ck_phys bad[2] = {x[0], big};
    ck_assert_int_eq(o->map(b, va + 4 * g, g, 2, bad), CK_ERR_BACKEND);
    ck_phys bad2[2] = {big, x[1]};
    ck_assert_int_eq(o->map(b, va + 4 * g, g, 2, bad2), CK_ERR_BACKEND);
    ASSERT_OK(o->map(b, va + 4 * g, g, 2, x));
    memset((void *)(va + 4 * g), 0x5A, 2 * g);
    expect_fill(va + 4 * g, 2 * g, 0x5A);
    ASSERT_OK(o->unmap(b, va + 4 * g, g));
    ASSERT_OK(o->unmap(b, va + 5 * g, g));
    ASSERT_OK(o->release(b, x[0]));
    ASSERT_OK(o->release(b, x[1]));
    ASSERT_OK(o->release(b, big));
    ASSERT_OK(o->unreserve(b, va, 8 * g));
    if (host) {
        uint64_t fr = 0, tot = 0;
        ASSERT_OK(o->mem_info(b, &fr, &tot));
        ck_assert_uint_eq(fr, tot); /* every handle's memory came back */
    }
}

START_TEST(t_backend_host) {
    ck_pool_options opts;
    ck_pool_options_init(&opts);
    opts.host_mem = 1 * GiB;
    ck_backend *b = NULL;
    ASSERT_OK(ck__backend_host_create(&opts, &b));
    conformance(b, 1);
    b->ops->destroy(b);
}
END_TEST

START_TEST(t_backend_cuda_fake) {
    fake_cuda_env();
    ck_pool_options opts;
    ck_pool_options_init(&opts);
    ck_backend *b = NULL;
    ASSERT_OK(ck__backend_cuda_create(&opts, &b));
    unsigned long h0 = fake_counter("ckfake_live_handles"), m0 = fake_counter("ckfake_live_mappings"),
                  r0 = fake_counter("ckfake_live_reservations");
    conformance(b, 0);
    /* nothing leaked in the driver */
    ck_assert_uint_eq(fake_counter("ckfake_live_handles"), h0);
    ck_assert_uint_eq(fake_counter("ckfake_live_mappings"), m0);
    ck_assert_uint_eq(fake_counter("ckfake_live_reservations"), r0);
    b->ops->destroy(b);
}
END_TEST

/* ================================================================================
 * 2. Evict / restore
 * ================================================================================ */

typedef struct eblk {
    void *a;
    size_t rs; /* rounded size */
    int ev;    /* evicted */
} eblk;

static size_t evict_size(void) {
    uint64_t r = rnd() % 10;
    if (r < 3) return 512 + rnd_below(MiB - 512);     /* small: a page */
    if (r < 5) return MiB + 1 + rnd_below(3 * MiB);   /* large, under chunk_align */
    return 4 * MiB + rnd_below(36 * MiB + 1);         /* 4 .. 40 MiB */
}

/* Mark a block's head, tail and one byte per chunk, and read them back. */
static void touch(const eblk *e, unsigned char v) {
    unsigned char *q = e->a;
    size_t w = e->rs < 4096 ? e->rs : 4096;
    memset(q, v, w);
    memset(q + e->rs - w, v, w);
    for (size_t off = 0; off < e->rs; off += CHUNK) q[off] = v;
    REQ(q[0] == v && q[e->rs - 1] == v);
    for (size_t off = 0; off < e->rs; off += CHUNK) REQ(q[off] == v);
}

/* Unmapped bytes under e's chunks (white box, nobody else in the pool). */
static size_t unmapped_under(ck_pool *p, const eblk *e) {
    ck_region *r = ck__region_of(p, (uintptr_t)e->a);
    REQ(r != NULL);
    return ck__phys_unmapped(p, r, (uintptr_t)e->a, e->rs);
}

#define MAXE 14

typedef struct eset {
    ck_pool *p;
    eblk b[MAXE];
    int n;
    int64_t sum; /* live bytes, evicted ones included */
} eset;

static void e_check(eset *s) {
    REQ_EQ(stats_of(s->p).allocated_bytes.current, s->sum);
    wb_check(s->p);
}

static int e_new(eset *s, size_t n) {
    void *a = NULL;
    OK(ck_malloc(s->p, &a, n, NULL));
    s->b[s->n] = (eblk){a, round512(n), 0};
    s->sum += (int64_t)round512(n);
    e_check(s);
    return s->n++;
}

static void e_free(eset *s, int i) { /* evicted or not */
    OK(ck_free(s->p, s->b[i].a, NULL));
    s->sum -= (int64_t)s->b[i].rs;
    s->b[i] = s->b[--s->n];
    e_check(s);
}

/* Random layouts on chunk_align=4M: evicting a live block of N >= 4 MiB
 * gives back at least N - 2 MiB, exactly what physical_bytes loses; the
 * block stays allocated but not resident; restore maps it back at the same
 * address (physical grows by what was unmapped under it) and it is
 * writable; free works from either state. */
START_TEST(t_evict_restore_random) {
    const int iters = SANITIZED ? 80 : 200;
    for (unsigned seed = 1; seed <= 3; seed++) {
        seed_rng(seed);
        eset s = {.p = host_pool("chunk_align=4M")};
        ck_pool *p = s.p;
        for (int it = 0; it < iters; it++) {
            for (int k = 1 + (int)rnd_below(3); k > 0 && s.n < MAXE; k--) e_new(&s, evict_size());
            for (int k = (int)rnd_below(3); k > 0 && s.n > 1; k--) e_free(&s, (int)rnd_below((size_t)s.n));
            int cand[MAXE], nc = 0;
            for (int i = 0; i < s.n; i++)
                if (s.b[i].rs >= 4 * MiB) cand[nc++] = i;
            if (nc == 0) {
                if (s.n == MAXE) e_free(&s, 0);
                cand[nc++] = e_new(&s, 4 * MiB + rnd_below(36 * MiB));
            }
            int ei = cand[rnd_below((size_t)nc)];
            eblk *e = &s.b[ei];
            unsigned char v = (unsigned char)(it % 250 + 1);
            if (e->ev) { /* evicted earlier: bring it back */
                size_t need = unmapped_under(p, e);
                ck_stats s0 = stats_of(p);
                OK(ck__pool_restore(p, e->a));
                e->ev = 0;
                REQ_EQ(stats_of(p).physical_bytes.current - s0.physical_bytes.current, need);
                REQ_EQ(span_of(p, e->a, e->rs), 1);
                touch(e, v);
                e_check(&s);
                continue;
            }
            touch(e, v);
            ck_stats s0 = stats_of(p);
            size_t rel = 0;
            OK(ck__pool_evict(p, e->a, &rel));
            e->ev = 1;
            ck_stats s1 = stats_of(p);
            REQ_EQ(s0.physical_bytes.current - s1.physical_bytes.current, rel);
            if (rel + 2 * MiB < e->rs)
                ck_abort_msg("seed %u it %d: evicting %zu B at %p gave back only %zu B", seed, it,
                             e->rs, e->a, rel);
            REQ_EQ(s1.allocated_bytes.current, s0.allocated_bytes.current); /* still allocated */
            REQ_EQ(span_of(p, e->a, e->rs), -1);
            REQ_EQ(span_of(p, e->a, 1), -1);
            e_check(&s);
            uint64_t r = rnd() % 4;
            if (r == 0) {
                e_free(&s, ei); /* while evicted */
            } else if (r <= 2) { /* restore now */
                REQ_EQ(unmapped_under(p, e), rel);
                OK(ck__pool_restore(p, e->a));
                e->ev = 0;
                REQ_EQ(stats_of(p).physical_bytes.current, s0.physical_bytes.current);
                REQ_EQ(span_of(p, e->a, e->rs), 1);
                touch(e, (unsigned char)(v ^ 0xFF));
                e_check(&s);
                if (r == 1) e_free(&s, ei);
            } /* else: stays evicted while the layout changes around it */
        }
        while (s.n) e_free(&s, s.n - 1);
        OK(ck_trim(p, NULL));
        REQ_EQ(stats_of(p).physical_bytes.current, 0);
        ASSERT_OK(ck_pool_destroy(p));
    }
}
END_TEST

/* Refused calls change nothing: evicting twice and restoring a resident
 * block are CK_ERR_INVALID, a pointer the pool never handed out is
 * CK_ERR_NOT_OWNED. */
START_TEST(t_evict_refusals) {
    ck_pool *p = host_pool("chunk_align=4M");
    void *a = NULL, *b = NULL;
    ASSERT_OK(ck_malloc(p, &a, 6 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, &b, 6 * MiB, NULL));
    size_t rel = 0;
    ASSERT_OK(ck__pool_evict(p, a, &rel));
    ck_assert_uint_ge(rel, 4 * MiB);
    ck_stats s0 = stats_of(p);

    rel = 12345;
    ck_assert_int_eq(ck__pool_evict(p, a, &rel), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), "evicted already") != NULL, "%s", ck_last_error());
    ck_assert_uint_eq(rel, 0);
    ck_assert_int_eq(ck__pool_restore(p, b), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), "not evicted") != NULL, "%s", ck_last_error());
    int local = 0;
    ck_assert_int_eq(ck__pool_evict(p, &local, &rel), CK_ERR_NOT_OWNED);
    ck_assert_int_eq(ck__pool_restore(p, &local), CK_ERR_NOT_OWNED);
    ck_assert_int_eq(ck__pool_evict(p, (char *)b + 512, &rel), CK_ERR_NOT_OWNED); /* interior */
    ck_stats s1 = stats_of(p);
    ck_assert_int_eq(memcmp(&s0, &s1, sizeof s0), 0);
    ck_assert_int_eq(span_of(p, a, 6 * MiB), -1); /* still evicted */
    ck_assert_int_eq(span_of(p, b, 6 * MiB), 1);  /* still resident */
    wb_check(p);

    ASSERT_OK(ck__pool_restore(p, a));
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_free(p, b, NULL));
    wb_check(p);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* A (5 MiB, chunk-aligned) and B (3 MiB, right after it) share the chunk
 * [4M, 6M). Evicting one keeps that chunk (the other still uses it);
 * evicting the second gives it back too. Both orders. */
START_TEST(t_evict_adjacent_shared_chunk) {
    for (int order = 0; order < 2; order++) {
        ck_pool *p = host_pool("chunk_align=4M");
        void *a = NULL, *b = NULL;
        ASSERT_OK(ck_malloc(p, &a, 5 * MiB, NULL));
        ASSERT_OK(ck_malloc(p, &b, 3 * MiB, NULL));
        ck_assert_ptr_eq(b, (char *)a + 5 * MiB); /* precondition: adjacent, sharing a chunk */
        ck_assert_int_eq(stats_of(p).physical_bytes.current, 8 * MiB);
        void *first = order ? b : a, *second = order ? a : b;
        size_t r1 = 0, r2 = 0;
        ASSERT_OK(ck__pool_evict(p, first, &r1));
        ck_assert_uint_eq(r1, order ? 2 * MiB : 4 * MiB); /* its own chunks only */
        ck_assert_int_eq(stats_of(p).physical_bytes.current, (int64_t)(8 * MiB - r1));
        wb_check(p);
        ASSERT_OK(ck__pool_evict(p, second, &r2));
        ck_assert_uint_eq(r1 + r2, 8 * MiB); /* the shared chunk went with the second */
        ck_assert_int_eq(stats_of(p).physical_bytes.current, 0);
        wb_check(p);
        ASSERT_OK(ck__pool_restore(p, a));
        ASSERT_OK(ck__pool_restore(p, b));
        ck_assert_int_eq(stats_of(p).physical_bytes.current, 8 * MiB);
        memset(a, 1, 5 * MiB);
        memset(b, 2, 3 * MiB);
        wb_check(p);
        ASSERT_OK(ck_free(p, a, NULL));
        ASSERT_OK(ck_free(p, b, NULL));
        wb_check(p);
        ASSERT_OK(ck_pool_destroy(p));
    }
}
END_TEST

/* Restore maps under the budget like an allocation: with the budget full
 * of live blocks it is CK_ERR_NOMEM with the pool's sentence and nothing
 * changes; once a filler is freed the cached chunks make room. */
START_TEST(t_restore_under_budget) {
    ck_pool *p = host_pool("budget=16M,chunk_align=4M");
    void *x = NULL, *f1 = NULL, *f2 = NULL;
    ASSERT_OK(ck_malloc(p, &x, 8 * MiB, NULL));
    size_t rel = 0;
    ASSERT_OK(ck__pool_evict(p, x, &rel));
    ck_assert_uint_eq(rel, 8 * MiB);
    ASSERT_OK(ck_malloc(p, &f1, 8 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, &f2, 8 * MiB, NULL));
    ck_stats s0 = stats_of(p);
    ck_assert_int_eq(s0.physical_bytes.current, 16 * MiB);
    ck_assert_int_eq(ck__pool_restore(p, x), CK_ERR_NOMEM);
    ck_assert_msg(strstr(ck_last_error(), "out of memory") != NULL, "sentence: %s", ck_last_error());
    ck_stats s1 = stats_of(p);
    ck_assert_int_eq(s1.physical_bytes.current, s0.physical_bytes.current);
    ck_assert_int_eq(s1.allocated_bytes.current, s0.allocated_bytes.current);
    ck_assert_int_eq(s1.num_map_calls, s0.num_map_calls);
    ck_assert_int_eq(span_of(p, x, 8 * MiB), -1);
    wb_check(p);
    ASSERT_OK(ck_free(p, f1, NULL));
    ASSERT_OK(ck__pool_restore(p, x));
    ck_assert_int_eq(span_of(p, x, 8 * MiB), 1);
    ck_assert_int_eq(stats_of(p).physical_bytes.current, 16 * MiB);
    memset(x, 0x3C, 8 * MiB);
    wb_check(p);
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_free(p, f2, NULL));
    wb_check(p);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* chunk_align=auto: a 6 MiB block starts where the free space starts until
 * the pool first evicts; from then on blocks of 4 MiB or more start on a
 * chunk, smaller large blocks still anywhere. (A host region's VA is 2 MiB
 * aligned, so the address modulo 2 MiB is the offset in its chunk.) */
START_TEST(t_auto_align_after_evict) {
    ck_pool *p = host_pool(NULL);
    void *l1, *b6, *l2, *c6, *l3, *c4, *l4, *d3;
    ASSERT_OK(ck_malloc(p, &l1, 3 * MiB / 2, NULL));
    ck_assert_uint_eq((uintptr_t)l1 % CHUNK, 0);
    ASSERT_OK(ck_malloc(p, &b6, 6 * MiB, NULL));
    ck_assert_uint_eq((uintptr_t)b6 % CHUNK, 3 * MiB / 2 % CHUNK); /* not aligned yet */
    size_t rel = 0;
    ASSERT_OK(ck__pool_evict(p, b6, &rel));
    ASSERT_OK(ck_malloc(p, &l2, 3 * MiB / 2, NULL)); /* the free space starts mid-chunk */
    ck_assert_uint_ne(((uintptr_t)l2 + 3 * MiB / 2) % CHUNK, 0);
    ASSERT_OK(ck_malloc(p, &c6, 6 * MiB, NULL));
    ck_assert_msg((uintptr_t)c6 % CHUNK == 0, "6 MiB block at chunk offset %#lx after an eviction",
                  (unsigned long)((uintptr_t)c6 % CHUNK));
    ASSERT_OK(ck_malloc(p, &l3, 3 * MiB / 2, NULL));
    ASSERT_OK(ck_malloc(p, &c4, 4 * MiB, NULL));
    ck_assert_msg((uintptr_t)c4 % CHUNK == 0, "4 MiB block at chunk offset %#lx after an eviction",
                  (unsigned long)((uintptr_t)c4 % CHUNK));
    ASSERT_OK(ck_malloc(p, &l4, 3 * MiB / 2, NULL));
    ASSERT_OK(ck_malloc(p, &d3, 3 * MiB, NULL)); /* under 4 MiB: where the space starts */
    ck_assert_ptr_eq(d3, (char *)l4 + 3 * MiB / 2);
    wb_check(p);
    void *all[] = {l1, b6, l2, c6, l3, c4, l4, d3};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ASSERT_OK(ck_free(p, all[i], NULL));
    wb_check(p);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ================================================================================
 * 3. False out-of-memory regressions
 * ================================================================================ */

/* (a) Two small requests on two streams fit in one 2 MiB page: the second
 * stream may use the fresh page's free space (it was never freed by anyone),
 * so under budget=2M it must not ask for a second page. */
START_TEST(t_oom_small_two_streams) {
    ck_pool *p = host_pool("budget=2M");
    ck_stream sa, sb;
    ASSERT_OK(ck_stream_create(p, &sa));
    ASSERT_OK(ck_stream_create(p, &sb));
    void *a = NULL, *b = NULL;
    ASSERT_OK(ck_malloc(p, &a, 4 * KiB, sa));
    ASSERT_OK(ck_malloc(p, &b, 4 * KiB, sb));
    ck_assert_int_eq(stats_of(p).physical_bytes.current, 2 * MiB);
    wb_check(p);
    ASSERT_OK(ck_free(p, a, sa));
    ASSERT_OK(ck_free(p, b, sb));
    ASSERT_OK(ck_stream_destroy(p, sa));
    ASSERT_OK(ck_stream_destroy(p, sb));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* (b) A free block whose head chunk is unmapped but which holds a fully
 * mapped 8 MiB range, with physical at the budget: a 7 MiB request fits in
 * that range without mapping anything, so it must succeed (placing it at the
 * block's start would need 2 MiB more than the budget has). */
START_TEST(t_oom_unmapped_head) {
    ck_pool *p = host_pool("budget=16M");
    void *a, *b, *c, *d, *e;
    ASSERT_OK(ck_malloc(p, &a, 2 * MiB, NULL)); /* [0, 2M) */
    ASSERT_OK(ck_malloc(p, &b, 8 * MiB, NULL)); /* [2M, 10M) */
    ASSERT_OK(ck_malloc(p, &c, 2 * MiB, NULL)); /* [10M, 12M): keeps b's range apart */
    ck_assert_ptr_eq(b, (char *)a + 2 * MiB);
    ck_assert_ptr_eq(c, (char *)b + 8 * MiB);
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_trim(p, NULL));                /* chunk 0 unmapped */
    ASSERT_OK(ck_malloc(p, &d, 6 * MiB, NULL)); /* too big for the hole: above c */
    ck_assert_ptr_eq(d, (char *)c + 2 * MiB);
    ASSERT_OK(ck_free(p, b, NULL)); /* free [0, 10M): chunk 0 unmapped, [2M, 10M) mapped */
    ck_stats s = stats_of(p);
    ck_assert_int_eq(s.physical_bytes.current, 16 * MiB);
    ck_assert_uint_ge(s.largest_free, 8 * MiB);
    ck_region *r = ck__region_of(p, (uintptr_t)a);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->chunk[ck__chunk_of(p, r, (uintptr_t)a)].mapped, 0);
    wb_check(p);
    ck_status st = ck_malloc(p, &e, 7 * MiB, NULL);
    ck_assert_msg(st == CK_OK, "7 MiB with 8 MiB mapped and free: %s: %s", ck_status_str(st),
                  ck_last_error());
    ck_assert_int_le(stats_of(p).physical_bytes.current, 16 * MiB);
    wb_check(p);
    ASSERT_OK(ck_free(p, e, NULL));
    ASSERT_OK(ck_free(p, c, NULL));
    ASSERT_OK(ck_free(p, d, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* (e) Found by the model below, made deterministic. Under pressure the pool
 * places a request where the fewest chunks are unmapped and then releases
 * idle chunks outside that place. Here the free block F = [0, 6M) has two
 * idle chunks and one unmapped; the region's tail starts mid-chunk in L0's
 * busy chunk. 4.5 MiB in F needs 2 MiB mapped with nothing releasable
 * (F's idle chunks are under the placement): over budget=10M. In the tail
 * it needs 4 MiB, and releasing F's two idle chunks makes exactly that
 * room. ck_trim followed by the same request succeeds, so a NOMEM here is
 * false. */
START_TEST(t_oom_idle_inside_placement) {
    ck_pool *p = host_pool("budget=10M");
    void *t2a, *t2b, *l2, *l0, *x = NULL;
    ASSERT_OK(ck_malloc(p, &t2a, 4 * MiB, NULL)); /* [0, 4M) */
    ASSERT_OK(ck_malloc(p, &t2b, 2 * MiB, NULL)); /* [4M, 6M) */
    ASSERT_OK(ck_malloc(p, &l2, 2 * MiB, NULL));  /* [6M, 8M) */
    ASSERT_OK(ck_free(p, t2b, NULL));
    ASSERT_OK(ck_trim(p, NULL));                    /* chunk 2 unmapped */
    ASSERT_OK(ck_malloc(p, &l0, 3 * MiB, NULL));  /* [8M, 11M): the tail starts mid-chunk */
    ck_assert_ptr_eq(l0, (char *)t2a + 8 * MiB);
    ASSERT_OK(ck_free(p, t2a, NULL)); /* F = [0, 6M): 2 idle chunks, 1 unmapped */
    ck_assert_int_eq(stats_of(p).physical_bytes.current, 10 * MiB);
    wb_check(p);
    ck_status st = ck_malloc(p, &x, 4 * MiB + 512 * KiB, NULL);
    ck_assert_msg(st == CK_OK, "4.5 MiB: %s: %s", ck_status_str(st), ck_last_error());
    wb_check(p);
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_free(p, l0, NULL));
    ASSERT_OK(ck_free(p, l2, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* (c) A block freed while a ck_record_stream user is still busy is only
 * pending; under pressure the pool must wait for that stream's event and
 * reuse the block instead of failing. When a request truly cannot fit,
 * the sentence accounts for pending bytes. */
START_TEST(t_oom_waits_for_record_stream) {
    ck_pool *p = host_pool("budget=8M");
    ck_stream s;
    ASSERT_OK(ck_stream_create(p, &s));
    unsigned char *sink = malloc(gate_bytes());
    ck_assert_ptr_nonnull(sink);
    void *x = NULL, *y = NULL, *z = NULL;
    ASSERT_OK(ck_malloc(p, &x, 6 * MiB, NULL));
    ASSERT_OK(ck_record_stream(p, x, s));
    gate_create();
    gate_block(p, s, sink); /* s is busy until the gate opens */
    ASSERT_OK(ck_free(p, x, NULL));
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.active_bytes.current - st.allocated_bytes.current, 6 * MiB); /* pending */
    gate_release_after(150);
    double t0 = now_ms();
    ck_status r = ck_malloc(p, &y, 6 * MiB, NULL);
    double waited = now_ms() - t0;
    gate_join();
    ASSERT_OK(ck_stream_synchronize(p, s));
    gate_destroy();
    ck_assert_msg(r == CK_OK, "6 MiB under budget=8M with 6 MiB pending: %s: %s", ck_status_str(r),
                  ck_last_error());
    ck_assert_ptr_eq(y, x);                 /* the pending block's memory, reused */
    ck_assert_double_ge(waited, 100.0);     /* only after s passed its event */
    ck_assert_int_le(stats_of(p).physical_bytes.current, 8 * MiB);
    wb_check(p);
    ck_assert_int_eq(ck_malloc(p, &z, 4 * MiB, NULL), CK_ERR_NOMEM);
    const char *why = ck_last_error();
    ck_assert_msg(strstr(why, "out of memory") && strstr(why, "pending "), "sentence: %s", why);
    ASSERT_OK(ck_free(p, y, NULL));
    ASSERT_OK(ck_stream_destroy(p, s));
    ASSERT_OK(ck_pool_destroy(p));
    free(sink);
}
END_TEST

/* (d) ck_trim right after freeing a block that an idle second stream was
 * given to ck_record_stream must give back all of the block's chunks:
 * trim waits for the record_stream event and the round, so only the live
 * block's memory remains. Repeated to catch the event racing the free. */
START_TEST(t_trim_after_record_stream_free) {
    ck_pool *p = host_pool(NULL);
    ck_stream s2;
    ASSERT_OK(ck_stream_create(p, &s2));
    void *keep = NULL;
    ASSERT_OK(ck_malloc(p, &keep, 4 * MiB, NULL));
    for (int i = 0; i < 20; i++) {
        void *x = NULL;
        ASSERT_OK(ck_malloc(p, &x, 6 * MiB, NULL));
        ASSERT_OK(ck_record_stream(p, x, s2));
        ASSERT_OK(ck_free(p, x, NULL));
        size_t rel = 0;
        ASSERT_OK(ck_trim(p, &rel));
        ck_stats s = stats_of(p);
        ck_assert_msg(s.physical_bytes.current == 4 * MiB,
                      "round %d: after trim %lld B physical, 4 MiB live (trim gave back %zu B)", i,
                      (long long)s.physical_bytes.current, rel);
        ck_assert_int_eq(s.active_bytes.current, 4 * MiB);
        wb_check(p);
    }
    ASSERT_OK(ck_free(p, keep, NULL));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ================================================================================
 * 4. Model check: no false out-of-memory
 * ================================================================================ */

#define NSTREAMS 3
#define MAXLIVE 48

typedef struct mblk {
    void *a;
    size_t n;
    int si;
} mblk;

static size_t m_size(void) {
    uint64_t r = rnd() % 100;
    if (r < 35) return 1 + rnd_below(64 * KiB);
    if (r < 55) return 1 + rnd_below(MiB);
    if (r < 65) return CHUNK * (1 + rnd_below(3)) + (rnd() % 2 ? 0 : rnd_below(4096));
    return MiB + 1 + rnd_below(11 * MiB);
}

/* Work on stream number si that writes its own slice of the block: two
 * streams never write the same bytes without an order between them (the
 * caller's rule), so any race TSan sees is memory handed to a new owner
 * while an old stream still writes it. */
static void m_use_on(ck_pool *p, const mblk *b, ck_stream s, int si) {
    size_t w = b->n < 16 * KiB ? b->n : 16 * KiB;
    size_t slice = w / NSTREAMS;
    if (!slice) {
        if (si != b->si) return; /* too small to share: only its own stream */
        OK(ck_memset_async(p, b->a, 0x5D, w, s));
        return;
    }
    OK(ck_memset_async(p, (char *)b->a + (size_t)si * slice, 0x5D, slice, s));
}

static void m_use(ck_pool *p, const mblk *b, ck_stream s) { m_use_on(p, b, s, b->si); }

/* Random malloc / free / record_stream / trim on three streams under a
 * budget. Every CK_ERR_NOMEM is followed by ck_trim and the same request:
 * if that succeeds, the first answer was a false out of memory. */
static void model_run(const char *conf, unsigned seed, int ops) {
    seed_rng(seed);
    ck_pool *p = host_pool(conf);
    ck_stream st[NSTREAMS] = {NULL};
    for (int i = 1; i < NSTREAMS; i++) OK(ck_stream_create(p, &st[i]));
    mblk live[MAXLIVE];
    int nl = 0;
    unsigned long n_nomem = 0, n_ok = 0;
    for (int op = 0; op < ops; op++) {
        uint64_t r = rnd() % 100;
        if (r < 50 && nl < MAXLIVE) {
            size_t n = m_size();
            int si = (int)rnd_below(NSTREAMS);
            void *a = NULL;
            ck_status s = ck_malloc(p, &a, n, st[si]);
            if (s == CK_ERR_NOMEM) {
                char why[1024];
                snprintf(why, sizeof why, "%s", ck_last_error());
                n_nomem++;
                wb_check(p);
                OK(ck_trim(p, NULL));
                s = ck_malloc(p, &a, n, st[si]);
                if (s == CK_OK)
                    ck_abort_msg("%s seed %u op %d: FALSE out of memory: ck_malloc(%zu B, stream %d) "
                                 "failed with \"%s\" but succeeded right after ck_trim",
                                 conf, seed, op, n, si, why);
                REQ(s == CK_ERR_NOMEM);
            } else {
                OK(s);
                n_ok++;
                live[nl] = (mblk){a, n, si};
                m_use(p, &live[nl++], st[si]);
            }
        } else if (r < 82 && nl) {
            int i = (int)rnd_below((size_t)nl);
            OK(ck_free(p, live[i].a, st[live[i].si]));
            live[i] = live[--nl];
        } else if (r < 94 && nl) {
            mblk *b = &live[rnd_below((size_t)nl)];
            int u = (int)((b->si + 1 + rnd_below(NSTREAMS - 1)) % NSTREAMS);
            OK(ck_record_stream(p, b->a, st[u]));
            m_use_on(p, b, st[u], u);
        } else if (r < 97) {
            OK(ck_trim(p, NULL));
        } else if (nl) {
            mblk *b = &live[rnd_below((size_t)nl)];
            m_use(p, b, st[b->si]); /* keep a stream busy */
        }
        wb_check(p);
    }
    for (; nl; nl--) OK(ck_free(p, live[nl - 1].a, st[live[nl - 1].si]));
    OK(ck_trim(p, NULL));
    wb_check(p);
    REQ_EQ(stats_of(p).allocated_bytes.current, 0);
    fprintf(stderr, "model %s seed %u: %d ops, %lu mallocs, %lu out of memory (none false)\n", conf,
            seed, ops, n_ok, n_nomem);
    for (int i = 1; i < NSTREAMS; i++) OK(ck_stream_destroy(p, st[i]));
    OK(ck_pool_destroy(p));
}

/* Quick lists and record_stream: a page's last busy block freed through
 * the pending path (its ck_record_stream event completes later) still
 * merges the page's quick blocks first, so the page ends whole and goes to
 * the spare slot instead of staying split around a quick block. */
START_TEST(t_quick_page_freed_through_pending) {
    ck_pool *p = host_pool(NULL);
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    unsigned char *sink = malloc((size_t)sysconf(_SC_PAGESIZE));
    void *a, *b, *c;
    ASSERT_OK(ck_malloc(p, &a, 4 * KiB, s1));
    ASSERT_OK(ck_malloc(p, &b, 8 * KiB, s1));
    ck_assert_ptr_eq(b, (char *)a + 4 * KiB); /* one page */
    gate_create();
    gate_block(p, s2, sink);
    ASSERT_OK(ck_record_stream(p, b, s2));
    ASSERT_OK(ck_free(p, a, s1)); /* b still live: a waits on a quick list */
    ASSERT_OK(ck_free(p, b, s1)); /* pending on s2's event */
    wb_check(p);
    ck_assert_int_eq(stats_of(p).active.current, 1);
    gate_release();
    ASSERT_OK(ck_stream_synchronize(p, s2));
    gate_destroy();
    /* A request on another path polls the pending list: b is freed there. */
    ASSERT_OK(ck_malloc(p, &c, 3 * MiB, s1));
    wb_check(p);
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.active.current, 1);
    ck_assert_msg(st.inactive_split.current == 0 && st.inactive_split_bytes.current == 0,
                  "the page is still split: %lld free blocks, %lld B", (long long)st.inactive_split.current,
                  (long long)st.inactive_split_bytes.current);
    ASSERT_OK(ck_free(p, c, s1));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
    free(sink);
}
END_TEST

/* CKALLOC_CHECK=1: every ck_malloc and ck_free runs the invariant checker.
 * A healthy pool runs on; one whose bookkeeping is broken (here an idle
 * count off by one, set from outside) aborts at the next call, saying
 * which invariant broke (run in a child). */
START_TEST(t_env_check) {
    setenv("CKALLOC_CHECK", "1", 1);
    ck_pool *p = host_pool(NULL);
    unsetenv("CKALLOC_CHECK");
    void *a, *b;
    ASSERT_OK(ck_malloc(p, &a, 4096, NULL));
    ASSERT_OK(ck_malloc(p, &b, 5 * MiB, NULL));
    ASSERT_OK(ck_free(p, a, NULL));
    fflush(stderr);
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        p->nidle++; /* break it */
        void *c;
        ck_malloc(p, &c, 4096, NULL);
        _exit(0); /* not reached when the check works */
    }
    close(fds[1]);
    char buf[1024] = "";
    ssize_t got = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                  "the child was not aborted (status %d)", status);
    ck_assert_msg(got > 0 && strstr(buf, "CKALLOC_CHECK") && strstr(buf, "after ck_malloc"),
                  "stderr: %s", buf);
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_model_no_false_oom) {
    const int ops = SANITIZED ? 8000 : 12000;
    model_run("budget=48M", 1, ops);
    model_run("budget=48M", 2, ops);
    model_run("budget=32M,release=eager", 3, ops);
    model_run("budget=64M,chunk_align=4M", 4, ops);
}
END_TEST

int main(void) {
    Suite *s = suite_create("phys");
    TCase *be = ck_test_tcase(s, "backend", 60);
    tcase_add_test(be, t_backend_host);
    tcase_add_test(be, t_backend_cuda_fake);
    TCase *ev = ck_test_tcase(s, "evict", 120);
    tcase_add_test(ev, t_evict_restore_random);
    tcase_add_test(ev, t_evict_refusals);
    tcase_add_test(ev, t_evict_adjacent_shared_chunk);
    tcase_add_test(ev, t_restore_under_budget);
    tcase_add_test(ev, t_auto_align_after_evict);
    TCase *oom = ck_test_tcase(s, "false_oom", 120);
    tcase_add_test(oom, t_oom_small_two_streams);
    tcase_add_test(oom, t_oom_unmapped_head);
    tcase_add_test(oom, t_oom_idle_inside_placement);
    tcase_add_test(oom, t_oom_waits_for_record_stream);
    tcase_add_test(oom, t_trim_after_record_stream_free);
    tcase_add_test(oom, t_model_no_false_oom);
    tcase_add_test(oom, t_quick_page_freed_through_pending);
    tcase_add_test(oom, t_env_check);
    return ck_test_run(s);
}
