/* Statistics: ck_get_stats (struct_size prefixes), ck_reset_peak_stats,
 * peaks, and ck_print_stats as a table and as JSON (parsed here with a small
 * strict JSON reader, so no extra dependency). */
#include "testutil.h"

#include "ckalloc/ckalloc.h"

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Some live blocks, some freed, some cached: every counter gets a value. */
static void workload(ck_pool *p, void **keep, int nkeep) {
    void *tmp[16];
    for (int i = 0; i < 16; i++)
        ASSERT_OK(ck_malloc(p, &tmp[i], (i % 4 == 0 ? 3 * MiB + 5 : (size_t)(i + 1) * 3000), NULL));
    for (int i = 0; i < nkeep; i++) ASSERT_OK(ck_malloc(p, &keep[i], (size_t)(i + 1) * 5000 + 1, NULL));
    for (int i = 0; i < 16; i += 2) ASSERT_OK(ck_free(p, tmp[i], NULL));
    for (int i = 1; i < 16; i += 2) ASSERT_OK(ck_free(p, tmp[i], NULL));
}

static char *print_to_string(ck_pool *p, ck_format fmt) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    ASSERT_OK(ck_print_stats(p, f, fmt));
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_ptr_nonnull(buf);
    return buf;
}

/* ---- a small strict JSON reader -------------------------------------------- */

typedef struct jv jv;
typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_OBJ, J_ARR } jkind;
struct jv {
    jkind kind;
    double num;
    char *str;      /* J_STR */
    char numtext[64];
    char **keys;    /* J_OBJ */
    jv **vals;      /* J_OBJ and J_ARR */
    size_t n;
};

typedef struct jp {
    const char *s;
    const char *err;
} jp;

static void jws(jp *p) {
    while (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r') p->s++;
}

static jv *jnew(jkind k) {
    jv *v = calloc(1, sizeof *v);
    ck_assert_ptr_nonnull(v);
    v->kind = k;
    return v;
}

static void jfree(jv *v) {
    if (!v) return;
    for (size_t i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        jfree(v->vals[i]);
    }
    free(v->keys);
    free(v->vals);
    free(v->str);
    free(v);
}

static jv *jparse_value(jp *p, int depth);

static char *jparse_string(jp *p) {
    if (*p->s != '"') {
        p->err = "expected a string";
        return NULL;
    }
    p->s++;
    size_t cap = 16, n = 0;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    for (;;) {
        unsigned char c = (unsigned char)*p->s;
        if (c == '\0' || c < 0x20) {
            p->err = "unterminated string or raw control character";
            free(out);
            return NULL;
        }
        p->s++;
        if (c == '"') break;
        if (c == '\\') {
            char e = *p->s++;
            switch (e) {
            case '"': case '\\': case '/': c = (unsigned char)e; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u':
                for (int i = 0; i < 4; i++)
                    if (!isxdigit((unsigned char)*p->s++)) {
                        p->err = "bad \\u escape";
                        free(out);
                        return NULL;
                    }
                c = '?';
                break;
            default:
                p->err = "bad escape";
                free(out);
                return NULL;
            }
        }
        if (n + 2 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            ck_assert_ptr_nonnull(out);
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return out;
}

static jv *jparse_number(jp *p) {
    const char *start = p->s;
    if (*p->s == '-') p->s++;
    if (*p->s == '0') p->s++;
    else if (*p->s >= '1' && *p->s <= '9') while (isdigit((unsigned char)*p->s)) p->s++;
    else {
        p->err = "bad number";
        return NULL;
    }
    if (*p->s == '.') {
        p->s++;
        if (!isdigit((unsigned char)*p->s)) {
            p->err = "bad fraction";
            return NULL;
        }
        while (isdigit((unsigned char)*p->s)) p->s++;
    }
    if (*p->s == 'e' || *p->s == 'E') {
        p->s++;
        if (*p->s == '+' || *p->s == '-') p->s++;
        if (!isdigit((unsigned char)*p->s)) {
            p->err = "bad exponent";
            return NULL;
        }
        while (isdigit((unsigned char)*p->s)) p->s++;
    }
    jv *v = jnew(J_NUM);
    size_t len = (size_t)(p->s - start);
    if (len >= sizeof v->numtext) len = sizeof v->numtext - 1;
    memcpy(v->numtext, start, len);
    v->numtext[len] = '\0';
    v->num = strtod(v->numtext, NULL);
    return v;
}

static void jpush(jv *v, char *key, jv *val) {
    v->vals = realloc(v->vals, (v->n + 1) * sizeof *v->vals);
    ck_assert_ptr_nonnull(v->vals);
    if (v->kind == J_OBJ) {
        v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
        ck_assert_ptr_nonnull(v->keys);
        v->keys[v->n] = key;
    }
    v->vals[v->n++] = val;
}

static jv *jparse_value(jp *p, int depth) {
    if (depth > 32) {
        p->err = "too deep";
        return NULL;
    }
    jws(p);
    char c = *p->s;
    if (c == '{' || c == '[') {
        int obj = c == '{';
        jv *v = jnew(obj ? J_OBJ : J_ARR);
        p->s++;
        jws(p);
        if (*p->s == (obj ? '}' : ']')) {
            p->s++;
            return v;
        }
        for (;;) {
            char *key = NULL;
            jws(p);
            if (obj) {
                key = jparse_string(p);
                if (!key) break;
                for (size_t i = 0; i < v->n; i++)
                    if (strcmp(v->keys[i], key) == 0) {
                        p->err = "duplicate key";
                        free(key);
                        jfree(v);
                        return NULL;
                    }
                jws(p);
                if (*p->s != ':') {
                    p->err = "expected ':'";
                    free(key);
                    break;
                }
                p->s++;
            }
            jv *item = jparse_value(p, depth + 1);
            if (!item) {
                free(key);
                break;
            }
            jpush(v, key, item);
            jws(p);
            if (*p->s == ',') {
                p->s++;
                continue;
            }
            if (*p->s == (obj ? '}' : ']')) {
                p->s++;
                return v;
            }
            p->err = "expected ',' or a closing bracket";
            break;
        }
        jfree(v);
        return NULL;
    }
    if (c == '"') {
        char *s = jparse_string(p);
        if (!s) return NULL;
        jv *v = jnew(J_STR);
        v->str = s;
        return v;
    }
    if (strncmp(p->s, "true", 4) == 0 || strncmp(p->s, "false", 5) == 0) {
        p->s += c == 't' ? 4 : 5;
        return jnew(J_BOOL);
    }
    if (strncmp(p->s, "null", 4) == 0) {
        p->s += 4;
        return jnew(J_NULL);
    }
    return jparse_number(p);
}

/* The whole text must be exactly one JSON value (plus whitespace). */
static jv *jparse(const char *text) {
    jp p = {text, NULL};
    jv *v = jparse_value(&p, 0);
    ck_assert_msg(v != NULL, "invalid JSON (%s) at offset %td in: %s", p.err ? p.err : "?",
                  p.s - text, text);
    jws(&p);
    ck_assert_msg(*p.s == '\0', "trailing text after the JSON value: '%s'", p.s);
    return v;
}

static const jv *jget(const jv *obj, const char *key) {
    ck_assert_int_eq(obj->kind, J_OBJ);
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return obj->vals[i];
    return NULL;
}

/* An integer member: must be written as an integer and fit exactly. */
static long long jint(const jv *obj, const char *key) {
    const jv *v = jget(obj, key);
    ck_assert_msg(v != NULL, "JSON lacks '%s'", key);
    ck_assert_msg(v->kind == J_NUM, "JSON '%s' is not a number", key);
    ck_assert_msg(strpbrk(v->numtext, ".eE") == NULL, "JSON '%s' is %s, not an integer", key,
                  v->numtext);
    return strtoll(v->numtext, NULL, 10);
}

static void check_stat(const jv *root, const char *name, const ck_stat *s) {
    const jv *o = jget(root, name);
    ck_assert_msg(o != NULL && o->kind == J_OBJ, "JSON lacks the object '%s'", name);
    ck_assert_int_eq(jint(o, "current"), s->current);
    ck_assert_int_eq(jint(o, "peak"), s->peak);
    ck_assert_uint_eq((uint64_t)jint(o, "allocated"), s->allocated);
    ck_assert_uint_eq((uint64_t)jint(o, "freed"), s->freed);
}

/* ---- names shared by the table and JSON checks --------------------------------- */

#define STAT_FIELDS(X)                                                                         \
    X(allocation) X(segment) X(active) X(inactive_split) X(allocated_bytes) X(reserved_bytes)  \
        X(active_bytes) X(inactive_split_bytes) X(requested_bytes) X(mapped_bytes)             \
            X(physical_bytes)
#define COUNT_FIELDS(X)                                                                        \
    X(num_alloc_retries) X(num_ooms) X(num_map_calls) X(num_unmap_calls) X(num_create_calls)   \
        X(num_release_calls) X(largest_free)

static const char *const all_names[] = {
#define NAME(f) #f,
    STAT_FIELDS(NAME) COUNT_FIELDS(NAME)
#undef NAME
};

/* ---- tests ------------------------------------------------------------------ */

START_TEST(t_table_names) {
    ck_pool *p = host_pool("budget=512M");
    void *keep[4];
    workload(p, keep, 4);
    char *t = print_to_string(p, CK_FORMAT_TABLE);
    for (size_t i = 0; i < sizeof all_names / sizeof *all_names; i++) {
        /* The name must appear as a row label: at the start of a line. */
        char needle[64];
        snprintf(needle, sizeof needle, "\n%s ", all_names[i]);
        ck_assert_msg(strstr(t, needle) != NULL, "table lacks a row '%s':\n%s", all_names[i], t);
    }
    ck_assert_ptr_nonnull(strstr(t, "budget"));
    ck_assert_ptr_nonnull(strstr(t, "host"));
    ck_assert_ptr_nonnull(strstr(t, ck_version()));
    ck_assert_ptr_nonnull(strstr(t, "512.00 MiB"));
    /* The two ratios, under their one name each (alloc/ratios.h). */
    ck_assert_ptr_nonnull(strstr(t, "\nfragmentation "));
    ck_assert_ptr_nonnull(strstr(t, "\npeak_overhead "));
    /* The live allocations count (4) is printed in the allocation row. */
    char *row = strstr(t, "\nallocation ");
    ck_assert_ptr_nonnull(row);
    long v = strtol(row + strlen("\nallocation "), NULL, 10);
    ck_assert_int_eq(v, 4);
    free(t);
    for (int i = 0; i < 4; i++) ASSERT_OK(ck_free(p, keep[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_json_matches_get_stats) {
    ck_pool *p = host_pool("budget=1G");
    void *keep[5];
    workload(p, keep, 5);
    void *x;
    ck_assert_int_eq(ck_malloc(p, &x, 2 * (size_t)1 << 30, NULL), CK_ERR_NOMEM); /* num_ooms */
    ck_stats st = stats_of(p);
    char *j = print_to_string(p, CK_FORMAT_JSON);
    ck_assert_msg(strchr(j, '\n') == strrchr(j, '\n') && j[strlen(j) - 1] == '\n',
                  "JSON output is not one line: %s", j);
    jv *root = jparse(j);
    ck_assert_int_eq(root->kind, J_OBJ);
#define CHECK_STAT(f) check_stat(root, #f, &st.f);
    STAT_FIELDS(CHECK_STAT)
#undef CHECK_STAT
#define CHECK_COUNT(f) ck_assert_uint_eq((uint64_t)jint(root, #f), (uint64_t)st.f);
    COUNT_FIELDS(CHECK_COUNT)
#undef CHECK_COUNT
    ck_assert_uint_eq((uint64_t)jint(root, "budget"), st.budget);
    ck_assert_uint_eq(st.budget, (uint64_t)1 << 30);
    ck_assert_uint_eq(st.num_ooms, 1);
    const jv *ver = jget(root, "version");
    ck_assert_msg(ver && ver->kind == J_STR, "JSON lacks a version string");
    ck_assert_str_eq(ver->str, ck_version());
    const jv *be = jget(root, "backend");
    ck_assert_msg(be && be->kind == J_STR, "JSON lacks a backend string");
    ck_assert_str_eq(be->str, "host");
    /* The two ratios, one definition each (alloc/ratios.h, README "Stats"). */
    const jv *frag = jget(root, "fragmentation");
    ck_assert_msg(frag && frag->kind == J_NUM, "JSON lacks fragmentation");
    double want_frag = 1.0 - (double)st.allocated_bytes.current / (double)st.reserved_bytes.current;
    ck_assert_msg(st.allocated_bytes.current < st.reserved_bytes.current,
                  "the pattern must leave cached bytes for the check to mean something");
    ck_assert_msg(fabs(frag->num - want_frag) < 1e-4, "fragmentation %g, expected %g", frag->num,
                  want_frag);
    const jv *over = jget(root, "peak_overhead");
    ck_assert_msg(over && over->kind == J_NUM, "JSON lacks peak_overhead");
    double want_over = (double)st.physical_bytes.peak / (double)st.requested_bytes.peak;
    ck_assert_msg(fabs(over->num - want_over) < 1e-4, "peak_overhead %g, expected %g", over->num,
                  want_over);
    ck_assert(over->num >= 1.0);
    jfree(root);
    free(j);
    for (int i = 0; i < 5; i++) ASSERT_OK(ck_free(p, keep[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_json_parser_rejects) {
    /* The reader above must be strict, or the previous test proves little. */
    static const char *bad[] = {"{\"a\":1,}", "{\"a\" 1}", "{\"a\":01}", "{\"a\":1}}",
                                "{\"a\":1,\"a\":2}", "{\"a\":.5}", "{a:1}", "[1,2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        jp p = {bad[i], NULL};
        jv *v = jparse_value(&p, 0);
        if (v) jws(&p);
        int ok = v != NULL && *p.s == '\0';
        jfree(v);
        ck_assert_msg(!ok, "the JSON reader accepted '%s'", bad[i]);
    }
    jv *v = jparse("{\"a\":{\"b\":[1,-2.5e3,\"x\\n\"]},\"c\":true,\"d\":null}");
    ck_assert_int_eq(jget(v, "a")->kind, J_OBJ);
    ck_assert_int_eq(jget(v, "c")->kind, J_BOOL);
    ck_assert_ptr_null(jget(v, "e"));
    jfree(v);
}
END_TEST

START_TEST(t_print_empty_pool) {
    ck_pool *p = host_pool(NULL);
    char *j = print_to_string(p, CK_FORMAT_JSON);
    jv *root = jparse(j);
    ck_stats st = stats_of(p);
    check_stat(root, "allocated_bytes", &st.allocated_bytes);
    ck_assert_int_eq(jint(jget(root, "allocation"), "current"), 0);
    jfree(root);
    free(j);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_reset_peak) {
    ck_pool *p = host_pool(NULL);
    void *big[3];
    for (int i = 0; i < 3; i++) ASSERT_OK(ck_malloc(p, &big[i], 8 * MiB, NULL));
    void *small[10];
    for (int i = 0; i < 10; i++) ASSERT_OK(ck_malloc(p, &small[i], 10 * KiB, NULL));
    for (int i = 0; i < 3; i++) ASSERT_OK(ck_free(p, big[i], NULL));
    ck_stats s0 = stats_of(p);
    ck_assert_int_eq(s0.allocated_bytes.peak, 3 * 8 * MiB + 10 * 10 * KiB);
    ck_assert_int_eq(s0.allocation.peak, 13);
    ck_assert_int_lt(s0.allocated_bytes.current, s0.allocated_bytes.peak);
    ASSERT_OK(ck_reset_peak_stats(p));
    ck_stats s1 = stats_of(p);
#define PEAK_IS_CURRENT(f)                                                                     \
    ck_assert_msg(s1.f.peak == s1.f.current, #f ": peak %lld != current %lld after reset",     \
                  (long long)s1.f.peak, (long long)s1.f.current);                              \
    ck_assert_uint_eq(s1.f.allocated, s0.f.allocated);                                         \
    ck_assert_uint_eq(s1.f.freed, s0.f.freed);                                                 \
    ck_assert_int_eq(s1.f.current, s0.f.current);
    STAT_FIELDS(PEAK_IS_CURRENT)
#undef PEAK_IS_CURRENT
    /* Peaks track new maxima from there. */
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 5 * MiB, NULL));
    ck_stats s2 = stats_of(p);
    ck_assert_int_eq(s2.allocated_bytes.peak, s1.allocated_bytes.current + 5 * MiB);
    ck_assert_int_eq(s2.allocation.peak, 11);
    ASSERT_OK(ck_free(p, x, NULL));
    ck_stats s3 = stats_of(p);
    ck_assert_int_eq(s3.allocated_bytes.peak, s2.allocated_bytes.peak);
    ck_assert_int_eq(s3.allocated_bytes.current, s1.allocated_bytes.current);
    for (int i = 0; i < 10; i++) ASSERT_OK(ck_free(p, small[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_peaks_track_maxima) {
    ck_pool *p = host_pool(NULL);
    /* A random walk; track the maxima of what we know is live. */
    enum { SLOTS = 40, STEPS = 3000 };
    void *ptr[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    int64_t live_round = 0, live_req = 0, live_n = 0;
    int64_t max_round = 0, max_req = 0, max_n = 0;
    uint64_t total_round = 0;
    uint32_t rng = 12345;
    for (int k = 0; k < STEPS; k++) {
        rng = rng * 1664525u + 1013904223u;
        int slot = (int)((rng >> 8) % SLOTS);
        if (ptr[slot]) {
            ASSERT_OK(ck_free(p, ptr[slot], NULL));
            live_round -= (int64_t)((size[slot] + 511) / 512 * 512);
            live_req -= (int64_t)size[slot];
            live_n--;
            ptr[slot] = NULL;
        } else {
            rng = rng * 1664525u + 1013904223u;
            size_t n = (rng >> 7) % 8 == 0 ? 1 + (rng >> 3) % (6 * MiB) : 1 + (rng >> 5) % (200 * KiB);
            ASSERT_OK(ck_malloc(p, &ptr[slot], n, NULL));
            size[slot] = n;
            live_round += (int64_t)((n + 511) / 512 * 512);
            total_round += (n + 511) / 512 * 512;
            live_req += (int64_t)n;
            live_n++;
        }
        if (live_round > max_round) max_round = live_round;
        if (live_req > max_req) max_req = live_req;
        if (live_n > max_n) max_n = live_n;
    }
    ck_stats s = stats_of(p);
    ck_assert_int_eq(s.allocated_bytes.current, live_round);
    ck_assert_int_eq(s.allocated_bytes.peak, max_round);
    ck_assert_int_eq(s.requested_bytes.peak, max_req);
    ck_assert_int_eq(s.allocation.peak, max_n);
    ck_assert_uint_eq(s.allocated_bytes.allocated, total_round);
    ck_assert_uint_eq(s.allocated_bytes.allocated - s.allocated_bytes.freed,
                      (uint64_t)s.allocated_bytes.current);
    /* Physical memory is never below what was live at the worst moment. */
    ck_assert_int_ge(s.physical_bytes.peak, s.allocated_bytes.peak);
    ck_assert_int_ge(s.mapped_bytes.peak, s.allocated_bytes.peak);
    ck_assert_int_ge(s.reserved_bytes.peak, s.allocated_bytes.peak);
    ck_assert_int_ge(s.active_bytes.peak, s.allocated_bytes.peak);
    ck_assert_int_ge(s.physical_bytes.current, s.allocated_bytes.current);
    ck_assert_int_ge(s.allocated_bytes.peak, s.requested_bytes.peak);
    ck_assert_uint_le(s.largest_free, (uint64_t)s.mapped_bytes.current);
    for (int i = 0; i < SLOTS; i++)
        if (ptr[i]) ASSERT_OK(ck_free(p, ptr[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_struct_size_prefix) {
    ck_pool *p = host_pool("budget=256M");
    void *keep[3];
    workload(p, keep, 3);
    ck_stats full = stats_of(p);
    ck_assert_uint_eq(full.struct_size, sizeof full);

    static const size_t sizes[] = {offsetof(ck_stats, num_alloc_retries),
                                   offsetof(ck_stats, segment), offsetof(ck_stats, budget),
                                   sizeof(size_t)};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        unsigned char raw[sizeof(ck_stats) + 64];
        memset(raw, 0xCD, sizeof raw);
        ck_stats *st = (ck_stats *)(void *)raw;
        st->struct_size = sizes[k];
        ASSERT_OK(ck_get_stats(p, st));
        ck_assert_uint_eq(st->struct_size, sizes[k]);
        /* The prefix after struct_size is the full answer's. */
        ck_assert_int_eq(memcmp(raw + sizeof(size_t), (unsigned char *)&full + sizeof(size_t),
                                sizes[k] - sizeof(size_t)),
                         0);
        for (size_t i = sizes[k]; i < sizeof raw; i++)
            ck_assert_msg(raw[i] == 0xCD, "struct_size %zu: byte %zu was written", sizes[k], i);
    }

    ck_stats st;
    memset(&st, 0xCD, sizeof st);
    st.struct_size = 0;
    ck_assert_int_eq(ck_get_stats(p, &st), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "struct_size"));
    st.struct_size = sizeof st + 1;
    ck_assert_int_eq(ck_get_stats(p, &st), CK_ERR_INVALID);
    unsigned char *b = (unsigned char *)&st;
    for (size_t i = sizeof(size_t); i < sizeof st; i++) ck_assert_uint_eq(b[i], 0xCD);
    for (int i = 0; i < 3; i++) ASSERT_OK(ck_free(p, keep[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* inactive_split: free space inside small pages that also hold live blocks. */
START_TEST(t_inactive_split) {
    ck_pool *p = host_pool(NULL);
    void *a, *b, *c;
    ASSERT_OK(ck_malloc(p, &a, 64 * KiB, NULL));
    ASSERT_OK(ck_malloc(p, &b, 64 * KiB, NULL));
    ASSERT_OK(ck_malloc(p, &c, 64 * KiB, NULL));
    ck_stats s = stats_of(p);
    /* One 2 MiB page: three live blocks and one free tail. */
    ck_assert_int_eq(s.inactive_split_bytes.current, 2 * MiB - 3 * 64 * KiB);
    ck_assert_int_eq(s.inactive_split.current, 1);
    ASSERT_OK(ck_free(p, b, NULL)); /* a hole between a and c */
    s = stats_of(p);
    ck_assert_int_eq(s.inactive_split_bytes.current, 2 * MiB - 2 * 64 * KiB);
    ck_assert_int_eq(s.inactive_split.current, 2);
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_free(p, c, NULL));
    s = stats_of(p);
    ASSERT_OK(ck_pool_destroy(p)); /* first, so a failure below leaks nothing */
    /* No page holds a live block now (the pool may keep the empty page
     * cached, but ckalloc.h counts only pages that also hold live blocks). */
    ck_assert_int_eq(s.inactive_split_bytes.current, 0);
    ck_assert_int_eq(s.inactive_split.current, 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("stats");
    TCase *tc = ck_test_tcase(s, "stats", 60);
    tcase_add_test(tc, t_table_names);
    tcase_add_test(tc, t_json_matches_get_stats);
    tcase_add_test(tc, t_json_parser_rejects);
    tcase_add_test(tc, t_print_empty_pool);
    tcase_add_test(tc, t_reset_peak);
    tcase_add_test(tc, t_peaks_track_maxima);
    tcase_add_test(tc, t_struct_size_prefix);
    tcase_add_test(tc, t_inactive_split);
    return ck_test_run(s);
}
