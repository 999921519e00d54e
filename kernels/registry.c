/* The op registry and the recipe checker.
 *
 * One table (ops[]) says what every replay op takes, gives and costs; the
 * checker turns a ck_recipe into a ck__plan by those rules, so nothing else
 * in the library re-states them. A recipe is checked completely before
 * anything is queued: every error names the step, the input and what is
 * wrong, and nothing is dereferenced. */
#include "internal.h"
#include "plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- dtypes ----------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtypes[CK_DTYPE_COUNT] = {
    [CK_DTYPE_F32] = {"f32", 4}, [CK_DTYPE_F16] = {"f16", 2}, [CK_DTYPE_BF16] = {"bf16", 2},
    [CK_DTYPE_I32] = {"i32", 4}, [CK_DTYPE_I64] = {"i64", 8}, [CK_DTYPE_U8] = {"u8", 1},
};

static int dtype_ok(int d) { return d >= 0 && d < CK_DTYPE_COUNT; }
static int dtype_float(int d) { return d == CK_DTYPE_F32 || d == CK_DTYPE_F16 || d == CK_DTYPE_BF16; }

size_t ck_dtype_size(ck_dtype d) { return dtype_ok((int)d) ? dtypes[d].size : 0; }
const char *ck_dtype_name(ck_dtype d) { return dtype_ok((int)d) ? dtypes[d].name : "?"; }

/* ---- the table -------------------------------------------------------- */

#define TOL_TRANSC                                                                     \
    "f32: within 16 * 2^-24 * |result| of the CPU reference (the GELUs: plus "         \
    "4 * 2^-24 * |x|, times |up| for the GLUs, where 1 + erf cancels), which differs " \
    "only in the math library (expf, erff, tanhf); f16/bf16: that plus one unit in "    \
    "the last place of the output format"
#define TOL_EXACT "bit-identical to the CPU reference in every dtype"
#define TOL_NORM                                                                        \
    "f32: within 1e-5 * (|result| + |weight|) of the CPU reference (fp32 reduction "    \
    "order against double); f16/bf16: that plus one unit in the last place"
#define EW_SHAPE "x: any shape; the result has x's shape"
#define BIN_SHAPE                                                                     \
    "the second input has the first's shape, or is a vector as long as its last dim " \
    "(broadcast over rows); the result has the first input's shape"
#define FLOAT_IO "inputs f32, f16 or bf16 (may differ); result f32, f16 or bf16"

static const ck_op_info ops[CK_OP_COUNT] = {
    [CK_OP_SILU] = {CK_OP_SILU, "silu", CK_OPC_ELEMENTWISE, 1, 1, {"x"}, "", EW_SHAPE, FLOAT_IO,
                    TOL_TRANSC, 4, 0, 1, 1},
    [CK_OP_GELU_ERF] = {CK_OP_GELU_ERF, "gelu_erf", CK_OPC_ELEMENTWISE, 1, 1, {"x"}, "", EW_SHAPE,
                        FLOAT_IO, TOL_TRANSC, 5, 0, 1, 1},
    [CK_OP_GELU_TANH] = {CK_OP_GELU_TANH, "gelu_tanh", CK_OPC_ELEMENTWISE, 1, 1, {"x"}, "",
                         EW_SHAPE, FLOAT_IO, TOL_TRANSC, 9, 0, 1, 1},
    [CK_OP_RELU] = {CK_OP_RELU, "relu", CK_OPC_ELEMENTWISE, 1, 1, {"x"}, "", EW_SHAPE, FLOAT_IO,
                    TOL_EXACT, 1, 0, 1, 1},
    [CK_OP_SWIGLU] = {CK_OP_SWIGLU, "swiglu", CK_OPC_ELEMENTWISE, 2, 2, {"gate", "up"}, "",
                      BIN_SHAPE, FLOAT_IO, TOL_TRANSC, 5, 0, 2, 1},
    [CK_OP_GEGLU_ERF] = {CK_OP_GEGLU_ERF, "geglu_erf", CK_OPC_ELEMENTWISE, 2, 2, {"gate", "up"},
                         "", BIN_SHAPE, FLOAT_IO, TOL_TRANSC, 6, 0, 2, 1},
    [CK_OP_GEGLU_TANH] = {CK_OP_GEGLU_TANH, "geglu_tanh", CK_OPC_ELEMENTWISE, 2, 2,
                          {"gate", "up"}, "", BIN_SHAPE, FLOAT_IO, TOL_TRANSC, 10, 0, 2, 1},
    [CK_OP_ADD] = {CK_OP_ADD, "add", CK_OPC_ELEMENTWISE, 2, 2, {"a", "b"}, "", BIN_SHAPE,
                   FLOAT_IO, TOL_EXACT, 1, 0, 2, 1},
    [CK_OP_MUL] = {CK_OP_MUL, "mul", CK_OPC_ELEMENTWISE, 2, 2, {"a", "b"}, "", BIN_SHAPE,
                   FLOAT_IO, TOL_EXACT, 1, 0, 2, 1},
    [CK_OP_SCALE] = {CK_OP_SCALE, "scale", CK_OPC_ELEMENTWISE, 1, 1, {"x"}, "alpha", EW_SHAPE,
                     FLOAT_IO, TOL_EXACT, 1, 0, 1, 1},
    [CK_OP_CAST] = {CK_OP_CAST, "cast", CK_OPC_ELEMENTWISE, 1, 1, {"x"}, "", EW_SHAPE,
                    FLOAT_IO " (the step's dtype is the target)", TOL_EXACT, 0, 0, 1, 1},
    [CK_OP_RMSNORM] = {CK_OP_RMSNORM, "rmsnorm", CK_OPC_ROWWISE, 2, 1, {"x", "weight"}, "eps",
                       "x: [..., C], normalised over its last dim; weight (optional): [C]; "
                       "the result has x's shape",
                       FLOAT_IO "; statistics in f32 (double in the CPU reference)", TOL_NORM, 4, 0, 1, 1},
    [CK_OP_LAYERNORM] = {CK_OP_LAYERNORM, "layernorm", CK_OPC_ROWWISE, 3, 1,
                         {"x", "weight", "bias"}, "eps",
                         "x: [..., C], normalised over its last dim; weight and bias "
                         "(optional): [C]; the result has x's shape",
                         FLOAT_IO "; statistics in f32 (double in the CPU reference)", TOL_NORM, 8, 0, 1, 1},
    [CK_OP_ROPE] = {CK_OP_ROPE, "rope", CK_OPC_STANDALONE, 2, 2, {"x", "positions"}, "base",
                    "x: [tokens, heads, head_dim] or [batch, tokens, heads, head_dim], head_dim "
                    "even and at most 512; positions: x's leading dims ([tokens] or [batch, "
                    "tokens]); the result has x's shape",
                    "x f32, f16 or bf16; positions i32 or i64; result f32, f16 or bf16",
                    "f32: within 1e-5 * |(x1, x2)| of the CPU reference (sincosf); f16/bf16: "
                    "that plus one unit in the last place",
                    4.5, 0, 1, 1},
    [CK_OP_DROPOUT_MASK] = {CK_OP_DROPOUT_MASK, "dropout_mask", CK_OPC_ELEMENTWISE, 1, 1,
                            {"like"}, "p,seed,offset",
                            "like: only its shape is read (its data may be NULL); the result "
                            "has that shape; first step only",
                            "like: any dtype; result u8 (1 kept, 0 dropped)", TOL_EXACT, 16, 0,
                            0, 1},
    [CK_OP_DROPOUT] = {CK_OP_DROPOUT, "dropout", CK_OPC_ELEMENTWISE, 1, 1, {"x"},
                       "p,seed,offset", EW_SHAPE, FLOAT_IO, TOL_EXACT, 17, 0, 1, 1},
    [CK_OP_LINEAR] = {CK_OP_LINEAR, "linear", CK_OPC_STANDALONE, 3, 2, {"x", "weight", "bias"},
                      "",
                      "x: [..., K]; weight: [N, K]; bias (optional): [N]; the result is "
                      "[..., N]",
                      "x, weight and bias one dtype (f32, f16 or bf16); the result the same",
                      "f32: within 1e-5 * sqrt(K) * sum |x w| (+ 4 * 2^-24 * |b|) of the CPU "
                      "reference; f16/bf16: that plus one unit in the last place",
                      0, 2, 0, 1},
};

const ck_op_info *ck_op_get(ck_op op) {
    return ((int)op >= 0 && op < CK_OP_COUNT) ? &ops[op] : NULL;
}

ck_status ck_op_find(const char *name, ck_op *op) {
    if (!name || !op) return ck__err(CK_ERR_INVALID, "ck_op_find: name or op is NULL");
    for (int i = 0; i < CK_OP_COUNT; i++)
        if (strcmp(ops[i].name, name) == 0) {
            *op = (ck_op)i;
            return CK_OK;
        }
    return ck__err(CK_ERR_INVALID, "ck_op_find: no replay op is named \"%s\"", name);
}

/* ---- building recipes ------------------------------------------------- */

void ck_recipe_init(ck_recipe *r) {
    if (r) memset(r, 0, sizeof *r);
}

int ck_recipe_input(ck_recipe *r, const void *data, ck_dtype dtype, int ndim,
                    const int64_t *shape) {
    if (!r || !shape) {
        ck__err(CK_ERR_INVALID, "ck_recipe_input: recipe or shape is NULL");
        return -1;
    }
    if (r->n_inputs < 0 || r->n_inputs >= CK_MAX_INPUTS) {
        ck__err(CK_ERR_INVALID, "ck_recipe_input: the recipe already has %d inputs (at most %d)",
                r->n_inputs, CK_MAX_INPUTS);
        return -1;
    }
    if (ndim < 1 || ndim > CK_MAX_DIMS) {
        ck__err(CK_ERR_INVALID, "ck_recipe_input: ndim %d is outside 1..%d", ndim, CK_MAX_DIMS);
        return -1;
    }
    ck_tensor *t = &r->inputs[r->n_inputs];
    memset(t, 0, sizeof *t);
    t->data = data;
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    return r->n_inputs++;
}

ck_step *ck_recipe_step(ck_recipe *r, ck_op op, ck_dtype dtype) {
    if (!r) {
        ck__err(CK_ERR_INVALID, "ck_recipe_step: recipe is NULL");
        return NULL;
    }
    if (!ck_op_get(op)) {
        ck__err(CK_ERR_INVALID, "ck_recipe_step: unknown op id %d", (int)op);
        return NULL;
    }
    if (r->n_steps < 0 || r->n_steps >= CK_MAX_STEPS) {
        ck__err(CK_ERR_INVALID, "ck_recipe_step: the recipe already has %d steps (at most %d)",
                r->n_steps, CK_MAX_STEPS);
        return NULL;
    }
    ck_step *s = &r->steps[r->n_steps++];
    memset(s, 0, sizeof *s);
    s->op = op;
    s->dtype = dtype;
    s->in[0] = s->in[1] = s->in[2] = -1;
    s->eps = 1e-6f;
    s->alpha = 1.0f;
    s->base = 10000.0f;
    return s;
}

/* ---- checking --------------------------------------------------------- */

#define MAX_ELEMS ((int64_t)1 << 56) /* far above any device; keeps byte counts in range */

typedef struct checked {
    int64_t n[CK_MAX_INPUTS]; /* elements of each input */
    int used[CK_MAX_INPUTS];
    ck_tensor out;
    int64_t out_n;
    int bcast_used;
} checked;

static const char *slot_name(const ck_step *s, int slot) { return ops[s->op].inputs[slot]; }

static ck_status bad(int step, const ck_step *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static ck_status bad(int step, const ck_step *s, const char *fmt, ...) {
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s && ck_op_get(s->op))
        return ck__err(CK_ERR_INVALID, "recipe step %d (%s): %s", step, ops[s->op].name, msg);
    return ck__err(CK_ERR_INVALID, "recipe step %d: %s", step, msg);
}

static int same_shape(const ck_tensor *a, const ck_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

static const char *shape_str(const ck_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && d < CK_MAX_DIMS && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

static ck_status check_inputs(const ck_recipe *r, checked *c) {
    if (r->n_inputs < 0 || r->n_inputs > CK_MAX_INPUTS)
        return ck__err(CK_ERR_INVALID, "recipe: n_inputs %d is outside 0..%d", r->n_inputs,
                       CK_MAX_INPUTS);
    if (r->n_steps < 1 || r->n_steps > CK_MAX_STEPS)
        return ck__err(CK_ERR_INVALID, "recipe: n_steps %d is outside 1..%d", r->n_steps,
                       CK_MAX_STEPS);
    for (int i = 0; i < r->n_inputs; i++) {
        const ck_tensor *t = &r->inputs[i];
        if (!dtype_ok((int)t->dtype))
            return ck__err(CK_ERR_INVALID, "recipe input %d: unknown dtype %d", i, (int)t->dtype);
        if (t->ndim < 1 || t->ndim > CK_MAX_DIMS)
            return ck__err(CK_ERR_INVALID, "recipe input %d: ndim %d is outside 1..%d", i,
                           t->ndim, CK_MAX_DIMS);
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 1)
                return ck__err(CK_ERR_INVALID, "recipe input %d: dim %d is %lld (must be >= 1)",
                               i, d, (long long)t->shape[d]);
            if (t->shape[d] > MAX_ELEMS / n)
                return ck__err(CK_ERR_INVALID, "recipe input %d: its shape overflows (more than "
                               "2^56 elements)", i);
            n *= t->shape[d];
        }
        c->n[i] = n;
    }
    return CK_OK;
}

/* The recipe input a step slot names, checked: -1 when not given. */
static ck_status slot_input(const ck_recipe *r, checked *c, int k, const ck_step *s, int slot,
                            int *idx) {
    int i = s->in[slot];
    *idx = -1;
    if (i == -1) {
        if (slot < ops[s->op].n_required && !(k > 0 && slot == 0))
            return bad(k, s, "input slot %d (%s) is required but in[%d] is -1", slot,
                       slot_name(s, slot), slot);
        return CK_OK;
    }
    if (i < 0 || i >= r->n_inputs)
        return bad(k, s, "in[%d] = %d is not an input of the recipe (it has %d)", slot, i,
                   r->n_inputs);
    const ck_tensor *t = &r->inputs[i];
    if (!t->data && s->op != CK_OP_DROPOUT_MASK)
        return bad(k, s, "input %d (%s) has NULL data", i, slot_name(s, slot));
    if (s->op == CK_OP_ROPE && slot == 1) {
        if (t->dtype != CK_DTYPE_I32 && t->dtype != CK_DTYPE_I64)
            return bad(k, s, "input %d (positions) is %s; it must be i32 or i64", i,
                       ck_dtype_name(t->dtype));
    } else if (s->op != CK_OP_DROPOUT_MASK && !dtype_float((int)t->dtype)) {
        return bad(k, s, "input %d (%s) is %s; it must be f32, f16 or bf16", i,
                   slot_name(s, slot), ck_dtype_name(t->dtype));
    }
    c->used[i] = 1;
    *idx = i;
    return CK_OK;
}

/* An element-wise operand of a result shaped like out: same shape, or a
 * vector as long as out's last dim. */
static ck_status ew_operand(const ck_recipe *r, checked *c, int k, const ck_step *s, int slot,
                            int i, const ck_tensor *out, ck__operand *o) {
    const ck_tensor *t = &r->inputs[i];
    o->ptr = t->data;
    o->dtype = (int32_t)t->dtype;
    o->bcast = 0;
    if (same_shape(t, out)) return CK_OK;
    if (t->ndim == 1 && t->shape[0] == out->shape[out->ndim - 1]) {
        o->bcast = 1;
        c->bcast_used = 1;
        return CK_OK;
    }
    char a[96], b[96];
    return bad(k, s, "input %d (%s) has shape %s; it must be %s or [%lld]", i,
               slot_name(s, slot), shape_str(t, a, sizeof a), shape_str(out, b, sizeof b),
               (long long)out->shape[out->ndim - 1]);
}

static ck_status rowvec(const ck_recipe *r, int k, const ck_step *s, int slot, int i,
                        int64_t cols, int32_t want_dtype, ck__operand *o) {
    const ck_tensor *t = &r->inputs[i];
    if (t->ndim != 1 || t->shape[0] != cols) {
        char a[96];
        return bad(k, s, "input %d (%s) has shape %s; it must be [%lld]", i, slot_name(s, slot),
                   shape_str(t, a, sizeof a), (long long)cols);
    }
    if (want_dtype >= 0 && (int32_t)t->dtype != want_dtype)
        return bad(k, s, "input %d (%s) is %s; it must be %s like x", i, slot_name(s, slot),
                   ck_dtype_name(t->dtype), ck_dtype_name((ck_dtype)want_dtype));
    o->ptr = t->data;
    o->dtype = (int32_t)t->dtype;
    o->bcast = 1;
    return CK_OK;
}

static ck_status check_params(int k, const ck_step *s, ck__pstep *ps) {
    switch (s->op) {
    case CK_OP_SCALE:
        if (!isfinite(s->alpha)) return bad(k, s, "alpha is not finite");
        ps->f = s->alpha;
        break;
    case CK_OP_RMSNORM:
    case CK_OP_LAYERNORM:
        if (!(s->eps >= 0.0f) || !isfinite(s->eps))
            return bad(k, s, "eps %g must be finite and >= 0", (double)s->eps);
        ps->f = s->eps;
        break;
    case CK_OP_ROPE:
        if (!(s->base > 0.0f) || !isfinite(s->base))
            return bad(k, s, "base %g must be finite and > 0", (double)s->base);
        break;
    case CK_OP_DROPOUT:
    case CK_OP_DROPOUT_MASK: {
        if (!(s->p >= 0.0f && s->p < 1.0f))
            return bad(k, s, "p %g must be in [0, 1)", (double)s->p);
        double t = ldexp((double)s->p, 32);
        ps->thresh = t >= 4294967295.0 ? 0xffffffffu : (uint32_t)llround(t);
        ps->f = (float)(1.0 / (1.0 - (double)s->p));
        ps->key[0] = (uint32_t)s->seed;
        ps->key[1] = (uint32_t)(s->seed >> 32);
        ps->offset = s->offset;
        break;
    }
    default:
        break;
    }
    return CK_OK;
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Check r and fill plan (when not NULL) and c. */
static ck_status check(const ck_recipe *r, checked *c, ck__plan *plan) {
    if (!r) return ck__err(CK_ERR_INVALID, "recipe is NULL");
    memset(c, 0, sizeof *c);
    ck_status st = check_inputs(r, c);
    if (st != CK_OK) return st;
    ck__plan pl;
    memset(&pl, 0, sizeof pl);
    pl.n_steps = r->n_steps;

    for (int k = 0; k < r->n_steps; k++) {
        const ck_step *s = &r->steps[k];
        ck__pstep *ps = &pl.steps[k];
        if (!ck_op_get(s->op)) return bad(k, s, "unknown op id %d", (int)s->op);
        const ck_op_info *oi = &ops[s->op];
        ps->op = (int32_t)s->op;
        ps->dtype = (int32_t)s->dtype;
        if (s->op == CK_OP_DROPOUT_MASK) {
            if (s->dtype != CK_DTYPE_U8) return bad(k, s, "its dtype must be u8");
        } else if (!dtype_float((int)s->dtype)) {
            return bad(k, s, "dtype %s (%d) is not f32, f16 or bf16", ck_dtype_name(s->dtype),
                       (int)s->dtype);
        }
        if (k > 0) {
            if (oi->cls != CK_OPC_ELEMENTWISE || s->op == CK_OP_DROPOUT_MASK)
                return bad(k, s, "only element-wise ops may follow the first step");
            if (s->in[0] != -1)
                return bad(k, s, "in[0] must be -1: slot 0 is the previous step's result");
        }
        if (oi->cls == CK_OPC_STANDALONE && r->n_steps != 1)
            return bad(k, s, "it runs as a recipe of its own (the recipe has %d steps)",
                       r->n_steps);
        for (int slot = oi->n_inputs; slot < 3; slot++)
            if (s->in[slot] != -1)
                return bad(k, s, "in[%d] = %d but the op has %d input slot%s", slot, s->in[slot],
                           oi->n_inputs, oi->n_inputs == 1 ? "" : "s");
        int idx[3] = {-1, -1, -1};
        for (int slot = 0; slot < oi->n_inputs; slot++)
            if ((st = slot_input(r, c, k, s, slot, &idx[slot])) != CK_OK) return st;
        if ((st = check_params(k, s, ps)) != CK_OK) return st;

        if (k == 0) {
            const ck_tensor *x = &r->inputs[idx[0]];
            c->out = *x;
            c->out.data = NULL;
            c->out_n = c->n[idx[0]];
            pl.x = s->op == CK_OP_DROPOUT_MASK ? NULL : x->data;
            pl.x_dtype = (int32_t)x->dtype;
            pl.cols = x->shape[x->ndim - 1];
            if (s->op == CK_OP_ROPE) {
                const ck_tensor *pos = &r->inputs[idx[1]];
                int64_t d = x->shape[x->ndim - 1];
                if (x->ndim < 3)
                    return bad(k, s, "x has %d dims; it must be [tokens, heads, head_dim] or "
                               "[batch, tokens, heads, head_dim]", x->ndim);
                if (d % 2 || d > CK_ROPE_MAX_DIM)
                    return bad(k, s, "head_dim %lld must be even and at most %d", (long long)d,
                               CK_ROPE_MAX_DIM);
                int ok = pos->ndim == x->ndim - 2;
                for (int i = 0; ok && i < pos->ndim; i++) ok = pos->shape[i] == x->shape[i];
                if (!ok) {
                    char a[96], b[96];
                    return bad(k, s, "positions have shape %s; x %s needs its leading dims",
                               shape_str(pos, a, sizeof a), shape_str(x, b, sizeof b));
                }
                pl.kind = CK_PLAN_ROPE;
                pl.pos = pos->data;
                pl.pos_dtype = (int32_t)pos->dtype;
                pl.heads = (int32_t)x->shape[x->ndim - 2];
                if (x->shape[x->ndim - 2] > INT32_MAX) return bad(k, s, "too many heads");
                for (int64_t j = 0; j < d / 2; j++)
                    pl.inv_freq[j] = 1.0f / powf(s->base, (float)(2 * j) / (float)d);
            } else if (s->op == CK_OP_LINEAR) {
                const ck_tensor *w = &r->inputs[idx[1]];
                int64_t kk = x->shape[x->ndim - 1];
                if (w->ndim != 2 || w->shape[1] != kk) {
                    char a[96], b[96];
                    return bad(k, s, "weight has shape %s; x %s needs [N, %lld]",
                               shape_str(w, a, sizeof a), shape_str(x, b, sizeof b),
                               (long long)kk);
                }
                if (w->dtype != x->dtype)
                    return bad(k, s, "weight is %s but x is %s", ck_dtype_name(w->dtype),
                               ck_dtype_name(x->dtype));
                if (s->dtype != x->dtype)
                    return bad(k, s, "its dtype %s must be x's (%s)", ck_dtype_name(s->dtype),
                               ck_dtype_name(x->dtype));
                int64_t nn = w->shape[0];
                ck__operand bias = {0};
                if (idx[2] >= 0 &&
                    (st = rowvec(r, k, s, 2, idx[2], nn, (int32_t)x->dtype, &bias)) != CK_OK)
                    return st;
                pl.kind = CK_PLAN_LINEAR;
                pl.m = c->out_n / kk;
                pl.k = kk;
                pl.nn = nn;
                pl.w = w->data;
                pl.b = bias.ptr;
                if (pl.m > MAX_ELEMS / nn) return bad(k, s, "the result's size overflows");
                c->out.shape[c->out.ndim - 1] = nn;
                c->out_n = pl.m * nn;
                pl.cols = nn;
            } else if (oi->cls == CK_OPC_ROWWISE) {
                pl.kind = CK_PLAN_NORM;
                for (int slot = 1; slot < oi->n_inputs; slot++)
                    if (idx[slot] >= 0 &&
                        (st = rowvec(r, k, s, slot, idx[slot], pl.cols, -1, &ps->src[slot - 1])) !=
                            CK_OK)
                        return st;
            } else {
                pl.kind = CK_PLAN_EW;
                if (oi->n_inputs > 1 &&
                    (st = ew_operand(r, c, k, s, 1, idx[1], &c->out, &ps->src[0])) != CK_OK)
                    return st;
            }
        } else {
            for (int slot = 1; slot < oi->n_inputs; slot++)
                if (idx[slot] >= 0 &&
                    (st = ew_operand(r, c, k, s, slot, idx[slot], &c->out, &ps->src[slot - 1])) !=
                        CK_OK)
                    return st;
        }
    }
    for (int i = 0; i < r->n_inputs; i++)
        if (!c->used[i])
            return ck__err(CK_ERR_INVALID, "recipe input %d is not read by any step", i);

    c->out.dtype = r->steps[r->n_steps - 1].dtype;
    if (plan) {
        pl.out_dtype = (int32_t)c->out.dtype;
        pl.n = c->out_n;
        /* rope's rows are tokens: its rows of cols are spread over heads */
        pl.rows = c->out_n / pl.cols / (pl.kind == CK_PLAN_ROPE ? pl.heads : 1);
        *plan = pl;
    }
    return CK_OK;
}

static size_t out_size(const checked *c) { return (size_t)c->out_n * ck_dtype_size(c->out.dtype); }

ck_status ck_recipe_check(const ck_recipe *r, ck_tensor *out, size_t *out_bytes) {
    checked c;
    ck_status st = check(r, &c, NULL);
    if (st != CK_OK) return st;
    if (out) *out = c.out;
    if (out_bytes) *out_bytes = out_size(&c);
    return CK_OK;
}

/* 1 if some step reads input i's data (a dropout mask's "like" input only
 * gives a shape). */
static int input_is_read(const ck_recipe *r, int i) {
    for (int k = 0; k < r->n_steps && k < CK_MAX_STEPS; k++)
        for (int slot = 0; slot < 3; slot++)
            if (r->steps[k].in[slot] == i && r->steps[k].op != CK_OP_DROPOUT_MASK) return 1;
    return 0;
}

/* Bytes read: each input once (a fused chain reads nothing in between). */
static double read_bytes(const ck_recipe *r, const checked *c) {
    double bytes = 0;
    for (int i = 0; i < r->n_inputs; i++)
        if (input_is_read(r, i)) bytes += (double)c->n[i] * (double)ck_dtype_size(r->inputs[i].dtype);
    return bytes;
}

/* Floating-point operations of a checked recipe, from the op table. */
static double recipe_flops(const ck_recipe *r, const checked *c, const ck__plan *pl) {
    double f = 0, n = (double)c->out_n;
    for (int k = 0; k < r->n_steps; k++) {
        const ck_op_info *oi = &ops[r->steps[k].op];
        f += oi->flops * n + oi->flops_per_k * (double)pl->k * n;
    }
    if (pl->kind == CK_PLAN_LINEAR && pl->b) f += n; /* the bias add */
    return f;
}

ck_status ck_recipe_cost(const ck_recipe *r, double *flops, double *bytes_read,
                         double *bytes_written) {
    checked c;
    ck__plan *pl = malloc(sizeof *pl);
    if (!pl) return ck__err(CK_ERR_NOMEM, "ck_recipe_cost: out of host memory");
    ck_status st = check(r, &c, pl);
    if (st == CK_OK) {
        if (flops) *flops = recipe_flops(r, &c, pl);
        if (bytes_read) *bytes_read = read_bytes(r, &c);
        if (bytes_written) *bytes_written = (double)out_size(&c);
    }
    free(pl);
    return st;
}

/* ---- plans ------------------------------------------------------------ */

ck_status ck__plan_build(const ck_recipe *r, void *out, size_t out_bytes, ck__plan *plan) {
    checked c;
    ck_status st = check(r, &c, plan);
    if (st != CK_OK) return st;
    if (!out) return ck__err(CK_ERR_INVALID, "replay: out is NULL");
    size_t need = out_size(&c);
    if (out_bytes < need)
        return ck__err(CK_ERR_INVALID, "replay: out_bytes %zu is less than the result's %zu "
                       "bytes (%lld x %s)", out_bytes, need, (long long)c.out_n,
                       ck_dtype_name(c.out.dtype));
    /* In place is fine where each element is read by the thread that writes
     * it: the same tensor, same bytes, not a GEMM. Any other overlap races. */
    const void *ptrs[CK_MAX_INPUTS];
    size_t sizes[CK_MAX_INPUTS];
    int n = ck__recipe_spans(r, ptrs, sizes, NULL);
    uintptr_t o = (uintptr_t)out;
    for (int i = 0; i < n; i++) {
        uintptr_t a = (uintptr_t)ptrs[i];
        if (a >= o + need || o >= a + sizes[i]) continue;
        if (a == o && sizes[i] == need && plan->kind != CK_PLAN_LINEAR) continue;
        return ck__err(CK_ERR_INVALID, "replay: an input at %p (%zu bytes) overlaps out %p "
                       "(%zu bytes); only the same tensor may be overwritten in place",
                       ptrs[i], sizes[i], out, need);
    }
    plan->out = out;
    plan->bytes = (uint64_t)(read_bytes(r, &c) + (double)need);
    plan->flops = recipe_flops(r, &c, plan);
    /* The vector path needs every pointer 16-byte aligned, and whole vectors
     * per row wherever a row index is used. */
    int vec = aligned16(plan->x) && aligned16(out) && aligned16(plan->pos) &&
              aligned16(plan->w) && aligned16(plan->b);
    for (int k = 0; k < plan->n_steps; k++)
        for (int j = 0; j < 2; j++) vec = vec && aligned16(plan->steps[k].src[j].ptr);
    if (plan->kind != CK_PLAN_EW || c.bcast_used) vec = vec && plan->cols % CK_VEC == 0;
    plan->vec = vec;
    return CK_OK;
}

/* Call only on a checked recipe (the sizes cannot overflow). */
int ck__recipe_spans(const ck_recipe *r, const void **ptrs, size_t *bytes, int *index) {
    int n = 0;
    for (int i = 0; i < r->n_inputs && i < CK_MAX_INPUTS; i++) {
        const ck_tensor *t = &r->inputs[i];
        if (!t->data || !input_is_read(r, i)) continue;
        int64_t e = 1;
        for (int d = 0; d < t->ndim && d < CK_MAX_DIMS; d++) e *= t->shape[d];
        ptrs[n] = t->data;
        bytes[n] = (size_t)e * ck_dtype_size(t->dtype);
        if (index) index[n] = i;
        n++;
    }
    return n;
}

ck_status ck_replay_host(const ck_recipe *r, void *out, size_t out_bytes) {
    ck__plan *pl = malloc(sizeof *pl);
    if (!pl) return ck__err(CK_ERR_NOMEM, "ck_replay_host: out of host memory");
    ck_status st = ck__plan_build(r, out, out_bytes, pl);
    if (st == CK_OK) ck__ref_run(pl);
    free(pl);
    return st;
}
