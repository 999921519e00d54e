/* Statistics: counters kept under the pool lock, one emitter that prints
 * them as a table or as JSON. */
#include "pool.h"
#include "ratios.h"

#include <inttypes.h>
#include <string.h>

void ck__stats_from_counters(const ck_counters *c, uint64_t budget, uint64_t largest_free,
                             ck_stats *st) {
    memset(st, 0, sizeof *st);
    st->struct_size = sizeof *st;
    st->allocation = c->allocation;
    st->segment = c->segment;
    st->active = c->active;
    st->inactive_split = c->inactive_split;
    st->allocated_bytes = c->allocated_bytes;
    st->reserved_bytes = c->reserved_bytes;
    st->active_bytes = c->active_bytes;
    st->inactive_split_bytes = c->inactive_split_bytes;
    st->requested_bytes = c->requested_bytes;
    st->mapped_bytes = c->mapped_bytes;
    st->physical_bytes = c->physical_bytes;
    st->num_alloc_retries = c->num_alloc_retries;
    st->num_ooms = c->num_ooms;
    st->num_map_calls = c->num_map_calls;
    st->num_unmap_calls = c->num_unmap_calls;
    st->num_create_calls = c->num_create_calls;
    st->num_release_calls = c->num_release_calls;
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
    ck__stats_fill(p, &st);
    pool_unlock(p);
    memcpy(out, &st, n);
    out->struct_size = n;
    return CK_OK;
}

CK_API ck_status ck_reset_peak_stats(ck_pool *p) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_reset_peak_stats: pool is NULL");
    pool_lock(p);
    ck_stat *all[] = {&p->c->allocation,      &p->c->segment,         &p->c->active,
                      &p->c->inactive_split,  &p->c->allocated_bytes, &p->c->reserved_bytes,
                      &p->c->active_bytes,    &p->c->inactive_split_bytes,
                      &p->c->requested_bytes, &p->c->mapped_bytes,    &p->c->physical_bytes};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        __atomic_store_n(&all[i]->peak, all[i]->current, __ATOMIC_RELAXED);
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
    em_stat(&e, "allocated_bytes", &st->allocated_bytes, 1);
    em_stat(&e, "requested_bytes", &st->requested_bytes, 1);
    em_stat(&e, "active_bytes", &st->active_bytes, 1);
    em_stat(&e, "inactive_split_bytes", &st->inactive_split_bytes, 1);
    em_stat(&e, "reserved_bytes", &st->reserved_bytes, 1);
    em_stat(&e, "mapped_bytes", &st->mapped_bytes, 1);
    em_stat(&e, "physical_bytes", &st->physical_bytes, 1);
    em_stat(&e, "allocation", &st->allocation, 0);
    em_stat(&e, "active", &st->active, 0);
    em_stat(&e, "inactive_split", &st->inactive_split, 0);
    em_stat(&e, "segment", &st->segment, 0);
    em_count(&e, "largest_free", st->largest_free, 1);
    em_count(&e, "num_alloc_retries", st->num_alloc_retries, 0);
    em_count(&e, "num_ooms", st->num_ooms, 0);
    em_count(&e, "num_map_calls", st->num_map_calls, 0);
    em_count(&e, "num_unmap_calls", st->num_unmap_calls, 0);
    em_count(&e, "num_create_calls", st->num_create_calls, 0);
    em_count(&e, "num_release_calls", st->num_release_calls, 0);
    em_end(&e, st);
    if (ferror(out)) return ck__err(CK_ERR_IO, "ck_print_stats: write failed");
    return CK_OK;
}
