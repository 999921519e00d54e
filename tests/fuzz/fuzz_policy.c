/* Fuzz the policy-file parser and the profile parsers (libyaml underneath):
 * no input may crash or leak, a rejected one writes nothing and says where
 * (FILE:LINE:COLUMN), and what a parse accepts is consistent: every rule
 * has a glob and a tier, and matching never fails. */
#include "policy.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    ck_policy *pol = NULL;
    ck_status st = ck__policy_parse(text, size, "f.yaml", &pol);
    if (st == CK_OK) {
        if (!pol) abort();
        for (size_t i = 0; i < pol->nrules; i++) {
            if (!pol->rules[i].glob || !pol->rules[i].glob[0]) abort();
            if ((unsigned)pol->rules[i].tier > CK_TIER_RECOMPUTE) abort();
        }
        if ((unsigned)ck__policy_match(pol, "layers.0.mlp.act") > CK_TIER_RECOMPUTE) abort();
        ck__policy_free(pol);
    } else {
        if (pol) abort(); /* nothing written */
        if (st == CK_ERR_INVALID && strncmp(ck_last_error(), "f.yaml:", 7) != 0) abort();
    }
    ck_hw_profile hw;
    (void)ck__hw_parse(text, size, "h.yaml", &hw);
    ck_model_profile m;
    if (ck__model_parse(text, size, "m.yaml", &m) == CK_OK && (!m.kv_heads || m.heads % m.kv_heads))
        abort();
    return 0;
}
