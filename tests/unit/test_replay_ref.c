/* The CPU reference of the replay ops (kernels/ref.c) and the shared code it
 * runs (kernels/plan.h), checked against things that do not come from that
 * code: gcc's own _Float16 conversions, a bf16 rounding oracle in double
 * arithmetic, the published Philox known answers, hand-worked values and
 * mathematical identities, and the same ops run one recipe at a time.
 * Everything after the dtype and Philox cases goes through the public
 * ck_replay_host with recipes built by the ck_recipe_* calls. */
#include "testutil.h"

#include "ckalloc/ckalloc.h"
#include "ckalloc/replay.h"
#include "internal.h" /* ck__clear_error */
#include "plan.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Check's ck_assert* records a location (a write to its pipe) on every
 * call, which costs seconds over millions of checks: these only act on a
 * failure. */
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                                    \
    } while (0)
#define CHECK(cond) REQUIRE(cond, "%s", #cond)

/* ---- dtype conversions --------------------------------------------------- */

static uint16_t h_bits(_Float16 h) {
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}
static _Float16 h_from_bits(uint16_t u) {
    _Float16 h;
    memcpy(&h, &u, 2);
    return h;
}
static int f16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
static int bf16_is_nan(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0; }

/* f -> f16 by gcc (libgcc's soft-float or F16C, round-to-nearest-even) and by
 * plan.h; NaN only needs to stay a NaN. */
static void check_f16_narrow(float f) {
    uint16_t want = h_bits((_Float16)f), got = ck__f32_to_f16(f);
    if (isnan(f)) {
        REQUIRE(f16_is_nan(got), "f32 %08x: f16 %04x is not a NaN", ck__f2u(f), got);
        return;
    }
    REQUIRE(got == want, "f32 %08x (%a): f16 %04x, _Float16 gives %04x", ck__f2u(f), (double)f, got,
            want);
}

START_TEST(t_f16_widen_all) {
    for (uint32_t u = 0; u < 65536; u++) {
        float want = (float)h_from_bits((uint16_t)u), got = ck__f16_to_f32((uint16_t)u);
        if (isnan(want)) {
            REQUIRE(isnan(got), "f16 %04x: %a is not a NaN", u, (double)got);
            ck_assert_int_eq(signbit(got) != 0, (u & 0x8000u) != 0);
        } else {
            REQUIRE(ck__f2u(got) == ck__f2u(want), "f16 %04x: %a, _Float16 gives %a", u,
                    (double)got, (double)want);
        }
    }
}
END_TEST

START_TEST(t_f16_narrow_special) {
    const float specials[] = {
        0.0f,
        -0.0f,
        1.0f,
        -1.0f,
        0.5f,
        2.0f,
        1.0f / 3.0f,
        0x1p-24f,        /* smallest subnormal */
        0x1p-25f,        /* half of it: a tie, to even = 0 */
        0x1.000002p-25f, /* just above the tie: rounds up */
        0x1.fffffep-26f, /* below half: 0 */
        0x1.8p-24f,      /* 1.5 quanta: tie to even = 2 quanta */
        0x1.4p-23f,      /* 2.5 quanta: tie to even = 2 */
        0x1p-14f,        /* smallest normal */
        0x1.ff8p-15f,    /* largest subnormal */
        0x1.ffcp-15f,    /* between largest subnormal and smallest normal: tie */
        0x1.ffep-15f,
        0x1.ff9p-15f,
        65504.0f,  /* largest finite */
        65519.99f, /* just below the overflow tie */
        65520.0f,  /* the tie: to even = inf */
        65536.0f,
        1e10f,
        FLT_MAX,
        2049.0f,
        2051.0f,
        4097.0f,
        INFINITY,
        -INFINITY,
        NAN,
        -NAN,
        0x1p-149f,
        -0x1p-149f,
        FLT_MIN,
        -65520.0f,
        -65519.99f,
    };
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) check_f16_narrow(specials[i]);
    /* every NaN payload stays a NaN, signalling ones included */
    check_f16_narrow(ck__u2f(0x7f800001u));
    check_f16_narrow(ck__u2f(0xff800001u));
    check_f16_narrow(ck__u2f(0x7fc00000u));
    check_f16_narrow(ck__u2f(0x7fffffffu));
}
END_TEST

/* Every f16 value's rounding boundary (the midpoint to the next value up)
 * and its neighbours one fp32 ulp either side, both signs, then a sweep over
 * the whole fp32 bit space with a prime stride (4M patterns). */
START_TEST(t_f16_narrow_sweep) {
    for (uint32_t h = 0; h < 0x7c00u; h++) {
        double lo = (double)h_from_bits((uint16_t)h);
        double hi = h == 0x7bffu ? 65536.0 : (double)h_from_bits((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* exact: 12 significant bits */
        float cand[3] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY)};
        for (int k = 0; k < 3; k++) {
            check_f16_narrow(cand[k]);
            check_f16_narrow(-cand[k]);
        }
    }
    uint64_t n = 0;
    for (uint64_t u = 0; u <= 0xffffffffu; u += 1031, n++) check_f16_narrow(ck__u2f((uint32_t)u));
    ck_assert_uint_gt(n, 4000000);
}
END_TEST

/* bf16 oracle: the nearest multiple of the value's bf16 quantum (8
 * significant bits, or 2^-133 below the normal range), ties to even, worked
 * in double with frexp/ldexp/nearbyint rather than on the bit pattern. */
static uint16_t bf16_oracle(float f) {
    uint16_t sign = signbit(f) ? 0x8000u : 0;
    if (isnan(f)) return 0x7fc0u | sign;
    if (isinf(f)) return (uint16_t)(sign | 0x7f80u);
    double a = fabs((double)f);
    if (a == 0.0) return sign;
    int e;
    (void)frexp(a, &e); /* a = m 2^e, 0.5 <= m < 1 */
    int qexp = e - 8 > -133 ? e - 8 : -133;
    double r = nearbyint(ldexp(a, -qexp)); /* default mode: to nearest, ties to even */
    double v = ldexp(r, qexp);
    if (v >= 0x1p128) return (uint16_t)(sign | 0x7f80u);
    uint32_t bits = ck__f2u((float)v);
    REQUIRE((bits & 0xffffu) == 0, "oracle: %a has more than 8 significant bits", v);
    return (uint16_t)(sign | (bits >> 16));
}

static void check_bf16_narrow(float f) {
    uint16_t want = bf16_oracle(f), got = ck__f32_to_bf16(f);
    if (isnan(f)) {
        REQUIRE(bf16_is_nan(got), "f32 %08x: bf16 %04x is not a NaN", ck__f2u(f), got);
        ck_assert_int_eq(got & 0x8000u, want & 0x8000u);
        return;
    }
    REQUIRE(got == want, "f32 %08x (%a): bf16 %04x, oracle gives %04x", ck__f2u(f), (double)f, got,
            want);
}

START_TEST(t_bf16_oracle_self) {
    /* the oracle itself, on hand-worked cases */
    ck_assert_uint_eq(bf16_oracle(1.0f), 0x3f80u);
    ck_assert_uint_eq(bf16_oracle(1.0f + 0x1p-8f), 0x3f80u);            /* tie, even stays */
    ck_assert_uint_eq(bf16_oracle(1.0f + 0x1p-7f + 0x1p-8f), 0x3f82u);  /* tie, odd rounds up */
    ck_assert_uint_eq(bf16_oracle(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81u); /* above the tie */
    ck_assert_uint_eq(bf16_oracle(-3.0f), 0xc040u);
    ck_assert_uint_eq(bf16_oracle(FLT_MAX), 0x7f80u);   /* rounds to inf */
    ck_assert_uint_eq(bf16_oracle(0x1p-133f), 0x0001u); /* smallest bf16 subnormal */
    ck_assert_uint_eq(bf16_oracle(0x1p-134f), 0x0000u); /* its half: tie to 0 */
}
END_TEST

START_TEST(t_bf16_narrow_sweep) {
    const float specials[] = {0.0f,    -0.0f,     1.0f,      FLT_MAX,   -FLT_MAX,
                              FLT_MIN, 0x1p-149f, 0x1p-133f, 0x1p-134f, 0x1.8p-133f,
                              3.0e38f, INFINITY,  -INFINITY, NAN,       -NAN};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        check_bf16_narrow(specials[i]);
    /* every bf16 value's midpoint to the next one and its fp32 neighbours */
    for (uint32_t h = 0; h < 0x7f80u; h++) {
        for (uint32_t low = 0x7fffu; low <= 0x8001u; low++) {
            check_bf16_narrow(ck__u2f((h << 16) | low));
            check_bf16_narrow(ck__u2f(0x80000000u | (h << 16) | low));
        }
    }
    uint64_t n = 0;
    for (uint64_t u = 0; u <= 0xffffffffu; u += 1031, n++) check_bf16_narrow(ck__u2f((uint32_t)u));
    ck_assert_uint_gt(n, 4000000);
}
END_TEST

START_TEST(t_roundtrip_all) {
    for (uint32_t h = 0; h < 65536; h++) {
        if (!bf16_is_nan((uint16_t)h))
            REQUIRE(ck__f32_to_bf16(ck__bf16_to_f32((uint16_t)h)) == h, "bf16 %04x", h);
        else
            CHECK(bf16_is_nan(ck__f32_to_bf16(ck__bf16_to_f32((uint16_t)h))));
        if (!f16_is_nan((uint16_t)h))
            REQUIRE(ck__f32_to_f16(ck__f16_to_f32((uint16_t)h)) == h, "f16 %04x", h);
        else
            CHECK(f16_is_nan(ck__f32_to_f16(ck__f16_to_f32((uint16_t)h))));
    }
    /* ck__round is store-then-load */
    ck_assert_uint_eq(ck__f2u(ck__round(1.0f + 0x1p-9f, CK_DTYPE_BF16)), ck__f2u(1.0f));
    ck_assert_uint_eq(ck__f2u(ck__round(1.0f + 0x1p-9f, CK_DTYPE_F32)), ck__f2u(1.0f + 0x1p-9f));
    ck_assert_uint_eq(ck__f2u(ck__round(1.0f + 0x1p-12f, CK_DTYPE_F16)), ck__f2u(1.0f));
    ck_assert_uint_eq(ck__f2u(ck__round(1.0f + 0x1.8p-10f, CK_DTYPE_F16)), ck__f2u(1.0f + 0x1p-9f));
}
END_TEST

/* ---- Philox4x32-10 -------------------------------------------------------- */

/* Known answers from Random123 (D. E. Shaw Research), file tests/kat_vectors,
 * the three "philox4x32 10" lines (columns: counter[4], key[2], result[4]):
 *   philox4x32 10 00000000 00000000 00000000 00000000 00000000 00000000   6627e8d5 e169c58d
 * bc57ac4c 9b00dbd8 philox4x32 10 ffffffff ffffffff ffffffff ffffffff ffffffff ffffffff   408f276d
 * 41c83b0e a20bc7c6 6d5451fd philox4x32 10 243f6a88 85a308d3 13198a2e 03707344 a4093822 299f31d0
 * d16cfe09 94fdcceb 5001e420 24126ea1 (the same lines appear in D. E. Shaw Research's fs123,
 * core123/ut/ut_philox.cpp). */
static const struct {
    uint32_t ctr[4], key[2], want[4];
} philox_kat[] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u},
     {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

START_TEST(t_philox_kat) {
    for (size_t v = 0; v < sizeof philox_kat / sizeof philox_kat[0]; v++) {
        uint32_t out[4];
        ck__philox4x32_10(philox_kat[v].ctr, philox_kat[v].key, out);
        for (int j = 0; j < 4; j++)
            REQUIRE(out[j] == philox_kat[v].want[j], "vector %zu word %d: %08x, want %08x", v, j,
                    out[j], philox_kat[v].want[j]);
    }
    /* the dropout stream: group 0 at offset 0 with seed 0 is counter 0, key 0 */
    ck__pstep s;
    memset(&s, 0, sizeof s);
    uint32_t w[4];
    ck__dropout_words(&s, 0, w);
    for (int j = 0; j < 4; j++) ck_assert_uint_eq(w[j], philox_kat[0].want[j]);
    /* the counter is offset + group, a 64-bit value in words 0-1 */
    s.offset = 0xfffffffeu;
    uint32_t w2[4], ctr[4] = {0x00000000u, 0x00000001u, 0, 0}, direct[4];
    ck__dropout_words(&s, 2, w2);
    ck__philox4x32_10(ctr, s.key, direct);
    ck_assert_mem_eq(w2, direct, sizeof w2);
}
END_TEST

/* ---- helpers for recipes -------------------------------------------------- */

static const ck_dtype FDT[3] = {CK_DTYPE_F32, CK_DTYPE_F16, CK_DTYPE_BF16};

/* A deterministic stream of floats in [lo, hi), 24 random bits each. */
static uint64_t lcg_state;
static void rnd_seed(uint64_t s) { lcg_state = s * 0x9E3779B97F4A7C15ull + 1; }
static float rnd(float lo, float hi) {
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)(lcg_state >> 40) * 0x1p-24f;
}

/* n elements of dt, element i = vals[i] (rounded to dt), or random in
 * [lo, hi) when vals is NULL. */
static void *tensor(ck_dtype dt, int64_t n, const float *vals, float lo, float hi) {
    void *p = malloc((size_t)n * ck_dtype_size(dt));
    ck_assert_ptr_nonnull(p);
    for (int64_t i = 0; i < n; i++) ck__store(p, dt, i, vals ? vals[i] : rnd(lo, hi));
    return p;
}

static void *out_buf(ck_dtype dt, int64_t n) {
    void *p = malloc((size_t)n * ck_dtype_size(dt));
    ck_assert_ptr_nonnull(p);
    memset(p, 0xa5, (size_t)n * ck_dtype_size(dt));
    return p;
}

static float at(const void *p, ck_dtype dt, int64_t i) { return ck__load(p, dt, i); }

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define NDIM(...) ((int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define INPUT(r, data, dt, ...)                                                                    \
    ck_recipe_input((r), (data), (dt), NDIM(__VA_ARGS__), SHAPE(__VA_ARGS__))

static ck_step *step(ck_recipe *r, ck_op op, ck_dtype dt) {
    ck_step *s = ck_recipe_step(r, op, dt);
    REQUIRE(s != NULL, "ck_recipe_step: %s", ck_last_error());
    return s;
}

/* Run r through ck_replay_host into out, which holds exactly n elements of
 * the result's dtype: ck_recipe_check must agree on that size. */
static void replay_n(const ck_recipe *r, void *out, int64_t n) {
    ck_tensor t;
    size_t need = 0;
    ASSERT_OK(ck_recipe_check(r, &t, &need));
    ck_assert_uint_eq(need, (size_t)n * ck_dtype_size(t.dtype));
    ASSERT_OK(ck_replay_host(r, out, need));
}

/* A one-step recipe over x (and y in slot 1 when y is not NULL). */
static void run_op(ck_op op, ck_dtype dt, const void *x, ck_dtype xdt, const void *y, ck_dtype ydt,
                   int ybcast, int64_t rows, int64_t cols, float alpha, void *out) {
    ck_recipe r;
    ck_recipe_init(&r);
    int ix = INPUT(&r, x, xdt, rows, cols);
    ck_step *s = step(&r, op, dt);
    s->in[0] = ix;
    s->alpha = alpha;
    if (y) s->in[1] = ybcast ? INPUT(&r, y, ydt, cols) : INPUT(&r, y, ydt, rows, cols);
    replay_n(&r, out, rows * cols);
}

/* How far a result rounded to dt may be from the exact value e: rel (the
 * fp32 computation's relative error) plus one unit in the last place of dt. */
static double tol_of(ck_dtype dt, double e, double rel) {
    double a = fabs(e);
    if (dt == CK_DTYPE_F16) return a * (rel + 0x1p-10) + 0x1p-24;
    if (dt == CK_DTYPE_BF16) return a * (rel + 0x1p-7) + 0x1p-133;
    return a * rel + 1e-30;
}

#define ASSERT_NEAR(got, want, tol, ...)                                                           \
    do {                                                                                           \
        double g_ = (got), w_ = (want), t_ = (tol);                                                \
        if (!(fabs(g_ - w_) <= t_)) {                                                              \
            char m_[256];                                                                          \
            snprintf(m_, sizeof m_, __VA_ARGS__);                                                  \
            ck_abort_msg("%s: got %.9g, want %.9g (tol %.3g)", m_, g_, w_, t_);                    \
        }                                                                                          \
    } while (0)

/* The math in double, written from the op definitions in replay.h. */
static double silu_d(double x) { return x / (1.0 + exp(-x)); }
static double gelu_erf_d(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double gelu_tanh_d(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* ---- element-wise ops: hand-worked values -------------------------------- */

START_TEST(t_unary_hand) {
    const float xs[] = {0.0f, 1.0f, -1.0f, -100.0f, 2.5f, -3.0f, 0.5f, 8.0f, -0.25f, 1000.0f, 3.0f};
    const int64_t n = (int64_t)(sizeof xs / sizeof xs[0]);
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        const char *dn = ck_dtype_name(dt);
        void *x = tensor(dt, n, xs, 0, 0), *o = out_buf(dt, n);
        /* silu */
        run_op(CK_OP_SILU, dt, x, dt, NULL, 0, 0, 1, n, 1, o);
        REQUIRE(at(o, dt, 0) == 0.0f, "%s silu(0)", dn);
        ASSERT_NEAR(at(o, dt, 1), 0.7310585786300049, tol_of(dt, 0.73105857, 1e-6), "%s silu(1)",
                    dn);
        ASSERT_NEAR(at(o, dt, 2), -0.2689414213699951, tol_of(dt, 0.26894142, 1e-6), "%s silu(-1)",
                    dn);
        /* exp(100) overflows fp32: -100 / inf is -0 */
        REQUIRE(at(o, dt, 3) == 0.0f && signbit(at(o, dt, 3)), "%s silu(-100) = %g", dn,
                (double)at(o, dt, 3));
        for (int64_t i = 4; i < n; i++) {
            double xv = at(x, dt, i);
            ASSERT_NEAR(at(o, dt, i), silu_d(xv), tol_of(dt, silu_d(xv), 1e-6), "%s silu(%g)", dn,
                        xv);
        }
        /* gelu, erf form */
        run_op(CK_OP_GELU_ERF, dt, x, dt, NULL, 0, 0, 1, n, 1, o);
        REQUIRE(at(o, dt, 0) == 0.0f, "%s gelu_erf(0)", dn);
        ASSERT_NEAR(at(o, dt, 1), 0.8413447460685429, tol_of(dt, 0.84134475, 1e-6),
                    "%s gelu_erf(1)", dn);
        ASSERT_NEAR(at(o, dt, 2), -0.15865525393145707, tol_of(dt, 0.15865525, 1e-6),
                    "%s gelu_erf(-1)", dn);
        for (int64_t i = 3; i < n; i++) {
            double xv = at(x, dt, i), e = gelu_erf_d(xv);
            /* 1 + erf cancels for negative x: an absolute error of ~ulp(1) * |x| */
            ASSERT_NEAR(at(o, dt, i), e, tol_of(dt, e, 1e-6) + 2e-7 * fabs(xv), "%s gelu_erf(%g)",
                        dn, xv);
        }
        /* gelu, tanh form */
        run_op(CK_OP_GELU_TANH, dt, x, dt, NULL, 0, 0, 1, n, 1, o);
        REQUIRE(at(o, dt, 0) == 0.0f, "%s gelu_tanh(0)", dn);
        ASSERT_NEAR(at(o, dt, 1), 0.8411919906082768, tol_of(dt, 0.84119199, 1e-6),
                    "%s gelu_tanh(1)", dn);
        for (int64_t i = 2; i < n; i++) {
            double xv = at(x, dt, i), e = gelu_tanh_d(xv);
            ASSERT_NEAR(at(o, dt, i), e, tol_of(dt, e, 1e-6) + 2e-7 * fabs(xv), "%s gelu_tanh(%g)",
                        dn, xv);
        }
        /* scale: exact for these values and alphas */
        run_op(CK_OP_SCALE, dt, x, dt, NULL, 0, 0, 1, n, -0.5f, o);
        for (int64_t i = 0; i < n; i++)
            REQUIRE(at(o, dt, i) == -0.5f * xs[i], "%s scale %g", dn, (double)xs[i]);
        run_op(CK_OP_SCALE, dt, x, dt, NULL, 0, 0, 1, n, 1.0f, o);
        for (int64_t i = 0; i < n; i++) CHECK(at(o, dt, i) == xs[i]);
        free(x);
        free(o);
    }
}
END_TEST

START_TEST(t_relu_hand) {
    const float xs[] = {3.0f, -3.0f, NAN, -INFINITY, INFINITY, -0.0f, 0.5f, -0.001f, 0.0f};
    const int64_t n = (int64_t)(sizeof xs / sizeof xs[0]);
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        void *x = tensor(dt, n, xs, 0, 0), *o = out_buf(dt, n);
        run_op(CK_OP_RELU, dt, x, dt, NULL, 0, 0, 1, n, 1, o);
        CHECK(at(o, dt, 0) == 3.0f);
        CHECK(at(o, dt, 1) == 0.0f);
        REQUIRE(isnan(at(o, dt, 2)), "%s relu(NaN) = %g", ck_dtype_name(dt), (double)at(o, dt, 2));
        CHECK(at(o, dt, 3) == 0.0f);
        CHECK(isinf(at(o, dt, 4)) && at(o, dt, 4) > 0);
        CHECK(at(o, dt, 5) == 0.0f);
        CHECK(at(o, dt, 6) == 0.5f);
        CHECK(at(o, dt, 7) == 0.0f);
        CHECK(at(o, dt, 8) == 0.0f);
        free(x);
        free(o);
    }
}
END_TEST

START_TEST(t_glu_hand) {
    /* pairs (gate, up) and the value each GLU gives, worked by hand */
    const float gate[] = {1.0f, -1.0f, 0.0f, 1.0f, 2.5f, -100.0f, 1.0f, -0.5f};
    const float up[] = {2.0f, 3.0f, 5.0f, -1.0f, -0.5f, 7.0f, 0.0f, 4.0f};
    const int64_t n = 8;
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        const char *dn = ck_dtype_name(dt);
        void *g = tensor(dt, n, gate, 0, 0), *u = tensor(dt, n, up, 0, 0), *o = out_buf(dt, n);
        run_op(CK_OP_SWIGLU, dt, g, dt, u, dt, 0, 1, n, 1, o);
        ASSERT_NEAR(at(o, dt, 0), 1.4621171572600098, tol_of(dt, 1.46211716, 1e-6),
                    "%s swiglu(1, 2)", dn);
        ASSERT_NEAR(at(o, dt, 1), -0.8068242641099853, tol_of(dt, 0.80682426, 1e-6),
                    "%s swiglu(-1, 3)", dn);
        CHECK(at(o, dt, 2) == 0.0f);
        CHECK(at(o, dt, 5) == 0.0f); /* silu(-100) = -0 */
        CHECK(at(o, dt, 6) == 0.0f);
        for (int64_t i = 0; i < n; i++) {
            double e = silu_d(gate[i]) * up[i];
            ASSERT_NEAR(at(o, dt, i), e, tol_of(dt, e, 2e-6), "%s swiglu(%g, %g)", dn,
                        (double)gate[i], (double)up[i]);
        }
        run_op(CK_OP_GEGLU_ERF, dt, g, dt, u, dt, 0, 1, n, 1, o);
        ASSERT_NEAR(at(o, dt, 0), 1.6826894921370859, tol_of(dt, 1.68268949, 1e-6),
                    "%s geglu_erf(1, 2)", dn);
        for (int64_t i = 0; i < n; i++) {
            double e = gelu_erf_d(gate[i]) * up[i];
            ASSERT_NEAR(at(o, dt, i), e, tol_of(dt, e, 2e-6) + 2e-7 * fabs(gate[i] * up[i]),
                        "%s geglu_erf(%g, %g)", dn, (double)gate[i], (double)up[i]);
        }
        run_op(CK_OP_GEGLU_TANH, dt, g, dt, u, dt, 0, 1, n, 1, o);
        ASSERT_NEAR(at(o, dt, 3), -0.8411919906082768, tol_of(dt, 0.84119199, 1e-6),
                    "%s geglu_tanh(1, -1)", dn);
        for (int64_t i = 0; i < n; i++) {
            double e = gelu_tanh_d(gate[i]) * up[i];
            ASSERT_NEAR(at(o, dt, i), e, tol_of(dt, e, 2e-6) + 2e-7 * fabs(gate[i] * up[i]),
                        "%s geglu_tanh(%g, %g)", dn, (double)gate[i], (double)up[i]);
        }
        free(g);
        free(u);
        free(o);
    }
    /* up as a row vector: out[r][c] = silu(gate[r][c]) * up[c] */
    rnd_seed(11);
    void *g = tensor(CK_DTYPE_F32, 3 * 8, NULL, -4, 4), *u = tensor(CK_DTYPE_F32, 8, NULL, -2, 2);
    void *o = out_buf(CK_DTYPE_F32, 24);
    run_op(CK_OP_SWIGLU, CK_DTYPE_F32, g, CK_DTYPE_F32, u, CK_DTYPE_F32, 1, 3, 8, 1, o);
    for (int64_t i = 0; i < 24; i++) {
        double e = silu_d(at(g, CK_DTYPE_F32, i)) * at(u, CK_DTYPE_F32, i % 8);
        ASSERT_NEAR(at(o, CK_DTYPE_F32, i), e, 2e-6 * fabs(e) + 1e-30, "swiglu bcast %lld",
                    (long long)i);
    }
    free(g);
    free(u);
    free(o);
}
END_TEST

START_TEST(t_add_mul_bcast) {
    /* small multiples of 1/4: every sum and product below is exact in each dtype */
    const int64_t rows = 3, cols = 5;
    float a[15], b[15], v[5] = {0.25f, -1.0f, 2.0f, 0.0f, -3.5f};
    for (int i = 0; i < 15; i++) {
        a[i] = (float)(i - 7) * 0.5f;
        b[i] = (float)((i * 7) % 11 - 5) * 0.25f;
    }
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        void *ta = tensor(dt, 15, a, 0, 0), *tb = tensor(dt, 15, b, 0, 0),
             *tv = tensor(dt, 5, v, 0, 0);
        void *o = out_buf(dt, 15);
        run_op(CK_OP_ADD, dt, ta, dt, tv, dt, 1, rows, cols, 1, o);
        for (int i = 0; i < 15; i++) REQUIRE(at(o, dt, i) == a[i] + v[i % 5], "add bcast %d", i);
        run_op(CK_OP_MUL, dt, ta, dt, tv, dt, 1, rows, cols, 1, o);
        for (int i = 0; i < 15; i++) REQUIRE(at(o, dt, i) == a[i] * v[i % 5], "mul bcast %d", i);
        run_op(CK_OP_ADD, dt, ta, dt, tb, dt, 0, rows, cols, 1, o);
        for (int i = 0; i < 15; i++) REQUIRE(at(o, dt, i) == a[i] + b[i], "add %d", i);
        run_op(CK_OP_MUL, dt, ta, dt, tb, dt, 0, rows, cols, 1, o);
        for (int i = 0; i < 15; i++) REQUIRE(at(o, dt, i) == a[i] * b[i], "mul %d", i);
        free(ta);
        free(tb);
        free(tv);
        free(o);
    }
    /* mixed dtypes: f16 + bf16 row vector into f32, and a sum that must round */
    void *ta = tensor(CK_DTYPE_F16, 15, a, 0, 0), *tv = tensor(CK_DTYPE_BF16, 5, v, 0, 0);
    void *o = out_buf(CK_DTYPE_F32, 15);
    run_op(CK_OP_ADD, CK_DTYPE_F32, ta, CK_DTYPE_F16, tv, CK_DTYPE_BF16, 1, rows, cols, 1, o);
    for (int i = 0; i < 15; i++) CHECK(at(o, CK_DTYPE_F32, i) == a[i] + v[i % 5]);
    free(ta);
    free(tv);
    free(o);
    /* 1 + 2^-8 in bf16: a tie, to even = 1; 1 + 3 * 2^-8: to 1 + 2^-6 */
    const float one[2] = {1.0f, 1.0f}, small[2] = {0x1p-8f, 0x1.8p-7f};
    ta = tensor(CK_DTYPE_F32, 2, one, 0, 0);
    tv = tensor(CK_DTYPE_F32, 2, small, 0, 0);
    o = out_buf(CK_DTYPE_BF16, 2);
    run_op(CK_OP_ADD, CK_DTYPE_BF16, ta, CK_DTYPE_F32, tv, CK_DTYPE_F32, 0, 1, 2, 1, o);
    ck_assert_uint_eq(((uint16_t *)o)[0], 0x3f80u);
    ck_assert_uint_eq(((uint16_t *)o)[1], 0x3f82u);
    free(ta);
    free(tv);
    free(o);
}
END_TEST

/* f32 -> bf16 -> f32 and f32 -> f16 -> f32 as two chained casts, on values
 * whose rounding is worked out by hand (bit patterns). */
START_TEST(t_cast_hand) {
    static const uint32_t bf_in[] = {
        0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0xbf818000u, 0x7f7fffffu, 0x00000001u,
        0x3eaaaaabu, 0x477ff000u, 0x80000000u, 0x7f800000u, 0x3f800000u, 0x0001ffffu};
    static const uint32_t bf_want[] = {
        0x3f800000u, 0x3f820000u, 0x3f810000u, 0x3f800000u, 0xbf820000u, 0x7f800000u, 0x00000000u,
        0x3eab0000u, 0x47800000u, 0x80000000u, 0x7f800000u, 0x3f800000u, 0x00020000u};
    /* f16: 1 + 2^-11 ties to 1; 1 + 3 * 2^-11 ties up to 1 + 2^-9; 65519 -> 65504;
     * 65520 -> inf; 1e-8 -> 0; 3e-8 (> 2^-25) -> 2^-24; 2^-25 ties to 0 */
    static const uint32_t h_in[] = {0x3f801000u, 0x3f803000u, 0x477fef00u,
                                    0x477ff000u, 0x322bcc77u, 0x3300d959u /* 3e-8 */,
                                    0x33000000u, 0xc0490fdbu /* -pi */};
    static const uint32_t h_want[] = {0x3f800000u, 0x3f804000u, 0x477fe000u,
                                      0x7f800000u, 0x00000000u, 0x33800000u,
                                      0x00000000u, 0xc0490000u /* -3.140625 */};
    const int nb = (int)(sizeof bf_in / sizeof bf_in[0]), nh = (int)(sizeof h_in / sizeof h_in[0]);
    for (int pass = 0; pass < 2; pass++) {
        ck_dtype mid = pass ? CK_DTYPE_F16 : CK_DTYPE_BF16;
        const uint32_t *in = pass ? h_in : bf_in, *want = pass ? h_want : bf_want;
        int n = pass ? nh : nb;
        float xs[16];
        for (int i = 0; i < n; i++) xs[i] = ck__u2f(in[i]);
        void *x = tensor(CK_DTYPE_F32, n, xs, 0, 0), *o = out_buf(CK_DTYPE_F32, n);
        ck_recipe r;
        ck_recipe_init(&r);
        int ix = INPUT(&r, x, CK_DTYPE_F32, n);
        step(&r, CK_OP_CAST, mid)->in[0] = ix;
        step(&r, CK_OP_CAST, CK_DTYPE_F32);
        replay_n(&r, o, n);
        for (int i = 0; i < n; i++)
            REQUIRE(ck__f2u(at(o, CK_DTYPE_F32, i)) == want[i],
                    "cast via %s of %08x: %08x, want %08x", ck_dtype_name(mid), in[i],
                    ck__f2u(at(o, CK_DTYPE_F32, i)), want[i]);
        free(x);
        free(o);
    }
}
END_TEST

/* ---- norms ------------------------------------------------------------------ */

/* One norm step over x [rows, cols] (weight w, bias b may be NULL). */
static void run_norm(ck_op op, ck_dtype dt, const void *x, const void *w, const void *b,
                     int64_t rows, int64_t cols, float eps, void *out) {
    ck_recipe r;
    ck_recipe_init(&r);
    int ix = INPUT(&r, x, dt, rows, cols);
    ck_step *s = step(&r, op, dt);
    s->in[0] = ix;
    s->eps = eps;
    if (w) s->in[1] = INPUT(&r, w, dt, cols);
    if (b) s->in[2] = INPUT(&r, b, dt, cols);
    replay_n(&r, out, rows * cols);
}

START_TEST(t_rmsnorm_const) {
    const int64_t rows = 4, cols = 36; /* not a multiple of CK_VEC */
    const float c[4] = {1.5f, -2.0f, 0.25f, 3.0f};
    float xs[4 * 36], ws[36];
    for (int64_t j = 0; j < cols; j++) ws[j] = 0.5f + (float)j / 32.0f;
    for (int64_t i = 0; i < rows * cols; i++) xs[i] = c[i / cols];
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        const char *dn = ck_dtype_name(dt);
        void *x = tensor(dt, rows * cols, xs, 0, 0), *w = tensor(dt, cols, ws, 0, 0);
        void *o = out_buf(dt, rows * cols);
        const float epss[2] = {1e-6f, 0.5f};
        for (int k = 0; k < 2; k++) {
            run_norm(CK_OP_RMSNORM, dt, x, w, NULL, rows, cols, epss[k], o);
            for (int64_t i = 0; i < rows * cols; i++) {
                double cv = c[i / cols], e = ws[i % cols] * cv / sqrt(cv * cv + (double)epss[k]);
                ASSERT_NEAR(at(o, dt, i), e, tol_of(dt, e, 2e-6),
                            "%s rmsnorm const %g eps %g [%lld]", dn, cv, (double)epss[k],
                            (long long)i);
                if (k == 0) /* ~ sign(c) * weight */
                    ASSERT_NEAR(at(o, dt, i), (cv > 0 ? 1 : -1) * ws[i % cols],
                                tol_of(dt, ws[i % cols], 2e-5), "%s rmsnorm sign [%lld]", dn,
                                (long long)i);
            }
        }
        /* no weight: sign(c) */
        run_norm(CK_OP_RMSNORM, dt, x, NULL, NULL, rows, cols, 1e-6f, o);
        for (int64_t i = 0; i < rows * cols; i++)
            ASSERT_NEAR(at(o, dt, i), c[i / cols] > 0 ? 1.0 : -1.0, tol_of(dt, 1.0, 2e-5),
                        "%s rmsnorm [%lld]", dn, (long long)i);
        free(x);
        free(w);
        free(o);
    }
}
END_TEST

START_TEST(t_layernorm_const) {
    /* a constant row has mean c exactly and variance 0: the result is the bias */
    const int64_t rows = 3, cols = 20;
    const float c[3] = {7.0f, -0.375f, 0.0f};
    float xs[60], ws[20], bs[20];
    for (int64_t j = 0; j < cols; j++) {
        ws[j] = (float)(j - 10) * 0.25f;
        bs[j] = (float)(j % 7) - 2.5f;
    }
    for (int64_t i = 0; i < rows * cols; i++) xs[i] = c[i / cols];
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        void *x = tensor(dt, rows * cols, xs, 0, 0), *w = tensor(dt, cols, ws, 0, 0),
             *b = tensor(dt, cols, bs, 0, 0);
        void *o = out_buf(dt, rows * cols);
        run_norm(CK_OP_LAYERNORM, dt, x, w, b, rows, cols, 1e-5f, o);
        for (int64_t i = 0; i < rows * cols; i++)
            REQUIRE(at(o, dt, i) == bs[i % cols], "%s layernorm const [%lld] = %g, want bias %g",
                    ck_dtype_name(dt), (long long)i, (double)at(o, dt, i), (double)bs[i % cols]);
        run_norm(CK_OP_LAYERNORM, dt, x, w, NULL, rows, cols, 1e-5f, o);
        for (int64_t i = 0; i < rows * cols; i++) CHECK(at(o, dt, i) == 0.0f);
        free(x);
        free(w);
        free(b);
        free(o);
    }
}
END_TEST

/* Random rows of very different scales and offsets: layernorm gives rows of
 * mean ~0 and variance ~1, and both norms match their definition in double. */
START_TEST(t_norm_random) {
    const int64_t rows = 6, cols = 200;
    rnd_seed(3);
    float xs[6 * 200], ws[200], bs[200];
    for (int64_t i = 0; i < rows * cols; i++) {
        double scale = ldexp(1.0, (int)(i / cols) * 3 - 6); /* 2^-6 .. 2^9 */
        xs[i] = (float)(scale * (rnd(-2, 2) + 1.0f));
    }
    for (int64_t j = 0; j < cols; j++) {
        ws[j] = rnd(-2, 2);
        bs[j] = rnd(-1, 1);
    }
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        const char *dn = ck_dtype_name(dt);
        void *x = tensor(dt, rows * cols, xs, 0, 0), *w = tensor(dt, cols, ws, 0, 0),
             *b = tensor(dt, cols, bs, 0, 0);
        void *o = out_buf(dt, rows * cols);
        run_norm(CK_OP_LAYERNORM, dt, x, NULL, NULL, rows, cols, 1e-6f, o);
        const double mtol = dt == CK_DTYPE_F32 ? 1e-5 : dt == CK_DTYPE_F16 ? 1e-3 : 5e-3;
        const double vtol = dt == CK_DTYPE_F32 ? 1e-4 : dt == CK_DTYPE_F16 ? 2e-3 : 1.5e-2;
        for (int64_t r = 0; r < rows; r++) {
            double s = 0, s2 = 0, xs_ = 0, xs2 = 0;
            for (int64_t j = 0; j < cols; j++) {
                s += at(o, dt, r * cols + j);
                xs_ += at(x, dt, r * cols + j);
            }
            double mean = s / (double)cols, xmean = xs_ / (double)cols;
            for (int64_t j = 0; j < cols; j++) {
                s2 += pow(at(o, dt, r * cols + j) - mean, 2);
                xs2 += pow(at(x, dt, r * cols + j) - xmean, 2);
            }
            /* var(x) / (var(x) + eps): 1 but for eps, which matters in the small rows */
            double xvar = xs2 / (double)cols, want = xvar / (xvar + 1e-6);
            ASSERT_NEAR(mean, 0.0, mtol, "%s layernorm row %lld mean", dn, (long long)r);
            ASSERT_NEAR(s2 / (double)cols, want, vtol, "%s layernorm row %lld variance", dn,
                        (long long)r);
            CHECK(fabs(want - 1.0) < 0.01);
        }
        /* against the definitions, with weight (and bias) */
        for (int op = 0; op < 2; op++) {
            run_norm(op ? CK_OP_LAYERNORM : CK_OP_RMSNORM, dt, x, w, op ? b : NULL, rows, cols,
                     1e-6f, o);
            for (int64_t r = 0; r < rows; r++) {
                double s = 0, s2 = 0, mean = 0;
                for (int64_t j = 0; j < cols; j++) s += at(x, dt, r * cols + j);
                if (op) mean = s / (double)cols;
                for (int64_t j = 0; j < cols; j++) s2 += pow(at(x, dt, r * cols + j) - mean, 2);
                double rstd = 1.0 / sqrt(s2 / (double)cols + 1e-6);
                for (int64_t j = 0; j < cols; j++) {
                    double xh = (at(x, dt, r * cols + j) - mean) * rstd;
                    double e = xh * at(w, dt, j) + (op ? at(b, dt, j) : 0.0);
                    /* fp32 steps: relative to each term, plus the rounded mean */
                    double t = tol_of(dt, e, 0) + 2e-6 * (fabs(xh * at(w, dt, j)) + fabs(e)) +
                               1e-6 * fabs(mean * rstd * at(w, dt, j));
                    ASSERT_NEAR(at(o, dt, r * cols + j), e, t, "%s %s [%lld, %lld]", dn,
                                op ? "layernorm" : "rmsnorm", (long long)r, (long long)j);
                }
            }
        }
        free(x);
        free(w);
        free(b);
        free(o);
    }
}
END_TEST

/* ---- RoPE ------------------------------------------------------------------- */

/* RoPE of x [tok, heads, dim] (or [batch, tok, heads, dim] when batch > 0) at
 * positions pos (tokens, or batch * tok, of pdt). */
static void run_rope(ck_dtype dt, const void *x, int64_t batch, int64_t tok, int64_t heads,
                     int64_t dim, const void *pos, ck_dtype pdt, float base, void *out) {
    ck_recipe r;
    ck_recipe_init(&r);
    int ix = batch ? INPUT(&r, x, dt, batch, tok, heads, dim) : INPUT(&r, x, dt, tok, heads, dim);
    int ip = batch ? INPUT(&r, pos, pdt, batch, tok) : INPUT(&r, pos, pdt, tok);
    ck_step *s = step(&r, CK_OP_ROPE, dt);
    s->in[0] = ix;
    s->in[1] = ip;
    s->base = base;
    replay_n(&r, out, (batch ? batch : 1) * tok * heads * dim);
}

START_TEST(t_rope_identities) {
    const int64_t tok = 5, heads = 3, dim = 64, half = 32, n = tok * heads * dim;
    const int64_t pos64[5] = {0, 0, 0, 0, 0};
    const int32_t posp[5] = {0, 1, 7, 100, 123456}, posm[5] = {0, -1, -7, -100, -123456};
    rnd_seed(5);
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        const char *dn = ck_dtype_name(dt);
        void *x = tensor(dt, n, NULL, -3, 3), *o = out_buf(dt, n), *back = out_buf(dt, n);
        /* position 0 is the identity, exactly */
        run_rope(dt, x, 0, tok, heads, dim, pos64, CK_DTYPE_I64, 10000.0f, o);
        REQUIRE(memcmp(x, o, (size_t)n * ck_dtype_size(dt)) == 0,
                "%s rope at 0 is not the identity", dn);
        /* any position keeps each (j, j + half) pair's norm, and matches the
         * rotation by pos * base^(-2j/dim) worked in double (small positions) */
        run_rope(dt, x, 0, tok, heads, dim, posp, CK_DTYPE_I32, 10000.0f, o);
        for (int64_t t = 0; t < tok; t++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t j = 0; j < half; j++) {
                    int64_t i1 = (t * heads + h) * dim + j, i2 = i1 + half;
                    double x1 = at(x, dt, i1), x2 = at(x, dt, i2), y1 = at(o, dt, i1),
                           y2 = at(o, dt, i2);
                    double nx = hypot(x1, x2), ny = hypot(y1, y2);
                    double ptol = tol_of(dt, nx, 4e-6) * 2;
                    ASSERT_NEAR(ny, nx, ptol, "%s rope norm t%lld h%lld j%lld", dn, (long long)t,
                                (long long)h, (long long)j);
                    if (posp[t] <= 100) {
                        double th = posp[t] * pow(10000.0, -2.0 * (double)j / (double)dim);
                        double e1 = x1 * cos(th) - x2 * sin(th), e2 = x2 * cos(th) + x1 * sin(th);
                        /* fp32 theta: pos * inv_freq rounded, ~ulp(theta) */
                        double at_ = tol_of(dt, nx, 0) + nx * (1e-5 + 2e-7 * fabs(th));
                        ASSERT_NEAR(y1, e1, at_, "%s rope t%lld j%lld first half", dn, (long long)t,
                                    (long long)j);
                        ASSERT_NEAR(y2, e2, at_, "%s rope t%lld j%lld second half", dn,
                                    (long long)t, (long long)j);
                    }
                }
        /* +p then -p gives x back */
        run_rope(dt, o, 0, tok, heads, dim, posm, CK_DTYPE_I32, 10000.0f, back);
        for (int64_t t = 0; t < tok; t++)
            for (int64_t h = 0; h < heads; h++)
                for (int64_t j = 0; j < half; j++) {
                    int64_t i1 = (t * heads + h) * dim + j, i2 = i1 + half;
                    double nx = hypot(at(x, dt, i1), at(x, dt, i2));
                    double ptol = tol_of(dt, nx, 4e-6) * 3;
                    ASSERT_NEAR(at(back, dt, i1), at(x, dt, i1), ptol, "%s rope back t%lld j%lld",
                                dn, (long long)t, (long long)j);
                    ASSERT_NEAR(at(back, dt, i2), at(x, dt, i2), ptol, "%s rope back t%lld j%lld",
                                dn, (long long)t, (long long)j);
                }
        free(x);
        free(o);
        free(back);
    }
}
END_TEST

/* [batch, tok, heads, dim] with positions [batch, tok] is the same as the
 * flattened [batch * tok, heads, dim]; i32 and i64 positions agree. */
START_TEST(t_rope_4d) {
    const int64_t batch = 2, tok = 3, heads = 4, dim = 10, n = batch * tok * heads * dim;
    const int64_t p64[6] = {3, 4, 5, 0, 1, 2};
    const int32_t p32[6] = {3, 4, 5, 0, 1, 2};
    rnd_seed(8);
    void *x = tensor(CK_DTYPE_BF16, n, NULL, -2, 2);
    void *o4 = out_buf(CK_DTYPE_BF16, n), *o3 = out_buf(CK_DTYPE_BF16, n);
    run_rope(CK_DTYPE_BF16, x, batch, tok, heads, dim, p64, CK_DTYPE_I64, 500.0f, o4);
    run_rope(CK_DTYPE_BF16, x, 0, batch * tok, heads, dim, p32, CK_DTYPE_I32, 500.0f, o3);
    ck_assert_mem_eq(o4, o3, (size_t)n * 2);
    /* and it did rotate: token 1 of batch 0 (position 4) differs from x */
    CHECK(memcmp((char *)x + 2 * heads * dim * 1, (char *)o4 + 2 * heads * dim * 1,
                 (size_t)(2 * heads * dim)) != 0);
    /* token 0 of batch 1 is at position 0: unchanged */
    ck_assert_mem_eq((char *)x + 2 * heads * dim * 3, (char *)o4 + 2 * heads * dim * 3,
                     (size_t)(2 * heads * dim));
    free(x);
    free(o4);
    free(o3);
}
END_TEST

/* ---- dropout ---------------------------------------------------------------- */

/* The dropout mask of n elements (like's data NULL: only its shape is read). */
static uint8_t *mask_of(int64_t n, float p, uint64_t seed, uint64_t offset) {
    uint8_t *m = out_buf(CK_DTYPE_U8, n);
    ck_recipe r;
    ck_recipe_init(&r);
    int il = INPUT(&r, NULL, CK_DTYPE_F32, n);
    ck_step *s = step(&r, CK_OP_DROPOUT_MASK, CK_DTYPE_U8);
    s->in[0] = il;
    s->p = p;
    s->seed = seed;
    s->offset = offset;
    replay_n(&r, m, n);
    for (int64_t i = 0; i < n; i++) REQUIRE(m[i] <= 1, "mask[%lld] = %d", (long long)i, m[i]);
    return m;
}

static void run_dropout(ck_dtype dt, const void *x, int64_t n, float p, uint64_t seed,
                        uint64_t offset, void *out) {
    ck_recipe r;
    ck_recipe_init(&r);
    int ix = INPUT(&r, x, dt, n);
    ck_step *s = step(&r, CK_OP_DROPOUT, dt);
    s->in[0] = ix;
    s->p = p;
    s->seed = seed;
    s->offset = offset;
    replay_n(&r, out, n);
}

START_TEST(t_dropout_p0) {
    const int64_t n = 1003;
    rnd_seed(21);
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        void *x = tensor(dt, n, NULL, -10, 10), *o = out_buf(dt, n);
        run_dropout(dt, x, n, 0.0f, 12345, 77, o);
        REQUIRE(memcmp(x, o, (size_t)n * ck_dtype_size(dt)) == 0, "%s dropout p=0 changed x",
                ck_dtype_name(dt));
        free(x);
        free(o);
    }
    uint8_t *m = mask_of(n, 0.0f, 99, 0);
    for (int64_t i = 0; i < n; i++) CHECK(m[i] == 1);
    free(m);
}
END_TEST

START_TEST(t_dropout_mask_stats) {
    const int64_t n = 1 << 20;
    const double p = 0.1;
    uint8_t *m = mask_of(n, (float)p, 0x123456789abcdefull, 5);
    int64_t kept = 0, lane[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < n; i++) {
        kept += m[i];
        lane[i & 3] += m[i];
    }
    double sigma = sqrt(p * (1 - p) / (double)n);
    REQUIRE(fabs((double)kept / (double)n - (1 - p)) < 5 * sigma, "kept fraction %g",
            (double)kept / (double)n);
    for (int k = 0; k < 4; k++) /* every Philox output word is used */
        REQUIRE(fabs((double)lane[k] / (double)(n / 4) - (1 - p)) < 5 * 2 * sigma,
                "lane %d kept %g", k, (double)lane[k] / (double)(n / 4));
    /* another seed: a different mask (~18% of elements differ), same statistics */
    uint8_t *m2 = mask_of(n, (float)p, 0x123456789abcdeeull, 5);
    int64_t diff = 0;
    for (int64_t i = 0; i < n; i++) diff += m[i] != m2[i];
    REQUIRE(diff > n / 10, "seeds differing in bit 0 give masks differing in %lld elements",
            (long long)diff);
    free(m2);
    /* the seed's high 32 bits matter too */
    m2 = mask_of(n, (float)p, 0x123456789abcdefull ^ (1ull << 40), 5);
    diff = 0;
    for (int64_t i = 0; i < n; i++) diff += m[i] != m2[i];
    REQUIRE(diff > n / 10, "seeds differing in bit 40 give masks differing in %lld elements",
            (long long)diff);
    free(m2);
    free(m);
}
END_TEST

START_TEST(t_dropout_offset_and_mask) {
    const int64_t n = 4099;
    /* offset k starts the stream 4k elements later */
    uint8_t *m0 = mask_of(n, 0.5f, 42, 0);
    const uint64_t ks[3] = {1, 3, 100};
    for (int t = 0; t < 3; t++) {
        uint8_t *mk = mask_of(n, 0.5f, 42, ks[t]);
        for (int64_t i = 0; i + 4 * (int64_t)ks[t] < n; i++)
            REQUIRE(mk[i] == m0[i + 4 * (int64_t)ks[t]], "offset %llu: mask[%lld]",
                    (unsigned long long)ks[t], (long long)i);
        free(mk);
    }
    /* a mask is a prefix of a longer one: no dependence on n or chunking */
    uint8_t *mlong = mask_of(3 * n, 0.5f, 42, 0);
    ck_assert_mem_eq(m0, mlong, (size_t)n);
    free(mlong);
    /* dropout = x * mask / (1 - p): p = 0.5 and 0.75 scale by 2 and 4, exactly */
    rnd_seed(31);
    const float ps[2] = {0.5f, 0.75f};
    for (int k = 0; k < 2; k++) {
        uint8_t *m = mask_of(n, ps[k], 7, 13);
        for (int d = 0; d < 3; d++) {
            ck_dtype dt = FDT[d];
            void *x = tensor(dt, n, NULL, -100, 100), *o = out_buf(dt, n);
            run_dropout(dt, x, n, ps[k], 7, 13, o);
            for (int64_t i = 0; i < n; i++) {
                float want = m[i] ? at(x, dt, i) / (1.0f - ps[k]) : 0.0f;
                REQUIRE(at(o, dt, i) == want, "%s dropout p=%g [%lld]: %g, want %g",
                        ck_dtype_name(dt), (double)ps[k], (long long)i, (double)at(o, dt, i),
                        (double)want);
            }
            free(x);
            free(o);
        }
        free(m);
    }
    /* p = 0.1: kept elements are x / 0.9 to within the output's rounding */
    uint8_t *m = mask_of(n, 0.1f, 8, 0);
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        void *x = tensor(dt, n, NULL, -100, 100), *o = out_buf(dt, n);
        run_dropout(dt, x, n, 0.1f, 8, 0, o);
        for (int64_t i = 0; i < n; i++) {
            if (!m[i]) {
                CHECK(at(o, dt, i) == 0.0f);
                continue;
            }
            double e = at(x, dt, i) / (1.0 - (double)0.1f);
            ASSERT_NEAR(at(o, dt, i), e, tol_of(dt, e, 2e-7), "%s dropout p=0.1 [%lld]",
                        ck_dtype_name(dt), (long long)i);
        }
        free(x);
        free(o);
    }
    free(m);
    free(m0);
}
END_TEST

/* ---- fused chains equal the same steps run one at a time ---------------------- */

/* A step of a chain: op, its dtype, the chain inputs in slots 1 and 2 (0:
 * none; inputs[0] is the first step's x) and its parameters (0: default). */
typedef struct chain_step {
    ck_op op;
    ck_dtype dt;
    int in1, in2;
    float eps, alpha, p;
    uint64_t seed, offset;
} chain_step;

typedef struct chain_input {
    ck_dtype dt;
    int bcast; /* a [cols] row vector */
    void *data;
} chain_input;

static void fill_step(ck_step *s, const chain_step *c) {
    s->eps = c->eps != 0 ? c->eps : s->eps;
    s->alpha = c->alpha != 0 ? c->alpha : s->alpha;
    s->p = c->p;
    s->seed = c->seed;
    s->offset = c->offset;
}

static int chain_add_input(ck_recipe *r, const chain_input *in, int64_t rows, int64_t cols) {
    return in->bcast ? INPUT(r, in->data, in->dt, cols) : INPUT(r, in->data, in->dt, rows, cols);
}

/* Run steps[0..ns) over inputs[] (inputs[0] is the first step's x) fused
 * and then one recipe per step, each intermediate stored in its step's
 * dtype; the two results must be bit-identical. */
static void check_chain(const chain_input *inputs, const chain_step *steps, int ns, int64_t rows,
                        int64_t cols) {
    const int64_t n = rows * cols;
    ck_dtype out_dt = steps[ns - 1].dt;
    void *fused = out_buf(out_dt, n);
    ck_recipe r;
    ck_recipe_init(&r);
    int idx[8];
    int used[8] = {0};
    used[0] = 1;
    for (int k = 0; k < ns; k++) {
        if (steps[k].in1 > 0) used[steps[k].in1] = 1;
        if (steps[k].in2 > 0) used[steps[k].in2] = 1;
    }
    for (int i = 0; i < 8; i++)
        idx[i] = used[i] && inputs[i].data ? chain_add_input(&r, &inputs[i], rows, cols) : -1;
    for (int k = 0; k < ns; k++) {
        ck_step *s = step(&r, steps[k].op, steps[k].dt);
        if (k == 0) s->in[0] = idx[0];
        if (steps[k].in1 > 0) s->in[1] = idx[steps[k].in1];
        if (steps[k].in2 > 0) s->in[2] = idx[steps[k].in2];
        fill_step(s, &steps[k]);
    }
    replay_n(&r, fused, n);

    void *prev = inputs[0].data;
    ck_dtype prev_dt = inputs[0].dt;
    for (int k = 0; k < ns; k++) {
        void *o = out_buf(steps[k].dt, n);
        ck_recipe_init(&r);
        ck_step *s;
        int ix = INPUT(&r, prev, prev_dt, rows, cols);
        int i1 = steps[k].in1 > 0 ? chain_add_input(&r, &inputs[steps[k].in1], rows, cols) : -1;
        int i2 = steps[k].in2 > 0 ? chain_add_input(&r, &inputs[steps[k].in2], rows, cols) : -1;
        s = step(&r, steps[k].op, steps[k].dt);
        s->in[0] = ix;
        s->in[1] = i1;
        s->in[2] = i2;
        fill_step(s, &steps[k]);
        replay_n(&r, o, n);
        if (k > 0) free(prev);
        prev = o;
        prev_dt = steps[k].dt;
    }
    size_t bytes = (size_t)n * ck_dtype_size(out_dt);
    for (size_t b = 0; b < bytes; b++)
        if (((uint8_t *)fused)[b] != ((uint8_t *)prev)[b])
            ck_abort_msg("fused chain (%d steps, first %s) differs from the unfused one at element "
                         "%zu: %g vs %g",
                         ns, ck_op_get(steps[0].op)->name, b / ck_dtype_size(out_dt),
                         (double)at(fused, out_dt, (int64_t)(b / ck_dtype_size(out_dt))),
                         (double)at(prev, out_dt, (int64_t)(b / ck_dtype_size(out_dt))));
    free(prev);
    free(fused);
}

#define CS(op_, dt_, ...) ((chain_step){.op = (op_), .dt = (dt_), __VA_ARGS__})

START_TEST(t_fused_chains) {
    const int64_t rows = 7, cols = 44; /* 308 elements: chunks end mid-row */
    const int64_t n = rows * cols;
    rnd_seed(77);
    chain_input in[8];
    memset(in, 0, sizeof in);
    void *x0 = tensor(CK_DTYPE_F32, n, NULL, -4, 4);
    in[0] = (chain_input){CK_DTYPE_F32, 0, x0};                                      /* x / gate */
    in[1] = (chain_input){CK_DTYPE_F32, 1, tensor(CK_DTYPE_F32, cols, NULL, -2, 2)}; /* weight */
    in[2] = (chain_input){CK_DTYPE_BF16, 0, tensor(CK_DTYPE_BF16, n, NULL, -3, 3)};  /* up */
    in[3] = (chain_input){CK_DTYPE_F16, 0, tensor(CK_DTYPE_F16, n, NULL, -1, 1)};    /* residual */
    in[4] = (chain_input){CK_DTYPE_BF16, 1, tensor(CK_DTYPE_BF16, cols, NULL, -1, 1)}; /* bias */
    in[5] = (chain_input){CK_DTYPE_BF16, 0, tensor(CK_DTYPE_BF16, n, NULL, -4, 4)};    /* bf16 x */
    const ck_dtype F32 = CK_DTYPE_F32, F16 = CK_DTYPE_F16, BF16 = CK_DTYPE_BF16;

    /* rmsnorm -> cast bf16, with and without an f16 head */
    chain_step c1[] = {CS(CK_OP_RMSNORM, F32, .in1 = 1), CS(CK_OP_CAST, BF16)};
    check_chain(in, c1, 2, rows, cols);
    chain_step c1b[] = {CS(CK_OP_RMSNORM, F16, .in1 = 1, .eps = 1e-3f), CS(CK_OP_CAST, BF16)};
    check_chain(in, c1b, 2, rows, cols);
    /* swiglu(gate, up) -> scale -> cast */
    chain_step c2[] = {CS(CK_OP_SWIGLU, F32, .in1 = 2), CS(CK_OP_SCALE, F16, .alpha = 0.7f),
                       CS(CK_OP_CAST, BF16)};
    check_chain(in, c2, 3, rows, cols);
    chain_step c2b[] = {CS(CK_OP_GEGLU_TANH, BF16, .in1 = 2), CS(CK_OP_SCALE, F32, .alpha = -1.3f),
                        CS(CK_OP_CAST, F16)};
    check_chain(in, c2b, 3, rows, cols);
    /* silu -> mul(up) */
    chain_step c3[] = {CS(CK_OP_SILU, BF16), CS(CK_OP_MUL, F32, .in1 = 2)};
    check_chain(in, c3, 2, rows, cols);
    /* layernorm (weight, bias) -> add residual -> dropout -> gelu -> cast */
    chain_step c4[] = {CS(CK_OP_LAYERNORM, F16, .in1 = 1, .in2 = 4), CS(CK_OP_ADD, F32, .in1 = 3),
                       CS(CK_OP_DROPOUT, BF16, .p = 0.2f, .seed = 5, .offset = 9),
                       CS(CK_OP_GELU_ERF, F32), CS(CK_OP_CAST, F16)};
    check_chain(in, c4, 5, rows, cols);
    /* bf16 x: add a broadcast bias -> relu -> mul by the weight row -> dropout */
    in[0] = in[5];
    chain_step c5[] = {CS(CK_OP_ADD, BF16, .in1 = 4), CS(CK_OP_RELU, BF16),
                       CS(CK_OP_MUL, F16, .in1 = 1),
                       CS(CK_OP_DROPOUT, F32, .p = 0.3f, .seed = 1ull << 33, .offset = 3)};
    check_chain(in, c5, 4, rows, cols);
    /* the longest chain: eight steps */
    chain_step c6[] = {CS(CK_OP_SILU, F32),
                       CS(CK_OP_SCALE, BF16, .alpha = 3.0f),
                       CS(CK_OP_ADD, F16, .in1 = 3),
                       CS(CK_OP_GELU_TANH, F32),
                       CS(CK_OP_MUL, BF16, .in1 = 2),
                       CS(CK_OP_RELU, F32),
                       CS(CK_OP_SCALE, F16, .alpha = 0.125f),
                       CS(CK_OP_CAST, F32)};
    check_chain(in, c6, 8, rows, cols);
    for (int i = 1; i < 6; i++) free(in[i].data); /* in[0] is in[5] now */
    free(x0);
}
END_TEST

/* In place (out is the first input) gives what a separate out gives. */
START_TEST(t_in_place) {
    const int64_t rows = 5, cols = 24, n = rows * cols;
    rnd_seed(4);
    void *x = tensor(CK_DTYPE_F32, n, NULL, -3, 3), *w = tensor(CK_DTYPE_F32, cols, NULL, -1, 1);
    void *x2 = malloc((size_t)n * 4), *o = out_buf(CK_DTYPE_F32, n);
    memcpy(x2, x, (size_t)n * 4);
    for (int op = 0; op < 2; op++) {
        ck_recipe r;
        ck_recipe_init(&r);
        int ix = INPUT(&r, x, CK_DTYPE_F32, rows, cols), iw = INPUT(&r, w, CK_DTYPE_F32, cols);
        ck_step *s = step(&r, op ? CK_OP_RMSNORM : CK_OP_SILU, CK_DTYPE_F32);
        s->in[0] = ix;
        if (op) s->in[1] = iw;
        step(&r, CK_OP_MUL, CK_DTYPE_F32)->in[1] = iw;
        replay_n(&r, o, n);
        r.inputs[ix].data = x2;
        ASSERT_OK(ck_replay_host(&r, x2, (size_t)n * 4));
        ck_assert_mem_eq(o, x2, (size_t)n * 4);
        memcpy(x2, x, (size_t)n * 4);
    }
    free(x);
    free(x2);
    free(w);
    free(o);
}
END_TEST

/* ---- linear ------------------------------------------------------------------ */

static void run_linear(ck_dtype dt, const void *x, const void *w, const void *b, int64_t m,
                       int64_t k, int64_t nn, void *out) {
    ck_recipe r;
    ck_recipe_init(&r);
    int ix = INPUT(&r, x, dt, m, k), iw = INPUT(&r, w, dt, nn, k);
    ck_step *s = step(&r, CK_OP_LINEAR, dt);
    s->in[0] = ix;
    s->in[1] = iw;
    if (b) s->in[2] = INPUT(&r, b, dt, nn);
    replay_n(&r, out, m * nn);
}

START_TEST(t_linear_hand) {
    /* [[1,2,3],[4,5,6]] . [[1,0,-1],[0.5,0.5,0.5]]^T = [[-2, 3], [-2, 7.5]]; + [10, -1] */
    const float xs[6] = {1, 2, 3, 4, 5, 6}, ws[6] = {1, 0, -1, 0.5f, 0.5f, 0.5f}, bs[2] = {10, -1};
    const float want_nb[4] = {-2, 3, -2, 7.5f}, want_b[4] = {8, 2, 8, 6.5f};
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        void *x = tensor(dt, 6, xs, 0, 0), *w = tensor(dt, 6, ws, 0, 0),
             *b = tensor(dt, 2, bs, 0, 0);
        void *o = out_buf(dt, 4);
        run_linear(dt, x, w, NULL, 2, 3, 2, o);
        for (int i = 0; i < 4; i++)
            REQUIRE(at(o, dt, i) == want_nb[i], "%s linear [%d]", ck_dtype_name(dt), i);
        run_linear(dt, x, w, b, 2, 3, 2, o);
        for (int i = 0; i < 4; i++)
            REQUIRE(at(o, dt, i) == want_b[i], "%s linear+b [%d]", ck_dtype_name(dt), i);
        free(x);
        free(w);
        free(b);
        free(o);
    }
}
END_TEST

/* Random bf16 (and f32) data against the dot products worked in double; a
 * leading batch dim flattens into the rows. */
START_TEST(t_linear_random) {
    const int64_t m = 6, k = 77, nn = 5;
    rnd_seed(9);
    for (int d = 0; d < 3; d++) {
        ck_dtype dt = FDT[d];
        void *x = tensor(dt, m * k, NULL, -2, 2), *w = tensor(dt, nn * k, NULL, -1, 1),
             *b = tensor(dt, nn, NULL, -4, 4);
        void *o = out_buf(dt, m * nn), *o3 = out_buf(dt, m * nn);
        run_linear(dt, x, w, b, m, k, nn, o);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < nn; j++) {
                double e = at(b, dt, j), mag = fabs(e);
                for (int64_t t = 0; t < k; t++) {
                    e += (double)at(x, dt, i * k + t) * at(w, dt, j * k + t);
                    mag += fabs((double)at(x, dt, i * k + t) * at(w, dt, j * k + t));
                }
                ASSERT_NEAR(at(o, dt, i * nn + j), e, tol_of(dt, e, 1e-7) + 1e-7 * mag,
                            "%s linear [%lld, %lld]", ck_dtype_name(dt), (long long)i,
                            (long long)j);
            }
        /* x as [2, 3, k]: the same numbers, result [2, 3, nn] */
        ck_recipe r;
        ck_recipe_init(&r);
        int ix = INPUT(&r, x, dt, 2, 3, k), iw = INPUT(&r, w, dt, nn, k), ib = INPUT(&r, b, dt, nn);
        ck_step *s = step(&r, CK_OP_LINEAR, dt);
        s->in[0] = ix;
        s->in[1] = iw;
        s->in[2] = ib;
        ck_tensor t;
        ASSERT_OK(ck_recipe_check(&r, &t, NULL));
        ck_assert_int_eq(t.ndim, 3);
        ck_assert_int_eq(t.shape[0], 2);
        ck_assert_int_eq(t.shape[1], 3);
        ck_assert_int_eq(t.shape[2], nn);
        replay_n(&r, o3, m * nn);
        ck_assert_mem_eq(o, o3, (size_t)(m * nn) * ck_dtype_size(dt));
        free(x);
        free(w);
        free(b);
        free(o);
        free(o3);
    }
}
END_TEST

/* ---- bad recipes -------------------------------------------------------------- */

/* r (with out of out_bytes) is refused with CK_ERR_INVALID and a sentence,
 * and out is not written. check: ck_recipe_check must refuse it too. */
static void expect_bad_at(const ck_recipe *r, void *out, size_t out_bytes, size_t out_alloc,
                          int check, int line) {
    unsigned char *copy = malloc(out_alloc ? out_alloc : 1);
    ck_assert_ptr_nonnull(copy);
    if (out) memcpy(copy, out, out_alloc);
    if (check) {
        ck__clear_error();
        ck_status st = ck_recipe_check(r, NULL, NULL);
        REQUIRE(st == CK_ERR_INVALID, "line %d: ck_recipe_check gave %s", line, ck_status_str(st));
        REQUIRE(ck_last_error()[0] != '\0', "line %d: ck_recipe_check set no error sentence", line);
    }
    ck__clear_error();
    ck_status st = ck_replay_host(r, out, out_bytes);
    REQUIRE(st == CK_ERR_INVALID, "line %d: ck_replay_host gave %s (%s)", line, ck_status_str(st),
            ck_last_error());
    REQUIRE(ck_last_error()[0] != '\0', "line %d: no error sentence", line);
    if (out) REQUIRE(memcmp(copy, out, out_alloc) == 0, "line %d: out was written", line);
    free(copy);
}
#define EXPECT_BAD(r) expect_bad_at((r), out, obytes, obytes, 1, __LINE__)

START_TEST(t_bad_recipes) {
    const int64_t rows = 4, cols = 8, n = rows * cols;
    rnd_seed(1);
    float *x = tensor(CK_DTYPE_F32, n, NULL, -1, 1), *y = tensor(CK_DTYPE_F32, n, NULL, -1, 1);
    float *v = tensor(CK_DTYPE_F32, cols, NULL, -1, 1),
          *wsq = tensor(CK_DTYPE_F32, cols * cols, NULL, -1, 1);
    float *big = tensor(CK_DTYPE_F32, 1024, NULL, -1, 1), *big2 = out_buf(CK_DTYPE_F32, 1024);
    int32_t pos[4] = {0, 1, 2, 3};
    const size_t obytes = (size_t)n * 4;
    void *out = out_buf(CK_DTYPE_F32, n);
    ck_recipe r;
    ck_step *s;
    int ix;

/* A fresh one-step recipe over x [rows, cols]. */
#define FRESH(op, dt)                                                                              \
    do {                                                                                           \
        ck_recipe_init(&r);                                                                        \
        ix = INPUT(&r, x, CK_DTYPE_F32, rows, cols);                                               \
        s = step(&r, (op), (dt));                                                                  \
        s->in[0] = ix;                                                                             \
    } while (0)
/* The recipe as built so far is good (so each bad case differs by one thing). */
#define GOOD()                                                                                     \
    do {                                                                                           \
        replay_n(&r, out, n);                                                                      \
        memset(out, 0xa5, obytes);                                                                 \
    } while (0)

    /* ---- NULL data, recipe, out ---- */
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    GOOD();
    r.inputs[ix].data = NULL;
    EXPECT_BAD(&r);
    FRESH(CK_OP_SWIGLU, CK_DTYPE_F32);
    s->in[1] = INPUT(&r, y, CK_DTYPE_F32, rows, cols);
    GOOD();
    r.inputs[s->in[1]].data = NULL;
    EXPECT_BAD(&r);
    FRESH(CK_OP_RMSNORM, CK_DTYPE_F32);
    s->in[1] = INPUT(&r, v, CK_DTYPE_F32, cols);
    GOOD();
    r.inputs[s->in[1]].data = NULL;
    EXPECT_BAD(&r);
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    step(&r, CK_OP_ADD, CK_DTYPE_F32)->in[1] = INPUT(&r, NULL, CK_DTYPE_F32, rows, cols);
    EXPECT_BAD(&r);
    ck__clear_error();
    ck_assert_int_eq(ck_replay_host(NULL, out, obytes), CK_ERR_INVALID);
    CHECK(ck_last_error()[0] != '\0');
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    expect_bad_at(&r, NULL, obytes, 0, 0, __LINE__);

    /* ---- too small an out ---- */
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    expect_bad_at(&r, out, obytes - 1, obytes, 0, __LINE__);
    expect_bad_at(&r, out, 0, obytes, 0, __LINE__);
    /* bf16 x cast to f32: the result needs 4 bytes an element, x has 2 */
    FRESH(CK_OP_CAST, CK_DTYPE_F32);
    r.inputs[ix].dtype = CK_DTYPE_BF16;
    expect_bad_at(&r, out, (size_t)n * 2, obytes, 0, __LINE__);

    /* ---- mismatched shapes ---- */
    FRESH(CK_OP_ADD, CK_DTYPE_F32);
    s->in[1] = INPUT(&r, y, CK_DTYPE_F32, rows, cols);
    GOOD();
    r.inputs[s->in[1]].shape[0] = cols;
    r.inputs[s->in[1]].shape[1] = rows;
    EXPECT_BAD(&r);
    r.inputs[s->in[1]].ndim = 1; /* a vector, but not as long as a row */
    r.inputs[s->in[1]].shape[0] = rows;
    EXPECT_BAD(&r);
    r.inputs[s->in[1]].ndim = 2; /* [1, cols] is not [cols] */
    r.inputs[s->in[1]].shape[0] = 1;
    r.inputs[s->in[1]].shape[1] = cols;
    EXPECT_BAD(&r);
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    step(&r, CK_OP_ADD, CK_DTYPE_F32)->in[1] = INPUT(&r, big, CK_DTYPE_F32, n + 1);
    EXPECT_BAD(&r);
    FRESH(CK_OP_RMSNORM, CK_DTYPE_F32);
    s->in[1] = INPUT(&r, v, CK_DTYPE_F32, cols - 1);
    EXPECT_BAD(&r);
    FRESH(CK_OP_LAYERNORM, CK_DTYPE_F32);
    s->in[2] = INPUT(&r, y, CK_DTYPE_F32, rows, cols);
    EXPECT_BAD(&r);
    FRESH(CK_OP_LINEAR, CK_DTYPE_F32);
    s->in[1] = INPUT(&r, wsq, CK_DTYPE_F32, cols, cols);
    s->in[2] = INPUT(&r, v, CK_DTYPE_F32, cols);
    GOOD();
    r.inputs[s->in[2]].shape[0] = cols - 1;
    EXPECT_BAD(&r);
    r.inputs[s->in[2]].shape[0] = cols;
    r.inputs[s->in[1]].shape[1] = cols - 1;
    EXPECT_BAD(&r);
    r.inputs[s->in[1]].ndim = 1;
    r.inputs[s->in[1]].shape[0] = cols;
    EXPECT_BAD(&r);
    /* rope: x [rows, 1, cols] with rows positions is good */
    ck_recipe_init(&r);
    s = step(&r, CK_OP_ROPE, CK_DTYPE_F32);
    s->in[0] = INPUT(&r, x, CK_DTYPE_F32, rows, 1, cols);
    s->in[1] = INPUT(&r, pos, CK_DTYPE_I32, rows);
    GOOD();
    r.inputs[1].shape[0] = rows - 1; /* positions of the wrong length */
    EXPECT_BAD(&r);
    r.inputs[1].shape[0] = rows;
    r.inputs[1].ndim = 2; /* positions [rows, 1] */
    r.inputs[1].shape[1] = 1;
    EXPECT_BAD(&r);
    r.inputs[1].ndim = 1;
    r.inputs[0].ndim = 2; /* x [rows, 1]: no head_dim */
    EXPECT_BAD(&r);
    r.inputs[0].ndim = 3;
    r.inputs[0].shape[2] = 7; /* odd head_dim */
    EXPECT_BAD(&r);
    r.inputs[0].data = big; /* head_dim 514 > CK_ROPE_MAX_DIM */
    r.inputs[0].shape[0] = 1;
    r.inputs[1].shape[0] = 1;
    r.inputs[0].shape[2] = 514;
    expect_bad_at(&r, big2, 1024 * 4, 1024 * 4, 1, __LINE__);

    /* ---- wrong dtypes ---- */
    const ck_dtype bad_step_dt[] = {CK_DTYPE_I32,   CK_DTYPE_I64, CK_DTYPE_U8,
                                    CK_DTYPE_COUNT, (ck_dtype)-1, (ck_dtype)77};
    for (size_t i = 0; i < sizeof bad_step_dt / sizeof bad_step_dt[0]; i++) {
        FRESH(CK_OP_SILU, CK_DTYPE_F32);
        s->dtype = bad_step_dt[i];
        EXPECT_BAD(&r);
        FRESH(CK_OP_CAST, CK_DTYPE_F32);
        s->dtype = bad_step_dt[i];
        EXPECT_BAD(&r);
        FRESH(CK_OP_SILU, CK_DTYPE_F32); /* the input's dtype */
        r.inputs[ix].dtype = bad_step_dt[i];
        EXPECT_BAD(&r);
    }
    /* dropout_mask: u8 is good, f32 is not */
    FRESH(CK_OP_DROPOUT_MASK, CK_DTYPE_U8);
    GOOD();
    s->dtype = CK_DTYPE_F32;
    EXPECT_BAD(&r);
    /* rope positions must be integers, x a float */
    ck_recipe_init(&r);
    s = step(&r, CK_OP_ROPE, CK_DTYPE_F32);
    s->in[0] = INPUT(&r, x, CK_DTYPE_F32, rows, 1, cols);
    s->in[1] = INPUT(&r, pos, CK_DTYPE_I32, rows);
    r.inputs[1].dtype = CK_DTYPE_F32;
    EXPECT_BAD(&r);
    r.inputs[1].dtype = CK_DTYPE_I32;
    r.inputs[0].dtype = CK_DTYPE_I32;
    EXPECT_BAD(&r);
    /* linear: x, weight, bias and the result one dtype */
    FRESH(CK_OP_LINEAR, CK_DTYPE_F32);
    s->in[1] = INPUT(&r, wsq, CK_DTYPE_F32, cols, cols);
    s->in[2] = INPUT(&r, v, CK_DTYPE_F32, cols);
    r.inputs[1].dtype = CK_DTYPE_BF16;
    EXPECT_BAD(&r);
    r.inputs[1].dtype = CK_DTYPE_F32;
    r.inputs[2].dtype = CK_DTYPE_F16;
    EXPECT_BAD(&r);
    r.inputs[2].dtype = CK_DTYPE_F32;
    s->dtype = CK_DTYPE_F16;
    EXPECT_BAD(&r);
    FRESH(CK_OP_LAYERNORM, CK_DTYPE_F32);
    s->in[1] = INPUT(&r, wsq, CK_DTYPE_I64, cols);
    EXPECT_BAD(&r);

    /* ---- unknown ops ---- */
    ck_recipe_init(&r);
    ck__clear_error();
    ck_assert_ptr_null(ck_recipe_step(&r, CK_OP_COUNT, CK_DTYPE_F32));
    CHECK(ck_last_error()[0] != '\0');
    ck__clear_error();
    ck_assert_ptr_null(ck_recipe_step(&r, (ck_op)-1, CK_DTYPE_F32));
    CHECK(ck_last_error()[0] != '\0');
    ck_assert_int_eq(r.n_steps, 0);
    const int bad_ops[] = {CK_OP_COUNT, -1, 1000, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_ops / sizeof bad_ops[0]; i++) {
        FRESH(CK_OP_SILU, CK_DTYPE_F32);
        s->op = (ck_op)bad_ops[i];
        EXPECT_BAD(&r);
        FRESH(CK_OP_SILU, CK_DTYPE_F32);
        step(&r, CK_OP_SILU, CK_DTYPE_F32)->op = (ck_op)bad_ops[i];
        EXPECT_BAD(&r);
    }

    /* ---- chains: only element-wise steps after the first ---- */
    const ck_op not_after[] = {CK_OP_RMSNORM, CK_OP_LAYERNORM, CK_OP_ROPE, CK_OP_LINEAR,
                               CK_OP_DROPOUT_MASK};
    for (size_t i = 0; i < sizeof not_after / sizeof not_after[0]; i++) {
        FRESH(CK_OP_SILU, CK_DTYPE_F32);
        ck_step *s2 =
            step(&r, not_after[i], not_after[i] == CK_OP_DROPOUT_MASK ? CK_DTYPE_U8 : CK_DTYPE_F32);
        if (not_after[i] == CK_OP_RMSNORM || not_after[i] == CK_OP_LAYERNORM)
            s2->in[1] = INPUT(&r, v, CK_DTYPE_F32, cols);
        else if (not_after[i] == CK_OP_ROPE)
            s2->in[1] = INPUT(&r, pos, CK_DTYPE_I32, rows);
        else if (not_after[i] == CK_OP_LINEAR)
            s2->in[1] = INPUT(&r, wsq, CK_DTYPE_F32, cols, cols);
        EXPECT_BAD(&r);
    }
    FRESH(CK_OP_RMSNORM, CK_DTYPE_F32); /* a norm, then a norm */
    step(&r, CK_OP_RMSNORM, CK_DTYPE_F32);
    EXPECT_BAD(&r);
    FRESH(CK_OP_LINEAR, CK_DTYPE_F32); /* linear runs alone */
    s->in[1] = INPUT(&r, wsq, CK_DTYPE_F32, cols, cols);
    GOOD();
    step(&r, CK_OP_SILU, CK_DTYPE_F32);
    EXPECT_BAD(&r);
    ck_recipe_init(&r); /* rope runs alone */
    s = step(&r, CK_OP_ROPE, CK_DTYPE_F32);
    s->in[0] = INPUT(&r, x, CK_DTYPE_F32, rows, 1, cols);
    s->in[1] = INPUT(&r, pos, CK_DTYPE_I32, rows);
    step(&r, CK_OP_SCALE, CK_DTYPE_F32);
    EXPECT_BAD(&r);

    /* ---- the recipe's structure ---- */
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    step(&r, CK_OP_SILU, CK_DTYPE_F32)->in[0] = ix; /* slot 0 of a later step is the chain's */
    EXPECT_BAD(&r);
    const int bad_in[] = {1, 5, CK_MAX_INPUTS, -2, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_in / sizeof bad_in[0]; i++) {
        FRESH(CK_OP_SILU, CK_DTYPE_F32);
        s->in[0] = bad_in[i];
        EXPECT_BAD(&r);
        FRESH(CK_OP_ADD, CK_DTYPE_F32);
        INPUT(&r, y, CK_DTYPE_F32, rows, cols);
        s->in[1] = bad_in[i] == 1 ? 2 : bad_in[i];
        EXPECT_BAD(&r);
    }
    FRESH(CK_OP_SILU, CK_DTYPE_F32); /* a slot the op does not have */
    s->in[1] = INPUT(&r, y, CK_DTYPE_F32, rows, cols);
    EXPECT_BAD(&r);
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    s->in[2] = ix;
    EXPECT_BAD(&r);
    FRESH(CK_OP_SWIGLU, CK_DTYPE_F32); /* a required slot not given */
    EXPECT_BAD(&r);
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    step(&r, CK_OP_MUL, CK_DTYPE_F32);
    EXPECT_BAD(&r);
    FRESH(CK_OP_SILU, CK_DTYPE_F32); /* an input no step reads */
    INPUT(&r, y, CK_DTYPE_F32, rows, cols);
    EXPECT_BAD(&r);
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    r.n_steps = 0;
    EXPECT_BAD(&r);
    r.n_steps = CK_MAX_STEPS + 1;
    EXPECT_BAD(&r);
    r.n_steps = -1;
    EXPECT_BAD(&r);
    FRESH(CK_OP_SILU, CK_DTYPE_F32);
    r.n_inputs = CK_MAX_INPUTS + 1;
    EXPECT_BAD(&r);
    r.n_inputs = -1;
    EXPECT_BAD(&r);
    r.n_inputs = 0;
    EXPECT_BAD(&r);
    const int bad_ndim[] = {0, -1, CK_MAX_DIMS + 1};
    for (size_t i = 0; i < sizeof bad_ndim / sizeof bad_ndim[0]; i++) {
        FRESH(CK_OP_SILU, CK_DTYPE_F32);
        r.inputs[ix].ndim = bad_ndim[i];
        EXPECT_BAD(&r);
    }
    ck__clear_error();
    ck_recipe_init(&r);
    ck_assert_int_eq(ck_recipe_input(&r, x, CK_DTYPE_F32, 0, SHAPE(1)), -1);
    CHECK(ck_last_error()[0] != '\0');
    ck_assert_int_eq(ck_recipe_input(&r, x, CK_DTYPE_F32, CK_MAX_DIMS + 1, SHAPE(1, 1, 1, 1, 1)),
                     -1);
    for (int i = 0; i < CK_MAX_INPUTS; i++) ck_assert_int_eq(INPUT(&r, x, CK_DTYPE_F32, n), i);
    ck__clear_error();
    ck_assert_int_eq(INPUT(&r, x, CK_DTYPE_F32, n), -1);
    CHECK(ck_last_error()[0] != '\0');
    for (int i = 0; i < CK_MAX_STEPS; i++)
        ck_assert_ptr_nonnull(ck_recipe_step(&r, CK_OP_SILU, CK_DTYPE_F32));
    ck__clear_error();
    ck_assert_ptr_null(ck_recipe_step(&r, CK_OP_SILU, CK_DTYPE_F32));
    CHECK(ck_last_error()[0] != '\0');
    const int64_t bad_dim[] = {0, -3, INT64_MIN};
    for (size_t i = 0; i < sizeof bad_dim / sizeof bad_dim[0]; i++) {
        FRESH(CK_OP_SILU, CK_DTYPE_F32);
        r.inputs[ix].shape[1] = bad_dim[i];
        EXPECT_BAD(&r);
    }
    FRESH(CK_OP_SILU, CK_DTYPE_F32); /* 2^80 elements */
    r.inputs[ix].shape[0] = (int64_t)1 << 40;
    r.inputs[ix].shape[1] = (int64_t)1 << 40;
    EXPECT_BAD(&r);
    r.inputs[ix].ndim = 4;
    r.inputs[ix].shape[0] = r.inputs[ix].shape[1] = r.inputs[ix].shape[2] = r.inputs[ix].shape[3] =
        INT64_MAX;
    EXPECT_BAD(&r);

    /* ---- parameters ---- */
    const float bad_p[] = {1.0f, 1.5f, -0.1f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_p / sizeof bad_p[0]; i++) {
        FRESH(CK_OP_DROPOUT, CK_DTYPE_F32);
        s->p = bad_p[i];
        EXPECT_BAD(&r);
    }
    const float bad_eps[] = {-1.0f, INFINITY, NAN};
    for (size_t i = 0; i < sizeof bad_eps / sizeof bad_eps[0]; i++) {
        FRESH(CK_OP_RMSNORM, CK_DTYPE_F32);
        s->eps = bad_eps[i];
        EXPECT_BAD(&r);
        FRESH(CK_OP_LAYERNORM, CK_DTYPE_F32);
        s->eps = bad_eps[i];
        EXPECT_BAD(&r);
    }
    FRESH(CK_OP_SCALE, CK_DTYPE_F32);
    s->alpha = NAN;
    EXPECT_BAD(&r);
    s->alpha = -INFINITY;
    EXPECT_BAD(&r);
    const float bad_base[] = {0.0f, -2.0f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_base / sizeof bad_base[0]; i++) {
        ck_recipe_init(&r);
        s = step(&r, CK_OP_ROPE, CK_DTYPE_F32);
        s->in[0] = INPUT(&r, x, CK_DTYPE_F32, rows, 1, cols);
        s->in[1] = INPUT(&r, pos, CK_DTYPE_I32, rows);
        s->base = bad_base[i];
        EXPECT_BAD(&r);
    }

    /* ---- out overlapping an input other than in place ---- */
    ck_recipe_init(&r);
    ix = INPUT(&r, big, CK_DTYPE_F32, n);
    step(&r, CK_OP_SILU, CK_DTYPE_F32)->in[0] = ix;
    expect_bad_at(&r, big + 1, obytes, obytes, 0, __LINE__);
    expect_bad_at(&r, big + n - 1, obytes, obytes, 0, __LINE__);
    FRESH(CK_OP_LINEAR, CK_DTYPE_F32); /* a GEMM cannot run in place */
    s->in[1] = INPUT(&r, wsq, CK_DTYPE_F32, cols, cols);
    expect_bad_at(&r, x, obytes, obytes, 0, __LINE__);

#undef FRESH
#undef GOOD
    free(x);
    free(y);
    free(v);
    free(wsq);
    free(big);
    free(big2);
    free(out);
}
END_TEST

int main(void) {
    Suite *s = suite_create("replay_ref");
    TCase *tc = ck_test_tcase(s, "dtypes", 120);
    tcase_add_test(tc, t_f16_widen_all);
    tcase_add_test(tc, t_f16_narrow_special);
    tcase_add_test(tc, t_f16_narrow_sweep);
    tcase_add_test(tc, t_bf16_oracle_self);
    tcase_add_test(tc, t_bf16_narrow_sweep);
    tcase_add_test(tc, t_roundtrip_all);
    tc = ck_test_tcase(s, "philox", 60);
    tcase_add_test(tc, t_philox_kat);
    tc = ck_test_tcase(s, "elementwise", 60);
    tcase_add_test(tc, t_unary_hand);
    tcase_add_test(tc, t_relu_hand);
    tcase_add_test(tc, t_glu_hand);
    tcase_add_test(tc, t_add_mul_bcast);
    tcase_add_test(tc, t_cast_hand);
    tc = ck_test_tcase(s, "norms", 60);
    tcase_add_test(tc, t_rmsnorm_const);
    tcase_add_test(tc, t_layernorm_const);
    tcase_add_test(tc, t_norm_random);
    tc = ck_test_tcase(s, "rope", 60);
    tcase_add_test(tc, t_rope_identities);
    tcase_add_test(tc, t_rope_4d);
    tc = ck_test_tcase(s, "dropout", 60);
    tcase_add_test(tc, t_dropout_p0);
    tcase_add_test(tc, t_dropout_mask_stats);
    tcase_add_test(tc, t_dropout_offset_and_mask);
    tc = ck_test_tcase(s, "chains", 60);
    tcase_add_test(tc, t_fused_chains);
    tcase_add_test(tc, t_in_place);
    tc = ck_test_tcase(s, "linear", 60);
    tcase_add_test(tc, t_linear_hand);
    tcase_add_test(tc, t_linear_random);
    tc = ck_test_tcase(s, "bad", 60);
    tcase_add_test(tc, t_bad_recipes);
    return ck_test_run(s);
}
