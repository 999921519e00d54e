/* The activation model against published figures: Megatron's per-layer
 * activation bytes s b h (34 + 5 a s / h) (Korthikanti et al. 2022), the
 * parameter counts of the shipped models (transformers' num_parameters()),
 * and a Llama-2-7B LoRA layer worked out by hand. */
#include "actmodel.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ck_model_profile load_model(const char *name) {
    ck_model_profile m;
    OK(ck__model_builtin(name, &m));
    return m;
}

static const ck_act_class *cls(const ck_act_model *am, const char *name) {
    for (int k = 0; k < am->n; k++)
        if (strcmp(am->c[k].name, name) == 0) return &am->c[k];
    return NULL;
}

START_TEST(t_megatron) {
    static const uint64_t shapes[][4] = {
        {12288, 96, 2048, 1}, /* GPT-3 175B's layer */
        {4096, 32, 4096, 2},
        {1024, 16, 512, 8},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        uint64_t h = shapes[k][0], a = shapes[k][1], s = shapes[k][2], b = shapes[k][3];
        ck_act_model am;
        OK(ck__act_model_megatron(h, a, s, b, &am));
        uint64_t want = s * b * h * 34 + 5 * a * s * s * b; /* s b h (34 + 5 a s / h) */
        ck_assert_msg(am.per_layer == want, "h %llu a %llu s %llu b %llu: %llu bytes, paper %llu",
                      (unsigned long long)h, (unsigned long long)a, (unsigned long long)s,
                      (unsigned long long)b, (unsigned long long)am.per_layer, (unsigned long long)want);
        uint64_t sum = 0;
        for (int c = 0; c < am.n; c++) sum += am.c[c].bytes;
        ck_assert_uint_eq(sum, am.per_layer);
    }
    ck_act_model am;
    ck_assert_int_eq(ck__act_model_megatron(0, 1, 1, 1, &am), CK_ERR_INVALID);
}
END_TEST

/* transformers' model.num_parameters() for each (Qwen2 has q/k/v biases,
 * Gemma ties its embeddings). */
START_TEST(t_param_counts) {
    static const struct {
        const char *name;
        uint64_t params;
    } known[] = {
        {"llama-2-7b", 6738415616ull}, {"llama-3-8b", 8030261248ull}, {"mistral-7b", 7241732096ull},
        {"qwen2-7b", 7615616512ull},   {"gemma-7b", 8537680896ull},
    };
    ck_train_shape t = {.method = CK_METHOD_FULL, .dtype_bytes = 2, .seq = 128, .batch = 1};
    for (size_t k = 0; k < sizeof known / sizeof *known; k++) {
        ck_model_profile m = load_model(known[k].name);
        ck_act_model am;
        OK(ck__act_model(&m, &t, &am));
        ck_assert_msg(am.params == known[k].params, "%s: %llu parameters, published %llu",
                      known[k].name, (unsigned long long)am.params,
                      (unsigned long long)known[k].params);
        /* full fine-tuning: weights, gradients and AdamW's two states */
        ck_assert_uint_eq(am.persistent, 8 * am.params);
    }
}
END_TEST

/* Llama-2-7B, LoRA r=16 on q, k, v, o, bf16, flash attention, 4096 tokens:
 * what each autograd node keeps, by hand. */
START_TEST(t_llama_lora_by_hand) {
    ck_model_profile m = load_model("llama-2-7b");
    ck_train_shape t = {.method = CK_METHOD_LORA, .rank = 16, .dtype_bytes = 2, .seq = 4096,
                        .batch = 1, .attention = CK_ATTN_FLASH};
    ck_act_model am;
    OK(ck__act_model(&m, &t, &am));
    const uint64_t T = 4096, h = 4096, i = 11008, r = 16;
    static const char *const names[] = {"attn.norm.x32", "attn.norm", "attn.lora.q", "attn.lora.k",
                                        "attn.lora.v", "attn.q", "attn.k", "attn.v", "attn.out",
                                        "attn.lse", "attn.lora.o", "mlp.norm.x32", "mlp.gate",
                                        "mlp.silu", "mlp.up"};
    const uint64_t bytes[] = {4 * T * h + 4 * T, 2 * T * h, 2 * T * r, 2 * T * r, 2 * T * r,
                              2 * T * h, 2 * T * h, 2 * T * h, 2 * T * h, 4 * 32 * T, 2 * T * r,
                              4 * T * h + 4 * T, 2 * T * i, 2 * T * i, 2 * T * i};
    uint64_t sum = 0;
    ck_assert_int_eq(am.n, (int)(sizeof names / sizeof *names));
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        const ck_act_class *c = cls(&am, names[k]);
        ck_assert_msg(c != NULL, "no class %s", names[k]);
        ck_assert_msg(c->bytes == bytes[k], "%s: %llu bytes, by hand %llu", names[k],
                      (unsigned long long)c->bytes, (unsigned long long)bytes[k]);
        ck_assert_msg(c->kept_by && *c->kept_by, "%s: no reason", names[k]);
        sum += bytes[k];
    }
    ck_assert_uint_eq(am.per_layer, sum);
    ck_assert_uint_eq(sum, 573603840ull); /* 547 MiB a layer */
    /* Frozen MLP, LoRA on attention only: nothing saved rebuilds gate or up
     * (their input is not kept); silu is rebuilt from gate. */
    ck_assert_int_eq(cls(&am, "mlp.gate")->recompute, 0);
    ck_assert_int_eq(cls(&am, "mlp.up")->recompute, 0);
    ck_assert_int_eq(cls(&am, "mlp.silu")->recompute, 1);
    ck_assert_int_eq(cls(&am, "attn.out")->recompute, 0);
    ck_assert_int_eq(cls(&am, "attn.q")->recompute, 1);
    /* q = rope(n1 Wq^T + LoRA): 2 T h qd for the projection, the LoRA pair. */
    ck_assert(cls(&am, "attn.q")->flops >= 2.0 * T * h * h + 2.0 * T * h * r + 2.0 * T * r * h);
    ck_assert(cls(&am, "attn.norm")->in[0] == 0); /* from attn.norm.x32 */
    /* No norm-weight products, no mlp.act: those weights are frozen. */
    ck_assert_ptr_null(cls(&am, "attn.norm.out"));
    ck_assert_ptr_null(cls(&am, "mlp.act"));
    /* Persistent: bf16 base, fp32 adapters with their gradients and AdamW. */
    uint64_t lora = 32ull * 4 * r * (h + h);
    ck_assert_uint_eq(am.trainable, lora);
    ck_assert_uint_eq(am.persistent, 2 * am.params + 16 * lora);
    /* The loss at 4096 tokens and 32000 words: (2 + 8) T V forward, 12 T V backward. */
    ck_assert_uint_eq(am.loss_forward, 10ull * T * 32000);
    ck_assert_uint_eq(am.loss_backward, 12ull * T * 32000);
}
END_TEST

/* Full fine-tuning keeps the projections' inputs and the norms' products;
 * eager attention keeps the softmax, quadratic in the sequence. */
START_TEST(t_full_and_eager) {
    ck_model_profile m = load_model("llama-3-8b");
    ck_train_shape t = {.method = CK_METHOD_FULL, .dtype_bytes = 2, .seq = 2048, .batch = 2,
                        .attention = CK_ATTN_EAGER};
    ck_act_model am;
    OK(ck__act_model(&m, &t, &am));
    const uint64_t T = 4096, s = 2048, b = 2, a = 32, i = 14336;
    ck_assert_uint_eq(cls(&am, "attn.probs32")->bytes, 4 * a * s * s * b);
    ck_assert_uint_eq(cls(&am, "attn.probs")->bytes, 2 * a * s * s * b);
    ck_assert_int_eq(cls(&am, "attn.probs")->recompute, 1);
    ck_assert_uint_eq(cls(&am, "attn.k")->bytes, 2 * T * 4096); /* repeated to 32 heads */
    ck_assert_uint_eq(cls(&am, "mlp.act")->bytes, 2 * T * i);
    ck_assert_int_eq(cls(&am, "mlp.gate")->recompute, 1);
    ck_assert_ptr_nonnull(cls(&am, "mlp.norm.out"));
    ck_assert_ptr_null(cls(&am, "attn.lse"));
    /* The same with flash attention: k and v at 8 heads, no softmax. */
    t.attention = CK_ATTN_FLASH;
    OK(ck__act_model(&m, &t, &am));
    ck_assert_uint_eq(cls(&am, "attn.k")->bytes, 2 * T * 1024);
    ck_assert_ptr_null(cls(&am, "attn.probs32"));
    /* QLoRA: the same activations as LoRA, a 4-bit base. */
    ck_train_shape l = {.method = CK_METHOD_LORA, .rank = 8, .dtype_bytes = 2, .seq = 1024, .batch = 1};
    ck_train_shape q = l;
    q.method = CK_METHOD_QLORA;
    ck_act_model al, aq;
    OK(ck__act_model(&m, &l, &al));
    OK(ck__act_model(&m, &q, &aq));
    ck_assert_uint_eq(al.per_layer, aq.per_layer);
    ck_assert(aq.weight_bytes < al.weight_bytes / 2);
    /* Bad shapes. */
    ck_train_shape bad = l;
    bad.rank = 0;
    ck_assert_int_eq(ck__act_model(&m, &bad, &am), CK_ERR_INVALID);
    bad = l;
    bad.dtype_bytes = 3;
    ck_assert_int_eq(ck__act_model(&m, &bad, &am), CK_ERR_INVALID);
    bad = l;
    bad.seq = 0;
    ck_assert_int_eq(ck__act_model(&m, &bad, &am), CK_ERR_INVALID);
}
END_TEST

/* Per-layer checkpointing: a layer keeps its input alone; backward holds the
 * recomputed layer's whole set and runs its forward again. */
START_TEST(t_checkpointing) {
    ck_model_profile m = load_model("llama-2-7b");
    ck_train_shape t = {.method = CK_METHOD_LORA, .rank = 16, .dtype_bytes = 2, .seq = 4096, .batch = 1};
    ck_act_model plain, ck;
    OK(ck__act_model(&m, &t, &plain));
    t.checkpointing = 1;
    OK(ck__act_model(&m, &t, &ck));
    ck_assert_int_eq(ck.n, 1);
    ck_assert_str_eq(ck.c[0].name, "input");
    ck_assert_uint_eq(ck.per_layer, 2ull * 4096 * 4096);
    ck_assert_uint_eq(ck.per_layer, plain.ckpt_input);
    ck_assert_uint_eq(ck.layer_backward, plain.layer_backward + plain.per_layer);
    ck_assert(ck.layer_bwd_flops == plain.layer_bwd_flops + plain.layer_fwd_flops);
    ck_assert_uint_eq(ck.persistent, plain.persistent);
    ck_assert_uint_eq(ck.loss_backward, plain.loss_backward);
}
END_TEST

int main(void) {
    Suite *s = suite_create("actmodel");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, t_megatron);
    tcase_add_test(tc, t_param_counts);
    tcase_add_test(tc, t_llama_lora_by_hand);
    tcase_add_test(tc, t_full_and_eager);
    tcase_add_test(tc, t_checkpointing);
    suite_add_tcase(s, tc);
    return ck_test_run(s);
}
