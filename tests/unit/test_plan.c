/* The planner: the search against every assignment on small instances,
 * budgets from too small to roomy, the cost model's parts, checkpointing as
 * the baseline, and issue 13's target for Llama-2-7B LoRA on a 24 GB GPU. */
#include "planner.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

/* The profiles built into the library (the same files as policy/). */
static ck_model_profile model(const char *name) {
    ck_model_profile m;
    OK(ck__model_builtin(name, &m));
    return m;
}

static ck_hw_profile gpu(const char *name) {
    ck_hw_profile h;
    OK(ck__hw_builtin(name, &h));
    return h;
}

/* The search finds what enumerating every assignment finds: the same added
 * time and peak, for budgets from nothing-fits to everything-kept. */
START_TEST(t_search_matches_brute_force) {
    ck_model_profile m = model("tiny");
    ck_hw_profile hw = gpu("rtx3060");
    static const ck_train_shape shapes[] = {
        {.method = CK_METHOD_LORA, .rank = 8, .targets = CK_T_Q, .dtype_bytes = 2, .seq = 8192, .batch = 1},
        {.method = CK_METHOD_LORA, .rank = 8, .targets = CK_T_Q | CK_T_V, .dtype_bytes = 2, .seq = 2048,
         .batch = 2, .attention = CK_ATTN_EAGER},
        {.method = CK_METHOD_QLORA, .rank = 4, .targets = CK_T_GATE, .dtype_bytes = 2, .seq = 4096, .batch = 2},
    };
    int checked = 0, feasible = 0, mixed = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        ck_act_model am;
        OK(ck__act_model(&m, &shapes[s], &am));
        ck_assert_int_le(am.n, 13);
        ck_plan_opts o = {0};
        ck_tier keep_all[CK_ACT_MAX];
        for (int k = 0; k < am.n; k++) keep_all[k] = CK_TIER_KEEP;
        ck_plan kp;
        o.budget = UINT64_MAX;
        ck__plan_eval(&am, &hw, &o, keep_all, &kp);
        double lo = (double)am.persistent, hi = kp.peak * 1.05;
        for (int step = 0; step <= 12; step++) {
            o.budget = (uint64_t)(lo + (hi - lo) * step / 12.0);
            ck_plan a, b;
            OK(ck__plan(&am, &hw, &o, &a));
            OK(ck__plan_brute(&am, &hw, &o, &b));
            ck_assert_msg(a.feasible == b.feasible, "shape %zu budget %llu: feasible %d vs brute %d", s,
                          (unsigned long long)o.budget, a.feasible, b.feasible);
            if (a.feasible) {
                ck_assert_msg(a.added == b.added && a.peak == b.peak,
                              "shape %zu budget %llu: search %.9g s %.0f B, brute %.9g s %.0f B", s,
                              (unsigned long long)o.budget, a.added, a.peak, b.added, b.peak);
                ck_assert(a.peak <= (double)o.budget);
                ck_assert(a.evaluated <= b.evaluated);
                feasible++;
                int kinds = 0;
                for (int k = 0; k < am.n; k++) kinds |= 1 << a.tier[k];
                mixed += (kinds & ~(1 << CK_TIER_KEEP)) != 0;
            }
            checked++;
        }
    }
    ck_assert_int_eq(checked, 39);
    ck_assert_msg(feasible > 10 && mixed > 5, "feasible %d, with stashed classes %d", feasible, mixed);
}
END_TEST

/* More budget never costs more time; deterministic answers. */
START_TEST(t_monotone_and_deterministic) {
    ck_model_profile m = model("llama-2-7b");
    ck_hw_profile hw = gpu("rtx4090");
    ck_train_shape t = {.method = CK_METHOD_LORA, .rank = 16, .dtype_bytes = 2, .seq = 8192, .batch = 1};
    ck_act_model am;
    OK(ck__act_model(&m, &t, &am));
    double last = -1;
    for (uint64_t gib = 16; gib <= 80; gib += 4) {
        ck_plan_opts o = {.budget = gib * GiB};
        ck_plan p, q;
        OK(ck__plan(&am, &hw, &o, &p));
        OK(ck__plan(&am, &hw, &o, &q));
        ck_assert(memcmp(p.tier, q.tier, sizeof p.tier) == 0 && p.added == q.added);
        if (!p.feasible) continue;
        if (last >= 0) ck_assert_msg(p.added <= last + 1e-12, "%llu GiB: %.6f s > %.6f s",
                                     (unsigned long long)gib, p.added, last);
        last = p.added;
        /* the parts add up to the peak */
        ck_assert(p.peak >= p.persistent + p.kept);
        for (int k = 0; k < am.n; k++) ck_assert_msg(p.reason[k][0], "class %d has no reason", k);
    }
    ck_assert(last == 0); /* 80 GiB keeps everything */
}
END_TEST

/* The cost model's parts by hand: offloading a class whose transfer fits
 * under a layer's compute adds nothing; recompute adds its rebuild time. */
START_TEST(t_cost_parts) {
    ck_model_profile m = model("llama-2-7b");
    ck_hw_profile hw = gpu("rtx4090");
    ck_train_shape t = {.method = CK_METHOD_LORA, .rank = 16, .dtype_bytes = 2, .seq = 4096, .batch = 1};
    ck_act_model am;
    OK(ck__act_model(&m, &t, &am));
    ck_plan_opts o = {.budget = UINT64_MAX, .mfu = 0.5};
    double rate = hw.flops_bf16 * 0.5;
    double Ff = am.layer_fwd_flops / rate, Fb = am.layer_bwd_flops / rate;
    ck_tier tiers[CK_ACT_MAX];
    int gate = -1, silu = -1;
    for (int k = 0; k < am.n; k++) {
        tiers[k] = CK_TIER_KEEP;
        if (!strcmp(am.c[k].name, "mlp.gate")) gate = k;
        if (!strcmp(am.c[k].name, "mlp.silu")) silu = k;
    }
    ck_plan base, p;
    ck__plan_eval(&am, &hw, &o, tiers, &base);
    ck_assert(base.added == 0 && base.feasible);
    ck_assert(fabs(base.step - (32 * (Ff + Fb) + am.head_flops / rate)) < 1e-12);
    /* 90 MB out at 25 GB/s (3.6 ms) against a forward of Ff */
    tiers[gate] = CK_TIER_OFFLOAD;
    ck__plan_eval(&am, &hw, &o, tiers, &p);
    double b = (double)am.c[gate].bytes;
    double want = 32 * (fmax(0, b / hw.d2h - Ff) + fmax(0, b / hw.h2d - Fb));
    ck_assert_msg(fabs(p.added - want) < 1e-12, "offload adds %.9f, by hand %.9f", p.added, want);
    ck_assert(p.peak < base.peak);
    tiers[gate] = CK_TIER_KEEP;
    tiers[silu] = CK_TIER_RECOMPUTE;
    ck__plan_eval(&am, &hw, &o, tiers, &p);
    double r = fmax(am.c[silu].flops / rate, am.c[silu].traffic / hw.mem_bw);
    ck_assert_msg(fabs(p.added - 32 * r) < 1e-12, "recompute adds %.9f, by hand %.9f", p.added, 32 * r);
    /* what cannot be: recompute of gate (its input is not kept), a stash of lse (tiny) */
    tiers[silu] = CK_TIER_KEEP;
    tiers[gate] = CK_TIER_RECOMPUTE;
    ck__plan_eval(&am, &hw, &o, tiers, &p);
    ck_assert_int_eq(p.feasible, 0);
    /* bad arguments, unknown names */
    ck_hw_profile none_hw;
    ck_assert_int_eq(ck__hw_builtin("gtx480", &none_hw), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), "unknown GPU 'gtx480' (known: a100-40gb"), "%s", ck_last_error());
    ck_model_profile none_m;
    ck_assert_int_eq(ck__model_builtin(NULL, &none_m), CK_ERR_INVALID);
    ck_plan_opts none = {0};
    ck_assert_int_eq(ck__plan(&am, &hw, &none, &p), CK_ERR_INVALID);
}
END_TEST

/* Issue 13's target, Llama-2-7B LoRA r=16 bf16 on a 24 GB GPU: the
 * planner's longest sequence at <= 10% predicted overhead against plain
 * per-layer checkpointing's under the same budget. The target is 2x; this
 * model predicts 1.65x with transformers' loss (both are bound by the loss
 * phase, 12 T V bytes in its backward) and 1.51x with a loss chunked by
 * 1024 tokens. The test holds the planner to what it reaches, so a change
 * that loses ground fails; the README names the target as missed. */
START_TEST(t_target_llama2_lora_24g) {
    ck_model_profile m = model("llama-2-7b");
    ck_train_shape t = {.method = CK_METHOD_LORA, .rank = 16, .dtype_bytes = 2, .seq = 0, .batch = 1};
    const char *gpus[] = {"rtx4090", "rtx3090"};
    for (int g = 0; g < 2; g++) {
        for (int chunked = 0; chunked < 2; chunked++) {
            ck_hw_profile hw = gpu(gpus[g]);
            ck_plan_opts o = {.budget = 22 * GiB, .loss_chunk = chunked ? 1024 : 0};
            uint64_t sp = 0, sc = 0;
            ck_act_model am;
            ck_plan p, c;
            OK(ck__plan_max_seq(&m, &t, &hw, &o, 0.10, 0, &sp, &am, &p));
            OK(ck__plan_max_seq(&m, &t, &hw, &o, 1e9, 1, &sc, &am, &c));
            double ratio = (double)sp / (double)sc;
            ck_assert_msg(sc > 0 && ratio >= (chunked ? 1.5 : 1.6), "%s chunked %d: planner %llu tokens, "
                          "checkpointing %llu (%.2fx)", gpus[g], chunked, (unsigned long long)sp,
                          (unsigned long long)sc, ratio);
            ck_assert(p.feasible && p.overhead <= 0.10 && p.peak <= 22.0 * GiB);
            if (!chunked) ck_assert_str_eq(p.peak_at, "loss"); /* the logits bound it */
            /* 128 tokens more do not fit */
            ck_train_shape t2 = t;
            t2.seq = sp + 128;
            OK(ck__act_model(&m, &t2, &am));
            ck_plan q;
            OK(ck__plan(&am, &hw, &o, &q));
            ck_assert(!q.feasible || q.overhead > 0.10);
        }
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, t_search_matches_brute_force);
    tcase_add_test(tc, t_monotone_and_deterministic);
    tcase_add_test(tc, t_cost_parts);
    tcase_add_test(tc, t_target_llama2_lora_24g);
    suite_add_tcase(s, tc);
    return ck_test_run(s);
}
