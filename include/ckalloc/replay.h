/* ckalloc/replay.h: replay ops, the kernels that rebuild a recomputed
 * activation from tensors that are still resident.
 *
 * A recipe is a short chain of steps over a few input tensors. The first step
 * may be any op; every later step is element-wise and takes the previous
 * step's result as its first input. A chain runs as one pass over memory (one
 * kernel launch on the cuda backend). Each step rounds its result to its own
 * dtype, exactly as the same ops run one by one would, so a fused chain gives
 * the tensor the unfused ops gave.
 *
 * The op registry (ck_op_info) describes every op: its inputs, parameters,
 * shape and dtype rules and its cost per output element; the cost model reads
 * its numbers through ck_recipe_cost and nothing else hard-codes them.
 *
 * Tensors are contiguous and row-major. The GPU kernels compute in fp32 (norm
 * statistics and GEMM accumulation included); fp16 and bf16 values are
 * converted exactly on load and rounded to nearest-even on store. The CPU
 * reference does the same element-wise math in fp32 but sums norm statistics
 * and dot products in double, as an oracle; each op's tolerance
 * (ck_op_info.tolerance) bounds the difference.
 */
#ifndef CKALLOC_REPLAY_H
#define CKALLOC_REPLAY_H

#include "ckalloc/ckalloc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- dtypes ------------------------------------------------------------ */

typedef enum ck_dtype {
    CK_DTYPE_F32 = 0,
    CK_DTYPE_F16 = 1,
    CK_DTYPE_BF16 = 2,
    CK_DTYPE_I32 = 3, /* RoPE positions */
    CK_DTYPE_I64 = 4, /* RoPE positions */
    CK_DTYPE_U8 = 5,  /* dropout masks: 1 kept, 0 dropped */
    CK_DTYPE_COUNT
} ck_dtype;

/* Bytes per element (0 for an unknown dtype). */
CK_API size_t ck_dtype_size(ck_dtype dtype);
/* "f32", "f16", "bf16", "i32", "i64", "u8"; "?" for an unknown dtype. */
CK_API const char *ck_dtype_name(ck_dtype dtype);

/* ---- the op registry --------------------------------------------------- */

typedef enum ck_op {
    CK_OP_SILU = 0,       /* x * sigmoid(x) */
    CK_OP_GELU_ERF,       /* 0.5 x (1 + erf(x / sqrt 2)) */
    CK_OP_GELU_TANH,      /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    CK_OP_RELU,           /* max(x, 0) */
    CK_OP_SWIGLU,         /* silu(gate) * up */
    CK_OP_GEGLU_ERF,      /* gelu_erf(gate) * up */
    CK_OP_GEGLU_TANH,     /* gelu_tanh(gate) * up */
    CK_OP_ADD,            /* a + b (residual add; b may be a row vector: bias) */
    CK_OP_MUL,            /* a * b (b may be a row vector: a weight) */
    CK_OP_SCALE,          /* x * alpha */
    CK_OP_CAST,           /* x converted to the step's dtype */
    CK_OP_RMSNORM,        /* x / sqrt(mean(x^2) + eps) * weight, per row */
    CK_OP_LAYERNORM,      /* (x - mean) / sqrt(var + eps) * weight + bias, per row */
    CK_OP_ROPE,           /* rotary embedding, LLaMA rotate-half form */
    CK_OP_DROPOUT_MASK,   /* the keep mask of dropout(seed, offset, p), u8 */
    CK_OP_DROPOUT,        /* x * mask * (float)(1 / (1 - p)) with the same mask */
    CK_OP_LINEAR,         /* y = x W^T (+ b), through cuBLASLt on a GPU */
    CK_OP_COUNT
} ck_op;

typedef enum ck_op_class {
    CK_OPC_ELEMENTWISE = 0, /* out[i] from in[i]: may be any step of a chain */
    CK_OPC_ROWWISE = 1,     /* reduces over the last dim: first step of a chain only */
    CK_OPC_STANDALONE = 2   /* a recipe of its own (RoPE, linear) */
} ck_op_class;

typedef struct ck_op_info {
    ck_op op;
    const char *name;        /* "silu", "rmsnorm", ... (ck_op_find takes these) */
    ck_op_class cls;
    int n_inputs;            /* input slots, required and optional */
    int n_required;          /* the first n_required slots must be given */
    const char *inputs[3];   /* slot names ("x", "weight", ...) */
    const char *params;      /* ck_step fields it reads, comma-separated ("eps"), or "" */
    const char *shape_rule;  /* a sentence: what shapes it takes and gives */
    const char *dtype_rule;  /* a sentence: what dtypes it takes and gives */
    const char *tolerance;   /* its stated accuracy against the CPU reference */
    /* Cost per output element. flops counts every add, multiply, compare and
     * transcendental as one. reads is input elements read per output element
     * (a row vector such as a norm weight is read once per row and counted as
     * 0). A GEMM adds flops_per_k * K flops and its reads follow from the
     * shapes: ck_recipe_cost gives the totals for a concrete recipe. */
    double flops;
    double flops_per_k;
    double reads;
    double writes;
} ck_op_info;

/* The description of op, or NULL for an unknown op. */
CK_API const ck_op_info *ck_op_get(ck_op op);
/* The op named name (as in ck_op_info.name); CK_ERR_INVALID if none is. */
CK_API ck_status ck_op_find(const char *name, ck_op *op);

/* ---- recipes ----------------------------------------------------------- */

#define CK_MAX_DIMS 4
#define CK_MAX_INPUTS 8
#define CK_MAX_STEPS 8

typedef struct ck_tensor {
    const void *data; /* device memory (host-backend memory on a host pool) */
    ck_dtype dtype;
    int ndim;         /* 1..CK_MAX_DIMS */
    int64_t shape[CK_MAX_DIMS];
} ck_tensor;

typedef struct ck_step {
    ck_op op;
    ck_dtype dtype;   /* the step's result is rounded to this dtype */
    /* The recipe inputs this step reads, per input slot of the op (-1 = not
     * given). In every step after the first, slot 0 is the previous step's
     * result and in[0] must be -1. */
    int in[3];
    /* Parameters; an op reads only those its ck_op_info.params names. */
    float eps;        /* rmsnorm, layernorm (default 1e-6) */
    float alpha;      /* scale (default 1) */
    float base;       /* rope theta base (default 10000) */
    float p;          /* dropout probability, 0 <= p < 1 */
    uint64_t seed;    /* dropout: Philox key */
    uint64_t offset;  /* dropout: Philox counter offset, in units of 4 elements */
} ck_step;

typedef struct ck_recipe {
    int n_inputs;
    ck_tensor inputs[CK_MAX_INPUTS];
    int n_steps;
    ck_step steps[CK_MAX_STEPS];
} ck_recipe;

/* An empty recipe. */
CK_API void ck_recipe_init(ck_recipe *r);

/* Append an input tensor; returns its index, or -1 (with the error sentence
 * set) when the recipe is full or ndim is out of range. */
CK_API int ck_recipe_input(ck_recipe *r, const void *data, ck_dtype dtype, int ndim,
                           const int64_t *shape);

/* Append a step with its parameters at their defaults and every in[] -1;
 * returns it for the caller to fill in, or NULL (with the error sentence set)
 * when the recipe is full or op is unknown. */
CK_API ck_step *ck_recipe_step(ck_recipe *r, ck_op op, ck_dtype dtype);

/* Check r against the registry's rules. On success out (may be NULL) gets the
 * result's dtype and shape (its data NULL) and *out_bytes (may be NULL) its
 * size. A bad recipe is CK_ERR_INVALID naming the step, the input and what is
 * wrong. Pointers are not dereferenced. */
CK_API ck_status ck_recipe_check(const ck_recipe *r, ck_tensor *out, size_t *out_bytes);

/* What replaying r costs: total flops, bytes read and bytes written (any may
 * be NULL), from the registry's per-element numbers and the shapes. */
CK_API ck_status ck_recipe_cost(const ck_recipe *r, double *flops, double *bytes_read,
                                double *bytes_written);

/* ---- running a recipe -------------------------------------------------- */

/* Run r on stream, writing its result to out (out_bytes must be at least the
 * result's size). The call only queues the work: on the cuda backend one
 * kernel launch (or one cuBLASLt matmul) on stream, never synchronising; on
 * the host backend the CPU reference runs on the stream's worker. Inputs and
 * out that lie in the pool's address space must lie inside live allocations
 * whose pages are mapped: anything else there (a freed block, an offloaded
 * tensor) is CK_ERR_NOT_OWNED naming the input, with nothing queued.
 * Pointers outside the pool (a framework's own weights) are taken as given.
 * A recipe the cuda backend cannot run (a library built without nvcc, no
 * cuBLASLt for a linear) is CK_ERR_BACKEND saying why. */
CK_API ck_status ck_replay(ck_pool *pool, const ck_recipe *r, void *out, size_t out_bytes,
                           ck_stream stream);

/* The CPU reference: run r now on this thread, with every pointer (inputs
 * and out) in host memory. It is what the host backend runs and what the
 * GPU kernels are tested against. */
CK_API ck_status ck_replay_host(const ck_recipe *r, void *out, size_t out_bytes);

#ifdef __cplusplus
}
#endif

#endif /* CKALLOC_REPLAY_H */
