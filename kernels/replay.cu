/* The replay kernels: one launch runs a whole recipe (kernels/plan.h) in one
 * pass over memory. Built by nvcc into a fatbin (sm_80, sm_86, sm_89, sm_90
 * and compute_90 PTX) that the library embeds and launch.c loads with
 * cuModuleLoadData; nothing here is linked into a host object.
 *
 * Every kernel takes the plan by value as its only parameter. It is declared
 * __grid_constant__ (sm_70+), so taking its address (the step interpreter
 * reads &plan.steps[k]) reads the parameter bank in place instead of copying
 * 1.6 KiB into each thread's local memory.
 *
 * All arithmetic goes through plan.h's shared CK_HD code (ck__ew_step, the
 * Philox generator, ck__round, the element-wise math), and the fatbin is
 * compiled with --fmad=false so that a*b+c is not contracted into an FMA the
 * CPU reference does not do: a result differs from ck_replay_host only where
 * CUDA's expf/erff/tanhf/sincosf differ from libm, or in the order of a norm's
 * fp32 reduction.
 *
 * Loads and stores. On the vector path (plan.vec: every pointer 16-byte
 * aligned, and cols % 8 == 0 wherever a row index is used) a thread moves
 * CK_VEC = 8 elements at a time, a tail shorter than 8 going the scalar way:
 * one uint4 of f16/bf16, two float4 of f32, one uint2 of u8 mask bytes
 * (RoPE: 8 or 4 pairs, see launch.h). Otherwise it reads and writes each
 * element alone through ck__load / ck__store. The 16-bit conversions on the
 * vector path use the hardware's cvt.rn.f16x2.f32 / cvt.rn.bf16x2.f32 (round
 * to nearest even, subnormals kept, overflow to inf: the rule plan.h
 * implements) and the exact f16 -> f32 widening; the one place they differ
 * from plan.h is NaN (the hardware returns the canonical NaN, plan.h keeps
 * the payload), so a NaN element goes through plan.h's function instead.
 * Stores are therefore bit-identical to ck__store's. (fp32 subnormals are
 * kept too: nothing is built with -ftz or fast math.)
 *
 * Launch geometry (launch.h, launch.c): 256-thread blocks, a 1-D grid of at
 * most 8 blocks per SM, grid-stride loops; ew: 8 elements per thread per
 * iteration; norm: a warp per row up to 1024 columns (8 rows a block), a
 * block per row above, the row kept in registers up to 4 chunks per thread
 * (8192 columns for a block); rope: 8, 4 or 1 pairs per work item.
 *
 * No kernel synchronises anything beyond its block (norms: __syncthreads
 * around the one-float-per-warp partial sums). */
#include "launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define CK_DEV static __device__ __forceinline__
#else
#error "the replay kernels need sm_80 or newer (cvt.rn.bf16x2.f32)"
#endif

/* ---- conversions: hardware, with plan.h's answer for NaN --------------- */

CK_DEV float f16_bits_to_f32(uint32_t h) {
    h &= 0xffffu;
    if ((h & 0x7fffu) > 0x7c00u) /* NaN: keep plan.h's payload rule */
        return ck__f16_to_f32((uint16_t)h);
    return __half2float(__ushort_as_half((unsigned short)h));
}

/* Two values of dtype (f16 or bf16) packed into one word, lo first. */
CK_DEV uint32_t pack2(float lo, float hi, int32_t dtype) {
    if (lo != lo || hi != hi) {
        if (dtype == CK_DTYPE_F16)
            return (uint32_t)ck__f32_to_f16(lo) | ((uint32_t)ck__f32_to_f16(hi) << 16);
        return (uint32_t)ck__f32_to_bf16(lo) | ((uint32_t)ck__f32_to_bf16(hi) << 16);
    }
    if (dtype == CK_DTYPE_F16) {
        __half2 h = __floats2half2_rn(lo, hi);
        return (uint32_t)__half_as_ushort(__low2half(h)) |
               ((uint32_t)__half_as_ushort(__high2half(h)) << 16);
    }
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return (uint32_t)__bfloat16_as_ushort(__low2bfloat16(h)) |
           ((uint32_t)__bfloat16_as_ushort(__high2bfloat16(h)) << 16);
}

CK_DEV void unpack2(uint32_t w, int32_t dtype, float *v) {
    if (dtype == CK_DTYPE_F16) {
        v[0] = f16_bits_to_f32(w);
        v[1] = f16_bits_to_f32(w >> 16);
    } else {
        v[0] = ck__bf16_to_f32((uint16_t)(w & 0xffffu));
        v[1] = ck__bf16_to_f32((uint16_t)(w >> 16));
    }
}

/* ---- W-wide accesses (W = 8 or 4; element i is W-aligned) --------------- */

/* v[0..W) = elements i .. i+W-1 of a float tensor. */
template <int W> CK_DEV void load_w(const void *p, int32_t dtype, int64_t i, float *v) {
    if (dtype == CK_DTYPE_F32) {
        const float4 *q = reinterpret_cast<const float4 *>(static_cast<const float *>(p) + i);
#pragma unroll
        for (int k = 0; k < W / 4; k++) {
            float4 f = q[k];
            v[4 * k] = f.x;
            v[4 * k + 1] = f.y;
            v[4 * k + 2] = f.z;
            v[4 * k + 3] = f.w;
        }
        return;
    }
    const uint16_t *h = static_cast<const uint16_t *>(p) + i;
    if constexpr (W == 8) {
        const uint4 u = *reinterpret_cast<const uint4 *>(h);
        unpack2(u.x, dtype, v);
        unpack2(u.y, dtype, v + 2);
        unpack2(u.z, dtype, v + 4);
        unpack2(u.w, dtype, v + 6);
    } else {
        const uint2 u = *reinterpret_cast<const uint2 *>(h);
        unpack2(u.x, dtype, v);
        unpack2(u.y, dtype, v + 2);
    }
}

/* Elements i .. i+W-1 of out = v[0..W), converted to dtype as ck__store does. */
template <int W> CK_DEV void store_w(void *p, int32_t dtype, int64_t i, const float *v) {
    if (dtype == CK_DTYPE_F32) {
        float4 *q = reinterpret_cast<float4 *>(static_cast<float *>(p) + i);
#pragma unroll
        for (int k = 0; k < W / 4; k++)
            q[k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
        return;
    }
    if (dtype == CK_DTYPE_U8) {
        uint32_t w[W / 4];
#pragma unroll
        for (int k = 0; k < W / 4; k++)
            w[k] = (uint32_t)(v[4 * k] != 0.0f) | ((uint32_t)(v[4 * k + 1] != 0.0f) << 8) |
                   ((uint32_t)(v[4 * k + 2] != 0.0f) << 16) |
                   ((uint32_t)(v[4 * k + 3] != 0.0f) << 24);
        uint8_t *b = static_cast<uint8_t *>(p) + i;
        if constexpr (W == 8)
            *reinterpret_cast<uint2 *>(b) = make_uint2(w[0], w[1]);
        else
            *reinterpret_cast<uint32_t *>(b) = w[0];
        return;
    }
    uint32_t w[W / 2];
#pragma unroll
    for (int k = 0; k < W / 2; k++)
        w[k] = pack2(v[2 * k], v[2 * k + 1], dtype);
    uint16_t *h = static_cast<uint16_t *>(p) + i;
    if constexpr (W == 8)
        *reinterpret_cast<uint4 *>(h) = make_uint4(w[0], w[1], w[2], w[3]);
    else
        *reinterpret_cast<uint2 *>(h) = make_uint2(w[0], w[1]);
}

/* ---- CK_VEC-element chunks ------------------------------------------------
 * A chunk always holds CK_VEC values. When `full` (the plan is vectorisable
 * and the chunk whole) it moves with W-wide accesses; otherwise the cnt
 * valid values are read one by one and the rest are 0 (computed on, never
 * stored). Either way the step interpreter runs with a constant count, so
 * v[] stays in registers, and there is one copy of the chain's code per
 * kernel: the choice is a uniform branch around the loads and stores. */

CK_DEV void load_chunk(const void *p, int32_t dtype, int64_t i, int cnt, bool full, float *v) {
    if (full) {
        load_w<CK_VEC>(p, dtype, i, v);
        return;
    }
#pragma unroll
    for (int j = 0; j < CK_VEC; j++)
        v[j] = j < cnt ? ck__load(p, dtype, i + j) : 0.0f;
}

CK_DEV void store_chunk(void *p, int32_t dtype, int64_t i, int cnt, bool full, const float *v) {
    if (full) {
        store_w<CK_VEC>(p, dtype, i, v);
        return;
    }
#pragma unroll
    for (int j = 0; j < CK_VEC; j++)
        if (j < cnt)
            ck__store(p, dtype, i + j, v[j]);
}

/* A step's operand for elements i .. i+CK_VEC-1; col = i % cols, where a
 * row vector is read (a full chunk never straddles a row: the plan is only
 * vectorisable with a row vector when cols % CK_VEC == 0). */
CK_DEV void load_operand(const ck__operand &o, int64_t cols, int64_t i, int64_t col, int cnt,
                         bool full, float *a) {
    if (!o.ptr) {
#pragma unroll
        for (int j = 0; j < CK_VEC; j++)
            a[j] = 0.0f;
        return;
    }
    if (!o.bcast) {
        load_chunk(o.ptr, o.dtype, i, cnt, full, a);
        return;
    }
    if (full) {
        load_w<CK_VEC>(o.ptr, o.dtype, col, a);
        return;
    }
#pragma unroll
    for (int j = 0; j < CK_VEC; j++) {
        int64_t c = col + j;
        while (c >= cols) /* cols may be shorter than a chunk */
            c -= cols;
        a[j] = j < cnt ? ck__load(o.ptr, o.dtype, c) : 0.0f;
    }
}

/* Steps first .. n_steps-1 on the chunk v of elements i .. (see above). */
CK_DEV void run_steps(const ck__plan &p, int first, float *v, int64_t i, int64_t col, int cnt,
                      bool full) {
    for (int k = first; k < p.n_steps; k++) {
        const ck__pstep *s = &p.steps[k];
        float a[CK_VEC], b[CK_VEC];
        load_operand(s->src[0], p.cols, i, col, cnt, full, a);
        load_operand(s->src[1], p.cols, i, col, cnt, full, b);
        ck__ew_step(s, v, a, b, (uint64_t)i, CK_VEC);
    }
}

/* ---- element-wise chain -------------------------------------------------- */

extern "C" __global__ void __launch_bounds__(CK_REPLAY_BLOCK)
    ck_replay_ew(const __grid_constant__ ck__plan plan) {
    const ck__plan &p = plan;
    const int64_t n = p.n, cols = p.cols > 0 ? p.cols : 1;
    const int64_t nchunks = (n + CK_VEC - 1) / CK_VEC;
    const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    /* i % cols, kept up to date without a 64-bit division per chunk */
    int64_t col = (first * CK_VEC) % cols;
    const int64_t dcol = (stride * CK_VEC) % cols;
    for (int64_t c = first; c < nchunks; c += stride) {
        const int64_t i = c * CK_VEC;
        const int cnt = n - i < CK_VEC ? (int)(n - i) : CK_VEC;
        const bool full = p.vec && cnt == CK_VEC;
        float v[CK_VEC];
        if (p.x) {
            load_chunk(p.x, p.x_dtype, i, cnt, full, v);
        } else { /* dropout_mask reads nothing */
#pragma unroll
            for (int j = 0; j < CK_VEC; j++)
                v[j] = 0.0f;
        }
        run_steps(p, 0, v, i, col, cnt, full);
        store_chunk(p.out, p.out_dtype, i, cnt, full, v);
        col += dcol;
        if (col >= cols)
            col -= cols;
    }
}

/* ---- rmsnorm / layernorm head + element-wise chain ---------------------- */

CK_DEV float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The sum of v over the row's group: a warp (shuffles only) or the block
 * (shuffles, then one float per warp in shared memory: warp w writes red[w],
 * lane l of every warp reads red[l], no two lanes share a bank). Every
 * thread of the group gets the same bits. */
CK_DEV float group_sum(float v, bool per_warp, float *red) {
    v = warp_sum(v);
    if (per_warp)
        return v;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? red[lane] : 0.0f;
    t = warp_sum(t);
    __syncthreads(); /* red is free for the next sum */
    return t;
}

CK_DEV int chunk_len(int64_t cols, int64_t c) {
    return cols - c * CK_VEC < CK_VEC ? (int)(cols - c * CK_VEC) : CK_VEC;
}

/* Rows of the plan, each by one group of gs threads (thread gt of it): a
 * warp or the block. With `cache` the thread's chunks of the row (at most
 * CK_NORM_CACHE) stay in registers between the passes and x is read once;
 * without, each pass reads x again (from L2, mostly). Layernorm: the mean,
 * then the biased variance around it (two passes); rmsnorm: the mean of
 * squares. rstd = 1 / sqrtf(... + eps) with IEEE sqrt and division, as on
 * the CPU. Then y = ((x - mean) * rstd) * w + b, rounded to the norm step's
 * dtype, the rest of the chain, and the store. */
extern "C" __global__ void __launch_bounds__(CK_REPLAY_BLOCK)
    ck_replay_norm(const __grid_constant__ ck__plan plan) {
    __shared__ float red[CK_REPLAY_BLOCK / 32];
    const ck__plan &p = plan;
    const bool per_warp = ck__norm_row_per_warp(&p);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t row, row_step;
    int gt, gs;
    if (per_warp) {
        const int wpb = blockDim.x >> 5;
        row = (int64_t)blockIdx.x * wpb + warp;
        row_step = (int64_t)gridDim.x * wpb;
        gt = lane;
        gs = 32;
    } else {
        row = blockIdx.x;
        row_step = gridDim.x;
        gt = threadIdx.x;
        gs = blockDim.x;
    }
    const int64_t cols = p.cols, nch = (cols + CK_VEC - 1) / CK_VEC;
    const bool cache = (nch + gs - 1) / gs <= CK_NORM_CACHE;
    const bool vec = p.vec != 0;
    const ck__pstep *s0 = &p.steps[0];
    const bool ln = s0->op == CK_OP_LAYERNORM;
    const float eps = s0->f, fcols = (float)cols;
    for (; row < p.rows; row += row_step) {
        const int64_t base = row * cols;
        float xs[CK_NORM_CACHE][CK_VEC];
        /* pass 1: sum of x (layernorm) or of x^2 (rmsnorm); padding is 0 */
        float acc = 0.0f;
        if (cache) {
#pragma unroll
            for (int q = 0; q < CK_NORM_CACHE; q++) {
                const int64_t c = gt + (int64_t)q * gs;
                const int cnt = c < nch ? chunk_len(cols, c) : 0;
                load_chunk(p.x, p.x_dtype, base + c * CK_VEC, cnt, vec && cnt == CK_VEC, xs[q]);
#pragma unroll
                for (int j = 0; j < CK_VEC; j++)
                    acc += ln ? xs[q][j] : xs[q][j] * xs[q][j];
            }
        } else {
            for (int64_t c = gt; c < nch; c += gs) {
                const int cnt = chunk_len(cols, c);
                float x[CK_VEC];
                load_chunk(p.x, p.x_dtype, base + c * CK_VEC, cnt, vec && cnt == CK_VEC, x);
#pragma unroll
                for (int j = 0; j < CK_VEC; j++)
                    acc += ln ? x[j] : x[j] * x[j];
            }
        }
        const float tot = group_sum(acc, per_warp, red);
        float mean = 0.0f, rstd;
        if (ln) {
            /* pass 2: the biased variance around the mean */
            mean = tot / fcols;
            float acc2 = 0.0f;
            if (cache) {
#pragma unroll
                for (int q = 0; q < CK_NORM_CACHE; q++) {
                    const int64_t c = gt + (int64_t)q * gs;
                    const int cnt = c < nch ? chunk_len(cols, c) : 0;
#pragma unroll
                    for (int j = 0; j < CK_VEC; j++) {
                        const float d = xs[q][j] - mean;
                        acc2 += j < cnt ? d * d : 0.0f;
                    }
                }
            } else {
                for (int64_t c = gt; c < nch; c += gs) {
                    const int cnt = chunk_len(cols, c);
                    float x[CK_VEC];
                    load_chunk(p.x, p.x_dtype, base + c * CK_VEC, cnt, vec && cnt == CK_VEC, x);
#pragma unroll
                    for (int j = 0; j < CK_VEC; j++) {
                        const float d = x[j] - mean;
                        acc2 += j < cnt ? d * d : 0.0f;
                    }
                }
            }
            const float var = group_sum(acc2, per_warp, red) / fcols;
            rstd = 1.0f / sqrtf(var + eps);
        } else {
            rstd = 1.0f / sqrtf(tot / fcols + eps);
        }
        /* last pass, one copy of the chain's code: the chunk comes from the
         * registers (picked out with selects, so xs is never indexed
         * dynamically) or from memory */
        int q = 0;
#pragma unroll 1
        for (int64_t c = gt; c < nch; c += gs, q++) {
            const int cnt = chunk_len(cols, c);
            const bool full = vec && cnt == CK_VEC;
            float x[CK_VEC], v[CK_VEC], w[CK_VEC], b[CK_VEC];
            if (cache) {
#pragma unroll
                for (int j = 0; j < CK_VEC; j++) {
                    float t = xs[0][j];
#pragma unroll
                    for (int k = 1; k < CK_NORM_CACHE; k++)
                        t = q == k ? xs[k][j] : t;
                    x[j] = t;
                }
            } else {
                load_chunk(p.x, p.x_dtype, base + c * CK_VEC, cnt, full, x);
            }
            const int64_t c0 = c * CK_VEC;
            load_operand(s0->src[0], cols, c0, c0, cnt, full, w); /* [cols]: by column */
            load_operand(s0->src[1], cols, c0, c0, cnt, full, b);
#pragma unroll
            for (int j = 0; j < CK_VEC; j++) {
                float y = (x[j] - mean) * rstd;
                if (s0->src[0].ptr)
                    y = y * w[j];
                if (s0->src[1].ptr)
                    y = y + b[j];
                v[j] = ck__round(y, s0->dtype);
            }
            run_steps(p, 1, v, base + c0, c0, cnt, full);
            store_chunk(p.out, p.out_dtype, base + c0, cnt, full, v);
        }
    }
}

/* ---- RoPE (rotate-half) --------------------------------------------------- */

template <int W> CK_DEV void load_any(const void *p, int32_t dtype, int64_t i, float *v) {
    if constexpr (W == 1)
        v[0] = ck__load(p, dtype, i);
    else
        load_w<W>(p, dtype, i, v);
}

template <int W> CK_DEV void store_any(void *p, int32_t dtype, int64_t i, const float *v) {
    if constexpr (W == 1)
        ck__store(p, dtype, i, v[0]);
    else
        store_w<W>(p, dtype, i, v);
}

/* One work item: W pairs (j, j + half) of token r (pos[r]), for hpi heads
 * from h0; the angles are computed once and reused for every head. x and
 * out are [tokens, heads, cols]. */
template <int W> CK_DEV void rope_run(const ck__plan &p) {
    const int64_t cols = p.cols, half = cols / 2, per_row = half / W;
    const int64_t hpi = ck__rope_heads_per_item(&p), groups = p.heads / hpi;
    const int64_t items = p.rows * groups * per_row; /* rope's rows are tokens */
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t it = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; it < items; it += stride) {
        const int64_t t = it / per_row, r = t / groups;
        const int64_t j0 = (it - t * per_row) * W, h0 = (t - r * groups) * hpi;
        const float pos = p.pos_dtype == CK_DTYPE_I64
                              ? (float)static_cast<const int64_t *>(p.pos)[r]
                              : (float)static_cast<const int32_t *>(p.pos)[r];
        float cs[W], sn[W];
#pragma unroll
        for (int k = 0; k < W; k++)
            sincosf(pos * p.inv_freq[j0 + k], &sn[k], &cs[k]); /* precise, not __sincosf */
        for (int64_t h = h0; h < h0 + hpi; h++) {
            const int64_t base = (r * p.heads + h) * cols + j0;
            float x1[W], x2[W], o1[W], o2[W];
            load_any<W>(p.x, p.x_dtype, base, x1);
            load_any<W>(p.x, p.x_dtype, base + half, x2);
#pragma unroll
            for (int k = 0; k < W; k++) {
                o1[k] = x1[k] * cs[k] - x2[k] * sn[k];
                o2[k] = x2[k] * cs[k] + x1[k] * sn[k];
            }
            store_any<W>(p.out, p.out_dtype, base, o1);
            store_any<W>(p.out, p.out_dtype, base + half, o2);
        }
    }
}

extern "C" __global__ void __launch_bounds__(CK_REPLAY_BLOCK)
    ck_replay_rope(const __grid_constant__ ck__plan plan) {
    switch (ck__rope_width(&plan)) {
    case 8: rope_run<8>(plan); break;
    case 4: rope_run<4>(plan); break;
    default: rope_run<1>(plan); break;
    }
}
