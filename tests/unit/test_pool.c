/* The allocator's contract (ck_malloc / ck_free / ck_trim / budget / release
 * / trace), run on the host backend and on the cuda backend over the fake
 * libcuda (tests/fakecuda). The cuda variant is skipped with a note when the
 * fake library reports no device. */
#include "testutil.h"

#include "ckalloc/ckalloc.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHUNK (2 * MiB)
#define ROUND 512

enum { V_HOST = 0, V_CUDA = 1, NVARIANTS = 2 };
static const char *variant_name[] = {"host", "cuda(fake)"};

/* A pool for the variant with extra config, or NULL (test skipped) when the
 * cuda variant has no device. */
static ck_pool *open_pool(int variant, const char *extra) {
    char conf[4500];
    if (variant == V_HOST) {
        snprintf(conf, sizeof conf, "backend=host,host_mem=4G%s%s", extra && *extra ? "," : "",
                 extra ? extra : "");
    } else {
        fake_cuda_env();
        setenv("CKFAKECUDA_TOTAL_MEM", "4G", 1);
        snprintf(conf, sizeof conf, "backend=cuda%s%s", extra && *extra ? "," : "",
                 extra ? extra : "");
    }
    ck_pool *p = NULL;
    ck_status st = ck_pool_create_conf(&p, conf);
    if (variant == V_CUDA && st == CK_ERR_NO_DEVICE) {
        fprintf(stderr, "note: cuda variant skipped (%s)\n", ck_last_error());
        return NULL;
    }
    ck_assert_msg(st == CK_OK, "%s pool '%s': %s: %s", variant_name[variant], conf,
                  ck_status_str(st), ck_last_error());
    ck_assert_str_eq(ck_pool_backend(p), variant == V_HOST ? "host" : "cuda");
    return p;
}

static size_t rounded(size_t n) { return (n + ROUND - 1) / ROUND * ROUND; }

static unsigned char pat(size_t i, unsigned seed) {
    return (unsigned char)((i * 2654435761u) >> 13 ^ seed * 0x9Du ^ (i >> 9));
}

/* The parts of an n-byte block a test touches: all of it up to 64 MiB; for
 * bigger blocks the first and last MiB and a few bytes in every chunk, so
 * that 1 GiB is checked end to end without committing all of it. */
typedef struct piece {
    size_t off, len;
} piece;

static size_t pieces_of(size_t n, piece *out, size_t max) {
    size_t k = 0;
    if (n <= 64 * MiB) {
        out[k++] = (piece){0, n};
        return k;
    }
    out[k++] = (piece){0, MiB};
    for (size_t off = CHUNK; off + CHUNK < n && k + 1 < max; off += CHUNK)
        out[k++] = (piece){off + 1000, 600};
    out[k++] = (piece){n - MiB, MiB};
    return k;
}

/* Write a pattern over the touched parts of [ptr, ptr+n): directly on host
 * memory, through ck_memset_async/ck_memcpy_async on the cuda variant. */
static void write_block(ck_pool *p, int variant, void *ptr, size_t n, unsigned seed) {
    piece pc[600];
    size_t np = pieces_of(n, pc, 600);
    for (size_t k = 0; k < np; k++) {
        unsigned char *dst = (unsigned char *)ptr + pc[k].off;
        if (variant == V_HOST) {
            for (size_t i = 0; i < pc[k].len; i++) dst[i] = pat(pc[k].off + i, seed);
        } else {
            /* memset first (checked by the pattern later overwriting it), then copy. */
            ASSERT_OK(ck_memset_async(p, dst, 0xEE, pc[k].len, NULL));
            unsigned char *src = malloc(pc[k].len);
            ck_assert_ptr_nonnull(src);
            for (size_t i = 0; i < pc[k].len; i++) src[i] = pat(pc[k].off + i, seed);
            ASSERT_OK(ck_memcpy_async(p, dst, src, pc[k].len, NULL));
            ASSERT_OK(ck_stream_synchronize(p, NULL));
            free(src);
        }
    }
}

static void check_block(ck_pool *p, int variant, const void *ptr, size_t n, unsigned seed) {
    piece pc[600];
    size_t np = pieces_of(n, pc, 600);
    for (size_t k = 0; k < np; k++) {
        const unsigned char *src = (const unsigned char *)ptr + pc[k].off;
        const unsigned char *got = src;
        unsigned char *buf = NULL;
        if (variant != V_HOST) {
            buf = malloc(pc[k].len);
            ck_assert_ptr_nonnull(buf);
            memset(buf, 0, pc[k].len);
            ASSERT_OK(ck_memcpy_async(p, buf, src, pc[k].len, NULL));
            ASSERT_OK(ck_stream_synchronize(p, NULL));
            got = buf;
        }
        for (size_t i = 0; i < pc[k].len; i++)
            if (got[i] != pat(pc[k].off + i, seed))
                ck_abort_msg("block %p (%zu B): byte %zu is %#x, expected %#x", ptr, n,
                             pc[k].off + i, got[i], pat(pc[k].off + i, seed));
        free(buf);
    }
}

/* ---- sizes, alignment, distinctness, writability, exact stats ------------ */

static const size_t contract_sizes[] = {1,       511,          512,     513,      1 * MiB,
                                        MiB + 1, 3 * MiB,      64 * MiB, 1 * GiB};
#define NSIZES (sizeof contract_sizes / sizeof contract_sizes[0])

START_TEST(t_sizes) {
    ck_pool *p = open_pool(_i, NULL);
    if (!p) return;
    ck_stats before = stats_of(p);
    void *ptr[NSIZES];
    size_t sum_req = 0, sum_round = 0;
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = contract_sizes[i];
        ASSERT_OK(ck_malloc(p, &ptr[i], n, NULL));
        ck_assert_ptr_nonnull(ptr[i]);
        ck_assert_msg((uintptr_t)ptr[i] % ROUND == 0, "%zu B at %p is not 512-aligned", n, ptr[i]);
        sum_req += n;
        sum_round += rounded(n);
        ck_stats st = stats_of(p);
        ck_assert_int_eq(st.allocation.current, (int64_t)i + 1);
        ck_assert_int_eq(st.requested_bytes.current - before.requested_bytes.current,
                         (int64_t)sum_req);
        ck_assert_int_eq(st.allocated_bytes.current - before.allocated_bytes.current,
                         (int64_t)sum_round);
        ck_assert_int_eq(st.active_bytes.current, st.allocated_bytes.current);
        write_block(p, _i, ptr[i], n, (unsigned)i + 1);
    }
    /* Disjoint, rounded extents. */
    for (size_t i = 0; i < NSIZES; i++)
        for (size_t j = 0; j < i; j++) {
            uintptr_t a = (uintptr_t)ptr[i], b = (uintptr_t)ptr[j];
            int overlap = a < b + rounded(contract_sizes[j]) && b < a + rounded(contract_sizes[i]);
            ck_assert_msg(!overlap, "blocks %zu (%p) and %zu (%p) overlap", i, ptr[i], j, ptr[j]);
        }
    /* Every pattern survived the others being written. */
    for (size_t i = 0; i < NSIZES; i++) check_block(p, _i, ptr[i], contract_sizes[i], (unsigned)i + 1);
    ck_stats st = stats_of(p);
    ck_assert_uint_ge((uint64_t)st.mapped_bytes.current, sum_round);
    ck_assert_int_eq(st.physical_bytes.current, st.mapped_bytes.current);
    for (size_t i = 0; i < NSIZES; i++) ASSERT_OK(ck_free(p, ptr[i], NULL));
    st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 0);
    ck_assert_int_eq(st.allocated_bytes.current, 0);
    ck_assert_int_eq(st.requested_bytes.current, 0);
    ck_assert_int_eq(st.active_bytes.current, 0);
    ck_assert_uint_eq(st.allocated_bytes.allocated, sum_round);
    ck_assert_uint_eq(st.allocated_bytes.freed, sum_round);
    ck_assert_uint_eq(st.requested_bytes.allocated, sum_req);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- reuse and coalescing ----------------------------------------------- */

START_TEST(t_reuse_same_stream) {
    ck_pool *p = open_pool(_i, NULL);
    if (!p) return;
    static const size_t sizes[] = {512, 4096, 100 * KiB, MiB, MiB + 1, 3 * MiB, 64 * MiB};
    void *keep = NULL; /* something else live, so the pool is not trivially empty */
    ASSERT_OK(ck_malloc(p, &keep, 12345, NULL));
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        void *a, *b;
        ASSERT_OK(ck_malloc(p, &a, sizes[i], NULL));
        ck_stats s1 = stats_of(p);
        ASSERT_OK(ck_free(p, a, NULL));
        ASSERT_OK(ck_malloc(p, &b, sizes[i], NULL));
        ck_assert_msg(a == b, "size %zu: freed %p, got %p back", sizes[i], a, b);
        ck_stats s2 = stats_of(p);
        ck_assert_uint_eq(s2.num_map_calls, s1.num_map_calls); /* served from cache */
        ASSERT_OK(ck_free(p, b, NULL));
    }
    ASSERT_OK(ck_free(p, keep, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

static void coalesce_case(ck_pool *p, size_t each) {
    void *blk[4];
    for (int i = 0; i < 4; i++) ASSERT_OK(ck_malloc(p, &blk[i], each, NULL));
    /* Precondition: they are address neighbours (a fresh pool carves in order). */
    for (int i = 1; i < 4; i++)
        ck_assert_msg((char *)blk[i] == (char *)blk[i - 1] + each,
                      "blocks of %zu B are not neighbours: %p then %p", each, blk[i - 1], blk[i]);
    ck_stats s1 = stats_of(p);
    /* Middle first, so both merge directions are used; blk[3] stays as a guard. */
    ASSERT_OK(ck_free(p, blk[1], NULL));
    ASSERT_OK(ck_free(p, blk[0], NULL));
    ASSERT_OK(ck_free(p, blk[2], NULL));
    void *big;
    ASSERT_OK(ck_malloc(p, &big, 3 * each, NULL));
    ck_assert_msg(big == blk[0], "3 x %zu B freed at %p, but %zu B came from %p", each, blk[0],
                  3 * each, big);
    ck_stats s2 = stats_of(p);
    ck_assert_uint_eq(s2.num_map_calls, s1.num_map_calls);
    ck_assert_int_eq(s2.physical_bytes.current, s1.physical_bytes.current);
    ASSERT_OK(ck_free(p, big, NULL));
    ASSERT_OK(ck_free(p, blk[3], NULL));
}

START_TEST(t_coalesce_large) {
    ck_pool *p = open_pool(_i, NULL);
    if (!p) return;
    coalesce_case(p, 4 * MiB);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_coalesce_small) {
    ck_pool *p = open_pool(_i, NULL);
    if (!p) return;
    coalesce_case(p, 8 * KiB);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- bad requests change nothing ----------------------------------------- */

static void assert_same_stats(const ck_stats *a, const ck_stats *b, const char *what) {
    ck_assert_msg(memcmp(a, b, sizeof *a) == 0, "%s changed the stats", what);
}

START_TEST(t_invalid_sizes) {
    ck_pool *p = open_pool(_i, NULL);
    if (!p) return;
    void *live;
    ASSERT_OK(ck_malloc(p, &live, 3000, NULL));
    ck_stats before = stats_of(p);
    static const size_t bad[] = {0, (size_t)1 << 50, SIZE_MAX, SIZE_MAX - 100};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        void *x = (void *)&before;
        ck_status st = ck_malloc(p, &x, bad[i], NULL);
        ck_assert_msg(st == CK_ERR_INVALID, "size %zu gave %s", bad[i], ck_status_str(st));
        ck_assert_ptr_eq(x, (void *)&before); /* *ptr untouched */
        ck_assert_ptr_nonnull(strstr(ck_last_error(), "size"));
        ck_stats after = stats_of(p);
        assert_same_stats(&before, &after, "an invalid size");
    }
    ASSERT_OK(ck_free(p, live, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_bad_frees) {
    ck_pool *p = open_pool(_i, NULL);
    if (!p) return;
    void *a, *b, *c, *big;
    ASSERT_OK(ck_malloc(p, &a, 4096, NULL));
    ASSERT_OK(ck_malloc(p, &b, 4096, NULL));
    ASSERT_OK(ck_malloc(p, &c, 4096, NULL));
    ASSERT_OK(ck_malloc(p, &big, 4 * MiB, NULL));
    ck_stats before = stats_of(p);
    int on_stack = 0;

    ck_assert_int_eq(ck_free(p, &on_stack, NULL), CK_ERR_NOT_OWNED);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "ck_free"));
    ck_stats now = stats_of(p);
    assert_same_stats(&before, &now, "freeing a stack address");

    ck_assert_int_eq(ck_free(p, (char *)a + 512, NULL), CK_ERR_NOT_OWNED);
    ck_assert_int_eq(ck_free(p, (char *)a + 1, NULL), CK_ERR_NOT_OWNED);
    ck_assert_int_eq(ck_free(p, (char *)big + 2 * MiB, NULL), CK_ERR_NOT_OWNED);
    /* Inside the pool's address space but past every block start. */
    ck_assert_int_eq(ck_free(p, (char *)big + 4 * MiB + 3 * 512, NULL), CK_ERR_NOT_OWNED);
    now = stats_of(p);
    assert_same_stats(&before, &now, "freeing interior pointers");

    /* Record_stream on a foreign pointer is refused the same way. */
    ck_assert_int_eq(ck_record_stream(p, &on_stack, NULL), CK_ERR_NOT_OWNED);

    /* A plain double free. */
    ASSERT_OK(ck_free(p, a, NULL));
    before = stats_of(p);
    ck_status st = ck_free(p, a, NULL);
    ck_assert_msg(st == CK_ERR_DOUBLE_FREE, "double free gave %s (%s)", ck_status_str(st),
                  ck_last_error());
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "already freed"));
    now = stats_of(p);
    assert_same_stats(&before, &now, "a double free");

    /* b merges into a's free block when freed: its start is no longer a block
     * start. Either status is acceptable; what matters is that nothing changes. */
    ASSERT_OK(ck_free(p, b, NULL));
    before = stats_of(p);
    st = ck_free(p, b, NULL);
    ck_assert_msg(st == CK_ERR_DOUBLE_FREE || st == CK_ERR_NOT_OWNED,
                  "double free of a merged block gave %s", ck_status_str(st));
    now = stats_of(p);
    assert_same_stats(&before, &now, "a double free of a merged block");
    ck_assert_int_eq(ck_free(p, big, NULL), CK_OK);
    ck_status st2 = ck_free(p, big, NULL);
    ck_assert(st2 == CK_ERR_DOUBLE_FREE || st2 == CK_ERR_NOT_OWNED);

    /* The pool still works, and c is intact. */
    void *d;
    ASSERT_OK(ck_malloc(p, &d, 8192, NULL));
    ASSERT_OK(ck_free(p, d, NULL));
    ASSERT_OK(ck_free(p, c, NULL));
    now = stats_of(p);
    ck_assert_int_eq(now.allocation.current, 0);
    ck_assert_int_eq(now.allocated_bytes.current, 0);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- budget ------------------------------------------------------------- */

START_TEST(t_budget_nomem) {
    ck_pool *p = open_pool(_i, "budget=64M");
    if (!p) return;
    const uint64_t budget = 64 * MiB;
    ck_assert_uint_eq(stats_of(p).budget, budget);
    void *blk[64];
    int n = 0;
    ck_status st = CK_OK;
    while (n < 64) {
        st = ck_malloc(p, &blk[n], 4 * MiB, NULL);
        if (st != CK_OK) break;
        n++;
    }
    ck_assert_msg(st == CK_ERR_NOMEM, "after %d blocks: %s (%s)", n, ck_status_str(st),
                  ck_last_error());
    const char *e = ck_last_error();
    ck_assert_msg(strstr(e, "budget") && strstr(e, "live"), "NOMEM sentence '%s' does not say "
                  "what the budget and the live bytes are", e);
    ck_stats s = stats_of(p);
    ck_assert_msg((uint64_t)n * 4 * MiB >= budget - 2 * 4 * MiB,
                  "only %d x 4 MiB fit in a 64 MiB budget", n);
    ck_assert_uint_le((uint64_t)s.physical_bytes.current, budget);
    ck_assert_uint_le((uint64_t)s.physical_bytes.peak, budget);
    ck_assert_uint_eq(s.num_ooms, 1);
    ck_assert_int_eq(s.allocation.current, n);

    /* One free makes room again. */
    ASSERT_OK(ck_free(p, blk[n - 1], NULL));
    ASSERT_OK(ck_malloc(p, &blk[n - 1], 4 * MiB, NULL));
    s = stats_of(p);
    ck_assert_uint_eq(s.num_ooms, 1);
    ck_assert_uint_le((uint64_t)s.physical_bytes.peak, budget);
    for (int i = 0; i < n; i++) ASSERT_OK(ck_free(p, blk[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_budget_pressure_all_free) {
    ck_pool *p = open_pool(_i, "budget=64M");
    if (!p) return;
    const uint64_t budget = 64 * MiB;
    void *blk[8];
    for (int i = 0; i < 8; i++) ASSERT_OK(ck_malloc(p, &blk[i], 8 * MiB, NULL));
    ck_assert_uint_eq((uint64_t)stats_of(p).physical_bytes.current, budget);
    for (int i = 0; i < 8; i++) ASSERT_OK(ck_free(p, blk[i], NULL));
    void *big[4];
    for (int i = 0; i < 4; i++) {
        ck_status st = ck_malloc(p, &big[i], 16 * MiB, NULL);
        ck_assert_msg(st == CK_OK, "16 MiB block %d after freeing 8 x 8 MiB: %s (%s)", i,
                      ck_status_str(st), ck_last_error());
        write_block(p, _i, big[i], 16 * MiB, 40u + (unsigned)i);
    }
    for (int i = 0; i < 4; i++) check_block(p, _i, big[i], 16 * MiB, 40u + (unsigned)i);
    ck_stats s = stats_of(p);
    ck_assert_uint_le((uint64_t)s.physical_bytes.peak, budget);
    ck_assert_uint_eq(s.num_ooms, 0);
    for (int i = 0; i < 4; i++) ASSERT_OK(ck_free(p, big[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Holes that cannot be reused as they are: the pool must unmap cached
 * memory to map the bigger blocks, and never exceed the budget doing it. */
START_TEST(t_budget_pressure_unmaps) {
    ck_pool *p = open_pool(_i, "budget=64M");
    if (!p) return;
    const uint64_t budget = 64 * MiB;
    void *blk[8];
    for (int i = 0; i < 8; i++) ASSERT_OK(ck_malloc(p, &blk[i], 8 * MiB, NULL));
    for (int i = 0; i < 8; i += 2) ASSERT_OK(ck_free(p, blk[i], NULL)); /* 4 separate holes */
    ck_stats s0 = stats_of(p);
    ck_assert_uint_eq((uint64_t)s0.physical_bytes.current, budget);
    void *big[2];
    for (int i = 0; i < 2; i++) {
        ck_status st = ck_malloc(p, &big[i], 16 * MiB, NULL);
        ck_assert_msg(st == CK_OK, "16 MiB block %d with 32 MiB cached in 8 MiB holes: %s (%s)", i,
                      ck_status_str(st), ck_last_error());
        write_block(p, _i, big[i], 16 * MiB, 60u + (unsigned)i);
    }
    ck_stats s = stats_of(p);
    ck_assert_uint_le((uint64_t)s.physical_bytes.peak, budget);
    ck_assert_uint_gt(s.num_unmap_calls, s0.num_unmap_calls);
    ck_assert_uint_ge(s.num_alloc_retries, 1);
    ck_assert_uint_eq(s.num_ooms, 0);
    /* The live 8 MiB blocks kept their contents' addresses; all of the budget is live now. */
    ck_assert_int_eq(s.allocated_bytes.current, (int64_t)budget);
    void *x;
    ck_assert_int_eq(ck_malloc(p, &x, 16 * MiB, NULL), CK_ERR_NOMEM);
    for (int i = 0; i < 2; i++) check_block(p, _i, big[i], 16 * MiB, 60u + (unsigned)i);
    for (int i = 1; i < 8; i += 2) ASSERT_OK(ck_free(p, blk[i], NULL));
    for (int i = 0; i < 2; i++) ASSERT_OK(ck_free(p, big[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- trim and release ---------------------------------------------------- */

/* Bytes of the distinct chunks that live blocks overlap. */
static uint64_t chunk_bytes(void *const *ptr, const size_t *size, int n) {
    uintptr_t seen[256];
    int ns = 0;
    for (int i = 0; i < n; i++) {
        if (!ptr[i]) continue;
        uintptr_t first = (uintptr_t)ptr[i] / CHUNK, last = ((uintptr_t)ptr[i] + size[i] - 1) / CHUNK;
        for (uintptr_t c = first; c <= last; c++) {
            int dup = 0;
            for (int k = 0; k < ns; k++) dup |= seen[k] == c;
            if (!dup && ns < 256) seen[ns++] = c;
        }
    }
    return (uint64_t)ns * CHUNK;
}

START_TEST(t_trim) {
    ck_pool *p = open_pool(_i, NULL);
    if (!p) return;
    /* The small block first, so its page and the 4 MiB blocks sit on chunk boundaries. */
    void *ptr[5];
    size_t size[5] = {4096, 4 * MiB, 4 * MiB, 4 * MiB, 4 * MiB};
    for (int i = 0; i < 5; i++) ASSERT_OK(ck_malloc(p, &ptr[i], size[i], NULL));
    ASSERT_OK(ck_free(p, ptr[2], NULL));
    ASSERT_OK(ck_free(p, ptr[4], NULL));
    ptr[2] = ptr[4] = NULL;
    ck_stats s0 = stats_of(p);
    size_t released = 0;
    ASSERT_OK(ck_trim(p, &released));
    ck_stats s1 = stats_of(p);
    ck_assert_uint_gt(released, 0);
    ck_assert_int_eq(s0.physical_bytes.current - s1.physical_bytes.current, (int64_t)released);
    uint64_t want = chunk_bytes(ptr, size, 5);
    ck_assert_msg((uint64_t)s1.physical_bytes.current == want,
                  "after trim physical is %lld B, live blocks' chunks are %llu B",
                  (long long)s1.physical_bytes.current, (unsigned long long)want);
    ck_assert_int_eq(s1.mapped_bytes.current, s1.physical_bytes.current);
    ck_assert_int_eq(s1.reserved_bytes.current, s1.mapped_bytes.current);
    /* one physical handle per chunk held */
    ck_assert_uint_eq((s1.num_create_calls - s1.num_release_calls) * 2 * MiB,
                      (uint64_t)s1.physical_bytes.current);

    /* A second trim has nothing left to give. */
    ASSERT_OK(ck_trim(p, &released));
    ck_assert_uint_eq(released, 0);

    /* The pool keeps working after a trim, live data untouched. */
    write_block(p, _i, ptr[1], size[1], 7);
    void *again;
    ASSERT_OK(ck_malloc(p, &again, 8 * MiB, NULL));
    write_block(p, _i, again, 8 * MiB, 8);
    check_block(p, _i, ptr[1], size[1], 7);
    check_block(p, _i, again, 8 * MiB, 8);
    ASSERT_OK(ck_free(p, again, NULL));

    /* Everything freed and trimmed: no physical memory left. */
    for (int i = 0; i < 5; i++)
        if (ptr[i]) ASSERT_OK(ck_free(p, ptr[i], NULL));
    ASSERT_OK(ck_trim(p, &released));
    ck_stats s2 = stats_of(p);
    ck_assert_int_eq(s2.physical_bytes.current, 0);
    ck_assert_int_eq(s2.segment.current, 0);
    ck_assert_uint_eq(s2.num_create_calls, s2.num_release_calls);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

static void eager_workload(ck_pool *p) {
    void *ptr[9];
    size_t size[9] = {4 * MiB, 8 * KiB, 3 * MiB, 4 * MiB, 600, 64 * KiB, 4 * MiB, MiB + 1, 8 * KiB};
    for (int i = 0; i < 9; i++) ASSERT_OK(ck_malloc(p, &ptr[i], size[i], NULL));
    for (int i = 0; i < 9; i++) ASSERT_OK(ck_free(p, ptr[(i * 4) % 9], NULL));
}

/* ckalloc.h: release=eager unmaps free chunks "once free and every stream
 * has passed them; checked on each call into the pool (ck_get_stats
 * included), never blocking". Passing the free takes a round: an event the
 * pool records after the free (on some call) that has completed (seen on a
 * later call). So after the stream is synchronized, a bounded number of
 * calls, each after another synchronize, must bring the memory back. */
static ck_stats settle(ck_pool *p, int rounds) {
    ck_stats s = stats_of(p);
    for (int i = 0; i < rounds && s.physical_bytes.current != 0; i++) {
        ASSERT_OK(ck_stream_synchronize(p, NULL));
        s = stats_of(p);
    }
    return s;
}

/* Eager release gives memory back without ck_trim; pressure keeps it. */
START_TEST(t_eager_releases) {
    ck_pool *p = open_pool(_i, "release=eager");
    if (!p) return;
    eager_workload(p);
    ck_stats s = settle(p, 3);
    ck_assert_uint_gt(s.num_unmap_calls, 0);
    ck_assert_int_lt(s.physical_bytes.current, s.physical_bytes.peak);
    ck_assert_int_eq(s.allocated_bytes.current, 0);
    /* And again, now that the pool has been through it once. */
    eager_workload(p);
    ck_stats s2 = settle(p, 3);
    ck_assert_uint_gt(s2.num_unmap_calls, s.num_unmap_calls);
    ck_assert_int_lt(s2.physical_bytes.current, s2.physical_bytes.peak);

    /* The same workload on a pressure pool keeps everything cached. */
    ck_pool *q = open_pool(_i, NULL);
    eager_workload(q);
    ck_stats t = settle(q, 3);
    eager_workload(q);
    t = settle(q, 3);
    ck_assert_uint_eq(t.num_unmap_calls, 0);
    ck_assert_int_eq(t.physical_bytes.current, t.physical_bytes.peak);
    ck_assert_int_lt(s2.physical_bytes.current, t.physical_bytes.current);
    ASSERT_OK(ck_pool_destroy(q));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Everything freed, streams passed: nothing physical may be left. */
START_TEST(t_eager_returns_to_zero) {
    ck_pool *p = open_pool(_i, "release=eager");
    if (!p) return;
    eager_workload(p);
    ck_stats s = settle(p, 3);
    ck_assert_msg(s.physical_bytes.current == 0,
                  "release=eager: %lld B still physical after everything was freed and the stream "
                  "synchronized, over 3 more pool calls (segments %lld), without ck_trim",
                  (long long)s.physical_bytes.current, (long long)s.segment.current);
    ck_assert_int_eq(s.segment.current, 0);
    ck_assert_int_eq(s.inactive_split_bytes.current, 0);
    /* Also with a block freed on a second stream. */
    ck_stream st;
    ASSERT_OK(ck_stream_create(p, &st));
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 6 * MiB, st));
    ASSERT_OK(ck_free(p, x, st));
    ck_stats s1 = stats_of(p);
    for (int i = 0; i < 3 && s1.physical_bytes.current != 0; i++) {
        ASSERT_OK(ck_stream_synchronize(p, st));
        s1 = stats_of(p);
    }
    ck_assert_int_eq(s1.physical_bytes.current, 0);
    ASSERT_OK(ck_stream_destroy(p, st));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* On the host backend unmapped memory faults on touch, as on a GPU. */
static int child_touch(volatile unsigned char *addr) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGBUS, &sa, NULL);
        addr[0] = 0x42;
        _exit(addr[0] == 0x42 ? 0 : 3);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

START_TEST(t_touch_after_trim_faults) {
    ck_pool *p = open_pool(V_HOST, NULL);
    void *a, *b;
    ASSERT_OK(ck_malloc(p, &a, 8 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, &b, 8 * MiB, NULL));
    memset(a, 1, 8 * MiB);
    /* Control: writing live memory in a child is fine. */
    int status = child_touch((volatile unsigned char *)a + 5 * MiB);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child touching live memory: %#x",
                  status);
    ASSERT_OK(ck_free(p, a, NULL));
    size_t released = 0;
    ASSERT_OK(ck_trim(p, &released));
    ck_assert_uint_ge(released, 8 * MiB);
    status = child_touch((volatile unsigned char *)a + 5 * MiB);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
                  "child writing trimmed memory was not killed by SIGSEGV (status %#x)", status);
    /* b is untouched by the trim. */
    memset(b, 2, 8 * MiB);
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- trace -------------------------------------------------------------- */

START_TEST(t_trace) {
    char *path = temp_path("ck_pool_trace");
    char extra[4200];
    snprintf(extra, sizeof extra, "budget=16M,trace=%s", path);
    ck_pool *p = open_pool(_i, extra);
    if (!p) {
        unlink(path);
        free(path);
        return;
    }
    enum { N = 6 };
    static const size_t sizes[N] = {100, 4096, 3 * MiB, 513, 2 * MiB, 77777};
    void *ptr[N];
    for (int i = 0; i < N; i++) ASSERT_OK(ck_malloc(p, &ptr[i], sizes[i], NULL));
    for (int i = 0; i < N; i += 2) ASSERT_OK(ck_free(p, ptr[i], NULL));
    void *x;
    ck_assert_int_eq(ck_malloc(p, &x, 32 * MiB, NULL), CK_ERR_NOMEM);
    ASSERT_OK(ck_pool_destroy(p)); /* three blocks still live */

    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "Thread,Time,Action,Pointer,Size,Stream\n");
    int nalloc = 0, nfree = 0, nfail = 0, rows = 0;
    while (fgets(line, sizeof line, f)) {
        rows++;
        char thread[64], time[64], action[64];
        unsigned long long ptrv = 0, sizev = 0, streamv = 0;
        int got = sscanf(line, "%63[^,],%63[^,],%63[^,],%llx,%llu,%llx", thread, time, action,
                         &ptrv, &sizev, &streamv);
        ck_assert_msg(got == 6, "malformed trace row '%s'", line);
        if (strcmp(action, "allocate") == 0) {
            ck_assert_int_lt(nalloc, N);
            ck_assert_uint_eq(ptrv, (uintptr_t)ptr[nalloc]);
            ck_assert_uint_eq(sizev, sizes[nalloc]);
            nalloc++;
        } else if (strcmp(action, "free") == 0) {
            ck_assert_uint_eq(ptrv, (uintptr_t)ptr[nfree * 2]);
            ck_assert_uint_eq(sizev, sizes[nfree * 2]);
            nfree++;
        } else if (strcmp(action, "allocate failure") == 0) {
            ck_assert_uint_eq(sizev, 32 * MiB);
            nfail++;
        } else {
            ck_abort_msg("unexpected action '%s'", action);
        }
        ck_assert_uint_eq(streamv, 0);
    }
    fclose(f);
    ck_assert_int_eq(nalloc, N);
    ck_assert_int_eq(nfree, N / 2);
    ck_assert_int_eq(nfail, 1);
    ck_assert_int_eq(rows, N + N / 2 + 1);
    unlink(path);
    free(path);
}
END_TEST

START_TEST(t_trace_unwritable) {
    ck_pool *p = NULL;
    ck_status st = ck_pool_create_conf(&p, "backend=host,host_mem=1G,trace=/nonexistent-dir/x/t.csv");
    ck_assert_int_eq(st, CK_ERR_IO);
    ck_assert_ptr_null(p);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "/nonexistent-dir/x/t.csv"));
}
END_TEST

/* ---- destroy with live blocks --------------------------------------------- */

START_TEST(t_destroy_live) {
    ck_pool *p = open_pool(_i, NULL);
    if (!p) return;
    void *x;
    for (int i = 0; i < 40; i++) ASSERT_OK(ck_malloc(p, &x, (size_t)(i * 37 + 1) * 1000, NULL));
    ASSERT_OK(ck_malloc(p, &x, 40 * MiB, NULL));
    ASSERT_OK(ck_record_stream(p, x, NULL));
    ck_stream s;
    ASSERT_OK(ck_stream_create(p, &s));
    ASSERT_OK(ck_malloc(p, &x, 5 * MiB, s));
    ASSERT_OK(ck_record_stream(p, x, NULL));
    ASSERT_OK(ck_free(p, x, s)); /* pending on the default stream */
    ASSERT_OK(ck_stream_destroy(p, s));
    ASSERT_OK(ck_pool_destroy(p)); /* ASan/LSan: nothing leaks */
}
END_TEST

int main(void) {
    Suite *s = suite_create("pool");
    TCase *tc = ck_test_tcase(s, "pool", 120);
    tcase_add_loop_test(tc, t_sizes, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_reuse_same_stream, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_coalesce_large, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_coalesce_small, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_invalid_sizes, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_bad_frees, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_budget_nomem, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_budget_pressure_all_free, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_budget_pressure_unmaps, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_trim, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_eager_releases, 0, NVARIANTS);
    tcase_add_loop_test(tc, t_eager_returns_to_zero, 0, NVARIANTS);
    tcase_add_test(tc, t_touch_after_trim_faults);
    tcase_add_loop_test(tc, t_trace, 0, NVARIANTS);
    tcase_add_test(tc, t_trace_unwritable);
    tcase_add_loop_test(tc, t_destroy_live, 0, NVARIANTS);
    return ck_test_run(s);
}
