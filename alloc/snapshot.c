/* Snapshots: the state of one or more pools as one JSON file (format
 * "ckalloc-snapshot", version 1; README "Snapshots and the HTML report").
 *
 * Pools created with a snapshot path are kept in a list here. They are
 * written at exit (a destructor), by ck_pool_destroy before teardown, and on
 * their snapshot signal. A signal handler cannot format JSON, so it writes
 * one byte to a pipe and a background thread does the writing. Pools whose
 * paths expand to the same file share it (the file has a "pools" array).
 *
 * Each pool is copied under its lock (stats, segments, blocks, the ring of
 * recent operations) and formatted after the lock is dropped. The file is
 * written to a temporary name in the same directory and renamed, so a reader
 * sees the old file or the whole new one. */
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SNAP_FORMAT "ckalloc-snapshot"
#define SNAP_VERSION 1

/* ------------------------------------------------------- copy of a pool -- */

typedef struct snap_seg {
    uintptr_t va;
    size_t size;
} snap_seg;

typedef struct snap_blk {
    uintptr_t addr, stream;
    size_t size, requested;
    uint8_t state, small;
    uint16_t tag;
} snap_blk;

typedef struct snap_pool {
    ck_stats st;
    const char *backend;
    int device;
    snap_seg *segs;
    size_t nsegs;
    snap_blk *blks;
    size_t nblks;
    ck_ring_rec *ring; /* oldest first */
    size_t nring;
    uint64_t ring_total;
    uint64_t tick0, ns0, tick1, ns1; /* ring clock calibration */
    ck_hist *hist;                   /* the whole run */
    char **names;                    /* tag names, id - 1 */
    size_t nnames;
} snap_pool;

/* ------------------------------------------------- whole-run history -- */

void ck__hist_halve(ck_hist *h) {
    for (uint32_t j = 0; j < h->n / 2; j++) {
        ck_hist_bucket a = h->b[2 * j], c = h->b[2 * j + 1];
        for (int k = 0; k < 5; k++) {
            if (c.lo[k] < a.lo[k]) a.lo[k] = c.lo[k];
            if (c.hi[k] > a.hi[k]) a.hi[k] = c.hi[k];
        }
        a.tick1 = c.tick1;
        h->b[j] = a;
    }
    h->n /= 2;
    h->span *= 2;
    h->fill = h->span;
}

/* Runs of records go into the last bucket with the running min and max in
 * locals (a per-record update through memory costs ~2 ns an operation). */
void ck__hist_fold(ck_hist *h, const ck_ring_rec *ring, uint64_t upto) {
    const uint64_t mask = CK_RING_N - 1;
    uint64_t k = h->folded;
    while (k < upto) {
        const ck_ring_rec *r = &ring[k & mask];
        if (!h->n || h->fill >= h->span) { /* a new bucket */
            if (!h->span) h->span = 1;
            if (h->n == CK_HIST_N) ck__hist_halve(h);
            ck_hist_bucket *b = &h->b[h->n++];
            h->fill = 1;
            b->tick0 = b->tick1 = r->tick;
            b->lo[0] = b->hi[0] = r->allocated;
            b->lo[1] = b->hi[1] = r->reserved;
            b->lo[2] = b->hi[2] = r->physical;
            b->lo[3] = b->hi[3] = CK_RING_OFFLOADED(r->action);
            b->lo[4] = b->hi[4] = CK_RING_DROPPED(r->action);
            k++;
            continue;
        }
        ck_hist_bucket *b = &h->b[h->n - 1];
        uint64_t take = h->span - h->fill;
        if (take > upto - k) take = upto - k;
        int64_t lo0 = b->lo[0], lo1 = b->lo[1], lo2 = b->lo[2], lo3 = b->lo[3], lo4 = b->lo[4];
        int64_t hi0 = b->hi[0], hi1 = b->hi[1], hi2 = b->hi[2], hi3 = b->hi[3], hi4 = b->hi[4];
        for (uint64_t j = k; j < k + take; j++) {
            const ck_ring_rec *q = &ring[j & mask];
            lo0 = q->allocated < lo0 ? q->allocated : lo0;
            hi0 = q->allocated > hi0 ? q->allocated : hi0;
            /* reserved and physical change only in map and unmap (pool.c
             * seg_map, seg_destroy): other records repeat the last value,
             * which the bucket already holds (test_snapshot checks that the
             * maxima are the peaks). */
            if (CK_RING_ACTION(q->action) < CK_RING_MAP) continue;
            lo1 = q->reserved < lo1 ? q->reserved : lo1;
            hi1 = q->reserved > hi1 ? q->reserved : hi1;
            lo2 = q->physical < lo2 ? q->physical : lo2;
            hi2 = q->physical > hi2 ? q->physical : hi2;
            /* the tier engine's bytes: they change in tier records, and
             * map and unmap carry them too */
            int64_t o = CK_RING_OFFLOADED(q->action), d = CK_RING_DROPPED(q->action);
            lo3 = o < lo3 ? o : lo3;
            hi3 = o > hi3 ? o : hi3;
            lo4 = d < lo4 ? d : lo4;
            hi4 = d > hi4 ? d : hi4;
        }
        b->lo[0] = lo0, b->lo[1] = lo1, b->lo[2] = lo2, b->lo[3] = lo3, b->lo[4] = lo4;
        b->hi[0] = hi0, b->hi[1] = hi1, b->hi[2] = hi2, b->hi[3] = hi3, b->hi[4] = hi4;
        b->tick1 = ring[(k + take - 1) & mask].tick;
        h->fill += take;
        k += take;
    }
    h->folded = upto;
}

static int cmp_seg(const void *a, const void *b) {
    uintptr_t x = ((const snap_seg *)a)->va, y = ((const snap_seg *)b)->va;
    return x < y ? -1 : x > y;
}

static int cmp_blk(const void *a, const void *b) {
    uintptr_t x = ((const snap_blk *)a)->addr, y = ((const snap_blk *)b)->addr;
    return x < y ? -1 : x > y;
}

static void snap_pool_free(snap_pool *sp) {
    free(sp->segs);
    free(sp->blks);
    free(sp->ring);
    free(sp->hist);
    for (size_t i = 0; i < sp->nnames; i++) free(sp->names[i]);
    free(sp->names);
    memset(sp, 0, sizeof *sp);
}

/* Copy what the file shows of p. The lock is held only for the copying. */
static ck_status capture(ck_pool *p, snap_pool *sp) {
    memset(sp, 0, sizeof *sp);
    sp->backend = p->be->name;
    sp->device = p->opts.device;
    pool_lock(p);
    ck__stats_fill(p, &sp->st);
    /* "segments": the mapped runs (segment.current of them). */
    size_t nseg = p->c->segment.current > 0 ? (size_t)p->c->segment.current : 0;
    sp->nring = p->ring_n < CK_RING_N ? (size_t)p->ring_n : CK_RING_N;
    sp->segs = malloc((nseg ? nseg : 1) * sizeof *sp->segs);
    sp->blks = malloc((p->hcount ? p->hcount : 1) * sizeof *sp->blks);
    sp->ring = malloc((sp->nring ? sp->nring : 1) * sizeof *sp->ring);
    sp->hist = malloc(sizeof *sp->hist);
    if (!sp->segs || !sp->blks || !sp->ring || !sp->hist) {
        pool_unlock(p);
        snap_pool_free(sp);
        return ck__err(CK_ERR_NOMEM, "snapshot: out of host memory copying the pool");
    }
    for (ck_region *r = p->regions; r; r = r->next) {
        for (size_t i = 0; i < r->nchunks && sp->nsegs < nseg;) {
            if (!r->chunk[i].mapped) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < r->nchunks && r->chunk[j].mapped) j++;
            sp->segs[sp->nsegs++] = (snap_seg){r->va + i * p->gran, (j - i) * p->gran};
            i = j;
        }
    }
    /* The hash holds every block but the pages that host small blocks (the
     * small blocks cover those). */
    for (size_t i = 0; i <= p->hmask; i++)
        for (ck_block *b = p->htab[i]; b; b = b->hnext)
            sp->blks[sp->nblks++] = (snap_blk){b->addr, (uintptr_t)b->stream, b->size,
                                               b->requested, b->state, b->small, b->tag};
    sp->ring_total = p->ring_n;
    uint64_t first = p->ring_n - sp->nring;
    for (size_t k = 0; k < sp->nring; k++)
        sp->ring[k] = p->ring[(first + k) & (CK_RING_N - 1)];
    *sp->hist = p->hist;
    ck__hist_fold(sp->hist, p->ring, p->ring_n); /* what the pool has not folded yet */
    size_t nn = ck__tier_tag_count(p);
    sp->names = nn ? calloc(nn, sizeof *sp->names) : NULL;
    for (size_t i = 0; sp->names && i < nn; i++) {
        sp->names[i] = strdup(ck__tier_tag_name(p, (uint16_t)(i + 1)));
        if (sp->names[i]) sp->nnames = i + 1;
        else break;
    }
    sp->tick0 = p->ring_tick0;
    sp->ns0 = p->ring_ns0;
    sp->tick1 = ck__ring_clock();
    sp->ns1 = ck__now_ns();
    pool_unlock(p);
    qsort(sp->segs, sp->nsegs, sizeof *sp->segs, cmp_seg);
    qsort(sp->blks, sp->nblks, sizeof *sp->blks, cmp_blk);
    return CK_OK;
}

/* ---------------------------------------------------------------- JSON -- */

/* s as a JSON string; bytes that are not UTF-8 become U+FFFD, so the file
 * always parses. */
static void put_str(FILE *f, const char *s) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    while (*u) {
        unsigned char c = *u;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            u++;
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
            u++;
        } else if (c < 0x80) {
            fputc(c, f);
            u++;
        } else {
            int n = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            int ok = n > 0;
            for (int k = 1; ok && k < n; k++) ok = (u[k] & 0xc0) == 0x80;
            if (ok) {
                fwrite(u, 1, (size_t)n, f);
                u += n;
            } else {
                fputs("\\ufffd", f);
                u++;
            }
        }
    }
    fputc('"', f);
}

static const char *state_name(uint8_t s) {
    return s == BLK_LIVE ? "live" : s == BLK_PENDING ? "pending" : "free";
}

static const char *action_name(uint64_t a) {
    static const char *const names[] = {"allocate", "free", "allocate failure", "map", "unmap", "tier"};
    return a < sizeof names / sizeof *names ? names[a] : "unknown";
}

/* The name of tag id t, or NULL when untagged. Tags do not exist yet: the
 * tag API will keep the names and this will look them up. */
static const char *tag_name(const snap_pool *sp, uint16_t t) {
    return t && t <= sp->nnames ? sp->names[t - 1] : NULL;
}

/* A ring tick as CLOCK_MONOTONIC ns, by the line through the pool's two
 * calibration points; 0 stays 0 (a pool that does not stamp). */
static uint64_t tick_ns(const snap_pool *sp, uint64_t tick) {
    if (!tick) return 0;
    double dt = (double)(sp->tick1 - sp->tick0);
    double slope = dt > 0 ? (double)(sp->ns1 - sp->ns0) / dt : 1.0;
    double since = (double)(int64_t)(tick - sp->tick0) * slope;
    return since > 0 ? sp->ns0 + (uint64_t)since : sp->ns0;
}

static void put_pool(FILE *f, const snap_pool *sp) {
    fprintf(f, "{\"device\":%d,\"backend\":", sp->device);
    put_str(f, sp->backend);
    fputs(",\"stats\":", f);
    ck__stats_print(f, CK_FORMAT_JSON, sp->backend, &sp->st);
    fputs(",\"segments\":[", f);
    for (size_t i = 0; i < sp->nsegs; i++)
        fprintf(f, "%s\n{\"va\":\"0x%" PRIxPTR "\",\"size\":%zu}", i ? "," : "", sp->segs[i].va,
                sp->segs[i].size);
    fputs("],\"blocks\":[", f);
    /* Per-tag rows over the live blocks; slot 0 is "untagged". */
    enum { NTAGS = 65536 };
    uint64_t *tcount = calloc(NTAGS, sizeof *tcount), *tbytes = calloc(NTAGS, sizeof *tbytes);
    for (size_t i = 0; i < sp->nblks; i++) {
        const snap_blk *b = &sp->blks[i];
        fprintf(f,
                "%s\n{\"addr\":\"0x%" PRIxPTR "\",\"size\":%zu,\"requested\":%zu,\"state\":\"%s\","
                "\"stream\":\"0x%" PRIxPTR "\",\"small\":%s,\"tag\":",
                i ? "," : "", b->addr, b->size, b->requested, state_name(b->state), b->stream,
                b->small ? "true" : "false");
        const char *tn = tag_name(sp, b->tag);
        if (tn) put_str(f, tn);
        else fputs("null", f);
        fputc('}', f);
        if (b->state == BLK_LIVE && tcount) {
            tcount[b->tag]++;
            tbytes[b->tag] += b->size;
        }
    }
    fputs("],\"tags\":[", f);
    int nrows = 0;
    for (size_t t = 0; t < NTAGS && tcount; t++) {
        if (t && !tcount[t]) continue;
        const char *tn = tag_name(sp, (uint16_t)t);
        fputs(nrows++ ? ",\n{\"tag\":" : "\n{\"tag\":", f);
        put_str(f, tn ? tn : "untagged");
        fprintf(f, ",\"count\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", tcount[t], tbytes[t]);
    }
    free(tcount);
    free(tbytes);
    const ck_hist *h = sp->hist;
    fprintf(f,
            "],\"history\":{\"capacity\":%u,\"records_per_bucket\":%" PRIu64
            ",\"total\":%" PRIu64 ",\"start_ns\":%" PRIu64 ",\"end_ns\":%" PRIu64
            ",\"buckets\":[",
            CK_HIST_N, h->span ? h->span : 1, sp->ring_total, sp->ns0, sp->ns1);
    for (uint32_t i = 0; i < h->n; i++) {
        const ck_hist_bucket *b = &h->b[i];
        fprintf(f,
                "%s\n{\"t0_ns\":%" PRIu64 ",\"t1_ns\":%" PRIu64 ",\"records\":%" PRIu64
                ",\"allocated\":[%" PRId64 ",%" PRId64 "],\"reserved\":[%" PRId64 ",%" PRId64
                "],\"physical\":[%" PRId64 ",%" PRId64 "],\"offloaded\":[%" PRId64 ",%" PRId64
                "],\"dropped\":[%" PRId64 ",%" PRId64 "]}",
                i ? "," : "", tick_ns(sp, b->tick0), tick_ns(sp, b->tick1),
                i + 1 < h->n ? h->span : h->fill, b->lo[0], b->hi[0], b->lo[1], b->hi[1], b->lo[2],
                b->hi[2], b->lo[3], b->hi[3], b->lo[4], b->hi[4]);
    }
    fprintf(f, "]},\"trace\":{\"capacity\":%u,\"total\":%" PRIu64 ",\"records\":[", CK_RING_N,
            sp->ring_total);
    for (size_t i = 0; i < sp->nring; i++) {
        const ck_ring_rec *r = &sp->ring[i];
        uint64_t t = tick_ns(sp, r->tick);
        fprintf(f,
                "%s\n{\"t_ns\":%" PRIu64 ",\"action\":\"%s\",\"addr\":\"0x%" PRIx64
                "\",\"size\":%" PRIu64 ",\"stream\":\"0x%" PRIx64 "\",\"allocated\":%" PRId64
                ",\"reserved\":%" PRId64 ",\"physical\":%" PRId64 ",\"offloaded\":%" PRId64
                ",\"dropped\":%" PRId64 "}",
                i ? "," : "", t, action_name(CK_RING_ACTION(r->action)), r->addr, r->size, r->stream,
                r->allocated, r->reserved, r->physical, CK_RING_OFFLOADED(r->action),
                CK_RING_DROPPED(r->action));
    }
    fputs("]}}", f);
}

/* The command line from /proc (arguments joined by spaces). */
static void cmdline(char *buf, size_t n) {
    buf[0] = '\0';
    FILE *f = fopen("/proc/self/cmdline", "r");
    if (!f) return;
    size_t got = fread(buf, 1, n - 1, f);
    fclose(f);
    while (got && buf[got - 1] == '\0') got--;
    for (size_t i = 0; i < got; i++)
        if (buf[i] == '\0') buf[i] = ' ';
    buf[got] = '\0';
}

static void put_file(FILE *f, snap_pool *sps, size_t n, const char *reason) {
    char cmd[4096];
    cmdline(cmd, sizeof cmd);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    fprintf(f, "{\"format\":\"%s\",\"version\":%d,\"ckalloc_version\":", SNAP_FORMAT, SNAP_VERSION);
    put_str(f, ck_version());
    fprintf(f, ",\"pid\":%ld,\"cmdline\":", (long)getpid());
    put_str(f, cmd);
    fprintf(f, ",\"taken_at\":%lld.%06ld,\"monotonic_ns\":%" PRIu64 ",\"reason\":\"%s\",\"pools\":[",
            (long long)now.tv_sec, now.tv_nsec / 1000, ck__now_ns(), reason);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",\n" : "\n", f);
        put_pool(f, &sps[i]);
    }
    fputs("]}\n", f);
}

/* ------------------------------------------------------------- writing -- */

/* tmpl with %p = pid, %d = device, %% = %. */
static ck_status expand(const char *tmpl, int device, char *out, size_t n) {
    size_t o = 0;
    for (const char *s = tmpl; *s; s++) {
        char piece[32];
        const char *add = piece;
        if (s[0] == '%' && s[1] == 'p') snprintf(piece, sizeof piece, "%ld", (long)getpid());
        else if (s[0] == '%' && s[1] == 'd') snprintf(piece, sizeof piece, "%d", device);
        else if (s[0] == '%' && s[1] == '%') add = "%";
        else {
            piece[0] = *s;
            piece[1] = '\0';
            s--; /* one character, not two */
        }
        s++;
        size_t k = strlen(add);
        if (o + k >= n)
            return ck__err(CK_ERR_INVALID, "snapshot path '%s' is too long", tmpl);
        memcpy(out + o, add, k);
        o += k;
    }
    out[o] = '\0';
    if (o == 0) return ck__err(CK_ERR_INVALID, "snapshot path is empty");
    return CK_OK;
}

/* Write pools[0..n) to path: a temporary file beside it, then rename. */
static ck_status write_file(const char *path, ck_pool *const *pools, size_t n, const char *reason) {
    snap_pool *sps = calloc(n ? n : 1, sizeof *sps);
    if (!sps) return ck__err(CK_ERR_NOMEM, "snapshot '%s': out of host memory", path);
    ck_status s = CK_OK;
    size_t got = 0;
    while (got < n && (s = capture(pools[got], &sps[got])) == CK_OK) got++;
    char tmp[PATH_MAX + 16];
    int fd = -1;
    if (s == CK_OK) {
        if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
            s = ck__err(CK_ERR_INVALID, "snapshot path '%s' is too long", path);
        else if ((fd = mkstemp(tmp)) < 0)
            s = ck__err(CK_ERR_IO, "cannot write snapshot '%s': cannot create a file there: %s",
                        path, strerror(errno));
    }
    if (fd >= 0) {
        fchmod(fd, 0644); /* mkstemp makes 0600; a snapshot is read by other tools */
        FILE *f = fdopen(fd, "w");
        int err = 0;
        if (!f) {
            err = errno;
            close(fd);
        } else {
            put_file(f, sps, n, reason);
            if (fflush(f) == EOF || ferror(f)) err = errno ? errno : EIO;
            if (fclose(f) == EOF && !err) err = errno ? errno : EIO;
        }
        if (!err && rename(tmp, path) != 0) err = errno;
        if (err) {
            unlink(tmp);
            s = ck__err(CK_ERR_IO, "cannot write snapshot '%s': %s", path, strerror(err));
        }
    }
    for (size_t i = 0; i < got; i++) snap_pool_free(&sps[i]);
    free(sps);
    return s;
}

/* ------------------------------------------------- the list of pools -- */

typedef struct snap_entry {
    ck_pool *p;
    int sig;
} snap_entry;

static pthread_mutex_t snap_mu = PTHREAD_MUTEX_INITIALIZER;
static snap_entry *snaps;
static size_t nsnaps, cap_snaps;
static int snap_rfd = -1, snap_wfd = -1; /* the pipe from the handler to the thread */
static uint64_t snap_sigs;               /* bit s-1: our handler is installed for s */
static pthread_once_t snap_once = PTHREAD_ONCE_INIT;

/* Write p to path together with every listed pool whose path expands to
 * the same file and whose signal is sig (0: any). done (may be NULL) marks
 * the list entries written. Called with snap_mu held. */
static ck_status write_group(ck_pool *p, const char *path, int sig, char *done, const char *reason) {
    ck_pool **group = malloc((nsnaps + 1) * sizeof *group);
    if (!group) return ck__err(CK_ERR_NOMEM, "snapshot '%s': out of host memory", path);
    char other[PATH_MAX];
    size_t n = 0;
    group[n++] = p;
    for (size_t k = 0; k < nsnaps; k++) {
        ck_pool *q = snaps[k].p;
        if (q == p) {
            if (done) done[k] = 1;
            continue;
        }
        if ((done && done[k]) || (sig && snaps[k].sig != sig)) continue;
        if (expand(q->snapshot_path, q->opts.device, other, sizeof other) == CK_OK &&
            strcmp(path, other) == 0) {
            group[n++] = q;
            if (done) done[k] = 1;
        }
    }
    ck_status s = write_file(path, group, n, reason);
    free(group);
    return s;
}

/* Every listed pool whose signal is sig (0: every pool), one file per
 * distinct path. Failures go to stderr: nobody else would hear of them. */
static void write_all(int sig, const char *reason) {
    char *done = calloc(nsnaps ? nsnaps : 1, 1);
    char path[PATH_MAX];
    for (size_t i = 0; done && i < nsnaps; i++) {
        if (done[i] || (sig && snaps[i].sig != sig)) continue;
        ck_pool *p = snaps[i].p;
        ck_status s = expand(p->snapshot_path, p->opts.device, path, sizeof path);
        if (s == CK_OK) s = write_group(p, path, sig, done, reason);
        if (s != CK_OK) fprintf(stderr, "ckalloc: %s\n", ck_last_error());
    }
    free(done);
}

static void on_signal(int sig) {
    int saved = errno;
    int fd = __atomic_load_n(&snap_wfd, __ATOMIC_RELAXED);
    unsigned char b = (unsigned char)sig;
    if (fd >= 0 && write(fd, &b, 1) < 0) {
        /* pipe full: snapshots are already on their way */
    }
    errno = saved;
}

static void *snap_thread(void *arg) {
    int fd = (int)(intptr_t)arg;
    for (;;) {
        unsigned char b;
        ssize_t r = read(fd, &b, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r != 1) return NULL; /* the pipe was closed (a forked child) */
        pthread_mutex_lock(&snap_mu);
        write_all(b, "signal");
        pthread_mutex_unlock(&snap_mu);
    }
}

/* fork: the child must not write the parent's pools (at its exit or on a
 * signal); one that creates pools of its own starts a list and thread anew. */
static void at_prepare(void) { pthread_mutex_lock(&snap_mu); }
static void at_parent(void) { pthread_mutex_unlock(&snap_mu); }
static void at_child(void) {
    int w = __atomic_exchange_n(&snap_wfd, -1, __ATOMIC_RELAXED);
    if (w >= 0) close(w);
    if (snap_rfd >= 0) close(snap_rfd);
    snap_rfd = -1;
    nsnaps = 0;
    pthread_mutex_unlock(&snap_mu);
}
static void register_atfork(void) { pthread_atfork(at_prepare, at_parent, at_child); }

/* The pipe, the thread and the handler for sig (snap_mu held). */
static ck_status arm_signal(int sig) {
    if (snap_wfd < 0) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0)
            return ck__err(CK_ERR_BACKEND, "snapshot_signal: cannot create a pipe: %s",
                           strerror(errno));
        fcntl(fds[1], F_SETFL, O_NONBLOCK); /* a signal flood must not block the handler */
        /* The thread takes no signals: they go to the application's threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        int e = pthread_create(&t, &a, snap_thread, (void *)(intptr_t)fds[0]);
        pthread_attr_destroy(&a);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e != 0) {
            close(fds[0]);
            close(fds[1]);
            return ck__err(CK_ERR_BACKEND, "snapshot_signal: cannot start the snapshot thread: %s",
                           strerror(e));
        }
        snap_rfd = fds[0];
        __atomic_store_n(&snap_wfd, fds[1], __ATOMIC_RELAXED);
    }
    if (!(snap_sigs & (1ull << (sig - 1)))) {
        /* snapshot_signal takes the signal over (README): no chaining. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(sig, &sa, NULL) != 0)
            return ck__err(CK_ERR_INVALID, "snapshot_signal: cannot handle signal %d: %s", sig,
                           strerror(errno));
        snap_sigs |= 1ull << (sig - 1);
    }
    return CK_OK;
}

ck_status ck__snapshot_attach(ck_pool *p) {
    const char *path = p->opts.snapshot_path;
    p->opts.snapshot_path = NULL;
    if (!path || !*path) return CK_OK;
    p->snapshot_path = strdup(path);
    if (!p->snapshot_path) return ck__err(CK_ERR_NOMEM, "ck_pool_create: out of host memory");
    p->opts.snapshot_path = p->snapshot_path;
    p->ring_stamp = 1; /* set before the pool is shared: no race */
    int sig = p->opts.snapshot_signal;
    if (sig != 0 && !ck__snapshot_signal_ok(sig))
        return ck__err(CK_ERR_INVALID,
                       "ck_pool_create: snapshot_signal %d cannot be the snapshot signal (not a "
                       "signal, a fault signal such as SEGV, or KILL/STOP)",
                       sig);
    pthread_once(&snap_once, register_atfork);
    pthread_mutex_lock(&snap_mu);
    ck_status s = CK_OK;
    if (nsnaps == cap_snaps) {
        size_t c = cap_snaps ? cap_snaps * 2 : 8;
        snap_entry *v = realloc(snaps, c * sizeof *v);
        if (!v) s = ck__err(CK_ERR_NOMEM, "ck_pool_create: out of host memory");
        else {
            snaps = v;
            cap_snaps = c;
        }
    }
    if (s == CK_OK && sig) s = arm_signal(sig);
    if (s == CK_OK) snaps[nsnaps++] = (snap_entry){p, sig};
    pthread_mutex_unlock(&snap_mu);
    return s;
}

ck_status ck__snapshot_detach(ck_pool *p) {
    ck_status s = CK_OK;
    pthread_mutex_lock(&snap_mu);
    size_t i = 0;
    while (i < nsnaps && snaps[i].p != p) i++;
    if (i < nsnaps) {
        /* Written with the pools that share its file, then dropped. */
        char path[PATH_MAX];
        s = expand(p->snapshot_path, p->opts.device, path, sizeof path);
        if (s == CK_OK) s = write_group(p, path, 0, NULL, "destroy");
        snaps[i] = snaps[--nsnaps];
    }
    pthread_mutex_unlock(&snap_mu);
    free(p->snapshot_path);
    p->snapshot_path = NULL;
    p->opts.snapshot_path = NULL;
    return s;
}

CK_API ck_status ck_snapshot_write(ck_pool *p, const char *path) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_snapshot_write: pool is NULL");
    if (!path && !p->snapshot_path)
        return ck__err(CK_ERR_INVALID,
                       "ck_snapshot_write: no path given and the pool has no snapshot path "
                       "(config key snapshot)");
    char out[PATH_MAX];
    ck_status s = expand(path ? path : p->snapshot_path, p->opts.device, out, sizeof out);
    if (s != CK_OK) return s;
    pthread_mutex_lock(&snap_mu);
    /* An explicit path gets this pool alone; the pool's own file holds every
     * pool that shares it. */
    s = path ? write_file(out, &p, 1, "api") : write_group(p, out, 0, NULL, "api");
    pthread_mutex_unlock(&snap_mu);
    return s;
}

/* At exit, every listed pool. A pool destroyed later (by another destructor)
 * writes its file again then. */
__attribute__((destructor)) static void snap_at_exit(void) {
    pthread_mutex_lock(&snap_mu);
    write_all(0, "exit");
    pthread_mutex_unlock(&snap_mu);
}
