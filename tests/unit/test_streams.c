/* Streams, events and copies on the host backend, and the allocator's
 * cross-stream rules (ck_record_stream, reuse across streams).
 *
 * Ordering is made deterministic with a "gate": a stream copies from a page
 * that is PROT_NONE; the copy faults in the stream's worker thread and a
 * SIGSEGV handler holds that thread until the test opens the gate (makes
 * the page readable), so the stream's later work is provably unfinished
 * while the test checks things. */
#include "testutil.h"

#include "ckalloc/ckalloc.h"
#include "ckalloc/replay.h"
#include "cuda_abi.h" /* the stand-in driver's entry point types */
#include "pool.h"     /* white box: ck__pool_check (tests link ckalloc_internal) */

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static unsigned char *pattern_buf(size_t n, unsigned seed) {
    unsigned char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(i * 31u + seed + (i >> 10));
    return b;
}


/* ---- copies and events ------------------------------------------------------- */

START_TEST(t_copy_order_one_stream) {
    ck_pool *p = host_pool(NULL);
    ck_stream s;
    ASSERT_OK(ck_stream_create(p, &s));
    const size_t n = 8 * MiB;
    unsigned char *a = pattern_buf(n, 1), *c = calloc(1, n);
    ck_assert_ptr_nonnull(c);
    void *b;
    ASSERT_OK(ck_malloc(p, &b, n, s));
    ASSERT_OK(ck_memset_async(p, b, 0x11, n, s));
    ASSERT_OK(ck_memcpy_async(p, b, a, n, s));
    ASSERT_OK(ck_memcpy_async(p, c, b, n, s));
    ASSERT_OK(ck_stream_synchronize(p, s));
    ck_assert_int_eq(memcmp(c, a, n), 0);
    /* A memset ordered after the copy wins. */
    ASSERT_OK(ck_memcpy_async(p, b, a, n, s));
    ASSERT_OK(ck_memset_async(p, b, 0x5C, n / 2, s));
    ASSERT_OK(ck_memcpy_async(p, c, b, n, s));
    ASSERT_OK(ck_stream_synchronize(p, s));
    for (size_t i = 0; i < n / 2; i++)
        if (c[i] != 0x5C) ck_abort_msg("byte %zu is %#x after memset", i, c[i]);
    ck_assert_int_eq(memcmp(c + n / 2, a + n / 2, n / 2), 0);
    /* Zero-length operations are accepted and do nothing. */
    ASSERT_OK(ck_memcpy_async(p, c, a, 0, s));
    ASSERT_OK(ck_memset_async(p, b, 0, 0, s));
    ASSERT_OK(ck_free(p, b, s));
    ASSERT_OK(ck_stream_destroy(p, s));
    ASSERT_OK(ck_pool_destroy(p));
    free(a);
    free(c);
}
END_TEST

START_TEST(t_wait_event_orders_streams) {
    ck_pool *p = host_pool(NULL);
    ck_stream s1, s2;
    ck_event e, done;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    ASSERT_OK(ck_event_create(p, &e));
    ASSERT_OK(ck_event_create(p, &done));
    const size_t n = 4 * MiB;
    unsigned char *a = pattern_buf(n, 2), *c = calloc(1, n),
                  *sink = malloc((size_t)sysconf(_SC_PAGESIZE));
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(sink);
    void *b;
    ASSERT_OK(ck_malloc(p, &b, n, s1));
    gate_create();
    gate_block(p, s1, sink);                       /* s1 is held here */
    ASSERT_OK(ck_memcpy_async(p, b, a, n, s1));    /* A -> B on s1 */
    ASSERT_OK(ck_event_record(p, e, s1));
    ASSERT_OK(ck_stream_wait_event(p, s2, e));     /* s2 waits for s1's copy */
    ASSERT_OK(ck_memcpy_async(p, c, b, n, s2));    /* B -> C on s2 */
    ASSERT_OK(ck_event_record(p, done, s2));
    /* s1 is held, so s2 cannot have passed its wait. */
    ck_assert_int_eq(ck_event_query(p, e), CK_ERR_NOT_READY);
    ck_assert_int_eq(ck_event_query(p, done), CK_ERR_NOT_READY);
    float ms;
    ck_assert_int_eq(ck_event_elapsed_ms(p, e, done, &ms), CK_ERR_NOT_READY);
    for (size_t i = 0; i < n; i++)
        if (c[i] != 0) ck_abort_msg("s2 copied byte %zu before s1's copy was done", i);
    gate_release();
    ASSERT_OK(ck_stream_synchronize(p, s2));
    ck_assert_int_eq(ck_event_query(p, done), CK_OK);
    ck_assert_int_eq(ck_event_query(p, e), CK_OK);
    ck_assert_int_eq(memcmp(c, a, n), 0);
    ASSERT_OK(ck_event_elapsed_ms(p, e, done, &ms));
    ck_assert(ms >= 0.0f);
    ASSERT_OK(ck_stream_synchronize(p, s1));
    gate_destroy();
    ASSERT_OK(ck_free(p, b, s1));
    ASSERT_OK(ck_event_destroy(p, e));
    ASSERT_OK(ck_event_destroy(p, done));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
    free(a);
    free(c);
    free(sink);
}
END_TEST

START_TEST(t_event_query) {
    ck_pool *p = host_pool(NULL);
    ck_stream s;
    ck_event e;
    ASSERT_OK(ck_stream_create(p, &s));
    ASSERT_OK(ck_event_create(p, &e));
    /* Never recorded: complete, as in CUDA. */
    ck_assert_int_eq(ck_event_query(p, e), CK_OK);
    ASSERT_OK(ck_event_synchronize(p, e));

    /* Ungated work: either answer is allowed before the sync, only OK after. */
    const size_t n = 16 * MiB;
    unsigned char *a = pattern_buf(n, 3), *c = malloc(n);
    ck_assert_ptr_nonnull(c);
    ASSERT_OK(ck_memcpy_async(p, c, a, n, s));
    ASSERT_OK(ck_event_record(p, e, s));
    ck_status q = ck_event_query(p, e);
    ck_assert_msg(q == CK_OK || q == CK_ERR_NOT_READY, "query gave %s", ck_status_str(q));
    ASSERT_OK(ck_stream_synchronize(p, s));
    ck_assert_int_eq(ck_event_query(p, e), CK_OK);

    /* Gated: NOT_READY for certain, until released; event_synchronize waits. */
    unsigned char *sink = malloc((size_t)sysconf(_SC_PAGESIZE));
    gate_create();
    gate_block(p, s, sink);
    ASSERT_OK(ck_event_record(p, e, s)); /* re-recording: the new record counts */
    ck_assert_int_eq(ck_event_query(p, e), CK_ERR_NOT_READY);
    ck_assert_int_eq(ck_event_query(p, e), CK_ERR_NOT_READY);
    gate_release();
    ASSERT_OK(ck_event_synchronize(p, e));
    ck_assert_int_eq(ck_event_query(p, e), CK_OK);
    for (size_t i = 0; i < gate_bytes(); i++) ck_assert_uint_eq(sink[i], 0x6B);
    gate_destroy();
    ASSERT_OK(ck_event_destroy(p, e));
    ASSERT_OK(ck_stream_destroy(p, s));
    ASSERT_OK(ck_pool_destroy(p));
    free(a);
    free(c);
    free(sink);
}
END_TEST

/* sim_clock=1, sim_bandwidth=1G: a 1 MiB copy takes 1 MiB / (1 GiB/s). */
START_TEST(t_sim_clock) {
    ck_pool *p = host_pool("sim_clock=1,sim_bandwidth=1G");
    const double one_copy_ms = 1000.0 / 1024.0; /* 0.9765625 */
    ck_stream s1, s2, s3;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    ASSERT_OK(ck_stream_create(p, &s3));
    ck_event start, end, after_wait, after_copy2, s3_start, s3_end;
    ck_event *evs[] = {&start, &end, &after_wait, &after_copy2, &s3_start, &s3_end};
    for (size_t i = 0; i < sizeof evs / sizeof *evs; i++) ASSERT_OK(ck_event_create(p, evs[i]));
    void *dev;
    ASSERT_OK(ck_malloc(p, &dev, 2 * MiB, s1));
    unsigned char *host = pattern_buf(2 * MiB, 4);

    ASSERT_OK(ck_event_record(p, start, s1));
    ASSERT_OK(ck_memcpy_async(p, dev, host, MiB, s1));
    ASSERT_OK(ck_event_record(p, end, s1));
    ASSERT_OK(ck_stream_wait_event(p, s2, end));
    ASSERT_OK(ck_event_record(p, after_wait, s2));
    ASSERT_OK(ck_memcpy_async(p, host + MiB, dev, MiB, s2));
    ASSERT_OK(ck_event_record(p, after_copy2, s2));
    /* s3: an independent half-size copy, not ordered after anything. */
    ASSERT_OK(ck_event_record(p, s3_start, s3));
    ASSERT_OK(ck_memcpy_async(p, (char *)dev + MiB, host, MiB / 2, s3));
    ASSERT_OK(ck_event_record(p, s3_end, s3));
    ASSERT_OK(ck_stream_synchronize(p, s1));
    ASSERT_OK(ck_stream_synchronize(p, s2));
    ASSERT_OK(ck_stream_synchronize(p, s3));

    float ms = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, start, end, &ms));
    ck_assert_msg(fabs(ms - one_copy_ms) <= 1e-3, "1 MiB at 1 GiB/s took %.7f ms, expected %.7f",
                  ms, one_copy_ms);
    float w = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, start, after_wait, &w));
    ck_assert_msg(w >= ms - 1e-6, "s2 resumed at %.7f ms, before the event it waited on (%.7f)",
                  w, ms);
    float c2 = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, start, after_copy2, &c2));
    ck_assert_msg(fabs(c2 - 2 * one_copy_ms) <= 2e-3, "s2's copy ended at %.7f ms, expected %.7f",
                  c2, 2 * one_copy_ms);
    float c3 = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, s3_start, s3_end, &c3));
    ck_assert_msg(fabs(c3 - one_copy_ms / 2) <= 1e-3, "half a MiB took %.7f ms", c3);
    /* Elapsed time is signed: end to start is negative. */
    float back = 0;
    ASSERT_OK(ck_event_elapsed_ms(p, end, start, &back));
    ck_assert(fabs(back + ms) <= 1e-6);
    ck_assert_int_eq(memcmp(host + MiB, host, MiB), 0);

    for (size_t i = 0; i < sizeof evs / sizeof *evs; i++) ASSERT_OK(ck_event_destroy(p, *evs[i]));
    ASSERT_OK(ck_free(p, dev, s1));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_stream_destroy(p, s3));
    ASSERT_OK(ck_pool_destroy(p));
    free(host);
}
END_TEST

/* The simulated host: work queued after a synchronize starts no earlier
 * than the time synchronized to, even on a stream that was idle. */
START_TEST(t_sim_host_time) {
    ck_pool *p = host_pool("sim_clock=1,sim_bandwidth=1G");
    const double one_copy_ms = 1000.0 / 1024.0;
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    ck_event start, end;
    ASSERT_OK(ck_event_create(p, &start));
    ASSERT_OK(ck_event_create(p, &end));
    void *dev;
    ASSERT_OK(ck_malloc(p, &dev, 2 * MiB, s1));
    unsigned char *host = pattern_buf(MiB, 5);
    ASSERT_OK(ck_event_record(p, start, s1));
    ASSERT_OK(ck_memcpy_async(p, dev, host, MiB, s1));
    ASSERT_OK(ck_stream_synchronize(p, s1));
    /* s2 has done nothing: its copy starts when the host queues it. */
    ASSERT_OK(ck_memcpy_async(p, (char *)dev + MiB, host, MiB, s2));
    ASSERT_OK(ck_event_record(p, end, s2));
    ASSERT_OK(ck_stream_synchronize(p, s2));
    float ms = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, start, end, &ms));
    ck_assert_msg(fabs(ms - 2 * one_copy_ms) <= 1e-3,
                  "a copy queued after a synchronize ended at %.7f ms, expected %.7f", ms,
                  2 * one_copy_ms);
    ASSERT_OK(ck_event_destroy(p, start));
    ASSERT_OK(ck_event_destroy(p, end));
    ASSERT_OK(ck_free(p, dev, s1));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
    free(host);
}
END_TEST

/* A wait keeps the time of the record it waits for when the event is
 * recorded again, elsewhere, before the waiting stream gets to it (a stale
 * time made the tier engine's fetches look like stalls, at random). */
START_TEST(t_sim_wait_rerecorded_event) {
    /* Copies to and from the device at 1 GB/s; device to device free. */
    ck_pool *p = host_pool("sim_clock=1,sim_bandwidth=1000T,sim_h2d=1MB,sim_d2h=1GB");
    ck_stream a, b, c;
    ASSERT_OK(ck_stream_create(p, &a));
    ASSERT_OK(ck_stream_create(p, &b));
    ASSERT_OK(ck_stream_create(p, &c));
    ck_event e, b_start, b_end;
    ASSERT_OK(ck_event_create(p, &e));
    ASSERT_OK(ck_event_create(p, &b_start));
    ASSERT_OK(ck_event_create(p, &b_end));
    const size_t big = 96 * MiB;
    void *dev, *d2, *d3;
    ASSERT_OK(ck_malloc(p, &dev, 2 * big, NULL));
    ASSERT_OK(ck_malloc(p, &d2, MiB, NULL));
    ASSERT_OK(ck_malloc(p, &d3, MiB, NULL));
    /* a and c run unordered: each has buffers of its own */
    unsigned char *host = pattern_buf(2 * MiB, 6);
    ASSERT_OK(ck_memset_async(p, dev, 1, 2 * big, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    /* a: 1 MB to the host, 1 ms; then e. */
    ASSERT_OK(ck_memcpy_async(p, host, d2, 1000000, a));
    ASSERT_OK(ck_event_record(p, e, a));
    /* b: a copy that is long in wall time and free in simulated time, then
     * the wait for that record of e. */
    ASSERT_OK(ck_event_record(p, b_start, b));
    ASSERT_OK(ck_memcpy_async(p, (char *)dev + big, dev, big, b));
    ASSERT_OK(ck_stream_wait_event(p, b, e));
    ASSERT_OK(ck_event_record(p, b_end, b));
    /* c: e again, after 1 MB to the device at 1 MB/s (one simulated second):
     * queued while b still copies, so it usually runs before b's wait. */
    ASSERT_OK(ck_memcpy_async(p, d3, host + MiB, 1000000, c));
    ASSERT_OK(ck_event_record(p, e, c));
    ASSERT_OK(ck_stream_synchronize(p, b));
    ASSERT_OK(ck_stream_synchronize(p, c));
    float ms = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, b_start, b_end, &ms));
    ck_assert_msg(fabs(ms - 1.0) <= 1e-3,
                  "b waited until %.4f ms for a record that completed at 1 ms", ms);
    ASSERT_OK(ck_event_destroy(p, e));
    ASSERT_OK(ck_event_destroy(p, b_start));
    ASSERT_OK(ck_event_destroy(p, b_end));
    ASSERT_OK(ck_free(p, dev, NULL));
    ASSERT_OK(ck_free(p, d2, NULL));
    ASSERT_OK(ck_free(p, d3, NULL));
    ASSERT_OK(ck_stream_destroy(p, a));
    ASSERT_OK(ck_stream_destroy(p, b));
    ASSERT_OK(ck_stream_destroy(p, c));
    ASSERT_OK(ck_pool_destroy(p));
    free(host);
}
END_TEST

/* sim_flops: a GEMM replay takes its flops / sim_flops when that is longer
 * than its bytes / sim_bandwidth; without sim_flops, the bytes. */
static float linear_ms(const char *conf, double *flops, double *bytes) {
    ck_pool *p = host_pool(conf);
    enum { M = 256, K = 128, N = 64 };
    float *x, *w, *y;
    ASSERT_OK(ck_malloc(p, (void **)&x, M * K * sizeof(float), NULL));
    ASSERT_OK(ck_malloc(p, (void **)&w, N * K * sizeof(float), NULL));
    ASSERT_OK(ck_malloc(p, (void **)&y, M * N * sizeof(float), NULL));
    memset(x, 0, M * K * sizeof(float));
    memset(w, 0, N * K * sizeof(float));
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t xs[2] = {M, K}, ws[2] = {N, K};
    ck_step *st = ck_recipe_step(&r, CK_OP_LINEAR, CK_DTYPE_F32);
    st->in[0] = ck_recipe_input(&r, x, CK_DTYPE_F32, 2, xs);
    st->in[1] = ck_recipe_input(&r, w, CK_DTYPE_F32, 2, ws);
    double rd = 0, wr = 0;
    ASSERT_OK(ck_recipe_cost(&r, flops, &rd, &wr));
    *bytes = rd + wr;
    ck_event a, z;
    ASSERT_OK(ck_event_create(p, &a));
    ASSERT_OK(ck_event_create(p, &z));
    ASSERT_OK(ck_event_record(p, a, NULL));
    ASSERT_OK(ck_replay(p, &r, y, M * N * sizeof(float), NULL));
    ASSERT_OK(ck_event_record(p, z, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    float ms = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, a, z, &ms));
    ASSERT_OK(ck_event_destroy(p, a));
    ASSERT_OK(ck_event_destroy(p, z));
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_free(p, w, NULL));
    ASSERT_OK(ck_free(p, y, NULL));
    ASSERT_OK(ck_pool_destroy(p));
    return ms;
}

START_TEST(t_sim_flops) {
    double flops = 0, bytes = 0;
    float by_flops = linear_ms("sim_clock=1,sim_bandwidth=1000G,sim_flops=1G", &flops, &bytes);
    ck_assert_msg(fabs(flops - 2.0 * 256 * 128 * 64) < 1, "linear's flops: %.0f", flops);
    ck_assert_msg(fabs(by_flops - flops / 1e9 * 1e3) <= 1e-3 * by_flops,
                  "a replay of %.0f flops at 1 GFLOP/s took %.5f ms", flops, by_flops);
    float by_bytes = linear_ms("sim_clock=1,sim_bandwidth=1000G", &flops, &bytes);
    ck_assert_msg(fabs(by_bytes - bytes / (1000.0 * GiB) * 1e3) <= 1e-3 * by_bytes + 1e-6,
                  "a replay of %.0f bytes took %.6f ms", bytes, by_bytes);
    /* Memory-bound: the bytes win over a fast FLOP rate. */
    float both = linear_ms("sim_clock=1,sim_bandwidth=1M,sim_flops=1T", &flops, &bytes);
    ck_assert_msg(fabs(both - bytes / (double)MiB * 1e3) <= 1e-3 * both,
                  "the longer of bytes and flops: %.4f ms", both);
}
END_TEST

/* ---- the allocator across streams -------------------------------------------- */

/* A block used on s2 (ck_record_stream) and freed on s1 must not be handed
 * out again while s2's work is unfinished, on any stream. */
START_TEST(t_record_stream_holds_block) {
    ck_pool *p = host_pool(NULL);
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    unsigned char *sink = malloc((size_t)sysconf(_SC_PAGESIZE));
    const size_t n = 4 * MiB;
    void *blk;
    ASSERT_OK(ck_malloc(p, &blk, n, s1));
    gate_create();
    gate_block(p, s2, sink); /* s2 has unfinished work until the gate opens */
    ASSERT_OK(ck_memset_async(p, blk, 0x77, n, s2)); /* and that work uses blk */
    ASSERT_OK(ck_record_stream(p, blk, s2));
    ASSERT_OK(ck_record_stream(p, blk, s2)); /* twice is the same as once */
    ASSERT_OK(ck_free(p, blk, s1));
    ck_stats s = stats_of(p);
    ck_assert_int_eq(s.allocated_bytes.current, 0);
    ck_assert_int_eq(s.active_bytes.current, (int64_t)n); /* freed, still active */
    ck_assert_int_eq(s.active.current, 1);

    void *a1, *a2, *a0, *small;
    ASSERT_OK(ck_malloc(p, &a1, n, s1));
    ck_assert_msg(a1 != blk, "s1 got %p back while s2 still uses it", blk);
    ASSERT_OK(ck_malloc(p, &a2, n, s2));
    ck_assert_ptr_ne(a2, blk);
    ASSERT_OK(ck_malloc(p, &a0, n, NULL));
    ck_assert_ptr_ne(a0, blk);
    ASSERT_OK(ck_malloc(p, &small, 4096, s1));
    ck_assert_msg((uintptr_t)small < (uintptr_t)blk || (uintptr_t)small >= (uintptr_t)blk + n,
                  "a small block %p was carved from the held block %p", small, blk);
    void *again;
    ASSERT_OK(ck_malloc(p, &again, n, s1));
    ck_assert_ptr_ne(again, blk);
    ASSERT_OK(ck_free(p, again, s1));

    /* The gate is still closed: the checks above ran while s2's work was pending. */
    ck_event probe;
    ASSERT_OK(ck_event_create(p, &probe));
    ASSERT_OK(ck_event_record(p, probe, s2));
    ck_assert_int_eq(ck_event_query(p, probe), CK_ERR_NOT_READY);

    gate_release();
    ASSERT_OK(ck_stream_synchronize(p, s2));
    ASSERT_OK(ck_stream_synchronize(p, s1));
    gate_destroy();
    /* s2's memset ran into the block while it was held. */
    ck_assert_uint_eq(((unsigned char *)blk)[n - 1], 0x77);
    /* ck_trim waits for record_stream events as for the freeing streams
     * (so it gives back what is idle: issue 11's (d)); the block is free
     * again afterwards but stays where it is. */

    /* Now the block is reusable: the same size on s1 gets it back. The
     * only other free block of exactly that size is `again`, kept whole on
     * the large quick slots, which the pool may hand out first. */
    void *b, *b2 = NULL;
    ASSERT_OK(ck_malloc(p, &b, n, s1));
    if (b != blk) {
        ck_assert_ptr_eq(b, again);
        ASSERT_OK(ck_malloc(p, &b2, n, s1));
        ck_assert_ptr_eq(b2, blk);
    }
    s = stats_of(p);
    ck_assert_int_eq(s.active_bytes.current, s.allocated_bytes.current);
    ck_assert_int_eq(s.allocation.current, b2 ? 6 : 5);
    ASSERT_OK(ck_free(p, b, s1));
    if (b2) ASSERT_OK(ck_free(p, b2, s1));
    ASSERT_OK(ck_free(p, a1, s1));
    ASSERT_OK(ck_free(p, a2, s2));
    ASSERT_OK(ck_free(p, a0, NULL));
    ASSERT_OK(ck_free(p, small, s1));
    ASSERT_OK(ck_event_destroy(p, probe));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    s = stats_of(p);
    ck_assert_int_eq(s.active_bytes.current, 0);
    ck_assert_int_eq(s.allocated_bytes.current, 0);
    ASSERT_OK(ck_pool_destroy(p));
    free(sink);
}
END_TEST

/* Freed on s1, wanted on s2: guaranteed reusable once both streams are
 * synchronized and ck_trim has fenced everything. */
static void cross_stream_case(size_t n) {
    ck_pool *p = host_pool(NULL);
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    void *a;
    ASSERT_OK(ck_malloc(p, &a, n, s1));
    ASSERT_OK(ck_memset_async(p, a, 0x21, n, s1));
    ASSERT_OK(ck_free(p, a, s1));
    /* Right away on s2: any pointer but a, unless the pool fenced s1 already. */
    void *early;
    ASSERT_OK(ck_malloc(p, &early, n, s2));
    ASSERT_OK(ck_free(p, early, s2));
    ASSERT_OK(ck_stream_synchronize(p, s1));
    ASSERT_OK(ck_stream_synchronize(p, s2));
    size_t released = 0;
    ASSERT_OK(ck_trim(p, &released));
    ck_stats s0 = stats_of(p);
    ck_assert_int_eq(s0.allocated_bytes.current, 0);
    ck_assert_int_eq(s0.active_bytes.current, 0);
    ck_assert_int_eq(s0.physical_bytes.current, 0);
    void *b;
    ASSERT_OK(ck_malloc(p, &b, n, s2));
    /* The VA is reused: either a's (now fenced) or early's (freed on s2 itself). */
    ck_assert_msg(b == a || b == early,
                  "after sync + trim, %zu B on s2 came from %p, not the freed %p or %p", n, b, a,
                  early);
    memset(b, 0x42, n);
    ck_stats s1s = stats_of(p);
    ck_assert_int_eq(s1s.allocated_bytes.current, (int64_t)((n + 511) / 512 * 512));
    ck_assert_int_eq(s1s.requested_bytes.current, (int64_t)n);
    ck_assert_int_eq(s1s.allocation.current, 1);
    ck_assert_int_eq(s1s.active_bytes.current, s1s.allocated_bytes.current);
    ASSERT_OK(ck_free(p, b, s2));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
}

START_TEST(t_cross_stream_reuse_large) { cross_stream_case(6 * MiB); }
END_TEST

START_TEST(t_cross_stream_reuse_small) { cross_stream_case(24 * KiB); }
END_TEST

/* Blocks freed on a stream that is then destroyed stay usable by others. */
START_TEST(t_destroyed_stream_blocks) {
    ck_pool *p = host_pool(NULL);
    ck_stream s;
    ASSERT_OK(ck_stream_create(p, &s));
    void *a[6];
    for (int i = 0; i < 6; i++) ASSERT_OK(ck_malloc(p, &a[i], (size_t)(i + 1) * 700 * KiB, s));
    for (int i = 0; i < 6; i++) ASSERT_OK(ck_free(p, a[i], s));
    ASSERT_OK(ck_stream_destroy(p, s));
    ck_stats st0 = stats_of(p);
    void *b;
    ASSERT_OK(ck_malloc(p, &b, 700 * KiB, NULL));
    ck_stats st1 = stats_of(p);
    ck_assert_uint_eq(st1.num_map_calls, st0.num_map_calls); /* served from the cache */
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_stream_destroy_null) {
    ck_pool *p = host_pool(NULL);
    ck_assert_int_eq(ck_stream_destroy(p, NULL), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "ck_stream_destroy"));
    /* The default stream still works afterwards. */
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 1000, NULL));
    ASSERT_OK(ck_memset_async(p, x, 1, 1000, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    ck_assert_uint_eq(((unsigned char *)x)[999], 1);
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- the stream registry: destroyed and other pools' streams ------------------ */

/* Blocks for the many-blocks destroy test: fewer under a sanitizer. */
#ifdef CKALLOC_SANITIZED
#define REG_NBLK 20000u
#else
#define REG_NBLK 200000u
#endif

/* call must give CK_ERR_INVALID with a sentence that names fn and says why. */
#define EXPECT_REFUSED(call, fn, why)                                                            \
    do {                                                                                         \
        ck_status st_ = (call);                                                                  \
        ck_assert_msg(st_ == CK_ERR_INVALID, "%s gave %s, not CK_ERR_INVALID (%s)", #call,       \
                      ck_status_str(st_), ck_last_error());                                      \
        const char *m_ = ck_last_error();                                                        \
        ck_assert_msg(strstr(m_, fn) != NULL && strstr(m_, why) != NULL,                         \
                      "%s: the sentence \"%s\" does not name %s and say \"%s\"", #call, m_, fn,  \
                      why);                                                                      \
    } while (0)

/* The pool invariants hold (alloc/check.c). */
static void assert_pool_ok(ck_pool *p) {
    char why[512] = "";
    ck_assert_msg(ck__pool_check(p, why, sizeof why) == 0, "pool check: %s", why);
}

/* Every call that takes a stream refuses s on p (CK_ERR_INVALID, the call
 * named, `why` said) and changes nothing: the stats are identical before
 * and after, ck_malloc leaves *ptr alone, the copy and the memset never run
 * (live, n bytes of p filled with 0x3C, still reads 0x3C) and live stays
 * live (the caller frees it afterwards). A second ck_stream_destroy is one
 * of the calls. */
static void expect_all_refused(ck_pool *p, ck_stream s, const char *why, void *live, size_t n) {
    unsigned char *src = malloc(n), *back = malloc(n);
    ck_assert_ptr_nonnull(src);
    ck_assert_ptr_nonnull(back);
    memset(src, 0xA5, n);
    ck_event e;
    ASSERT_OK(ck_event_create(p, &e));
    ck_stats before = stats_of(p);

    int sentinel;
    void *out = &sentinel;
    EXPECT_REFUSED(ck_malloc(p, &out, 4096, s), "ck_malloc", why);
    ck_assert_msg(out == &sentinel, "a refused ck_malloc wrote %p into *ptr", out);
    EXPECT_REFUSED(ck_malloc(p, &out, 3 * MiB, s), "ck_malloc", why); /* large path too */
    ck_assert_msg(out == &sentinel, "a refused ck_malloc wrote %p into *ptr", out);
    EXPECT_REFUSED(ck_free(p, live, s), "ck_free", why);
    EXPECT_REFUSED(ck_record_stream(p, live, s), "ck_record_stream", why);
    EXPECT_REFUSED(ck_stream_synchronize(p, s), "ck_stream_synchronize", why);
    EXPECT_REFUSED(ck_stream_wait_event(p, s, e), "ck_stream_wait_event", why);
    EXPECT_REFUSED(ck_event_record(p, e, s), "ck_event_record", why);
    EXPECT_REFUSED(ck_memcpy_async(p, live, src, n, s), "ck_memcpy_async", why);
    EXPECT_REFUSED(ck_memset_async(p, live, 0, n, s), "ck_memset_async", why);
    EXPECT_REFUSED(ck_stream_destroy(p, s), "ck_stream_destroy", why);

    ck_stats after = stats_of(p);
    ck_assert_msg(memcmp(&before, &after, sizeof before) == 0,
                  "refused calls changed the stats: allocation %lld -> %lld, active %lld -> "
                  "%lld, allocated_bytes %lld -> %lld, reserved_bytes %lld -> %lld, maps %llu -> "
                  "%llu",
                  (long long)before.allocation.current, (long long)after.allocation.current,
                  (long long)before.active.current, (long long)after.active.current,
                  (long long)before.allocated_bytes.current,
                  (long long)after.allocated_bytes.current,
                  (long long)before.reserved_bytes.current, (long long)after.reserved_bytes.current,
                  (unsigned long long)before.num_map_calls,
                  (unsigned long long)after.num_map_calls);
    /* Neither the copy nor the memset reached the block. */
    ASSERT_OK(ck_memcpy_async(p, back, live, n, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (size_t i = 0; i < n; i++)
        if (back[i] != 0x3C) ck_abort_msg("byte %zu of the block is %#x after refused calls", i, back[i]);
    ASSERT_OK(ck_event_destroy(p, e));
    free(src);
    free(back);
}

/* A live block of n bytes on p, filled with 0x3C through the default stream. */
static void *filled_block(ck_pool *p, size_t n) {
    void *b = NULL;
    ASSERT_OK(ck_malloc(p, &b, n, NULL));
    ASSERT_OK(ck_memset_async(p, b, 0x3C, n, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    return b;
}

/* Host backend: a stream destroyed with ck_stream_destroy is refused by
 * every call that takes a stream (the error says it was destroyed), with
 * nothing changed; blocks it allocated are still the caller's to free on
 * another stream, and NULL is still the default stream. */
START_TEST(t_destroyed_stream_refused_host) {
    ck_pool *p = host_pool(NULL);
    ck_stream s, keep;
    ASSERT_OK(ck_stream_create(p, &s));
    ASSERT_OK(ck_stream_create(p, &keep));
    const size_t n = 64 * KiB;
    void *live = filled_block(p, n);
    void *on_s = NULL, *big_on_s = NULL;
    ASSERT_OK(ck_malloc(p, &on_s, 8 * KiB, s)); /* live blocks of s when it goes */
    ASSERT_OK(ck_malloc(p, &big_on_s, 3 * MiB, s));
    ASSERT_OK(ck_memset_async(p, on_s, 0x12, 8 * KiB, s));
    ASSERT_OK(ck_stream_destroy(p, s));
    ck_assert_uint_eq(((unsigned char *)on_s)[8 * KiB - 1], 0x12); /* destroy waited for it */

    expect_all_refused(p, s, "was destroyed", live, n);

    /* Nothing above freed anything: all three are live and free normally. */
    ASSERT_OK(ck_free(p, live, keep));
    ASSERT_OK(ck_free(p, on_s, NULL));
    ASSERT_OK(ck_free(p, big_on_s, keep));
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 0);
    ck_assert_int_eq(st.active.current, 0);
    ck_assert_int_eq(st.allocated_bytes.current, 0);
    ck_assert_int_eq(st.active_bytes.current, 0);
    /* NULL is the default stream, always. */
    void *x = NULL;
    ASSERT_OK(ck_malloc(p, &x, 1000, NULL));
    ASSERT_OK(ck_memset_async(p, x, 0x4E, 1000, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    ck_assert_uint_eq(((unsigned char *)x)[999], 0x4E);
    ASSERT_OK(ck_free(p, x, NULL));
    assert_pool_ok(p);
    ASSERT_OK(ck_stream_destroy(p, keep));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Host backend: a stream ck_stream_create made on another pool is refused
 * by every call (the error says it is not a stream of this pool), with
 * nothing changed; in particular ck_stream_destroy on the wrong pool does
 * not destroy it: it still works on its own pool afterwards. Once its pool
 * destroys it, a second destroy there is refused too. */
START_TEST(t_other_pool_stream_refused_host) {
    ck_pool *p = host_pool(NULL), *q = host_pool(NULL);
    ck_stream t;
    ASSERT_OK(ck_stream_create(q, &t));
    void *qb = NULL;
    ASSERT_OK(ck_malloc(q, &qb, 4096, t));
    const size_t n = 64 * KiB;
    void *live = filled_block(p, n);

    expect_all_refused(p, t, "not a stream of this pool", live, n);

    /* t is still q's, alive and working. */
    ASSERT_OK(ck_memset_async(q, qb, 0x71, 4096, t));
    ASSERT_OK(ck_stream_synchronize(q, t));
    ck_assert_uint_eq(((unsigned char *)qb)[4095], 0x71);
    ASSERT_OK(ck_free(q, qb, t));
    ASSERT_OK(ck_stream_destroy(q, t));
    EXPECT_REFUSED(ck_stream_destroy(q, t), "ck_stream_destroy", "was destroyed");
    void *x = &x;
    EXPECT_REFUSED(ck_malloc(p, &x, 512, t), "ck_malloc", "not a stream of this pool");
    ck_assert_ptr_eq(x, &x);

    ASSERT_OK(ck_free(p, live, NULL)); /* still live after all that */
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 0);
    ck_assert_int_eq(st.active.current, 0);
    assert_pool_ok(p);
    assert_pool_ok(q);
    ASSERT_OK(ck_pool_destroy(p));
    ASSERT_OK(ck_pool_destroy(q));
}
END_TEST

/* The stand-in driver's entry points, and its primary context made current
 * on this thread, so the test can make CUstreams ckalloc did not create. */
typedef struct fake_drv {
    ck_pfn_cuStreamCreate create;
    ck_pfn_cuStreamDestroy_v2 destroy;
    ck_pfn_cuStreamSynchronize sync;
    ck_pfn_cuCtxSetCurrent set_cur;
    ck_pfn_cuDevicePrimaryCtxRelease_v2 release;
    CUdevice dev;
} fake_drv;

static fake_drv fake_open(void) {
    fake_drv d;
    ck_pfn_cuInit init;
    ck_pfn_cuDeviceGet get;
    ck_pfn_cuDevicePrimaryCtxRetain retain;
    *(void **)&init = fake_sym("cuInit");
    *(void **)&get = fake_sym("cuDeviceGet");
    *(void **)&retain = fake_sym("cuDevicePrimaryCtxRetain");
    *(void **)&d.create = fake_sym("cuStreamCreate");
    *(void **)&d.destroy = fake_sym("cuStreamDestroy_v2");
    *(void **)&d.sync = fake_sym("cuStreamSynchronize");
    *(void **)&d.set_cur = fake_sym("cuCtxSetCurrent");
    *(void **)&d.release = fake_sym("cuDevicePrimaryCtxRelease_v2");
    ck_assert_int_eq(init(0), 0);
    ck_assert_int_eq(get(&d.dev, 0), 0);
    CUcontext ctx = NULL;
    ck_assert_int_eq(retain(&ctx, d.dev), 0);
    ck_assert_int_eq(d.set_cur(ctx), 0);
    return d;
}

static void fake_close(fake_drv *d) {
    ck_assert_int_eq(d->set_cur(NULL), 0);
    ck_assert_int_eq(d->release(d->dev), 0);
}

/* Cuda backend (stand-in driver): a stream ck_stream_create made on
 * another pool is refused by every call with nothing changed, while a
 * CUstream ckalloc did not create (the caller's own) is accepted by all of
 * them, in more than one pool, and is not destroyed by ck_stream_destroy. */
START_TEST(t_other_pool_stream_refused_cuda) {
    fake_cuda_env();
    unsigned long streams0 = fake_counter("ckfake_live_streams");
    ck_pool *p = pool_from_conf("backend=cuda,va=64M"), *q = pool_from_conf("backend=cuda,va=64M");
    ck_stream t;
    ASSERT_OK(ck_stream_create(q, &t));
    const size_t n = 64 * KiB;
    void *live = filled_block(p, n);

    expect_all_refused(p, t, "another ckalloc pool", live, n);
    void *qb = NULL; /* t still works on q */
    ASSERT_OK(ck_malloc(q, &qb, 4096, t));
    ASSERT_OK(ck_stream_synchronize(q, t));
    ASSERT_OK(ck_free(q, qb, t));

    /* A CUstream of the caller's own: accepted everywhere, registered on use. */
    fake_drv d = fake_open();
    ck_stream f = NULL;
    ck_assert_int_eq(d.create(&f, 0), 0);
    ck_assert_ptr_nonnull(f);
    void *fb = NULL;
    ASSERT_OK(ck_malloc(p, &fb, 4096, f));
    ASSERT_OK(ck_memset_async(p, fb, 0x29, 4096, f));
    unsigned char got[4096];
    ASSERT_OK(ck_memcpy_async(p, got, fb, sizeof got, f));
    ck_event e;
    ASSERT_OK(ck_event_create(p, &e));
    ASSERT_OK(ck_event_record(p, e, f));
    ASSERT_OK(ck_stream_wait_event(p, f, e));
    ASSERT_OK(ck_stream_synchronize(p, f));
    ck_assert_uint_eq(got[0], 0x29);
    ck_assert_uint_eq(got[4095], 0x29);
    ASSERT_OK(ck_record_stream(p, live, f));
    ASSERT_OK(ck_free(p, fb, f));
    ASSERT_OK(ck_event_destroy(p, e));
    void *qf = NULL; /* q may use it as well: nobody in ckalloc owns it */
    ASSERT_OK(ck_malloc(q, &qf, 512, f));
    ASSERT_OK(ck_free(q, qf, f));
    /* Not ckalloc's to destroy: refused, and the driver still has it. */
    EXPECT_REFUSED(ck_stream_destroy(p, f), "ck_stream_destroy", "not made by ck_stream_create");
    ck_assert_int_eq(d.sync(f), 0);

    ASSERT_OK(ck_free(p, live, NULL));
    ASSERT_OK(ck_trim(p, NULL)); /* waits for the record_stream event on f */
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 0);
    ck_assert_int_eq(st.active.current, 0);
    assert_pool_ok(p);
    ASSERT_OK(ck_stream_destroy(q, t));
    ASSERT_OK(ck_pool_destroy(p));
    ASSERT_OK(ck_pool_destroy(q));
    ck_assert_int_eq(d.destroy(f), 0); /* ckalloc did not destroy it */
    fake_close(&d);
    ck_assert_uint_eq(fake_counter("ckfake_live_streams"), streams0);
}
END_TEST

/* Cuda backend: pool q's ck_stream_create returns a handle the driver
 * reused, one that pool p had registered as a caller's stream. make_seen
 * gives p nf handles it has seen (registered) and that are gone from the
 * driver; q then creates streams until one lands on one of them, and p must
 * refuse that stream like any other stream of another pool (CK_ERR_INVALID
 * naming ck_malloc, *ptr and the stats untouched). The stand-in driver
 * callocs its streams, and glibc's calloc reuses a freed chunk only from
 * the fastbins (once tcache is full), hence 16 handles. ASan's quarantine
 * never reuses a chunk that soon, so under a sanitizer there may be nothing
 * to check; without one the reuse itself is asserted, so the test cannot
 * pass by checking nothing. Everything is cleaned up before the verdict. */
/* At most 24 streams on q: registries past 32 entries are
 * t_many_streams_registry's subject, not this test's. */
enum { REUSE_NF = 16, REUSE_NT = 24 };
typedef void (*make_seen_fn)(ck_pool *p, fake_drv *d, ck_stream *f, int nf);

static void reused_handle_case(make_seen_fn make_seen) {
    fake_cuda_env();
    ck_pool *p = pool_from_conf("backend=cuda,va=64M"), *q = pool_from_conf("backend=cuda,va=64M");
    fake_drv d = fake_open();
    ck_stream f[REUSE_NF], t[REUSE_NT];
    make_seen(p, &d, f, REUSE_NF);
    int nt = 0, hit = -1;
    while (nt < REUSE_NT && hit < 0) {
        ASSERT_OK(ck_stream_create(q, &t[nt]));
        for (int i = 0; i < REUSE_NF; i++)
            if (t[nt] == f[i]) hit = nt;
        nt++;
    }
    ck_status st = CK_ERR_INVALID;
    char why[512] = "";
    void *y = &y;
    int stats_same = 1;
    ck_stream th = hit >= 0 ? t[hit] : NULL;
    if (hit >= 0) {
        ck_stats before = stats_of(p);
        st = ck_malloc(p, &y, 4096, th);
        snprintf(why, sizeof why, "%s", st == CK_OK ? "" : ck_last_error());
        if (st == CK_OK) ASSERT_OK(ck_free(p, y, NULL));
        ck_stats after = stats_of(p);
        stats_same = st == CK_OK || memcmp(&before, &after, sizeof before) == 0;
    }
    for (int j = 0; j < nt; j++) ASSERT_OK(ck_stream_destroy(q, t[j]));
    ASSERT_OK(ck_pool_destroy(p));
    ASSERT_OK(ck_pool_destroy(q));
    fake_close(&d);
#ifndef CKALLOC_SANITIZED
    ck_assert_msg(hit >= 0, "the stand-in driver reused none of %d gone handles in %d creates: "
                            "nothing was checked", REUSE_NF, REUSE_NT);
#endif
    if (hit < 0) return;
    ck_assert_msg(st == CK_ERR_INVALID,
                  "pool q's ck_stream_create returned %p, a handle pool p had registered before "
                  "it was destroyed; ck_malloc on p with q's stream gave %s, not CK_ERR_INVALID",
                  (void *)th, ck_status_str(st));
    ck_assert_msg(y == (void *)&y, "a refused ck_malloc wrote *ptr");
    ck_assert_msg(strstr(why, "ck_malloc") != NULL, "the sentence \"%s\" does not name ck_malloc", why);
    ck_assert_msg(stats_same, "a refused ck_malloc changed the stats");
}

/* The caller's own CUstreams, used on p, then destroyed with the driver. */
static void seen_caller_streams(ck_pool *p, fake_drv *d, ck_stream *f, int nf) {
    for (int i = 0; i < nf; i++) {
        ck_assert_int_eq(d->create(&f[i], 0), 0);
        ASSERT_OK(ck_stream_synchronize(p, f[i])); /* p registers it */
    }
    for (int i = 0; i < nf; i++) ck_assert_int_eq(d->destroy(f[i]), 0);
}

/* p's own streams, destroyed with ck_stream_destroy and then passed to p
 * once more (a second ck_stream_destroy, refused as it must be). */
static void seen_destroyed_own_streams(ck_pool *p, fake_drv *d, ck_stream *f, int nf) {
    (void)d;
    for (int i = 0; i < nf; i++) ASSERT_OK(ck_stream_create(p, &f[i]));
    for (int i = 0; i < nf; i++) ASSERT_OK(ck_stream_destroy(p, f[i]));
    for (int i = 0; i < nf; i++) {
        ck_status st = ck_stream_destroy(p, f[i]);
        ck_assert_msg(st == CK_ERR_INVALID, "a second ck_stream_destroy gave %s", ck_status_str(st));
        ck_assert_ptr_nonnull(strstr(ck_last_error(), "ck_stream_destroy"));
    }
}

/* A caller's stream p has used is destroyed by the caller, and q's
 * ck_stream_create gets its handle: p must refuse it (q's stream). */
START_TEST(t_reused_caller_handle_refused_cuda) { reused_handle_case(seen_caller_streams); }
END_TEST

/* The same through ckalloc's API alone: p destroys its own streams and is
 * passed them again (refused: a refused call must change nothing, so p
 * must not keep the dead handle as a caller's stream); q's ck_stream_create
 * gets one of the handles: p must refuse it. */
START_TEST(t_reused_own_handle_refused_cuda) { reused_handle_case(seen_destroyed_own_streams); }
END_TEST

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* ck_stream_destroy does not walk the live blocks (record_stream uses are
 * (index, generation) pairs that go stale), so this proves the stale uses
 * are handled correctly rather than timing it: REG_NBLK live 512 B blocks,
 * every 64th also recorded on s2 (with s2 writing into it). Half of those
 * are freed while s2 is held (they must be pending on s2), then s2 is
 * destroyed and the other half are freed on the default stream: they must
 * be free at once (not pending: nothing waits on a destroyed stream), a
 * ck_trim must clear the pending ones (active == allocation,
 * active_bytes == allocated_bytes), and the freed slots must serve new
 * requests without mapping anything. */
START_TEST(t_destroy_stream_many_live_blocks) {
    const uint32_t nblk = REG_NBLK, every = 64;
    ck_pool *p = host_pool(NULL);
    ck_stream s2;
    ASSERT_OK(ck_stream_create(p, &s2));
    void **blk = malloc(nblk * sizeof *blk);
    ck_assert_ptr_nonnull(blk);
    for (uint32_t i = 0; i < nblk; i++) {
        ck_status st = ck_malloc(p, &blk[i], 512, NULL);
        if (st != CK_OK) ck_abort_msg("malloc %u: %s: %s", i, ck_status_str(st), ck_last_error());
    }
    unsigned char *sink = malloc((size_t)sysconf(_SC_PAGESIZE));
    ck_assert_ptr_nonnull(sink);
    gate_create();
    gate_block(p, s2, sink); /* s2's work below stays unfinished until the gate opens */
    uint32_t nrec = 0, nearly = 0;
    for (uint32_t i = 0; i < nblk; i += every, nrec++) {
        ASSERT_OK(ck_memset_async(p, blk[i], 0x66, 512, s2));
        ASSERT_OK(ck_record_stream(p, blk[i], s2));
    }
    ck_assert_uint_ge(nrec, 300);
    /* The early half: freed while s2 is held, so they wait for it. */
    for (uint32_t k = 0; k < nrec; k += 2, nearly++) ASSERT_OK(ck_free(p, blk[k * every], NULL));
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, (int64_t)(nblk - nearly));
    ck_assert_int_eq(st.active.current - st.allocation.current, (int64_t)nearly);
    ck_assert_int_eq(st.active_bytes.current - st.allocated_bytes.current, (int64_t)nearly * 512);

    gate_release();
    ASSERT_OK(ck_stream_destroy(p, s2)); /* waits for s2's memsets */
    gate_destroy();
    assert_pool_ok(p);
    for (uint32_t k = 1; k < nrec; k += 2) /* the late half, still live */
        if (((unsigned char *)blk[k * every])[511] != 0x66)
            ck_abort_msg("s2's memset of recorded block %u had not run when destroy returned", k);

    /* The late half: freed on the default stream after s2 is gone. */
    for (uint32_t k = 1; k < nrec; k += 2) ASSERT_OK(ck_free(p, blk[k * every], NULL));
    st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, (int64_t)(nblk - nrec));
    ck_assert_int_eq(st.allocated_bytes.current, (int64_t)(nblk - nrec) * 512);
    ck_assert_msg(st.active.current - st.allocation.current <= (int64_t)nearly,
                  "%lld blocks pending after the late frees; only the %u freed before s2 was "
                  "destroyed may be", (long long)(st.active.current - st.allocation.current), nearly);
    ASSERT_OK(ck_trim(p, NULL));
    st = stats_of(p);
    ck_assert_int_eq(st.active.current, st.allocation.current);
    ck_assert_int_eq(st.active_bytes.current, st.allocated_bytes.current);
    ck_assert_int_eq(st.allocated_bytes.current, (int64_t)(nblk - nrec) * 512);
    assert_pool_ok(p);

    /* The freed slots serve new requests, with no new memory. */
    void **freed = malloc(nrec * sizeof *freed);
    void **again = malloc(nrec * sizeof *again);
    ck_assert_ptr_nonnull(freed);
    ck_assert_ptr_nonnull(again);
    for (uint32_t k = 0; k < nrec; k++) freed[k] = blk[k * every];
    qsort(freed, nrec, sizeof *freed, cmp_ptr);
    ck_stats st0 = stats_of(p);
    for (uint32_t k = 0; k < nrec; k++) {
        ASSERT_OK(ck_malloc(p, &again[k], 512, NULL));
        ck_assert_msg(bsearch(&again[k], freed, nrec, sizeof *freed, cmp_ptr) != NULL,
                      "request %u got %p, not one of the %u freed 512 B slots", k, again[k], nrec);
    }
    ck_stats st1 = stats_of(p);
    ck_assert_uint_eq(st1.num_map_calls, st0.num_map_calls);
    ck_assert_int_eq(st1.reserved_bytes.current, st0.reserved_bytes.current);
    ck_assert_int_eq(st1.allocation.current, (int64_t)nblk);

    /* Everything goes back. */
    for (uint32_t k = 0; k < nrec; k++) ASSERT_OK(ck_free(p, again[k], NULL));
    for (uint32_t i = 0; i < nblk; i++) {
        if (i % every == 0) continue;
        ck_status s = ck_free(p, blk[i], NULL);
        if (s != CK_OK) ck_abort_msg("free %u: %s: %s", i, ck_status_str(s), ck_last_error());
    }
    size_t released = 0;
    ASSERT_OK(ck_trim(p, &released));
    ck_assert_uint_gt(released, 0);
    st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 0);
    ck_assert_int_eq(st.active.current, 0);
    ck_assert_int_eq(st.active_bytes.current, 0);
    ck_assert_int_eq(st.physical_bytes.current, 0);
    assert_pool_ok(p);
    ASSERT_OK(ck_pool_destroy(p));
    free(blk);
    free(freed);
    free(again);
    free(sink);
}
END_TEST

/* A block allocated on s1 is still the caller's after s1 is destroyed:
 * freeing it on the default stream works and the memory is reused with no
 * new mapping. */
START_TEST(t_free_after_alloc_stream_destroyed) {
    ck_pool *p = host_pool(NULL);
    ck_stream s1;
    ASSERT_OK(ck_stream_create(p, &s1));
    const size_t n = 256 * KiB;
    void *a = NULL, *big = NULL;
    ASSERT_OK(ck_malloc(p, &a, n, s1));
    ASSERT_OK(ck_malloc(p, &big, 3 * MiB, s1));
    ASSERT_OK(ck_memset_async(p, a, 0x5D, n, s1));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ck_assert_uint_eq(((unsigned char *)a)[n - 1], 0x5D);
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_free(p, big, NULL));
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 0);
    ck_assert_int_eq(st.active.current, 0); /* nothing pending */
    ck_assert_int_eq(st.allocated_bytes.current, 0);
    void *b = NULL, *c = NULL;
    ASSERT_OK(ck_malloc(p, &b, n, NULL));
    ASSERT_OK(ck_malloc(p, &c, 3 * MiB, NULL));
    ck_stats st1 = stats_of(p);
    ck_assert_uint_eq(st1.num_map_calls, st.num_map_calls);
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_free(p, c, NULL));
    assert_pool_ok(p);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* record_stream on s2, then s2 destroyed, then the block freed on s1: the
 * free returns (it must not wait for, or record an event on, the
 * destroyed s2), the block is not left pending, and s1 gets it back. The
 * block sits between two live ones, so its slot is an exact fit. */
START_TEST(t_record_then_destroy_then_free) {
    ck_pool *p = host_pool(NULL);
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    const size_t n = 64 * KiB;
    void *lo = NULL, *blk = NULL, *hi = NULL;
    ASSERT_OK(ck_malloc(p, &lo, n, s1));
    ASSERT_OK(ck_malloc(p, &blk, n, s1));
    ASSERT_OK(ck_malloc(p, &hi, n, s1));
    ASSERT_OK(ck_record_stream(p, blk, s2));
    ASSERT_OK(ck_memset_async(p, blk, 0x33, n, s2));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ck_assert_uint_eq(((unsigned char *)blk)[n - 1], 0x33);
    ASSERT_OK(ck_free(p, blk, s1));
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 2);
    ck_assert_int_eq(st.active.current, 2); /* not pending on s2 */
    ck_assert_int_eq(st.active_bytes.current, st.allocated_bytes.current);
    void *again = NULL;
    ASSERT_OK(ck_malloc(p, &again, n, s1));
    ck_assert_ptr_eq(again, blk);
    ASSERT_OK(ck_free(p, again, s1));
    ASSERT_OK(ck_free(p, lo, s1));
    ASSERT_OK(ck_free(p, hi, s1));
    assert_pool_ok(p);
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* A stream created after s2 was destroyed (it may get s2's handle and
 * registry slot back) is a new stream: it is accepted, and a block recorded
 * on the old s2 does not wait for the new stream's unfinished work. */
START_TEST(t_new_stream_after_destroy) {
    ck_pool *p = host_pool(NULL);
    ck_stream s1, s2, s3;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    const size_t n = 64 * KiB;
    void *blk = NULL;
    ASSERT_OK(ck_malloc(p, &blk, n, s1));
    ASSERT_OK(ck_record_stream(p, blk, s2));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_stream_create(p, &s3));
    unsigned char *sink = malloc((size_t)sysconf(_SC_PAGESIZE));
    ck_assert_ptr_nonnull(sink);
    gate_create();
    gate_block(p, s3, sink); /* s3 has unfinished work until the gate opens */
    ASSERT_OK(ck_free(p, blk, s1));
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 0);
    ck_assert_msg(st.active.current == 0,
                  "the block recorded on a destroyed stream waits for the new stream %p (the "
                  "destroyed one was %p)", (void *)s3, (void *)s2);
    void *z = NULL; /* the new stream works */
    ASSERT_OK(ck_malloc(p, &z, 512, s3));
    ASSERT_OK(ck_record_stream(p, z, s3));
    ASSERT_OK(ck_free(p, z, s1)); /* this one does wait for s3 */
    st = stats_of(p);
    ck_assert_int_eq(st.active.current, 1);
    ck_assert_int_eq(st.allocation.current, 0);
    gate_release();
    ASSERT_OK(ck_stream_synchronize(p, s3));
    gate_destroy();
    ASSERT_OK(ck_trim(p, NULL));
    st = stats_of(p);
    ck_assert_int_eq(st.active.current, 0);
    assert_pool_ok(p);
    ASSERT_OK(ck_stream_destroy(p, s3));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_pool_destroy(p));
    free(sink);
}
END_TEST

/* ---- many streams: the registry's hash table grows -------------------------- */

enum { MS_FIRST = 48, MS_SECOND = 48, MS_FAKES = 1024 };

typedef struct many_streams {
    ck_pool *p;
    ck_stream s[MS_FIRST + MS_SECOND];
    int stage, step; /* where the worker is (read by the watchdog) */
    int done;
    char fail[512];  /* the first wrong answer, "" if none */
} many_streams;

static void ms_at(many_streams *m, int stage, int step) {
    __atomic_store_n(&m->step, step, __ATOMIC_RELAXED);
    __atomic_store_n(&m->stage, stage, __ATOMIC_RELAXED);
}

static void ms_fail(many_streams *m, const char *what, int i, ck_status st) {
    if (!m->fail[0])
        snprintf(m->fail, sizeof m->fail, "%s %d: %s (%s)", what, i, ck_status_str(st), ck_last_error());
}

/* A handle no pool made (never dereferenced: the host backend refuses it). */
static ck_stream ms_fake(int k) { return (ck_stream)(uintptr_t)(0x100000u + 64u * (unsigned)k); }

static void ms_lookups(many_streams *m, int stage, int nlive_from, int nlive_to) {
    for (int i = nlive_from; i < nlive_to; i++) {
        ms_at(m, stage, i);
        ck_status st = ck_stream_synchronize(m->p, m->s[i]);
        if (st != CK_OK) ms_fail(m, "synchronize of live stream", i, st);
    }
    for (int k = 0; k < MS_FAKES; k++) {
        ms_at(m, stage + 1, k);
        ck_status st = ck_stream_synchronize(m->p, ms_fake(k));
        if (st != CK_ERR_INVALID) ms_fail(m, "synchronize of a handle no pool made", k, st);
    }
}

/* Runs on a thread of its own, so that a lookup that never returns fails
 * the test instead of hanging the whole run (no Check calls here). */
static void *ms_main(void *arg) {
    many_streams *m = arg;
    for (int i = 0; i < MS_FIRST; i++) {
        ms_at(m, 1, i);
        ck_status st = ck_stream_create(m->p, &m->s[i]);
        if (st != CK_OK) ms_fail(m, "create", i, st);
    }
    ms_lookups(m, 2, 0, MS_FIRST);
    for (int i = 0; i < MS_FIRST / 2; i++) {
        ms_at(m, 4, i);
        ck_status st = ck_stream_destroy(m->p, m->s[i]);
        if (st != CK_OK) ms_fail(m, "destroy", i, st);
    }
    for (int i = 0; i < MS_FIRST / 2; i++) {
        ms_at(m, 5, i);
        ck_status st = ck_stream_synchronize(m->p, m->s[i]);
        if (st != CK_ERR_INVALID || !strstr(ck_last_error(), "destroyed"))
            ms_fail(m, "synchronize of destroyed stream", i, st);
    }
    for (int i = MS_FIRST; i < MS_FIRST + MS_SECOND; i++) {
        ms_at(m, 6, i);
        ck_status st = ck_stream_create(m->p, &m->s[i]);
        if (st != CK_OK) ms_fail(m, "create", i, st);
    }
    ms_lookups(m, 7, MS_FIRST / 2, MS_FIRST + MS_SECOND);
    for (int i = MS_FIRST / 2; i < MS_FIRST + MS_SECOND; i++) {
        ms_at(m, 9, i);
        ck_status st = ck_stream_destroy(m->p, m->s[i]);
        if (st != CK_OK) ms_fail(m, "destroy", i, st);
    }
    __atomic_store_n(&m->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* A host pool with many streams (96 created, 48 of them alive at once,
 * and the destroyed ones kept as tombstones): the registry's hash table
 * grows past its first 16 buckets (32 entries) and 64 buckets (128), and
 * still every live stream is found, every destroyed one is refused as
 * destroyed, a thousand handles no pool made are refused, and every call
 * returns (a watchdog fails the test if one has not returned in 30 s). */
START_TEST(t_many_streams_registry) {
    static many_streams m; /* stays valid if the worker never returns */
    memset(&m, 0, sizeof m);
    m.p = host_pool(NULL);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, ms_main, &m), 0);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (__atomic_load_n(&m.done, __ATOMIC_ACQUIRE)) break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec > 30) {
            pthread_detach(th);
            ck_abort_msg("a stream call has not returned in 30 s: stage %d (1 create, 2 lookup of "
                         "a live stream, 3 of a handle no pool made, 4 destroy, 5 lookup of a "
                         "destroyed stream, 6 create, 7 and 8 lookups, 9 destroy), step %d",
                         __atomic_load_n(&m.stage, __ATOMIC_RELAXED),
                         __atomic_load_n(&m.step, __ATOMIC_RELAXED));
        }
        struct timespec ms10 = {0, 10000000L};
        nanosleep(&ms10, NULL);
    }
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(m.fail[0] == 0, "%s", m.fail);
    assert_pool_ok(m.p);
    ASSERT_OK(ck_pool_destroy(m.p));
}
END_TEST

int main(void) {
    Suite *s = suite_create("streams");
    TCase *tc = ck_test_tcase(s, "streams", 120);
    tcase_add_test(tc, t_copy_order_one_stream);
    tcase_add_test(tc, t_wait_event_orders_streams);
    tcase_add_test(tc, t_event_query);
    tcase_add_test(tc, t_sim_clock);
    tcase_add_test(tc, t_sim_host_time);
    tcase_add_test(tc, t_sim_wait_rerecorded_event);
    tcase_add_test(tc, t_sim_flops);
    tcase_add_test(tc, t_record_stream_holds_block);
    tcase_add_test(tc, t_cross_stream_reuse_large);
    tcase_add_test(tc, t_cross_stream_reuse_small);
    tcase_add_test(tc, t_destroyed_stream_blocks);
    tcase_add_test(tc, t_stream_destroy_null);
    tcase_add_test(tc, t_destroyed_stream_refused_host);
    tcase_add_test(tc, t_other_pool_stream_refused_host);
    tcase_add_test(tc, t_other_pool_stream_refused_cuda);
    tcase_add_test(tc, t_reused_caller_handle_refused_cuda);
    tcase_add_test(tc, t_reused_own_handle_refused_cuda);
    tcase_add_test(tc, t_destroy_stream_many_live_blocks);
    tcase_add_test(tc, t_free_after_alloc_stream_destroyed);
    tcase_add_test(tc, t_record_then_destroy_then_free);
    tcase_add_test(tc, t_new_stream_after_destroy);
    tcase_add_test(tc, t_many_streams_registry);
    return ck_test_run(s);
}
