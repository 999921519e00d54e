/* The live seqlock under load: writer threads allocate and free blocks of one
 * size on a published pool while readers copy its slot, one through the
 * segment as ckalloc-stat does (ck__live_read: its own mapping, asking for
 * the top list now and then), one through the pool's own mapping
 * (ck__live_slot_read, the same code; there TSan sees both sides). Every
 * copy must satisfy relations that a torn copy breaks: with one size,
 * allocated_bytes = allocations x size, requested = allocations x request,
 * current = allocated - freed, current <= peak, counters never go back.
 * Runs under TSan in `make test-all` (label "threaded"). */
#include "testutil.h"

#include "ckalloc/ckalloc.h"
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { NWRITERS = 2, REQ = 4000, SIZE = 4096, BATCH = 16 };

static atomic_int stop;

typedef struct writer {
    ck_pool *pool;
    uint32_t rng;
    long pairs;
    int failed;
} writer;

static void *writer_main(void *v) {
    writer *w = v;
    void *p[BATCH];
    while (!atomic_load(&stop)) {
        w->rng = w->rng * 1103515245u + 12345u;
        int k = 1 + (int)((w->rng >> 16) % BATCH);
        for (int i = 0; i < k; i++)
            if (ck_malloc(w->pool, &p[i], REQ, NULL) != CK_OK) w->failed = 1;
        for (int i = 0; i < k; i++)
            if (ck_free(w->pool, p[i], NULL) != CK_OK) w->failed = 1;
        w->pairs += k;
    }
    return NULL;
}

/* The relations of one copy, and against the previous copy (may be NULL).
 * Returns NULL or what is wrong. */
static const char *check(const ck_counters *c, const ck_counters *prev) {
    if (c->allocation.current * SIZE != c->allocated_bytes.current)
        return "allocated_bytes != allocations x size";
    if (c->allocation.current * REQ != c->requested_bytes.current)
        return "requested_bytes != allocations x request";
    if (c->active.current != c->allocation.current ||
        c->active_bytes.current != c->allocated_bytes.current)
        return "active != allocation";
    if (c->allocation.current < 0 || c->allocation.current > c->allocation.peak)
        return "allocation outside 0..peak";
    if (c->allocated_bytes.current > c->allocated_bytes.peak)
        return "allocated_bytes above its peak";
    if ((int64_t)(c->allocation.allocated - c->allocation.freed) != c->allocation.current)
        return "allocation: current != allocated - freed";
    if ((int64_t)(c->allocated_bytes.allocated - c->allocated_bytes.freed) !=
        c->allocated_bytes.current)
        return "allocated_bytes: current != allocated - freed";
    if (c->reserved_bytes.current != c->mapped_bytes.current ||
        c->physical_bytes.current != c->mapped_bytes.current)
        return "reserved / mapped / physical differ (nothing is unmapped here)";
    if ((int64_t)(c->num_map_calls - c->num_unmap_calls) != c->segment.current)
        return "map - unmap calls != segments";
    if (prev &&
        (c->allocation.allocated < prev->allocation.allocated ||
         c->allocation.peak < prev->allocation.peak || c->num_map_calls < prev->num_map_calls))
        return "a counter went back";
    return NULL;
}

typedef struct reader {
    ck_pool *pool;
    int via_segment;   /* 1: ck__live_read; 0: ck__live_slot_read on p->live */
    atomic_long reads; /* polled by the main thread */
    atomic_int failed;
    long busy, fresh_tops, answered;
    char err[768];
} reader;

static void *reader_main(void *v) {
    reader *r = v;
    ck_counters prev;
    int have_prev = 0;
    ck_live_proc *proc = malloc(sizeof *proc);
    ck_live_slot *copy = malloc(sizeof *copy);
    if (!proc || !copy) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return NULL;
    }
    while (!atomic_load(&stop) && !r->err[0]) {
        const ck_counters *c;
        if (r->via_segment) {
            char why[512];
            int rc = ck__live_read(getpid(), atomic_load(&r->reads) % 8 == 0 ? 50 : -1, proc, why,
                                   sizeof why);
            if (rc != CK_LIVE_OK || proc->npools != 1) {
                snprintf(r->err, sizeof r->err, "read: rc %d, %d pools: %s", rc, proc->npools, why);
                break;
            }
            const ck_live_pool *lp = &proc->pools[0];
            if (lp->busy) {
                r->busy++;
                continue;
            }
            c = &lp->c;
            for (uint32_t k = 0; k < lp->ntop; k++)
                if (lp->top[k].size != SIZE || lp->top[k].requested != REQ)
                    snprintf(r->err, sizeof r->err, "top[%u] is %llu (%llu asked), not %d", k,
                             (unsigned long long)lp->top[k].size,
                             (unsigned long long)lp->top[k].requested, SIZE);
            if (lp->ntop > CK_LIVE_TOP) snprintf(r->err, sizeof r->err, "ntop %u", lp->ntop);
            r->fresh_tops += lp->top_fresh;
            r->answered += lp->answered;
        } else {
            if (ck__live_slot_read(r->pool->live, copy, 1000) != 0) {
                r->busy++;
                continue;
            }
            c = &copy->c;
        }
        const char *bad = check(c, have_prev ? &prev : NULL);
        if (bad)
            snprintf(r->err, sizeof r->err,
                     "%s (allocation %lld, allocated_bytes %lld, requested %lld)", bad,
                     (long long)c->allocation.current, (long long)c->allocated_bytes.current,
                     (long long)c->requested_bytes.current);
        if (r->err[0]) atomic_store(&r->failed, 1);
        prev = *c;
        have_prev = 1;
        atomic_fetch_add(&r->reads, 1);
    }
    if (r->err[0]) atomic_store(&r->failed, 1);
    free(proc);
    free(copy);
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(t_readers_never_see_torn_counters) {
    ck_pool *p = host_pool(NULL);
    ck_assert_ptr_nonnull(p->live);
    writer w[NWRITERS];
    reader r[2];
    pthread_t tw[NWRITERS], tr[2];
    atomic_store(&stop, 0);
    for (int i = 0; i < NWRITERS; i++) {
        w[i] = (writer){p, 1234u + (uint32_t)i, 0, 0};
        ck_assert_int_eq(pthread_create(&tw[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].pool = p;
        r[i].via_segment = i == 0;
        ck_assert_int_eq(pthread_create(&tr[i], NULL, reader_main, &r[i]), 0);
    }
    /* At least 1 s, and enough reads of each kind to mean something. */
    double t0 = now_s();
    while (now_s() - t0 < 20) {
        usleep(20000);
        int failed = atomic_load(&r[0].failed) || atomic_load(&r[1].failed);
        if (failed || (now_s() - t0 >= 1.0 && atomic_load(&r[0].reads) >= 200 &&
                       atomic_load(&r[1].reads) >= 2000))
            break;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(tr[i], NULL);
    long pairs = 0;
    for (int i = 0; i < NWRITERS; i++) {
        pthread_join(tw[i], NULL);
        ck_assert_int_eq(w[i].failed, 0);
        pairs += w[i].pairs;
    }
    printf("mt_live: %ld alloc+free pairs; segment reader %ld reads (%ld answered by the owner, "
           "%ld busy, %ld fresh top lists); in-process reader %ld reads (%ld busy)\n",
           pairs, (long)r[0].reads, r[0].answered, r[0].busy, r[0].fresh_tops, (long)r[1].reads,
           r[1].busy);
    for (int i = 0; i < 2; i++) ck_assert_msg(!r[i].err[0], "reader %d: %s", i, r[i].err);
    ck_assert_int_ge(atomic_load(&r[0].reads), 200);
    ck_assert_int_ge(atomic_load(&r[1].reads), 2000);
    ck_assert_int_gt(pairs, 0);
    /* The owner answered top-list requests while it was busy. */
    ck_assert_int_gt(r[0].fresh_tops, 0);
    /* Quiet now: the last copy equals ck_get_stats. */
    ck_stats st = stats_of(p);
    ck_live_proc proc;
    char why[512];
    ck_assert_int_eq(ck__live_read(getpid(), -1, &proc, why, sizeof why), CK_LIVE_OK);
    ck_assert_int_eq(proc.pools[0].c.allocation.allocated, st.allocation.allocated);
    ck_assert_int_eq(proc.pools[0].c.allocated_bytes.current, 0);
    ck_assert_int_eq(proc.pools[0].c.allocated_bytes.peak, st.allocated_bytes.peak);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

int main(void) {
    Suite *s = suite_create("mt_live");
    TCase *tc = ck_test_tcase(s, "mt_live", 120);
    tcase_add_test(tc, t_readers_never_see_torn_counters);
    return ck_test_run(s);
}
