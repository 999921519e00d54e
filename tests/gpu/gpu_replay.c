/* The replay kernels on a real GPU against the CPU reference: every op in
 * f32, f16 and bf16, odd sizes and tails, pointers offset by one element to
 * force the scalar path, several rows x cols shapes (both norm layouts,
 * both RoPE widths), chains, linear through cuBLASLt, and a non-resident
 * input. Each case runs ck_replay on a cuda pool, copies the result back
 * and compares it with ck_replay_host on the same inputs (fixed seeds).
 *
 * One line per case; exit 0 when all pass, 1 when any fails, 77 (skipped)
 * without a CUDA device. CK_REPLAY_QUICK=1 keeps the sizes small (for
 * compute-sanitizer runs). CK_REPLAY_TEST_HOST=1 runs the same cases on a
 * host pool instead (the CPU reference against itself: checks this
 * harness, needs no GPU).
 *
 * Tolerances (u = 2^-24, the fp32 unit roundoff; ulp(v) = the spacing of
 * the output format at |ref|; every bound is per element):
 *
 *   op                         f32 output                         f16 / bf16 output
 *   relu add mul scale cast    bit-identical                      bit-identical
 *   dropout, dropout_mask      bit-identical                      bit-identical
 *   silu, swiglu               16u |ref|                          + 1 ulp
 *   gelu_*, geglu_*            16u |ref| + 4u |x| (|up|)          + 1 ulp
 *     (the erff/tanhf difference, up to ~3u absolute, is scaled by 0.5|x|:
 *      a relative bound alone fails where 1 + erf cancels)
 *   rmsnorm, layernorm         1e-5 (|ref| + |w|)                 + 1 ulp
 *   rope                       1e-5 sqrt(x1^2 + x2^2)             + 1 ulp
 *   linear                     1e-5 sqrt(K) sum_k |x w| + 4u |b|  + 1 ulp
 *   chains                     bit-identical to the same steps run one by one
 *                              on the GPU; against the CPU 4 ulp + 1e-3 rms(ref)
 *
 * "Bit-identical" treats two NaNs as equal whatever their payloads: the
 * GPU's arithmetic returns the canonical NaN where x86 keeps the input's.
 * Everything else is exact because the kernels share plan.h's conversions
 * and are built without FMA contraction. */
#include "backend.h"
#include "ckalloc/ckalloc.h"
#include "ckalloc/replay.h"
#include "plan.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U24 (1.0 / 16777216.0)

static ck_pool *g_pool;
static ck_stream g_stream;
static int g_quick;
static int failures, cases;

static int check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", ok ? "ok" : "FAIL");
    vprintf(fmt, ap);
    if (!ok && ck_last_error()[0])
        printf(" [%s]", ck_last_error());
    printf("\n");
    fflush(stdout);
    va_end(ap);
    cases++;
    if (!ok)
        failures++;
    return ok;
}

/* ---- data ---------------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rng(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double unit(void) { return (double)(rng() >> 11) / 9007199254740992.0; }

static size_t numel(const ck_tensor *t) {
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= (size_t)t->shape[d];
    return n;
}

static void *xmalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        printf("FAIL: out of host memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Values the special-value cases mix in: signed zeros, infinities, a NaN
 * with a payload, f16 overflow and subnormal edges, f32 subnormals. */
static const uint32_t specials[] = {
    0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc01234u, 0x477fe000u /* 65504 */,
    0x477ff000u /* 65520: f16 inf */, 0x477fefffu, 0x33800000u /* 2^-24 */,
    0x33000000u /* 2^-25: ties to 0 */, 0x33000001u, 0x38800000u /* 2^-14 */, 0x00000001u,
    0x007fffffu, 0x3f808000u /* bf16 tie */, 0x3f818000u, 0x7f7fffffu, 0xc7800000u};

/* n values of dtype, uniform in [lo, hi) (f32/f16/bf16), with every 97th a
 * special value when `special`. */
static void *fill(ck_dtype dt, size_t n, double lo, double hi, int special) {
    void *h = xmalloc(n * ck_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float v = (float)(lo + (hi - lo) * unit());
        if (special && i % 97 == 13) {
            uint32_t b = specials[(i / 97) % (sizeof specials / sizeof *specials)];
            memcpy(&v, &b, 4);
        }
        ck__store(h, dt, (int64_t)i, v);
    }
    return h;
}

static double ulp_of(int32_t dt, double v) {
    v = fabs(v);
    int e = v > 0 && isfinite(v) ? ilogb(v) : -150;
    switch (dt) {
    case CK_DTYPE_F16: return ldexp(1.0, (e < -14 ? -14 : e) - 10);
    case CK_DTYPE_BF16: return ldexp(1.0, (e < -126 ? -126 : e) - 7);
    default: return ldexp(1.0, (e < -126 ? -126 : e) - 23);
    }
}

/* ---- device copies ------------------------------------------------------- */

typedef struct dbuf {
    void *base; /* the allocation */
    void *ptr;  /* base + offset */
} dbuf;

static dbuf dcopy(const void *h, size_t bytes, size_t offset) {
    dbuf b = {0};
    if (ck_malloc(g_pool, &b.base, bytes + offset + 64, g_stream) != CK_OK) {
        printf("FAIL: ck_malloc %zu: %s\n", bytes, ck_last_error());
        exit(1);
    }
    b.ptr = (char *)b.base + offset;
    if (h && bytes && ck_memcpy_async(g_pool, b.ptr, h, bytes, g_stream) != CK_OK) {
        printf("FAIL: upload: %s\n", ck_last_error());
        exit(1);
    }
    return b;
}

static void dfree(dbuf *b) {
    if (b->base)
        ck_free(g_pool, b->base, g_stream);
    b->base = b->ptr = NULL;
}

/* Run r (host pointers) on the GPU and on the CPU. Inputs are copied to the
 * device, each offset by one element when `misalign` (the scalar path).
 * gpu/cpu get the two results (out_bytes each; the caller frees them).
 * Returns CK_OK or the replay's status. *vec gets the GPU plan's vec. */
static ck_status run_both(const ck_recipe *r, int misalign, void **gpu, void **cpu,
                          size_t *out_bytes, int *vec) {
    ck_tensor out;
    size_t ob = 0;
    ck_status st = ck_recipe_check(r, &out, &ob);
    if (st != CK_OK)
        return st;
    *out_bytes = ob;
    *cpu = xmalloc(ob);
    *gpu = xmalloc(ob);
    st = ck_replay_host(r, *cpu, ob);
    if (st != CK_OK)
        return st;
    ck_recipe rd = *r;
    dbuf in[CK_MAX_INPUTS] = {{0}};
    for (int i = 0; i < r->n_inputs; i++) {
        if (!r->inputs[i].data)
            continue;
        size_t es = ck_dtype_size(r->inputs[i].dtype);
        in[i] = dcopy(r->inputs[i].data, numel(&r->inputs[i]) * es, misalign ? es : 0);
        rd.inputs[i].data = in[i].ptr;
    }
    size_t oes = ck_dtype_size(out.dtype);
    dbuf o = dcopy(NULL, ob, misalign ? oes : 0);
    ck_memset_async(g_pool, o.ptr, 0xA5, ob, g_stream);
    ck__plan pl;
    memset(&pl, 0, sizeof pl);
    if (ck__plan_build(&rd, o.ptr, ob, &pl) == CK_OK)
        *vec = pl.vec;
    st = ck_replay(g_pool, &rd, o.ptr, ob, g_stream);
    if (st == CK_OK)
        st = ck_memcpy_async(g_pool, *gpu, o.ptr, ob, g_stream);
    ck_status sy = ck_stream_synchronize(g_pool, g_stream);
    if (st == CK_OK)
        st = sy;
    for (int i = 0; i < r->n_inputs; i++)
        dfree(&in[i]);
    dfree(&o);
    return st;
}

/* ---- comparison ---------------------------------------------------------- */

/* The allowed |gpu - cpu| of element i, or < 0 for bit-identical. */
typedef double (*tol_fn)(const void *ctx, size_t i, double ref);

/* Element i as a double (u8 masks too). */
static double val(int32_t dt, const void *p, size_t i) {
    if (dt == CK_DTYPE_U8)
        return ((const uint8_t *)p)[i];
    return ck__load(p, dt, (int64_t)i);
}

static int same_bits(int32_t dt, const void *a, const void *b, size_t i) {
    if (dt == CK_DTYPE_U8)
        return ((const uint8_t *)a)[i] == ((const uint8_t *)b)[i];
    float x = ck__load(a, dt, (int64_t)i), y = ck__load(b, dt, (int64_t)i);
    if (isnan(x) && isnan(y))
        return 1;
    size_t es = ck_dtype_size((ck_dtype)dt);
    return memcmp((const char *)a + i * es, (const char *)b + i * es, es) == 0;
}

/* Compare n elements; on failure print the worst element. */
static int compare(int32_t dt, const void *gpu, const void *cpu, size_t n, tol_fn tol,
                   const void *ctx, char *why, size_t why_len) {
    size_t bad = 0, worst = 0;
    double worst_ratio = 0, max_err = 0;
    for (size_t i = 0; i < n; i++) {
        if (same_bits(dt, gpu, cpu, i))
            continue;
        double g = val(dt, gpu, i), c = val(dt, cpu, i);
        double t = tol && dt != CK_DTYPE_U8 ? tol(ctx, i, c) : -1;
        double e = fabs(g - c);
        if (t < 0 || isnan(g) != isnan(c) || isinf(g) || isinf(c) || !(e <= t)) {
            double ratio = t > 0 && isfinite(e) ? e / t : INFINITY;
            if (!bad || ratio > worst_ratio)
                worst = i, worst_ratio = ratio;
            bad++;
        } else if (e > max_err) {
            max_err = e;
        }
    }
    if (bad) {
        double g = val(dt, gpu, worst), c = val(dt, cpu, worst);
        snprintf(why, why_len, "%zu of %zu elements off; worst [%zu]: gpu %.9g cpu %.9g (tol %.3g)",
                 bad, n, worst, g, c, tol && dt != CK_DTYPE_U8 ? tol(ctx, worst, c) : 0.0);
        return 0;
    }
    snprintf(why, why_len, "max |err| %.3g", max_err);
    return 1;
}

/* ---- element-wise ops ---------------------------------------------------- */

typedef struct ew_ctx {
    ck_op op;
    ck_dtype out_dt;
    const void *x, *y; /* inputs (host) */
    ck_dtype x_dt, y_dt;
    int64_t cols;
    int y_bcast;
} ew_ctx;

static double ew_tol(const void *vctx, size_t i, double ref) {
    const ew_ctx *c = vctx;
    double x = c->x ? fabs(ck__load(c->x, c->x_dt, (int64_t)i)) : 0;
    double y = c->y ? fabs(ck__load(c->y, c->y_dt, (int64_t)(c->y_bcast ? (int64_t)i % c->cols : (int64_t)i))) : 1;
    double t;
    switch (c->op) {
    case CK_OP_SILU:
    case CK_OP_SWIGLU: t = 16 * U24 * fabs(ref); break;
    case CK_OP_GELU_ERF:
    case CK_OP_GELU_TANH: t = 16 * U24 * fabs(ref) + 4 * U24 * x; break;
    case CK_OP_GEGLU_ERF:
    case CK_OP_GEGLU_TANH: t = 16 * U24 * fabs(ref) + 4 * U24 * x * y; break;
    default: return -1; /* bit-identical */
    }
    if (c->out_dt != CK_DTYPE_F32)
        t += ulp_of(c->out_dt, ref);
    return t + 1e-30;
}

static int is_binary(ck_op op) {
    return op == CK_OP_SWIGLU || op == CK_OP_GEGLU_ERF || op == CK_OP_GEGLU_TANH ||
           op == CK_OP_ADD || op == CK_OP_MUL;
}

static const char *path_name(int vec) { return vec ? "vector" : "scalar"; }

/* One element-wise op: x [rows, cols] of in_dt (and y of in_dt, full or a
 * [cols] row vector), result out_dt. */
static void ew_case(ck_op op, ck_dtype in_dt, ck_dtype out_dt, int64_t rows, int64_t cols,
                    int bcast, int misalign, int special) {
    size_t n = (size_t)(rows * cols);
    double lo = -6, hi = 6;
    void *x = op == CK_OP_DROPOUT_MASK ? NULL : fill(in_dt, n, lo, hi, special);
    void *y = is_binary(op) ? fill(in_dt, bcast ? (size_t)cols : n, lo, hi, special) : NULL;
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {rows, cols}, shr[] = {cols};
    ck_step *st = ck_recipe_step(&r, op, out_dt);
    st->in[0] = ck_recipe_input(&r, x, in_dt, 2, sh);
    if (y)
        st->in[1] = ck_recipe_input(&r, y, in_dt, bcast ? 1 : 2, bcast ? shr : sh);
    st->alpha = -1.75f;
    st->p = 0.3f;
    st->seed = 0x0123456789abcdefull + (uint64_t)n;
    st->offset = 12345;
    void *gpu = NULL, *cpu = NULL;
    size_t ob = 0;
    int vec = -1;
    ck_status s = run_both(&r, misalign, &gpu, &cpu, &ob, &vec);
    char why[256] = "";
    ew_ctx c = {op, out_dt, x, y, in_dt, in_dt, cols, bcast};
    int ok = s == CK_OK && compare((int32_t)out_dt, gpu, cpu, n, ew_tol, &c, why, sizeof why);
    if (s != CK_OK)
        snprintf(why, sizeof why, "replay: %s", ck_status_str(s));
    /* both paths must really run: aligned cases vectorised, offset ones not */
    int want_vec = !misalign;
    if (ok && vec != want_vec) {
        ok = 0;
        snprintf(why, sizeof why, "expected the %s path, the plan says %s", path_name(want_vec),
                 path_name(vec));
    }
    check(ok, "%s %s->%s [%lld, %lld]%s %s%s: %s", ck_op_get(op)->name, ck_dtype_name(in_dt),
          ck_dtype_name(out_dt), (long long)rows, (long long)cols, bcast ? " row-vector" : "",
          path_name(vec == 1), special ? " specials" : "", why);
    free(x), free(y), free(gpu), free(cpu);
}

/* ---- norms --------------------------------------------------------------- */

typedef struct norm_ctx {
    const void *w;
    ck_dtype w_dt, out_dt;
    int64_t cols;
} norm_ctx;

static double norm_tol(const void *vctx, size_t i, double ref) {
    const norm_ctx *c = vctx;
    double w = c->w ? fabs(ck__load(c->w, c->w_dt, (int64_t)i % c->cols)) : 1;
    double t = 1e-5 * (fabs(ref) + w);
    if (c->out_dt != CK_DTYPE_F32)
        t += ulp_of(c->out_dt, ref);
    return t;
}

static void norm_case(ck_op op, ck_dtype in_dt, ck_dtype out_dt, int64_t rows, int64_t cols,
                      int weight, int bias, int misalign) {
    size_t n = (size_t)(rows * cols);
    /* an offset keeps layernorm's mean away from 0 */
    void *x = fill(in_dt, n, -3, 5, 0);
    void *w = weight ? fill(in_dt, (size_t)cols, 0.5, 1.5, 0) : NULL;
    void *b = bias ? fill(in_dt, (size_t)cols, -1, 1, 0) : NULL;
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {rows, cols}, shr[] = {cols};
    ck_step *st = ck_recipe_step(&r, op, out_dt);
    st->in[0] = ck_recipe_input(&r, x, in_dt, 2, sh);
    if (w)
        st->in[1] = ck_recipe_input(&r, w, in_dt, 1, shr);
    if (b)
        st->in[2] = ck_recipe_input(&r, b, in_dt, 1, shr);
    st->eps = 1e-5f;
    void *gpu = NULL, *cpu = NULL;
    size_t ob = 0;
    int vec = -1;
    ck_status s = run_both(&r, misalign, &gpu, &cpu, &ob, &vec);
    char why[256] = "";
    norm_ctx c = {w, in_dt, out_dt, cols};
    int ok = s == CK_OK && compare((int32_t)out_dt, gpu, cpu, n, norm_tol, &c, why, sizeof why);
    if (s != CK_OK)
        snprintf(why, sizeof why, "replay: %s", ck_status_str(s));
    check(ok, "%s %s->%s [%lld, %lld]%s%s %s: %s", ck_op_get(op)->name, ck_dtype_name(in_dt),
          ck_dtype_name(out_dt), (long long)rows, (long long)cols, w ? " weight" : "",
          b ? " bias" : "", path_name(vec == 1), why);
    free(x), free(w), free(b), free(gpu), free(cpu);
}

/* ---- RoPE ------------------------------------------------------------------ */

typedef struct rope_ctx {
    const void *x;
    ck_dtype x_dt, out_dt;
    int64_t cols;
} rope_ctx;

static double rope_tol(const void *vctx, size_t i, double ref) {
    const rope_ctx *c = vctx;
    int64_t half = c->cols / 2, j = (int64_t)i % c->cols, base = (int64_t)i - j;
    int64_t j1 = j < half ? j : j - half;
    double x1 = ck__load(c->x, c->x_dt, base + j1), x2 = ck__load(c->x, c->x_dt, base + j1 + half);
    double t = 1e-5 * sqrt(x1 * x1 + x2 * x2);
    if (c->out_dt != CK_DTYPE_F32)
        t += ulp_of(c->out_dt, ref);
    return t + 1e-30;
}

static void rope_case(ck_dtype dt, ck_dtype out_dt, int64_t batch, int64_t tokens, int64_t heads,
                      int64_t dim, ck_dtype pos_dt, int64_t max_pos, int misalign) {
    int nd = batch ? 4 : 3;
    int64_t lead = batch ? batch * tokens : tokens;
    size_t n = (size_t)(lead * heads * dim);
    void *x = fill(dt, n, -2, 2, 0);
    void *pos = xmalloc((size_t)lead * ck_dtype_size(pos_dt));
    for (int64_t i = 0; i < lead; i++) {
        int64_t p = (int64_t)(rng() % (uint64_t)max_pos);
        if (pos_dt == CK_DTYPE_I64)
            ((int64_t *)pos)[i] = p;
        else
            ((int32_t *)pos)[i] = (int32_t)p;
    }
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh4[] = {batch, tokens, heads, dim}, sh3[] = {tokens, heads, dim};
    int64_t shp2[] = {batch, tokens}, shp1[] = {tokens};
    ck_step *st = ck_recipe_step(&r, CK_OP_ROPE, out_dt);
    st->in[0] = ck_recipe_input(&r, x, dt, nd, batch ? sh4 : sh3);
    st->in[1] = ck_recipe_input(&r, pos, pos_dt, nd - 2, batch ? shp2 : shp1);
    st->base = 10000.0f;
    void *gpu = NULL, *cpu = NULL;
    size_t ob = 0;
    int vec = -1;
    ck_status s = run_both(&r, misalign, &gpu, &cpu, &ob, &vec);
    char why[256] = "";
    rope_ctx c = {x, dt, out_dt, dim};
    int ok = s == CK_OK && compare((int32_t)out_dt, gpu, cpu, n, rope_tol, &c, why, sizeof why);
    if (s != CK_OK)
        snprintf(why, sizeof why, "replay: %s", ck_status_str(s));
    check(ok, "rope %s->%s [%lld, %lld, %lld, %lld] pos %s < %lld %s: %s", ck_dtype_name(dt),
          ck_dtype_name(out_dt), (long long)batch, (long long)tokens, (long long)heads,
          (long long)dim, ck_dtype_name(pos_dt), (long long)max_pos, path_name(vec == 1), why);
    free(x), free(pos), free(gpu), free(cpu);
}

/* ---- linear (cuBLASLt) ----------------------------------------------------- */

typedef struct lin_ctx {
    const void *x, *w, *b;
    ck_dtype dt;
    int64_t k, nn;
} lin_ctx;

static double lin_tol(const void *vctx, size_t i, double ref) {
    const lin_ctx *c = vctx;
    int64_t m = (int64_t)i / c->nn, o = (int64_t)i % c->nn;
    double s = 0;
    for (int64_t t = 0; t < c->k; t++)
        s += fabs((double)ck__load(c->x, c->dt, m * c->k + t) * ck__load(c->w, c->dt, o * c->k + t));
    double t = 1e-5 * sqrt((double)c->k) * s;
    if (c->b)
        t += 4 * U24 * fabs(ck__load(c->b, c->dt, o));
    if (c->dt != CK_DTYPE_F32)
        t += ulp_of(c->dt, ref);
    return t + 1e-30;
}

static void linear_case(ck_dtype dt, int64_t m, int64_t k, int64_t nn, int bias, int misalign) {
    void *x = fill(dt, (size_t)(m * k), -1, 1, 0), *w = fill(dt, (size_t)(nn * k), -1, 1, 0);
    void *b = bias ? fill(dt, (size_t)nn, -1, 1, 0) : NULL;
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t shx[] = {m, k}, shw[] = {nn, k}, shb[] = {nn};
    ck_step *st = ck_recipe_step(&r, CK_OP_LINEAR, dt);
    st->in[0] = ck_recipe_input(&r, x, dt, 2, shx);
    st->in[1] = ck_recipe_input(&r, w, dt, 2, shw);
    if (b)
        st->in[2] = ck_recipe_input(&r, b, dt, 1, shb);
    void *gpu = NULL, *cpu = NULL;
    size_t ob = 0;
    int vec = -1;
    ck_status s = run_both(&r, misalign, &gpu, &cpu, &ob, &vec);
    char why[256] = "";
    lin_ctx c = {x, w, b, dt, k, nn};
    int ok = s == CK_OK &&
             compare((int32_t)dt, gpu, cpu, (size_t)(m * nn), lin_tol, &c, why, sizeof why);
    if (s != CK_OK)
        snprintf(why, sizeof why, "replay: %s", ck_status_str(s));
    check(ok, "linear %s m=%lld k=%lld n=%lld%s%s: %s", ck_dtype_name(dt), (long long)m,
          (long long)k, (long long)nn, bias ? " bias" : "", misalign ? " unaligned" : "", why);
    free(x), free(w), free(b), free(gpu), free(cpu);
}

/* ---- chains ---------------------------------------------------------------- */

typedef struct chain_ctx {
    ck_dtype out_dt;
    double rms;
} chain_ctx;

static double chain_tol(const void *vctx, size_t i, double ref) {
    (void)i;
    const chain_ctx *c = vctx;
    return 4 * ulp_of(c->out_dt, ref) + 1e-3 * c->rms + 1e-30;
}

/* The fused chain r on the GPU must equal its steps run one by one on the
 * GPU (each result stored in its step's dtype and read back by the next),
 * bit for bit, and the CPU reference within chain_tol. */
static void chain_case(const char *name, const ck_recipe *r, int misalign) {
    void *gpu = NULL, *cpu = NULL;
    size_t ob = 0;
    int vec = -1;
    char why[320] = "";
    ck_status s = run_both(r, misalign, &gpu, &cpu, &ob, &vec);
    ck_tensor out;
    ck_recipe_check(r, &out, NULL);
    size_t n = numel(&out);
    int ok = s == CK_OK;
    if (!ok)
        snprintf(why, sizeof why, "replay: %s", ck_status_str(s));
    if (ok) {
        double ss = 0;
        for (size_t i = 0; i < n; i++) {
            double v = ck__load(cpu, out.dtype, (int64_t)i);
            if (isfinite(v))
                ss += v * v;
        }
        chain_ctx c = {out.dtype, sqrt(ss / (double)(n ? n : 1))};
        ok = compare((int32_t)out.dtype, gpu, cpu, n, chain_tol, &c, why, sizeof why);
    }
    /* unfused, on the GPU: step k reads step k-1's result */
    void *prev = NULL; /* host copy of the previous step's result */
    for (int k = 0; ok && k < r->n_steps; k++) {
        ck_recipe one = *r;
        one.n_steps = 1;
        one.steps[0] = r->steps[k];
        if (k > 0) {
            one.steps[0].in[0] = one.n_inputs;
            ck_tensor t = out;
            t.data = prev;
            t.dtype = r->steps[k - 1].dtype;
            one.inputs[one.n_inputs++] = t;
        }
        /* drop the inputs this step does not read (the checker insists) */
        ck_recipe packed;
        ck_recipe_init(&packed);
        for (int i = 0; i < one.n_inputs; i++) {
            int used = 0;
            for (int sl = 0; sl < 3; sl++)
                used |= one.steps[0].in[sl] == i;
            if (!used)
                continue;
            for (int sl = 0; sl < 3; sl++)
                if (one.steps[0].in[sl] == i)
                    one.steps[0].in[sl] = packed.n_inputs + 100; /* renumbered below */
            packed.inputs[packed.n_inputs++] = one.inputs[i];
        }
        packed.n_steps = 1;
        packed.steps[0] = one.steps[0];
        for (int sl = 0; sl < 3; sl++)
            if (packed.steps[0].in[sl] >= 100)
                packed.steps[0].in[sl] -= 100;
        void *g1 = NULL, *c1 = NULL;
        size_t ob1 = 0;
        int v1 = -1;
        s = run_both(&packed, misalign, &g1, &c1, &ob1, &v1);
        if (s != CK_OK) {
            ok = 0;
            snprintf(why, sizeof why, "unfused step %d: replay: %s", k, ck_status_str(s));
        }
        free(c1);
        free(prev);
        prev = g1;
    }
    if (ok && memcmp(prev, gpu, ob) != 0) {
        size_t i = 0;
        while (i < ob && ((char *)prev)[i] == ((char *)gpu)[i])
            i++;
        ok = 0;
        snprintf(why, sizeof why, "fused result differs from the steps run one by one (byte %zu)",
                 i);
    }
    check(ok, "chain %s (%d steps) %s: %s", name, r->n_steps, path_name(vec == 1), why);
    free(prev), free(gpu), free(cpu);
}

static void chains(void) {
    const int64_t shapes[][2] = {{64, 1000}, {7, 333}, {33, 4096}, {40, 12288}};
    int nshape = g_quick ? 2 : 4;
    for (int si = 0; si < nshape; si++) {
        int64_t R = shapes[si][0], C = shapes[si][1], sh[] = {R, C}, shr[] = {C};
        size_t n = (size_t)(R * C);
        void *g = fill(CK_DTYPE_BF16, n, -6, 6, 0), *u = fill(CK_DTYPE_BF16, n, -3, 3, 0);
        void *res = fill(CK_DTYPE_F32, n, -2, 2, 0), *w = fill(CK_DTYPE_BF16, (size_t)C, 0.5, 1.5, 0);
        void *x16 = fill(CK_DTYPE_F16, n, -3, 5, 0), *row = fill(CK_DTYPE_F32, (size_t)C, -1, 1, 0);
        for (int mis = 0; mis < 2; mis++) {
            ck_recipe r;
            ck_step *st;
            /* gate/up -> swiglu -> scale -> cast */
            ck_recipe_init(&r);
            st = ck_recipe_step(&r, CK_OP_SWIGLU, CK_DTYPE_F32);
            st->in[0] = ck_recipe_input(&r, g, CK_DTYPE_BF16, 2, sh);
            st->in[1] = ck_recipe_input(&r, u, CK_DTYPE_BF16, 2, sh);
            ck_recipe_step(&r, CK_OP_SCALE, CK_DTYPE_F32)->alpha = 0.7f;
            ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_BF16);
            chain_case("swiglu>scale>cast bf16", &r, mis);

            /* rmsnorm (bf16) -> + residual (f32) -> cast f16 */
            ck_recipe_init(&r);
            st = ck_recipe_step(&r, CK_OP_RMSNORM, CK_DTYPE_BF16);
            st->in[0] = ck_recipe_input(&r, g, CK_DTYPE_BF16, 2, sh);
            st->in[1] = ck_recipe_input(&r, w, CK_DTYPE_BF16, 1, shr);
            ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32)->in[1] =
                ck_recipe_input(&r, res, CK_DTYPE_F32, 2, sh);
            ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_F16);
            chain_case("rmsnorm>add>cast f16", &r, mis);

            /* layernorm (f16 in, f32) -> gelu_tanh -> dropout (f16) -> cast f32 */
            ck_recipe_init(&r);
            st = ck_recipe_step(&r, CK_OP_LAYERNORM, CK_DTYPE_F32);
            st->in[0] = ck_recipe_input(&r, x16, CK_DTYPE_F16, 2, sh);
            ck_recipe_step(&r, CK_OP_GELU_TANH, CK_DTYPE_F32);
            st = ck_recipe_step(&r, CK_OP_DROPOUT, CK_DTYPE_F16);
            st->p = 0.1f, st->seed = 42, st->offset = 3;
            ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_F32);
            chain_case("layernorm>gelu_tanh>dropout>cast", &r, mis);

            /* silu (f16) -> * up (bf16) -> + bias row (f32) -> cast bf16 */
            ck_recipe_init(&r);
            st = ck_recipe_step(&r, CK_OP_SILU, CK_DTYPE_F16);
            st->in[0] = ck_recipe_input(&r, x16, CK_DTYPE_F16, 2, sh);
            ck_recipe_step(&r, CK_OP_MUL, CK_DTYPE_F16)->in[1] =
                ck_recipe_input(&r, u, CK_DTYPE_BF16, 2, sh);
            ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32)->in[1] =
                ck_recipe_input(&r, row, CK_DTYPE_F32, 1, shr);
            ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_BF16);
            chain_case("silu>mul>add row>cast bf16", &r, mis);
        }
        free(g), free(u), free(res), free(w), free(x16), free(row);
    }
}

/* ---- the suites ------------------------------------------------------------ */

static void ew_ops(void) {
    static const ck_op ops[] = {CK_OP_SILU,      CK_OP_GELU_ERF,   CK_OP_GELU_TANH,
                                CK_OP_RELU,      CK_OP_SWIGLU,     CK_OP_GEGLU_ERF,
                                CK_OP_GEGLU_TANH, CK_OP_ADD,       CK_OP_MUL,
                                CK_OP_SCALE,     CK_OP_CAST,       CK_OP_DROPOUT,
                                CK_OP_DROPOUT_MASK};
    static const ck_dtype dts[] = {CK_DTYPE_F32, CK_DTYPE_F16, CK_DTYPE_BF16};
    /* rows x cols: tails (n % 8), a single element, row vectors of 8 and 7 */
    static const int64_t shapes[][2] = {{1, 1}, {1, 7}, {1, 8}, {3, 3}, {1, 4099},
                                        {33, 64}, {17, 1000}, {8, 4096}, {257, 4099}};
    int nshape = g_quick ? 7 : 9;
    for (size_t o = 0; o < sizeof ops / sizeof *ops; o++)
        for (size_t d = 0; d < 3; d++)
            for (int si = 0; si < nshape; si++)
                for (int mis = 0; mis < 2; mis++) {
                    ck_op op = ops[o];
                    ck_dtype out = op == CK_OP_DROPOUT_MASK ? CK_DTYPE_U8 : dts[d];
                    /* the row-vector form needs cols % 8 for the vector path */
                    int bcast = is_binary(op) && shapes[si][1] % 8 == 0 && shapes[si][0] > 1;
                    ew_case(op, dts[d], out, shapes[si][0], shapes[si][1], bcast, mis, 0);
                }
    /* mixed dtypes and special values (bit-identical ops) */
    static const ck_op exact[] = {CK_OP_RELU, CK_OP_ADD, CK_OP_MUL, CK_OP_SCALE, CK_OP_CAST};
    for (size_t o = 0; o < sizeof exact / sizeof *exact; o++)
        for (size_t a = 0; a < 3; a++)
            for (size_t b = 0; b < 3; b++)
                for (int mis = 0; mis < 2; mis++)
                    ew_case(exact[o], dts[a], dts[b], 13, 1000, 0, mis, 1);
    /* a broadcast operand read by the scalar path with rows shorter than a chunk */
    ew_case(CK_OP_ADD, CK_DTYPE_BF16, CK_DTYPE_F32, 5, 3, 1, 1, 0);
    ew_case(CK_OP_SWIGLU, CK_DTYPE_F32, CK_DTYPE_BF16, 1000, 8, 1, 1, 0);
}

static void norms(void) {
    static const ck_dtype dts[] = {CK_DTYPE_F32, CK_DTYPE_F16, CK_DTYPE_BF16};
    /* a warp per row up to 1024 columns, a block per row above; rows kept in
     * registers up to 8192 columns, re-read above */
    static const int64_t shapes[][2] = {{1, 8},    {3, 7},   {5, 1000}, {64, 128}, {300, 1024},
                                        {2, 1025}, {9, 4096}, {3, 8192}, {4, 12288}, {2, 20000}};
    int nshape = g_quick ? 6 : 10;
    for (int op = 0; op < 2; op++)
        for (size_t d = 0; d < 3; d++)
            for (int si = 0; si < nshape; si++)
                for (int mis = 0; mis < 2; mis++) {
                    ck_op o = op ? CK_OP_LAYERNORM : CK_OP_RMSNORM;
                    int weight = si % 3 != 1, bias = op && si % 2 == 0;
                    norm_case(o, dts[d], dts[(d + si) % 3], shapes[si][0], shapes[si][1], weight,
                              bias, mis);
                }
}

static void ropes(void) {
    static const ck_dtype dts[] = {CK_DTYPE_F32, CK_DTYPE_F16, CK_DTYPE_BF16};
    for (size_t d = 0; d < 3; d++)
        for (int mis = 0; mis < 2; mis++) {
            rope_case(dts[d], dts[d], 0, 1, 1, 2, CK_DTYPE_I32, 100, mis);   /* scalar */
            rope_case(dts[d], dts[d], 0, 7, 3, 8, CK_DTYPE_I64, 4096, mis);  /* 4 pairs */
            rope_case(dts[d], dts[d], 0, 300, 8, 128, CK_DTYPE_I32, 8192, mis);
            rope_case(dts[d], CK_DTYPE_F32, 2, 60, 4, 64, CK_DTYPE_I64, 1 << 17, mis);
            rope_case(dts[d], dts[d], 0, 5, 2, 6, CK_DTYPE_I32, 1000, mis);  /* odd half */
            if (!g_quick) /* enough items for one item to cover every head */
                rope_case(dts[d], dts[d], 0, 20000, 4, 64, CK_DTYPE_I64, 32768, mis);
        }
}

static void linears(void) {
    static const ck_dtype dts[] = {CK_DTYPE_F32, CK_DTYPE_F16, CK_DTYPE_BF16};
    static const int64_t mkn[][3] = {{1, 1, 1}, {7, 33, 5}, {64, 256, 96}, {128, 1000, 130}};
    for (size_t d = 0; d < 3; d++)
        for (int si = 0; si < 4; si++)
            for (int bias = 0; bias < 2; bias++)
                linear_case(dts[d], mkn[si][0], mkn[si][1], mkn[si][2], bias, si == 1 && bias);
}

static void not_resident(void) {
    float *x = NULL, *gone = NULL, *out = NULL;
    ck_malloc(g_pool, (void **)&x, 4096 * 4, g_stream);
    ck_malloc(g_pool, (void **)&gone, 4096 * 4, g_stream);
    ck_malloc(g_pool, (void **)&out, 4096 * 4, g_stream);
    ck_free(g_pool, gone, g_stream);
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {4096};
    ck_step *st = ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32);
    st->in[0] = ck_recipe_input(&r, x, CK_DTYPE_F32, 1, sh);
    st->in[1] = ck_recipe_input(&r, gone, CK_DTYPE_F32, 1, sh);
    ck_status s = ck_replay(g_pool, &r, out, 4096 * 4, g_stream);
    check(s == CK_ERR_NOT_OWNED && strstr(ck_last_error(), "input 1"),
          "a freed pool block as input: %s", ck_status_str(s));
    ck_free(g_pool, x, g_stream);
    ck_free(g_pool, out, g_stream);
    ck_stream_synchronize(g_pool, g_stream);
}

static int env_on(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

int main(void) {
    unsetenv("CKALLOC_CUDA_LIB"); /* the real driver only: the fake runs no kernels */
    g_quick = env_on("CK_REPLAY_QUICK");
    int host = env_on("CK_REPLAY_TEST_HOST");
    if (!host && !ck__cuda_available()) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    ck_status st = ck_pool_create_conf(&g_pool, host ? "backend=host" : "backend=cuda");
    if (st == CK_ERR_NO_DEVICE) {
        printf("skipped: no CUDA device (%s)\n", ck_last_error());
        return 77;
    }
    if (!check(st == CK_OK, "create pool backend=%s", host ? "host" : "cuda"))
        return 1;
    if (!check(ck_stream_create(g_pool, &g_stream) == CK_OK, "create a stream"))
        return 1;
    rng_state = 0x5eed5eed12345678ull;
    ew_ops();
    norms();
    ropes();
    linears();
    chains();
    not_resident();
    ck_stream_synchronize(g_pool, g_stream);
    ck_stream_destroy(g_pool, g_stream);
    check(ck_pool_destroy(g_pool) == CK_OK, "destroy the pool");
    printf("%s: %d cases, %d failed\n", failures ? "FAIL" : "ok", cases, failures);
    return failures ? 1 : 0;
}
