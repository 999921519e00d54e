/* bench_live: what live statistics cost the allocating thread.
 *
 * Prints ONE JSON line. Usage:
 *   bench_live [--rounds N] [--pairs N] [--period-us N] [-v]   (-v: each round on stderr)
 *
 * The cached ck_malloc+ck_free pair (sizes rotating from 512 B to 32 MiB,
 * 64 blocks of a mix live, as in bench_alloc) is timed on host pools in six
 * configurations, interleaved round by round (the order rotates) so that
 * drift of a shared machine hits all of them alike:
 *   live0           a pool with live=0 (private counters)
 *   live1           a pool with live=1, nobody reading
 *   wakeup          a reader process that wakes every period and reads
 *                   nothing: what a 1 kHz neighbour costs on this machine
 *   watch_counters  the reader reads the counters every period through a
 *                   reader kept open (ck__live_snapshot), as
 *                   `ckalloc-stat --watch` and an exporter do
 *   watch_top       the same, also asking for the top list, as
 *                   `ckalloc-stat -p PID --watch SEC` does per refresh
 *   oneshot_top     ck__live_read (open, validate, map, read, unmap) every
 *                   period, as a new `ckalloc-stat -p PID` would
 * The period is 1 ms. The reader is a forked process, as ckalloc-stat is: a
 * thread inside the trainer would unmap in the trainer's own address space.
 * Each figure is the median over rounds of ns per pair; ratios compare
 * medians. noise_pct is the spread (interquartile range / median) of the
 * live1 rounds: a ratio within it is not measurable. On a machine with few
 * cores the reader's own CPU time competes with the trainer; the *_vs_wakeup
 * ratios take the bare wakeups out. */
#include "bench_util.h"
#include "ckalloc/ckalloc.h"
#include "live.h"

#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>



static void die(const char *what) {
    fprintf(stderr, "bench_live: %s: %s\n", what, ck_last_error());
    exit(1);
}

enum { LIVE0, LIVE1, WAKEUP, WATCH_COUNTERS, WATCH_TOP, ONESHOT_TOP, NCONF };
static const char *const names[NCONF] = {"live0",          "live1",     "wakeup",
                                         "watch_counters", "watch_top", "oneshot_top"};

/* ---- the reader process ------------------------------------------------------ */

enum { MAXLAT = 1 << 14 };

/* Shared with the reader (MAP_SHARED anonymous), per configuration. */
typedef struct shared {
    atomic_long reads[NCONF], fresh[NCONF], answered[NCONF], failed;
    atomic_long nlat[NCONF];
    uint32_t lat_ns[NCONF][MAXLAT]; /* duration of each read, ns */
} shared;

static int ctl[2], ack[2];
static ck_live_reader rd; /* the --watch reader, opened at the first watch round */
static int rd_open;

static void reader_read(shared *sh, int parent, int conf, int first) {
    static ck_live_proc proc;
    if (conf == WAKEUP) return;
    /* The first read of a round is acknowledged to the owner, who waits for
     * it and so cannot answer a top-list request: counters only. */
    int wait = conf == WATCH_COUNTERS || first ? -1 : 200;
    char why[512];
    uint64_t t0 = now_ns();
    int rc;
    if (conf == ONESHOT_TOP) {
        rc = ck__live_read(parent, wait, &proc, why, sizeof why);
    } else {
        rc = rd_open ? CK_LIVE_OK : ck__live_open(parent, &rd, why, sizeof why);
        rd_open = rc == CK_LIVE_OK;
        if (rc == CK_LIVE_OK) rc = ck__live_snapshot(&rd, wait, &proc, why, sizeof why);
    }
    uint64_t dt = now_ns() - t0;
    if (rc != CK_LIVE_OK || proc.npools < 1) {
        atomic_fetch_add(&sh->failed, 1);
        return;
    }
    if (first) return;
    atomic_fetch_add(&sh->reads[conf], 1);
    for (int i = 0; i < proc.npools; i++) {
        atomic_fetch_add(&sh->fresh[conf], proc.pools[i].top_fresh);
        atomic_fetch_add(&sh->answered[conf], proc.pools[i].answered);
    }
    long k = atomic_fetch_add(&sh->nlat[conf], 1);
    if (k < MAXLAT) sh->lat_ns[conf][k] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
}

/* Commands on ctl: a configuration number (start reading that way), 'S'
 * (stop) or 'Q' (quit). Each is acknowledged on ack once in effect. */
static void reader_main(shared *sh, int parent, long period_ns) {
    int conf = -1;
    uint64_t next = 0;
    for (;;) {
        int timeout = -1;
        if (conf >= 0) {
            uint64_t now = now_ns();
            timeout = next > now ? (int)((next - now) / 1000000u) : 0;
        }
        struct pollfd pf = {ctl[0], POLLIN, 0};
        if (poll(&pf, 1, timeout) > 0) {
            char c;
            if (read(ctl[0], &c, 1) != 1 || c == 'Q') _exit(0);
            conf = c == 'S' ? -1 : c;
            if (conf >= 0) {
                reader_read(sh, parent, conf, 1);
                next = now_ns() + (uint64_t)period_ns;
            }
            if (write(ack[1], &c, 1) != 1) _exit(1);
            continue;
        }
        if (conf < 0) continue;
        uint64_t now = now_ns();
        if (now < next) { /* poll has ms resolution: sleep the rest */
            struct timespec ts = {0, (long)(next - now)};
            nanosleep(&ts, NULL);
            struct pollfd q = {ctl[0], POLLIN, 0};
            if (poll(&q, 1, 0) > 0) continue; /* a command first */
        }
        reader_read(sh, parent, conf, 0);
        next += (uint64_t)period_ns;
        if (next < now_ns()) next = now_ns() + (uint64_t)period_ns;
    }
}

static void command(char c) {
    char a;
    if (write(ctl[1], &c, 1) != 1 || read(ack[0], &a, 1) != 1 || a != c) {
        fprintf(stderr, "bench_live: the reader process did not answer\n");
        exit(1);
    }
}

/* ---- the timed loop ------------------------------------------------------------ */

enum { WINDOW = 64 };



/* A pool with 64 blocks of the mix live and every pair size cached once. */
static ck_pool *make_pool(const char *conf, void **live) {
    ck_pool *p;
    if (ck_pool_create_conf(&p, conf) != CK_OK) die("ck_pool_create");
    uint64_t rng = 99;
    for (int i = 0; i < WINDOW; i++)
        if (ck_malloc(p, &live[i], mix_size(&rng), NULL) != CK_OK) die("ck_malloc");
    for (size_t k = 0; k < NPAIR; k++) {
        void *q;
        if (ck_malloc(p, &q, pair_sizes[k], NULL) != CK_OK || ck_free(p, q, NULL) != CK_OK)
            die("warm");
    }
    return p;
}

/* ns per malloc+free pair over `pairs` pairs, sizes rotating. */
static double run_pairs(ck_pool *p, long pairs) {
    uint64_t t0 = now_ns();
    for (long i = 0; i < pairs; i++) {
        void *q;
        size_t n = pair_sizes[(size_t)i % NPAIR];
        if (ck_malloc(p, &q, n, NULL) != CK_OK) die("ck_malloc");
        if (ck_free(p, q, NULL) != CK_OK) die("ck_free");
    }
    return (double)(now_ns() - t0) / (double)pairs;
}


static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double quantile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[(int)(q * (n - 1) + 0.5)];
}


int main(int argc, char **argv) {
    int rounds = 21, verbose = 0;
    long pairs = 300000, period_us = 1000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--pairs") == 0 && i + 1 < argc) pairs = atol(argv[++i]);
        else if (strcmp(argv[i], "--period-us") == 0 && i + 1 < argc) period_us = atol(argv[++i]);
        else if (strcmp(argv[i], "-v") == 0) verbose = 1;
        /* bench.sh passes BENCH_ARGS to every benchmark: take bench_alloc's. */
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc) pairs = atol(argv[++i]) / 2;
        else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc) i++;
        else {
            fprintf(stderr, "usage: bench_live [--rounds N] [--pairs N] [--period-us N] [-v]\n");
            return 2;
        }
    }
    if (rounds < 3) rounds = 3;
    if (pairs < 1000) pairs = 1000;
    if (period_us < 10) period_us = 10;

    void *live_a[WINDOW], *live_b[WINDOW];
    ck_pool *pa = make_pool("backend=host,host_mem=64G,live=1", live_a);
    ck_pool *pb = make_pool("backend=host,host_mem=64G,live=0", live_b);

    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || pipe(ctl) != 0 || pipe(ack) != 0) {
        perror("bench_live");
        return 1;
    }
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        perror("bench_live: fork");
        return 1;
    }
    if (child == 0) {
        close(ctl[1]);
        close(ack[0]);
        reader_main(sh, (int)parent, period_us * 1000);
        _exit(0);
    }
    close(ctl[0]);
    close(ack[1]);

    double *ns[NCONF];
    for (int c = 0; c < NCONF; c++) {
        ns[c] = calloc((size_t)rounds, sizeof(double));
        if (!ns[c]) return 1;
    }
    run_pairs(pa, pairs / 4); /* warm both paths once */
    run_pairs(pb, pairs / 4);
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < NCONF; k++) {
            int c = (r + k) % NCONF;
            if (c >= WAKEUP) command((char)c);
            ns[c][r] = run_pairs(c == LIVE0 ? pb : pa, pairs);
            if (c >= WAKEUP) command('S');
        }
        if (verbose) {
            fprintf(stderr, "round %2d:", r);
            for (int c = 0; c < NCONF; c++) fprintf(stderr, "  %s %.1f", names[c], ns[c][r]);
            fprintf(stderr, " ns/pair\n");
        }
    }
    if (write(ctl[1], "Q", 1) != 1) perror("bench_live");
    waitpid(child, NULL, 0);

    double med[NCONF], q1 = quantile(ns[LIVE1], rounds, 0.25),
                       q3 = quantile(ns[LIVE1], rounds, 0.75);
    for (int c = 0; c < NCONF; c++) med[c] = quantile(ns[c], rounds, 0.5);
    double spread = med[LIVE1] > 0 ? 100.0 * (q3 - q1) / med[LIVE1] : 0;

    char mach[512];
    machine(mach, sizeof mach);
    printf("{\"bench\":\"live\",\"machine\":\"%s\",\"rounds\":%d,\"pairs_per_round\":%ld"
           ",\"reader\":\"forked process, one read every %ld us\"",
           mach, rounds, pairs, period_us);
    for (int c = 0; c < NCONF; c++) printf(",\"pair_ns_%s\":%.1f", names[c], med[c]);
    printf(",\"ratio_live1_vs_live0\":%.3f", med[LIVE1] / med[LIVE0]);
    for (int c = WAKEUP; c < NCONF; c++)
        printf(",\"ratio_%s_vs_live1\":%.3f", names[c], med[c] / med[LIVE1]);
    for (int c = WATCH_COUNTERS; c < NCONF; c++)
        printf(",\"ratio_%s_vs_wakeup\":%.3f", names[c], med[c] / med[WAKEUP]);
    printf(",\"noise_pct\":%.1f", spread);
    for (int c = WATCH_COUNTERS; c < NCONF; c++) {
        long n = atomic_load(&sh->nlat[c]);
        if (n > MAXLAT) n = MAXLAT;
        qsort(sh->lat_ns[c], (size_t)n, sizeof sh->lat_ns[c][0], cmp_u32);
        printf(",\"%s_reads\":%ld,\"%s_read_us_median\":%.1f,\"%s_answered\":%ld", names[c],
               (long)atomic_load(&sh->reads[c]), names[c], n ? sh->lat_ns[c][n / 2] / 1000.0 : 0,
               names[c], (long)atomic_load(&sh->answered[c]));
        if (c != WATCH_COUNTERS)
            printf(",\"%s_top_fresh\":%ld", names[c], (long)atomic_load(&sh->fresh[c]));
    }
    printf(",\"reader_failed\":%ld", (long)atomic_load(&sh->failed));
    /* The target: a reader every millisecond (the watch path, top list
     * included) costs nothing measurable: within the rounds' own spread,
     * and within 3% at most. */
    double tol = spread / 100.0 > 0.03 ? 0.03 : spread / 100.0;
    if (tol < 0.01) tol = 0.01;
    int meets = med[WATCH_TOP] / med[LIVE1] <= 1.0 + tol;
    printf(",\"target_ratio_max\":%.3f,\"meets_target\":%s}\n", 1.0 + tol,
           meets ? "true" : "false");

    for (int i = 0; i < WINDOW; i++) {
        ck_free(pa, live_a[i], NULL);
        ck_free(pb, live_b[i], NULL);
    }
    ck_pool_destroy(pa);
    ck_pool_destroy(pb);
    for (int c = 0; c < NCONF; c++) free(ns[c]);
    return atomic_load(&sh->failed) ? 1 : 0;
}
