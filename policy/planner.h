/* The cost model and the planner (internal; ckalloc-plan is the user's way
 * in). For an activation model on a GPU under a budget, a tier per tensor
 * class, the same for every layer, with the least added step time. */
#ifndef CKALLOC_PLANNER_H
#define CKALLOC_PLANNER_H

#include "actmodel.h"

/* Tensors of this size or less share pages with others and cannot be
 * tagged: the planner keeps them. */
#define CK_PLAN_MIN_TAG ((uint64_t)1 << 20)

typedef struct ck_plan_opts {
    uint64_t budget;     /* bytes the pool may hold */
    double mfu;          /* achievable share of the profile's dense FLOP/s; 0 = 0.5 */
    uint64_t loss_chunk; /* tokens per chunk of a chunked loss; 0 = the plain loss */
} ck_plan_opts;

typedef struct ck_plan {
    ck_tier tier[CK_ACT_MAX]; /* per class: KEEP, OFFLOAD or RECOMPUTE */
    char reason[CK_ACT_MAX][160];
    int feasible;             /* 0: nothing fits the budget (tiers: the least memory) */
    /* predicted peak and its parts, bytes */
    double peak;
    double persistent;        /* weights, adapters, gradients, optimizer */
    double kept;              /* what every layer keeps on the device, all layers */
    double transient;         /* one layer's stashed tensors back, prefetch, backward work */
    double loss;              /* the loss phase */
    const char *peak_at;      /* "loss" or "backward": where the peak is */
    /* time, seconds */
    double step;              /* the step on the profile's FLOP/s, nothing stashed */
    double added;             /* what the plan adds: transfers not hidden, replays */
    double overhead;          /* added / step */
    double crossover;         /* FLOP per byte where recompute costs a PCIe trip */
    double stashed;           /* bytes a layer offloads or drops (ties: fewer is better) */
    uint64_t evaluated;       /* tier assignments the search looked at */
} ck_plan;

/* Achievable FLOP/s: the profile's dense rate (fp32 for 4-byte dtypes, the
 * tensor cores' bf16 rate otherwise) times mfu (0: 0.5). */
double ck__plan_rate(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o);
/* The loss phase's peak bytes (forward or backward, the larger), scaled to
 * o->loss_chunk tokens when the loss is chunked (the final norm not in). */
double ck__plan_loss(const ck_act_model *am, const ck_plan_opts *o);

/* Predict peak and added time of the tiers in t (one per class); fills the
 * plan's numbers, not its reasons. Classes whose tier they cannot take
 * (recompute without a recipe, a stash of a small tensor) make it
 * infeasible. */
void ck__plan_eval(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                   const ck_tier *t, ck_plan *out);

/* The exact search: every assignment is covered (a branch is cut only when
 * it can neither fit nor beat the best found); deterministic. */
ck_status ck__plan(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                   ck_plan *out);

/* Every assignment, one by one: the cross-check for small instances. */
ck_status ck__plan_brute(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                         ck_plan *out);

/* Plain per-layer gradient checkpointing (every layer keeps its input and
 * is recomputed in backward) under the same model: its peak and overhead. */
void ck__plan_checkpointing(const ck_act_model *am, const ck_hw_profile *hw,
                            const ck_plan_opts *o, ck_plan *out);

/* The longest sequence (a multiple of 128 tokens, at most 2^20) whose plan
 * fits with overhead <= max_overhead: *seq (0 when even 128 does not fit)
 * and that plan and model. checkpointing=1: plain per-layer gradient
 * checkpointing's instead. */
ck_status ck__plan_max_seq(const ck_model_profile *m, const ck_train_shape *shape,
                           const ck_hw_profile *hw, const ck_plan_opts *o, double max_overhead,
                           int checkpointing, uint64_t *seq, ck_act_model *am, ck_plan *plan);

#endif
