/* ckalloc-stat: read a snapshot file (alloc/snapshot.c writes them) into the
 * report model. Every field is checked for presence, type and range, and a
 * bad one is named by its JSON path ("pools[0].blocks[3].size"), so a
 * truncated or hand-edited file says what is wrong instead of printing
 * nonsense. */
#include "counters.h"
#include "stat.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_FORMAT "ckalloc-snapshot"
#define SNAP_VERSION 1
#define SNAP_MAX_BYTES ((size_t)1 << 30) /* far above any ring + block list */

typedef struct ctx {
    const char *name; /* the file, for messages */
    char *err;
    size_t errn;
} ctx;

static int fail(ctx *c, const char *where, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx *c, const char *where, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (where && *where) snprintf(c->err, c->errn, "%s: %s: %s", c->name, where, what);
    else snprintf(c->err, c->errn, "%s: %s", c->name, what);
    return -1;
}

/* "where.key" / "where[i]" into buf (a long path is cut short: it only names
 * the place). */
static const char *at_key(char *buf, size_t n, const char *where, const char *key) {
    if (snprintf(buf, n, "%s%s%s", where, *where ? "." : "", key) >= (int)n) buf[n - 2] = '~';
    return buf;
}
static const char *at_idx(char *buf, size_t n, const char *where, size_t i) {
    if (snprintf(buf, n, "%s[%zu]", where, i) >= (int)n) buf[n - 2] = '~';
    return buf;
}

static const cJSON *field(ctx *c, const cJSON *obj, const char *where, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        char w[256];
        fail(c, at_key(w, sizeof w, where, key), "missing");
    }
    return v;
}

static const char *type_name(const cJSON *v) {
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "something else";
}

/* A non-negative integer up to max. */
static int get_uint(ctx *c, const cJSON *obj, const char *where, const char *key, double max,
                    uint64_t *out) {
    const cJSON *v = field(c, obj, where, key);
    if (!v) return -1;
    char w[256];
    at_key(w, sizeof w, where, key);
    if (!cJSON_IsNumber(v)) return fail(c, w, "must be a number, not %s", type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d))
        return fail(c, w, "must be a non-negative integer (got %g)", d);
    if (d > max) return fail(c, w, "is too large (%g)", d);
    /* 2^64 itself is a double above UINT64_MAX: clamp the one value that rounds there. */
    *out = d >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)d;
    return 0;
}

#define U64_MAX_D 18446744073709551615.0
#define I64_MAX_D 9223372036854775807.0

static int get_int64(ctx *c, const cJSON *obj, const char *where, const char *key, int64_t *out) {
    uint64_t u;
    if (get_uint(c, obj, where, key, I64_MAX_D, &u) != 0) return -1;
    *out = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
    return 0;
}

static int get_double(ctx *c, const cJSON *obj, const char *where, const char *key, double *out) {
    const cJSON *v = field(c, obj, where, key);
    if (!v) return -1;
    char w[256];
    at_key(w, sizeof w, where, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0)
        return fail(c, w, "must be a non-negative number");
    *out = v->valuedouble;
    return 0;
}

static const char *get_str(ctx *c, const cJSON *obj, const char *where, const char *key) {
    const cJSON *v = field(c, obj, where, key);
    if (!v) return NULL;
    if (!cJSON_IsString(v) || !v->valuestring) {
        char w[256];
        fail(c, at_key(w, sizeof w, where, key), "must be a string, not %s", type_name(v));
        return NULL;
    }
    return v->valuestring;
}

/* "0x" and 1 to 16 hex digits. */
static int get_hex(ctx *c, const cJSON *obj, const char *where, const char *key, uint64_t *out) {
    const char *s = get_str(c, obj, where, key);
    if (!s) return -1;
    char w[256];
    at_key(w, sizeof w, where, key);
    size_t n = strlen(s);
    if (n < 3 || n > 18 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return fail(c, w, "must be a hex address like \"0x7f0000000000\"");
    uint64_t v = 0;
    for (size_t i = 2; i < n; i++) {
        char ch = s[i];
        unsigned d = ch >= '0' && ch <= '9'   ? (unsigned)(ch - '0')
                     : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                     : ch >= 'A' && ch <= 'F' ? (unsigned)(ch - 'A' + 10)
                                              : 16u;
        if (d == 16) return fail(c, w, "must be a hex address like \"0x7f0000000000\"");
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static const cJSON *get_kind(ctx *c, const cJSON *obj, const char *where, const char *key,
                             int array) {
    const cJSON *v = field(c, obj, where, key);
    if (!v) return NULL;
    if (array ? !cJSON_IsArray(v) : !cJSON_IsObject(v)) {
        char w[256];
        fail(c, at_key(w, sizeof w, where, key), "must be %s, not %s",
             array ? "an array" : "an object", type_name(v));
        return NULL;
    }
    return v;
}

static void copy_str(char *dst, size_t n, const char *src) {
    snprintf(dst, n, "%s", src);
}

/* ---- stats: the keys of ck_print_stats' JSON ---- */

static int get_stat(ctx *c, const cJSON *stats, const char *where, const char *key, ck_stat *s) {
    const cJSON *o = get_kind(c, stats, where, key, 0);
    if (!o) return -1;
    char w[256];
    at_key(w, sizeof w, where, key);
    if (get_int64(c, o, w, "current", &s->current) || get_int64(c, o, w, "peak", &s->peak) ||
        get_uint(c, o, w, "allocated", U64_MAX_D, &s->allocated) ||
        get_uint(c, o, w, "freed", U64_MAX_D, &s->freed))
        return -1;
    return 0;
}

static int parse_stats(ctx *c, const cJSON *o, const char *where, ck_stats *st) {
    memset(st, 0, sizeof *st);
    st->struct_size = sizeof *st;
    struct {
        const char *key;
        ck_stat *s;
    } stats[] = {
#define STAT_KEY(name, bytes) {#name, &st->name},
        CK_STAT_LIST(STAT_KEY)
#undef STAT_KEY
    };
    for (size_t i = 0; i < sizeof stats / sizeof *stats; i++)
        if (get_stat(c, o, where, stats[i].key, stats[i].s)) return -1;
    struct {
        const char *key;
        uint64_t *v;
    } counts[] = {
        {"budget", &st->budget},
        {"largest_free", &st->largest_free},
#define COUNT_KEY(name) {#name, &st->name},
        CK_COUNT_LIST(COUNT_KEY)
#undef COUNT_KEY
    };
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
        if (get_uint(c, o, where, counts[i].key, U64_MAX_D, counts[i].v)) return -1;
    return 0;
}

/* ---- one pool ---- */

static int tag_into(ctx *c, const cJSON *obj, const char *where, char *dst, size_t n) {
    const cJSON *t = field(c, obj, where, "tag");
    if (!t) return -1;
    if (cJSON_IsNull(t)) {
        dst[0] = '\0';
        return 0;
    }
    if (!cJSON_IsString(t) || !t->valuestring) {
        char w[256];
        return fail(c, at_key(w, sizeof w, where, "tag"), "must be a string or null, not %s",
                    type_name(t));
    }
    copy_str(dst, n, t->valuestring);
    return 0;
}

/* Keep top[] as the CKSTAT_TOP largest live blocks, largest first. */
static void top_insert(ckstat_pool *p, const ckstat_top *b) {
    int i = p->ntop < CKSTAT_TOP ? p->ntop++ : CKSTAT_TOP;
    if (i == CKSTAT_TOP) {
        if (b->size <= p->top[CKSTAT_TOP - 1].size) return;
        i = CKSTAT_TOP - 1;
    }
    while (i > 0 && p->top[i - 1].size < b->size) {
        p->top[i] = p->top[i - 1];
        i--;
    }
    p->top[i] = *b;
}

static int parse_blocks(ctx *c, const cJSON *blocks, const char *where, ckstat_pool *p) {
    size_t i = 0;
    char w[256];
    for (const cJSON *b = blocks->child; b; b = b->next, i++) {
        at_idx(w, sizeof w, where, i);
        if (!cJSON_IsObject(b)) return fail(c, w, "must be an object, not %s", type_name(b));
        ckstat_top t;
        memset(&t, 0, sizeof t);
        if (get_hex(c, b, w, "addr", &t.addr) || get_uint(c, b, w, "size", U64_MAX_D, &t.size) ||
            get_uint(c, b, w, "requested", U64_MAX_D, &t.requested) ||
            get_hex(c, b, w, "stream", &t.stream) || tag_into(c, b, w, t.tag, sizeof t.tag))
            return -1;
        const char *state = get_str(c, b, w, "state");
        if (!state) return -1;
        int live = strcmp(state, "live") == 0;
        if (!live && strcmp(state, "free") != 0 && strcmp(state, "pending") != 0) {
            char ws[300];
            return fail(c, at_key(ws, sizeof ws, w, "state"),
                        "must be \"live\", \"free\" or \"pending\" (got \"%.40s\")", state);
        }
        const cJSON *sm = field(c, b, w, "small");
        if (!sm) return -1;
        if (!cJSON_IsBool(sm)) {
            char ws[300];
            return fail(c, at_key(ws, sizeof ws, w, "small"), "must be true or false");
        }
        if (t.requested > t.size) {
            char ws[300];
            return fail(c, at_key(ws, sizeof ws, w, "requested"),
                        "is larger than the block's size");
        }
        if (live) top_insert(p, &t);
    }
    p->nblocks = i;
    return 0;
}

static int parse_segments(ctx *c, const cJSON *segs, const char *where, ckstat_pool *p) {
    size_t i = 0;
    char w[256];
    for (const cJSON *g = segs->child; g; g = g->next, i++) {
        at_idx(w, sizeof w, where, i);
        if (!cJSON_IsObject(g)) return fail(c, w, "must be an object, not %s", type_name(g));
        uint64_t va, size;
        if (get_hex(c, g, w, "va", &va) || get_uint(c, g, w, "size", U64_MAX_D, &size)) return -1;
    }
    p->nsegments = i;
    return 0;
}

static int parse_tags(ctx *c, const cJSON *tags, const char *where, ckstat_pool *p) {
    size_t n = (size_t)cJSON_GetArraySize(tags), i = 0;
    p->tags = calloc(n ? n : 1, sizeof *p->tags);
    if (!p->tags) return fail(c, where, "out of memory");
    char w[256];
    for (const cJSON *t = tags->child; t; t = t->next, i++) {
        at_idx(w, sizeof w, where, i);
        if (!cJSON_IsObject(t)) return fail(c, w, "must be an object, not %s", type_name(t));
        ckstat_tagrow *r = &p->tags[i];
        const char *name = get_str(c, t, w, "tag");
        if (!name || get_uint(c, t, w, "count", U64_MAX_D, &r->count) ||
            get_uint(c, t, w, "bytes", U64_MAX_D, &r->bytes))
            return -1;
        copy_str(r->tag, sizeof r->tag, name);
        p->ntags = i + 1;
    }
    return 0;
}

static const char *const actions[] = {"allocate", "free", "allocate failure", "map", "unmap", "tier"};

static int parse_trace(ctx *c, const cJSON *trace, const char *where, ckstat_pool *p) {
    uint64_t cap, total;
    if (get_uint(c, trace, where, "capacity", U64_MAX_D, &cap) ||
        get_uint(c, trace, where, "total", U64_MAX_D, &total))
        return -1;
    const cJSON *recs = get_kind(c, trace, where, "records", 1);
    if (!recs) return -1;
    char w[256], wr[256];
    at_key(wr, sizeof wr, where, "records");
    size_t n = (size_t)cJSON_GetArraySize(recs), i = 0;
    if (n > cap || n > total)
        return fail(c, wr, "holds %zu records, more than its capacity %llu or total %llu", n,
                    (unsigned long long)cap, (unsigned long long)total);
    p->timeline = calloc(n ? n : 1, sizeof *p->timeline);
    if (!p->timeline) return fail(c, where, "out of memory");
    uint64_t t0 = 0, prev = 0;
    for (const cJSON *r = recs->child; r; r = r->next, i++) {
        at_idx(w, sizeof w, wr, i);
        if (!cJSON_IsObject(r)) return fail(c, w, "must be an object, not %s", type_name(r));
        uint64_t t, size, addr, stream;
        ckstat_point *pt = &p->timeline[i];
        if (get_uint(c, r, w, "t_ns", U64_MAX_D, &t) || get_hex(c, r, w, "addr", &addr) ||
            get_uint(c, r, w, "size", U64_MAX_D, &size) || get_hex(c, r, w, "stream", &stream) ||
            get_uint(c, r, w, "allocated", I64_MAX_D, &pt->live) ||
            get_uint(c, r, w, "reserved", I64_MAX_D, &pt->reserved) ||
            get_uint(c, r, w, "physical", I64_MAX_D, &pt->physical) ||
            (cJSON_HasObjectItem(r, "offloaded") &&
             get_uint(c, r, w, "offloaded", I64_MAX_D, &pt->offloaded)) ||
            (cJSON_HasObjectItem(r, "dropped") && get_uint(c, r, w, "dropped", I64_MAX_D, &pt->dropped)))
            return -1;
        const char *a = get_str(c, r, w, "action");
        if (!a) return -1;
        size_t k = 0;
        while (k < sizeof actions / sizeof *actions && strcmp(a, actions[k]) != 0) k++;
        if (k == sizeof actions / sizeof *actions) {
            char wa[300];
            return fail(c, at_key(wa, sizeof wa, w, "action"), "unknown action \"%.40s\"", a);
        }
        if (i == 0) t0 = prev = t;
        if (t < prev) {
            char wt[300];
            return fail(c, at_key(wt, sizeof wt, w, "t_ns"), "goes back in time");
        }
        prev = t;
        pt->t_s = (double)(t - t0) / 1e9;
        p->npoints = i + 1;
    }
    return 0;
}

/* [min, max] of one byte count in a bucket. */
static int get_range(ctx *c, const cJSON *b, const char *where, const char *key, uint64_t *lo,
                     uint64_t *hi) {
    const cJSON *v = get_kind(c, b, where, key, 1);
    if (!v) return -1;
    char w[256];
    at_key(w, sizeof w, where, key);
    const cJSON *a = cJSON_GetArrayItem(v, 0), *z = cJSON_GetArrayItem(v, 1);
    if (cJSON_GetArraySize(v) != 2 || !cJSON_IsNumber(a) || !cJSON_IsNumber(z) ||
        !(a->valuedouble >= 0) || !(z->valuedouble >= a->valuedouble) ||
        a->valuedouble != floor(a->valuedouble) || z->valuedouble != floor(z->valuedouble) ||
        z->valuedouble > I64_MAX_D)
        return fail(c, w, "must be [min, max], two integers with 0 <= min <= max");
    *lo = (uint64_t)a->valuedouble;
    *hi = (uint64_t)z->valuedouble;
    return 0;
}

/* The whole-run history: buckets in order, each full but the last, covering
 * every operation once. */
static int parse_history(ctx *c, const cJSON *h, const char *where, ckstat_pool *p) {
    uint64_t cap, span, total, start, end;
    if (get_uint(c, h, where, "capacity", 1 << 24, &cap) ||
        get_uint(c, h, where, "records_per_bucket", U64_MAX_D, &span) ||
        get_uint(c, h, where, "total", U64_MAX_D, &total) ||
        get_uint(c, h, where, "start_ns", U64_MAX_D, &start) ||
        get_uint(c, h, where, "end_ns", U64_MAX_D, &end))
        return -1;
    char w[256], wb[256];
    if (span == 0 || (span & (span - 1)))
        return fail(c, at_key(w, sizeof w, where, "records_per_bucket"),
                    "must be a power of two (got %llu)", (unsigned long long)span);
    if (end < start) return fail(c, at_key(w, sizeof w, where, "end_ns"), "is before start_ns");
    const cJSON *bs = get_kind(c, h, where, "buckets", 1);
    if (!bs) return -1;
    at_key(wb, sizeof wb, where, "buckets");
    size_t n = (size_t)cJSON_GetArraySize(bs), i = 0;
    if (n > cap) return fail(c, wb, "holds %zu buckets, more than its capacity %llu", n,
                             (unsigned long long)cap);
    p->history = calloc(n ? n : 1, sizeof *p->history);
    if (!p->history) return fail(c, where, "out of memory");
    p->history_span = span;
    p->history_total = total;
    p->history_end_s = (double)(end - start) / 1e9;
    int timed = n > 0;
    uint64_t covered = 0, prev = start;
    for (const cJSON *b = bs->child; b; b = b->next, i++) {
        at_idx(w, sizeof w, wb, i);
        if (!cJSON_IsObject(b)) return fail(c, w, "must be an object, not %s", type_name(b));
        ckstat_bucket *k = &p->history[i];
        uint64_t t0, t1;
        if (get_uint(c, b, w, "t0_ns", U64_MAX_D, &t0) || get_uint(c, b, w, "t1_ns", U64_MAX_D, &t1) ||
            get_uint(c, b, w, "records", U64_MAX_D, &k->records) ||
            get_range(c, b, w, "allocated", &k->lo.live, &k->hi.live) ||
            get_range(c, b, w, "reserved", &k->lo.reserved, &k->hi.reserved) ||
            get_range(c, b, w, "physical", &k->lo.physical, &k->hi.physical) ||
            (cJSON_HasObjectItem(b, "offloaded") &&
             get_range(c, b, w, "offloaded", &k->lo.offloaded, &k->hi.offloaded)) ||
            (cJSON_HasObjectItem(b, "dropped") &&
             get_range(c, b, w, "dropped", &k->lo.dropped, &k->hi.dropped)))
            return -1;
        char wk[300];
        if (k->records == 0 || k->records > span || (b->next && k->records != span))
            return fail(c, at_key(wk, sizeof wk, w, "records"),
                        "must be %llu (records_per_bucket%s), got %llu", (unsigned long long)span,
                        b->next ? "" : ", or fewer in the last bucket", (unsigned long long)k->records);
        covered += k->records;
        if (!t0 || !t1) timed = 0;
        else if (t0 < prev || t1 < t0 || t1 > end)
            return fail(c, at_key(wk, sizeof wk, w, "t0_ns"),
                        "is out of order (buckets go forward in time within start_ns..end_ns)");
        else prev = t1;
        k->t0_s = t0 ? (double)(t0 - start) / 1e9 : 0;
        k->t1_s = t1 ? (double)(t1 - start) / 1e9 : 0;
        p->nhistory = i + 1;
    }
    if (covered != total)
        return fail(c, wb, "cover %llu operations, but total is %llu", (unsigned long long)covered,
                    (unsigned long long)total);
    p->history_timed = timed;
    return 0;
}

static int parse_pool(ctx *c, const cJSON *o, const char *where, ckstat_pool *p) {
    if (!cJSON_IsObject(o)) return fail(c, where, "must be an object, not %s", type_name(o));
    uint64_t dev;
    if (get_uint(c, o, where, "device", 1 << 20, &dev)) return -1;
    p->device = (int)dev;
    const char *be = get_str(c, o, where, "backend");
    if (!be) return -1;
    copy_str(p->backend, sizeof p->backend, be);
    char w[256];
    const cJSON *stats = get_kind(c, o, where, "stats", 0);
    if (!stats || parse_stats(c, stats, at_key(w, sizeof w, where, "stats"), &p->stats)) return -1;
    const cJSON *segs = get_kind(c, o, where, "segments", 1);
    if (!segs || parse_segments(c, segs, at_key(w, sizeof w, where, "segments"), p)) return -1;
    const cJSON *blocks = get_kind(c, o, where, "blocks", 1);
    if (!blocks || parse_blocks(c, blocks, at_key(w, sizeof w, where, "blocks"), p)) return -1;
    const cJSON *tags = get_kind(c, o, where, "tags", 1);
    if (!tags || parse_tags(c, tags, at_key(w, sizeof w, where, "tags"), p)) return -1;
    /* Optional: files written before the whole-run history have none. */
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(o, "history");
    uint64_t start_ns = 0;
    if (hist) {
        if (!cJSON_IsObject(hist))
            return fail(c, at_key(w, sizeof w, where, "history"), "must be an object, not %s",
                        type_name(hist));
        if (parse_history(c, hist, at_key(w, sizeof w, where, "history"), p)) return -1;
        start_ns = (uint64_t)cJSON_GetObjectItemCaseSensitive(hist, "start_ns")->valuedouble;
    }
    const cJSON *trace = get_kind(c, o, where, "trace", 0);
    if (!trace || parse_trace(c, trace, at_key(w, sizeof w, where, "trace"), p)) return -1;
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(trace, "records");
    const cJSON *r0 = recs ? cJSON_GetArrayItem(recs, 0) : NULL;
    const cJSON *t0 = r0 ? cJSON_GetObjectItemCaseSensitive(r0, "t_ns") : NULL;
    if (start_ns && t0 && t0->valuedouble > (double)start_ns)
        p->ring_t0_s = (t0->valuedouble - (double)start_ns) / 1e9;
    return 0;
}

static void free_partial(ckstat_report *r) {
    for (size_t i = 0; i < r->npools; i++) {
        free(r->pools[i].timeline);
        free(r->pools[i].history);
        free(r->pools[i].tags);
    }
    free(r->pools);
    memset(r, 0, sizeof *r);
}

int ckstat_parse_snapshot(const char *buf, size_t len, const char *name, ckstat_report *out,
                          char *err, size_t errn) {
    ctx c = {name, err, errn};
    memset(out, 0, sizeof *out);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        size_t off = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : len;
        /* A snapshot ends with '}': without one the file was cut short. */
        size_t last = len;
        while (last && (buf[last - 1] == ' ' || buf[last - 1] == '\n' || buf[last - 1] == '\r' ||
                        buf[last - 1] == '\t'))
            last--;
        int cut = buf[0] == '{' && (last == 0 || buf[last - 1] != '}');
        return fail(&c, NULL, "not valid JSON (parse error at byte %zu of %zu)%s", off, len,
                    cut ? ": the file is truncated" : "");
    }
    int rc = -1;
    /* A snapshot is renamed into place whole: anything after it is damage. */
    while (end && end < buf + len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
        end++;
    if (end && end < buf + len) {
        fail(&c, NULL, "not valid JSON (unexpected data after the end, at byte %zu of %zu)",
             (size_t)(end - buf), len);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        fail(&c, NULL, "not a ckalloc snapshot (the top level is %s, not an object)",
             type_name(root));
        goto done;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, SNAP_FORMAT) != 0) {
        fail(&c, NULL, "not a ckalloc snapshot (\"format\" is %s%.40s%s, not \"" SNAP_FORMAT "\")",
             cJSON_IsString(fmt) ? "\"" : "", cJSON_IsString(fmt) ? fmt->valuestring : type_name(fmt),
             cJSON_IsString(fmt) ? "\"" : "");
        goto done;
    }
    uint64_t ver;
    if (get_uint(&c, root, "", "version", U64_MAX_D, &ver)) goto done;
    if (ver != SNAP_VERSION) {
        fail(&c, NULL, "snapshot version %llu is not supported (this ckalloc-stat reads version %d)",
             (unsigned long long)ver, SNAP_VERSION);
        goto done;
    }
    uint64_t pid;
    const char *cmd;
    if (get_uint(&c, root, "", "pid", 2147483647.0, &pid) ||
        !(cmd = get_str(&c, root, "", "cmdline")) ||
        get_double(&c, root, "", "taken_at", &out->taken_at))
        goto done;
    if (out->taken_at >= 253402300800.0) { /* year 10000: not a time a snapshot was taken */
        fail(&c, "taken_at", "is not a time (%g seconds since 1970)", out->taken_at);
        goto done;
    }
    out->pid = (int)pid;
    copy_str(out->cmd, sizeof out->cmd, cmd);
    copy_str(out->source, sizeof out->source, name);
    const cJSON *pools = get_kind(&c, root, "", "pools", 1);
    if (!pools) goto done;
    size_t n = (size_t)cJSON_GetArraySize(pools), i = 0;
    out->pools = calloc(n ? n : 1, sizeof *out->pools);
    if (!out->pools) {
        fail(&c, NULL, "out of memory");
        goto done;
    }
    char w[64];
    for (const cJSON *p = pools->child; p; p = p->next, i++) {
        out->npools = i + 1;
        if (parse_pool(&c, p, at_idx(w, sizeof w, "pools", i), &out->pools[i])) goto done;
    }
    out->npools = i;
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc != 0) free_partial(out);
    return rc;
}

int ckstat_load_snapshot(const char *path, ckstat_report *out, char *err, size_t errn) {
    ctx c = {path, err, errn};
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return fail(&c, NULL, "cannot open: %s", strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int rc = -1;
    while (buf) {
        if (len == cap) {
            if (cap >= SNAP_MAX_BYTES) {
                fail(&c, NULL, "larger than %zu bytes: not a snapshot", SNAP_MAX_BYTES);
                goto out;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                fail(&c, NULL, "out of memory");
                goto out;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (!buf) {
        fail(&c, NULL, "out of memory");
        goto out;
    }
    if (ferror(f)) {
        fail(&c, NULL, "cannot read: %s", strerror(errno));
        goto out;
    }
    if (len == 0) {
        fail(&c, NULL, "empty file: not a snapshot");
        goto out;
    }
    rc = ckstat_parse_snapshot(buf, len, path, out, err, errn);
out:
    free(buf);
    fclose(f);
    return rc;
}
