/* Many threads on one host pool: random malloc/free of mixed sizes, each
 * block filled with its own pattern and checked before it is freed, some
 * blocks freed by another thread than the one that allocated them. Runs
 * under TSan in `make test-all` (label "threaded").
 *
 * CK_TEST_SCALE=small (or a sanitizer build) scales the work down. */
#include "testutil.h"

#include "ckalloc/ckalloc.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NTHREADS = 6, WINDOW = 12, QCAP = 16 };

typedef struct blk {
    unsigned char *ptr;
    size_t size;
    uint32_t tag; /* pattern seed: unique per allocation */
} blk;

/* The shared hand-off queue for cross-thread frees. */
static struct {
    pthread_mutex_t mu;
    blk items[QCAP];
    size_t n;
} handoff = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};

typedef struct worker {
    ck_pool *pool;
    int id;
    int iters;
    int allow_oom; /* budget runs: CK_ERR_NOMEM is an answer, not a failure */
    uint32_t rng;
    /* results, read after join */
    int failures;
    char msg[256];
    long mallocs, frees, cross_frees, ooms;
} worker;

static uint32_t next(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* 512 B .. 8 MiB, mostly small, as a training step's mix is. */
static size_t pick_size(uint32_t *rng) {
    uint32_t r = next(rng);
    uint32_t kind = r % 100;
    uint32_t v = next(rng);
    if (kind < 70) return 512 + v % (64 * KiB - 512);
    if (kind < 95) return 64 * KiB + v % (MiB - 64 * KiB);
    return MiB + v % (7 * MiB + 1);
}

/* Words derived from the tag; the size is part of it so that a block handed
 * out twice at once shows up even when two tags collide. */
static void fill(const blk *b) {
    uint64_t w = ((uint64_t)b->tag << 32) ^ b->size;
    size_t nw = b->size / 8;
    uint64_t *p = (uint64_t *)(void *)b->ptr;
    for (size_t i = 0; i < nw; i++) p[i] = w ^ (i * 0x9E3779B97F4A7C15ull);
    for (size_t i = nw * 8; i < b->size; i++) b->ptr[i] = (unsigned char)(b->tag + i);
}

static int verify(const blk *b, size_t *bad) {
    uint64_t w = ((uint64_t)b->tag << 32) ^ b->size;
    size_t nw = b->size / 8;
    const uint64_t *p = (const uint64_t *)(const void *)b->ptr;
    for (size_t i = 0; i < nw; i++)
        if (p[i] != (w ^ (i * 0x9E3779B97F4A7C15ull))) {
            *bad = i * 8;
            return 0;
        }
    for (size_t i = nw * 8; i < b->size; i++)
        if (b->ptr[i] != (unsigned char)(b->tag + i)) {
            *bad = i;
            return 0;
        }
    return 1;
}

static void note_failure(worker *w, const char *what, const blk *b, size_t at) {
    if (!w->failures)
        snprintf(w->msg, sizeof w->msg, "thread %d: %s (block %p, %zu B, tag %u, byte %zu): %s",
                 w->id, what, (void *)b->ptr, b->size, b->tag, at, ck_last_error());
    w->failures++;
}

static void release(worker *w, blk *b, int cross) {
    size_t at = 0;
    if (!verify(b, &at)) note_failure(w, "pattern changed while the block was live", b, at);
    ck_status st = ck_free(w->pool, b->ptr, NULL);
    if (st != CK_OK) note_failure(w, ck_status_str(st), b, 0);
    w->frees++;
    if (cross) w->cross_frees++;
    b->ptr = NULL;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    blk win[WINDOW];
    memset(win, 0, sizeof win);
    uint32_t tag_seq = 0;
    for (int it = 0; it < w->iters && w->failures == 0; it++) {
        int slot = (int)(next(&w->rng) % WINDOW);
        blk *b = &win[slot];
        if (b->ptr) {
            uint32_t r = next(&w->rng) % 4;
            if (r == 0) {
                /* Hand it to whichever thread looks next; if the queue is
                 * full, free one from it first (someone else's, usually). */
                blk mine = *b, other = {0};
                pthread_mutex_lock(&handoff.mu);
                if (handoff.n == QCAP) other = handoff.items[--handoff.n];
                handoff.items[handoff.n++] = mine;
                pthread_mutex_unlock(&handoff.mu);
                b->ptr = NULL;
                if (other.ptr) release(w, &other, 1);
            } else {
                release(w, b, 0);
            }
        } else {
            blk nb = {NULL, pick_size(&w->rng), ((uint32_t)w->id << 24) | (tag_seq++ & 0xFFFFFF)};
            void *x = NULL;
            ck_status st = ck_malloc(w->pool, &x, nb.size, NULL);
            if (st == CK_ERR_NOMEM && w->allow_oom) {
                w->ooms++;
                continue;
            }
            if (st != CK_OK) {
                note_failure(w, "ck_malloc failed", &nb, 0);
                break;
            }
            if ((uintptr_t)x % 512 != 0) note_failure(w, "misaligned block", &nb, 0);
            nb.ptr = x;
            fill(&nb);
            w->mallocs++;
            *b = nb;
        }
        /* Now and then take a block from the queue and free it here. */
        if (next(&w->rng) % 3 == 0) {
            blk other = {0};
            pthread_mutex_lock(&handoff.mu);
            if (handoff.n) other = handoff.items[--handoff.n];
            pthread_mutex_unlock(&handoff.mu);
            if (other.ptr) release(w, &other, 1);
        }
    }
    for (int i = 0; i < WINDOW; i++)
        if (win[i].ptr) release(w, &win[i], 0);
    return NULL;
}

static int small_scale(void) {
#ifdef CKALLOC_SANITIZED
    return 1;
#else
    const char *s = getenv("CK_TEST_SCALE");
    return s && strcmp(s, "small") == 0;
#endif
}

static void run_stress(const char *conf, int nthreads, int iters, uint64_t budget) {
    ck_pool *p = pool_from_conf(conf);
    handoff.n = 0;
    worker w[NTHREADS];
    pthread_t t[NTHREADS];
    for (int i = 0; i < nthreads; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].pool = p;
        w[i].id = i;
        w[i].iters = iters;
        w[i].allow_oom = budget != 0;
        w[i].rng = 0x1234567u + 7919u * (uint32_t)i;
        ck_assert_int_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    long mallocs = 0, frees = 0, cross = 0, ooms = 0;
    for (int i = 0; i < nthreads; i++) {
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
        ck_assert_msg(w[i].failures == 0, "%s", w[i].msg);
        mallocs += w[i].mallocs;
        frees += w[i].frees;
        cross += w[i].cross_frees;
        ooms += w[i].ooms;
    }
    /* What is left in the hand-off queue is freed here, on the main thread. */
    worker mainw;
    memset(&mainw, 0, sizeof mainw);
    mainw.pool = p;
    mainw.id = -1;
    for (size_t i = 0; i < handoff.n; i++) release(&mainw, &handoff.items[i], 1);
    ck_assert_msg(mainw.failures == 0, "%s", mainw.msg);
    frees += mainw.frees;
    cross += mainw.cross_frees;
    handoff.n = 0;

    ck_assert_int_eq(mallocs, frees);
    ck_assert_int_gt(cross, 0);
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocation.current, 0);
    ck_assert_int_eq(st.allocated_bytes.current, 0);
    ck_assert_int_eq(st.requested_bytes.current, 0);
    ck_assert_int_eq(st.active_bytes.current, 0);
    ck_assert_uint_eq(st.allocation.allocated, (uint64_t)mallocs);
    ck_assert_uint_eq(st.allocation.freed, (uint64_t)frees);
    ck_assert_int_eq(st.physical_bytes.current, st.mapped_bytes.current);
    ck_assert_uint_eq(st.num_ooms, (uint64_t)ooms);
    if (budget) {
        ck_assert_uint_le((uint64_t)st.physical_bytes.peak, budget);
        ck_assert_uint_eq(st.budget, budget);
    }
    fprintf(stderr,
            "%s: %d threads, %ld mallocs, %ld frees (%ld cross-thread), %ld ooms, %llu retries, "
            "peak %lld MiB live, %lld MiB physical\n",
            conf, nthreads, mallocs, frees, cross, ooms, (unsigned long long)st.num_alloc_retries,
            (long long)(st.allocated_bytes.peak >> 20), (long long)(st.physical_bytes.peak >> 20));
    size_t released = 0;
    ASSERT_OK(ck_trim(p, &released));
    st = stats_of(p);
    ck_assert_int_eq(st.physical_bytes.current, 0);
    ASSERT_OK(ck_pool_destroy(p));
}

START_TEST(t_stress_pressure) {
    int small = small_scale();
    run_stress("backend=host,host_mem=8G", NTHREADS, small ? 1200 : 4000, 0);
}
END_TEST

/* Eager release unmaps and remaps all the time: the same checks must hold. */
START_TEST(t_stress_eager) {
    int small = small_scale();
    run_stress("backend=host,host_mem=8G,release=eager", NTHREADS, small ? 900 : 2500, 0);
}
END_TEST

/* A budget the threads press against: the pool unmaps cached memory under
 * the lock while others allocate. The working set usually fits; when it does
 * not, CK_ERR_NOMEM is allowed, but the budget must hold and be counted. */
START_TEST(t_stress_budget) {
    int small = small_scale();
    if (small)
        run_stress("backend=host,host_mem=8G,budget=48M", NTHREADS, 900, 48 * MiB);
    else
        run_stress("backend=host,host_mem=8G,budget=72M", NTHREADS, 2500, 72 * MiB);
}
END_TEST

int main(void) {
    Suite *s = suite_create("mt_stress");
    TCase *tc = ck_test_tcase(s, "mt_stress", 240);
    tcase_add_test(tc, t_stress_pressure);
    tcase_add_test(tc, t_stress_eager);
    tcase_add_test(tc, t_stress_budget);
    return ck_test_run(s);
}
