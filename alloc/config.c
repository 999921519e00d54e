/* One-string configuration ("backend=host,budget=20G,trace=t.csv") in the
 * MALLOC_CONF style: one table of keys, each with its parser. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

CK_API void ck_pool_options_init(ck_pool_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->backend = CK_BACKEND_AUTO;
    o->release = CK_RELEASE_PRESSURE;
    o->live = 1;
    o->snapshot_signal = SIGUSR2;
    o->prefetch = UINT64_MAX; /* the default lookahead */
}

static int suffix_eq(const char *s, size_t n, const char *want) {
    return strlen(want) == n && strncasecmp(s, want, n) == 0;
}

int ck__parse_size(const char *s, size_t len, uint64_t *out) {
    size_t i = 0;
    while (i < len && isspace((unsigned char)s[i])) i++;
    while (len > i && isspace((unsigned char)s[len - 1])) len--;
    size_t start = i;
    int digits = 0, dot = 0;
    while (i < len && (isdigit((unsigned char)s[i]) || (s[i] == '.' && !dot))) {
        if (s[i] == '.') dot = 1;
        else digits++;
        i++;
    }
    if (digits == 0) return -1;
    char num[64];
    if (i - start >= sizeof num) return -1;
    memcpy(num, s + start, i - start);
    num[i - start] = '\0';
    const char *suf = s + i;
    size_t sn = len - i;
    double mult;
    if (sn == 0 || suffix_eq(suf, sn, "B")) mult = 1;
    else if (suffix_eq(suf, sn, "K") || suffix_eq(suf, sn, "KiB")) mult = 0x1p10;
    else if (suffix_eq(suf, sn, "M") || suffix_eq(suf, sn, "MiB")) mult = 0x1p20;
    else if (suffix_eq(suf, sn, "G") || suffix_eq(suf, sn, "GiB")) mult = 0x1p30;
    else if (suffix_eq(suf, sn, "T") || suffix_eq(suf, sn, "TiB")) mult = 0x1p40;
    else if (suffix_eq(suf, sn, "KB")) mult = 1e3;
    else if (suffix_eq(suf, sn, "MB")) mult = 1e6;
    else if (suffix_eq(suf, sn, "GB")) mult = 1e9;
    else if (suffix_eq(suf, sn, "TB")) mult = 1e12;
    else return -1;
    if (!dot) {
        errno = 0;
        unsigned long long v = strtoull(num, NULL, 10);
        if (errno == ERANGE) return -1;
        if (mult != 1 && v > (unsigned long long)(UINT64_MAX / (uint64_t)mult)) return -1;
        *out = (uint64_t)v * (uint64_t)mult;
        return 0;
    }
    double v = strtod(num, NULL) * mult;
    if (!isfinite(v) || v >= 0x1p64) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Strings from the config: a parse writes into scratch and copies to
 * committed only when the whole string parsed, so a failed parse leaves what
 * an earlier one returned intact. Valid until the next parse on this thread. */
static _Thread_local char tl_trace_scratch[4096];
static _Thread_local char tl_trace_path[4096];
static _Thread_local char tl_snap_scratch[4096];
static _Thread_local char tl_policy_scratch[4096];
static _Thread_local char tl_snap_path[4096];

typedef ck_status (*key_parser)(ck_pool_options *o, const char *key, const char *v, size_t n);

static ck_status bad(const char *key, const char *v, size_t n, const char *want) {
    return ck__err(CK_ERR_INVALID, "config key '%s': bad value '%.*s' (expected %s)", key,
                   (int)n, v, want);
}

static ck_status parse_u64(const char *key, const char *v, size_t n, uint64_t *out) {
    char buf[32];
    if (n == 0 || n >= sizeof buf) return bad(key, v, n, "a non-negative integer");
    memcpy(buf, v, n);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)buf[i])) return bad(key, v, n, "a non-negative integer");
    errno = 0;
    unsigned long long x = strtoull(buf, NULL, 10);
    if (errno == ERANGE) return bad(key, v, n, "a non-negative integer that fits in 64 bits");
    *out = x;
    return CK_OK;
}

static ck_status p_backend(ck_pool_options *o, const char *key, const char *v, size_t n) {
    if (suffix_eq(v, n, "auto")) o->backend = CK_BACKEND_AUTO;
    else if (suffix_eq(v, n, "host")) o->backend = CK_BACKEND_HOST;
    else if (suffix_eq(v, n, "cuda")) o->backend = CK_BACKEND_CUDA;
    else return bad(key, v, n, "auto, host or cuda");
    return CK_OK;
}

static ck_status p_device(ck_pool_options *o, const char *key, const char *v, size_t n) {
    uint64_t d;
    ck_status s = parse_u64(key, v, n, &d);
    if (s != CK_OK) return s;
    if (d > 1023) return bad(key, v, n, "a device ordinal below 1024");
    o->device = (int)d;
    return CK_OK;
}

static ck_status size_into(const char *key, const char *v, size_t n, uint64_t *out, int allow0) {
    uint64_t x = 0;
    if (allow0 && (suffix_eq(v, n, "none") || suffix_eq(v, n, "unlimited"))) x = 0;
    else if (ck__parse_size(v, n, &x) != 0)
        return bad(key, v, n, "a size such as 512M, 20G or 1.5GiB");
    if (!allow0 && x == 0) return bad(key, v, n, "a size of at least one byte (this is 0 bytes)");
    *out = x;
    return CK_OK;
}

/* A percentage "90%" or "12.5%", above 0 and at most 100, as a fraction. */
static int parse_percent(const char *v, size_t n, double *out) {
    while (n && isspace((unsigned char)v[n - 1])) n--;
    if (n < 2 || v[n - 1] != '%') return -1;
    n--;
    while (n && isspace((unsigned char)v[n - 1])) n--;
    char buf[32];
    if (n == 0 || n >= sizeof buf) return -1;
    int digits = 0, dot = 0;
    for (size_t i = 0; i < n; i++) {
        if (isdigit((unsigned char)v[i])) digits++;
        else if (v[i] == '.' && !dot) dot = 1;
        else return -1;
    }
    if (!digits) return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    double x = strtod(buf, NULL);
    if (!(x > 0 && x <= 100)) return -2;
    *out = x / 100;
    return 0;
}

static ck_status p_budget(ck_pool_options *o, const char *k, const char *v, size_t n) {
    const char *want = "a size such as 512M or 20G, a share of device memory such as 90%, or none";
    if (n && memchr(v, '%', n)) {
        double f = 0;
        int r = parse_percent(v, n, &f);
        if (r == -2) return bad(k, v, n, "a percentage above 0% and at most 100%");
        if (r != 0) return bad(k, v, n, want);
        o->budget = 0;
        o->budget_fraction = f;
        return CK_OK;
    }
    uint64_t x = 0;
    if (suffix_eq(v, n, "none") || suffix_eq(v, n, "unlimited")) x = 0;
    else if (ck__parse_size(v, n, &x) != 0) return bad(k, v, n, want);
    else if (x == 0)
        /* "0" or "0.1" (a tenth of a byte): no cap is spelled none. */
        return ck__err(CK_ERR_INVALID,
                       "config key '%s': bad value '%.*s' (that is 0 bytes; expected a size of at "
                       "least one byte such as 512M, a share of device memory such as 90%%, or "
                       "none for no cap)",
                       k, (int)n, v);
    o->budget = x;
    o->budget_fraction = 0;
    return CK_OK;
}
static ck_status p_va(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return size_into(k, v, n, &o->va_size, 0);
}
static ck_status p_host_mem(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return size_into(k, v, n, &o->host_mem, 0);
}

static ck_status p_chunk_align(ck_pool_options *o, const char *k, const char *v, size_t n) {
    if (suffix_eq(v, n, "auto")) o->chunk_align = 0;
    else if (suffix_eq(v, n, "off")) o->chunk_align = UINT64_MAX;
    else return size_into(k, v, n, &o->chunk_align, 0);
    return CK_OK;
}

static ck_status p_release(ck_pool_options *o, const char *key, const char *v, size_t n) {
    if (suffix_eq(v, n, "pressure")) o->release = CK_RELEASE_PRESSURE;
    else if (suffix_eq(v, n, "eager")) o->release = CK_RELEASE_EAGER;
    else return bad(key, v, n, "pressure or eager");
    return CK_OK;
}

static ck_status path_into(const char *key, const char *v, size_t n, char *scratch,
                           const char **out) {
    if (n == 0) return bad(key, v, n, "a file path");
    if (n >= 4096) return bad(key, v, n, "a path shorter than 4096 bytes");
    memcpy(scratch, v, n);
    scratch[n] = '\0';
    *out = scratch;
    return CK_OK;
}
static ck_status p_trace(ck_pool_options *o, const char *key, const char *v, size_t n) {
    return path_into(key, v, n, tl_trace_scratch, &o->trace_path);
}
static ck_status p_snapshot(ck_pool_options *o, const char *key, const char *v, size_t n) {
    return path_into(key, v, n, tl_snap_scratch, &o->snapshot_path);
}
static ck_status p_policy(ck_pool_options *o, const char *key, const char *v, size_t n) {
    return path_into(key, v, n, tl_policy_scratch, &o->policy_path);
}

static ck_status bool_into(const char *key, const char *v, size_t n, int *out) {
    if (suffix_eq(v, n, "1") || suffix_eq(v, n, "true") || suffix_eq(v, n, "on")) *out = 1;
    else if (suffix_eq(v, n, "0") || suffix_eq(v, n, "false") || suffix_eq(v, n, "off")) *out = 0;
    else return bad(key, v, n, "0 or 1");
    return CK_OK;
}
static ck_status p_live(ck_pool_options *o, const char *key, const char *v, size_t n) {
    return bool_into(key, v, n, &o->live);
}

int ck__snapshot_signal_ok(int sig) {
    if (sig < 1 || sig > 64) return 0;
    switch (sig) {
    case SIGSEGV: case SIGBUS: case SIGFPE: case SIGILL: case SIGTRAP: case SIGSYS:
    case SIGKILL: case SIGSTOP: return 0;
    default: return 1;
    }
}

static ck_status p_snap_sig(ck_pool_options *o, const char *key, const char *v, size_t n) {
    const char *want = "USR1, USR2, none or a signal number 1..64 other than the fault signals "
                       "SEGV, BUS, FPE, ILL, TRAP, SYS and the uncatchable KILL, STOP";
    if (n > 3 && strncmp(v, "SIG", 3) == 0) v += 3, n -= 3;
    if (suffix_eq(v, n, "USR1")) o->snapshot_signal = SIGUSR1;
    else if (suffix_eq(v, n, "USR2")) o->snapshot_signal = SIGUSR2;
    else if (suffix_eq(v, n, "none") || suffix_eq(v, n, "0")) o->snapshot_signal = 0;
    else {
        uint64_t x;
        if (parse_u64(key, v, n, &x) != CK_OK || !ck__snapshot_signal_ok((int)x))
            return bad(key, v, n, want);
        o->snapshot_signal = (int)x;
    }
    return CK_OK;
}

static ck_status p_fault_create(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return parse_u64(k, v, n, &o->fault_create);
}
static ck_status p_fault_map(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return parse_u64(k, v, n, &o->fault_map);
}
static ck_status p_fault_copy(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return parse_u64(k, v, n, &o->fault_copy);
}
static ck_status p_fault_unmap(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return parse_u64(k, v, n, &o->fault_unmap);
}
static ck_status p_fault_release(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return parse_u64(k, v, n, &o->fault_release);
}

static ck_status p_fault_event(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return parse_u64(k, v, n, &o->fault_event);
}

static ck_status p_host_budget(ck_pool_options *o, const char *k, const char *v, size_t n) {
    return size_into(k, v, n, &o->host_budget, 0);
}
static ck_status p_prefetch(ck_pool_options *o, const char *k, const char *v, size_t n) {
    if (suffix_eq(v, n, "off") || suffix_eq(v, n, "0")) {
        o->prefetch = 0;
        return CK_OK;
    }
    return size_into(k, v, n, &o->prefetch, 0);
}
static ck_status p_host_alloc(ck_pool_options *o, const char *key, const char *v, size_t n) {
    if (suffix_eq(v, n, "auto")) o->host_alloc = CK_HOST_ALLOC_AUTO;
    else if (suffix_eq(v, n, "jemalloc")) o->host_alloc = CK_HOST_ALLOC_JEMALLOC;
    else if (suffix_eq(v, n, "cache")) o->host_alloc = CK_HOST_ALLOC_CACHE;
    else return bad(key, v, n, "auto, jemalloc or cache");
    return CK_OK;
}
static ck_status p_verify(ck_pool_options *o, const char *key, const char *v, size_t n) {
    return bool_into(key, v, n, &o->verify);
}

static ck_status p_verbose(ck_pool_options *o, const char *key, const char *v, size_t n) {
    return bool_into(key, v, n, &o->verbose);
}

static ck_status p_sim_clock(ck_pool_options *o, const char *key, const char *v, size_t n) {
    return bool_into(key, v, n, &o->sim_clock);
}

static ck_status p_sim_h2d(ck_pool_options *o, const char *key, const char *v, size_t n) {
    uint64_t x = 0;
    ck_status s = size_into(key, v, n, &x, 0);
    if (s == CK_OK) o->sim_h2d = (double)x;
    return s;
}
static ck_status p_sim_d2h(ck_pool_options *o, const char *key, const char *v, size_t n) {
    uint64_t x = 0;
    ck_status s = size_into(key, v, n, &x, 0);
    if (s == CK_OK) o->sim_d2h = (double)x;
    return s;
}
static ck_status p_sim_nodata(ck_pool_options *o, const char *key, const char *v, size_t n) {
    return bool_into(key, v, n, &o->sim_nodata);
}

/* A rate: a plain number (1.5e13) with an optional K, M, G or T (powers of
 * 1000), above 0. */
static ck_status p_sim_flops(ck_pool_options *o, const char *key, const char *v, size_t n) {
    char buf[64];
    while (n && isspace((unsigned char)v[n - 1])) n--;
    while (n && isspace((unsigned char)*v)) v++, n--;
    if (n == 0 || n >= sizeof buf) return bad(key, v, n, "a rate such as 19.5e12 or 19.5T");
    memcpy(buf, v, n);
    buf[n] = 0;
    double mult = 1;
    switch (buf[n - 1]) {
    case 'k': case 'K': mult = 1e3; break;
    case 'M': mult = 1e6; break;
    case 'G': mult = 1e9; break;
    case 'T': mult = 1e12; break;
    default: break;
    }
    if (mult != 1) buf[--n] = 0;
    char *end = NULL;
    double x = n ? strtod(buf, &end) : 0;
    if (!end || end == buf || *end || !(x > 0) || x * mult > 1e30)
        return bad(key, v, n + (mult != 1), "a rate above 0 such as 19.5e12 or 19.5T");
    o->sim_flops = x * mult;
    return CK_OK;
}

static ck_status p_sim_bw(ck_pool_options *o, const char *key, const char *v, size_t n) {
    uint64_t x = 0;
    ck_status s = size_into(key, v, n, &x, 0);
    if (s != CK_OK) return s;
    o->sim_bandwidth = (double)x;
    return CK_OK;
}

static const struct {
    const char *key;
    key_parser parse;
} keys[] = {
    {"backend", p_backend},         {"device", p_device},
    {"budget", p_budget},           {"va", p_va},
    {"release", p_release},         {"trace", p_trace},
    {"host_mem", p_host_mem},       {"fault_create", p_fault_create},
    {"fault_map", p_fault_map},     {"fault_copy", p_fault_copy},
    {"sim_clock", p_sim_clock},     {"sim_bandwidth", p_sim_bw},
    {"live", p_live},               {"snapshot", p_snapshot},
    {"snapshot_signal", p_snap_sig}, {"verbose", p_verbose},
    {"chunk_align", p_chunk_align}, {"fault_unmap", p_fault_unmap},
    {"fault_release", p_fault_release}, {"host_budget", p_host_budget},
    {"prefetch", p_prefetch},       {"verify", p_verify},
    {"host_alloc", p_host_alloc},   {"sim_h2d", p_sim_h2d},
    {"sim_d2h", p_sim_d2h},         {"sim_nodata", p_sim_nodata},
    {"sim_flops", p_sim_flops},     {"fault_event", p_fault_event},
    {"policy", p_policy},
};

CK_API ck_status ck_options_parse(ck_pool_options *opts, const char *conf) {
    if (!opts) return ck__err(CK_ERR_INVALID, "ck_options_parse: opts is NULL");
    if (!conf) return CK_OK;
    ck_pool_options o = *opts; /* commit only if every item parses */
    const char *p = conf;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (a < b) {
            const char *eq = memchr(a, '=', (size_t)(b - a));
            if (!eq)
                return ck__err(CK_ERR_INVALID, "config item '%.*s' has no '=' (expected key=value)",
                               (int)(b - a), a);
            const char *ke = eq;
            while (ke > a && isspace((unsigned char)ke[-1])) ke--;
            const char *v = eq + 1;
            while (v < b && isspace((unsigned char)*v)) v++;
            size_t kn = (size_t)(ke - a);
            size_t i;
            for (i = 0; i < sizeof keys / sizeof keys[0]; i++)
                if (strlen(keys[i].key) == kn && strncmp(keys[i].key, a, kn) == 0) break;
            if (i == sizeof keys / sizeof keys[0])
                return ck__err(CK_ERR_INVALID,
                               "config key '%.*s' is unknown (known: backend, device, budget, va, "
                               "release, trace, host_mem, fault_create, fault_map, fault_copy, "
                               "fault_unmap, fault_release, "
                               "sim_clock, sim_bandwidth, live, snapshot, snapshot_signal, verbose, "
                               "chunk_align, host_budget, host_alloc, prefetch, verify, sim_h2d, sim_d2h, "
                               "sim_nodata, sim_flops, fault_event, policy)",
                               (int)kn, a);
            ck_status s = keys[i].parse(&o, keys[i].key, v, (size_t)(b - v));
            if (s != CK_OK) return s;
        }
        p = *end ? end + 1 : end;
    }
    if (o.trace_path == tl_trace_scratch) {
        memcpy(tl_trace_path, tl_trace_scratch, sizeof tl_trace_path);
        o.trace_path = tl_trace_path;
    }
    if (o.snapshot_path == tl_snap_scratch) {
        memcpy(tl_snap_path, tl_snap_scratch, sizeof tl_snap_path);
        o.snapshot_path = tl_snap_path;
    }
    *opts = o;
    return CK_OK;
}

CK_API ck_status ck_pool_create_conf(ck_pool **out, const char *conf) {
    if (!out) return ck__err(CK_ERR_INVALID, "ck_pool_create_conf: out is NULL");
    ck_pool_options o;
    ck_pool_options_init(&o);
    if (!conf) conf = getenv("CKALLOC_CONF");
    ck_status s = ck_options_parse(&o, conf);
    if (s != CK_OK) return s;
    return ck_pool_create(out, &o);
}
