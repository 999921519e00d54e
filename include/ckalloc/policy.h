/* ckalloc/policy.h: policy files, what users tune.
 *
 * A policy file (YAML) says, for one model on one GPU at one sequence
 * length, which tier each tagged tensor gets: ordered glob rules on tag
 * names, the first match wins. AUTO tags (ck_tag with CK_TIER_AUTO) follow
 * it; a tag with an explicit tier keeps its own. For example:
 *
 *   version: 1
 *   hardware: rtx4090          # a name from policy/hardware (optional)
 *   budget: 22G                # optional
 *   model: llama-2-7b          # a name from policy/models (optional)
 *   training: {method: lora, rank: 16, seq: 8192, batch: 1, dtype: bf16,
 *              attention: flash}
 *   prefetch: 256M             # optional: the pool's prefetch window
 *   eviction: deepest          # optional: deepest | largest
 *   rules:
 *     - {match: "layers.*.mlp.act", tier: recompute}
 *     - {match: "layers.*", tier: offload}
 *     - {match: "*", tier: keep}
 *
 * Keys and values are checked: an unknown key, a wrong type, a bad size, an
 * unknown GPU or model name or an unknown tier is CK_ERR_INVALID with
 * "FILE:LINE:COLUMN: what was wrong", and nothing is applied. ckalloc's
 * policy parser loads libyaml (libyaml-0-2) at run time; without it, loading
 * a policy fails saying so. */
#ifndef CKALLOC_POLICY_H
#define CKALLOC_POLICY_H

#include "ckalloc/tier.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Load the policy file at path into pool, replacing the one loaded before.
 * Applied at once: the rules (to AUTO tags stashed from now on), prefetch
 * and eviction. The file's budget is applied only by the config key
 * policy=PATH at pool creation, when the config sets no budget; here it is
 * checked and not applied. */
CK_API ck_status ck_policy_load(ck_pool *pool, const char *path);

/* The same from len bytes of YAML in text; name stands for the file in
 * messages (NULL: "<string>"). */
CK_API ck_status ck_policy_load_string(ck_pool *pool, const char *text, size_t len,
                                       const char *name);

/* Check the policy file at path without a pool: CK_OK, or CK_ERR_INVALID
 * (CK_ERR_IO when it cannot be read) with the sentence in ck_last_error(). */
CK_API ck_status ck_policy_check(const char *path);

/* The tier pool's policy gives a tag name: the first matching rule's, or
 * CK_TIER_AUTO when no rule matches or no policy is loaded. */
CK_API ck_status ck_policy_tier(ck_pool *pool, const char *tag, ck_tier *tier);

#ifdef __cplusplus
}
#endif

#endif /* CKALLOC_POLICY_H */
