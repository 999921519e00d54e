/* The CPU reference executor: runs a validated plan (plan.h) on this thread,
 * over host memory. It is what the host backend runs for ck_replay, what
 * ck_replay_host runs, and the oracle the CUDA kernels (replay.cu) are tested
 * against, so it is written for clarity and exactness, not speed:
 *
 * - Every result bit that the GPU must reproduce comes from the shared CK_HD
 *   code in plan.h (ck__load / ck__store / ck__round, ck__ew_step with its
 *   element-wise math and Philox dropout). Nothing here re-implements a
 *   conversion or an op, so the two executors can differ only in the math
 *   library and in the order of a reduction.
 * - One plain pass per output element (per row for the norms), in the same
 *   CK_VEC-element chunks with the same flat element index the kernels use,
 *   so chunk boundaries cannot change a dropout stream.
 * - Reductions (norm statistics, GEMM dot products) accumulate in double and
 *   are converted to float once: the result is then (almost always) the
 *   correctly rounded value, the thing a GPU reduction in fp32 is measured
 *   against, and independent of summation order.
 *
 * The plan has been checked by ck__plan_build, so nothing here fails. */
#include "plan.h"

#include <math.h>
#include <stdint.h>

/* The src[k] operand value of element i (0 when the operand is not given). */
static float operand_at(const ck__operand *o, int64_t i, int64_t cols) {
    if (!o->ptr) return 0.0f;
    return ck__load(o->ptr, o->dtype, o->bcast ? i % cols : i);
}

/* Apply steps[first .. n_steps) to v[0..cnt), the elements i0 .. i0+cnt-1. */
static void apply_steps(const ck__plan *plan, int first, float *v, int64_t i0, int cnt) {
    float a[CK_VEC], b[CK_VEC];
    for (int si = first; si < plan->n_steps; si++) {
        const ck__pstep *s = &plan->steps[si];
        for (int j = 0; j < cnt; j++) {
            a[j] = operand_at(&s->src[0], i0 + j, plan->cols);
            b[j] = operand_at(&s->src[1], i0 + j, plan->cols);
        }
        ck__ew_step(s, v, a, b, (uint64_t)i0, cnt);
    }
}

static void store_chunk(const ck__plan *plan, const float *v, int64_t i0, int cnt) {
    for (int j = 0; j < cnt; j++) ck__store(plan->out, plan->out_dtype, i0 + j, v[j]);
}

/* ---- element-wise chain -------------------------------------------------- */

static void run_ew(const ck__plan *plan) {
    float v[CK_VEC];
    for (int64_t i0 = 0; i0 < plan->n; i0 += CK_VEC) {
        int cnt = plan->n - i0 < CK_VEC ? (int)(plan->n - i0) : CK_VEC;
        for (int j = 0; j < cnt; j++)
            v[j] = plan->x ? ck__load(plan->x, plan->x_dtype, i0 + j) : 0.0f;
        apply_steps(plan, 0, v, i0, cnt);
        store_chunk(plan, v, i0, cnt);
    }
}

/* ---- rmsnorm / layernorm head, then the element-wise tail ---------------- */

static void run_norm(const ck__plan *plan) {
    const ck__pstep *s0 = &plan->steps[0];
    const int64_t cols = plan->cols;
    const float eps = s0->f;
    const ck__operand *w = &s0->src[0], *bias = &s0->src[1];
    const int layer = s0->op == CK_OP_LAYERNORM;
    float v[CK_VEC];
    for (int64_t r = 0; r < plan->rows; r++) {
        const int64_t base = r * cols;
        float mean = 0.0f, rstd;
        if (layer) {
            double sum = 0.0;
            for (int64_t c = 0; c < cols; c++) sum += ck__load(plan->x, plan->x_dtype, base + c);
            mean = (float)(sum / (double)cols);
            double sq = 0.0;
            for (int64_t c = 0; c < cols; c++) {
                double d = (double)ck__load(plan->x, plan->x_dtype, base + c) - (double)mean;
                sq += d * d;
            }
            float var = (float)(sq / (double)cols);
            rstd = 1.0f / sqrtf(var + eps);
        } else {
            double sq = 0.0;
            for (int64_t c = 0; c < cols; c++) {
                double x = ck__load(plan->x, plan->x_dtype, base + c);
                sq += x * x;
            }
            float ms = (float)(sq / (double)cols);
            rstd = 1.0f / sqrtf(ms + eps);
        }
        for (int64_t c0 = 0; c0 < cols; c0 += CK_VEC) {
            int cnt = cols - c0 < CK_VEC ? (int)(cols - c0) : CK_VEC;
            for (int j = 0; j < cnt; j++) {
                int64_t c = c0 + j;
                float x = ck__load(plan->x, plan->x_dtype, base + c);
                float y = layer ? (x - mean) * rstd : x * rstd;
                if (w->ptr) y = y * ck__load(w->ptr, w->dtype, c);
                if (layer && bias->ptr) y = y + ck__load(bias->ptr, bias->dtype, c);
                v[j] = ck__round(y, s0->dtype);
            }
            apply_steps(plan, 1, v, base + c0, cnt);
            store_chunk(plan, v, base + c0, cnt);
        }
    }
}

/* ---- RoPE (rotate-half) --------------------------------------------------- */

static void run_rope(const ck__plan *plan) {
    const int64_t cols = plan->cols, half = cols / 2, heads = plan->heads;
    /* rope's rows are tokens (per [batch, token] pair), one entry of pos each */
    const int64_t tokens = plan->rows;
    for (int64_t r = 0; r < tokens; r++) {
        int64_t p = plan->pos_dtype == CK_DTYPE_I64 ? ((const int64_t *)plan->pos)[r]
                                                    : (int64_t)((const int32_t *)plan->pos)[r];
        float pf = (float)p;
        for (int64_t h = 0; h < heads; h++) {
            const int64_t base = (r * heads + h) * cols;
            for (int64_t j = 0; j < half; j++) {
                float theta = pf * plan->inv_freq[j];
                float c = cosf(theta), s = sinf(theta);
                float x1 = ck__load(plan->x, plan->x_dtype, base + j);
                float x2 = ck__load(plan->x, plan->x_dtype, base + j + half);
                ck__store(plan->out, plan->out_dtype, base + j, x1 * c - x2 * s);
                ck__store(plan->out, plan->out_dtype, base + j + half, x2 * c + x1 * s);
            }
        }
    }
}

/* ---- linear: out = x w^T (+ b) -------------------------------------------- */

static void run_linear(const ck__plan *plan) {
    const int64_t m = plan->m, nn = plan->nn, k = plan->k;
    const int32_t dt = plan->x_dtype;
    for (int64_t i = 0; i < m; i++) {
        for (int64_t o = 0; o < nn; o++) {
            double acc = 0.0;
            for (int64_t t = 0; t < k; t++)
                acc += (double)ck__load(plan->x, dt, i * k + t) *
                       (double)ck__load(plan->w, dt, o * k + t);
            if (plan->b) acc += (double)ck__load(plan->b, dt, o);
            ck__store(plan->out, plan->out_dtype, i * nn + o, (float)acc);
        }
    }
}

void ck__ref_run(const ck__plan *plan) {
    switch (plan->kind) {
    case CK_PLAN_EW: run_ew(plan); break;
    case CK_PLAN_NORM: run_norm(plan); break;
    case CK_PLAN_ROPE: run_rope(plan); break;
    case CK_PLAN_LINEAR: run_linear(plan); break;
    default: break;
    }
}
