/* Snapshots (alloc/snapshot.c): the file's contents for a known pattern, the
 * ring of recent operations, path expansion, the atomic write, errors, and
 * the three writers besides ck_snapshot_write (destroy, signal, exit), with a
 * forked child that must not write its parent's pools. Files are read back
 * with cJSON and with ckalloc-stat's parser (tools/stat/snapshot.c). */
#include "stat.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A fresh empty directory; the caller frees the path (rm_dir removes it). */
static char *temp_dir(void) {
    const char *t = getenv("TMPDIR");
    char *d = malloc(4096);
    ck_assert_ptr_nonnull(d);
    snprintf(d, 4096, "%s/ck_snap_XXXXXX", t && *t ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(d));
    return d;
}

static void rm_dir(char *d) {
    DIR *dir = opendir(d);
    ck_assert_ptr_nonnull(dir);
    struct dirent *e;
    char p[4352];
    while ((e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", d, e->d_name);
        if (unlink(p) != 0) rmdir(p);
    }
    closedir(dir);
    ck_assert_int_eq(rmdir(d), 0);
    free(d);
}

/* Names in d, joined by spaces (to check that no temporary is left). */
static void list_dir(const char *d, char *out, size_t n) {
    DIR *dir = opendir(d);
    ck_assert_ptr_nonnull(dir);
    out[0] = '\0';
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        size_t l = strlen(out);
        snprintf(out + l, n - l, "%s%s", l ? " " : "", e->d_name);
    }
    closedir(dir);
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

static cJSON *load_json(const char *path) {
    char *b = read_all(path, NULL);
    cJSON *j = cJSON_Parse(b);
    ck_assert_msg(j != NULL, "%s is not valid JSON", path);
    free(b);
    return j;
}

static const cJSON *get(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "key %s missing", k);
    return v;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = get(o, k);
    ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", k);
    return v->valuedouble;
}

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = get(o, k);
    ck_assert_msg(cJSON_IsString(v), "%s is not a string", k);
    return v->valuestring;
}

/* Records in pool's trace with this action. */
static int count_action(const cJSON *pool, const char *action) {
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, get(get(pool, "trace"), "records")) n += !strcmp(str(r, "action"), action);
    return n;
}

static void free_report(ckstat_report *r) {
    for (size_t i = 0; i < r->npools; i++) {
        free(r->pools[i].timeline);
        free(r->pools[i].history);
        free(r->pools[i].tags);
    }
    free(r->pools);
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Wait up to ms for path to appear. */
static int wait_for(const char *path, int ms) {
    for (int i = 0; i < ms / 10; i++) {
        if (exists(path)) return 1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return exists(path);
}

/* ------------------------------------------------------------------ */

START_TEST(t_known_pattern) {
    char *d = temp_dir();
    char path[4200];
    snprintf(path, sizeof path, "%s/s.json", d);
    ck_pool *p = host_pool(NULL);
    /* 3 large + 5 small live, one large freed */
    void *big[4], *small[5];
    size_t bsz[4] = {4 * MiB, 8 * MiB, 16 * MiB, 6 * MiB};
    for (int i = 0; i < 4; i++) ASSERT_OK(ck_malloc(p, &big[i], bsz[i], NULL));
    for (int i = 0; i < 5; i++) ASSERT_OK(ck_malloc(p, &small[i], 4 * KiB + 1, NULL));
    ASSERT_OK(ck_free(p, big[3], NULL));
    ck_stats st = stats_of(p);
    ASSERT_OK(ck_snapshot_write(p, path));

    cJSON *j = load_json(path);
    ck_assert_str_eq(str(j, "format"), "ckalloc-snapshot");
    ck_assert_int_eq((int)num(j, "version"), 1);
    ck_assert_int_eq((int)num(j, "pid"), (int)getpid());
    ck_assert(strstr(str(j, "cmdline"), "test_snapshot") != NULL);
    ck_assert(num(j, "taken_at") > 1.6e9);
    ck_assert_str_eq(str(j, "reason"), "api");
    const cJSON *pools = get(j, "pools");
    ck_assert_int_eq(cJSON_GetArraySize(pools), 1);
    const cJSON *pl = cJSON_GetArrayItem(pools, 0);
    ck_assert_int_eq((int)num(pl, "device"), 0);
    ck_assert_str_eq(str(pl, "backend"), "host");

    /* stats: the keys of ck_print_stats' JSON, the same values */
    const cJSON *s = get(pl, "stats");
    ck_assert_uint_eq((uint64_t)num(get(s, "allocated_bytes"), "current"),
                      (uint64_t)st.allocated_bytes.current);
    ck_assert_uint_eq((uint64_t)num(get(s, "allocation"), "current"), 8);
    ck_assert_uint_eq((uint64_t)num(s, "num_map_calls"), st.num_map_calls);
    get(s, "fragmentation");

    /* segments: one row per mapped run (maximal range of mapped chunks) */
    ck_assert_int_eq(cJSON_GetArraySize(get(pl, "segments")), (int)st.segment.current);
    uint64_t seg_bytes = 0;
    const cJSON *g;
    cJSON_ArrayForEach(g, get(pl, "segments")) seg_bytes += (uint64_t)num(g, "size");
    ck_assert_uint_eq(seg_bytes, (uint64_t)st.reserved_bytes.current);

    /* blocks: every block, in address order, 8 live ones with their sizes */
    int live = 0, live_small = 0;
    uint64_t live_bytes = 0, prev = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, get(pl, "blocks")) {
        uint64_t a = strtoull(str(b, "addr"), NULL, 16);
        ck_assert_uint_gt(a, prev);
        prev = a;
        ck_assert(cJSON_IsNull(get(b, "tag")));
        ck_assert_str_eq(str(b, "stream"), "0x0");
        const char *state = str(b, "state");
        ck_assert(!strcmp(state, "live") || !strcmp(state, "free") || !strcmp(state, "pending"));
        if (strcmp(state, "live") != 0) continue;
        live++;
        live_bytes += (uint64_t)num(b, "size");
        if (cJSON_IsTrue(get(b, "small"))) {
            live_small++;
            ck_assert_uint_eq((uint64_t)num(b, "requested"), 4 * KiB + 1);
        }
    }
    ck_assert_int_eq(live, 8);
    ck_assert_int_eq(live_small, 5);
    ck_assert_uint_eq(live_bytes, (uint64_t)st.allocated_bytes.current);

    /* tags: one untagged row over the live blocks */
    const cJSON *tags = get(pl, "tags");
    ck_assert_int_eq(cJSON_GetArraySize(tags), 1);
    const cJSON *t0 = cJSON_GetArrayItem(tags, 0);
    ck_assert_str_eq(str(t0, "tag"), "untagged");
    ck_assert_int_eq((int)num(t0, "count"), 8);
    ck_assert_uint_eq((uint64_t)num(t0, "bytes"), live_bytes);

    /* trace: every operation, maps included; the last one's bytes are now's */
    ck_assert_int_eq(count_action(pl, "allocate"), 9);
    ck_assert_int_eq(count_action(pl, "free"), 1);
    ck_assert_int_eq(count_action(pl, "map"), (int)st.num_map_calls);
    const cJSON *tr = get(pl, "trace");
    int nrec = cJSON_GetArraySize(get(tr, "records"));
    ck_assert_int_eq((int)num(tr, "total"), nrec);
    ck_assert_int_eq((int)num(tr, "capacity"), 4096);
    const cJSON *last = cJSON_GetArrayItem(get(tr, "records"), nrec - 1);
    ck_assert_str_eq(str(last, "action"), "free");
    ck_assert_uint_eq(strtoull(str(last, "addr"), NULL, 16), (uintptr_t)big[3]);
    ck_assert_uint_eq((uint64_t)num(last, "size"), 6 * MiB);
    ck_assert_uint_eq((uint64_t)num(last, "allocated"), (uint64_t)st.allocated_bytes.current);
    ck_assert_uint_eq((uint64_t)num(last, "reserved"), (uint64_t)st.reserved_bytes.current);
    ck_assert_uint_eq((uint64_t)num(last, "physical"), (uint64_t)st.physical_bytes.current);
    /* no snapshot path: the records carry no time (the clock is not read) */
    ck_assert(num(last, "t_ns") == 0);
    cJSON_Delete(j);

    /* ckalloc-stat's reader agrees */
    ckstat_report r;
    char err[512];
    ck_assert_msg(ckstat_load_snapshot(path, &r, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(r.npools, 1);
    ck_assert_int_eq(r.pools[0].ntop, 8);
    ck_assert_uint_eq(r.pools[0].top[0].size, 16 * MiB);
    ck_assert_uint_eq(r.pools[0].npoints, (size_t)nrec);
    ck_assert_uint_eq(r.pools[0].nsegments, (uint64_t)st.segment.current);
    ck_assert_int_eq(r.pools[0].stats.allocation.current, 8);
    free_report(&r);

    for (int i = 0; i < 3; i++) ASSERT_OK(ck_free(p, big[i], NULL));
    for (int i = 0; i < 5; i++) ASSERT_OK(ck_free(p, small[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
    rm_dir(d);
}
END_TEST

/* The ring keeps the last 4096 operations, oldest first, in time order. */
START_TEST(t_ring_keeps_last_n) {
    char *d = temp_dir();
    char path[4200];
    snprintf(path, sizeof path, "%s/ring.json", d);
    ck_pool *p = host_pool(NULL);
    enum { PAIRS = 5000 };
    void *x = NULL;
    for (int i = 0; i < PAIRS; i++) {
        ASSERT_OK(ck_malloc(p, &x, 512 * (size_t)(i % 8 + 1), NULL));
        ASSERT_OK(ck_free(p, x, NULL));
    }
    ck_stats st = stats_of(p);
    ASSERT_OK(ck_snapshot_write(p, path));
    cJSON *j = load_json(path);
    const cJSON *tr = get(cJSON_GetArrayItem(get(j, "pools"), 0), "trace");
    const cJSON *recs = get(tr, "records");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 4096);
    ck_assert_uint_eq((uint64_t)num(tr, "total"), 2 * PAIRS + st.num_map_calls);
    /* The last 4096 are allocate/free pairs ending with the last free. */
    int i = 0;
    double prev_t = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs) {
        int op = PAIRS * 2 - 4096 + i; /* index among the pairs' operations */
        ck_assert_str_eq(str(r, "action"), op % 2 ? "free" : "allocate");
        ck_assert_uint_eq((uint64_t)num(r, "size"), 512 * (uint64_t)(op / 2 % 8 + 1));
        ck_assert_uint_eq((uint64_t)num(r, "allocated"), op % 2 ? 0 : 512 * (uint64_t)(op / 2 % 8 + 1));
        ck_assert(num(r, "t_ns") >= prev_t);
        prev_t = num(r, "t_ns");
        i++;
    }
    cJSON_Delete(j);
    ASSERT_OK(ck_pool_destroy(p));
    rm_dir(d);
}
END_TEST

/* The whole-run history: a 30000-operation run whose peak is in the middle,
 * far outside the ring of the last 4096. Every peak is some bucket's max, the
 * buckets cover every record once, in order, in at most 1024 buckets. */
START_TEST(t_history_keeps_peak) {
    char *d = temp_dir();
    char conf[4400], path[4200];
    snprintf(path, sizeof path, "%s/hist.json", d);
    snprintf(conf, sizeof conf, "snapshot=%s,snapshot_signal=none", path);
    ck_pool *p = host_pool(conf);
    enum { PAIRS = 15000, HOLD = 24 };
    void *x = NULL, *held[HOLD];
    for (int i = 0; i < PAIRS; i++) {
        if (i == PAIRS / 2) { /* the peak: HOLD blocks at once, then gone */
            for (int k = 0; k < HOLD; k++) ASSERT_OK(ck_malloc(p, &held[k], 3 * MiB, NULL));
            for (int k = 0; k < HOLD; k++) ASSERT_OK(ck_free(p, held[k], NULL));
            size_t rel = 0;
            ASSERT_OK(ck_trim(p, &rel));
        }
        ASSERT_OK(ck_malloc(p, &x, 512 * (size_t)(i % 8 + 1), NULL));
        ASSERT_OK(ck_free(p, x, NULL));
    }
    ck_stats st = stats_of(p);
    ck_assert_int_ge(st.allocated_bytes.peak, HOLD * 3 * (int64_t)MiB);
    ASSERT_OK(ck_snapshot_write(p, NULL));
    cJSON *j = load_json(path);
    const cJSON *pl = cJSON_GetArrayItem(get(j, "pools"), 0);
    const cJSON *h = get(pl, "history"), *tr = get(pl, "trace");
    const cJSON *bs = get(h, "buckets");
    int nb = cJSON_GetArraySize(bs);
    uint64_t span = (uint64_t)num(h, "records_per_bucket"), total = (uint64_t)num(h, "total");
    ck_assert_uint_eq(total, (uint64_t)num(tr, "total"));
    ck_assert_uint_ge(total, 2 * PAIRS + 2 * HOLD);
    ck_assert_int_eq((int)num(h, "capacity"), 1024);
    ck_assert_int_le(nb, 1024);
    ck_assert_int_gt(nb, 512 - 1); /* halving leaves at least half in use */
    ck_assert_uint_eq(span & (span - 1), 0);
    ck_assert_uint_gt(span, 1); /* 30000 records did not fit one per bucket */
    int64_t hi[3] = {0, 0, 0};
    const char *keys[3] = {"allocated", "reserved", "physical"};
    uint64_t covered = 0, prev_t = (uint64_t)num(h, "start_ns");
    int peak_at = -1, i = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, bs) {
        uint64_t n = (uint64_t)num(b, "records");
        ck_assert_uint_eq(n <= span && n > 0, 1);
        if (i + 1 < nb) ck_assert_uint_eq(n, span);
        covered += n;
        uint64_t t0 = (uint64_t)num(b, "t0_ns"), t1 = (uint64_t)num(b, "t1_ns");
        ck_assert_uint_ge(t0, prev_t);
        ck_assert_uint_ge(t1, t0);
        prev_t = t1;
        for (int k = 0; k < 3; k++) {
            const cJSON *mm = get(b, keys[k]);
            int64_t lo = (int64_t)cJSON_GetArrayItem(mm, 0)->valuedouble;
            int64_t v = (int64_t)cJSON_GetArrayItem(mm, 1)->valuedouble;
            ck_assert_int_le(lo, v);
            if (v > hi[k]) {
                hi[k] = v;
                if (k == 0) peak_at = i;
            }
        }
        i++;
    }
    ck_assert_uint_eq(covered, total);
    ck_assert_uint_le(prev_t, (uint64_t)num(h, "end_ns"));
    ck_assert_int_eq(hi[0], st.allocated_bytes.peak);
    ck_assert_int_eq(hi[1], st.reserved_bytes.peak);
    ck_assert_int_eq(hi[2], st.physical_bytes.peak);
    /* in the middle of the run, and not in the ring: the ring alone loses it */
    ck_assert_int_gt(peak_at, nb / 4);
    ck_assert_int_lt(peak_at, 3 * nb / 4);
    int64_t ring_hi = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, get(tr, "records")) {
        int64_t v = (int64_t)num(r, "allocated");
        if (v > ring_hi) ring_hi = v;
    }
    ck_assert_int_lt(ring_hi, st.allocated_bytes.peak);
    cJSON_Delete(j);

    /* ckalloc-stat's reader gives the same buckets, on the run's clock */
    ckstat_report rep;
    char err[512];
    ck_assert_msg(ckstat_load_snapshot(path, &rep, err, sizeof err) == 0, "%s", err);
    const ckstat_pool *sp = &rep.pools[0];
    ck_assert_uint_eq(sp->nhistory, (size_t)nb);
    ck_assert_uint_eq(sp->history_span, span);
    uint64_t m = 0;
    for (size_t k = 0; k < sp->nhistory; k++)
        if (sp->history[k].hi.live > m) m = sp->history[k].hi.live;
    ck_assert_uint_eq(m, (uint64_t)st.allocated_bytes.peak);
    ck_assert(sp->history[0].t0_s >= 0 && sp->history_end_s >= sp->history[nb - 1].t1_s);
    ck_assert(sp->ring_t0_s > 0 && sp->ring_t0_s <= sp->history_end_s);
    free_report(&rep);
    ASSERT_OK(ck_pool_destroy(p));
    rm_dir(d);
}
END_TEST

/* %p is the pid, %d the device, %% a percent sign; path NULL = the pool's own. */
START_TEST(t_path_expansion) {
    char *d = temp_dir();
    char conf[4400], want[4400];
    snprintf(conf, sizeof conf, "snapshot=%s/snap_%%p_dev%%d_%%%%.json,snapshot_signal=none", d);
    ck_pool *p = host_pool(conf);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 64 * KiB, NULL));
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_snapshot_write(p, NULL));
    snprintf(want, sizeof want, "%s/snap_%d_dev0_%%.json", d, (int)getpid());
    ck_assert_msg(exists(want), "%s was not written", want);
    /* A pool with a snapshot path stamps its records: CLOCK_MONOTONIC ns,
     * in order, between the start of this test and the snapshot. */
    cJSON *j = load_json(want);
    const cJSON *recs = get(get(cJSON_GetArrayItem(get(j, "pools"), 0), "trace"), "records");
    ck_assert_int_ge(cJSON_GetArraySize(recs), 2);
    double start = (double)t0.tv_sec * 1e9 + (double)t0.tv_nsec, prev = start;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs) {
        ck_assert_msg(num(r, "t_ns") >= prev - 1e5, "t_ns %.0f before %.0f", num(r, "t_ns"), prev);
        prev = num(r, "t_ns");
    }
    ck_assert(prev <= num(j, "monotonic_ns") + 1e5);
    cJSON_Delete(j);
    char names[1024];
    list_dir(d, names, sizeof names);
    ck_assert_msg(strchr(names, ' ') == NULL, "more than one file: %s", names);
    /* An explicit path is expanded the same way. */
    snprintf(conf, sizeof conf, "%s/x_%%p.json", d);
    ASSERT_OK(ck_snapshot_write(p, conf));
    snprintf(want, sizeof want, "%s/x_%d.json", d, (int)getpid());
    ck_assert(exists(want));
    ASSERT_OK(ck_pool_destroy(p));
    rm_dir(d);
}
END_TEST

/* Rewriting replaces the file whole: a reader holding the old one still
 * reads all of it, and no temporary file stays behind. */
START_TEST(t_atomic_replace) {
    char *d = temp_dir();
    char path[4200];
    snprintf(path, sizeof path, "%s/a.json", d);
    ck_pool *p = host_pool(NULL);
    ASSERT_OK(ck_snapshot_write(p, path));
    size_t old_len;
    char *old = read_all(path, &old_len);
    FILE *reader = fopen(path, "rb");
    ck_assert_ptr_nonnull(reader);
    void *x;
    for (int i = 0; i < 50; i++) ASSERT_OK(ck_malloc(p, &x, 8 * KiB, NULL));
    ASSERT_OK(ck_snapshot_write(p, path));
    char *held = malloc(old_len + 1);
    ck_assert_uint_eq(fread(held, 1, old_len + 1, reader), old_len);
    ck_assert(memcmp(held, old, old_len) == 0);
    fclose(reader);
    size_t new_len;
    char *now = read_all(path, &new_len);
    ck_assert_uint_gt(new_len, old_len);
    cJSON *j = cJSON_Parse(now);
    ck_assert_ptr_nonnull(j);
    cJSON_Delete(j);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_mode & 0777, 0644);
    char names[1024];
    list_dir(d, names, sizeof names);
    ck_assert_str_eq(names, "a.json");
    free(old);
    free(held);
    free(now);
    ASSERT_OK(ck_pool_destroy(p));
    rm_dir(d);
}
END_TEST

/* A path that cannot be written: CK_ERR_IO naming it, nothing left behind. */
START_TEST(t_unwritable) {
    char *d = temp_dir();
    char path[4200];
    ck_pool *p = host_pool(NULL);
    snprintf(path, sizeof path, "%s/no/such/dir/s.json", d);
    ck_assert_int_eq(ck_snapshot_write(p, path), CK_ERR_IO);
    ck_assert_msg(strstr(ck_last_error(), path) != NULL, "'%s' does not name the path",
                  ck_last_error());
    ck_assert_msg(strstr(ck_last_error(), "No such file or directory") != NULL, "%s",
                  ck_last_error());
    /* The target is a directory: the temporary is written, the rename fails,
     * and the temporary is removed again. */
    snprintf(path, sizeof path, "%s/taken.json", d);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(ck_snapshot_write(p, path), CK_ERR_IO);
    ck_assert(strstr(ck_last_error(), "taken.json") != NULL);
    char names[1024];
    list_dir(d, names, sizeof names);
    ck_assert_str_eq(names, "taken.json");
    /* No path at all. */
    ck_assert_int_eq(ck_snapshot_write(p, NULL), CK_ERR_INVALID);
    ck_assert(strstr(ck_last_error(), "snapshot") != NULL);
    ck_assert_int_eq(ck_snapshot_write(NULL, path), CK_ERR_INVALID);
    ASSERT_OK(ck_pool_destroy(p));
    rm_dir(d);
}
END_TEST

/* ck_pool_destroy writes the pool as it was, before tearing it down; pools
 * that share a path share the file. */
START_TEST(t_destroy_writes) {
    char *d = temp_dir();
    char conf[4400], path[4200];
    snprintf(path, sizeof path, "%s/d.json", d);
    snprintf(conf, sizeof conf, "snapshot=%s,snapshot_signal=none", path);
    ck_pool *p = host_pool(conf), *q = host_pool(conf);
    void *x, *y;
    ASSERT_OK(ck_malloc(p, &x, 3 * MiB, NULL));
    ASSERT_OK(ck_malloc(q, &y, 5 * MiB, NULL));
    ck_assert(!exists(path));
    ASSERT_OK(ck_pool_destroy(p));
    ck_assert(exists(path));
    cJSON *j = load_json(path);
    ck_assert_str_eq(str(j, "reason"), "destroy");
    const cJSON *pools = get(j, "pools");
    ck_assert_int_eq(cJSON_GetArraySize(pools), 2);
    /* the destroyed pool first, with its block still live */
    const cJSON *s0 = get(cJSON_GetArrayItem(pools, 0), "stats");
    const cJSON *s1 = get(cJSON_GetArrayItem(pools, 1), "stats");
    ck_assert_uint_eq((uint64_t)num(get(s0, "allocated_bytes"), "current"), 3 * MiB);
    ck_assert_uint_eq((uint64_t)num(get(s1, "allocated_bytes"), "current"), 5 * MiB);
    cJSON_Delete(j);
    ASSERT_OK(ck_pool_destroy(q));
    j = load_json(path);
    ck_assert_int_eq(cJSON_GetArraySize(get(j, "pools")), 1);
    cJSON_Delete(j);
    char names[1024];
    list_dir(d, names, sizeof names);
    ck_assert_str_eq(names, "d.json");
    rm_dir(d);
}
END_TEST

/* A forked child does not write its parent's pools at its exit; a pool the
 * child creates is its own and is written. */
START_TEST(t_fork_child_does_not_write) {
    char *d = temp_dir();
    char conf[4400], path[4200], child_path[4200];
    snprintf(path, sizeof path, "%s/parent.json", d);
    snprintf(conf, sizeof conf, "snapshot=%s,snapshot_signal=none", path);
    ck_pool *p = host_pool(conf);
    void *x;
    ASSERT_OK(ck_malloc(p, &x, MiB, NULL));
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL); /* Check's handler would kill the whole process group */
        alarm(20);
        if (CK_TSAN) exit(0); /* the destructor must leave the parent's pool alone */
        char own[4400];
        snprintf(own, sizeof own, "backend=host,host_mem=1G,snapshot=%s/child_%%p.json,"
                 "snapshot_signal=none", d);
        ck_pool *c = NULL;
        if (ck_pool_create_conf(&c, own) != CK_OK) _exit(10);
        void *y;
        if (ck_malloc(c, &y, 2 * MiB, NULL) != CK_OK) _exit(11);
        exit(0); /* runs the destructor that writes at exit */
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    ck_assert_msg(!exists(path), "the child wrote its parent's snapshot");
    snprintf(child_path, sizeof child_path, "%s/child_%d.json", d, (int)pid);
    if (!CK_TSAN) {
        ck_assert_msg(exists(child_path), "the child's own pool was not written at its exit");
        cJSON *j = load_json(child_path);
        ck_assert_str_eq(str(j, "reason"), "exit");
        ck_assert_int_eq((int)num(j, "pid"), (int)pid);
        ck_assert_int_eq(cJSON_GetArraySize(get(j, "pools")), 1);
        cJSON_Delete(j);
    }
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_pool_destroy(p));
    ck_assert(exists(path));
    rm_dir(d);
}
END_TEST

/* The snapshot signal makes the background thread write the file. */
START_TEST(t_signal_writes) {
    char *d = temp_dir();
    char conf[4400], path[4200];
    snprintf(path, sizeof path, "%s/sig.json", d);
    snprintf(conf, sizeof conf, "snapshot=%s,snapshot_signal=USR2", path);
    ck_pool *p = host_pool(conf);
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 7 * MiB, NULL));
    ck_assert(!exists(path));
    ck_assert_int_eq(raise(SIGUSR2), 0);
    ck_assert_msg(wait_for(path, 10000), "no snapshot 10 s after SIGUSR2");
    cJSON *j = load_json(path);
    ck_assert_str_eq(str(j, "reason"), "signal");
    const cJSON *s = get(cJSON_GetArrayItem(get(j, "pools"), 0), "stats");
    ck_assert_uint_eq((uint64_t)num(get(s, "allocated_bytes"), "current"), 7 * MiB);
    cJSON_Delete(j);
    /* Again, after a change: the file is replaced. */
    ASSERT_OK(ck_free(p, x, NULL));
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(raise(SIGUSR2), 0);
    ck_assert_msg(wait_for(path, 10000), "no snapshot after the second SIGUSR2");
    /* The thread renames a complete file into place: it parses at once. */
    j = load_json(path);
    s = get(cJSON_GetArrayItem(get(j, "pools"), 0), "stats");
    ck_assert_uint_eq((uint64_t)num(get(s, "allocated_bytes"), "current"), 0);
    cJSON_Delete(j);
    ASSERT_OK(ck_pool_destroy(p));
    rm_dir(d);
}
END_TEST

int main(void) {
    Suite *s = suite_create("snapshot");
    TCase *tc = ck_test_tcase(s, "snapshot", 60);
    tcase_add_test(tc, t_known_pattern);
    tcase_add_test(tc, t_ring_keeps_last_n);
    tcase_add_test(tc, t_history_keeps_peak);
    tcase_add_test(tc, t_path_expansion);
    tcase_add_test(tc, t_atomic_replace);
    tcase_add_test(tc, t_unwritable);
    tcase_add_test(tc, t_destroy_writes);
    tcase_add_test(tc, t_fork_child_does_not_write);
    tcase_add_test(tc, t_signal_writes);
    return ck_test_run(s);
}
