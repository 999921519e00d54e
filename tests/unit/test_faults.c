/* Fault injection on the host backend (fault_map, fault_create, fault_copy):
 * for every N up to what a fixed workload needs, the Nth backend call fails;
 * exactly one operation must fail cleanly (CK_ERR_BACKEND, "injected"), the
 * stats must stay consistent, nothing may leak, and retrying succeeds. */
#include "testutil.h"

#include "ckalloc/ckalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the workload --------------------------------------------------------- */

enum { OP_MALLOC, OP_FREE, OP_TRIM };
typedef struct op {
    int kind;
    int slot;
    size_t size;
} op;

#define M(s, n) {OP_MALLOC, s, n}
#define F(s) {OP_FREE, s, 0}
#define T {OP_TRIM, 0, 0}

/* Mixed small and large requests that need many maps, a trim, and then one
 * request spanning two unmapped runs around a mapped one (two maps in one
 * malloc, so a failure of the second must undo the first). */
static const op workload[] = {
    M(0, 4 * MiB), M(1, 4 * MiB), M(2, 4 * MiB), M(3, 4 * MiB), /* neighbours */
    M(4, 4 * KiB), M(5, 600 * KiB), M(6, 600 * KiB), M(7, 600 * KiB), M(8, 600 * KiB),
    M(9, 3 * MiB), M(10, MiB + 1), M(11, 100), M(12, 16 * MiB),
    F(0), F(2), T, F(1),         /* a0, a2 unmapped; a1 still mapped between them */
    M(13, 12 * MiB),             /* maps a0's and a2's chunks again */
    F(5), F(6), F(7), F(8), T,   /* a small page empties */
    M(14, 900 * KiB), M(15, 900 * KiB), M(16, 900 * KiB), M(17, 8 * MiB), M(18, 512),
    F(12), F(17), M(19, 30 * MiB), M(20, 2 * MiB),
};
#define NOPS (sizeof workload / sizeof workload[0])
#define NSLOTS 21

typedef struct live {
    void *ptr[NSLOTS];
    size_t size[NSLOTS];
} live;

/* Also check that the call counters balance against the chunks held (one
 * handle each): num_create_calls - num_release_calls == physical / 2 MiB,
 * and every chunk unmapped was mapped by some map call. Kept apart so the other properties are checked even when
 * these fail. */
static int check_counters;
static int allow_orphan; /* fault_release: one handle may wait for a later release */

static void check_consistent(ck_pool *p, const live *l, const char *when) {
    ck_stats s = stats_of(p);
    int64_t sum_round = 0, sum_req = 0, n = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (l->ptr[i]) {
            sum_round += (int64_t)((l->size[i] + 511) / 512 * 512);
            sum_req += (int64_t)l->size[i];
            n++;
        }
    ck_assert_msg(s.allocated_bytes.current == sum_round, "%s: allocated_bytes %lld, live %lld",
                  when, (long long)s.allocated_bytes.current, (long long)sum_round);
    ck_assert_msg(s.requested_bytes.current == sum_req, "%s: requested_bytes %lld, live %lld", when,
                  (long long)s.requested_bytes.current, (long long)sum_req);
    ck_assert_msg(s.allocation.current == n, "%s: allocation %lld, live %lld", when,
                  (long long)s.allocation.current, (long long)n);
    /* An orphan (a handle whose release failed) is physical but not mapped
     * until the next trim releases it: at most one here (faults fire once). */
    int64_t orphan = s.physical_bytes.current - s.mapped_bytes.current;
    ck_assert_msg(orphan == 0 || (allow_orphan && orphan == (int64_t)(2 * MiB)),
                  "%s: physical %lld != mapped %lld", when, (long long)s.physical_bytes.current,
                  (long long)s.mapped_bytes.current);
    ck_assert_msg(s.reserved_bytes.current == s.mapped_bytes.current,
                  "%s: reserved %lld != mapped %lld", when, (long long)s.reserved_bytes.current,
                  (long long)s.mapped_bytes.current);
    ck_assert_msg(s.mapped_bytes.current >= sum_round, "%s: mapped %lld < live %lld", when,
                  (long long)s.mapped_bytes.current, (long long)sum_round);
    if (!check_counters) return;
    int64_t chunks = s.physical_bytes.current / (int64_t)(2 * MiB);
    ck_assert_msg((int64_t)(s.num_create_calls - s.num_release_calls) == chunks,
                  "%s: num_create_calls %llu - num_release_calls %llu != %lld chunks held", when,
                  (unsigned long long)s.num_create_calls, (unsigned long long)s.num_release_calls,
                  (long long)chunks);
    ck_assert_msg(s.num_unmap_calls == s.num_release_calls,
                  "%s: num_unmap_calls %llu != num_release_calls %llu", when,
                  (unsigned long long)s.num_unmap_calls, (unsigned long long)s.num_release_calls);
    ck_assert_msg(s.num_map_calls <= s.num_create_calls && (s.num_map_calls > 0) == (s.num_create_calls > 0),
                  "%s: num_map_calls %llu for %llu handles created", when,
                  (unsigned long long)s.num_map_calls, (unsigned long long)s.num_create_calls);
}

/* Runs the workload; returns how many operations failed (each retried once,
 * and the retry must succeed). Every live block gets a byte pattern written
 * at both ends, checked before it is freed. */
static int run_workload(ck_pool *p, live *l, const char *what, uint64_t n) {
    int failures = 0;
    memset(l, 0, sizeof *l);
    for (size_t k = 0; k < NOPS; k++) {
        const op *o = &workload[k];
        char when[128];
        snprintf(when, sizeof when, "%s=%llu, op %zu", what, (unsigned long long)n, k);
        if (o->kind == OP_MALLOC) {
            void *x = NULL;
            ck_status st = ck_malloc(p, &x, o->size, NULL);
            if (st != CK_OK) {
                ck_assert_msg(st == CK_ERR_BACKEND, "%s: malloc %zu: %s (%s)", when, o->size,
                              ck_status_str(st), ck_last_error());
                ck_assert_msg(strstr(ck_last_error(), "injected") != NULL,
                              "%s: sentence '%s' does not say the failure was injected", when,
                              ck_last_error());
                failures++;
                check_consistent(p, l, when);
                st = ck_malloc(p, &x, o->size, NULL); /* the retry */
                ck_assert_msg(st == CK_OK, "%s: retry of malloc %zu: %s (%s)", when, o->size,
                              ck_status_str(st), ck_last_error());
            }
            unsigned char *b = x;
            b[0] = (unsigned char)(k + 1);
            b[o->size - 1] = (unsigned char)(k + 101);
            l->ptr[o->slot] = x;
            l->size[o->slot] = o->size;
        } else if (o->kind == OP_FREE) {
            unsigned char *b = l->ptr[o->slot];
            ck_assert_ptr_nonnull(b);
            ck_assert_msg(b[0] != 0 && b[l->size[o->slot] - 1] != 0, "%s: block contents lost",
                          when);
            ASSERT_OK(ck_free(p, b, NULL));
            l->ptr[o->slot] = NULL;
        } else {
            ASSERT_OK(ck_trim(p, NULL));
        }
        check_consistent(p, l, when);
    }
    return failures;
}

static void finish(ck_pool *p, live *l, const char *when) {
    for (int i = 0; i < NSLOTS; i++)
        if (l->ptr[i]) {
            ASSERT_OK(ck_free(p, l->ptr[i], NULL));
            l->ptr[i] = NULL;
        }
    ASSERT_OK(ck_trim(p, NULL));
    ck_stats s = stats_of(p);
    ck_assert_msg(s.physical_bytes.current == 0 && s.segment.current == 0,
                  "%s: after freeing all and trimming: physical %lld, segments %lld", when,
                  (long long)s.physical_bytes.current, (long long)s.segment.current);
    ck_assert_msg(s.active_bytes.current == 0 && s.inactive_split_bytes.current == 0,
                  "%s: active %lld, inactive_split %lld", when, (long long)s.active_bytes.current,
                  (long long)s.inactive_split_bytes.current);
    ASSERT_OK(ck_pool_destroy(p));
}

static ck_pool *pool_with(const char *key, uint64_t n) {
    char extra[128];
    snprintf(extra, sizeof extra, "%s=%llu", key, (unsigned long long)n);
    return host_pool(extra);
}

/* How many map / create calls the workload makes without faults. */
static void clean_counts(uint64_t *maps, uint64_t *creates) {
    ck_pool *p = pool_with("fault_map", 0);
    live l;
    ck_assert_int_eq(run_workload(p, &l, "clean", 0), 0);
    ck_stats s = stats_of(p);
    *maps = s.num_map_calls;
    *creates = s.num_create_calls;
    finish(p, &l, "clean");
}

/* Unmap and release failures fail no operation: a chunk whose unmap fails
 * stays mapped and idle (tried again at once, then later), a handle whose
 * release fails is kept as an orphan, still counted in physical_bytes, and
 * released at the next trim. Each fault point of the clean run in turn:
 * every operation succeeds, stats stay consistent after each, and
 * everything is given back at the end (finish: physical 0). */
static void fault_sweep_silent(const char *key) {
    check_counters = 0;
    allow_orphan = strcmp(key, "fault_release") == 0;
    ck_pool *p = pool_with("fault_map", 0);
    live l;
    ck_assert_int_eq(run_workload(p, &l, "clean", 0), 0);
    ck_stats s = stats_of(p);
    uint64_t k = strcmp(key, "fault_unmap") == 0 ? s.num_unmap_calls : s.num_release_calls;
    finish(p, &l, "clean");
    ck_assert_uint_ge(k, 4); /* the workload's trims must give some back */
    for (uint64_t n = 1; n <= k + 2; n++) {
        p = pool_with(key, n);
        ck_assert_int_eq(run_workload(p, &l, key, n), 0);
        char when[64];
        snprintf(when, sizeof when, "%s=%llu", key, (unsigned long long)n);
        finish(p, &l, when);
    }
}

START_TEST(t_fault_unmap) { fault_sweep_silent("fault_unmap"); }
END_TEST

START_TEST(t_fault_release) { fault_sweep_silent("fault_release"); }
END_TEST

/* counters: also check the call counters (see check_counters). */
static void fault_sweep(const char *key, int use_creates, int counters) {
    check_counters = counters;
    uint64_t maps, creates;
    clean_counts(&maps, &creates);
    uint64_t k = use_creates ? creates : maps;
    ck_assert_uint_ge(k, 8); /* the workload must need several */
    for (uint64_t n = 1; n <= k; n++) {
        ck_pool *p = pool_with(key, n);
        live l;
        int failures = run_workload(p, &l, key, n);
        ck_assert_msg(failures == 1, "%s=%llu: %d operations failed, expected exactly 1", key,
                      (unsigned long long)n, failures);
        char when[64];
        snprintf(when, sizeof when, "%s=%llu", key, (unsigned long long)n);
        finish(p, &l, when);
    }
    /* Past the last call: nothing fails. */
    ck_pool *p = pool_with(key, k + 50);
    live l;
    ck_assert_int_eq(run_workload(p, &l, key, k + 50), 0);
    finish(p, &l, "past the end");
}

START_TEST(t_fault_map) { fault_sweep("fault_map", 0, 0); }
END_TEST

START_TEST(t_fault_create) { fault_sweep("fault_create", 1, 0); }
END_TEST

START_TEST(t_fault_map_counters) { fault_sweep("fault_map", 0, 1); }
END_TEST

START_TEST(t_fault_create_counters) { fault_sweep("fault_create", 1, 1); }
END_TEST

/* Four 4 MiB blocks a[0..3]; a[0] and a[2] are freed and trimmed (unmapped),
 * then a[1] is freed and stays mapped: 12 MiB at a[0] needs two new maps. */
static void two_runs_apart(ck_pool *p, void *a[4]) {
    for (int i = 0; i < 4; i++) ASSERT_OK(ck_malloc(p, &a[i], 4 * MiB, NULL));
    ASSERT_OK(ck_free(p, a[0], NULL));
    ASSERT_OK(ck_free(p, a[2], NULL));
    ASSERT_OK(ck_trim(p, NULL));
    ASSERT_OK(ck_free(p, a[1], NULL));
}

/* The two-run malloc: when its second map fails, the first run's segment is
 * released again and the stats show no trace of the attempt but the calls. */
START_TEST(t_fault_second_run_rolls_back) {
    /* Count maps up to the 12 MiB request, then fail the second map inside it. */
    uint64_t maps_before = 0;
    {
        ck_pool *p = pool_with("fault_map", 0);
        live l;
        memset(&l, 0, sizeof l);
        void *a[4];
        two_runs_apart(p, a);
        maps_before = stats_of(p).num_map_calls;
        void *big;
        ASSERT_OK(ck_malloc(p, &big, 12 * MiB, NULL));
        ck_assert_ptr_eq(big, a[0]);
        ck_assert_uint_eq(stats_of(p).num_map_calls, maps_before + 2);
        ASSERT_OK(ck_free(p, big, NULL));
        ASSERT_OK(ck_free(p, a[3], NULL));
        finish(p, &l, "two-run probe");
    }
    ck_pool *p = pool_with("fault_map", maps_before + 2);
    void *a[4];
    two_runs_apart(p, a);
    ck_stats s0 = stats_of(p);
    void *big = NULL;
    ck_assert_int_eq(ck_malloc(p, &big, 12 * MiB, NULL), CK_ERR_BACKEND);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "injected"));
    ck_stats s1 = stats_of(p);
    ck_assert_int_eq(s1.physical_bytes.current, s0.physical_bytes.current);
    ck_assert_int_eq(s1.segment.current, s0.segment.current);
    ck_assert_int_eq(s1.allocated_bytes.current, s0.allocated_bytes.current);
    ASSERT_OK(ck_malloc(p, &big, 12 * MiB, NULL));
    ck_assert_ptr_eq(big, a[0]);
    memset(big, 0x33, 12 * MiB);
    ASSERT_OK(ck_free(p, big, NULL));
    ASSERT_OK(ck_free(p, a[3], NULL));
    live l;
    memset(&l, 0, sizeof l);
    finish(p, &l, "two-run");
}
END_TEST

/* fault_copy: the Nth ck_memcpy_async fails, once; the retry runs. */
START_TEST(t_fault_copy) {
    enum { K = 8 };
    const size_t piece = 128 * KiB;
    unsigned char *src = malloc(K * piece), *back = malloc(K * piece);
    ck_assert_ptr_nonnull(src);
    ck_assert_ptr_nonnull(back);
    for (size_t i = 0; i < K * piece; i++) src[i] = (unsigned char)(i * 7 + (i >> 11));
    for (uint64_t n = 1; n <= K + 1; n++) {
        ck_pool *p = pool_with("fault_copy", n);
        void *dev;
        ASSERT_OK(ck_malloc(p, &dev, K * piece, NULL));
        int failures = 0;
        for (int k = 0; k < K; k++) {
            ck_status st = ck_memcpy_async(p, (char *)dev + k * piece, src + k * piece, piece, NULL);
            if (st != CK_OK) {
                ck_assert_msg(st == CK_ERR_BACKEND, "fault_copy=%llu: copy %d: %s",
                              (unsigned long long)n, k, ck_status_str(st));
                ck_assert_ptr_nonnull(strstr(ck_last_error(), "injected"));
                failures++;
                ASSERT_OK(ck_memcpy_async(p, (char *)dev + k * piece, src + k * piece, piece, NULL));
            }
        }
        /* Copy back with one call (it may be the faulting one when n == K + 1). */
        memset(back, 0, K * piece);
        ck_status st = ck_memcpy_async(p, back, dev, K * piece, NULL);
        if (st != CK_OK) {
            ck_assert_int_eq(st, CK_ERR_BACKEND);
            failures++;
            ASSERT_OK(ck_memcpy_async(p, back, dev, K * piece, NULL));
        }
        ASSERT_OK(ck_stream_synchronize(p, NULL));
        ck_assert_msg(failures == 1, "fault_copy=%llu: %d copies failed", (unsigned long long)n,
                      failures);
        ck_assert_msg(memcmp(back, src, K * piece) == 0, "fault_copy=%llu: data differs",
                      (unsigned long long)n);
        ck_stats s = stats_of(p);
        ck_assert_int_eq(s.allocated_bytes.current, (int64_t)(K * piece));
        ASSERT_OK(ck_free(p, dev, NULL));
        ASSERT_OK(ck_pool_destroy(p));
    }
    free(src);
    free(back);
}
END_TEST

int main(void) {
    Suite *s = suite_create("faults");
    TCase *tc = ck_test_tcase(s, "faults", 240);
    tcase_add_test(tc, t_fault_map);
    tcase_add_test(tc, t_fault_create);
    tcase_add_test(tc, t_fault_map_counters);
    tcase_add_test(tc, t_fault_create_counters);
    tcase_add_test(tc, t_fault_second_run_rolls_back);
    tcase_add_test(tc, t_fault_copy);
    tcase_add_test(tc, t_fault_unmap);
    tcase_add_test(tc, t_fault_release);
    return ck_test_run(s);
}
