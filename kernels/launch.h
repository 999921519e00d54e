/* What the replay kernels (replay.cu) and their launcher (launch.c) agree
 * on: the kernels' names, the block size, and the two decisions both sides
 * derive from a plan (how a norm spreads rows over threads, how wide a RoPE
 * access is). The rest, under !__CUDACC__, is the launcher's interface to
 * the cuda backend (backend_cuda.c), which owns the driver and the context.
 *
 * Geometry (launch.c computes it, the kernels assume it):
 *   every kernel: blocks of CK_REPLAY_BLOCK threads, a 1-D grid of at most
 *   CK_REPLAY_BLOCKS_PER_SM blocks per SM, grid-stride loops over the work;
 *   ew:   one work item = CK_VEC consecutive output elements;
 *   norm: one row per warp (8 rows per block) when cols <= CK_NORM_WARP_MAX_COLS,
 *         else one row per block;
 *   rope: one work item = ck__rope_width() consecutive pairs (j, j + half) of
 *         one position, for every head of that position (or for one head
 *         when there are few positions: ck__rope_heads_per_item).
 */
#ifndef CK_KERNELS_LAUNCH_H
#define CK_KERNELS_LAUNCH_H

#include "plan.h"

#define CK_KERNEL_EW "ck_replay_ew"
#define CK_KERNEL_NORM "ck_replay_norm"
#define CK_KERNEL_ROPE "ck_replay_rope"

#define CK_REPLAY_BLOCK 256
#define CK_REPLAY_BLOCKS_PER_SM 8
/* Rows up to this long are reduced by one warp each (shuffles only). */
#define CK_NORM_WARP_MAX_COLS 1024
/* A norm thread keeps up to this many CK_VEC chunks of its row in registers
 * (one read of x); longer rows are read again for each pass. */
#define CK_NORM_CACHE 4

/* 1: a norm row per warp; 0: a norm row per block. */
CK_HD int ck__norm_row_per_warp(const ck__plan *p) { return p->cols <= CK_NORM_WARP_MAX_COLS; }

/* Pairs a RoPE work item covers: 8 (16-byte 16-bit accesses) when the plan
 * is vectorisable and half = cols / 2 is a multiple of 8, 4 when only
 * cols % 8 == 0 holds, else 1 (scalar accesses). */
CK_HD int ck__rope_width(const ck__plan *p) {
    int64_t half = p->cols / 2;
    if (!p->vec)
        return 1;
    return half % 8 == 0 ? 8 : 4;
}

/* Heads a RoPE work item covers: all of them (the angles are computed once
 * per position and pair) when there are enough items to fill a GPU that
 * way, else one (short sequences with many heads). */
#define CK_ROPE_MIN_ITEMS 65536

CK_HD int64_t ck__rope_heads_per_item(const ck__plan *p) {
    int64_t items = p->rows * (p->cols / 2 / ck__rope_width(p)); /* rows: tokens */
    return items >= CK_ROPE_MIN_ITEMS || p->heads <= 1 ? (p->heads > 0 ? p->heads : 1) : 1;
}

#ifndef __CUDACC__
#include "cuda_abi.h"

/* The driver entry points the launcher calls (resolved by backend_cuda.c;
 * a NULL one makes replay fail with CK_ERR_BACKEND naming it). */
typedef struct ck__gpu_fns {
    ck_pfn_cuModuleLoadData cuModuleLoadData;
    ck_pfn_cuModuleGetFunction cuModuleGetFunction;
    ck_pfn_cuModuleUnload cuModuleUnload;
    ck_pfn_cuLaunchKernel cuLaunchKernel;
    ck_pfn_cuDeviceGetAttribute cuDeviceGetAttribute;
    ck_pfn_cuGetErrorString cuGetErrorString;
} ck__gpu_fns;

/* Per-backend replay state: the kernel module (loaded at the first replay,
 * once, under a lock) and the cuBLASLt handle and its per-shape cache. */
typedef struct ck__gpu ck__gpu;

/* No driver call; NULL when out of host memory. */
ck__gpu *ck__gpu_new(const ck__gpu_fns *fn, CUdevice dev);
/* Queue plan on s: one kernel launch, or one cuBLASLt matmul for a linear.
 * The caller has made the device's primary context current. Never waits. */
ck_status ck__gpu_replay(ck__gpu *g, const ck__plan *plan, CUstream s);
/* 1 if g holds driver state (a loaded module, a cuBLASLt handle) that
 * ck__gpu_free must release with the context current. */
int ck__gpu_has_driver_state(ck__gpu *g);
/* Free g. With `driver`, first unload the module and destroy the cuBLASLt
 * state (the primary context must be current); without (the context could
 * not be made current), only host memory is freed. NULL is fine. */
void ck__gpu_free(ck__gpu *g, int driver);
/* 1 if the library embeds the kernels' fatbin (it was built with nvcc). */
int ck__gpu_kernels_built(void);

/* cuBLASLt, loaded at run time (linear.c). One per ck__gpu. */
typedef struct ck__lt ck__lt;
ck__lt *ck__lt_new(void);
/* y[m, nn] = x[m, k] . w[nn, k]^T (+ b) on s; the context is current. */
ck_status ck__lt_linear(ck__lt *lt, const ck__plan *plan, CUstream s);
int ck__lt_has_handle(ck__lt *lt);
void ck__lt_free(ck__lt *lt, int driver);
/* The libraries a first linear tries, in order, when CKALLOC_CUBLASLT_LIB is
 * not set (linear_cublaslt.c says which); at most max names of up to
 * CK_LT_NAME bytes. Returns how many. */
enum { CK_LT_NAME = 512, CK_LT_MAX_CANDIDATES = 24 };
int ck__lt_candidates(char (*names)[CK_LT_NAME], int max);
#endif

#endif
