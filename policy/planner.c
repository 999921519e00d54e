/* The cost model and the planner.
 *
 * Time. A layer's forward takes Ff = its flops / (dense FLOP/s x mfu), its
 * backward Fb likewise. An offloaded byte crosses PCIe twice: out during
 * forward, hidden by the next layer's forward compute, and back during
 * backward, hidden by the previous layer's backward; what does not fit in
 * that window is added: per layer max(0, O / d2h - Ff) + max(0, O / h2d -
 * Fb) for O offloaded bytes. A recomputed class adds the longer of its
 * flops / FLOP/s and its traffic / memory bandwidth (the replay does not
 * overlap). The step is L (Ff + Fb) plus the head and loss.
 *
 * Memory. Every layer's kept bytes K stay from forward to backward. The
 * loss phase sees persistent + L K + the loss, plus forward's tail (the
 * last layer's stashed tensors) when the engine keeps it there (see
 * finish). In backward, at the top layer, all L
 * layers' K are there, with this layer's stashed tensors back (O + R), the
 * next layer's offloaded ones on their way (prefetch: O) and the layer's
 * backward work. The peak is the larger.
 *
 * Search. Tiers are per class (the same in every layer, as a policy's glob
 * rules give them). A depth-first search over classes, biggest first,
 * trying keep, offload, recompute; a branch is cut only when even the
 * least-memory choice for every class left cannot fit, or when its added
 * time so far (which only grows) is already no better than the best found.
 * So the result is the optimum over every assignment; ck__plan_brute
 * enumerates them all to check that on small instances. */
#include "planner.h"

#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

double ck__plan_rate(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o) {
    double mfu = o->mfu > 0 ? o->mfu : 0.5;
    return (am->dtype_bytes == 4 ? hw->flops_fp32 : hw->flops_bf16) * mfu;
}

double ck__plan_loss(const ck_act_model *am, const ck_plan_opts *o) {
    double frac = 1;
    if (o->loss_chunk && o->loss_chunk < am->tokens) frac = (double)o->loss_chunk / (double)am->tokens;
    double lf = (double)am->loss_forward * frac, lb = (double)am->loss_backward * frac;
    return lf > lb ? lf : lb;
}

/* The tier classes may take: bit 0 keep, 1 offload, 2 recompute. */
static unsigned allowed(const ck_act_class *c) {
    if (c->bytes <= CK_PLAN_MIN_TAG) return 1;
    return 1 | 2 | (c->recompute ? 4 : 0);
}

/* What the plan may fill: the budget less the allocator's rounding (2 MiB
 * chunks under each tensor, small tensors' pages): 2%. */
static double usable(const ck_plan_opts *o) { return (double)o->budget * 0.98; }

static double rebuild_s(const ck_act_class *c, const ck_hw_profile *hw, double rate) {
    double f = c->flops / rate, m = c->traffic / hw->mem_bw;
    return f > m ? f : m;
}

typedef struct totals {
    double K, O, R, rebuild; /* per layer */
} totals;

static void finish(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                   const totals *tt, int ok, ck_plan *out) {
    double rate = ck__plan_rate(am, hw, o), L = (double)am->layers;
    double Ff = am->layer_fwd_flops / rate, Fb = am->layer_bwd_flops / rate;
    out->step = L * (Ff + Fb) + am->head_flops / rate;
    double out_s = tt->O / hw->d2h - Ff, in_s = tt->O / hw->h2d - Fb;
    out->added = L * ((out_s > 0 ? out_s : 0) + (in_s > 0 ? in_s : 0) + tt->rebuild);
    out->overhead = out->step > 0 ? out->added / out->step : 0;
    out->crossover = rate / hw->h2d;
    out->stashed = tt->O + tt->R;
    out->persistent = (double)am->persistent;
    out->kept = L * tt->K;
    out->loss = ck__plan_loss(am, o) + (double)am->final_norm;
    /* Forward's tail: the engine keeps the last layer's stashed tensors
     * resident (backward needs them first) unless the budget is near at
     * their stash (within 10%). Kept, they stay through the loss phase if
     * it has room; if not, the loss's allocation evicts them, waiting for
     * their copy out, and backward's first layer comes back unhidden. Sent
     * out in forward, that first layer comes back unhidden too. */
    double tail = tt->O + tt->R, tail_in = 0, tail_s = 0;
    double base = out->persistent + out->kept + out->loss;
    if (tail > 0) {
        int kept_tail = out->persistent + out->kept + tail <= 0.9 * (double)o->budget;
        if (kept_tail && base + tail <= usable(o)) tail_in = tail;
        else if (kept_tail) tail_s = tt->O / hw->d2h + tt->O / hw->h2d;
        else tail_s = tt->O / hw->h2d;
    }
    out->added += tail_s;
    out->overhead = out->step > 0 ? out->added / out->step : 0;
    double at_loss = base + tail_in;
    out->transient = tt->O + tt->R + tt->O + (double)am->layer_backward;
    double at_bwd = out->persistent + out->kept + out->transient;
    out->peak = at_loss > at_bwd ? at_loss : at_bwd;
    out->peak_at = at_loss > at_bwd ? "loss" : "backward";
    if (at_loss > at_bwd) out->transient = tail_in;
    out->feasible = ok && out->peak <= usable(o);
}

void ck__plan_eval(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                   const ck_tier *t, ck_plan *out) {
    double rate = ck__plan_rate(am, hw, o);
    totals tt = {0, 0, 0, 0};
    int ok = 1;
    for (int k = 0; k < am->n; k++) {
        const ck_act_class *c = &am->c[k];
        unsigned al = allowed(c);
        switch (t[k]) {
        case CK_TIER_KEEP: tt.K += (double)c->bytes; break;
        case CK_TIER_OFFLOAD:
            ok &= (al & 2) != 0;
            tt.O += (double)c->bytes;
            break;
        case CK_TIER_RECOMPUTE:
            ok &= (al & 4) != 0;
            tt.R += (double)c->bytes;
            tt.rebuild += rebuild_s(c, hw, rate);
            break;
        default: ok = 0; break;
        }
        out->tier[k] = t[k];
    }
    finish(am, hw, o, &tt, ok, out);
}

/* ---- the search ---- */

typedef struct search {
    const ck_act_model *am;
    const ck_hw_profile *hw;
    const ck_plan_opts *o;
    int order[CK_ACT_MAX];
    double min_bwd[CK_ACT_MAX + 1], min_loss[CK_ACT_MAX + 1]; /* least memory of classes order[i..] */
    double rate, L, Ff, Fb, fixed_bwd, fixed_loss;
    ck_tier cur[CK_ACT_MAX], best[CK_ACT_MAX];
    double best_added, best_stashed, best_peak;
    int found;
    uint64_t evaluated;
} search;

/* The order of plans: less added time; then fewer bytes moved or dropped
 * (keep what fits); then a lower peak. */
static int better(const ck_plan *p, double added, double stashed, double peak) {
    if (p->added != added) return p->added < added;
    if (p->stashed != stashed) return p->stashed < stashed;
    return p->peak < peak;
}

static double added_of(const search *S, double O, double rebuild) {
    double out_s = O / S->hw->d2h - S->Ff, in_s = O / S->hw->h2d - S->Fb;
    return S->L * ((out_s > 0 ? out_s : 0) + (in_s > 0 ? in_s : 0) + rebuild);
}

static void dfs(search *S, int i, double K, double O, double R, double rebuild) {
    double budget = usable(S->o);
    /* Cut: even the least memory for the rest cannot fit. */
    if (S->fixed_bwd + S->L * K + 2 * O + R + S->min_bwd[i] > budget ||
        S->fixed_loss + S->L * K + S->min_loss[i] > budget)
        return;
    double added = added_of(S, O, rebuild);
    if (S->found && added > S->best_added) return; /* only grows from here */
    if (i == S->am->n) {
        S->evaluated++;
        ck_plan p;
        ck__plan_eval(S->am, S->hw, S->o, S->cur, &p);
        if (!p.feasible) return;
        if (!S->found || better(&p, S->best_added, S->best_stashed, S->best_peak)) {
            S->found = 1;
            S->best_added = p.added;
            S->best_stashed = p.stashed;
            S->best_peak = p.peak;
            memcpy(S->best, S->cur, sizeof S->best);
        }
        return;
    }
    int k = S->order[i];
    const ck_act_class *c = &S->am->c[k];
    unsigned al = allowed(c);
    double b = (double)c->bytes;
    if (al & 1) {
        S->cur[k] = CK_TIER_KEEP;
        dfs(S, i + 1, K + b, O, R, rebuild);
    }
    if (al & 2) {
        S->cur[k] = CK_TIER_OFFLOAD;
        dfs(S, i + 1, K, O + b, R, rebuild);
    }
    if (al & 4) {
        S->cur[k] = CK_TIER_RECOMPUTE;
        dfs(S, i + 1, K, O, R + b, rebuild + rebuild_s(c, S->hw, S->rate));
    }
}

/* The least-memory tier of a class (recompute, else offload, else keep). */
static ck_tier least(const ck_act_class *c) {
    unsigned al = allowed(c);
    return (al & 4) ? CK_TIER_RECOMPUTE : (al & 2) ? CK_TIER_OFFLOAD : CK_TIER_KEEP;
}

static void reasons(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o, ck_plan *p) {
    double rate = ck__plan_rate(am, hw, o);
    double Ff = am->layer_fwd_flops / rate, Fb = am->layer_bwd_flops / rate;
    /* a layer's offloaded bytes, and whether their transfers hide */
    double O = 0;
    for (int k = 0; k < am->n; k++)
        if (p->tier[k] == CK_TIER_OFFLOAD) O += (double)am->c[k].bytes;
    double t_out = O / hw->d2h, t_in = O / hw->h2d;
    int hidden = t_out <= Ff && t_in <= Fb;
    for (int k = 0; k < am->n; k++) {
        const ck_act_class *c = &am->c[k];
        double fpb = c->bytes ? c->flops / (double)c->bytes : 0;
        double rb = rebuild_s(c, hw, rate) * 1e3;
        char *r = p->reason[k];
        size_t n = sizeof p->reason[k];
        switch (p->tier[k]) {
        case CK_TIER_KEEP:
            if (c->bytes <= CK_PLAN_MIN_TAG) snprintf(r, n, "kept: 1 MiB or less, shares pages (cannot be tagged)");
            else snprintf(r, n, "kept: the budget has room for it");
            break;
        case CK_TIER_OFFLOAD:
            if (!c->recompute)
                snprintf(r, n, "offload: no replay op rebuilds it%s", hidden ? "; transfers hidden" : "");
            else if (hidden)
                snprintf(r, n, "offload: a layer's transfers (%.1f ms out, %.1f ms in) hide under its compute "
                               "(%.1f, %.1f ms); a rebuild would add %.2f ms",
                         t_out * 1e3, t_in * 1e3, Ff * 1e3, Fb * 1e3, rb);
            else
                snprintf(r, n, "offload: %.0f FLOP/B to rebuild (%.2f ms a layer), at or over the crossover %.0f FLOP/B",
                         fpb, rb, p->crossover);
            break;
        case CK_TIER_RECOMPUTE:
            snprintf(r, n, "recompute: %.0f FLOP/B (%.2f ms a layer)%s", fpb, rb,
                     fpb < p->crossover ? ", under the crossover: cheaper than a PCIe trip"
                                        : ": the transfers would not hide");
            break;
        default: snprintf(r, n, "?"); break;
        }
    }
}

static void setup(search *S, const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o) {
    memset(S, 0, sizeof *S);
    S->am = am;
    S->hw = hw;
    S->o = o;
    S->rate = ck__plan_rate(am, hw, o);
    S->L = (double)am->layers;
    S->Ff = am->layer_fwd_flops / S->rate;
    S->Fb = am->layer_bwd_flops / S->rate;
    for (int k = 0; k < am->n; k++) S->order[k] = k;
    /* biggest first: the cuts bite early */
    for (int a = 1; a < am->n; a++)
        for (int b = a; b > 0 && am->c[S->order[b]].bytes > am->c[S->order[b - 1]].bytes; b--) {
            int t = S->order[b];
            S->order[b] = S->order[b - 1];
            S->order[b - 1] = t;
        }
    for (int i = am->n - 1; i >= 0; i--) {
        const ck_act_class *c = &am->c[S->order[i]];
        double b = (double)c->bytes;
        ck_tier t = least(c);
        double mb = t == CK_TIER_KEEP ? S->L * b : t == CK_TIER_OFFLOAD ? 2 * b : b;
        double ml = t == CK_TIER_KEEP ? S->L * b : 0;
        S->min_bwd[i] = S->min_bwd[i + 1] + mb;
        S->min_loss[i] = S->min_loss[i + 1] + ml;
    }
    S->fixed_bwd = (double)am->persistent + (double)am->layer_backward;
    S->fixed_loss = (double)am->persistent + ck__plan_loss(am, o) + (double)am->final_norm;
}

static ck_status check_args(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                            ck_plan *out) {
    if (!am || !hw || !o || !out) return ck__err(CK_ERR_INVALID, "planner: NULL argument");
    if (!o->budget) return ck__err(CK_ERR_INVALID, "planner: no budget");
    if (!(hw->flops_bf16 > 0) || !(hw->h2d > 0) || !(hw->d2h > 0) || !(hw->mem_bw > 0))
        return ck__err(CK_ERR_INVALID, "planner: hardware profile '%s' lacks rates", hw->name);
    return CK_OK;
}

static void least_plan(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                       ck_plan *out) {
    ck_tier t[CK_ACT_MAX];
    for (int k = 0; k < am->n; k++) t[k] = least(&am->c[k]);
    ck__plan_eval(am, hw, o, t, out);
    out->feasible = 0;
}

ck_status ck__plan(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o, ck_plan *out) {
    ck_status st = check_args(am, hw, o, out);
    if (st != CK_OK) return st;
    search S;
    setup(&S, am, hw, o);
    dfs(&S, 0, 0, 0, 0, 0);
    memset(out, 0, sizeof *out);
    if (S.found) ck__plan_eval(am, hw, o, S.best, out);
    else least_plan(am, hw, o, out);
    out->evaluated = S.evaluated;
    reasons(am, hw, o, out);
    return CK_OK;
}

ck_status ck__plan_brute(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                         ck_plan *out) {
    ck_status st = check_args(am, hw, o, out);
    if (st != CK_OK) return st;
    memset(out, 0, sizeof *out);
    double total = 1;
    for (int k = 0; k < am->n; k++) total *= 3;
    if (total > 2e7) return ck__err(CK_ERR_INVALID, "planner: %d classes is too many to enumerate", am->n);
    ck_tier t[CK_ACT_MAX], best[CK_ACT_MAX];
    int found = 0;
    double best_added = 0, best_stashed = 0, best_peak = 0;
    uint64_t evaluated = 0;
    for (uint64_t code = 0; code < (uint64_t)total; code++) {
        uint64_t x = code;
        int ok = 1;
        for (int k = 0; k < am->n; k++, x /= 3) {
            t[k] = x % 3 == 0 ? CK_TIER_KEEP : x % 3 == 1 ? CK_TIER_OFFLOAD : CK_TIER_RECOMPUTE;
            ok &= (allowed(&am->c[k]) >> (x % 3)) & 1;
        }
        if (!ok) continue;
        evaluated++;
        ck_plan p;
        ck__plan_eval(am, hw, o, t, &p);
        if (!p.feasible) continue;
        if (!found || better(&p, best_added, best_stashed, best_peak)) {
            found = 1;
            best_added = p.added;
            best_stashed = p.stashed;
            best_peak = p.peak;
            memcpy(best, t, sizeof best);
        }
    }
    if (found) ck__plan_eval(am, hw, o, best, out);
    else least_plan(am, hw, o, out);
    out->evaluated = evaluated;
    reasons(am, hw, o, out);
    return CK_OK;
}

void ck__plan_checkpointing(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                            ck_plan *out) {
    memset(out, 0, sizeof *out);
    double rate = ck__plan_rate(am, hw, o), L = (double)am->layers;
    double Ff = am->layer_fwd_flops / rate, Fb = am->layer_bwd_flops / rate;
    out->step = L * (Ff + Fb) + am->head_flops / rate;
    out->added = L * Ff; /* every layer's forward runs again */
    out->overhead = out->step > 0 ? out->added / out->step : 0;
    out->crossover = rate / hw->h2d;
    out->persistent = (double)am->persistent;
    out->kept = L * (double)am->ckpt_input;
    out->loss = ck__plan_loss(am, o) + (double)am->final_norm;
    double at_loss = out->persistent + out->kept + out->loss;
    double at_bwd = out->persistent + out->kept + (double)am->per_layer + (double)am->layer_backward;
    out->peak = at_loss > at_bwd ? at_loss : at_bwd;
    out->peak_at = at_loss > at_bwd ? "loss" : "backward";
    out->transient = at_loss > at_bwd ? 0 : (double)am->per_layer + (double)am->layer_backward;
    out->feasible = out->peak <= usable(o);
    for (int k = 0; k < am->n; k++) {
        out->tier[k] = CK_TIER_RECOMPUTE;
        snprintf(out->reason[k], sizeof out->reason[k], "checkpointing: the layer runs again");
    }
}

/* Does seq fit (within max_overhead)? Fills am and plan. */
static int fits(const ck_model_profile *m, const ck_train_shape *shape, const ck_hw_profile *hw,
                const ck_plan_opts *o, double max_overhead, int ckpt, uint64_t seq,
                ck_act_model *am, ck_plan *plan, ck_status *st) {
    ck_train_shape t = *shape;
    t.seq = seq;
    *st = ck__act_model(m, &t, am);
    if (*st != CK_OK) return 0;
    if (ckpt) ck__plan_checkpointing(am, hw, o, plan);
    else if ((*st = ck__plan(am, hw, o, plan)) != CK_OK) return 0;
    return plan->feasible && plan->overhead <= max_overhead;
}

ck_status ck__plan_max_seq(const ck_model_profile *m, const ck_train_shape *shape,
                           const ck_hw_profile *hw, const ck_plan_opts *o, double max_overhead,
                           int checkpointing, uint64_t *seq, ck_act_model *am, ck_plan *plan) {
    if (!m || !shape || !hw || !o || !seq || !am || !plan)
        return ck__err(CK_ERR_INVALID, "planner: NULL argument");
    ck_status st = CK_OK;
    uint64_t lo = 0, hi = ((uint64_t)1 << 20) / 128; /* in units of 128 tokens */
    ck_act_model tam;
    ck_plan tp;
    /* the largest k in [1, hi] with fits(128 k), assuming it is monotone */
    while (lo < hi) {
        uint64_t mid = (lo + hi + 1) / 2;
        if (fits(m, shape, hw, o, max_overhead, checkpointing, mid * 128, &tam, &tp, &st)) lo = mid;
        else if (st != CK_OK) return st;
        else hi = mid - 1;
    }
    *seq = lo * 128;
    if (lo) fits(m, shape, hw, o, max_overhead, checkpointing, *seq, am, plan, &st);
    else {
        /* nothing fits: the plan at 128 tokens says why */
        fits(m, shape, hw, o, max_overhead, checkpointing, 128, am, plan, &st);
    }
    return st;
}
