/* ckalloc-replay: replay an allocation trace (ckalloc's own or a plain RMM
 * log) on a fresh pool and report peak memory, fragmentation, map/unmap
 * traffic and time per operation.
 *
 * The whole trace is parsed into memory first so that ns_per_op measures the
 * allocator, not the CSV parser. The replay never touches the memory. */
#include "ckalloc/ckalloc.h"
#include "internal.h"
#include "trace.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_ALLOC_FAILED 1 /* an allocation, the device or the pool failed */
#define EXIT_BAD_INPUT 2

static void usage(FILE *out) {
    fputs("usage: ckalloc-replay [--conf STR] [--json] [--quiet] TRACE\n"
          "  Replays an RMM-style allocation trace (Thread,Time,Action,Pointer,Size,Stream)\n"
          "  on a new pool. The pool config is \"backend=host\" followed by --conf, e.g.\n"
          "  --conf budget=8G or --conf backend=cuda,budget=20G.\n"
          "  --json   print one JSON object with the results\n"
          "  --quiet  print nothing but errors\n"
          "Exit: 0 every allocation succeeded, 1 some failed, 2 bad usage or bad input.\n",
          out);
}

/* One replayable trace row, compacted (the trace has no use for thread/time). */
typedef struct op {
    uint64_t ptr;
    uint64_t size;
    uint64_t line;
    uint32_t stream; /* index into the stream table */
    uint8_t action;
} op;

typedef struct ops_vec {
    op *v;
    size_t n, cap;
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

/* Reads and parses the whole trace. Returns 0, or prints FILE:LINE and
 * returns EXIT_BAD_INPUT. */
static int load_trace(const char *path, ops_vec *ops, stream_tab *streams, uint64_t *input_failures) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ckalloc-replay: cannot open trace '%s': %s\n", path, strerror(errno));
        return EXIT_BAD_INPUT;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        ck_trace_rec r;
        ck_trace_line_kind kind;
        if (ck__trace_parse_line(line, (size_t)len, &r, &kind) != CK_OK) {
            fprintf(stderr, "%s:%" PRIu64 ": %s\n", path, lineno, ck_last_error());
            rc = EXIT_BAD_INPUT;
            break;
        }
        if (kind != CK_TRACE_LINE_RECORD)
            continue;
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
        o->stream = stream_index(streams, r.stream);
        o->action = (uint8_t)r.action;
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "ckalloc-replay: cannot read trace '%s': %s\n", path, strerror(errno));
        rc = EXIT_BAD_INPUT;
    }
    free(line);
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
    uint64_t zero_size_allocs, duplicate_allocs;
    uint64_t peak_live;
    double seconds;
} results;

static uint64_t stat_u(int64_t v) { return v < 0 ? 0 : (uint64_t)v; }

static void print_json(FILE *out, const char *path, const results *r, const ck_stats *st,
                       const char *backend, size_t nstreams) {
    uint64_t peak_phys = stat_u(st->physical_bytes.peak);
    double frag = r->peak_live ? (double)peak_phys / (double)r->peak_live : 0.0;
    double mu = r->ops ? (double)(st->num_map_calls + st->num_unmap_calls) / (double)r->ops : 0.0;
    double ns = r->ops ? r->seconds * 1e9 / (double)r->ops : 0.0;
    fputs("{\"trace\":", out);
    json_str(out, path);
    fprintf(out,
            ",\"backend\":\"%s\",\"streams\":%zu,\"ops\":%" PRIu64 ",\"allocs\":%" PRIu64
            ",\"frees\":%" PRIu64 ",\"failures\":%" PRIu64 ",\"input_failures\":%" PRIu64
            ",\"unmatched_frees\":%" PRIu64 ",\"zero_size_allocs\":%" PRIu64
            ",\"duplicate_allocs\":%" PRIu64 ",\"peak_live_bytes\":%" PRIu64
            ",\"peak_physical_bytes\":%" PRIu64 ",\"fragmentation\":%.4f,\"map_calls\":%" PRIu64
            ",\"unmap_calls\":%" PRIu64 ",\"map_unmap_per_op\":%.6f,\"ns_per_op\":%.1f"
            ",\"num_ooms\":%" PRIu64 ",\"num_alloc_retries\":%" PRIu64 ",\"budget\":%" PRIu64
            "}\n",
            backend, nstreams, r->ops, r->allocs, r->frees, r->failures, r->input_failures,
            r->unmatched_frees, r->zero_size_allocs, r->duplicate_allocs, r->peak_live, peak_phys,
            frag, st->num_map_calls, st->num_unmap_calls, mu, ns, st->num_ooms,
            st->num_alloc_retries, st->budget);
}

static void print_human(FILE *out, const char *path, const results *r, const ck_stats *st) {
    char a[32], b[32], c[32];
    uint64_t peak_phys = stat_u(st->physical_bytes.peak);
    double frag = r->peak_live ? (double)peak_phys / (double)r->peak_live : 0.0;
    double mu = r->ops ? (double)(st->num_map_calls + st->num_unmap_calls) / (double)r->ops : 0.0;
    double ns = r->ops ? r->seconds * 1e9 / (double)r->ops : 0.0;
    fprintf(out, "trace          %s\n", path);
    fprintf(out,
            "ops            %" PRIu64 " (allocs %" PRIu64 ", frees %" PRIu64 ", failures %" PRIu64
            ", unmatched frees %" PRIu64 ", input failures %" PRIu64 ")\n",
            r->ops, r->allocs, r->frees, r->failures, r->unmatched_frees, r->input_failures);
    fprintf(out, "peak live      %s\npeak physical  %s (fragmentation %.4f)\nbudget         %s\n",
            ck__fmt_bytes(r->peak_live, a, sizeof a), ck__fmt_bytes(peak_phys, b, sizeof b), frag,
            ck__fmt_bytes(st->budget, c, sizeof c));
    fprintf(out, "map / unmap    %" PRIu64 " / %" PRIu64 " (%.6f per op)\n", st->num_map_calls,
            st->num_unmap_calls, mu);
    fprintf(out, "time           %.1f ns per op\n\n", ns);
}

/* ---- main ---------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *conf = NULL;
    int json = 0, quiet = 0;
    static const struct option longopts[] = {
        {"conf", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:jqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': conf = optarg; break;
        case 'j': json = 1; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_BAD_INPUT;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return EXIT_BAD_INPUT;
    }
    const char *path = argv[optind];

    ops_vec ops = {0};
    stream_tab streams = {0};
    results res = {0};
    stream_index(&streams, 0); /* index 0 = the default stream */
    int rc = load_trace(path, &ops, &streams, &res.input_failures);
    if (rc) {
        free(ops.v);
        free(streams.ids);
        free(streams.streams);
        return rc;
    }

    /* The default conf first so that --conf overrides it key by key. */
    size_t clen = strlen("backend=host") + (conf ? strlen(conf) + 1 : 0) + 1;
    char *full_conf = xrealloc(NULL, clen);
    snprintf(full_conf, clen, "backend=host%s%s", conf && *conf ? "," : "", conf ? conf : "");
    ck_pool *pool = NULL;
    ck_status pst = ck_pool_create_conf(&pool, full_conf);
    if (pst != CK_OK) {
        /* A config mistake is bad input (2); no device or no memory is a failure (1). */
        fprintf(stderr, "ckalloc-replay: %s '%s': %s\n",
                pst == CK_ERR_INVALID ? "bad pool config" : "cannot create a pool with", full_conf,
                ck_last_error());
        free(full_conf);
        free(ops.v);
        free(streams.ids);
        free(streams.streams);
        return pst == CK_ERR_INVALID ? EXIT_BAD_INPUT : EXIT_ALLOC_FAILED;
    }
    free(full_conf);

    for (size_t i = 1; i < streams.n; i++) {
        if (ck_stream_create(pool, &streams.streams[i]) != CK_OK) {
            fprintf(stderr, "ckalloc-replay: cannot create stream %zu: %s\n", i, ck_last_error());
            rc = EXIT_ALLOC_FAILED; /* the machine, not the input */
            streams.n = i;
            goto out;
        }
    }

    ptr_map live = {0};
    map_grow(&live);
    /* Blocks whose traced address was allocated again without a free in
     * between (a trace that lost rows): kept live, freed at the end. */
    slot *orphans = NULL;
    size_t norphans = 0;
    uint64_t live_bytes = 0;
    int free_errors = 0;

    double t0 = now_s();
    for (size_t i = 0; i < ops.n; i++) {
        const op *o = &ops.v[i];
        ck_stream s = streams.streams[o->stream];
        if (o->action == CK_TRACE_ALLOC) {
            if (o->size == 0) {
                res.zero_size_allocs++; /* RMM hands out nullptr; nothing to replay */
                continue;
            }
            res.allocs++;
            void *p = NULL;
            if (ck_malloc(pool, &p, (size_t)o->size, s) != CK_OK) {
                if (res.failures++ == 0)
                    fprintf(stderr, "%s:%" PRIu64 ": allocation of %" PRIu64 " bytes failed: %s\n",
                            path, o->line, o->size, ck_last_error());
                continue;
            }
            live_bytes += o->size;
            if (live_bytes > res.peak_live)
                res.peak_live = live_bytes;
            slot *old = map_find(&live, o->ptr);
            if (old) {
                res.duplicate_allocs++;
                orphans = xrealloc(orphans, (norphans + 1) * sizeof *orphans);
                orphans[norphans++] = *old;
                old->ptr = p;
                old->size = o->size;
                old->stream = o->stream;
            } else {
                slot e = {.key = o->ptr, .ptr = p, .size = o->size, .stream = o->stream};
                map_put(&live, &e);
            }
        } else {
            slot *e = map_find(&live, o->ptr);
            if (!e) {
                res.unmatched_frees++;
                continue;
            }
            if (ck_free(pool, e->ptr, s) != CK_OK) {
                if (free_errors++ == 0)
                    fprintf(stderr, "%s:%" PRIu64 ": free failed: %s\n", path, o->line,
                            ck_last_error());
            }
            res.frees++;
            live_bytes -= e->size;
            map_del(&live, e);
        }
    }
    res.seconds = now_s() - t0;
    res.ops = ops.n;

    ck_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    if (ck_get_stats(pool, &st) != CK_OK) {
        fprintf(stderr, "ckalloc-replay: cannot read stats: %s\n", ck_last_error());
        rc = EXIT_BAD_INPUT;
    } else if (json) {
        print_json(stdout, path, &res, &st, ck_pool_backend(pool), streams.n);
    } else if (!quiet) {
        print_human(stdout, path, &res, &st);
        ck_print_stats(pool, stdout, CK_FORMAT_TABLE);
    }
    if (!rc)
        rc = (res.failures || free_errors) ? EXIT_ALLOC_FAILED : 0;

    /* Free what the trace left live so the pool ends empty. */
    for (size_t i = 0; i < live.cap; i++)
        if (live.s[i].used)
            ck_free(pool, live.s[i].ptr, streams.streams[live.s[i].stream]);
    for (size_t i = 0; i < norphans; i++)
        ck_free(pool, orphans[i].ptr, streams.streams[orphans[i].stream]);
    free(live.s);
    free(orphans);

out:
    for (size_t i = 1; i < streams.n; i++)
        if (streams.streams[i])
            ck_stream_destroy(pool, streams.streams[i]);
    if (ck_pool_destroy(pool) != CK_OK) {
        fprintf(stderr, "ckalloc-replay: %s\n", ck_last_error());
        if (!rc)
            rc = EXIT_ALLOC_FAILED;
    }
    free(ops.v);
    free(streams.ids);
    free(streams.streams);
    return rc;
}
