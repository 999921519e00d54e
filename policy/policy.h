/* Policy files (internal): the parsed form, and what the pool and the tier
 * engine ask of it. The public calls are in include/ckalloc/policy.h. */
#ifndef CKALLOC_POLICY_INTERNAL_H
#define CKALLOC_POLICY_INTERNAL_H

#include "ckalloc/policy.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { CK_EVICT_DEEPEST = 0, CK_EVICT_LARGEST = 1 } ck_evict_order;

typedef struct ck_policy_rule {
    char *glob;
    ck_tier tier;
} ck_policy_rule;

typedef struct ck_policy {
    char hardware[48], model[48]; /* "" when not given */
    uint64_t budget;              /* 0: not given */
    int has_prefetch;
    uint64_t prefetch;
    ck_evict_order eviction;
    /* training shape (0 / "" when not given) */
    char method[8], dtype[8], attention[8], checkpointing[8];
    uint32_t rank;
    uint64_t seq, batch;
    ck_policy_rule *rules;
    size_t nrules;
} ck_policy;

/* Parse len bytes of policy YAML; name stands for the file in messages.
 * CK_OK with *out (free with ck__policy_free), or CK_ERR_INVALID saying
 * "NAME:LINE:COLUMN: ..." (CK_ERR_BACKEND when libyaml cannot be loaded). */
ck_status ck__policy_parse(const char *text, size_t len, const char *name, ck_policy **out);
/* Read and parse the file at path (CK_ERR_IO when it cannot be read). */
ck_status ck__policy_read(const char *path, ck_policy **out);
void ck__policy_free(ck_policy *pol);
/* The first matching rule's tier for tag, CK_TIER_AUTO when none. */
ck_tier ck__policy_match(const ck_policy *pol, const char *tag);

/* A hardware profile (policy/hardware/NAME.yaml). Rates are per second. */
typedef struct ck_hw_profile {
    char name[48];
    uint64_t memory;
    double flops_bf16, flops_fp16, flops_fp32; /* dense */
    double mem_bw, h2d, d2h;
    int pcie;
} ck_hw_profile;

/* A model profile (policy/models/NAME.yaml): a llama-family shape. */
typedef struct ck_model_profile {
    char name[48];
    uint64_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab;
    int tied_embeddings;
    int attention_bias; /* q, k and v have biases (Qwen2); optional, default false */
} ck_model_profile;

/* Parse a profile; name stands for the file in messages. CK_ERR_INVALID
 * with FILE:LINE:COLUMN as for policies. */
ck_status ck__hw_parse(const char *text, size_t len, const char *name, ck_hw_profile *out);
ck_status ck__model_parse(const char *text, size_t len, const char *name, ck_model_profile *out);

/* The profile names shipped in policy/hardware and policy/models (built in
 * from the directories' file names; NULL-terminated). */
extern const char *const ck__hardware_names[];
extern const char *const ck__model_names[];
/* Their texts (NUL-terminated), in the same order. */
extern const unsigned char *const ck__hardware_texts[];
extern const unsigned char *const ck__model_texts[];

/* The built-in profile named name: CK_ERR_INVALID naming the known ones
 * when there is none. */
ck_status ck__hw_builtin(const char *name, ck_hw_profile *out);
ck_status ck__model_builtin(const char *name, ck_model_profile *out);

#endif
