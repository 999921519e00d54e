/* Statistics: counters kept under the pool lock, one emitter that prints
 * them as a table or as JSON. */
#include "counters.h"
#include "pool.h"
#include "ratios.h"

#include <inttypes.h>
#include <string.h>

void ck__stats_from_counters(const ck_counters *c, uint64_t budget, uint64_t largest_free,
                             ck_stats *st) {
    memset(st, 0, sizeof *st);
    st->struct_size = sizeof *st;
#define COPY_STAT(name, bytes) st->name = c->name;
#define COPY_COUNT(name) st->name = c->name;
    CK_STAT_LIST(COPY_STAT)
    CK_COUNT_LIST(COPY_COUNT)
#undef COPY_STAT
#undef COPY_COUNT
    st->budget = budget;
    st->largest_free = largest_free;
}

void ck__stats_fill(ck_pool *p, ck_stats *st) {
    ck__stats_from_counters(p->c, p->budget, ck__largest_free(p), st);
}

CK_API ck_status ck_get_stats(ck_pool *p, ck_stats *out) {
    if (!p || !out) return ck__err(CK_ERR_INVALID, "ck_get_stats: %s is NULL", p ? "stats" : "pool");
    size_t n = out->struct_size;
    if (n < sizeof(size_t) || n > sizeof(ck_stats))
        return ck__err(CK_ERR_INVALID,
                       "ck_get_stats: stats.struct_size %zu is not one this library knows (set it "
                       "to sizeof(ck_stats))",
                       n);
    ck_stats st;
    pool_lock(p);
    ck__pool_eager_release(p);
    ck__tier_count_spans(p);
    ck__stats_fill(p, &st);
    pool_unlock(p);
    memcpy(out, &st, n);
    out->struct_size = n;
    return CK_OK;
}

CK_API ck_status ck_reset_peak_stats(ck_pool *p) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_reset_peak_stats: pool is NULL");
    pool_lock(p);
#define RESET_PEAK(name, bytes) __atomic_store_n(&p->c->name.peak, p->c->name.current, __ATOMIC_RELAXED);
    CK_STAT_LIST(RESET_PEAK)
#undef RESET_PEAK
    pool_unlock(p);
    return CK_OK;
}

/* ---- one emitter, two formats ---- */

typedef struct emitter {
    FILE *f;
    ck_format fmt;
    int n; /* items written so far (JSON commas) */
} emitter;

static void em_begin(emitter *e, const char *backend, const ck_stats *st) {
    char b[32];
    if (e->fmt == CK_FORMAT_JSON) {
        fprintf(e->f, "{\"version\":\"%s\",\"backend\":\"%s\",\"budget\":%" PRIu64, ck_version(),
                backend, st->budget);
    } else {
        fprintf(e->f, "ckalloc %s  backend %s  budget %s\n", ck_version(), backend,
                ck__fmt_bytes(st->budget, b, sizeof b));
        fprintf(e->f, "%-22s %14s %14s %14s %14s\n", "", "current", "peak", "allocated", "freed");
    }
    e->n = 1;
}

static void em_stat(emitter *e, const char *name, const ck_stat *s, int bytes) {
    if (e->fmt == CK_FORMAT_JSON) {
        fprintf(e->f,
                ",\"%s\":{\"current\":%" PRId64 ",\"peak\":%" PRId64 ",\"allocated\":%" PRIu64
                ",\"freed\":%" PRIu64 "}",
                name, s->current, s->peak, s->allocated, s->freed);
        return;
    }
    char c[32], p[32], a[32], f[32];
    if (bytes) {
        ck__fmt_bytes(s->current < 0 ? 0 : (uint64_t)s->current, c, sizeof c);
        ck__fmt_bytes(s->peak < 0 ? 0 : (uint64_t)s->peak, p, sizeof p);
        ck__fmt_bytes(s->allocated, a, sizeof a);
        ck__fmt_bytes(s->freed, f, sizeof f);
    } else {
        snprintf(c, sizeof c, "%" PRId64, s->current);
        snprintf(p, sizeof p, "%" PRId64, s->peak);
        snprintf(a, sizeof a, "%" PRIu64, s->allocated);
        snprintf(f, sizeof f, "%" PRIu64, s->freed);
    }
    fprintf(e->f, "%-22s %14s %14s %14s %14s\n", name, c, p, a, f);
}

static void em_count(emitter *e, const char *name, uint64_t v, int bytes) {
    if (e->fmt == CK_FORMAT_JSON) {
        fprintf(e->f, ",\"%s\":%" PRIu64, name, v);
        return;
    }
    char b[32];
    if (bytes) ck__fmt_bytes(v, b, sizeof b);
    else snprintf(b, sizeof b, "%" PRIu64, v);
    fprintf(e->f, "%-22s %14s\n", name, b);
}

static uint64_t upos(int64_t v) { return v < 0 ? 0 : (uint64_t)v; }

/* The two ratios (ratios.h), in both formats. */
static void em_end(emitter *e, const ck_stats *st) {
    double frag = ck__fragmentation(upos(st->allocated_bytes.current), upos(st->reserved_bytes.current));
    double over = ck__peak_overhead(upos(st->physical_bytes.peak), upos(st->requested_bytes.peak));
    if (e->fmt == CK_FORMAT_JSON) {
        fprintf(e->f, ",\"fragmentation\":%.4f,\"peak_overhead\":%.4f}\n", frag, over);
        return;
    }
    fprintf(e->f, "%-22s %14.4f   1 - allocated / reserved, now\n", "fragmentation", frag);
    fprintf(e->f, "%-22s %14.4f   peak physical / peak requested\n", "peak_overhead", over);
}

CK_API ck_status ck_print_stats(ck_pool *p, FILE *out, ck_format format) {
    if (!p || !out) return ck__err(CK_ERR_INVALID, "ck_print_stats: %s is NULL", p ? "out" : "pool");
    if (format != CK_FORMAT_TABLE && format != CK_FORMAT_JSON)
        return ck__err(CK_ERR_INVALID, "ck_print_stats: unknown format %d", (int)format);
    ck_stats st;
    pool_lock(p);
    ck__stats_fill(p, &st);
    pool_unlock(p);
    return ck__stats_print(out, format, p->be->name, &st);
}

/* Also used by snapshot.c, so a snapshot's "stats" has the same keys. */
ck_status ck__stats_print(FILE *out, ck_format format, const char *backend, const ck_stats *st) {
    emitter e = {out, format, 0};
    em_begin(&e, backend, st);
#define EMIT_STAT(name, bytes) em_stat(&e, #name, &st->name, bytes);
#define EMIT_COUNT(name) em_count(&e, #name, st->name, 0);
    CK_STAT_LIST(EMIT_STAT)
    em_count(&e, "largest_free", st->largest_free, 1);
    CK_COUNT_LIST(EMIT_COUNT)
#undef EMIT_STAT
#undef EMIT_COUNT
    em_end(&e, st);
    if (ferror(out)) return ck__err(CK_ERR_IO, "ck_print_stats: write failed");
    return CK_OK;
}
