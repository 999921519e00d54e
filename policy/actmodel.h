/* The activation model (internal): from a model profile and a training
 * shape, the tensors one decoder layer saves for backward (the tensor
 * classes a policy's rules name), with their bytes and what rebuilding each
 * costs, plus the memory that does not depend on tiers: weights, LoRA and
 * optimizer state, gradients, the loss phase and one layer's backward.
 *
 * What is saved follows PyTorch autograd under Hugging Face transformers'
 * LlamaForCausalLM (RMSNorm in fp32, SwiGLU as SiLU then a product, RoPE,
 * no dropout, the loss upcast to fp32 inside the loss function), with PEFT's
 * LoRA (dropout 0) for lora and qlora. policy/actmodel.c says, per class,
 * which autograd node keeps it. The planner and ckalloc-plan --simulate read
 * only this. */
#ifndef CKALLOC_ACTMODEL_H
#define CKALLOC_ACTMODEL_H

#include "policy.h"

enum { CK_METHOD_FULL = 0, CK_METHOD_LORA = 1, CK_METHOD_QLORA = 2 };
enum { CK_ATTN_FLASH = 0, CK_ATTN_EAGER = 1 };
/* LoRA targets, a bit each */
enum {
    CK_T_Q = 1, CK_T_K = 2, CK_T_V = 4, CK_T_O = 8, CK_T_GATE = 16, CK_T_UP = 32, CK_T_DOWN = 64
};

typedef struct ck_train_shape {
    int method;           /* CK_METHOD_* */
    uint32_t rank;        /* LoRA rank (lora, qlora) */
    uint32_t targets;     /* CK_T_* bits (lora, qlora); 0 = q, k, v, o */
    uint32_t dtype_bytes; /* activations and weights: 2 (bf16, fp16) or 4 (fp32) */
    uint64_t seq, batch;
    int attention;        /* CK_ATTN_* */
    int checkpointing;    /* 1: per-layer gradient checkpointing: a layer keeps only its input
                             (class "input"), backward recomputes the layer */
} ck_train_shape;

#define CK_ACT_MAX 32
#define CK_ACT_NONE (-1)

typedef struct ck_act_class {
    char name[40];       /* the tag under "layers.N.": "mlp.gate", "attn.q", ... */
    uint64_t bytes;      /* per layer */
    int recompute;       /* 1: the replay ops can rebuild it from its inputs */
    double flops;        /* to rebuild it from its inputs (its own step only) */
    double traffic;      /* bytes the rebuild reads and writes */
    int in[3];           /* classes it is rebuilt from (CK_ACT_NONE: unused); weights
                            are not classes */
    const char *kept_by; /* the autograd node that saves it */
    /* the rebuild's main replay step, for a simulation (ckalloc-plan --simulate):
       op over rows x cols outputs, k the GEMM's reduction (linear), in_bytes
       the input element size */
    int rop;
    uint64_t rrows, rcols, rk;
    uint32_t rin_bytes;
} ck_act_class;

typedef struct ck_act_model {
    ck_act_class c[CK_ACT_MAX];
    int n;
    uint64_t layers;
    uint64_t tokens;         /* seq x batch */
    uint32_t dtype_bytes;    /* of activations and weights */
    uint64_t per_layer;      /* sum of the classes' bytes */
    /* persistent */
    uint64_t params;         /* of the model */
    uint64_t weight_bytes;   /* as stored (qlora: 4-bit base, bf16 embeddings and head) */
    uint64_t trainable;      /* parameters that train */
    uint64_t grad_bytes, optim_bytes; /* gradients; AdamW's two states (in the trained dtype) */
    uint64_t persistent;     /* weight_bytes + the trainable copies + grads + optimizer */
    /* outside the layers */
    uint64_t final_norm;     /* the final RMSNorm's saved tensors (and the head's input) */
    uint64_t loss_forward;   /* the loss phase's peak in forward: logits, fp32 copy, log-softmax */
    uint64_t loss_backward;  /* ... and in backward (saved log-softmax, its gradient in and out) */
    uint64_t layer_backward; /* transient memory of one layer's backward (activation grads) */
    uint64_t ckpt_input;     /* checkpointing: the bytes a layer keeps (its input) */
    double layer_fwd_flops;  /* one layer's forward (matmuls and attention) */
    double layer_bwd_flops;  /* its backward: activation gradients, and weight gradients
                                where weights train; attention's at 2.5 x its forward */
    double head_flops;       /* the output head and loss, forward and backward */
} ck_act_model;

/* Fill *out. CK_ERR_INVALID for a shape that makes no sense (zero sizes, a
 * rank without LoRA, a dtype other than 2 or 4 bytes). */
ck_status ck__act_model(const ck_model_profile *m, const ck_train_shape *t, ck_act_model *out);

/* Megatron-LM's GPT layer as Korthikanti et al. count it ("Reducing
 * Activation Recomputation in Large Transformer Models", 2022, section 4.1:
 * 16-bit activations, LayerNorm, GeLU MLP of 4h, dropout masks of one byte,
 * no flash attention, no tensor parallelism), as classes: their sum is
 * s b h (34 + 5 a s / h). A check on the counting, not a model ckalloc
 * plans for. */
ck_status ck__act_model_megatron(uint64_t h, uint64_t a, uint64_t s, uint64_t b, ck_act_model *out);

#endif
