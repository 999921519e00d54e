/* Policy files: the YAML parser (libyaml, loaded at run time) and the rules.
 *
 * libyaml is dlopen'ed (RTLD_LOCAL) the first time a policy is read, as the
 * tier engine loads jemalloc and hwloc: the library links nothing but libc,
 * so LD_PRELOAD under any program adds no dependency, and a program that
 * never reads a policy never loads it. Its headers are used at build time
 * only (libyaml-dev).
 *
 * The whole file is loaded as one libyaml document and walked; every error
 * names the node it is about as FILE:LINE:COLUMN (1-based, libyaml's marks
 * are 0-based) and nothing is applied. */
#include "policy.h"

#include "internal.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- libyaml, loaded at run time ----------------------------------------- */

static struct {
    int (*parser_initialize)(yaml_parser_t *);
    void (*parser_delete)(yaml_parser_t *);
    void (*parser_set_input_string)(yaml_parser_t *, const unsigned char *, size_t);
    int (*parser_load)(yaml_parser_t *, yaml_document_t *);
    yaml_node_t *(*document_get_root_node)(yaml_document_t *);
    yaml_node_t *(*document_get_node)(yaml_document_t *, int);
    void (*document_delete)(yaml_document_t *);
    int ok;
    char err[256];
} Y;

static pthread_once_t y_once = PTHREAD_ONCE_INIT;

static void y_load(void) {
    void *h = dlopen("libyaml-0.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(Y.err, sizeof Y.err, "%s", e ? e : "dlopen failed");
        return;
    }
#define SYM(field, name)                                                                           \
    do {                                                                                           \
        *(void **)&Y.field = dlsym(h, name);                                                       \
        if (!Y.field) {                                                                            \
            snprintf(Y.err, sizeof Y.err, "libyaml-0.so.2 has no %s", name);                      \
            return;                                                                                \
        }                                                                                          \
    } while (0)
    SYM(parser_initialize, "yaml_parser_initialize");
    SYM(parser_delete, "yaml_parser_delete");
    SYM(parser_set_input_string, "yaml_parser_set_input_string");
    SYM(parser_load, "yaml_parser_load");
    SYM(document_get_root_node, "yaml_document_get_root_node");
    SYM(document_get_node, "yaml_document_get_node");
    SYM(document_delete, "yaml_document_delete");
#undef SYM
    Y.ok = 1; /* the handle stays open for the process's life */
}

/* ---- the walk -------------------------------------------------------------- */

typedef struct pctx {
    const char *name;
    yaml_document_t *doc;
} pctx;

static ck_status perr(const pctx *c, const yaml_node_t *n, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ck__err(CK_ERR_INVALID, "%s:%zu:%zu: %s", c->name, n ? n->start_mark.line + 1 : 1,
                   n ? n->start_mark.column + 1 : 1, msg);
}

static const char *kind_name(const yaml_node_t *n) {
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

/* The scalar's text (NUL-terminated by libyaml), or an error naming key. */
static ck_status scalar(const pctx *c, const yaml_node_t *n, const char *key, const char **out) {
    if (n->type != YAML_SCALAR_NODE)
        return perr(c, n, "'%s' must be a single value, not %s", key, kind_name(n));
    *out = (const char *)n->data.scalar.value;
    return CK_OK;
}

static int index_of(const char *const *names, const char *name) {
    for (int i = 0; name && names[i]; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

/* names, NULL-terminated, as "a, b, c" */
static void join(const char *const *names, char *out, size_t n) {
    out[0] = 0;
    for (size_t i = 0; names[i]; i++) {
        size_t l = strlen(out);
        snprintf(out + l, n - l, "%s%s", i ? ", " : "", names[i]);
    }
}

/* A value that must be one of allowed[]; the error lists them after label
 * ("one of", "known"). */
static ck_status one_of(const pctx *c, const yaml_node_t *n, const char *key,
                        const char *const *allowed, const char *label, char *out, size_t outn) {
    const char *v = "";
    ck_status st = scalar(c, n, key, &v);
    if (st != CK_OK) return st;
    if (index_of(allowed, v) >= 0) {
        snprintf(out, outn, "%s", v);
        return CK_OK;
    }
    char list[512];
    join(allowed, list, sizeof list);
    return perr(c, n, "unknown %s '%.60s' (%s: %s)", key, v, label, list);
}

static ck_status size_val(const pctx *c, const yaml_node_t *n, const char *key, int allow0,
                          uint64_t *out) {
    const char *v = "";
    ck_status st = scalar(c, n, key, &v);
    if (st != CK_OK) return st;
    uint64_t x = 0;
    if (allow0 && (strcmp(v, "off") == 0 || strcmp(v, "0") == 0)) {
        *out = 0;
        return CK_OK;
    }
    if (ck__parse_size(v, strlen(v), &x) != 0)
        return perr(c, n, "'%s' must be a size such as 512M, 22G or 1.5GiB, not '%.60s'", key, v);
    if (!allow0 && x == 0) return perr(c, n, "'%s' must be at least one byte", key);
    *out = x;
    return CK_OK;
}

static ck_status int_val(const pctx *c, const yaml_node_t *n, const char *key, uint64_t lo,
                         uint64_t hi, uint64_t *out) {
    const char *v = "";
    ck_status st = scalar(c, n, key, &v);
    if (st != CK_OK) return st;
    int ok = *v != '\0';
    uint64_t x = 0;
    for (const char *s = v; *s && ok; s++) {
        if (!isdigit((unsigned char)*s) || x > (UINT64_MAX - 9) / 10) ok = 0;
        else x = x * 10 + (uint64_t)(*s - '0');
    }
    if (!ok || x < lo || x > hi)
        return perr(c, n, "'%s' must be a whole number from %llu to %llu, not '%.60s'", key,
                    (unsigned long long)lo, (unsigned long long)hi, v);
    *out = x;
    return CK_OK;
}

/* version: 1, the only one */
static ck_status version_val(const pctx *c, const yaml_node_t *v, int *seen) {
    uint64_t x;
    ck_status st = int_val(c, v, "version", 1, 1, &x);
    if (st == CK_OK) *seen = 1;
    return st;
}

static ck_status tier_val(const pctx *c, const yaml_node_t *n, ck_tier *out) {
    static const char *const tiers[] = {"auto", "keep", "offload", "recompute", NULL};
    char t[16];
    ck_status st = one_of(c, n, "tier", tiers, "one of", t, sizeof t);
    if (st != CK_OK) return st;
    for (int i = 0; tiers[i]; i++)
        if (strcmp(t, tiers[i]) == 0) *out = (ck_tier)i; /* the enum's order */
    return CK_OK;
}

/* Walk mapping n: for each pair, fn(key, value). Keys must be scalars and
 * appear once. */
typedef ck_status (*pair_fn)(const pctx *c, const char *key, const yaml_node_t *k,
                             const yaml_node_t *v, void *arg);

static ck_status each_pair(const pctx *c, const yaml_node_t *n, const char *what, pair_fn fn,
                           void *arg) {
    if (n->type != YAML_MAPPING_NODE)
        return perr(c, n, "%s must be a mapping (key: value lines), not %s", what, kind_name(n));
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = Y.document_get_node(c->doc, p->key);
        const yaml_node_t *v = Y.document_get_node(c->doc, p->value);
        if (!k || !v) return perr(c, n, "%s: a broken pair", what);
        if (k->type != YAML_SCALAR_NODE) return perr(c, k, "a key in %s must be a name", what);
        const char *key = (const char *)k->data.scalar.value;
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
            const yaml_node_t *qk = Y.document_get_node(c->doc, q->key);
            if (qk && qk->type == YAML_SCALAR_NODE &&
                strcmp((const char *)qk->data.scalar.value, key) == 0)
                return perr(c, k, "'%.60s' is given twice in %s", key, what);
        }
        ck_status st = fn(c, key, k, v, arg);
        if (st != CK_OK) return st;
    }
    return CK_OK;
}

static ck_status training_pair(const pctx *c, const char *key, const yaml_node_t *k,
                               const yaml_node_t *v, void *arg) {
    ck_policy *pol = arg;
    static const char *const methods[] = {"full", "lora", "qlora", NULL};
    static const char *const dtypes[] = {"bf16", "fp16", "fp32", NULL};
    static const char *const attns[] = {"flash", "eager", NULL};
    static const char *const ckpts[] = {"none", "layer", NULL};
    static const char *const projs[] = {"q", "k", "v", "o", "gate", "up", "down", NULL};
    uint64_t x;
    ck_status st;
    if (strcmp(key, "method") == 0) return one_of(c, v, key, methods, "one of", pol->method, sizeof pol->method);
    if (strcmp(key, "dtype") == 0) return one_of(c, v, key, dtypes, "one of", pol->dtype, sizeof pol->dtype);
    if (strcmp(key, "attention") == 0)
        return one_of(c, v, key, attns, "one of", pol->attention, sizeof pol->attention);
    if (strcmp(key, "checkpointing") == 0)
        return one_of(c, v, key, ckpts, "one of", pol->checkpointing, sizeof pol->checkpointing);
    if (strcmp(key, "rank") == 0) {
        st = int_val(c, v, key, 1, 65536, &x);
        if (st == CK_OK) pol->rank = (uint32_t)x;
        return st;
    }
    if (strcmp(key, "seq") == 0) return int_val(c, v, key, 1, (uint64_t)1 << 24, &pol->seq);
    if (strcmp(key, "batch") == 0) return int_val(c, v, key, 1, 65536, &pol->batch);
    if (strcmp(key, "targets") == 0) {
        if (v->type != YAML_SEQUENCE_NODE)
            return perr(c, v, "'targets' must be a list of projections such as [q, k, v, o]");
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
            const yaml_node_t *e = Y.document_get_node(c->doc, *it);
            char tmp[8];
            if (!e) return perr(c, v, "'targets': a broken item");
            st = one_of(c, e, "target", projs, "one of", tmp, sizeof tmp);
            if (st != CK_OK) return st;
        }
        return CK_OK;
    }
    return perr(c, k, "unknown key '%.60s' in training (method, rank, targets, dtype, seq, "
                      "batch, attention, checkpointing)", key);
}

static ck_status rule_pair(const pctx *c, const char *key, const yaml_node_t *k,
                           const yaml_node_t *v, void *arg) {
    ck_policy_rule *r = arg;
    if (strcmp(key, "match") == 0) {
        const char *g = "";
        ck_status st = scalar(c, v, key, &g);
        if (st != CK_OK) return st;
        if (!*g || strlen(g) >= CK_TAG_MAX)
            return perr(c, v, "'match' must be a glob of 1 to %d characters", CK_TAG_MAX - 1);
        free(r->glob);
        r->glob = strdup(g);
        return r->glob ? CK_OK : ck__err(CK_ERR_NOMEM, "policy: out of host memory");
    }
    if (strcmp(key, "tier") == 0) return tier_val(c, v, &r->tier);
    return perr(c, k, "unknown key '%.60s' in a rule (match, tier)", key);
}

static ck_status rules_val(const pctx *c, const yaml_node_t *v, ck_policy *pol) {
    if (v->type != YAML_SEQUENCE_NODE)
        return perr(c, v, "'rules' must be a list of {match: GLOB, tier: TIER}");
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    pol->rules = calloc(n ? n : 1, sizeof *pol->rules);
    if (!pol->rules) return ck__err(CK_ERR_NOMEM, "policy: out of host memory");
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        const yaml_node_t *e = Y.document_get_node(c->doc, *it);
        if (!e) return perr(c, v, "'rules': a broken item");
        ck_policy_rule *r = &pol->rules[pol->nrules++];
        r->tier = (ck_tier)-1;
        ck_status st = each_pair(c, e, "a rule", rule_pair, r);
        if (st != CK_OK) return st;
        if (!r->glob) return perr(c, e, "a rule needs 'match' (a glob on tag names)");
        if ((int)r->tier < 0) return perr(c, e, "a rule needs 'tier' (auto, keep, offload or recompute)");
    }
    return CK_OK;
}

typedef struct top_seen {
    ck_policy *pol;
    int version;
} top_seen;

static ck_status top_pair(const pctx *c, const char *key, const yaml_node_t *k,
                          const yaml_node_t *v, void *arg) {
    top_seen *ts = arg;
    ck_policy *pol = ts->pol;
    if (strcmp(key, "version") == 0) return version_val(c, v, &ts->version);
    if (strcmp(key, "hardware") == 0)
        return one_of(c, v, "GPU", ck__hardware_names, "known", pol->hardware, sizeof pol->hardware);
    if (strcmp(key, "model") == 0)
        return one_of(c, v, "model", ck__model_names, "known", pol->model, sizeof pol->model);
    if (strcmp(key, "budget") == 0) return size_val(c, v, key, 0, &pol->budget);
    if (strcmp(key, "prefetch") == 0) {
        pol->has_prefetch = 1;
        return size_val(c, v, key, 1, &pol->prefetch);
    }
    if (strcmp(key, "eviction") == 0) {
        static const char *const orders[] = {"deepest", "largest", NULL};
        char o[16];
        ck_status st = one_of(c, v, key, orders, "one of", o, sizeof o);
        if (st == CK_OK) pol->eviction = strcmp(o, "largest") == 0 ? CK_EVICT_LARGEST : CK_EVICT_DEEPEST;
        return st;
    }
    if (strcmp(key, "training") == 0) return each_pair(c, v, "training", training_pair, pol);
    if (strcmp(key, "rules") == 0) {
        if (pol->rules) return perr(c, k, "'rules' is given twice");
        return rules_val(c, v, pol);
    }
    return perr(c, k, "unknown key '%.60s' (version, hardware, budget, model, training, prefetch, "
                      "eviction, rules)", key);
}

void ck__policy_free(ck_policy *pol) {
    if (!pol) return;
    for (size_t i = 0; i < pol->nrules; i++) free(pol->rules[i].glob);
    free(pol->rules);
    free(pol);
}

/* Load text as one YAML document and walk its root mapping with fn(arg);
 * what: "a policy", "a hardware profile", ... */
static ck_status walk_doc(const char *text, size_t len, const char *name, const char *what,
                          pair_fn fn, void *arg, int *version) {
    if (!text && len) return ck__err(CK_ERR_INVALID, "%s: text is NULL", name);
    pthread_once(&y_once, y_load);
    if (!Y.ok)
        return ck__err(CK_ERR_BACKEND, "%s: cannot load libyaml (install libyaml-0-2): %s", name,
                       Y.err);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!Y.parser_initialize(&parser)) return ck__err(CK_ERR_NOMEM, "%s: out of host memory", name);
    Y.parser_set_input_string(&parser, (const unsigned char *)(text ? text : ""), len);
    pctx c = {name, &doc};
    ck_status st = CK_OK;
    if (!Y.parser_load(&parser, &doc)) {
        yaml_mark_t m = parser.problem_mark;
        st = ck__err(CK_ERR_INVALID, "%s:%zu:%zu: not YAML: %s%s%s", name, m.line + 1, m.column + 1,
                     parser.problem ? parser.problem : "a syntax error",
                     parser.context ? " " : "", parser.context ? parser.context : "");
        Y.parser_delete(&parser);
        return st;
    }
    const yaml_node_t *root = Y.document_get_root_node(&doc);
    if (!root) st = ck__err(CK_ERR_INVALID, "%s:1:1: empty: %s starts with 'version: 1'", name, what);
    else st = each_pair(&c, root, what, fn, arg);
    if (st == CK_OK && !*version) st = perr(&c, root, "'version: 1' is missing");
    if (st == CK_OK) {
        /* One document per file: a second one would be silently ignored. */
        yaml_document_t next;
        if (!Y.parser_load(&parser, &next)) {
            yaml_mark_t m = parser.problem_mark;
            st = ck__err(CK_ERR_INVALID, "%s:%zu:%zu: not YAML: %s", name, m.line + 1,
                         m.column + 1, parser.problem ? parser.problem : "a syntax error");
        } else {
            const yaml_node_t *r2 = Y.document_get_root_node(&next);
            if (r2) st = perr(&c, r2, "a second YAML document: the file holds one");
            Y.document_delete(&next);
        }
    }
    Y.document_delete(&doc);
    Y.parser_delete(&parser);
    return st;
}

ck_status ck__policy_parse(const char *text, size_t len, const char *name, ck_policy **out) {
    if (!name) name = "<string>";
    ck_policy *pol = calloc(1, sizeof *pol);
    if (!pol) return ck__err(CK_ERR_NOMEM, "policy: out of host memory");
    top_seen ts = {pol, 0};
    ck_status st = walk_doc(text, len, name, "a policy", top_pair, &ts, &ts.version);
    if (st != CK_OK) {
        ck__policy_free(pol);
        return st;
    }
    *out = pol;
    return CK_OK;
}

/* ---- profiles ---------------------------------------------------------- */

static ck_status num_val(const pctx *c, const yaml_node_t *n, const char *key, double *out) {
    const char *v = "";
    ck_status st = scalar(c, n, key, &v);
    if (st != CK_OK) return st;
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !(x > 0) || x > 1e30)
        return perr(c, n, "'%s' must be a number above 0 such as 165.2e12, not '%.60s'", key, v);
    *out = x;
    return CK_OK;
}

static ck_status bool_val(const pctx *c, const yaml_node_t *n, const char *key, int *out) {
    const char *v = "";
    ck_status st = scalar(c, n, key, &v);
    if (st != CK_OK) return st;
    if (strcmp(v, "true") == 0) *out = 1;
    else if (strcmp(v, "false") == 0) *out = 0;
    else return perr(c, n, "'%s' must be true or false, not '%.60s'", key, v);
    return CK_OK;
}

static ck_status name_val(const pctx *c, const yaml_node_t *n, char *out, size_t outn) {
    const char *v = "";
    ck_status st = scalar(c, n, "name", &v);
    if (st != CK_OK) return st;
    size_t l = strlen(v);
    int ok = l > 0 && l < outn;
    for (size_t i = 0; i < l && ok; i++)
        ok = islower((unsigned char)v[i]) || isdigit((unsigned char)v[i]) || v[i] == '-';
    if (!ok) return perr(c, n, "'name' must be lowercase letters, digits and '-' (at most %zu)", outn - 1);
    memcpy(out, v, l + 1);
    return CK_OK;
}

/* The first key of need[] (bit i of have; "" skips a bit) not given. */
static ck_status need_keys(const char *name, const char *what, const char *const *need, int n,
                           int have) {
    for (int i = 0; i < n; i++)
        if (need[i][0] && !(have & (1 << i)))
            return ck__err(CK_ERR_INVALID, "%s:1:1: %s needs '%s'", name, what, need[i]);
    return CK_OK;
}

typedef struct hw_seen {
    ck_hw_profile *hw;
    int version, have;
} hw_seen;

static ck_status flops_pair(const pctx *c, const char *key, const yaml_node_t *k,
                            const yaml_node_t *v, void *arg) {
    hw_seen *hs = arg;
    if (strcmp(key, "bf16") == 0) return hs->have |= 1 << 8, num_val(c, v, key, &hs->hw->flops_bf16);
    if (strcmp(key, "fp16") == 0) return hs->have |= 1 << 9, num_val(c, v, key, &hs->hw->flops_fp16);
    if (strcmp(key, "fp32") == 0) return hs->have |= 1 << 10, num_val(c, v, key, &hs->hw->flops_fp32);
    return perr(c, k, "unknown key '%.60s' in flops (bf16, fp16, fp32)", key);
}

static ck_status hw_pair(const pctx *c, const char *key, const yaml_node_t *k, const yaml_node_t *v,
                         void *arg) {
    hw_seen *hs = arg;
    ck_hw_profile *hw = hs->hw;
    uint64_t x;
    ck_status st;
    if (strcmp(key, "version") == 0) return version_val(c, v, &hs->version);
    if (strcmp(key, "name") == 0) return hs->have |= 1, name_val(c, v, hw->name, sizeof hw->name);
    if (strcmp(key, "memory") == 0) return hs->have |= 2, size_val(c, v, key, 0, &hw->memory);
    if (strcmp(key, "flops") == 0) return hs->have |= 4, each_pair(c, v, "flops", flops_pair, hs);
    if (strcmp(key, "memory_bandwidth") == 0) return hs->have |= 8, num_val(c, v, key, &hw->mem_bw);
    if (strcmp(key, "h2d") == 0) return hs->have |= 16, num_val(c, v, key, &hw->h2d);
    if (strcmp(key, "d2h") == 0) return hs->have |= 32, num_val(c, v, key, &hw->d2h);
    if (strcmp(key, "pcie") == 0) {
        st = int_val(c, v, key, 1, 7, &x);
        if (st == CK_OK) hw->pcie = (int)x, hs->have |= 64;
        return st;
    }
    return perr(c, k, "unknown key '%.60s' (version, name, memory, flops, memory_bandwidth, h2d, "
                      "d2h, pcie)", key);
}

ck_status ck__hw_parse(const char *text, size_t len, const char *name, ck_hw_profile *out) {
    ck_hw_profile hw;
    memset(&hw, 0, sizeof hw);
    hw_seen hs = {&hw, 0, 0};
    if (!name) name = "<string>";
    ck_status st = walk_doc(text, len, name, "a hardware profile", hw_pair, &hs, &hs.version);
    static const char *const need[] = {"name", "memory", "flops", "memory_bandwidth", "h2d",
                                       "d2h", "pcie", "", "flops: bf16", "flops: fp16",
                                       "flops: fp32"};
    if (st == CK_OK) st = need_keys(name, "a hardware profile", need, 11, hs.have);
    if (st == CK_OK) *out = hw;
    return st;
}

typedef struct model_seen {
    ck_model_profile *m;
    int version, have;
} model_seen;

static ck_status model_pair(const pctx *c, const char *key, const yaml_node_t *k,
                            const yaml_node_t *v, void *arg) {
    model_seen *ms = arg;
    ck_model_profile *m = ms->m;
    static const char *const keys[] = {"hidden", "intermediate", "layers", "heads",
                                       "kv_heads", "head_dim", "vocab"};
    uint64_t *fields[] = {&m->hidden, &m->intermediate, &m->layers, &m->heads,
                          &m->kv_heads, &m->head_dim, &m->vocab};
    if (strcmp(key, "version") == 0) return version_val(c, v, &ms->version);
    if (strcmp(key, "name") == 0) return ms->have |= 1, name_val(c, v, m->name, sizeof m->name);
    if (strcmp(key, "tied_embeddings") == 0) return ms->have |= 1 << 8, bool_val(c, v, key, &m->tied_embeddings);
    if (strcmp(key, "attention_bias") == 0) return bool_val(c, v, key, &m->attention_bias);
    for (int i = 0; i < 7; i++)
        if (strcmp(key, keys[i]) == 0) {
            ms->have |= 1 << (i + 1);
            return int_val(c, v, key, 1, (uint64_t)1 << 32, fields[i]);
        }
    return perr(c, k, "unknown key '%.60s' (version, name, hidden, intermediate, layers, heads, "
                      "kv_heads, head_dim, vocab, tied_embeddings, attention_bias)", key);
}

ck_status ck__model_parse(const char *text, size_t len, const char *name, ck_model_profile *out) {
    ck_model_profile m;
    memset(&m, 0, sizeof m);
    model_seen ms = {&m, 0, 0};
    if (!name) name = "<string>";
    ck_status st = walk_doc(text, len, name, "a model profile", model_pair, &ms, &ms.version);
    static const char *const need[] = {"name", "hidden", "intermediate", "layers", "heads",
                                       "kv_heads", "head_dim", "vocab", "tied_embeddings"};
    if (st == CK_OK) st = need_keys(name, "a model profile", need, 9, ms.have);
    if (st == CK_OK && (m.heads % m.kv_heads != 0))
        st = ck__err(CK_ERR_INVALID, "%s:1:1: heads (%llu) must be a multiple of kv_heads (%llu)",
                     name, (unsigned long long)m.heads, (unsigned long long)m.kv_heads);
    if (st == CK_OK) *out = m;
    return st;
}

ck_status ck__policy_read(const char *path, ck_policy **out) {
    if (!path || !*path) return ck__err(CK_ERR_INVALID, "policy: no file named");
    FILE *f = fopen(path, "rb");
    if (!f) return ck__err(CK_ERR_IO, "policy %s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap >= ((size_t)16 << 20)) { /* a policy is a page or two */
            free(buf);
            fclose(f);
            return ck__err(CK_ERR_INVALID, "policy %s: larger than 16 MiB", path);
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int rerr = ferror(f);
    fclose(f);
    if (!buf) return ck__err(CK_ERR_NOMEM, "policy %s: out of host memory", path);
    if (rerr) {
        free(buf);
        return ck__err(CK_ERR_IO, "policy %s: read error", path);
    }
    ck_status st = ck__policy_parse(buf, n, path, out);
    free(buf);
    return st;
}

ck_tier ck__policy_match(const ck_policy *pol, const char *tag) {
    if (!pol || !tag) return CK_TIER_AUTO;
    for (size_t i = 0; i < pol->nrules; i++)
        if (fnmatch(pol->rules[i].glob, tag, 0) == 0) return pol->rules[i].tier;
    return CK_TIER_AUTO;
}

CK_API ck_status ck_policy_check(const char *path) {
    ck_policy *pol = NULL;
    ck_status st = ck__policy_read(path, &pol);
    ck__policy_free(pol);
    return st;
}

static ck_status unknown_name(const char *what, const char *name, const char *const *names) {
    char list[512];
    join(names, list, sizeof list);
    return ck__err(CK_ERR_INVALID, "unknown %s '%.60s' (known: %s)", what, name ? name : "", list);
}

ck_status ck__hw_builtin(const char *name, ck_hw_profile *out) {
    int i = index_of(ck__hardware_names, name);
    if (i < 0) return unknown_name("GPU", name, ck__hardware_names);
    const char *t = (const char *)ck__hardware_texts[i];
    char label[96];
    snprintf(label, sizeof label, "policy/hardware/%s.yaml", name);
    return ck__hw_parse(t, strlen(t), label, out);
}

ck_status ck__model_builtin(const char *name, ck_model_profile *out) {
    int i = index_of(ck__model_names, name);
    if (i < 0) return unknown_name("model", name, ck__model_names);
    const char *t = (const char *)ck__model_texts[i];
    char label[96];
    snprintf(label, sizeof label, "policy/models/%s.yaml", name);
    return ck__model_parse(t, strlen(t), label, out);
}
