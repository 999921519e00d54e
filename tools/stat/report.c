/* ckalloc-stat's printers: one report (a live process or a snapshot) or a
 * list of them, as a table for a person, JSON, or Prometheus text. */
#include "counters.h"
#include "internal.h"
#include "ratios.h"
#include "stat.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void ckstat_report_free(ckstat_report *r) {
    if (!r) return;
    for (size_t i = 0; i < r->npools && r->pools; i++) {
        free(r->pools[i].timeline);
        free(r->pools[i].history);
        free(r->pools[i].tags);
    }
    free(r->pools);
    r->pools = NULL;
    r->npools = 0;
}

static int is_live(const ckstat_report *r) { return strcmp(r->source, "live") == 0; }

/* largest_free of a live pool is only known once its owner answered a request. */
static int largest_free_known(const ckstat_report *r, const ckstat_pool *p) {
    return !is_live(r) || p->top_age_s >= 0 || p->top_fresh;
}

static uint64_t ucur(const ck_stat *s) { return s->current < 0 ? 0 : (uint64_t)s->current; }
static uint64_t upeak(const ck_stat *s) { return s->peak < 0 ? 0 : (uint64_t)s->peak; }

/* The two ratios, as everywhere else (alloc/ratios.h). */
static double frag_of(const ck_stats *s) {
    return ck__fragmentation(ucur(&s->allocated_bytes), ucur(&s->reserved_bytes));
}
static double overhead_of(const ck_stats *s) {
    return ck__peak_overhead(upeak(&s->physical_bytes), upeak(&s->requested_bytes));
}

static const char *bytes(uint64_t v, char *buf, size_t n) { return ck__fmt_bytes(v, buf, n); }

static void fmt_time(double t, char *buf, size_t n) {
    time_t s = (time_t)t;
    struct tm tm;
    if (!localtime_r(&s, &tm) || !strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm)) snprintf(buf, n, "?");
}

/* ---- table ------------------------------------------------------------------ */

static void row_bytes(FILE *f, const char *name, const ck_stat *s) {
    char a[32], b[32];
    fprintf(f, "  %-16s %14s %14s\n", name, bytes(ucur(s), a, sizeof a),
            bytes(upeak(s), b, sizeof b));
}

static void row_count(FILE *f, const char *name, const ck_stat *s) {
    fprintf(f, "  %-16s %14" PRId64 " %14" PRId64 "\n", name, s->current, s->peak);
}

static void fmt_ratio(double v, char *buf, size_t n) {
    if (isnan(v)) snprintf(buf, n, "-");
    else snprintf(buf, n, "%.3f", v);
}

static void table_top(FILE *f, const ckstat_report *r, const ckstat_pool *p) {
    if (is_live(r)) {
        char age[64];
        if (p->top_fresh) snprintf(age, sizeof age, "refreshed for this report");
        else if (p->top_age_s >= 0)
            snprintf(age, sizeof age, "as of %.1f s ago: the owner is idle", p->top_age_s);
        else snprintf(age, sizeof age, "none yet");
        fprintf(f, "\n  top allocations by size (%s)\n", age);
        if (!p->top_fresh && p->top_age_s < 0) {
            fprintf(
                f,
                "    the owner has not refreshed the list: it made no ckalloc call since asked\n");
            return;
        }
    } else {
        fprintf(f, "\n  top allocations by size\n");
    }
    if (p->ntop == 0) {
        fprintf(f, "    no live allocation\n");
        return;
    }
    fprintf(f, "  %4s %12s %12s  %-18s %-18s %s\n", "#", "size", "requested", "address", "stream",
            "tag");
    for (int k = 0; k < p->ntop && k < CKSTAT_TOP; k++) {
        const ckstat_top *t = &p->top[k];
        char a[32], b[32], addr[32], stream[32];
        snprintf(addr, sizeof addr, "0x%" PRIx64, t->addr);
        snprintf(stream, sizeof stream, "0x%" PRIx64, t->stream);
        fprintf(f, "  %4d %12s %12s  %-18s %-18s %s\n", k + 1, bytes(t->size, a, sizeof a),
                bytes(t->requested, b, sizeof b), addr, stream, t->tag[0] ? t->tag : "-");
    }
}

/* The whole run from the history: 12 rows, each the max over its share of
 * the buckets, so the peak shows in a row as in the headline. */
static void table_history(FILE *f, const ckstat_pool *p) {
    const ckstat_bucket *b = p->history;
    size_t n = p->nhistory, peak = 0;
    for (size_t i = 1; i < n; i++)
        if (b[i].hi.live > b[peak].hi.live) peak = i;
    char a[32];
    fprintf(f, "\n  memory over the whole run (%" PRIu64 " operations in %zu buckets; live peaks at %s",
            p->history_total, n, bytes(b[peak].hi.live, a, sizeof a));
    if (p->history_timed) fprintf(f, ", t = %.3f s", b[peak].t0_s);
    fprintf(f, ")\n  %10s %14s %14s %14s   (max over each row's %s)\n",
            p->history_timed ? "from t (s)" : "from op", "live", "reserved", "physical",
            p->history_timed ? "time" : "operations");
    size_t rows = n < 12 ? n : 12;
    for (size_t k = 0; k < rows; k++) {
        size_t i0 = k * n / rows, i1 = (k + 1) * n / rows;
        ckstat_point m = b[i0].hi;
        for (size_t i = i0 + 1; i < i1; i++) {
            if (b[i].hi.live > m.live) m.live = b[i].hi.live;
            if (b[i].hi.reserved > m.reserved) m.reserved = b[i].hi.reserved;
            if (b[i].hi.physical > m.physical) m.physical = b[i].hi.physical;
        }
        char l[32], r[32], ph[32];
        if (p->history_timed) fprintf(f, "  %10.3f", b[i0].t0_s);
        else fprintf(f, "  %10" PRIu64, (uint64_t)i0 * p->history_span);
        fprintf(f, " %14s %14s %14s\n", bytes(m.live, l, sizeof l), bytes(m.reserved, r, sizeof r),
                bytes(m.physical, ph, sizeof ph));
    }
}

static void table_timeline(FILE *f, const ckstat_pool *p) {
    if (p->history && p->nhistory) table_history(f, p);
    if (!p->timeline || p->npoints == 0) return;
    const ckstat_point *pt = p->timeline;
    size_t n = p->npoints, peak = 0;
    for (size_t i = 1; i < n; i++)
        if (pt[i].live > pt[peak].live) peak = i;
    char a[32];
    fprintf(f, "\n  recent operations (%zu points over %.3f s; live peaks at %s, t = %.3f s)\n", n,
            pt[n - 1].t_s, bytes(pt[peak].live, a, sizeof a), pt[peak].t_s);
    fprintf(f, "  %10s %14s %14s %14s\n", "t (s)", "live", "reserved", "physical");
    /* At most 12 rows, evenly spaced, the last point included. */
    size_t rows = n < 12 ? n : 12;
    for (size_t k = 0; k < rows; k++) {
        size_t i = rows == 1 ? 0 : k * (n - 1) / (rows - 1);
        char l[32], r[32], ph[32];
        fprintf(f, "  %10.3f %14s %14s %14s\n", pt[i].t_s, bytes(pt[i].live, l, sizeof l),
                bytes(pt[i].reserved, r, sizeof r), bytes(pt[i].physical, ph, sizeof ph));
    }
}

static void table_tags(FILE *f, const ckstat_pool *p) {
    if (!p->tags || p->ntags == 0) return;
    fprintf(f, "\n  live bytes by tag\n  %-32s %10s %14s\n", "tag", "count", "bytes");
    for (size_t i = 0; i < p->ntags; i++) {
        char b[32];
        fprintf(f, "  %-32s %10" PRIu64 " %14s\n", p->tags[i].tag[0] ? p->tags[i].tag : "-",
                p->tags[i].count, bytes(p->tags[i].bytes, b, sizeof b));
    }
}

static void table_report(FILE *f, const ckstat_report *r) {
    char when[64];
    fmt_time(r->taken_at, when, sizeof when);
    fprintf(f, "pid %d  %s\n", r->pid, r->cmd[0] ? r->cmd : "?");
    if (is_live(r)) fprintf(f, "live, read at %s\n", when);
    else fprintf(f, "snapshot %s, taken at %s\n", r->source, when);
    if (r->npools == 0) fprintf(f, "\nno pool is published\n");
    for (size_t i = 0; i < r->npools; i++) {
        const ckstat_pool *p = &r->pools[i];
        const ck_stats *s = &p->stats;
        char a[32], b[32];
        fprintf(f, "\npool %zu of %zu: device %d, %s backend, budget %s\n", i + 1, r->npools,
                p->device, p->backend, bytes(s->budget, a, sizeof a));
        fprintf(f, "  %-16s %14s %14s\n", "", "current", "peak");
        row_bytes(f, "allocated", &s->allocated_bytes);
        row_bytes(f, "reserved", &s->reserved_bytes);
        row_bytes(f, "physical", &s->physical_bytes);
        row_bytes(f, "requested", &s->requested_bytes);
        if (s->num_stashes || s->offloaded_bytes.peak || s->dropped_bytes.peak) {
            /* The tier engine: live tensors whose device memory went back. */
            row_bytes(f, "offloaded", &s->offloaded_bytes);
            row_bytes(f, "dropped", &s->dropped_bytes);
            row_bytes(f, "pinned host", &s->host_bytes);
            fprintf(f, "  stashes / fetches %13" PRIu64 " %14" PRIu64 "   prefetch hits %" PRIu64
                       ", misses %" PRIu64 ", evictions %" PRIu64 "\n",
                    s->num_stashes, s->num_fetches, s->prefetch_hits, s->prefetch_misses,
                    s->num_evictions);
            fprintf(f, "  %-16s %11.3f ms %11.3f ms   consumer streams in fetches / of which replays\n",
                    "fetch wait", (double)s->fetch_wait_ns / 1e6, (double)s->replay_ns / 1e6);
        }
        fmt_ratio(frag_of(s), a, sizeof a);
        fprintf(f, "  %-16s %14s %14s   1 - allocated / reserved, now\n", "fragmentation", a, "");
        fmt_ratio(overhead_of(s), b, sizeof b);
        fprintf(f, "  %-16s %14s %14s   peak physical / peak requested\n", "peak_overhead", "", b);
        row_count(f, "allocations", &s->allocation);
        row_count(f, "segments", &s->segment);
        if (largest_free_known(r, p))
            fprintf(f, "  %-16s %14s %14s   largest mapped free range\n", "largest free",
                    bytes(s->largest_free, a, sizeof a), "");
        else
            fprintf(f, "  %-16s %14s %14s   (the owner has not answered yet)\n", "largest free",
                    "?", "");
        fprintf(f, "  %-16s %14" PRIu64 " %14s   num_alloc_retries: had to unmap cached memory\n",
                "OOM retries", s->num_alloc_retries, "");
        fprintf(f, "  %-16s %14" PRIu64 " %14s   num_ooms: failed with CK_ERR_NOMEM\n", "OOMs",
                s->num_ooms, "");
        if (s->budget)
            snprintf(b, sizeof b, "%.1f%%",
                     100.0 * (double)ucur(&s->physical_bytes) / (double)s->budget);
        else snprintf(b, sizeof b, "-");
        fprintf(f, "  %-16s %14s %14s   physical now / budget\n", "budget",
                bytes(s->budget, a, sizeof a), b);
        if (!is_live(r) && (p->nsegments || p->nblocks))
            fprintf(f, "  %-16s %14" PRIu64 " segments, %" PRIu64 " blocks in the file\n",
                    "snapshot", p->nsegments, p->nblocks);
        table_top(f, r, p);
        table_timeline(f, p);
        table_tags(f, p);
    }
}

/* ---- JSON (one line per report) ------------------------------------------- */

static void jstr(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void jnum(FILE *f, double v) {
    if (isnan(v) || isinf(v)) fputs("null", f);
    else fprintf(f, "%.6g", v);
}

static void jstat(FILE *f, const char *name, const ck_stat *s) {
    fprintf(f,
            ",\"%s\":{\"current\":%" PRId64 ",\"peak\":%" PRId64 ",\"allocated\":%" PRIu64
            ",\"freed\":%" PRIu64 "}",
            name, s->current, s->peak, s->allocated, s->freed);
}

static void json_pool(FILE *f, const ckstat_report *r, const ckstat_pool *p) {
    const ck_stats *s = &p->stats;
    fprintf(f, "{\"device\":%d,\"backend\":", p->device);
    jstr(f, p->backend);
    fprintf(f, ",\"budget\":%" PRIu64, s->budget);
#define JSON_STAT(name, bytes) jstat(f, #name, &s->name);
#define JSON_COUNT(name) fprintf(f, ",\"" #name "\":%" PRIu64, s->name);
    CK_STAT_LIST(JSON_STAT)
    CK_COUNT_LIST(JSON_COUNT)
#undef JSON_STAT
#undef JSON_COUNT
    if (largest_free_known(r, p)) fprintf(f, ",\"largest_free\":%" PRIu64, s->largest_free);
    else fputs(",\"largest_free\":null", f);
    fputs(",\"fragmentation\":", f);
    jnum(f, frag_of(s));
    fputs(",\"peak_overhead\":", f);
    jnum(f, overhead_of(s));
    if (is_live(r)) {
        fprintf(f, ",\"top_fresh\":%s,\"top_age_s\":", p->top_fresh ? "true" : "false");
        if (p->top_fresh) fputs("0", f);
        else jnum(f, p->top_age_s >= 0 ? p->top_age_s : NAN);
    } else {
        fprintf(f, ",\"nsegments\":%" PRIu64 ",\"nblocks\":%" PRIu64, p->nsegments, p->nblocks);
    }
    fputs(",\"top\":[", f);
    for (int k = 0; k < p->ntop && k < CKSTAT_TOP; k++) {
        const ckstat_top *t = &p->top[k];
        fprintf(f,
                "%s{\"addr\":\"0x%" PRIx64 "\",\"size\":%" PRIu64 ",\"requested\":%" PRIu64
                ",\"stream\":\"0x%" PRIx64 "\",\"tag\":",
                k ? "," : "", t->addr, t->size, t->requested, t->stream);
        if (t->tag[0]) jstr(f, t->tag);
        else fputs("null", f);
        fputc('}', f);
    }
    fputc(']', f);
    if (p->timeline && p->npoints) {
        fputs(",\"timeline\":[", f);
        for (size_t i = 0; i < p->npoints; i++) {
            const ckstat_point *pt = &p->timeline[i];
            fprintf(f,
                    "%s{\"t_s\":%.6f,\"live\":%" PRIu64 ",\"reserved\":%" PRIu64
                    ",\"physical\":%" PRIu64 "}",
                    i ? "," : "", pt->t_s, pt->live, pt->reserved, pt->physical);
        }
        fputc(']', f);
    }
    if (p->history) {
        /* the whole run: [min, max] per bucket, times since the pool's creation */
        fprintf(f,
                ",\"history\":{\"records_per_bucket\":%" PRIu64 ",\"total\":%" PRIu64
                ",\"end_s\":%.6f,\"timed\":%s,\"buckets\":[",
                p->history_span, p->history_total, p->history_end_s,
                p->history_timed ? "true" : "false");
        for (size_t i = 0; i < p->nhistory; i++) {
            const ckstat_bucket *b = &p->history[i];
            fprintf(f,
                    "%s{\"t0_s\":%.6f,\"t1_s\":%.6f,\"records\":%" PRIu64 ",\"live\":[%" PRIu64
                    ",%" PRIu64 "],\"reserved\":[%" PRIu64 ",%" PRIu64 "],\"physical\":[%" PRIu64
                    ",%" PRIu64 "]}",
                    i ? "," : "", b->t0_s, b->t1_s, b->records, b->lo.live, b->hi.live,
                    b->lo.reserved, b->hi.reserved, b->lo.physical, b->hi.physical);
        }
        fputs("]}", f);
    }
    if (p->tags && p->ntags) {
        fputs(",\"tags\":[", f);
        for (size_t i = 0; i < p->ntags; i++) {
            fputs(i ? ",{\"tag\":" : "{\"tag\":", f);
            jstr(f, p->tags[i].tag);
            fprintf(f, ",\"count\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", p->tags[i].count,
                    p->tags[i].bytes);
        }
        fputc(']', f);
    }
    fputc('}', f);
}

static void json_report(FILE *f, const ckstat_report *r) {
    fprintf(f, "{\"pid\":%d,\"cmd\":", r->pid);
    jstr(f, r->cmd);
    fputs(",\"source\":", f);
    jstr(f, r->source);
    fprintf(f, ",\"taken_at\":%.3f,\"pools\":[", r->taken_at);
    for (size_t i = 0; i < r->npools; i++) {
        if (i) fputc(',', f);
        json_pool(f, r, &r->pools[i]);
    }
    fputs("]}", f);
}

/* ---- Prometheus text exposition ------------------------------------------- */

typedef enum { M_GAUGE, M_COUNTER } mtype;

typedef struct metric {
    const char *name, *help;
    mtype type;
    /* 1 and *v set, or 0 when the pool has no value for it */
    int (*get)(const ckstat_report *r, const ckstat_pool *p, double *v);
} metric;

#define GET(fn, expr)                                                                              \
    static int fn(const ckstat_report *r, const ckstat_pool *p, double *v) {                       \
        (void)r;                                                                                   \
        const ck_stats *s = &p->stats;                                                             \
        *v = (double)(expr);                                                                       \
        return 1;                                                                                  \
    }
GET(g_alloc, s->allocated_bytes.current)
GET(g_alloc_pk, s->allocated_bytes.peak)
GET(g_res, s->reserved_bytes.current)
GET(g_res_pk, s->reserved_bytes.peak)
GET(g_phys, s->physical_bytes.current)
GET(g_phys_pk, s->physical_bytes.peak)
GET(g_req, s->requested_bytes.current)
GET(g_req_pk, s->requested_bytes.peak)
GET(g_active, s->active_bytes.current)
GET(g_isplit, s->inactive_split_bytes.current)
GET(g_mapped, s->mapped_bytes.current)
GET(g_budget, s->budget)
GET(g_nalloc, s->allocation.current)
GET(g_nseg, s->segment.current)
GET(g_allocs, s->allocation.allocated)
GET(g_frees, s->allocation.freed)
GET(g_retries, s->num_alloc_retries)
GET(g_ooms, s->num_ooms)
GET(g_maps, s->num_map_calls)
GET(g_unmaps, s->num_unmap_calls)
GET(g_off, s->offloaded_bytes.current)
GET(g_drop, s->dropped_bytes.current)
GET(g_moving, s->moving_bytes.current)
GET(g_host, s->host_bytes.current)
GET(g_stashes, s->num_stashes)
GET(g_fetches, s->num_fetches)
GET(g_d2h, s->bytes_to_host)
GET(g_h2d, s->bytes_to_device)
GET(g_replays, s->num_replays)
GET(g_phits, s->prefetch_hits)
GET(g_pmiss, s->prefetch_misses)
GET(g_evict, s->num_evictions)
GET(g_fwait, (double)s->fetch_wait_ns / 1e9)
GET(g_replay_s, (double)s->replay_ns / 1e9)
#undef GET

static int g_lfree(const ckstat_report *r, const ckstat_pool *p, double *v) {
    *v = (double)p->stats.largest_free;
    return largest_free_known(r, p);
}

static int g_frag(const ckstat_report *r, const ckstat_pool *p, double *v) {
    (void)r;
    *v = frag_of(&p->stats);
    return 1;
}

static int g_overhead(const ckstat_report *r, const ckstat_pool *p, double *v) {
    (void)r;
    *v = overhead_of(&p->stats);
    return 1;
}

static const metric metrics[] = {
    {"ckalloc_allocated_bytes", "Bytes in live allocations (sizes rounded up to 512 B).", M_GAUGE,
     g_alloc},
    {"ckalloc_peak_allocated_bytes", "Peak of ckalloc_allocated_bytes.", M_GAUGE, g_alloc_pk},
    {"ckalloc_reserved_bytes", "Bytes of the pool's mapped 2 MiB chunks.", M_GAUGE, g_res},
    {"ckalloc_peak_reserved_bytes", "Peak of ckalloc_reserved_bytes.", M_GAUGE, g_res_pk},
    {"ckalloc_physical_bytes",
     "Physical memory the pool holds, mapped or cached (what the budget caps).", M_GAUGE, g_phys},
    {"ckalloc_peak_physical_bytes", "Peak of ckalloc_physical_bytes.", M_GAUGE, g_phys_pk},
    {"ckalloc_requested_bytes", "Bytes asked for by live allocations.", M_GAUGE, g_req},
    {"ckalloc_peak_requested_bytes", "Peak of ckalloc_requested_bytes.", M_GAUGE, g_req_pk},
    {"ckalloc_active_bytes", "Live bytes plus freed bytes waiting for other streams.", M_GAUGE,
     g_active},
    {"ckalloc_inactive_split_bytes", "Free bytes inside small-block pages that hold live blocks.",
     M_GAUGE, g_isplit},
    {"ckalloc_mapped_bytes", "Bytes of the pool's address space backed by physical memory.",
     M_GAUGE, g_mapped},
    {"ckalloc_budget_bytes", "Cap on ckalloc_physical_bytes.", M_GAUGE, g_budget},
    {"ckalloc_largest_free_bytes",
     "Largest fully mapped free range, as of the owner's last answer.", M_GAUGE, g_lfree},
    {"ckalloc_fragmentation_ratio",
     "1 - allocated bytes / reserved bytes: the share of reserved memory that serves no live "
     "block.",
     M_GAUGE, g_frag},
    {"ckalloc_peak_overhead_ratio", "Peak physical bytes / peak requested bytes.", M_GAUGE,
     g_overhead},
    {"ckalloc_live_allocations", "Live allocations.", M_GAUGE, g_nalloc},
    {"ckalloc_segments", "Mapped runs (maximal ranges of mapped chunks; PyTorch's segment count).", M_GAUGE, g_nseg},
    {"ckalloc_allocs_total", "Allocations made.", M_COUNTER, g_allocs},
    {"ckalloc_frees_total", "Allocations freed.", M_COUNTER, g_frees},
    {"ckalloc_alloc_retries_total",
     "Allocations that had to unmap cached memory first (num_alloc_retries).", M_COUNTER,
     g_retries},
    {"ckalloc_ooms_total", "Allocations that failed with CK_ERR_NOMEM (num_ooms).", M_COUNTER,
     g_ooms},
    {"ckalloc_map_calls_total", "Backend map calls.", M_COUNTER, g_maps},
    {"ckalloc_unmap_calls_total", "Backend unmap calls.", M_COUNTER, g_unmaps},
    {"ckalloc_offloaded_bytes", "Stashed tensors whose data is in host memory only.", M_GAUGE, g_off},
    {"ckalloc_dropped_bytes", "Stashed tensors released, to be recomputed.", M_GAUGE, g_drop},
    {"ckalloc_moving_bytes", "Tensors whose copy out or in (or replay) is in flight.", M_GAUGE,
     g_moving},
    {"ckalloc_host_bytes", "Pinned host memory the pool holds.", M_GAUGE, g_host},
    {"ckalloc_stashes_total", "ck_stash calls that took effect.", M_COUNTER, g_stashes},
    {"ckalloc_fetches_total", "ck_fetch calls that took effect.", M_COUNTER, g_fetches},
    {"ckalloc_bytes_to_host_total", "Bytes copied device to host by stashes.", M_COUNTER, g_d2h},
    {"ckalloc_bytes_to_device_total", "Bytes copied host to device by fetches.", M_COUNTER, g_h2d},
    {"ckalloc_replays_total", "Tensors rebuilt by their recipe.", M_COUNTER, g_replays},
    {"ckalloc_prefetch_hits_total", "Fetches of tensors a prefetch had brought back.", M_COUNTER,
     g_phits},
    {"ckalloc_prefetch_misses_total", "Fetches that had to bring the tensor back.", M_COUNTER,
     g_pmiss},
    {"ckalloc_evictions_total", "Stashed tensors evicted under budget pressure.", M_COUNTER,
     g_evict},
    {"ckalloc_fetch_wait_seconds_total",
     "Time consumer streams spent in fetches: waiting for copies in and running replays.",
     M_COUNTER, g_fwait},
    {"ckalloc_replay_seconds_total", "Time consumer streams spent running replays.", M_COUNTER,
     g_replay_s},
};

/* Labels pid and device; pool too when one process has two pools on one
 * device (samples must differ in their labels). */
static void prom_labels(FILE *f, const ckstat_report *r, size_t i) {
    int dev = r->pools[i].device, shared = 0;
    for (size_t k = 0; k < r->npools; k++)
        if (k != i && r->pools[k].device == dev) shared = 1;
    fprintf(f, "{pid=\"%d\",device=\"%d\"", r->pid, dev);
    if (shared) fprintf(f, ",pool=\"%zu\"", i);
    fputc('}', f);
}

static void prom_value(FILE *f, double v) {
    if (v == floor(v) && fabs(v) < 9.007199254740992e15) fprintf(f, " %.0f\n", v);
    else fprintf(f, " %.6g\n", v);
}

static void prometheus(FILE *f, const ckstat_report *r, size_t n) {
    for (size_t m = 0; m < sizeof metrics / sizeof metrics[0]; m++) {
        const metric *mt = &metrics[m];
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", mt->name, mt->help, mt->name,
                mt->type == M_GAUGE ? "gauge" : "counter");
        for (size_t k = 0; k < n; k++)
            for (size_t i = 0; i < r[k].npools; i++) {
                double v;
                if (!mt->get(&r[k], &r[k].pools[i], &v)) continue;
                fputs(mt->name, f);
                prom_labels(f, &r[k], i);
                prom_value(f, v);
            }
    }
}

/* ---- entry points ---------------------------------------------------------- */

void ckstat_print(FILE *out, const ckstat_report *r, ckstat_fmt fmt) {
    switch (fmt) {
    case CKSTAT_JSON:
        json_report(out, r);
        fputc('\n', out);
        break;
    case CKSTAT_PROMETHEUS: prometheus(out, r, 1); break;
    default: table_report(out, r); break;
    }
}

static void sum_pools(const ckstat_report *r, uint64_t *alloc, uint64_t *res, uint64_t *phys,
                      uint64_t *peak_res) {
    *alloc = *res = *phys = *peak_res = 0;
    for (size_t i = 0; i < r->npools; i++) {
        const ck_stats *s = &r->pools[i].stats;
        *alloc += ucur(&s->allocated_bytes);
        *res += ucur(&s->reserved_bytes);
        *phys += ucur(&s->physical_bytes);
        *peak_res += upeak(&s->reserved_bytes);
    }
}

void ckstat_print_list(FILE *out, const ckstat_report *r, size_t n, ckstat_fmt fmt) {
    if (fmt == CKSTAT_JSON) {
        fputc('[', out);
        for (size_t k = 0; k < n; k++) {
            if (k) fputc(',', out);
            json_report(out, &r[k]);
        }
        fputs("]\n", out);
        return;
    }
    if (fmt == CKSTAT_PROMETHEUS) {
        prometheus(out, r, n);
        return;
    }
    if (n == 0) {
        fprintf(out, "no process is using ckalloc (no live-stats file %s/%s<pid>)\n", "/dev/shm",
                "ckalloc.");
        return;
    }
    fprintf(out, "%-8s %-28s %5s %12s %12s %12s %14s\n", "PID", "COMMAND", "POOLS", "ALLOCATED",
            "RESERVED", "PHYSICAL", "PEAK RESERVED");
    for (size_t k = 0; k < n; k++) {
        uint64_t a, rs, ph, pk;
        sum_pools(&r[k], &a, &rs, &ph, &pk);
        /* The program's name without its directory, then its arguments. */
        const char *c = r[k].cmd[0] ? r[k].cmd : "?";
        const char *sp = strchr(c, ' '), *base = c;
        for (const char *q = c; *q && q != sp; q++)
            if (*q == '/' && q[1] && q + 1 != sp) base = q + 1;
        char cmd[29], b1[32], b2[32], b3[32], b4[32];
        snprintf(cmd, sizeof cmd, "%.28s", base);
        fprintf(out, "%-8d %-28s %5zu %12s %12s %12s %14s\n", r[k].pid, cmd, r[k].npools,
                bytes(a, b1, sizeof b1), bytes(rs, b2, sizeof b2), bytes(ph, b3, sizeof b3),
                bytes(pk, b4, sizeof b4));
    }
}
