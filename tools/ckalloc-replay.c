/* ckalloc-replay: replay an allocation trace (ckalloc's own or a plain RMM
 * log) on a fresh pool and report peak memory, peak_overhead, map/unmap
 * traffic and time per operation.
 *
 * The whole trace is parsed into memory first so that ns_per_op measures the
 * allocator, not the CSV parser. The replay never touches the memory, so on
 * the host backend it simulates a device of DEFAULT_HOST_MEM (address space
 * only) unless --conf sets host_mem: a trace from an 80 GB GPU replays on a
 * laptop. --policy pytorch replays the same operations on a simulation of
 * PyTorch's native caching allocator (replay/pytorch_sim.h) instead, --policy
 * both on the two and prints them side by side. */
#include "ckalloc/ckalloc.h"
#include "ckalloc/tier.h"
#include "internal.h"
#include "ratios.h"
#include "trace.h"
#include "pytorch_sim.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_ALLOC_FAILED 1 /* an allocation, the device or the pool failed */
#define EXIT_BAD_INPUT 2

/* The host backend's simulated device size when --conf sets no host_mem. */
#define DEFAULT_HOST_MEM ((uint64_t)1 << 40)
/* The project's targets, flagged in --policy both (see README, "Targets"). */
#define TARGET_PEAK_OVERHEAD 1.05 /* peak physical / peak live (alloc/ratios.h) */
#define TARGET_MAP_UNMAP_PER_OP 0.01

static void usage(FILE *out) {
    fputs("usage: ckalloc-replay [--conf STR] [--policy P] [--pace SEC] [--timed] [--json] [--quiet]\n"
          "                      TRACE\n"
          "  Replays an RMM-style allocation trace (Thread,Time,Action,Pointer,Size,Stream;\n"
          "  TRACE - reads standard input) on a new pool. The pool config is\n"
          "  \"backend=host,host_mem=1T\" followed by --conf, e.g. --conf budget=8G or\n"
          "  --conf backend=cuda,budget=20G. The replay never touches the memory, so the\n"
          "  host backend's 1 TiB simulated device costs address space only.\n"
          "  --policy P  ckalloc (default); pytorch: PyTorch's native caching allocator,\n"
          "              simulated; both: the two, side by side, targets flagged MISS\n"
          "  --pace SEC  spread the replay over about SEC seconds, following the trace's\n"
          "              timestamps, so that ckalloc-stat -p PID can watch it\n"
          "  --timed     time the trace's training steps (step rows) on the host backend's\n"
          "              simulated clock (sim_clock=1): the time between two rows is\n"
          "              compute on the next row's stream, the host reaches each fetch\n"
          "              when its stream does, copies take sim_h2d / sim_d2h; reports\n"
          "              the simulated step time beside the trace's\n"
          "  --json      print one JSON object with the results\n"
          "  --quiet     print nothing but errors\n"
          "Exit: 0 every allocation succeeded, 1 some failed, 2 bad usage or bad input.\n",
          out);
}

/* One replayable trace row, compacted (the trace has no use for thread/time). */
typedef struct op {
    uint64_t ptr;
    uint64_t size;
    uint64_t line;
    uint64_t t_us; /* trace time, made monotonic, from the first record */
    uint32_t stream; /* index into the stream table */
    uint8_t action;
    int8_t tier;     /* tag rows: the tier; step rows: 1 begin, 0 end */
    uint32_t name;   /* tag rows: offset of the name in the names arena */
} op;

typedef struct ops_vec {
    op *v;
    size_t n, cap;
    char *names; /* tag names, NUL-terminated, back to back */
    size_t names_n, names_cap;
    uint64_t tier_rows;
} ops_vec;

/* Distinct trace stream ids; index 0 is id 0, the default (NULL) stream. */
typedef struct stream_tab {
    uint64_t *ids;
    ck_stream *streams;
    size_t n, cap;
} stream_tab;

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        fputs("ckalloc-replay: out of host memory\n", stderr);
        exit(EXIT_BAD_INPUT);
    }
    return q;
}

static uint32_t stream_index(stream_tab *t, uint64_t id) {
    /* Traces use a handful of streams: a linear scan from the last hit is fine. */
    static size_t last;
    if (last < t->n && t->ids[last] == id)
        return (uint32_t)last;
    for (size_t i = 0; i < t->n; i++)
        if (t->ids[i] == id)
            return (uint32_t)(last = i);
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->ids = xrealloc(t->ids, t->cap * sizeof *t->ids);
        t->streams = xrealloc(t->streams, t->cap * sizeof *t->streams);
    }
    t->ids[t->n] = id;
    t->streams[t->n] = NULL;
    last = t->n;
    return (uint32_t)t->n++;
}

/* ---- traced pointer -> replayed block (open addressing, linear probing) ---- */

typedef struct slot {
    uint64_t key; /* traced pointer */
    void *ptr;    /* replayed block */
    uint64_t size;
    uint32_t stream;
    uint8_t used;
} slot;

typedef struct ptr_map {
    slot *s;
    size_t cap, n; /* cap is a power of two */
} ptr_map;

static size_t hash_ptr(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k;
}

static void map_put(ptr_map *m, const slot *e);

static void map_grow(ptr_map *m) {
    ptr_map old = *m;
    m->cap = old.cap ? old.cap * 2 : 1024;
    m->s = calloc(m->cap, sizeof *m->s);
    if (!m->s) {
        fputs("ckalloc-replay: out of host memory\n", stderr);
        exit(EXIT_BAD_INPUT);
    }
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.s[i].used)
            map_put(m, &old.s[i]);
    free(old.s);
}

static slot *map_find(ptr_map *m, uint64_t key) {
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = hash_ptr(key) & mask;; i = (i + 1) & mask) {
        if (!m->s[i].used)
            return NULL;
        if (m->s[i].key == key)
            return &m->s[i];
    }
}

/* key must not be present. */
static void map_put(ptr_map *m, const slot *e) {
    if ((m->n + 1) * 2 > m->cap)
        map_grow(m);
    size_t mask = m->cap - 1;
    size_t i = hash_ptr(e->key) & mask;
    while (m->s[i].used)
        i = (i + 1) & mask;
    m->s[i] = *e;
    m->s[i].used = 1;
    m->n++;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void map_del(ptr_map *m, slot *e) {
    size_t mask = m->cap - 1;
    size_t i = (size_t)(e - m->s);
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->s[j].used)
            break;
        size_t home = hash_ptr(m->s[j].key) & mask;
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            m->s[i] = m->s[j];
            i = j;
        }
    }
    m->s[i].used = 0;
    m->n--;
}

/* ---- parsing ------------------------------------------------------------- */

/* Reads and parses the whole trace (path "-" = standard input, named
 * "<stdin>" in messages). Returns 0, or prints FILE:LINE (or why the trace
 * holds nothing to replay) and returns EXIT_BAD_INPUT. */
static int load_trace(const char *path, const char *name, ops_vec *ops, stream_tab *streams,
                      uint64_t *input_failures) {
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ckalloc-replay: cannot open trace '%s': %s\n", path, strerror(errno));
        return EXIT_BAD_INPUT;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t lineno = 0, records = 0;
    uint64_t t_first = 0, t_prev = 0, t_add = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        ck_trace_rec r;
        ck_trace_line_kind kind;
        if (ck__trace_parse_line(line, (size_t)len, &r, &kind) != CK_OK) {
            fprintf(stderr, "%s:%" PRIu64 ": %s\n", name, lineno, ck_last_error());
            rc = EXIT_BAD_INPUT;
            break;
        }
        if (kind != CK_TRACE_LINE_RECORD)
            continue;
        /* Time since the first record, never going back: a trace that
         * passes midnight starts the clock again (HH:MM:SS), and rows of
         * several threads can be a little out of order. */
        uint64_t t = r.time_us + t_add;
        if (records == 0)
            t_first = t_prev = t;
        if (t + 12ull * 3600 * 1000000 < t_prev) {
            t_add += 24ull * 3600 * 1000000;
            t += 24ull * 3600 * 1000000;
        }
        if (t > t_prev)
            t_prev = t;
        records++;
        if (r.action == CK_TRACE_ALLOC_FAIL) {
            (*input_failures)++;
            continue;
        }
        if (ops->n == ops->cap) {
            ops->cap = ops->cap ? ops->cap * 2 : 4096;
            ops->v = xrealloc(ops->v, ops->cap * sizeof *ops->v);
        }
        op *o = &ops->v[ops->n++];
        o->ptr = r.ptr;
        o->size = r.size;
        o->line = lineno;
        o->t_us = t_prev - t_first;
        o->stream = stream_index(streams, r.stream);
        o->action = (uint8_t)r.action;
        o->tier = (int8_t)(r.action == CK_TRACE_STEP ? r.begin : r.tier);
        o->name = 0;
        if (r.action >= CK_TRACE_TAG) ops->tier_rows++;
        if (r.action == CK_TRACE_TAG) {
            size_t l = strlen(r.name) + 1;
            if (ops->names_n + l > ops->names_cap) {
                ops->names_cap = (ops->names_n + l) * 2 + 256;
                ops->names = xrealloc(ops->names, ops->names_cap);
            }
            memcpy(ops->names + ops->names_n, r.name, l);
            o->name = (uint32_t)ops->names_n;
            ops->names_n += l;
        }
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "ckalloc-replay: cannot read trace '%s': %s\n", name, strerror(errno));
        rc = EXIT_BAD_INPUT;
    }
    if (!rc && records == 0) {
        fprintf(stderr, "%s: no allocation records to replay (%s)\n", name,
                lineno == 0 ? "the trace is empty"
                            : "only a header or blank lines; want rows of "
                              "Thread,Time,Action,Pointer,Size,Stream");
        rc = EXIT_BAD_INPUT;
    }
    free(line);
    if (!is_stdin)
        fclose(f);
    return rc;
}

/* ---- output -------------------------------------------------------------- */

static void json_str(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

typedef struct results {
    uint64_t ops, allocs, frees, failures, input_failures, unmatched_frees;
    uint64_t tier_ops, tier_failures; /* tag/stash/fetch/step rows replayed, and refused */
    /* --timed: steps timed, their simulated and traced time in total */
    uint64_t timed_steps;
    double sim_step_ms, trace_step_ms;
    uint64_t zero_size_allocs, duplicate_allocs;
    uint64_t peak_live;
    /* Driver calls at the trace's midpoint, and the operations after it:
     * the second half's rate leaves out the first step's growth. */
    uint64_t half_calls, half_ops;
    double seconds;
    int stopped; /* a signal stopped the replay before its end */
} results;

static uint64_t stat_u(int64_t v) { return v < 0 ? 0 : (uint64_t)v; }

/* Map + unmap calls per operation over the trace's second half. */
static double half_rate(const results *r, const ck_stats *st) {
    uint64_t calls = st->num_map_calls + st->num_unmap_calls;
    if (!r->half_ops || r->stopped || calls < r->half_calls) return 0.0;
    return (double)(calls - r->half_calls) / (double)r->half_ops;
}

/* extra: more ,"key":value members, or "". */
static void print_json(FILE *out, const char *path, const results *r, const ck_stats *st,
                       const char *backend, size_t nstreams, const char *extra) {
    uint64_t peak_phys = stat_u(st->physical_bytes.peak);
    double frag = ck__peak_overhead(peak_phys, r->peak_live);
    double mu = r->ops ? (double)(st->num_map_calls + st->num_unmap_calls) / (double)r->ops : 0.0;
    double mu2 = half_rate(r, st);
    double ns = r->ops ? r->seconds * 1e9 / (double)r->ops : 0.0;
    fputs("{\"trace\":", out);
    json_str(out, path);
    fprintf(out,
            ",\"backend\":\"%s\",\"streams\":%zu,\"ops\":%" PRIu64 ",\"allocs\":%" PRIu64
            ",\"frees\":%" PRIu64 ",\"failures\":%" PRIu64 ",\"input_failures\":%" PRIu64
            ",\"unmatched_frees\":%" PRIu64 ",\"zero_size_allocs\":%" PRIu64
            ",\"duplicate_allocs\":%" PRIu64 ",\"peak_live_bytes\":%" PRIu64
            ",\"peak_physical_bytes\":%" PRIu64 ",\"peak_overhead\":%.4f,\"map_calls\":%" PRIu64
            ",\"unmap_calls\":%" PRIu64 ",\"map_unmap_per_op\":%.6f"
            ",\"map_unmap_per_op_second_half\":%.6f,\"ns_per_op\":%.1f"
            ",\"num_ooms\":%" PRIu64 ",\"num_alloc_retries\":%" PRIu64 ",\"budget\":%" PRIu64
            ",\"tier_ops\":%" PRIu64 ",\"tier_failures\":%" PRIu64 ",\"num_stashes\":%" PRIu64
            ",\"num_fetches\":%" PRIu64 ",\"bytes_to_host\":%" PRIu64 ",\"num_replays\":%" PRIu64
            ",\"num_evictions\":%" PRIu64 ",\"peak_offloaded_bytes\":%" PRId64
            ",\"peak_dropped_bytes\":%" PRId64 ",\"fetch_wait_ms\":%.3f,\"replay_ms\":%.3f"
            ",\"timed_steps\":%" PRIu64 ",\"sim_step_ms\":%.3f,\"trace_step_ms\":%.3f"
            ",\"step_overhead\":%.4f%s}\n",
            backend, nstreams, r->ops, r->allocs, r->frees, r->failures, r->input_failures,
            r->unmatched_frees, r->zero_size_allocs, r->duplicate_allocs, r->peak_live, peak_phys,
            frag, st->num_map_calls, st->num_unmap_calls, mu, mu2, ns, st->num_ooms,
            st->num_alloc_retries, st->budget, r->tier_ops, r->tier_failures, st->num_stashes,
            st->num_fetches, st->bytes_to_host, st->num_replays, st->num_evictions,
            st->offloaded_bytes.peak, st->dropped_bytes.peak, (double)st->fetch_wait_ns / 1e6,
            (double)st->replay_ns / 1e6, r->timed_steps, r->sim_step_ms, r->trace_step_ms,
            r->trace_step_ms > 0 ? r->sim_step_ms / r->trace_step_ms - 1 : 0.0, extra);
}

/* budget_set: the user set the budget; else st->budget is the device's size
 * (on the host backend host_mem, the simulated one). */
static void print_human(FILE *out, const char *path, const results *r, const ck_stats *st,
                        int budget_set, const char *backend) {
    char a[32], b[32], c[32];
    uint64_t peak_phys = stat_u(st->physical_bytes.peak);
    double frag = ck__peak_overhead(peak_phys, r->peak_live);
    double mu = r->ops ? (double)(st->num_map_calls + st->num_unmap_calls) / (double)r->ops : 0.0;
    double ns = r->ops ? r->seconds * 1e9 / (double)r->ops : 0.0;
    fprintf(out, "trace          %s\n", path);
    fprintf(out, "backend        %s\n",
            strcmp(backend, "host") == 0
                ? "host (no GPU: the driver's VMM calls are booked in process memory)"
                : backend);
    fprintf(out,
            "ops            %" PRIu64 " (allocs %" PRIu64 ", frees %" PRIu64 ", failures %" PRIu64
            ", unmatched frees %" PRIu64 ", input failures %" PRIu64 ")\n",
            r->ops, r->allocs, r->frees, r->failures, r->unmatched_frees, r->input_failures);
    fprintf(out, "peak live      %s\npeak physical  %s (peak_overhead %.4f)\n",
            ck__fmt_bytes(r->peak_live, a, sizeof a), ck__fmt_bytes(peak_phys, b, sizeof b), frag);
    if (budget_set)
        fprintf(out, "budget         %s\n", ck__fmt_bytes(st->budget, c, sizeof c));
    else
        fprintf(out, "budget         none set (the limit is %s %s)\n",
                strcmp(backend, "host") == 0 ? "host_mem, the simulated device," : "the device,",
                ck__fmt_bytes(st->budget, c, sizeof c));
    fprintf(out, "map / unmap    %" PRIu64 " / %" PRIu64 " (%.6f per op; %.6f over the second half)\n",
            st->num_map_calls, st->num_unmap_calls, mu, half_rate(r, st));
    if (r->tier_ops || r->tier_failures) {
        char o1[32], o2[32], o3[32];
        fprintf(out,
                "tier rows      %" PRIu64 " replayed, %" PRIu64 " refused; %" PRIu64 " stashes, %" PRIu64
                " fetches, %s copied out, peak offloaded %s, peak dropped %s, %" PRIu64
                " replays, %" PRIu64 " evictions\n",
                r->tier_ops, r->tier_failures, st->num_stashes, st->num_fetches,
                ck__fmt_bytes(st->bytes_to_host, o1, sizeof o1),
                ck__fmt_bytes((uint64_t)(st->offloaded_bytes.peak > 0 ? st->offloaded_bytes.peak : 0), o2, sizeof o2),
                ck__fmt_bytes((uint64_t)(st->dropped_bytes.peak > 0 ? st->dropped_bytes.peak : 0), o3, sizeof o3),
                st->num_replays, st->num_evictions);
    }
    if (r->timed_steps)
        fprintf(out,
                "steps (timed)  %" PRIu64 " on the simulated clock: %.3f ms against the trace's "
                "%.3f ms (%+.2f%%); fetches waited %.3f ms, replays %.3f ms\n",
                r->timed_steps, r->sim_step_ms, r->trace_step_ms,
                r->trace_step_ms > 0 ? 100.0 * (r->sim_step_ms / r->trace_step_ms - 1) : 0.0,
                (double)st->fetch_wait_ns / 1e6, (double)st->replay_ns / 1e6);
    fprintf(out, "time           %.1f ns per op\n\n", ns);
}

/* ---- replay -------------------------------------------------------------- */

/* SIGINT/SIGTERM stop the replay between two operations, so that the pool is
 * destroyed as usual and its live-stats segment removed (a paced replay is
 * meant to be stopped: make demo-live does). */
static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* What the replay runs on: ckalloc's pool or the PyTorch simulation. Both
 * calls return 0, or -1 with a sentence in err. */
typedef struct allocator {
    int (*alloc)(void *ctx, uint64_t size, uint32_t stream, void **out, char *err, size_t errn);
    int (*free)(void *ctx, void *p, uint32_t stream, char *err, size_t errn);
    /* Driver calls (map + unmap) so far, or NULL when it has no such count. */
    uint64_t (*driver_calls)(void *ctx);
    /* The tier engine's rows (tag, stash, fetch, step) on a live block p;
     * NULL: the allocator has no tier engine and they are skipped. */
    int (*tier)(void *ctx, const op *o, const char *name, void *p, char *err, size_t errn);
    /* Before each row (NULL: nothing): --timed charges the time since the
     * last row as compute. */
    void (*tick)(void *ctx, const op *o);
    void *ctx;
} allocator;

typedef struct ck_ctx {
    ck_pool *pool;
    const stream_tab *streams;
    /* --timed */
    int timed;
    uint64_t prev_us, begin_us;
    ck_event ev_begin, ev_end;
    results *res;
    int warned;
} ck_ctx;

/* --timed: a failure of the timing itself (not of a row) is said once. */
static void timed_fail(ck_ctx *c, const char *what) {
    if (!c->warned++)
        fprintf(stderr, "ckalloc-replay: --timed: %s: %s (steps are not timed)\n", what,
                ck_last_error());
    c->timed = 0;
}

static void ck_tick_cb(void *ctx, const op *o) {
    ck_ctx *c = ctx;
    if (!c->timed) return;
    ck_stream s = c->streams->streams[o->stream];
    uint64_t gap = o->t_us > c->prev_us ? o->t_us - c->prev_us : 0;
    c->prev_us = o->t_us;
    if (gap && ck__sim_busy(c->pool, s, (double)gap * 1e3) != CK_OK) return timed_fail(c, "compute");
    /* The host issues a fetch when its stream gets there: the copy in
     * cannot start earlier than that. */
    if (o->action == CK_TRACE_FETCH && ck_stream_synchronize(c->pool, s) != CK_OK)
        timed_fail(c, "synchronize");
}

/* --timed: a step row. begin: the step's start on its stream; end: its
 * simulated length, beside the trace's. */
static void ck_time_step(ck_ctx *c, const op *o) {
    if (!c->timed) return;
    ck_stream s = c->streams->streams[o->stream];
    if (o->tier) {
        if (ck_event_record(c->pool, c->ev_begin, s) != CK_OK) return timed_fail(c, "event");
        c->begin_us = o->t_us;
        return;
    }
    float ms = 0;
    if (ck_event_record(c->pool, c->ev_end, s) != CK_OK || ck_stream_synchronize(c->pool, s) != CK_OK ||
        ck_event_elapsed_ms(c->pool, c->ev_begin, c->ev_end, &ms) != CK_OK)
        return timed_fail(c, "step end");
    c->res->timed_steps++;
    c->res->sim_step_ms += ms;
    c->res->trace_step_ms += (double)(o->t_us - c->begin_us) / 1e3;
}

static int ck_alloc_cb(void *ctx, uint64_t size, uint32_t stream, void **out, char *err,
                       size_t errn) {
    ck_ctx *c = ctx;
    if (ck_malloc(c->pool, out, (size_t)size, c->streams->streams[stream]) == CK_OK)
        return 0;
    snprintf(err, errn, "%s", ck_last_error());
    return -1;
}

static int ck_free_cb(void *ctx, void *p, uint32_t stream, char *err, size_t errn) {
    ck_ctx *c = ctx;
    if (ck_free(c->pool, p, c->streams->streams[stream]) == CK_OK)
        return 0;
    snprintf(err, errn, "%s", ck_last_error());
    return -1;
}

/* A recipe for a tensor the trace recomputes. The trace has no recipes:
 * stand in a dropout mask of the tensor's bytes (its "like" input has no
 * data), which needs no live input and writes the whole tensor. */
static int ck_tier_cb(void *ctx, const op *o, const char *name, void *p, char *err, size_t errn) {
    ck_ctx *c = ctx;
    ck_stream s = c->streams->streams[o->stream];
    ck_status st = CK_OK;
    switch (o->action) {
    case CK_TRACE_TAG:
        st = ck_tag(c->pool, p, name, (ck_tier)o->tier);
        if (st == CK_OK && o->tier == CK_TIER_RECOMPUTE) {
            ck_recipe r;
            ck_recipe_init(&r);
            int64_t shape[1] = {(int64_t)o->size};
            ck_step *stp = ck_recipe_step(&r, CK_OP_DROPOUT_MASK, CK_DTYPE_U8);
            stp->in[0] = ck_recipe_input(&r, NULL, CK_DTYPE_U8, 1, shape);
            stp->p = 0.5f;
            st = ck_set_recipe(c->pool, p, &r);
        }
        break;
    case CK_TRACE_STASH: {
        /* The trace's compute is gone: let the release happen before the
         * next row, as it would behind a real forward pass. */
        st = ck_stash(c->pool, p, s);
        if (st == CK_OK) ck__tier_settle(c->pool, p, 10);
        break;
    }
    case CK_TRACE_FETCH: st = ck_fetch(c->pool, p, s); break;
    case CK_TRACE_STEP:
        st = o->tier ? ck_step_begin(c->pool) : ck_step_end(c->pool);
        if (st == CK_OK) ck_time_step(c, o);
        break;
    default: break;
    }
    if (st == CK_OK) return 0;
    snprintf(err, errn, "%s", ck_last_error());
    return -1;
}

static uint64_t ck_driver_calls_cb(void *ctx) {
    ck_ctx *c = ctx;
    ck_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    if (ck_get_stats(c->pool, &st) != CK_OK) return 0;
    return st.num_map_calls + st.num_unmap_calls;
}

static int pt_alloc_cb(void *ctx, uint64_t size, uint32_t stream, void **out, char *err,
                       size_t errn) {
    return pt_sim_malloc(ctx, size, stream, out, err, errn);
}

static int pt_free_cb(void *ctx, void *p, uint32_t stream, char *err, size_t errn) {
    (void)stream, (void)err, (void)errn;
    pt_sim_free(ctx, p);
    return 0;
}

/* What a replay leaves live: freed by replay_release once the stats are read. */
typedef struct leftovers {
    ptr_map live;
    /* Blocks whose traced address was allocated again without a free in
     * between (a trace that lost rows): kept live, freed at the end. */
    slot *orphans;
    size_t norphans;
} leftovers;

/* Replays ops on al. The first failed allocation and the first failed free
 * are reported as NAME:LINE unless quiet_errors. pace > 0 spreads the
 * operations over about pace seconds of wall time by the trace's
 * timestamps (evenly when they are all equal); time asleep is not counted
 * in res->seconds. Returns the number of failed frees. */
static int replay_ops(const ops_vec *ops, const allocator *al, const char *name, double pace,
                      int quiet_errors, results *res, leftovers *lo) {
    char err[1024];
    memset(lo, 0, sizeof *lo);
    map_grow(&lo->live);
    uint64_t live_bytes = 0;
    int free_errors = 0;
    uint64_t span = ops->n ? ops->v[ops->n - 1].t_us : 0;
    double slept = 0;

    double t0 = now_s();
    for (size_t i = 0; i < ops->n; i++) {
        const op *o = &ops->v[i];
        if (i == ops->n / 2 && al->driver_calls) {
            res->half_calls = al->driver_calls(al->ctx);
            res->half_ops = ops->n - i;
        }
        if (stop_signal) {
            fprintf(stderr, "ckalloc-replay: %s: stopped by signal %d after %zu of %zu operations\n",
                    name, (int)stop_signal, i, ops->n);
            res->stopped = 1;
            break;
        }
        if (pace > 0) {
            double frac = span ? (double)o->t_us / (double)span : (double)i / (double)ops->n;
            double wait = t0 + pace * frac - now_s();
            if (wait > 0.0005) {
                struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
                double before = now_s();
                nanosleep(&ts, NULL);
                slept += now_s() - before;
            }
        }
        if (al->tick) al->tick(al->ctx, o);
        if (o->action >= CK_TRACE_TAG) {
            if (!al->tier) continue;
            slot *e = o->action == CK_TRACE_STEP ? NULL : map_find(&lo->live, o->ptr);
            if (o->action != CK_TRACE_STEP && !e) {
                res->tier_failures++;
                if (res->tier_failures == 1 && !quiet_errors)
                    fprintf(stderr, "%s:%" PRIu64 ": a tier row names %#" PRIx64 ", not a live allocation\n",
                            name, o->line, o->ptr);
                continue;
            }
            res->tier_ops++;
            if (al->tier(al->ctx, o, ops->names ? ops->names + o->name : "", e ? e->ptr : NULL, err,
                         sizeof err) != 0 &&
                res->tier_failures++ == 0 && !quiet_errors)
                fprintf(stderr, "%s:%" PRIu64 ": %s\n", name, o->line, err);
            continue;
        }
        if (o->action == CK_TRACE_ALLOC) {
            if (o->size == 0) {
                res->zero_size_allocs++; /* RMM hands out nullptr; nothing to replay */
                continue;
            }
            res->allocs++;
            void *p = NULL;
            if (al->alloc(al->ctx, o->size, o->stream, &p, err, sizeof err) != 0) {
                if (res->failures++ == 0 && !quiet_errors)
                    fprintf(stderr, "%s:%" PRIu64 ": allocation of %" PRIu64 " bytes failed: %s\n",
                            name, o->line, o->size, err);
                continue;
            }
            live_bytes += o->size;
            if (live_bytes > res->peak_live)
                res->peak_live = live_bytes;
            slot *old = map_find(&lo->live, o->ptr);
            if (old) {
                res->duplicate_allocs++;
                lo->orphans = xrealloc(lo->orphans, (lo->norphans + 1) * sizeof *lo->orphans);
                lo->orphans[lo->norphans++] = *old;
                old->ptr = p;
                old->size = o->size;
                old->stream = o->stream;
            } else {
                slot e = {.key = o->ptr, .ptr = p, .size = o->size, .stream = o->stream};
                map_put(&lo->live, &e);
            }
        } else {
            slot *e = map_find(&lo->live, o->ptr);
            if (!e) {
                res->unmatched_frees++;
                continue;
            }
            if (al->free(al->ctx, e->ptr, o->stream, err, sizeof err) != 0) {
                if (free_errors++ == 0 && !quiet_errors)
                    fprintf(stderr, "%s:%" PRIu64 ": free failed: %s\n", name, o->line, err);
            }
            res->frees++;
            live_bytes -= e->size;
            map_del(&lo->live, e);
        }
    }
    res->seconds = now_s() - t0 - slept;
    if (!res->stopped)
        res->ops = ops->n;
    else
        res->ops = res->allocs + res->zero_size_allocs + res->frees + res->unmatched_frees;
    return free_errors;
}

/* Free what the trace left live so the allocator ends empty. */
static void replay_release(const allocator *al, leftovers *lo) {
    char err[1024];
    for (size_t i = 0; i < lo->live.cap; i++)
        if (lo->live.s[i].used)
            al->free(al->ctx, lo->live.s[i].ptr, lo->live.s[i].stream, err, sizeof err);
    for (size_t i = 0; i < lo->norphans; i++)
        al->free(al->ctx, lo->orphans[i].ptr, lo->orphans[i].stream, err, sizeof err);
    free(lo->live.s);
    free(lo->orphans);
    memset(lo, 0, sizeof *lo);
}

/* One replay on a fresh PyTorch simulation capped at limit (0 = none). */
static void run_pytorch(const ops_vec *ops, const char *name, uint64_t limit, double pace,
                        int quiet_errors, results *res, pt_sim_stats *st) {
    pt_sim *sim = pt_sim_new(limit);
    if (!sim) {
        fputs("ckalloc-replay: out of host memory\n", stderr);
        exit(EXIT_ALLOC_FAILED);
    }
    allocator al = {pt_alloc_cb, pt_free_cb, NULL, NULL, NULL, sim};
    leftovers lo;
    memset(res, 0, sizeof *res);
    replay_ops(ops, &al, name, pace, quiet_errors, res, &lo);
    pt_sim_get_stats(sim, st);
    replay_release(&al, &lo);
    pt_sim_destroy(sim);
}

/* ---- the PyTorch policy's output ------------------------------------------ */

static void print_pytorch_json(FILE *out, const char *name, const results *r,
                               const pt_sim_stats *st, size_t nstreams) {
    double frag = ck__peak_overhead(st->peak_reserved_bytes, r->peak_live);
    fputs("{\"trace\":", out);
    json_str(out, name);
    fprintf(out,
            ",\"policy\":\"pytorch\",\"backend\":\"sim\",\"streams\":%zu,\"ops\":%" PRIu64
            ",\"allocs\":%" PRIu64 ",\"frees\":%" PRIu64 ",\"failures\":%" PRIu64
            ",\"input_failures\":%" PRIu64 ",\"unmatched_frees\":%" PRIu64
            ",\"zero_size_allocs\":%" PRIu64 ",\"duplicate_allocs\":%" PRIu64
            ",\"peak_live_bytes\":%" PRIu64 ",\"peak_reserved_bytes\":%" PRIu64
            ",\"peak_allocated_bytes\":%" PRIu64 ",\"peak_overhead\":%.4f"
            ",\"segment_allocs\":%" PRIu64 ",\"segment_frees\":%" PRIu64
            ",\"num_alloc_retries\":%" PRIu64 ",\"num_ooms\":%" PRIu64 ",\"limit\":%" PRIu64 "}\n",
            nstreams, r->ops, r->allocs, r->frees, r->failures, r->input_failures,
            r->unmatched_frees, r->zero_size_allocs, r->duplicate_allocs, r->peak_live,
            st->peak_reserved_bytes, st->peak_allocated_bytes, frag, st->segment_allocs,
            st->segment_frees, st->num_alloc_retries, st->num_ooms, st->limit);
}

static void print_pytorch_human(FILE *out, const char *name, const results *r,
                                const pt_sim_stats *st) {
    char a[32], b[32], c[32];
    double frag = ck__peak_overhead(st->peak_reserved_bytes, r->peak_live);
    fprintf(out, "trace          %s\n", name);
    fprintf(out, "policy         PyTorch's native caching allocator, simulated (no device)\n");
    fprintf(out,
            "ops            %" PRIu64 " (allocs %" PRIu64 ", frees %" PRIu64 ", failures %" PRIu64
            ", unmatched frees %" PRIu64 ", input failures %" PRIu64 ")\n",
            r->ops, r->allocs, r->frees, r->failures, r->unmatched_frees, r->input_failures);
    fprintf(out, "peak live      %s\npeak reserved  %s (%.4f x peak live)\n",
            ck__fmt_bytes(r->peak_live, a, sizeof a),
            ck__fmt_bytes(st->peak_reserved_bytes, b, sizeof b), frag);
    if (st->limit)
        fprintf(out, "limit          %s (%" PRIu64 " cache flushes, %" PRIu64 " out of memory)\n",
                ck__fmt_bytes(st->limit, c, sizeof c), st->num_alloc_retries, st->num_ooms);
    else
        fprintf(out, "limit          none\n");
    fprintf(out, "cudaMalloc     %" PRIu64 " (cudaFree %" PRIu64 ")\n", st->segment_allocs,
            st->segment_frees);
}

/* ---- --policy both: the two side by side ------------------------------------ */

typedef struct comparison {
    uint64_t ck_peak, pt_peak, peak_live;
    double ck_frag, pt_frag, ck_mu;
    uint64_t ck_fail, pt_fail_capped, allocs, budget;
    int budget_set;
    int miss_frag, miss_mu, miss_peak, miss_fail;
} comparison;

static void compare(const results *ck, const ck_stats *st, const results *pt,
                    const pt_sim_stats *pst, const results *ptc, int budget_set, comparison *c) {
    memset(c, 0, sizeof *c);
    c->peak_live = ck->peak_live;
    c->ck_peak = stat_u(st->physical_bytes.peak);
    c->pt_peak = pst->peak_reserved_bytes;
    c->ck_frag = ck__peak_overhead(c->ck_peak, ck->peak_live);
    c->pt_frag = ck__peak_overhead(c->pt_peak, pt->peak_live);
    c->ck_mu =
        ck->ops ? (double)(st->num_map_calls + st->num_unmap_calls) / (double)ck->ops : 0.0;
    c->ck_fail = ck->failures;
    c->allocs = ck->allocs;
    c->budget_set = budget_set;
    c->budget = st->budget;
    c->pt_fail_capped = ptc ? ptc->failures : 0;
    c->miss_frag = c->ck_frag > TARGET_PEAK_OVERHEAD;
    c->miss_mu = c->ck_mu > TARGET_MAP_UNMAP_PER_OP;
    c->miss_peak = c->ck_peak > c->pt_peak;
    c->miss_fail = ck->failures > 0;
}

static void print_compare_json(char *buf, size_t n, const comparison *c, const pt_sim_stats *pst) {
    char miss[160] = "";
    size_t m = 0;
    const char *names[] = {"peak_overhead", "map_unmap_per_op", "peak_vs_pytorch", "failures"};
    int flags[] = {c->miss_frag, c->miss_mu, c->miss_peak, c->miss_fail};
    for (int i = 0; i < 4; i++)
        if (flags[i])
            m += (size_t)snprintf(miss + m, sizeof miss - m, "%s\"%s\"", m ? "," : "", names[i]);
    char under[32] = "null";
    if (c->budget_set) snprintf(under, sizeof under, "%" PRIu64, c->pt_fail_capped);
    snprintf(buf, n,
             ",\"policy\":\"both\",\"pytorch\":{\"peak_reserved_bytes\":%" PRIu64
             ",\"peak_overhead\":%.4f,\"segment_allocs\":%" PRIu64 ",\"segment_frees\":%" PRIu64
             ",\"failures_under_budget\":%s},\"misses\":[%s]",
             c->pt_peak, c->pt_frag, pst->segment_allocs, pst->segment_frees, under, miss);
}

static const char *flag(int miss) { return miss ? "MISS" : "ok"; }

static void print_compare_human(FILE *out, const comparison *c, const char *backend,
                                const ck_stats *st, const pt_sim_stats *pst) {
    char a[32], b[32], d[32], cell[48];
    fprintf(out, "== the same trace on ckalloc and on PyTorch's native caching allocator\n");
    fprintf(out, "   (PyTorch simulated with its defaults: no expandable segments)\n");
    snprintf(cell, sizeof cell, "ckalloc (%s backend)", backend);
    fprintf(out, "%-20s %-30s %s\n", "", cell, "PyTorch native");
    fprintf(out, "%-20s %-30s %s\n", "peak live", ck__fmt_bytes(c->peak_live, a, sizeof a),
            ck__fmt_bytes(c->peak_live, b, sizeof b));
    snprintf(cell, sizeof cell, "%-10s %s (<= PyTorch)", ck__fmt_bytes(c->ck_peak, a, sizeof a),
             flag(c->miss_peak));
    fprintf(out, "%-20s %-30s %s\n", "peak reserved", cell,
            ck__fmt_bytes(c->pt_peak, b, sizeof b));
    snprintf(cell, sizeof cell, "%-10.4f %s (<= %.2f)", c->ck_frag, flag(c->miss_frag),
             TARGET_PEAK_OVERHEAD);
    fprintf(out, "%-20s %-30s %.4f\n", "  / peak live", cell, c->pt_frag);
    snprintf(cell, sizeof cell, "%-10" PRIu64 " %s", c->ck_fail, flag(c->miss_fail));
    if (c->budget_set)
        fprintf(out, "%-20s %-30s %" PRIu64 " under the budget %s\n", "failed allocations", cell,
                c->pt_fail_capped, ck__fmt_bytes(c->budget, d, sizeof d));
    else
        fprintf(out, "%-20s %-30s %s\n", "failed allocations", cell, "0 (no limit)");
    snprintf(cell, sizeof cell, "%" PRIu64 " map, %" PRIu64 " unmap", st->num_map_calls,
             st->num_unmap_calls);
    char pcell[48];
    snprintf(pcell, sizeof pcell, "%" PRIu64 " cudaMalloc, %" PRIu64 " cudaFree",
             pst->segment_allocs, pst->segment_frees);
    fprintf(out, "%-20s %-30s %s\n", "driver calls", cell, pcell);
    snprintf(cell, sizeof cell, "%-10.6f %s (<= %.2f)", c->ck_mu, flag(c->miss_mu),
             TARGET_MAP_UNMAP_PER_OP);
    fprintf(out, "%-20s %s\n", "  per op", cell);
    if (c->pt_peak) {
        double saved = (double)c->pt_peak - (double)c->ck_peak;
        fprintf(out, "ckalloc reserves %s %s than PyTorch's policy (%.1f%%)\n",
                ck__fmt_bytes((uint64_t)(saved < 0 ? -saved : saved), a, sizeof a),
                saved < 0 ? "MORE" : "less", 100.0 * (saved < 0 ? -saved : saved) / (double)c->pt_peak);
    }
    int misses = c->miss_frag + c->miss_mu + c->miss_peak + c->miss_fail;
    fprintf(out, "targets: %s\n\n", misses ? "MISSED (see MISS above)" : "all met");
}

/* ---- main ---------------------------------------------------------------- */

enum { POLICY_CKALLOC, POLICY_PYTORCH, POLICY_BOTH };
enum { OPT_POLICY = 256, OPT_PACE, OPT_TIMED };

int main(int argc, char **argv) {
    const char *conf = NULL;
    int json = 0, quiet = 0, policy = POLICY_CKALLOC, timed = 0;
    double pace = 0;
    static const struct option longopts[] = {
        {"conf", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"policy", required_argument, NULL, OPT_POLICY},
        {"pace", required_argument, NULL, OPT_PACE},
        {"timed", no_argument, NULL, OPT_TIMED},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "c:jqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': conf = optarg; break;
        case 'j': json = 1; break;
        case 'q': quiet = 1; break;
        case OPT_POLICY:
            if (strcmp(optarg, "ckalloc") == 0) policy = POLICY_CKALLOC;
            else if (strcmp(optarg, "pytorch") == 0) policy = POLICY_PYTORCH;
            else if (strcmp(optarg, "both") == 0) policy = POLICY_BOTH;
            else {
                fprintf(stderr, "ckalloc-replay: bad --policy '%s' (ckalloc, pytorch or both)\n",
                        optarg);
                return EXIT_BAD_INPUT;
            }
            break;
        case OPT_TIMED: timed = 1; break;
        case OPT_PACE:
            errno = 0;
            pace = strtod(optarg, &end);
            if (end == optarg || *end || errno || !(pace > 0) || pace > 86400) {
                fprintf(stderr, "ckalloc-replay: bad --pace '%s' (seconds, > 0, at most 86400)\n",
                        optarg);
                return EXIT_BAD_INPUT;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_BAD_INPUT;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return EXIT_BAD_INPUT;
    }
    const char *path = argv[optind];
    const char *name = strcmp(path, "-") == 0 ? "<stdin>" : path;

    /* The defaults first so that --conf overrides them key by key. */
    ck_pool_options opts;
    ck_pool_options_init(&opts);
    opts.backend = CK_BACKEND_HOST;
    opts.host_mem = DEFAULT_HOST_MEM;
    opts.sim_nodata = 1; /* stashes and fetches copy nothing: the memory is never touched */
    if (conf && ck_options_parse(&opts, conf) != CK_OK) {
        fprintf(stderr, "ckalloc-replay: bad --conf '%s': %s\n", conf, ck_last_error());
        return EXIT_BAD_INPUT;
    }
    if (timed && (opts.backend != CK_BACKEND_HOST || policy == POLICY_PYTORCH || pace > 0)) {
        fprintf(stderr, "ckalloc-replay: --timed runs on the host backend's simulated clock, with "
                        "--policy ckalloc or both and without --pace\n");
        return EXIT_BAD_INPUT;
    }
    if (timed) opts.sim_clock = 1;

    ops_vec ops = {0};
    stream_tab streams = {0};
    results res = {0};
    stream_index(&streams, 0); /* index 0 = the default stream */
    int rc = load_trace(path, name, &ops, &streams, &res.input_failures);
    if (rc) {
        free(ops.v);
        free(ops.names);
        free(streams.ids);
        free(streams.streams);
        return rc;
    }
    if (pace > 0 && !quiet)
        fprintf(stderr,
                "ckalloc-replay: pid %d replays %s over about %g s; watch it with "
                "ckalloc-stat -p %d --watch 1\n",
                (int)getpid(), name, pace, (int)getpid());

    /* budget=N% is a share of the device; the host backend's device is
     * host_mem, known before any pool exists. */
    const int budget_set = opts.budget != 0 || opts.budget_fraction > 0;
    if (policy == POLICY_PYTORCH) {
        uint64_t cap = opts.budget;
        if (!cap && opts.budget_fraction > 0) {
            if (opts.backend != CK_BACKEND_HOST) {
                fprintf(stderr,
                        "ckalloc-replay: --policy pytorch: budget=%g%% needs the device's size; "
                        "give the budget in bytes or use --policy both\n",
                        opts.budget_fraction * 100);
                free(ops.v);
                free(ops.names);
                free(streams.ids);
                free(streams.streams);
                return EXIT_BAD_INPUT;
            }
            cap = (uint64_t)(opts.budget_fraction * (double)opts.host_mem);
        }
        pt_sim_stats pst;
        uint64_t in_fail = res.input_failures;
        run_pytorch(&ops, name, cap, pace, 0, &res, &pst);
        res.input_failures = in_fail;
        if (json) print_pytorch_json(stdout, name, &res, &pst, streams.n);
        else if (!quiet) print_pytorch_human(stdout, name, &res, &pst);
        free(ops.v);
        free(ops.names);
        free(streams.ids);
        free(streams.streams);
        return res.failures ? EXIT_ALLOC_FAILED : 0;
    }

    ck_pool *pool = NULL;
    ck_status pst = ck_pool_create(&pool, &opts);
    if (pst != CK_OK) {
        /* A config mistake is bad input (2); no device or no memory is a failure (1). */
        const char *be = opts.backend == CK_BACKEND_CUDA   ? "cuda"
                         : opts.backend == CK_BACKEND_HOST ? "host"
                                                           : "auto";
        fprintf(stderr, "ckalloc-replay: cannot create a pool on the %s backend%s%s%s: %s\n", be,
                conf ? " (--conf '" : "", conf ? conf : "", conf ? "')" : "", ck_last_error());
        free(ops.v);
        free(ops.names);
        free(streams.ids);
        free(streams.streams);
        return pst == CK_ERR_INVALID ? EXIT_BAD_INPUT : EXIT_ALLOC_FAILED;
    }

    ck_ctx cctx = {.pool = pool, .streams = &streams, .res = &res};
    for (size_t i = 1; i < streams.n; i++) {
        if (ck_stream_create(pool, &streams.streams[i]) != CK_OK) {
            fprintf(stderr, "ckalloc-replay: cannot create stream %zu: %s\n", i, ck_last_error());
            rc = EXIT_ALLOC_FAILED; /* the machine, not the input */
            streams.n = i;
            goto out;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (timed) {
        if (ck_event_create(pool, &cctx.ev_begin) != CK_OK || ck_event_create(pool, &cctx.ev_end) != CK_OK) {
            fprintf(stderr, "ckalloc-replay: cannot create events: %s\n", ck_last_error());
            rc = EXIT_ALLOC_FAILED;
            goto out;
        }
        cctx.timed = 1;
    }
    allocator al = {ck_alloc_cb, ck_free_cb, ck_driver_calls_cb, ck_tier_cb, ck_tick_cb, &cctx};
    leftovers lo;
    int free_errors = replay_ops(&ops, &al, name, pace, 0, &res, &lo);

    ck_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    if (ck_get_stats(pool, &st) != CK_OK) {
        fprintf(stderr, "ckalloc-replay: cannot read stats: %s\n", ck_last_error());
        rc = EXIT_BAD_INPUT;
    } else if (policy == POLICY_BOTH) {
        /* What PyTorch would reserve with no cap, and how it fares under
         * ckalloc's budget when one is set. */
        results pres, pcap;
        pt_sim_stats pstat, pcst;
        run_pytorch(&ops, name, 0, 0, 1, &pres, &pstat);
        if (budget_set) run_pytorch(&ops, name, st.budget, 0, 1, &pcap, &pcst);
        comparison cmp;
        compare(&res, &st, &pres, &pstat, budget_set ? &pcap : NULL, budget_set, &cmp);
        if (json) {
            char extra[512];
            print_compare_json(extra, sizeof extra, &cmp, &pstat);
            print_json(stdout, name, &res, &st, ck_pool_backend(pool), streams.n, extra);
        } else if (!quiet) {
            print_human(stdout, name, &res, &st, budget_set, ck_pool_backend(pool));
            print_compare_human(stdout, &cmp, ck_pool_backend(pool), &st, &pstat);
        }
    } else if (json) {
        print_json(stdout, name, &res, &st, ck_pool_backend(pool), streams.n, "");
    } else if (!quiet) {
        print_human(stdout, name, &res, &st, budget_set, ck_pool_backend(pool));
        ck_print_stats(pool, stdout, CK_FORMAT_TABLE);
    }
    if (!rc)
        rc = (res.failures || free_errors || res.stopped || res.tier_failures) ? EXIT_ALLOC_FAILED : 0;

    replay_release(&al, &lo);

out:
    if (cctx.ev_begin) ck_event_destroy(pool, cctx.ev_begin);
    if (cctx.ev_end) ck_event_destroy(pool, cctx.ev_end);
    for (size_t i = 1; i < streams.n; i++)
        if (streams.streams[i])
            ck_stream_destroy(pool, streams.streams[i]);
    if (ck_pool_destroy(pool) != CK_OK) {
        fprintf(stderr, "ckalloc-replay: %s\n", ck_last_error());
        if (!rc)
            rc = EXIT_ALLOC_FAILED;
    }
    free(ops.v);
    free(ops.names);
    free(streams.ids);
    free(streams.streams);
    return rc;
}
