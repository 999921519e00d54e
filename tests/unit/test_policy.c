/* Policy files and profiles: the parser's answers (FILE:LINE:COLUMN errors,
 * nothing applied), the shipped profiles, and what a loaded policy does to
 * AUTO tags, the prefetch window, eviction and the budget. */
#include "ckalloc/policy.h"
#include "policy.h"
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static const char GOOD[] =
    "# a plan for one model on one GPU\n"
    "version: 1\n"
    "hardware: rtx4090\n"
    "budget: 22G\n"
    "model: llama-2-7b\n"
    "training: {method: lora, rank: 16, targets: [q, k, v, o], seq: 8192, batch: 1,\n"
    "           dtype: bf16, attention: flash, checkpointing: none}\n"
    "prefetch: 64M\n"
    "eviction: largest\n"
    "rules:\n"
    "  - {match: \"layers.*.mlp.act\", tier: recompute}\n"
    "  - match: \"layers.*\"\n"
    "    tier: offload\n"
    "  - {match: \"lm_head.*\", tier: auto}\n"
    "  - {match: \"*\", tier: keep}\n";

START_TEST(t_parse_good) {
    ck_policy *pol = NULL;
    OK(ck__policy_parse(GOOD, sizeof GOOD - 1, "good.yaml", &pol));
    ck_assert_str_eq(pol->hardware, "rtx4090");
    ck_assert_str_eq(pol->model, "llama-2-7b");
    ck_assert_uint_eq(pol->budget, 22 * GiB);
    ck_assert_int_eq(pol->has_prefetch, 1);
    ck_assert_uint_eq(pol->prefetch, 64 * MiB);
    ck_assert_int_eq(pol->eviction, CK_EVICT_LARGEST);
    ck_assert_str_eq(pol->method, "lora");
    ck_assert_uint_eq(pol->rank, 16);
    ck_assert_uint_eq(pol->seq, 8192);
    ck_assert_uint_eq(pol->batch, 1);
    ck_assert_str_eq(pol->dtype, "bf16");
    ck_assert_str_eq(pol->attention, "flash");
    ck_assert_uint_eq(pol->nrules, 4);
    /* First match wins; no match is AUTO. */
    ck_assert_int_eq(ck__policy_match(pol, "layers.3.mlp.act"), CK_TIER_RECOMPUTE);
    ck_assert_int_eq(ck__policy_match(pol, "layers.3.attn.q"), CK_TIER_OFFLOAD);
    ck_assert_int_eq(ck__policy_match(pol, "lm_head.logits"), CK_TIER_AUTO);
    ck_assert_int_eq(ck__policy_match(pol, "embed"), CK_TIER_KEEP);
    ck__policy_free(pol);
    /* Only version is required; no rules: everything AUTO. */
    OK(ck__policy_parse("version: 1\n", 11, NULL, &pol));
    ck_assert_uint_eq(pol->nrules, 0);
    ck_assert_int_eq(ck__policy_match(pol, "x"), CK_TIER_AUTO);
    ck_assert_int_eq(pol->has_prefetch, 0);
    ck__policy_free(pol);
    OK(ck__policy_parse("version: 1\nprefetch: off\n", 25, NULL, &pol));
    ck_assert_int_eq(pol->has_prefetch, 1);
    ck_assert_uint_eq(pol->prefetch, 0);
    ck__policy_free(pol);
}
END_TEST

/* Each bad policy: the error names the file, line and column and says what
 * was wrong. */
START_TEST(t_parse_errors) {
    static const struct {
        const char *text, *where, *says;
    } bad[] = {
        {"version: 1\nbugdet: 22G\n", "p.yaml:2:1:", "unknown key 'bugdet'"},
        {"version: 1\nbudget: lots\n", "p.yaml:2:9:", "'budget' must be a size"},
        {"version: 1\nbudget: 0\n", "p.yaml:2:9:", "at least one byte"},
        {"version: 1\nhardware: rtx9090\n", "p.yaml:2:11:", "unknown GPU 'rtx9090' (known: "},
        {"version: 1\nmodel: llama-9-7b\n", "p.yaml:2:8:", "unknown model 'llama-9-7b'"},
        {"version: 1\nrules:\n  - {match: \"*\", tier: fast}\n", "p.yaml:3:24:",
         "unknown tier 'fast' (one of: auto, keep, offload, recompute)"},
        {"version: 1\nrules:\n  - {tier: keep}\n", "p.yaml:3:5:", "a rule needs 'match'"},
        {"version: 1\nrules:\n  - {match: x}\n", "p.yaml:3:5:", "a rule needs 'tier'"},
        {"version: 1\nrules:\n  - {match: x, tier: keep, why: no}\n", "p.yaml:3:28:",
         "unknown key 'why' in a rule"},
        {"version: 1\nrules: {match: x}\n", "p.yaml:2:8:", "'rules' must be a list"},
        {"version: 1\ntraining: {method: sgd}\n", "p.yaml:2:20:", "unknown method 'sgd'"},
        {"version: 1\ntraining: {seq: -5}\n", "p.yaml:2:17:", "'seq' must be a whole number"},
        {"version: 1\ntraining: {rank: 1.5}\n", "p.yaml:2:18:", "'rank' must be a whole number"},
        {"version: 1\ntraining: {targets: [q, z]}\n", "p.yaml:2:25:", "unknown target 'z'"},
        {"version: 1\ntraining: {colour: red}\n", "p.yaml:2:12:", "unknown key 'colour' in training"},
        {"version: 1\ntraining: 5\n", "p.yaml:2:11:", "training must be a mapping"},
        {"version: 1\neviction: random\n", "p.yaml:2:11:", "unknown eviction 'random'"},
        {"version: 1\nprefetch: [1]\n", "p.yaml:2:11:", "'prefetch' must be a single value"},
        {"version: 2\n", "p.yaml:1:10:", "'version' must be a whole number from 1 to 1"},
        {"budget: 1G\n", "p.yaml:1:1:", "'version: 1' is missing"},
        {"version: 1\nbudget: 1G\nbudget: 2G\n", "p.yaml:3:1:", "'budget' is given twice"},
        {"version: 1\nrules: [\n", "p.yaml:", "not YAML"},
        {"- 1\n- 2\n", "p.yaml:1:1:", "a policy must be a mapping"},
        {"", "p.yaml:1:1:", "empty"},
        {"version: 1\n---\nversion: 1\n", "p.yaml:3:1:", "a second YAML document"},
        {"version: 1\nrules:\n  - {match: \"\", tier: keep}\n", "p.yaml:3:13:", "'match' must be a glob"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_policy *pol = (ck_policy *)0x1;
        ck_status st = ck__policy_parse(bad[i].text, strlen(bad[i].text), "p.yaml", &pol);
        ck_assert_msg(st == CK_ERR_INVALID, "case %zu: %s", i, ck_status_str(st));
        ck_assert_msg(pol == (ck_policy *)0x1, "case %zu: *out written on error", i);
        const char *e = ck_last_error();
        ck_assert_msg(strncmp(e, bad[i].where, strlen(bad[i].where)) == 0 && strstr(e, bad[i].says),
                      "case %zu: expected \"%s ... %s\", got \"%s\"", i, bad[i].where, bad[i].says, e);
    }
}
END_TEST

/* Every shipped profile parses, is named as its file, and the built-in
 * name lists are exactly the directories' files. */
static void check_dir(const char *sub, const char *const *names, int hw) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/policy/%s", CK_SOURCE_DIR, sub);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    size_t files = 0, listed = 0;
    while (names[listed]) listed++;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".yaml") != 0) continue;
        files++;
        char path[2048], stem[256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(stem, sizeof stem, "%.*s", (int)(l - 5), e->d_name);
        size_t n;
        char *text = slurp(path, &n);
        char got[48];
        if (hw) {
            ck_hw_profile p;
            OK(ck__hw_parse(text, n, path, &p));
            snprintf(got, sizeof got, "%s", p.name);
            ck_assert_msg(p.memory >= GiB && p.flops_bf16 > p.flops_fp32 && p.mem_bw > p.h2d &&
                              p.h2d > 0 && p.d2h > 0 && p.pcie >= 3,
                          "%s: figures out of order", path);
            ck_assert_msg(strstr(text, "# "), "%s: no comment citing its figures", path);
            ck_assert_str_eq(stem, p.name);
        } else {
            ck_model_profile m;
            OK(ck__model_parse(text, n, path, &m));
            ck_assert_msg(m.heads * m.head_dim >= m.hidden / 2 && m.intermediate > m.hidden,
                          "%s: shape out of order", path);
            ck_assert_str_eq(stem, m.name);
            snprintf(got, sizeof got, "%s", m.name);
        }
        int found = 0;
        for (size_t i = 0; names[i]; i++) found |= strcmp(names[i], got) == 0;
        ck_assert_msg(found, "%s: not in the built-in names", got);
        free(text);
    }
    closedir(d);
    ck_assert_uint_eq(files, listed);
}

START_TEST(t_profiles) {
    check_dir("hardware", ck__hardware_names, 1);
    check_dir("models", ck__model_names, 0);
    /* The GPUs and models are all there. */
    const char *gpus[] = {"rtx3060", "rtx3090", "rtx4060ti-16gb", "rtx4070", "rtx4080", "rtx4090",
                          "a100-40gb", "a100-80gb", "h100-pcie", "h100-sxm", "h200", "l4"};
    for (size_t i = 0; i < sizeof gpus / sizeof *gpus; i++) {
        int found = 0;
        for (size_t k = 0; ck__hardware_names[k]; k++) found |= strcmp(ck__hardware_names[k], gpus[i]) == 0;
        ck_assert_msg(found, "no profile for %s", gpus[i]);
    }
    const char *models[] = {"llama-2-7b", "llama-3-8b", "mistral-7b", "qwen2-7b", "gemma-7b", "tiny"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        int found = 0;
        for (size_t k = 0; ck__model_names[k]; k++) found |= strcmp(ck__model_names[k], models[i]) == 0;
        ck_assert_msg(found, "no profile for %s", models[i]);
    }
    /* A profile with a mistake. */
    ck_hw_profile p;
    const char *bad = "version: 1\nname: x\nmemory: 1G\nflops: {bf16: 1e12, fp16: 1e12}\n"
                      "memory_bandwidth: 1e9\nh2d: 1e9\nd2h: 1e9\npcie: 4\n";
    ck_assert_int_eq(ck__hw_parse(bad, strlen(bad), "x.yaml", &p), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), "x.yaml:1:1: a hardware profile needs 'flops: fp32'"),
                  "%s", ck_last_error());
    const char *bad2 = "version: 1\nname: x\nmemory: 1G\nflops: {bf16: fast}\n";
    ck_assert_int_eq(ck__hw_parse(bad2, strlen(bad2), "x.yaml", &p), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), "x.yaml:4:15: 'bf16' must be a number"), "%s", ck_last_error());
    ck_model_profile m;
    const char *bad3 = "version: 1\nname: m\nhidden: 64\nintermediate: 128\nlayers: 2\nheads: 4\n"
                       "kv_heads: 3\nhead_dim: 16\nvocab: 10\ntied_embeddings: maybe\n";
    ck_assert_int_eq(ck__model_parse(bad3, strlen(bad3), "m.yaml", &m), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), "m.yaml:10:18: 'tied_embeddings' must be true or false"),
                  "%s", ck_last_error());
}
END_TEST

static ck_tensor_state settle(ck_pool *p, const void *ptr) {
    ck_tensor_status s;
    for (int i = 0; i < 100000; i++) {
        memset(&s, 0, sizeof s);
        s.struct_size = sizeof s;
        OK(ck_tensor_info(p, ptr, &s));
        if (s.state != CK_TENSOR_MOVING_OUT && s.state != CK_TENSOR_COMING_BACK) break;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return s.state;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* A loaded policy: AUTO tags follow the first matching rule; a recompute
 * rule for a tensor without a recipe offloads it; explicit tiers keep
 * theirs; a bad file changes nothing. */
START_TEST(t_load_applies) {
    ck_pool *p = host_pool("chunk_align=4M,prefetch=0");
    const char *pol = "version: 1\nrules:\n"
                      "  - {match: \"layers.*.keep\", tier: keep}\n"
                      "  - {match: \"layers.*.act\", tier: recompute}\n"
                      "  - {match: \"layers.*\", tier: offload}\n";
    OK(ck_policy_load_string(p, pol, strlen(pol), "mem.yaml"));
    ck_tier t;
    OK(ck_policy_tier(p, "layers.0.act", &t));
    ck_assert_int_eq(t, CK_TIER_RECOMPUTE);
    OK(ck_policy_tier(p, "other", &t));
    ck_assert_int_eq(t, CK_TIER_AUTO);
    void *a, *b, *c, *d;
    OK(ck_malloc(p, &a, 8 * MiB, NULL));
    OK(ck_malloc(p, &b, 8 * MiB, NULL));
    OK(ck_malloc(p, &c, 8 * MiB, NULL));
    OK(ck_malloc(p, &d, 8 * MiB, NULL));
    memset(a, 1, 8 * MiB);
    memset(b, 2, 8 * MiB);
    OK(ck_tag(p, a, "layers.0.keep", CK_TIER_AUTO));
    OK(ck_tag(p, b, "layers.0.act", CK_TIER_AUTO));   /* recompute, no recipe: offload */
    OK(ck_tag(p, c, "layers.0.q", CK_TIER_AUTO));     /* offload */
    OK(ck_tag(p, d, "layers.0.q2", CK_TIER_KEEP));    /* explicit: kept */
    void *all[] = {a, b, c, d};
    for (int i = 0; i < 4; i++) OK(ck_stash(p, all[i], NULL));
    ck_assert_int_eq(settle(p, a), CK_TENSOR_RESIDENT);
    ck_assert_int_eq(settle(p, b), CK_TENSOR_OFFLOADED);
    ck_assert_int_eq(settle(p, c), CK_TENSOR_OFFLOADED);
    ck_assert_int_eq(settle(p, d), CK_TENSOR_RESIDENT);
    /* A bad file: an error, and the rules in force stay. */
    ck_assert_int_eq(ck_policy_load_string(p, "version: 1\nrules: 5\n", 20, "bad.yaml"), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), "bad.yaml:2:8:"), "%s", ck_last_error());
    OK(ck_policy_tier(p, "layers.0.act", &t));
    ck_assert_int_eq(t, CK_TIER_RECOMPUTE);
    ck_assert_int_eq(ck_policy_load(p, "/nonexistent/policy.yaml"), CK_ERR_IO);
    for (int i = 3; i >= 0; i--) OK(ck_fetch(p, all[i], NULL));
    OK(ck_stream_synchronize(p, NULL));
    ck_assert(((unsigned char *)b)[8 * MiB - 1] == 2 && ((unsigned char *)a)[0] == 1);
    for (int i = 0; i < 4; i++) OK(ck_free(p, all[i], NULL));
    /* Bad arguments. */
    ck_assert_int_eq(ck_policy_tier(NULL, "x", &t), CK_ERR_INVALID);
    ck_assert_int_eq(ck_policy_tier(p, NULL, &t), CK_ERR_INVALID);
    ck_assert_int_eq(ck_policy_load(NULL, "x"), CK_ERR_INVALID);
    ck_assert_int_eq(ck_policy_load_string(NULL, "", 0, NULL), CK_ERR_INVALID);
    OK(ck_pool_destroy(p));
}
END_TEST

/* policy=PATH at creation: its budget applies when the config sets none;
 * a bad file creates no pool; ck_policy_check says the same. */
START_TEST(t_config_key) {
    char path[256];
    snprintf(path, sizeof path, "%s/test_policy_%d.yaml", CK_TEST_BIN, (int)getpid());
    write_file(path, "version: 1\nbudget: 96M\nrules:\n  - {match: \"*\", tier: offload}\n");
    OK(ck_policy_check(path));
    char conf[512];
    snprintf(conf, sizeof conf, "backend=host,host_mem=2G,policy=%s", path);
    ck_pool *p = pool_from_conf(conf);
    ck_assert_uint_eq(stats_of(p).budget, 96 * MiB);
    ck_tier t;
    OK(ck_policy_tier(p, "anything", &t));
    ck_assert_int_eq(t, CK_TIER_OFFLOAD);
    OK(ck_pool_destroy(p));
    snprintf(conf, sizeof conf, "backend=host,host_mem=2G,budget=64M,policy=%s", path);
    p = pool_from_conf(conf);
    ck_assert_uint_eq(stats_of(p).budget, 64 * MiB); /* the config's own budget wins */
    OK(ck_pool_destroy(p));
    write_file(path, "version: 1\nhardware: gtx480\n");
    ck_assert_int_eq(ck_policy_check(path), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), ":2:11: unknown GPU 'gtx480'"), "%s", ck_last_error());
    snprintf(conf, sizeof conf, "backend=host,host_mem=2G,policy=%s", path);
    ck_pool *q = NULL;
    ck_assert_int_eq(ck_pool_create_conf(&q, conf), CK_ERR_INVALID);
    ck_assert_ptr_null(q);
    ck_assert_msg(strstr(ck_last_error(), "unknown GPU 'gtx480'"), "%s", ck_last_error());
    remove(path);
    ck_assert_int_eq(ck_policy_check(path), CK_ERR_IO);
    ck_assert_int_eq(ck_policy_check(NULL), CK_ERR_INVALID);
}
END_TEST

/* eviction: largest evicts the biggest resident candidate first; deepest
 * (the default) the one stashed first. */
static int evicted_first_is_big(const char *eviction) {
    ck_pool *p = host_pool("chunk_align=4M,prefetch=0,budget=64M");
    char pol[128];
    snprintf(pol, sizeof pol, "version: 1\neviction: %s\n", eviction);
    OK(ck_policy_load_string(p, pol, strlen(pol), NULL));
    void *small, *big, *x;
    OK(ck_malloc(p, &small, 8 * MiB, NULL));
    OK(ck_malloc(p, &big, 24 * MiB, NULL));
    OK(ck_tag(p, small, "small", CK_TIER_AUTO));
    OK(ck_tag(p, big, "big", CK_TIER_AUTO));
    OK(ck_stash(p, small, NULL)); /* far from the budget: both stay resident */
    OK(ck_stash(p, big, NULL));
    ck_assert_int_eq(settle(p, small), CK_TENSOR_RESIDENT);
    ck_assert_int_eq(settle(p, big), CK_TENSOR_RESIDENT);
    OK(ck_malloc(p, &x, 36 * MiB, NULL)); /* needs 4-8 MiB back: one eviction */
    int big_out = settle(p, big) != CK_TENSOR_RESIDENT, small_out = settle(p, small) != CK_TENSOR_RESIDENT;
    ck_assert_msg(big_out + small_out == 1, "%s: evicted big %d small %d", eviction, big_out, small_out);
    OK(ck_free(p, x, NULL));
    OK(ck_free(p, small, NULL));
    OK(ck_free(p, big, NULL));
    OK(ck_pool_destroy(p));
    return big_out;
}

START_TEST(t_eviction_order) {
    ck_assert_int_eq(evicted_first_is_big("largest"), 1);
    ck_assert_int_eq(evicted_first_is_big("deepest"), 0);
}
END_TEST

/* The policy's prefetch window: off, a fetch brings back only its tensor;
 * 64M, the ones stashed before it too (counted as prefetch hits when they
 * are fetched); a policy without the key puts the pool's own back. */
static uint64_t hits_with(const char *policy_text, const char *then) {
    ck_pool *p = host_pool("chunk_align=4M,prefetch=0");
    if (policy_text) OK(ck_policy_load_string(p, policy_text, strlen(policy_text), NULL));
    if (then) OK(ck_policy_load_string(p, then, strlen(then), NULL));
    void *t[3];
    for (int i = 0; i < 3; i++) {
        OK(ck_malloc(p, &t[i], 8 * MiB, NULL));
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        OK(ck_tag(p, t[i], name, CK_TIER_OFFLOAD));
        OK(ck_stash(p, t[i], NULL));
    }
    for (int i = 0; i < 3; i++) ck_assert_int_eq(settle(p, t[i]), CK_TENSOR_OFFLOADED);
    for (int i = 2; i >= 0; i--) {
        OK(ck_fetch(p, t[i], NULL));
        OK(ck_stream_synchronize(p, NULL));
    }
    uint64_t hits = stats_of(p).prefetch_hits;
    for (int i = 0; i < 3; i++) OK(ck_free(p, t[i], NULL));
    OK(ck_pool_destroy(p));
    return hits;
}

START_TEST(t_prefetch_key) {
    ck_assert_uint_eq(hits_with(NULL, NULL), 0); /* the pool's prefetch=0 */
    ck_assert_uint_eq(hits_with("version: 1\nprefetch: 64M\n", NULL), 2);
    ck_assert_uint_eq(hits_with("version: 1\nprefetch: off\n", NULL), 0);
    /* a second policy without the key: back to the pool's (off) */
    ck_assert_uint_eq(hits_with("version: 1\nprefetch: 64M\n", "version: 1\n"), 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("policy");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, t_parse_good);
    tcase_add_test(tc, t_parse_errors);
    tcase_add_test(tc, t_profiles);
    tcase_add_test(tc, t_load_applies);
    tcase_add_test(tc, t_config_key);
    tcase_add_test(tc, t_eviction_order);
    tcase_add_test(tc, t_prefetch_key);
    suite_add_tcase(s, tc);
    return ck_test_run(s);
}
