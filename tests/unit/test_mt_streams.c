/* Threads creating, using and destroying their own streams on one pool at
 * the same time. ck_stream_destroy once let go of the pool lock between
 * looking the stream up and forgetting it: another thread could record a
 * round event on the freed stream (use after free, then a wait that never
 * ended with the pool lock held), or create a stream at the same address
 * whose entry the first thread then retired ("was destroyed" for a live
 * stream). Each thread checks that every call on its own live stream
 * succeeds; a watchdog turns a hang into a failure. Runs under TSan too
 * (test_mt_*). */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum { THREADS = 4 };

static ck_pool *g_pool;
static atomic_int g_stop, g_failed;
static atomic_long g_iters;
static char g_why[512];

static void record_failure(long id, long n, const char *what, ck_stream s) {
    if (atomic_exchange(&g_failed, 1) == 0)
        snprintf(g_why, sizeof g_why, "thread %ld iteration %ld: %s on its own live stream %p: %s",
                 id, n, what, (void *)s, ck_last_error());
    atomic_store(&g_stop, 1);
}

static void *worker(void *arg) {
    long id = (long)(intptr_t)arg;
    for (long n = 0; !atomic_load(&g_stop); n++) {
        ck_stream s;
        if (ck_stream_create(g_pool, &s) != CK_OK) {
            record_failure(id, n, "ck_stream_create", NULL);
            break;
        }
        void *q = NULL;
        /* Alternate a small and a large request, so both heaps' slow paths
         * (which issue rounds over the dirty streams) run. */
        size_t size = n % 2 ? 4096 : 3 * MiB;
        if (ck_malloc(g_pool, &q, size, s) != CK_OK) {
            record_failure(id, n, "ck_malloc", s);
            break;
        }
        if (ck_memset_async(g_pool, q, (int)id, 64, s) != CK_OK) {
            record_failure(id, n, "ck_memset_async", s);
            break;
        }
        if (ck_free(g_pool, q, s) != CK_OK) {
            record_failure(id, n, "ck_free", s);
            break;
        }
        if (ck_stream_destroy(g_pool, s) != CK_OK) {
            record_failure(id, n, "ck_stream_destroy", s);
            break;
        }
        atomic_fetch_add(&g_iters, 1);
    }
    return NULL;
}

START_TEST(t_streams_created_and_destroyed_concurrently) {
    g_pool = pool_from_conf("backend=host,host_mem=1G,budget=64M");
    atomic_store(&g_stop, 0);
    atomic_store(&g_failed, 0);
    atomic_store(&g_iters, 0);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i), 0);
    /* Run for a while; a thread stuck inside the pool stops the iteration
     * count from moving, which the watchdog reports instead of hanging. */
    long last = -1;
    int still = 0;
    for (int tick = 0; tick < 40 && !atomic_load(&g_stop); tick++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        long now = atomic_load(&g_iters);
        still = now == last ? still + 1 : 0;
        last = now;
        ck_assert_msg(still < 20, "no progress for 1 s at %ld iterations: a stream call hangs", now);
    }
    atomic_store(&g_stop, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    ck_assert_msg(!atomic_load(&g_failed), "%s", g_why);
    ck_assert_int_gt(atomic_load(&g_iters), THREADS);
    ck_stats st = stats_of(g_pool);
    ck_assert_int_eq(st.allocated_bytes.current, 0);
    ck_assert_int_eq(st.active.current, 0);
    ASSERT_OK(ck_pool_destroy(g_pool));
}
END_TEST

int main(void) {
    Suite *s = suite_create("mt_streams");
    TCase *tc = ck_test_tcase(s, "concurrent", 120);
    tcase_add_test(tc, t_streams_created_and_destroyed_concurrently);
    return ck_test_run(s);
}
