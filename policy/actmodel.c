/* The activation model: what one decoder layer saves for backward, class by
 * class, and the memory around it. See actmodel.h for the setting.
 *
 * Notation: e bytes per activation element, T = seq x batch tokens, h
 * hidden, i intermediate, a heads, kv key/value heads, d head dim, qd = a d,
 * kvd = kv d, r the LoRA rank, V the vocabulary.
 *
 * A class is saved when some autograd node needs it: a linear layer keeps
 * its input only when its weight trains (full fine-tuning) or a LoRA A
 * reads the same input (PEFT: lora_A(dropout(x)) with dropout 0 is x
 * itself); LoRA B keeps A's output. RMSNorm (HF LlamaRMSNorm) keeps the fp32
 * copy of its input (pow and the normalising product) and the reciprocal
 * RMS; its weight's product keeps the normalised bf16 tensor only when the
 * weight trains. SiLU keeps its input (the gate), the product keeps
 * silu(gate) and up. Flash attention keeps contiguous q, k, v (k and v at kv
 * heads), its output and the log-sum-exp; eager attention keeps q, k and v
 * repeated to a heads, the fp32 softmax and its cast. RoPE keeps only the
 * shared cos/sin tables. Run under torch autocast (Trainer bf16=True), so
 * fp32 LoRA adapters still see and save bf16 inputs.
 *
 * Rebuild costs come from the replay op table (ck_op_get): what the replay
 * kernels would run. Classes only attention makes (its output, the
 * log-sum-exp, the softmax) cannot be rebuilt: no replay op computes
 * attention. */
#include "actmodel.h"

#include "ckalloc/replay.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>

typedef struct builder {
    ck_act_model *m;
    ck_status st;
} builder;

static int add(builder *b, const char *name, uint64_t bytes, const char *kept_by) {
    ck_act_model *m = b->m;
    if (m->n == CK_ACT_MAX) {
        b->st = ck__err(CK_ERR_INVALID, "activation model: more than %d classes", CK_ACT_MAX);
        return CK_ACT_NONE;
    }
    ck_act_class *c = &m->c[m->n];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->bytes = bytes;
    c->kept_by = kept_by;
    c->in[0] = c->in[1] = c->in[2] = CK_ACT_NONE;
    m->per_layer += bytes;
    return m->n++;
}

/* Class k can be rebuilt by op over n output elements, from inputs i0, i1
 * (CK_ACT_NONE: a weight or nothing), with k_dim the GEMM's reduction. */
static void rebuild(builder *b, int k, ck_op op, double n, double k_dim, double traffic, int i0,
                    int i1) {
    if (k == CK_ACT_NONE) return;
    const ck_op_info *oi = ck_op_get(op);
    ck_act_class *c = &b->m->c[k];
    if (!c->recompute) { /* the first step is the one a simulation replays */
        c->rop = (int)op;
        c->rk = (uint64_t)k_dim;
        c->rrows = k_dim > 0 || op == CK_OP_RMSNORM ? b->m->tokens : 1;
        c->rcols = (uint64_t)(n / (double)c->rrows);
        c->rin_bytes = op == CK_OP_RMSNORM || op == CK_OP_CAST ? 4 : b->m->dtype_bytes;
    }
    c->recompute = 1;
    c->flops += oi ? oi->flops * n + oi->flops_per_k * k_dim * n : 0;
    c->traffic += traffic;
    c->in[0] = i0;
    c->in[1] = i1;
}

static uint64_t lora_params(const ck_model_profile *m, uint32_t tg, uint32_t r) {
    uint64_t h = m->hidden, i = m->intermediate, qd = m->heads * m->head_dim,
             kvd = m->kv_heads * m->head_dim, p = 0;
    if (tg & CK_T_Q) p += r * (h + qd);
    if (tg & CK_T_K) p += r * (h + kvd);
    if (tg & CK_T_V) p += r * (h + kvd);
    if (tg & CK_T_O) p += r * (qd + h);
    if (tg & CK_T_GATE) p += r * (h + i);
    if (tg & CK_T_UP) p += r * (h + i);
    if (tg & CK_T_DOWN) p += r * (i + h);
    return p;
}

ck_status ck__act_model(const ck_model_profile *mp, const ck_train_shape *t, ck_act_model *out) {
    if (!mp || !t || !out) return ck__err(CK_ERR_INVALID, "activation model: NULL argument");
    if (!mp->hidden || !mp->intermediate || !mp->layers || !mp->heads || !mp->kv_heads ||
        !mp->head_dim || !mp->vocab || mp->heads % mp->kv_heads)
        return ck__err(CK_ERR_INVALID, "activation model: model '%s' has a zero or uneven shape",
                       mp->name);
    if (!t->seq || !t->batch) return ck__err(CK_ERR_INVALID, "activation model: seq and batch must be >= 1");
    if (t->dtype_bytes != 2 && t->dtype_bytes != 4)
        return ck__err(CK_ERR_INVALID, "activation model: dtype of %u bytes (2 or 4)", t->dtype_bytes);
    int lora = t->method == CK_METHOD_LORA || t->method == CK_METHOD_QLORA;
    if (t->method < CK_METHOD_FULL || t->method > CK_METHOD_QLORA)
        return ck__err(CK_ERR_INVALID, "activation model: unknown method %d", t->method);
    if (lora && !t->rank) return ck__err(CK_ERR_INVALID, "activation model: LoRA needs a rank >= 1");
    if (t->attention != CK_ATTN_FLASH && t->attention != CK_ATTN_EAGER)
        return ck__err(CK_ERR_INVALID, "activation model: unknown attention %d", t->attention);

    memset(out, 0, sizeof *out);
    out->tokens = t->seq * t->batch;
    out->dtype_bytes = t->dtype_bytes;
    builder B = {out, CK_OK};
    builder *b = &B;
    const double e = t->dtype_bytes, T = (double)(t->seq * t->batch), h = (double)mp->hidden,
                 i = (double)mp->intermediate, a = (double)mp->heads, d = (double)mp->head_dim,
                 qd = a * d, kvd = (double)mp->kv_heads * d, V = (double)mp->vocab,
                 s = (double)t->seq, bt = (double)t->batch;
    const uint32_t tg = lora ? (t->targets ? t->targets : CK_T_Q | CK_T_K | CK_T_V | CK_T_O) : 0;
    const double r = lora ? t->rank : 0;
    const int full = t->method == CK_METHOD_FULL;
#define NEEDS(bits) (full || (tg & (bits)))
    out->layers = mp->layers;
    out->tokens = t->seq * t->batch;
    out->dtype_bytes = t->dtype_bytes;
    const int eager = t->attention == CK_ATTN_EAGER;

    /* ---- attention half ---- */
    int x32 = add(b, "attn.norm.x32", (uint64_t)(4 * T * h + 4 * T),
                  "RMSNorm: the fp32 copy of its input (pow, mul) and the reciprocal RMS (rsqrt)");
    if (full) {
        int no = add(b, "attn.norm.out", (uint64_t)(e * T * h),
                     "RMSNorm's weight product (the norm weight trains): the normalised input");
        rebuild(b, no, CK_OP_RMSNORM, T * h, 0, 4 * T * h + e * T * h, x32, CK_ACT_NONE);
    }
    int n1 = CK_ACT_NONE;
    if (NEEDS(CK_T_Q | CK_T_K | CK_T_V)) {
        n1 = add(b, "attn.norm", (uint64_t)(e * T * h),
                 full ? "q/k/v projections (their weights train)" : "LoRA A of q/k/v (its input)");
        rebuild(b, n1, CK_OP_RMSNORM, T * h, 0, 4 * T * h + e * T * h, x32, CK_ACT_NONE);
    }
    static const struct {
        uint32_t bit;
        const char *name;
    } qkv_lora[] = {{CK_T_Q, "attn.lora.q"}, {CK_T_K, "attn.lora.k"}, {CK_T_V, "attn.lora.v"}};
    for (int k = 0; k < 3; k++)
        if (tg & qkv_lora[k].bit) {
            int c = add(b, qkv_lora[k].name, (uint64_t)(e * T * r), "LoRA B (A's output)");
            rebuild(b, c, CK_OP_LINEAR, T * r, h, e * (T * h + h * r + T * r), n1, CK_ACT_NONE);
        }
    /* q, k, v: a projection (plus LoRA) and RoPE for q and k, from n1. */
    double kv_saved = eager ? qd : kvd; /* eager repeats k and v to a heads */
    const char *qkv_by = eager ? "eager attention's matmuls (k and v repeated to a heads)"
                               : "flash attention (contiguous copies; k and v at kv heads)";
    int q = add(b, "attn.q", (uint64_t)(e * T * qd), qkv_by);
    int k_ = add(b, "attn.k", (uint64_t)(e * T * kv_saved), qkv_by);
    int v = add(b, "attn.v", (uint64_t)(e * T * kv_saved), qkv_by);
    if (n1 != CK_ACT_NONE) {
        double lq = (tg & CK_T_Q) ? 2 * T * h * r + 2 * T * r * qd : 0;
        double lk = (tg & CK_T_K) ? 2 * T * h * r + 2 * T * r * kvd : 0;
        double lv = (tg & CK_T_V) ? 2 * T * h * r + 2 * T * r * kvd : 0;
        rebuild(b, q, CK_OP_LINEAR, T * qd, h, e * (T * h + h * qd + T * qd), n1, CK_ACT_NONE);
        rebuild(b, q, CK_OP_ROPE, T * qd, 0, 2 * e * T * qd, n1, CK_ACT_NONE);
        rebuild(b, k_, CK_OP_LINEAR, T * kvd, h, e * (T * h + h * kvd + T * kvd), n1, CK_ACT_NONE);
        rebuild(b, k_, CK_OP_ROPE, T * kvd, 0, 2 * e * T * kvd, n1, CK_ACT_NONE);
        rebuild(b, v, CK_OP_LINEAR, T * kvd, h, e * (T * h + h * kvd + T * kvd), n1, CK_ACT_NONE);
        b->m->c[q].flops += lq;
        b->m->c[k_].flops += lk;
        b->m->c[v].flops += lv;
    }
    int att;
    if (eager) {
        int p32 = add(b, "attn.probs32", (uint64_t)(4 * a * s * s * bt), "softmax (its fp32 output)");
        (void)p32;
        int p = add(b, "attn.probs", (uint64_t)(e * a * s * s * bt),
                    "the probabilities-times-V matmul (probabilities cast to the activation dtype)");
        rebuild(b, p, CK_OP_CAST, a * s * s * bt, 0, (4 + e) * a * s * s * bt, p32, CK_ACT_NONE);
        att = NEEDS(CK_T_O) ? add(b, "attn.out", (uint64_t)(e * T * qd),
                                  full ? "o_proj (its weight trains)" : "LoRA A of o")
                            : CK_ACT_NONE;
    } else {
        att = add(b, "attn.out", (uint64_t)(e * T * qd), "flash attention's output (o_proj's input)");
        add(b, "attn.lse", (uint64_t)(4 * a * T), "flash attention's log-sum-exp (fp32)");
    }
    if (tg & CK_T_O) {
        int c = add(b, "attn.lora.o", (uint64_t)(e * T * r), "LoRA B (A's output)");
        rebuild(b, c, CK_OP_LINEAR, T * r, qd, e * (T * qd + qd * r + T * r), att, CK_ACT_NONE);
    }

    /* ---- MLP half ---- */
    int y32 = add(b, "mlp.norm.x32", (uint64_t)(4 * T * h + 4 * T),
                  "RMSNorm: the fp32 copy of its input (pow, mul) and the reciprocal RMS (rsqrt)");
    if (full) {
        int no = add(b, "mlp.norm.out", (uint64_t)(e * T * h),
                     "RMSNorm's weight product (the norm weight trains): the normalised input");
        rebuild(b, no, CK_OP_RMSNORM, T * h, 0, 4 * T * h + e * T * h, y32, CK_ACT_NONE);
    }
    int n2 = CK_ACT_NONE;
    if (NEEDS(CK_T_GATE | CK_T_UP)) {
        n2 = add(b, "mlp.norm", (uint64_t)(e * T * h),
                 full ? "gate and up projections (their weights train)" : "LoRA A of gate/up");
        rebuild(b, n2, CK_OP_RMSNORM, T * h, 0, 4 * T * h + e * T * h, y32, CK_ACT_NONE);
    }
    if (tg & CK_T_GATE) {
        int c = add(b, "mlp.lora.gate", (uint64_t)(e * T * r), "LoRA B (A's output)");
        rebuild(b, c, CK_OP_LINEAR, T * r, h, e * (T * h + h * r + T * r), n2, CK_ACT_NONE);
    }
    if (tg & CK_T_UP) {
        int c = add(b, "mlp.lora.up", (uint64_t)(e * T * r), "LoRA B (A's output)");
        rebuild(b, c, CK_OP_LINEAR, T * r, h, e * (T * h + h * r + T * r), n2, CK_ACT_NONE);
    }
    int gate = add(b, "mlp.gate", (uint64_t)(e * T * i), "SiLU (its input)");
    int silu = add(b, "mlp.silu", (uint64_t)(e * T * i), "the product silu(gate) * up");
    int up = add(b, "mlp.up", (uint64_t)(e * T * i), "the product silu(gate) * up");
    /* gate and up need n2; without it (LoRA on attention only) nothing
     * saved can rebuild them. */
    if (n2 != CK_ACT_NONE) {
        rebuild(b, gate, CK_OP_LINEAR, T * i, h, e * (T * h + h * i + T * i), n2, CK_ACT_NONE);
        rebuild(b, up, CK_OP_LINEAR, T * i, h, e * (T * h + h * i + T * i), n2, CK_ACT_NONE);
        if (tg & CK_T_GATE) b->m->c[gate].flops += 2 * T * h * r + 2 * T * r * i;
        if (tg & CK_T_UP) b->m->c[up].flops += 2 * T * h * r + 2 * T * r * i;
    }
    rebuild(b, silu, CK_OP_SILU, T * i, 0, 2 * e * T * i, gate, CK_ACT_NONE);
    if (NEEDS(CK_T_DOWN)) {
        int act = add(b, "mlp.act", (uint64_t)(e * T * i),
                      full ? "down_proj (its weight trains)" : "LoRA A of down");
        rebuild(b, act, CK_OP_MUL, T * i, 0, 3 * e * T * i, silu, up);
        if (tg & CK_T_DOWN) {
            int c = add(b, "mlp.lora.down", (uint64_t)(e * T * r), "LoRA B (A's output)");
            rebuild(b, c, CK_OP_LINEAR, T * r, i, e * (T * i + i * r + T * r), act, CK_ACT_NONE);
        }
    }
#undef NEEDS
    if (b->st != CK_OK) return b->st;

    /* ---- persistent memory ---- */
    double per_layer_lin = h * qd + 2 * h * kvd + qd * h + 3 * h * i;
    double bias = mp->attention_bias ? qd + 2 * kvd : 0; /* Qwen2's q, k, v biases */
    double P = V * h + (double)mp->layers * (per_layer_lin + bias + 2 * h) + h +
               (mp->tied_embeddings ? 0 : V * h);
    out->params = (uint64_t)P;
    if (t->method == CK_METHOD_QLORA) {
        /* bitsandbytes NF4 with double quantisation: 4 bits a weight plus
         * about 0.127 bits of constants; embeddings, norms and the head stay
         * in the activation dtype. */
        double lin = (double)mp->layers * per_layer_lin;
        out->weight_bytes = (uint64_t)(lin * (0.5 + 0.127 / 8) + (P - lin) * e);
    } else {
        out->weight_bytes = (uint64_t)(P * e);
    }
    if (full) {
        out->trainable = out->params;
        out->grad_bytes = (uint64_t)(P * e);
        out->optim_bytes = (uint64_t)(2 * P * e); /* AdamW's m and v in the trained dtype */
    } else {
        /* PEFT keeps adapters in fp32: weights, gradients and AdamW's states
         * at 4 bytes each. */
        double lp = (double)mp->layers * lora_params(mp, tg, (uint32_t)r);
        out->trainable = (uint64_t)lp;
        out->grad_bytes = (uint64_t)(4 * lp);
        out->optim_bytes = (uint64_t)(8 * lp);
        out->weight_bytes += (uint64_t)(4 * lp);
    }
    out->persistent = out->weight_bytes + out->grad_bytes + out->optim_bytes;

    /* ---- around the layers ---- */
    out->final_norm = (uint64_t)(4 * T * h + 4 * T + (full ? 2 * e * T * h : 0));
    /* The loss (transformers' ForCausalLMLoss): the head's logits in the
     * activation dtype, logits.float(), and log_softmax's fp32 output (kept
     * for backward). Backward holds that output, the gradient coming in from
     * nll_loss and the one going out, all fp32. */
    out->loss_forward = (uint64_t)((e + 8) * T * V);
    out->loss_backward = (uint64_t)(12 * T * V);
    /* One layer's backward: the MLP's activation gradients (three of T x i
     * at once), the residual's, and RMSNorm's fp32 work; or attention's dq,
     * dk, dv with flash attention's fp32 dq accumulator. */
    double mlp_bwd = 3 * e * T * i + e * T * h + 8 * T * h;
    double attn_bwd = e * T * (qd + 2 * kvd) + 4 * T * qd + e * T * h + 8 * T * h;
    if (eager) attn_bwd += 4 * a * s * s * bt; /* the softmax's gradient */
    out->layer_backward = (uint64_t)(mlp_bwd > attn_bwd ? mlp_bwd : attn_bwd);
    out->ckpt_input = (uint64_t)(e * T * h);
    double lin_f = 2 * T * per_layer_lin, attn_f = 2 * bt * s * s * a * d; /* causal attention */
    double lora_f = lora ? 2 * T * (double)lora_params(mp, tg, (uint32_t)r) : 0;
    out->layer_fwd_flops = lin_f + attn_f + lora_f;
    /* backward: the input gradient of every linear, the weight gradient of
     * those that train (all of them for full, the adapters for LoRA) */
    out->layer_bwd_flops = (full ? 2 * lin_f : lin_f) + 2.5 * attn_f + 2 * lora_f;
    out->head_flops = (full ? 3 : 2) * 2 * T * h * V;
    if (t->checkpointing) {
        /* Per-layer gradient checkpointing (torch.utils.checkpoint around
         * each decoder layer): a layer keeps only its input; backward runs
         * its forward again, holding its whole saved set while it does. That
         * one class is what a plan can offload (Unsloth's offloaded
         * checkpointing). */
        uint64_t layer_set = out->per_layer;
        out->n = 0;
        out->per_layer = 0;
        add(b, "input", (uint64_t)(e * T * h), "torch.utils.checkpoint (the layer's input)");
        out->layer_backward += layer_set;
        out->layer_bwd_flops += out->layer_fwd_flops;
        if (b->st != CK_OK) return b->st;
    }
    return CK_OK;
}

ck_status ck__act_model_megatron(uint64_t h_, uint64_t a_, uint64_t s_, uint64_t b_, ck_act_model *out) {
    if (!h_ || !a_ || !s_ || !b_ || !out) return ck__err(CK_ERR_INVALID, "megatron model: zero size");
    memset(out, 0, sizeof *out);
    builder B = {out, CK_OK};
    const double h = (double)h_, a = (double)a_, s = (double)s_, b = (double)b_, sbh = s * b * h,
                 as2b = a * s * s * b;
    /* Korthikanti et al., section 4.1, one line per stored tensor. */
    add(&B, "attn.ln.in", (uint64_t)(2 * sbh), "LayerNorm (its input)");
    add(&B, "attn.qkv.in", (uint64_t)(2 * sbh), "the QKV projection (its input)");
    add(&B, "attn.q", (uint64_t)(2 * sbh), "Q K^T (Q)");
    add(&B, "attn.k", (uint64_t)(2 * sbh), "Q K^T (K)");
    add(&B, "attn.softmax", (uint64_t)(2 * as2b), "softmax (its output)");
    add(&B, "attn.softmax.mask", (uint64_t)as2b, "attention dropout (its mask, a byte each)");
    add(&B, "attn.dropout.out", (uint64_t)(2 * as2b), "attention over V (the dropped-out scores)");
    add(&B, "attn.v", (uint64_t)(2 * sbh), "attention over V (V)");
    add(&B, "attn.proj.in", (uint64_t)(2 * sbh), "the output projection (its input)");
    add(&B, "attn.dropout.mask", (uint64_t)sbh, "the attention block's dropout (its mask)");
    add(&B, "mlp.ln.in", (uint64_t)(2 * sbh), "LayerNorm (its input)");
    add(&B, "mlp.fc1.in", (uint64_t)(2 * sbh), "the first linear layer (its input)");
    add(&B, "mlp.gelu.in", (uint64_t)(8 * sbh), "GeLU (its input, 4h wide)");
    add(&B, "mlp.fc2.in", (uint64_t)(8 * sbh), "the second linear layer (its input, 4h wide)");
    add(&B, "mlp.dropout.mask", (uint64_t)sbh, "the MLP block's dropout (its mask)");
    out->tokens = s_ * b_;
    out->layers = 1;
    out->dtype_bytes = 2;
    return B.st;
}
