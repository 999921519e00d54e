/* Live statistics (alloc/live.c): a pool publishes its counters in
 * /dev/shm/ckalloc.<pid>, and the reader that ckalloc-stat uses
 * (ck__live_read) sees what ck_get_stats says; the segment is 0600, goes away
 * with the last pool and at exit, survives a forked child, and stale or
 * foreign segments are ignored with a reason. */
#include "testutil.h"

#include "ckalloc/ckalloc.h"
#include "pool.h" /* white box: the slot layout, pool_lock */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SEG_SIZE (sizeof(ck_live_header) + CK_LIVE_SLOTS * sizeof(ck_live_slot))

static char *seg_path(int pid) {
    static char buf[4][96];
    static int k;
    char *p = buf[k++ % 4];
    ck__live_path(pid, p, sizeof buf[0]);
    return p;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static ck_pool *child_pool; /* a forked child's pool, reachable at exit: not a leak */

static ck_live_proc *read_self(int top_wait_ms) {
    static ck_live_proc proc;
    char why[512];
    int rc = ck__live_read(getpid(), top_wait_ms, &proc, why, sizeof why);
    ck_assert_msg(rc == CK_LIVE_OK, "ck__live_read: rc %d: %s", rc, why);
    return &proc;
}

/* ---- reading with the owner answering ------------------------------------ */

typedef struct reader_arg {
    int wait_ms;
    ck_live_proc proc;
    int rc;
    char why[512];
    volatile int done;
} reader_arg;

static void *reader_main(void *v) {
    reader_arg *a = v;
    a->rc = ck__live_read(getpid(), a->wait_ms, &a->proc, a->why, sizeof a->why);
    __atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* A read that asks for the top list, answered by this thread's pool calls
 * (as a trainer's allocations would answer it). */
static void read_with_owner_wait(ck_pool *p, reader_arg *a, int wait_ms) {
    memset(a, 0, sizeof *a);
    a->wait_ms = wait_ms;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, reader_main, a), 0);
    while (!__atomic_load_n(&a->done, __ATOMIC_ACQUIRE)) {
        stats_of(p);
        usleep(200);
    }
    pthread_join(t, NULL);
    ck_assert_msg(a->rc == CK_LIVE_OK, "rc %d: %s", a->rc, a->why);
}

static void read_with_owner(ck_pool *p, reader_arg *a) { read_with_owner_wait(p, a, 5000); }

static const size_t sizes[] = {3 * MiB + 5, 7 * MiB, 512, 4000, 64 * KiB, 5 * MiB, 100 * KiB};
#define NSIZES (sizeof sizes / sizeof sizes[0])

START_TEST(t_publish_matches_stats) {
    ck_pool *p = host_pool("budget=1G");
    void *ptr[NSIZES];
    for (size_t i = 0; i < NSIZES; i++) ASSERT_OK(ck_malloc(p, &ptr[i], sizes[i], NULL));
    void *gone;
    ASSERT_OK(ck_malloc(p, &gone, 2 * MiB, NULL));
    ASSERT_OK(ck_free(p, gone, NULL));

    reader_arg a;
    read_with_owner(p, &a);
    ck_stats st = stats_of(p);
    const ck_live_proc *proc = &a.proc;
    ck_assert_int_eq(proc->pid, getpid());
    ck_assert_ptr_nonnull(strstr(proc->cmdline, "test_live"));
    uint64_t start;
    ck_assert_int_eq(ck__live_start_time(getpid(), &start), 0);
    ck_assert_uint_eq(proc->start_time, start);
    ck_assert_int_eq(proc->npools, 1);
    const ck_live_pool *lp = &proc->pools[0];
    ck_assert_int_eq(lp->busy, 0);
    ck_assert_str_eq(lp->backend, "host");
    ck_assert_uint_eq(lp->budget, GiB);
    ck_assert_uint_eq(lp->budget, st.budget);
    ck_assert_int_eq(lp->c.allocated_bytes.current, st.allocated_bytes.current);
    ck_assert_int_eq(lp->c.allocated_bytes.peak, st.allocated_bytes.peak);
    ck_assert_int_eq(lp->c.requested_bytes.current, st.requested_bytes.current);
    ck_assert_int_eq(lp->c.reserved_bytes.current, st.reserved_bytes.current);
    ck_assert_int_eq(lp->c.physical_bytes.current, st.physical_bytes.current);
    ck_assert_int_eq(lp->c.allocation.current, (int64_t)NSIZES);
    ck_assert_uint_eq(lp->c.allocation.allocated, NSIZES + 1);
    ck_assert_uint_eq(lp->c.num_map_calls, st.num_map_calls);
    /* The top list: every live block, largest first, with what was asked. */
    ck_assert_int_eq(lp->top_fresh, 1);
    ck_assert_uint_ne(lp->top_ns, 0);
    ck_assert_uint_eq(lp->largest_free, st.largest_free);
    ck_assert_uint_eq(lp->ntop, NSIZES);
    ck_assert_uint_eq(lp->top[0].size, 7 * MiB);
    ck_assert_uint_eq(lp->top[1].size, 5 * MiB);
    ck_assert_uint_eq(lp->top[2].size, 3 * MiB + 512);
    ck_assert_uint_eq(lp->top[2].requested, 3 * MiB + 5);
    ck_assert_uint_eq(lp->top[2].addr, (uintptr_t)ptr[0]);
    ck_assert_uint_eq(lp->top[NSIZES - 1].size, 512);
    for (size_t k = 1; k < NSIZES; k++) ck_assert_uint_ge(lp->top[k - 1].size, lp->top[k].size);
    ck_assert_str_eq(lp->top[0].tag, "");

    /* Freed blocks leave the list at the next answer. */
    ASSERT_OK(ck_free(p, ptr[1], NULL));
    read_with_owner(p, &a);
    ck_assert_uint_eq(a.proc.pools[0].ntop, NSIZES - 1);
    ck_assert_uint_eq(a.proc.pools[0].top[0].size, 5 * MiB);
    ck_assert_int_eq(a.proc.pools[0].c.allocated_bytes.current,
                     stats_of(p).allocated_bytes.current);
    for (size_t i = 0; i < NSIZES; i++)
        if (i != 1) ASSERT_OK(ck_free(p, ptr[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Counters need no answer from the owner: they are read where the pool
 * writes them. The top list of an owner that makes no call is not refreshed,
 * and the reader says so instead of waiting forever. */
START_TEST(t_idle_owner) {
    ck_pool *p = host_pool(NULL);
    void *a, *b;
    ASSERT_OK(ck_malloc(p, &a, 3 * MiB, NULL));
    const ck_live_proc *proc = read_self(-1);
    ck_assert_int_eq(proc->npools, 1);
    ck_assert_int_eq(proc->pools[0].c.allocated_bytes.current, 3 * MiB);
    ck_assert_int_eq(proc->pools[0].top_fresh, 0);
    ck_assert_uint_eq(proc->pools[0].top_ns, 0);

    /* This thread is the owner: nobody answers within 30 ms. */
    proc = read_self(30);
    ck_assert_int_eq(proc->pools[0].top_fresh, 0);
    ck_assert_uint_eq(proc->pools[0].top_ns, 0);
    ck_assert_uint_eq(proc->pools[0].ntop, 0);

    /* The pending request is answered as the next call (the allocation of
     * b) releases the lock. Later reads of an idle owner show that list,
     * with its time, but not as fresh. */
    ASSERT_OK(ck_malloc(p, &b, 1 * MiB, NULL));
    ASSERT_OK(ck_free(p, a, NULL));
    proc = read_self(0);
    ck_assert_int_eq(proc->pools[0].c.allocation.current, 1);
    ck_assert_int_eq(proc->pools[0].top_fresh, 0);
    ck_assert_uint_ne(proc->pools[0].top_ns, 0);
    ck_assert_uint_eq(proc->pools[0].ntop, 2);
    ck_assert_uint_eq(proc->pools[0].top[0].size, 3 * MiB);
    ck_assert_uint_eq(proc->pools[0].top[1].size, MiB);
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_segment_mode_and_lifetime) {
    const char *path = seg_path(getpid());
    ck_assert_msg(!exists(path), "%s exists before any pool", path);
    ck_pool *p1 = host_pool(NULL);
    struct stat st;
    ck_assert_int_eq(lstat(path, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_uint_eq(st.st_mode & 07777, 0600);
    ck_assert_uint_eq(st.st_uid, geteuid());
    ck_assert_uint_eq((uint64_t)st.st_size, SEG_SIZE);
    ck_pool *p2 = host_pool(NULL);
    ck_assert_int_eq(read_self(-1)->npools, 2);
    /* The segment goes with the last pool, and comes back with a new one. */
    ASSERT_OK(ck_pool_destroy(p1));
    ck_assert(exists(path));
    ck_assert_int_eq(read_self(-1)->npools, 1);
    ASSERT_OK(ck_pool_destroy(p2));
    ck_assert(!exists(path));
    p1 = host_pool(NULL);
    ck_assert(exists(path));
    ASSERT_OK(ck_pool_destroy(p1));
    ck_assert(!exists(path));
}
END_TEST

START_TEST(t_live_zero_publishes_nothing) {
    ck_pool *p = host_pool("live=0");
    void *a;
    ASSERT_OK(ck_malloc(p, &a, MiB, NULL));
    ck_assert(!exists(seg_path(getpid())));
    ck_live_proc proc;
    char why[512];
    ck_assert_int_eq(ck__live_read(getpid(), -1, &proc, why, sizeof why), CK_LIVE_NONE);
    ck_assert_ptr_nonnull(strstr(why, seg_path(getpid())));
    /* Next to a published pool, it stays out of the segment. */
    ck_pool *q = host_pool(NULL);
    ck_assert_int_eq(read_self(-1)->npools, 1);
    ck_assert_int_eq(read_self(-1)->pools[0].c.allocation.current, 0);
    ck_assert_int_eq(stats_of(p).allocation.current, 1);
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_pool_destroy(q));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* More pools than slots: the extra ones keep private counters and work. */
START_TEST(t_more_pools_than_slots) {
    ck_pool *p[CK_LIVE_SLOTS + 2];
    for (int i = 0; i < CK_LIVE_SLOTS + 2; i++) p[i] = host_pool("host_mem=256M");
    ck_assert_int_eq(read_self(-1)->npools, CK_LIVE_SLOTS);
    void *a;
    ASSERT_OK(ck_malloc(p[CK_LIVE_SLOTS + 1], &a, MiB, NULL));
    ck_assert_int_eq(stats_of(p[CK_LIVE_SLOTS + 1]).allocated_bytes.current, MiB);
    for (int k = 0; k < CK_LIVE_SLOTS; k++)
        ck_assert_int_eq(read_self(-1)->pools[k].c.allocated_bytes.current, 0);
    ASSERT_OK(ck_free(p[CK_LIVE_SLOTS + 1], a, NULL));
    /* A freed slot is reused by the next pool, with its own counters. */
    ASSERT_OK(ck_pool_destroy(p[3]));
    ck_pool *n = host_pool("host_mem=256M");
    ASSERT_OK(ck_malloc(n, &a, 2 * MiB, NULL));
    const ck_live_proc *proc = read_self(-1);
    ck_assert_int_eq(proc->npools, CK_LIVE_SLOTS);
    int found = 0;
    for (int k = 0; k < proc->npools; k++)
        if (proc->pools[k].c.allocated_bytes.current == (int64_t)(2 * MiB)) found++;
    ck_assert_int_eq(found, 1);
    ASSERT_OK(ck_free(n, a, NULL));
    ASSERT_OK(ck_pool_destroy(n));
    for (int i = 0; i < CK_LIVE_SLOTS + 2; i++)
        if (i != 3) ASSERT_OK(ck_pool_destroy(p[i]));
    ck_assert(!exists(seg_path(getpid())));
}
END_TEST

/* An owner whose hot part never holds still (here: seq left odd, as if a
 * write never ended) answers with a copy taken under its lock instead. */
START_TEST(t_answer_when_direct_copy_fails) {
    ck_pool *p = host_pool(NULL);
    void *a, *b;
    ASSERT_OK(ck_malloc(p, &a, 3 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, &b, 5000, NULL));
    atomic_fetch_add(p->seq, 1);
    reader_arg r;
    read_with_owner_wait(p, &r, -1); /* counters only */
    ck_stats st = stats_of(p);
    const ck_live_pool *lp = &r.proc.pools[0];
    ck_assert_int_eq(r.proc.npools, 1);
    ck_assert_int_eq(lp->busy, 0);
    ck_assert_int_eq(lp->answered, 1);
    ck_assert_str_eq(lp->backend, "host");
    ck_assert_int_eq(lp->c.allocated_bytes.current, st.allocated_bytes.current);
    ck_assert_int_eq(lp->c.allocation.current, 2);
    ck_assert_int_eq(lp->c.requested_bytes.current, 3 * MiB + 5000);
    ck_assert_int_eq(lp->top_fresh, 0);

    read_with_owner_wait(p, &r, 5000); /* with the top list */
    lp = &r.proc.pools[0];
    ck_assert_int_eq(lp->answered, 1);
    ck_assert_int_eq(lp->top_fresh, 1);
    ck_assert_uint_eq(lp->ntop, 2);
    ck_assert_uint_eq(lp->top[0].size, 3 * MiB);
    ck_assert_uint_eq(lp->top[1].requested, 5000);
    atomic_fetch_sub(p->seq, 1);
    ck_assert_int_eq(read_self(-1)->pools[0].answered, 0);
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* A pool lock held through the whole read: the pool is reported busy. */
START_TEST(t_busy_owner) {
    ck_pool *p = host_pool(NULL);
    pool_lock(p);
    const ck_live_proc *proc = read_self(-1);
    pool_unlock(p);
    ck_assert_int_eq(proc->npools, 1);
    ck_assert_int_eq(proc->pools[0].busy, 1);
    ck_assert_int_eq(read_self(-1)->pools[0].busy, 0);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* The reader kept open by ckalloc-stat --watch: it follows the owner's
 * counters, finds the new segment when the pools went and came back, and
 * says when the owner exited. */
START_TEST(t_reader_handle) {
    ck_pool *p = host_pool(NULL);
    ck_live_reader r;
    ck_live_proc proc;
    char why[512];
    ck_assert_int_eq(ck__live_open(getpid(), &r, why, sizeof why), CK_LIVE_OK);
    void *a;
    ASSERT_OK(ck_malloc(p, &a, 3 * MiB, NULL));
    ck_assert_int_eq(ck__live_snapshot(&r, -1, &proc, why, sizeof why), CK_LIVE_OK);
    ck_assert_int_eq(proc.npools, 1);
    ck_assert_int_eq(proc.pools[0].c.allocated_bytes.current, 3 * MiB);
    ASSERT_OK(ck_free(p, a, NULL));
    ck_assert_int_eq(ck__live_snapshot(&r, -1, &proc, why, sizeof why), CK_LIVE_OK);
    ck_assert_int_eq(proc.pools[0].c.allocated_bytes.current, 0);
    ASSERT_OK(ck_pool_destroy(p));
    ck_assert_int_eq(ck__live_snapshot(&r, -1, &proc, why, sizeof why), CK_LIVE_OK);
    ck_assert_int_eq(proc.npools, 0);
    p = host_pool(NULL);
    ASSERT_OK(ck_malloc(p, &a, 5 * MiB, NULL));
    usleep(300 * 1000); /* past the 250 ms between checks of the name */
    ck_assert_int_eq(ck__live_snapshot(&r, -1, &proc, why, sizeof why), CK_LIVE_OK);
    ck_assert_int_eq(proc.npools, 1);
    ck_assert_int_eq(proc.pools[0].c.allocated_bytes.current, 5 * MiB);
    ck__live_close(&r);
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_pool_destroy(p));

    /* An owner that exits. One pipe each way: ready, then go. */
    int ready[2], go[2];
    ck_assert_int_eq(pipe(ready), 0);
    ck_assert_int_eq(pipe(go), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char c;
        close(ready[0]);
        close(go[1]);
        if (ck_pool_create_conf(&child_pool, "backend=host,host_mem=256M") != CK_OK) _exit(2);
        if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1) _exit(3);
        exit(0);
    }
    close(ready[1]);
    close(go[0]);
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    ck_assert_int_eq(ck__live_open(pid, &r, why, sizeof why), CK_LIVE_OK);
    ck_assert_int_eq(ck__live_snapshot(&r, -1, &proc, why, sizeof why), CK_LIVE_OK);
    ck_assert_int_eq(proc.npools, 1);
    ck_assert_int_eq(write(go[1], "x", 1), 1);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_int_eq(ck__live_snapshot(&r, -1, &proc, why, sizeof why), CK_LIVE_NONE);
    ck_assert_msg(strstr(why, "exited"), "%s", why);
    ck__live_close(&r);
    close(ready[0]);
    close(go[1]);
}
END_TEST

/* ---- processes: exit and fork -------------------------------------------- */

START_TEST(t_removed_at_exit) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Under TSan the parent has no thread here, so the child may start one. */
        if (ck_pool_create_conf(&child_pool, "backend=host,host_mem=256M") != CK_OK) _exit(2);
        void *a;
        if (ck_malloc(child_pool, &a, MiB, NULL) != CK_OK) _exit(3);
        if (!exists(seg_path(getpid()))) _exit(4);
        exit(0); /* the pool is still alive: the destructor removes the segment */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    ck_assert_msg(!exists(seg_path(pid)), "%s left behind", seg_path(pid));
}
END_TEST

START_TEST(t_fork_child_keeps_parent_segment) {
    ck_pool *p = host_pool(NULL);
    void *a, *b;
    ASSERT_OK(ck_malloc(p, &a, 3 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, &b, MiB, NULL));
    ASSERT_OK(ck_free(p, b, NULL)); /* cached: the child reuses it */
    int64_t before = read_self(-1)->pools[0].c.allocated_bytes.current;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* The inherited pool counts privately: the parent's slot is not
         * touched, and the child publishes nothing for it. */
        void *c;
        if (ck_malloc(p, &c, MiB, NULL) != CK_OK) _exit(2);
        ck_stats st;
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        if (ck_get_stats(p, &st) != CK_OK || st.allocated_bytes.current != before + (int64_t)MiB)
            _exit(3);
        ck_live_proc proc;
        char why[512];
        if (ck__live_read(getppid(), -1, &proc, why, sizeof why) != CK_LIVE_OK) _exit(4);
        if (proc.npools != 1 || proc.pools[0].c.allocated_bytes.current != before) _exit(5);
        if (exists(seg_path(getpid()))) _exit(6);
        if (CK_TSAN) exit(0); /* the destructor must leave the parent's segment alone */
        /* A new pool in the child gets the child's own segment. */
        ck_pool *q;
        if (ck_pool_create_conf(&q, "backend=host,host_mem=256M") != CK_OK) _exit(7);
        if (ck__live_read(getpid(), -1, &proc, why, sizeof why) != CK_LIVE_OK || proc.npools != 1)
            _exit(8);
        if (ck_pool_destroy(q) != CK_OK || exists(seg_path(getpid()))) _exit(9);
        if (ck_pool_create_conf(&child_pool, "backend=host,host_mem=256M") != CK_OK) _exit(10);
        exit(0); /* runs the destructor: it must remove only the child's segment */
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    ck_assert(exists(seg_path(getpid())));
    ck_assert(!exists(seg_path(pid)));
    const ck_live_proc *proc = read_self(-1);
    ck_assert_int_eq(proc->pools[0].c.allocated_bytes.current, before);
    ck_assert_int_eq(stats_of(p).allocated_bytes.current, before);
    /* The parent still publishes. */
    ASSERT_OK(ck_malloc(p, &b, MiB, NULL));
    ck_assert_int_eq(read_self(-1)->pools[0].c.allocated_bytes.current, before + (int64_t)MiB);
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- stale and foreign segments ----------------------------------------- */

/* A header as ckalloc writes it for pid. */
static ck_live_header fake_header(int pid, uint64_t start_time) {
    ck_live_header h;
    memset(&h, 0, sizeof h);
    h.magic = CK_LIVE_MAGIC;
    h.version = CK_LIVE_VERSION;
    h.header_size = sizeof h;
    h.slot_size = sizeof(ck_live_slot);
    h.nslots = CK_LIVE_SLOTS;
    h.pid = pid;
    h.uid = (uint32_t)geteuid();
    h.start_time = start_time;
    snprintf(h.cmdline, sizeof h.cmdline, "fake %d", pid);
    return h;
}

/* Write path: the header (if any), then zeros up to size; mode as given. */
static void write_seg(const char *path, const ck_live_header *h, size_t size, mode_t mode) {
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    ck_assert_int_eq(fchmod(fd, mode), 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    if (h)
        ck_assert_int_eq(pwrite(fd, h, size < sizeof *h ? size : sizeof *h, 0),
                         (ssize_t)(size < sizeof *h ? size : sizeof *h));
    close(fd);
}

static void expect_ignored(int pid, const char *words) {
    ck_live_proc proc;
    char why[512];
    int rc = ck__live_read(pid, -1, &proc, why, sizeof why);
    ck_assert_msg(rc == CK_LIVE_IGNORED, "pid %d: rc %d (%s), expected IGNORED", pid, rc, why);
    ck_assert_msg(strstr(why, seg_path(pid)) && strstr(why, words), "pid %d: '%s' lacks '%s'", pid,
                  why, words);
}

typedef struct seen {
    int pids[16];
    char why[16][512];
    int rc[16];
    int n;
    const int *want;
    int nwant;
} seen;

static void on_scan(void *ctx, int pid, int rc, const ck_live_proc *proc, const char *why) {
    seen *s = ctx;
    (void)proc;
    for (int i = 0; i < s->nwant; i++)
        if (s->want[i] == pid && s->n < 16) {
            s->pids[s->n] = pid;
            s->rc[s->n] = rc;
            snprintf(s->why[s->n], sizeof s->why[0], "%s", why);
            s->n++;
        }
}

static pid_t dead_pid(void) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) _exit(0);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    return pid;
}

START_TEST(t_stale_segments_ignored) {
    /* The owner is gone. */
    pid_t dead = dead_pid();
    ck_live_header h = fake_header(dead, 12345);
    write_seg(seg_path(dead), &h, SEG_SIZE, 0600);
    expect_ignored(dead, "is gone");

    /* The pid is alive but belongs to another process (reused). */
    pid_t alive = fork();
    ck_assert_int_ge(alive, 0);
    if (alive == 0) {
        pause();
        _exit(0);
    }
    uint64_t start;
    ck_assert_int_eq(ck__live_start_time(alive, &start), 0);
    h = fake_header(alive, start + 1);
    write_seg(seg_path(alive), &h, SEG_SIZE, 0600);
    expect_ignored(alive, "was reused");

    /* The same file with the right start time is a valid (empty) segment. */
    h = fake_header(alive, start);
    write_seg(seg_path(alive), &h, SEG_SIZE, 0600);
    ck_live_proc proc;
    char why[512];
    ck_assert_int_eq(ck__live_read(alive, 20, &proc, why, sizeof why), CK_LIVE_OK);
    ck_assert_int_eq(proc.npools, 0);
    ck_assert_str_eq(proc.cmdline, h.cmdline);

    /* The scan reports both, the stale one as ignored. */
    int want[] = {dead, alive};
    seen s = {.want = want, .nwant = 2};
    ck_assert_int_ge(ck__live_scan(-1, on_scan, &s), 2);
    ck_assert_int_eq(s.n, 2);
    for (int i = 0; i < 2; i++) {
        if (s.pids[i] == dead) {
            ck_assert_int_eq(s.rc[i], CK_LIVE_IGNORED);
            ck_assert_ptr_nonnull(strstr(s.why[i], "is gone"));
        } else {
            ck_assert_int_eq(s.rc[i], CK_LIVE_OK);
        }
    }
    kill(alive, SIGKILL);
    waitpid(alive, NULL, 0);
    unlink(seg_path(dead));
    unlink(seg_path(alive));
}
END_TEST

/* A segment with our own name at the first pool: replaced if an earlier
 * process with our pid left it, kept if it may be live (another copy of
 * ckalloc in this process); then the pool stays private. */
START_TEST(t_own_name_taken) {
    const char *path = seg_path(getpid());
    uint64_t start;
    ck_assert_int_eq(ck__live_start_time(getpid(), &start), 0);
    ck_live_header h = fake_header(getpid(), start + 1);
    write_seg(path, &h, SEG_SIZE, 0600);
    ck_pool *p = host_pool(NULL);
    const ck_live_proc *proc = read_self(-1);
    ck_assert_int_eq(proc->npools, 1);
    ck_assert_uint_eq(proc->start_time, start);
    ASSERT_OK(ck_pool_destroy(p));
    ck_assert(!exists(path));

    h = fake_header(getpid(), start);
    write_seg(path, &h, SEG_SIZE, 0600);
    p = host_pool(NULL);
    void *a;
    ASSERT_OK(ck_malloc(p, &a, MiB, NULL));
    proc = read_self(-1);
    ck_assert_str_eq(proc->cmdline, h.cmdline); /* still the other one's */
    ck_assert_int_eq(proc->npools, 0);
    ck_assert_int_eq(stats_of(p).allocated_bytes.current, MiB);
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_pool_destroy(p));
    ck_assert(exists(path)); /* not ours to remove */
    unlink(path);
}
END_TEST

START_TEST(t_foreign_segments_ignored) {
    /* Names of pids no process has (above the kernel's pid limit), distinct
     * per test process. */
    int base = 900000000 + (int)(getpid() % 1000000) * 10;
    ck_live_header h = fake_header(base + 0, 1);

    write_seg(seg_path(base + 0), NULL, SEG_SIZE, 0600);
    expect_ignored(base + 0, "bad magic");

    write_seg(seg_path(base + 1), NULL, 10, 0600);
    expect_ignored(base + 1, "wrong size");

    h = fake_header(base + 2, 1);
    h.version = 99;
    write_seg(seg_path(base + 2), &h, SEG_SIZE, 0600);
    expect_ignored(base + 2, "layout version 99");

    h = fake_header(base + 3, 1);
    write_seg(seg_path(base + 3), &h, SEG_SIZE + 4096, 0600);
    expect_ignored(base + 3, "wrong size");

    h = fake_header(base + 4, 1);
    write_seg(seg_path(base + 4), &h, SEG_SIZE, 0644);
    expect_ignored(base + 4, "mode 0644");

    h = fake_header(base + 1234, 1); /* names another pid */
    write_seg(seg_path(base + 5), &h, SEG_SIZE, 0600);
    expect_ignored(base + 5, "foreign");

    unlink(seg_path(base + 6));
    rmdir(seg_path(base + 6));
    ck_assert_int_eq(mkdir(seg_path(base + 6), 0700), 0);
    expect_ignored(base + 6, "not a regular file");

    int nwant = 7;
    if (geteuid() == 0) {
        /* As root the test can make a file that another user owns. */
        h = fake_header(base + 7, 1);
        write_seg(seg_path(base + 7), &h, SEG_SIZE, 0600);
        ck_assert_int_eq(chown(seg_path(base + 7), 12345, 12345), 0);
        expect_ignored(base + 7, "owned by uid 12345");
        nwant = 8;
    }

    int want[8];
    for (int i = 0; i < nwant; i++) want[i] = base + i;
    seen s = {.want = want, .nwant = nwant};
    ck_assert_int_ge(ck__live_scan(-1, on_scan, &s), nwant);
    ck_assert_int_eq(s.n, nwant);
    for (int i = 0; i < s.n; i++) {
        ck_assert_int_eq(s.rc[i], CK_LIVE_IGNORED);
        ck_assert_ptr_nonnull(strstr(s.why[i], seg_path(s.pids[i])));
    }
    for (int i = 0; i < 8; i++) unlink(seg_path(base + i));
    rmdir(seg_path(base + 6));
}
END_TEST

/* ck__largest_free (answered to readers and ck_get_stats) walks free blocks
 * by chunk index; the reference here is the plain walk by address. */
static uint64_t largest_free_reference(ck_pool *p) {
    uint64_t best = 0;
    /* Large blocks kept whole on the quick slots hold their chunks. */
    for (uint32_t k = 0; k < p->nlquick; k++)
        if (p->lquick[k]->size > best) best = p->lquick[k]->size;
    for (int h = 0; h < 2; h++) {
        const ck_heap *heap = h ? &p->small : &p->large;
        for (unsigned i = 0; i < CK_NBINS; i++)
            for (ck_block *b = heap->bins[i]; b; b = b->fnext) {
                if (b->small) {
                    if (b->size > best) best = b->size;
                    continue;
                }
                ck_region *r = b->region;
                uintptr_t a = b->addr, end = b->addr + b->size, run_start = a;
                while (a < end) {
                    size_t c = (a - r->va) / p->gran;
                    int mapped = r->chunk[c].mapped;
                    uintptr_t next = r->va + (c + 1) * p->gran;
                    if (next > end) next = end;
                    if (!mapped) run_start = next;
                    else if (next - run_start > best) best = next - run_start;
                    a = next;
                }
            }
    }
    return best;
}

START_TEST(t_largest_free_matches_reference) {
    /* A small budget and trims leave unmapped holes between mapped runs. */
    ck_pool *p = host_pool("host_mem=1G,budget=160M");
    void *ptr[48] = {0};
    uint32_t rng = 7;
    int changes = 0, trimmed = 0;
    uint64_t last = 0;
    for (int step = 0; step < 3000; step++) {
        rng = rng * 1103515245u + 12345u;
        int k = (int)((rng >> 8) % 48);
        if (ptr[k]) {
            ASSERT_OK(ck_free(p, ptr[k], NULL));
            ptr[k] = NULL;
        } else {
            size_t n = (rng >> 20) % 4 == 0 ? ((rng >> 12) % 9 + 1) * 2 * MiB + 4096
                                            : ((rng >> 12) % 600 + 1) * KiB;
            ck_status st = ck_malloc(p, &ptr[k], n, NULL);
            if (st == CK_ERR_NOMEM) ptr[k] = NULL;
            else ASSERT_OK(st);
        }
        if (step % 97 == 0) {
            size_t rel = 0;
            ASSERT_OK(ck_trim(p, &rel));
            trimmed += rel > 0;
        }
        pool_lock(p);
        uint64_t got = ck__largest_free(p), want = largest_free_reference(p);
        pool_unlock(p);
        ck_assert_msg(got == want, "step %d: largest_free %llu, reference %llu", step,
                      (unsigned long long)got, (unsigned long long)want);
        changes += want != last;
        last = want;
    }
    /* The workload did move the answer around, and did make holes. */
    ck_assert_int_ge(changes, 100);
    ck_assert_int_ge(trimmed, 5);
    for (int k = 0; k < 48; k++)
        if (ptr[k]) ASSERT_OK(ck_free(p, ptr[k], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_start_time) {
    uint64_t a, b;
    ck_assert_int_eq(ck__live_start_time(getpid(), &a), 0);
    ck_assert_int_eq(ck__live_start_time(getpid(), &b), 0);
    ck_assert_uint_eq(a, b);
    ck_assert_uint_gt(a, 0);
    ck_assert_int_eq(ck__live_start_time(dead_pid(), &a), -1);
}
END_TEST

int main(void) {
    Suite *s = suite_create("live");
    TCase *tc = ck_test_tcase(s, "live", 60);
    tcase_add_test(tc, t_publish_matches_stats);
    tcase_add_test(tc, t_idle_owner);
    tcase_add_test(tc, t_segment_mode_and_lifetime);
    tcase_add_test(tc, t_live_zero_publishes_nothing);
    tcase_add_test(tc, t_more_pools_than_slots);
    tcase_add_test(tc, t_answer_when_direct_copy_fails);
    tcase_add_test(tc, t_busy_owner);
    tcase_add_test(tc, t_reader_handle);
    tcase_add_test(tc, t_removed_at_exit);
    tcase_add_test(tc, t_fork_child_keeps_parent_segment);
    tcase_add_test(tc, t_stale_segments_ignored);
    tcase_add_test(tc, t_own_name_taken);
    tcase_add_test(tc, t_foreign_segments_ignored);
    tcase_add_test(tc, t_largest_free_matches_reference);
    tcase_add_test(tc, t_start_time);
    return ck_test_run(s);
}
