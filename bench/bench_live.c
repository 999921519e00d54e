/* bench_live: what live statistics cost the allocating thread.
 *
 * Prints ONE JSON line. Usage: bench_live [--rounds N] [--pairs N] [--period-us N] [-v]
 * (-v: each round's figures on stderr)
 *
 * The cached ck_malloc+ck_free pair (sizes rotating from 512 B to 32 MiB,
 * 64 blocks of a mix live, as in bench_alloc) is timed on host pools in four
 * configurations, interleaved round by round (the order rotates) so that
 * drift of a shared machine hits all of them alike:
 *   live0           a pool with live=0 (private counters, no seqlock slot)
 *   live1           a pool with live=1, nobody reading
 *   live1_reader    the same pool while a reader process reads it every
 *                   period through ck__live_read asking for the top list,
 *                   exactly what `ckalloc-stat -p PID` does per refresh
 *   live1_counters  the same with counters only (what the process list reads)
 *   live1_wakeup    the same reader process waking every period but reading
 *                   nothing: what a 1 kHz wakeup next to the trainer costs
 *                   on this machine, whatever it does
 * The reader is a forked process, as ckalloc-stat is: a reader thread inside
 * the trainer would unmap its mapping in the trainer's own address space on
 * every read, and the TLB shootdowns would hit the trainer, which a separate
 * process never does. Each figure is the median over rounds of ns per pair;
 * the ratios compare medians. noise_pct is the spread (interquartile range /
 * median) of the live1 rounds: a ratio within it is not measurable. The
 * read protocol's own cost is the reader's ratio against live1_wakeup. */
#include "ckalloc/ckalloc.h"
#include "live.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
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

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_live: %s: %s\n", what, ck_last_error());
    exit(1);
}

/* ---- the reader process ------------------------------------------------------ */

enum { MAXLAT = 1 << 16 };

/* Shared with the reader (MAP_SHARED anonymous). */
typedef struct shared {
    atomic_long reads, fresh, busy, failed;
    atomic_long nlat;
    uint32_t lat_ns[MAXLAT]; /* duration of each read, ns */
} shared;

static int ctl[2], ack[2];

static void reader_read(shared *sh, int parent, int mode) {
    static ck_live_proc proc;
    if (mode == 3) return; /* wake-up only */
    int top = mode == 2;
    char why[512];
    uint64_t t0 = now_ns();
    int rc = ck__live_read(parent, top ? 200 : -1, &proc, why, sizeof why);
    uint64_t dt = now_ns() - t0;
    if (rc != CK_LIVE_OK || proc.npools < 1) {
        atomic_fetch_add(&sh->failed, 1);
        return;
    }
    atomic_fetch_add(&sh->reads, 1);
    for (int i = 0; i < proc.npools; i++) {
        atomic_fetch_add(&sh->fresh, proc.pools[i].top_fresh);
        atomic_fetch_add(&sh->busy, proc.pools[i].busy);
    }
    long k = atomic_fetch_add(&sh->nlat, 1);
    if (k < MAXLAT) sh->lat_ns[k] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
}

/* Commands on ctl: 'T' read with top lists, 'C' counters only, 'W' wake up
 * and read nothing, 'S' stop, 'Q' quit. Each command is acknowledged on ack once in effect (for T and
 * C: after a first read, counters only: the owner is waiting for the ack and
 * could not answer a top-list request). */
static void reader_main(shared *sh, int parent, long period_ns) {
    int mode = 0;
    uint64_t next = 0;
    for (;;) {
        int timeout = -1;
        if (mode) {
            uint64_t now = now_ns();
            timeout = next > now ? (int)((next - now) / 1000000u) : 0;
        }
        struct pollfd pf = {ctl[0], POLLIN, 0};
        /* poll has ms resolution: sleep the sub-ms rest precisely. */
        int n = poll(&pf, 1, timeout);
        if (n > 0) {
            char c;
            if (read(ctl[0], &c, 1) != 1 || c == 'Q') _exit(0);
            mode = c == 'T' ? 2 : c == 'C' ? 1 : c == 'W' ? 3 : 0;
            if (mode) {
                reader_read(sh, parent, 0);
                next = now_ns() + (uint64_t)period_ns;
            }
            if (write(ack[1], &c, 1) != 1) _exit(1);
            continue;
        }
        if (!mode) continue;
        uint64_t now = now_ns();
        if (now < next) {
            struct timespec ts = {0, (long)(next - now)};
            nanosleep(&ts, NULL);
            /* a command may have arrived meanwhile: look before reading */
            struct pollfd q = {ctl[0], POLLIN, 0};
            if (poll(&q, 1, 0) > 0) continue;
        }
        reader_read(sh, parent, mode);
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

static const size_t pair_sizes[] = {512, 4 * KiB, 64 * KiB, 300 * KiB, MiB, 4 * MiB, 32 * MiB};
#define NPAIR (sizeof pair_sizes / sizeof pair_sizes[0])
enum { WINDOW = 64 };

static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static size_t mix_size(uint64_t *rng) {
    uint64_t r = rng_next(rng) % 100, v = rng_next(rng);
    if (r < 60) return 512 + (size_t)(v % (64 * KiB - 512 + 1));
    if (r < 85) return 64 * KiB + (size_t)(v % (MiB - 64 * KiB + 1));
    return 2 * MiB + (size_t)(v % (30 * MiB + 1));
}

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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double quantile(double *v, int n, double q) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[(int)(q * (n - 1) + 0.5)];
}

static void machine(char *out, size_t n) {
    struct utsname u;
    const char *arch = uname(&u) == 0 ? u.machine : "unknown";
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    c++;
                    while (*c == ' ' || *c == '\t') c++;
                    c[strcspn(c, "\n")] = '\0';
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        }
        fclose(f);
    }
    for (char *c = model; *c; c++)
        if (*c == '"' || *c == '\\') *c = ' ';
    snprintf(out, n, "%s %s (%ld cpus)", arch, model, sysconf(_SC_NPROCESSORS_ONLN));
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

    enum { LIVE0, LIVE1, READER, COUNTERS, WAKEUP, NCONF };
    static const char *const names[NCONF] = {"live0", "live1", "live1_reader", "live1_counters",
                                              "live1_wakeup"};
    static const char cmd[NCONF] = {0, 0, 'T', 'C', 'W'};
    double *ns[NCONF];
    for (int c = 0; c < NCONF; c++) {
        ns[c] = calloc((size_t)rounds, sizeof(double));
        if (!ns[c]) return 1;
    }
    long reads_top = 0, fresh_top = 0;
    run_pairs(pa, pairs / 4); /* warm both paths once */
    run_pairs(pb, pairs / 4);
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < NCONF; k++) {
            int c = (r + k) % NCONF;
            if (cmd[c]) command(cmd[c]);
            long reads0 = atomic_load(&sh->reads), fresh0 = atomic_load(&sh->fresh);
            ns[c][r] = run_pairs(c == LIVE0 ? pb : pa, pairs);
            if (c == READER) {
                reads_top += atomic_load(&sh->reads) - reads0;
                fresh_top += atomic_load(&sh->fresh) - fresh0;
            }
            if (cmd[c]) command('S');
        }
        if (verbose)
            fprintf(stderr, "round %2d: live0 %.1f  live1 %.1f  reader %.1f  counters %.1f"
                            "  wakeup %.1f ns/pair\n",
                    r, ns[LIVE0][r], ns[LIVE1][r], ns[READER][r], ns[COUNTERS][r], ns[WAKEUP][r]);
    }
    if (write(ctl[1], "Q", 1) != 1) perror("bench_live");
    waitpid(child, NULL, 0);

    double med[NCONF], spread = 0;
    for (int c = 0; c < NCONF; c++) {
        if (c == LIVE1) {
            double q1 = quantile(ns[c], rounds, 0.25), q3 = quantile(ns[c], rounds, 0.75);
            med[c] = quantile(ns[c], rounds, 0.5);
            spread = med[c] > 0 ? 100.0 * (q3 - q1) / med[c] : 0;
        } else {
            med[c] = quantile(ns[c], rounds, 0.5);
        }
    }
    long nlat = atomic_load(&sh->nlat);
    if (nlat > MAXLAT) nlat = MAXLAT;
    qsort(sh->lat_ns, (size_t)nlat, sizeof sh->lat_ns[0], cmp_u32);
    double lat_med_us = nlat ? sh->lat_ns[nlat / 2] / 1000.0 : 0;

    char mach[512];
    machine(mach, sizeof mach);
    double r_reader = med[READER] / med[LIVE1], r_counters = med[COUNTERS] / med[LIVE1];
    double r_live = med[LIVE1] / med[LIVE0];
    printf("{\"bench\":\"live\",\"machine\":\"%s\",\"rounds\":%d,\"pairs_per_round\":%ld,"
           "\"reader\":\"forked process, ck__live_read every %ld us\"",
           mach, rounds, pairs, period_us);
    for (int c = 0; c < NCONF; c++) printf(",\"pair_ns_%s\":%.1f", names[c], med[c]);
    printf(",\"ratio_reader_vs_no_reader\":%.3f,\"ratio_counters_reader_vs_no_reader\":%.3f",
           r_reader, r_counters);
    printf(",\"ratio_wakeup_vs_no_reader\":%.3f,\"ratio_reader_vs_wakeup\":%.3f"
           ",\"ratio_counters_reader_vs_wakeup\":%.3f",
           med[WAKEUP] / med[LIVE1], med[READER] / med[WAKEUP], med[COUNTERS] / med[WAKEUP]);
    printf(",\"ratio_live1_vs_live0\":%.3f,\"noise_pct\":%.1f", r_live, spread);
    printf(",\"reader_reads\":%ld,\"reader_reads_top\":%ld,\"reader_top_fresh\":%ld"
           ",\"reader_failed\":%ld,\"reader_busy\":%ld,\"reader_read_us_median\":%.1f",
           (long)atomic_load(&sh->reads), reads_top, fresh_top, (long)atomic_load(&sh->failed),
           (long)atomic_load(&sh->busy), lat_med_us);
    /* The target: a reader every millisecond costs nothing measurable, i.e.
     * the ratio stays within the rounds' own spread (and 3% at most). */
    double tol = spread / 100.0 > 0.03 ? 0.03 : spread / 100.0;
    if (tol < 0.01) tol = 0.01;
    int meets = r_reader <= 1.0 + tol && r_counters <= 1.0 + tol;
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
