/* Allocation traces in RMM's logging-adaptor CSV format (see trace.h).
 *
 * The writer is called with the pool lock held on the allocation fast path,
 * so ck__trace_add only stores raw fields; formatting and stdio happen in
 * ck__trace_flush, once per CK_TRACE_BUF records and at close. */
#include "trace.h"

#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CK_TRACE_BUF 4096
#define CK_TRACE_LINE_MAX 160 /* longest formatted record, with room to spare */
#define CK_TRACE_HEADER "Thread,Time,Action,Pointer,Size,Stream\n"

typedef struct trace_raw {
    uint64_t thread;
    uint64_t time_ns; /* CLOCK_REALTIME */
    uint64_t ptr;
    uint64_t size;
    uint64_t stream;
    ck_trace_action action;
} trace_raw;

struct ck_trace_writer {
    FILE *f;
    char *path;
    int err;          /* first errno seen; 0 = none */
    size_t n;         /* buffered records */
    time_t last_sec;  /* cache for localtime_r: one call per distinct second */
    char last_hms[9]; /* "HH:MM:SS" of last_sec */
    trace_raw buf[CK_TRACE_BUF];
    char chunk[65536]; /* formatted lines; here, not on the caller's stack */
};

/* ---- writer ------------------------------------------------------------ */

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

ck_status ck__trace_open(const char *path, ck_trace_writer **out) {
    if (!path || !*path || !out)
        return ck__err(CK_ERR_INVALID, "trace: no path given");
    ck_trace_writer *w = calloc(1, sizeof *w);
    char *p = dup_str(path);
    if (!w || !p) {
        free(w);
        free(p);
        return ck__err(CK_ERR_NOMEM, "trace: out of host memory opening '%s'", path);
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        int e = errno;
        free(w);
        free(p);
        return ck__err(CK_ERR_IO, "cannot open trace file '%s': %s", path, strerror(e));
    }
    if (fputs(CK_TRACE_HEADER, f) == EOF) {
        int e = errno;
        fclose(f);
        free(w);
        free(p);
        return ck__err(CK_ERR_IO, "cannot write trace file '%s': %s", path, strerror(e));
    }
    w->f = f;
    w->path = p;
    w->last_sec = (time_t)-1;
    *out = w;
    return CK_OK;
}

void ck__trace_add(ck_trace_writer *w, ck_trace_action a, uint64_t ptr, uint64_t size,
                   uint64_t stream) {
    if (!w)
        return;
    if (w->n == CK_TRACE_BUF)
        (void)ck__trace_flush(w); /* errors are remembered in w->err */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* vDSO: no syscall */
    trace_raw *r = &w->buf[w->n++];
    r->thread = (uint64_t)pthread_self();
    r->time_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    r->action = a;
    r->ptr = ptr;
    r->size = size;
    r->stream = stream;
}

/* Digits of v in base 10 or 16 written backwards from end; returns the start. */
static char *put_u64(char *end, uint64_t v, unsigned base) {
    static const char digits[] = "0123456789abcdef";
    do {
        *--end = digits[v % base];
        v /= base;
    } while (v);
    return end;
}

static char *append_u64(char *p, uint64_t v, unsigned base) {
    char tmp[24];
    char *e = tmp + sizeof tmp;
    char *s = put_u64(e, v, base);
    memcpy(p, s, (size_t)(e - s));
    return p + (e - s);
}

static const char *action_name(ck_trace_action a) {
    switch (a) {
    case CK_TRACE_ALLOC: return "allocate";
    case CK_TRACE_FREE: return "free";
    case CK_TRACE_ALLOC_FAIL: return "allocate failure";
    case CK_TRACE_TAG: return "tag";
    case CK_TRACE_STASH: return "stash";
    case CK_TRACE_FETCH: return "fetch";
    case CK_TRACE_STEP: return "step";
    }
    return "allocate";
}

/* Formats one record into line (CK_TRACE_LINE_MAX bytes); returns its length. */
static size_t format_rec(ck_trace_writer *w, const trace_raw *r, char *line) {
    time_t sec = (time_t)(r->time_ns / 1000000000u);
    uint64_t us = (r->time_ns % 1000000000u) / 1000u;
    if (sec != w->last_sec) {
        struct tm tm;
        if (!localtime_r(&sec, &tm))
            memset(&tm, 0, sizeof tm);
        int parts[3] = {tm.tm_hour, tm.tm_min, tm.tm_sec};
        for (int i = 0; i < 3; i++) {
            unsigned v = (unsigned)parts[i] % 100u;
            w->last_hms[i * 3] = (char)('0' + v / 10);
            w->last_hms[i * 3 + 1] = (char)('0' + v % 10);
            if (i < 2)
                w->last_hms[i * 3 + 2] = ':';
        }
        w->last_sec = sec;
    }
    char *p = line;
    p = append_u64(p, r->thread, 10);
    *p++ = ',';
    memcpy(p, w->last_hms, 8);
    p += 8;
    *p++ = '.';
    for (int i = 5; i >= 0; i--) {
        p[i] = (char)('0' + us % 10);
        us /= 10;
    }
    p += 6;
    *p++ = ',';
    const char *an = action_name(r->action);
    size_t al = strlen(an);
    memcpy(p, an, al);
    p += al;
    memcpy(p, ",0x", 3);
    p = append_u64(p + 3, r->ptr, 16);
    *p++ = ',';
    p = append_u64(p, r->size, 10);
    memcpy(p, ",0x", 3);
    p = append_u64(p + 3, r->stream, 16);
    *p++ = '\n';
    return (size_t)(p - line);
}

static ck_status writer_error(const ck_trace_writer *w) {
    return ck__err(CK_ERR_IO, "cannot write trace file '%s': %s", w->path, strerror(w->err));
}

ck_status ck__trace_flush(ck_trace_writer *w) {
    if (!w)
        return CK_OK;
    if (!w->err) {
        /* Lines are batched into one fwrite per 64 KiB: stdio's per-call
         * locking would otherwise cost as much as the formatting. */
        char *chunk = w->chunk;
        size_t used = 0;
        for (size_t i = 0; i <= w->n && !w->err; i++) {
            if (used && (i == w->n || used > sizeof w->chunk - CK_TRACE_LINE_MAX)) {
                if (fwrite(chunk, 1, used, w->f) != used)
                    w->err = errno ? errno : EIO;
                used = 0;
            }
            if (i < w->n)
                used += format_rec(w, &w->buf[i], chunk + used);
        }
        /* fflush so that a full disk shows up now rather than at fclose. */
        if (!w->err && fflush(w->f) == EOF)
            w->err = errno ? errno : EIO;
    }
    /* After an error the records are dropped: the pool keeps running. */
    w->n = 0;
    return w->err ? writer_error(w) : CK_OK;
}

void ck__trace_add_extra(ck_trace_writer *w, ck_trace_action a, uint64_t ptr, uint64_t size,
                         uint64_t stream, const char *extra) {
    if (!w) return;
    (void)ck__trace_flush(w); /* the buffered rows come first */
    if (w->err) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    trace_raw r = {(uint64_t)pthread_self(), (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec,
                   ptr, size, stream, a};
    char line[CK_TRACE_LINE_MAX + CK_TRACE_EXTRA_MAX + 2];
    size_t n = format_rec(w, &r, line) - 1; /* without its newline */
    int m = snprintf(line + n, sizeof line - n, ",%s\n", extra);
    if (m < 0 || (size_t)m >= sizeof line - n) return; /* cannot happen: extra is bounded */
    if (fwrite(line, 1, n + (size_t)m, w->f) != n + (size_t)m || fflush(w->f) == EOF)
        w->err = errno ? errno : EIO;
}

ck_status ck__trace_close(ck_trace_writer *w) {
    if (!w)
        return CK_OK;
    (void)ck__trace_flush(w);
    if (fclose(w->f) == EOF && !w->err)
        w->err = errno ? errno : EIO;
    ck_status st = w->err ? writer_error(w) : CK_OK;
    free(w->path);
    free(w);
    return st;
}

/* ---- reader ------------------------------------------------------------ */

static const char *const col_names[6] = {"Thread", "Time", "Action", "Pointer", "Size", "Stream"};

/* The bad text as it goes into an error sentence: printable ASCII only, cut. */
static void show(const char *s, size_t n, char *out, size_t cap) {
    size_t max = cap - 4, o = 0;
    for (size_t i = 0; i < n && o < cap - 1; i++) {
        if (o == max && i + 1 < n) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[o] = 0;
}

static ck_status col_err(int col, const char *s, size_t n, const char *what) {
    char buf[48];
    show(s, n, buf, sizeof buf);
    return ck__err(CK_ERR_INVALID, "column %d (%s): '%s' %s", col + 1, col_names[col], buf, what);
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* 0 ok, -1 not a number, -2 overflow. */
static int parse_dec(const char *s, size_t n, uint64_t *out) {
    if (n == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)s[i] - '0';
        if (d > 9)
            return -1;
        if (v > (UINT64_MAX - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int hex_val(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Digits only (no prefix). 0 ok, -1 not a number, -2 overflow. */
static int parse_hex_digits(const char *s, size_t n, uint64_t *out) {
    if (n == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = hex_val(s[i]);
        if (d < 0)
            return -1;
        if (v >> 60)
            return -2;
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int has_0x(const char *s, size_t n) { return n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'); }

/* "0x..." hex, or decimal when allow_dec (a bare "0" is always accepted:
 * some printers write a null pointer or the default stream that way). */
static int parse_hex(const char *s, size_t n, int allow_dec, uint64_t *out) {
    if (has_0x(s, n))
        return parse_hex_digits(s + 2, n - 2, out);
    if (allow_dec || (n == 1 && s[0] == '0'))
        return parse_dec(s, n, out);
    return -1;
}

/* Up to 9 fraction digits as microseconds. Returns -1 on a bad fraction. */
static int parse_frac_us(const char *s, size_t n, uint64_t *us) {
    if (n == 0 || n > 9)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < 6; i++) {
        unsigned d = 0;
        if (i < n) {
            d = (unsigned)(unsigned char)s[i] - '0';
            if (d > 9)
                return -1;
        }
        v = v * 10 + d;
    }
    for (size_t i = 6; i < n; i++)
        if ((unsigned)(unsigned char)s[i] - '0' > 9)
            return -1;
    *us = v;
    return 0;
}

/* 1 or 2 digits below lim. */
static int parse_clock_part(const char *s, size_t n, unsigned lim, uint64_t *out) {
    uint64_t v;
    if (n < 1 || n > 2 || parse_dec(s, n, &v) || v >= lim)
        return -1;
    *out = v;
    return 0;
}

/* HH:MM:SS[.f] (microseconds since midnight) or epoch seconds S[.f]. */
static int parse_time(const char *s, size_t n, uint64_t *us_out) {
    size_t dot = n;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '.') {
            dot = i;
            break;
        }
    uint64_t frac = 0;
    if (dot < n && parse_frac_us(s + dot + 1, n - dot - 1, &frac))
        return -1;
    const char *c1 = memchr(s, ':', dot);
    if (!c1) {
        uint64_t sec;
        /* 12 digits of seconds is year 33658: plenty, and cannot overflow. */
        if (dot > 12 || parse_dec(s, dot, &sec))
            return -1;
        *us_out = sec * 1000000u + frac;
        return 0;
    }
    size_t i1 = (size_t)(c1 - s);
    const char *c2 = memchr(c1 + 1, ':', dot - i1 - 1);
    if (!c2)
        return -1;
    size_t i2 = (size_t)(c2 - s);
    uint64_t h, m, sec;
    if (parse_clock_part(s, i1, 24, &h) || parse_clock_part(s + i1 + 1, i2 - i1 - 1, 60, &m) ||
        parse_clock_part(s + i2 + 1, dot - i2 - 1, 61, &sec))
        return -1;
    *us_out = ((h * 60 + m) * 60 + sec) * 1000000u + frac;
    return 0;
}

static int str_is(const char *s, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n == l && memcmp(s, lit, l) == 0;
}

ck_status ck__trace_parse_line(const char *line, size_t len, ck_trace_rec *rec,
                               ck_trace_line_kind *kind) {
    if (!kind || !rec || (!line && len))
        return ck__err(CK_ERR_INVALID, "trace: NULL argument");
    *kind = CK_TRACE_LINE_SKIP;
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n' || is_space(line[len - 1])))
        len--;
    size_t lead = 0;
    while (lead < len && is_space(line[lead]))
        lead++;
    if (lead == len)
        return CK_OK; /* blank */

    /* Split the first seven columns; a seventh is read for tag and step
     * rows and ignored for the others (RMM may write a Tag column). */
    const char *f[7];
    size_t fl[7];
    int nf = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len && nf < 7; i++) {
        if (nf == 6) { /* the seventh runs to the end of the line */
            size_t a = start, b = len;
            while (a < b && is_space(line[a])) a++;
            f[nf] = line + a;
            fl[nf] = b - a;
            nf++;
            break;
        }
        if (i == len || line[i] == ',') {
            size_t a = start, b = i;
            while (a < b && is_space(line[a]))
                a++;
            while (b > a && is_space(line[b - 1]))
                b--;
            f[nf] = line + a;
            fl[nf] = b - a;
            nf++;
            start = i + 1;
        }
    }
    if (nf >= 1 && str_is(f[0], fl[0], "Thread"))
        return CK_OK; /* header */
    if (nf < 6) {
        char buf[48];
        show(line, len, buf, sizeof buf);
        return ck__err(CK_ERR_INVALID,
                       "expected 6 columns (Thread,Time,Action,Pointer,Size,Stream), got %d in '%s'",
                       nf, buf);
    }

    ck_trace_rec r;
    memset(&r, 0, sizeof r);
    int rc = parse_dec(f[0], fl[0], &r.thread);
    if (rc == -1 && has_0x(f[0], fl[0]))
        rc = parse_hex_digits(f[0] + 2, fl[0] - 2, &r.thread);
    if (rc)
        return col_err(0, f[0], fl[0], rc == -2 ? "overflows 64 bits" : "is not a thread id");
    if (parse_time(f[1], fl[1], &r.time_us))
        return col_err(1, f[1], fl[1], "is not HH:MM:SS.ffffff or epoch seconds");
    if (str_is(f[2], fl[2], "allocate"))
        r.action = CK_TRACE_ALLOC;
    else if (str_is(f[2], fl[2], "free") || str_is(f[2], fl[2], "deallocate"))
        r.action = CK_TRACE_FREE;
    else if (str_is(f[2], fl[2], "allocate failure"))
        r.action = CK_TRACE_ALLOC_FAIL;
    else if (str_is(f[2], fl[2], "tag"))
        r.action = CK_TRACE_TAG;
    else if (str_is(f[2], fl[2], "stash"))
        r.action = CK_TRACE_STASH;
    else if (str_is(f[2], fl[2], "fetch"))
        r.action = CK_TRACE_FETCH;
    else if (str_is(f[2], fl[2], "step"))
        r.action = CK_TRACE_STEP;
    else
        return col_err(2, f[2], fl[2],
                       "is not allocate, free, deallocate, allocate failure, tag, stash, fetch or step");
    if ((rc = parse_hex(f[3], fl[3], 0, &r.ptr)))
        return col_err(3, f[3], fl[3], rc == -2 ? "overflows 64 bits" : "is not a hex number");
    if ((rc = parse_dec(f[4], fl[4], &r.size)))
        return col_err(4, f[4], fl[4], rc == -2 ? "overflows 64 bits" : "is not a decimal number");
    if ((rc = parse_hex(f[5], fl[5], 1, &r.stream)))
        return col_err(5, f[5], fl[5], rc == -2 ? "overflows 64 bits" : "is not a stream id");
    if (r.action == CK_TRACE_TAG || r.action == CK_TRACE_STEP) {
        char buf[48];
        if (nf < 7 || fl[6] == 0)
            return ck__err(CK_ERR_INVALID, "a %s row needs a seventh column (%s)",
                           r.action == CK_TRACE_TAG ? "tag" : "step",
                           r.action == CK_TRACE_TAG ? "NAME|TIER" : "begin or end");
        if (r.action == CK_TRACE_STEP) {
            if (str_is(f[6], fl[6], "begin")) r.begin = 1;
            else if (!str_is(f[6], fl[6], "end")) {
                show(f[6], fl[6], buf, sizeof buf);
                return ck__err(CK_ERR_INVALID, "column 7: '%s' is not begin or end", buf);
            }
        } else {
            const char *bar = memchr(f[6], '|', fl[6]);
            static const char *const tiers[4] = {"auto", "keep", "offload", "recompute"};
            size_t nl = bar ? (size_t)(bar - f[6]) : 0;
            r.tier = -1;
            for (int t = 0; bar && t < 4; t++)
                if (str_is(bar + 1, fl[6] - nl - 1, tiers[t])) r.tier = t;
            /* A name the writer could have written: no control character
             * (NUL included: it would cut the name short) and no quote. */
            int name_ok = 1;
            for (size_t k = 0; k < nl; k++) {
                unsigned char ch = (unsigned char)f[6][k];
                if (ch < 0x20 || ch == 0x7f || ch == '"') name_ok = 0;
            }
            if (!bar || nl == 0 || nl >= sizeof r.name || r.tier < 0 || !name_ok) {
                show(f[6], fl[6], buf, sizeof buf);
                return ck__err(CK_ERR_INVALID,
                               "column 7: '%s' is not NAME|TIER (a name of 1 to %d bytes without "
                               "control characters or quotes, a tier of auto, keep, offload or "
                               "recompute)",
                               buf, (int)sizeof r.name - 1);
            }
            memcpy(r.name, f[6], nl);
            r.name[nl] = 0;
        }
    }
    *rec = r;
    *kind = CK_TRACE_LINE_RECORD;
    return CK_OK;
}
