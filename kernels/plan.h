/* The validated form of a recipe that both executors run: the CPU reference
 * (ref.c) and the CUDA kernels (replay.cu, launched by launch.c). It is built
 * once by registry.c (ck__plan_build) and passed to a kernel by value, so it
 * holds only fixed-width fields and pointers.
 *
 * Everything that decides a result bit lives here as CK_HD code shared by the
 * two executors: dtype conversion and rounding, the element-wise math, the
 * Philox generator and the step interpreter. The executors differ only in how
 * they load, store and reduce, so a GPU result can differ from the CPU one
 * only where the math library does (expf, erff, tanhf, sincosf, rsqrtf) or in
 * the order of a reduction. */
#ifndef CK_KERNELS_PLAN_H
#define CK_KERNELS_PLAN_H

#include "ckalloc/replay.h"

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define CK_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define CK_HD static inline
#endif

enum {
    CK_PLAN_EW = 0,     /* element-wise chain */
    CK_PLAN_NORM = 1,   /* rmsnorm / layernorm head + element-wise chain */
    CK_PLAN_ROPE = 2,
    CK_PLAN_LINEAR = 3
};

/* The widest access: 8 elements of a 16-bit dtype, two float4 of fp32. */
#define CK_VEC 8
/* Longest RoPE head_dim (its inverse frequencies travel in the plan). */
#define CK_ROPE_MAX_DIM 512

/* One operand of a step besides the running value. */
typedef struct ck__operand {
    const void *ptr;   /* NULL: not given */
    int32_t dtype;
    int32_t bcast;     /* 1: a [cols] row vector, element i reads [i % cols] */
} ck__operand;

typedef struct ck__pstep {
    int32_t op;        /* ck_op */
    int32_t dtype;     /* the result is rounded to this */
    ck__operand src[2];/* binary ops: src[0] is b/up; norms: src[0] weight, src[1] bias */
    float f;           /* scale: alpha; norms: eps; dropout: 1 / (1 - p) */
    uint32_t thresh;   /* dropout: a Philox word below this drops the element */
    uint32_t key[2];   /* dropout: the seed */
    uint64_t offset;   /* dropout: counter offset, in groups of 4 elements */
} ck__pstep;

typedef struct ck__plan {
    int32_t kind;      /* CK_PLAN_* */
    int32_t n_steps;
    int32_t out_dtype; /* == steps[n_steps - 1].dtype */
    int32_t vec;       /* 1: every pointer 16-byte aligned, and cols % CK_VEC == 0
                          where rows matter (norms, rope, broadcast operands) */
    int64_t n;         /* output elements */
    int64_t rows, cols;/* n = rows * cols, cols the last dim (rope: rows are tokens and
                          n = rows * heads * cols; linear: rows = m, cols = nn) */
    void *out;
    /* The first step's running input: x (gate for the GLUs, a for add/mul).
     * NULL for dropout_mask, which reads nothing. */
    const void *x;
    int32_t x_dtype;
    int32_t pad0;
    ck__pstep steps[CK_MAX_STEPS];
    /* rope: x is [rows, heads, cols], pos is [rows] */
    const void *pos;
    int32_t pos_dtype;
    int32_t heads;
    float inv_freq[CK_ROPE_MAX_DIM / 2]; /* base^(-2j/cols), computed once on the host */
    /* linear: out[m, nn] = x[m, k] . w[nn, k]^T (+ b[nn]); all one dtype */
    int64_t m, nn, k;
    const void *w;
    const void *b;
    uint64_t bytes;    /* bytes read + written (the host backend's simulated clock) */
    double flops;      /* floating-point operations (ck_recipe_cost's count; the same clock) */
} ck__plan;

/* ---- dtypes: exact widening, round-to-nearest-even narrowing ---------- */

CK_HD uint32_t ck__f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
CK_HD float ck__u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

CK_HD float ck__bf16_to_f32(uint16_t h) { return ck__u2f((uint32_t)h << 16); }

CK_HD uint16_t ck__f32_to_bf16(float f) {
    uint32_t u = ck__f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

CK_HD float ck__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return ck__u2f(sign | 0x7f800000u | (man << 13)); /* inf, NaN */
    if (exp == 0) {
        if (man == 0) return ck__u2f(sign);
        /* subnormal: man * 2^-24, exact in fp32 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return ck__u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

CK_HD uint16_t ck__f32_to_f16(float f) {
    uint32_t u = ck__f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* below the smallest normal (2^-14): a subnormal multiple of 2^-24,
         * rounded to nearest-even by the shift below */
        uint32_t e = a >> 23;
        if (e < 102) return sign; /* < 2^-25: rounds to zero */
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = a - 0x38000000u; /* rebias 127 -> 15, keeping 23 mantissa bits */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

/* v rounded to dtype and widened back: what storing and reloading gives. On
 * the GPU the hardware's conversions (round to nearest even, subnormals kept,
 * overflow to inf: the same rule) do it in one instruction; a NaN takes the
 * code below, which keeps its payload. */
CK_HD float ck__round(float v, int32_t dtype) {
#ifdef __CUDA_ARCH__
    if (v == v) {
        if (dtype == CK_DTYPE_F16) return __half2float(__float2half_rn(v));
        if (dtype == CK_DTYPE_BF16) return __bfloat162float(__float2bfloat16_rn(v));
        return v;
    }
#endif
    if (dtype == CK_DTYPE_F16) return ck__f16_to_f32(ck__f32_to_f16(v));
    if (dtype == CK_DTYPE_BF16) return ck__bf16_to_f32(ck__f32_to_bf16(v));
    return v;
}

/* Element i of a float tensor (f32, f16 or bf16). */
CK_HD float ck__load(const void *p, int32_t dtype, int64_t i) {
    if (dtype == CK_DTYPE_F16) return ck__f16_to_f32(((const uint16_t *)p)[i]);
    if (dtype == CK_DTYPE_BF16) return ck__bf16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* Store v (already rounded, or to be rounded now) as element i. */
CK_HD void ck__store(void *p, int32_t dtype, int64_t i, float v) {
    if (dtype == CK_DTYPE_F16) ((uint16_t *)p)[i] = ck__f32_to_f16(v);
    else if (dtype == CK_DTYPE_BF16) ((uint16_t *)p)[i] = ck__f32_to_bf16(v);
    else if (dtype == CK_DTYPE_U8) ((uint8_t *)p)[i] = (uint8_t)(v != 0.0f);
    else ((float *)p)[i] = v;
}

/* ---- Philox4x32-10 (Salmon et al., SC'11), as in Random123 and cuRAND -- */

CK_HD void ck__philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]) {
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The four Philox words for elements 4g .. 4g+3 of a dropout step: counter
 * (offset + g) as a 64-bit value in words 0-1, words 2-3 zero; key = seed. */
CK_HD void ck__dropout_words(const ck__pstep *s, uint64_t g, uint32_t out[4]) {
    uint64_t c = s->offset + g;
    uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), 0u, 0u};
    ck__philox4x32_10(ctr, s->key, out);
}

/* ---- element-wise math, fp32 (the forms PyTorch's CUDA kernels use) ---- */

CK_HD float ck__silu(float x) { return x / (1.0f + expf(-x)); }
CK_HD float ck__gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
CK_HD float ck__gelu_tanh(float x) {
    const float beta = 0.79788456080286536f, kappa = 0.044715f; /* sqrt(2/pi) */
    float inner = beta * (x + kappa * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
}
CK_HD float ck__relu(float x) { return x > 0.0f ? x : (x != x ? x : 0.0f); /* NaN stays NaN */ }

/* Apply an element-wise step to v[0..cnt), the elements i0 .. i0+cnt-1 of
 * the output; a[] and b[] hold the step's src[0] and src[1] values for the
 * same elements (unused by unary ops; b is for an element-wise op with two
 * operands besides the running value, which no op has yet). Rounds every result to the step's
 * dtype. The caller handles norms, RoPE and linear. */
CK_HD void ck__ew_step(const ck__pstep *s, float *v, const float *a, const float *b, uint64_t i0,
                       int cnt) {
    (void)b;
    switch (s->op) {
    case CK_OP_SILU:
        for (int j = 0; j < cnt; j++) v[j] = ck__silu(v[j]);
        break;
    case CK_OP_GELU_ERF:
        for (int j = 0; j < cnt; j++) v[j] = ck__gelu_erf(v[j]);
        break;
    case CK_OP_GELU_TANH:
        for (int j = 0; j < cnt; j++) v[j] = ck__gelu_tanh(v[j]);
        break;
    case CK_OP_RELU:
        for (int j = 0; j < cnt; j++) v[j] = ck__relu(v[j]);
        break;
    case CK_OP_SWIGLU:
        for (int j = 0; j < cnt; j++) v[j] = ck__silu(v[j]) * a[j];
        break;
    case CK_OP_GEGLU_ERF:
        for (int j = 0; j < cnt; j++) v[j] = ck__gelu_erf(v[j]) * a[j];
        break;
    case CK_OP_GEGLU_TANH:
        for (int j = 0; j < cnt; j++) v[j] = ck__gelu_tanh(v[j]) * a[j];
        break;
    case CK_OP_ADD:
        for (int j = 0; j < cnt; j++) v[j] = v[j] + a[j];
        break;
    case CK_OP_MUL:
        for (int j = 0; j < cnt; j++) v[j] = v[j] * a[j];
        break;
    case CK_OP_SCALE:
        for (int j = 0; j < cnt; j++) v[j] = v[j] * s->f;
        break;
    case CK_OP_DROPOUT:
    case CK_OP_DROPOUT_MASK: {
        uint32_t w[4];
        uint64_t g = i0 >> 2;
        ck__dropout_words(s, g, w);
        for (int j = 0; j < cnt; j++) {
            uint64_t i = i0 + (uint64_t)j;
            if ((i >> 2) != g) {
                g = i >> 2;
                ck__dropout_words(s, g, w);
            }
            int keep = w[i & 3u] >= s->thresh;
            if (s->op == CK_OP_DROPOUT) v[j] = keep ? v[j] * s->f : 0.0f;
            else v[j] = keep ? 1.0f : 0.0f;
        }
        break;
    }
    default: /* CK_OP_CAST: only the rounding below */
        break;
    }
    if (s->dtype == CK_DTYPE_F16 || s->dtype == CK_DTYPE_BF16)
        for (int j = 0; j < cnt; j++) v[j] = ck__round(v[j], s->dtype);
}

/* ---- the ends of the library that use a plan ---------------------------- */

#ifndef __CUDACC__
struct ck_pool;
/* registry.c: check r, build its plan with out as the result. */
ck_status ck__plan_build(const ck_recipe *r, void *out, size_t out_bytes, ck__plan *plan);
/* registry.c: the inputs of a checked r whose data is read: address, size in
 * bytes and input index (index may be NULL). Returns how many. */
int ck__recipe_spans(const ck_recipe *r, const void **ptrs, size_t *bytes, int *index);
/* ref.c: run a plan on this thread (host memory). Never fails. */
void ck__ref_run(const ck__plan *plan);
#endif

#endif
