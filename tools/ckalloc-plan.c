/* ckalloc-plan: a tier per tensor class for one model on one GPU at one
 * sequence length, with the least predicted added step time under the
 * budget; the predicted peak, overhead, and the longest sequence that fits.
 * Writes the plan as a policy file (-o). See README, "Planner".
 *
 * Exit: 0 a plan that fits (or --check: the file is good), 1 nothing fits
 * the budget, 2 bad usage or input (unknown GPU or model names, a policy
 * file with a mistake). */
#include "ckalloc/policy.h"
#include "ckalloc/replay.h"
#include "internal.h"
#include "planner.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_NOFIT 1
#define EXIT_BAD 2

static void usage(FILE *out) {
    fputs("usage: ckalloc-plan --gpu NAME --model NAME [options]\n"
          "       ckalloc-plan --check POLICY.yaml\n"
          "  --gpu NAME            a profile in policy/hardware (rtx4090, a100-80gb, ...)\n"
          "  --model NAME          a profile in policy/models (llama-2-7b, ...)\n"
          "  --method M            full | lora | qlora (default lora)\n"
          "  --rank R              LoRA rank (default 16)\n"
          "  --targets LIST        LoRA targets, e.g. q,k,v,o (default) or q,k,v,o,gate,up,down\n"
          "  --seq N --batch B     tokens per sequence (default 4096) and micro-batch (default 1)\n"
          "  --dtype D             bf16 | fp16 | fp32 (default bf16)\n"
          "  --attention A         flash | eager (default flash)\n"
          "  --checkpointing C     none | layer: plan for a trainer that checkpoints every layer\n"
          "                        (its input is the one tensor a plan can offload)\n"
          "  --budget SIZE         what the pool may hold (default: 92% of the GPU's memory)\n"
          "  --mfu F               achievable share of the dense FLOP/s (default 0.5)\n"
          "  --loss-chunk N        plan for a loss computed N tokens at a time (default: whole)\n"
          "  --max-overhead F      for --max-seq: the most added step time (default 0.10)\n"
          "  --max-seq             search the longest sequence that fits (multiples of 128)\n"
          "  --json                one JSON object instead of the table\n"
          "  --simulate            run the plan as two training steps through the tier engine on\n"
          "                        the host backend's simulated clock; report its peak and step\n"
          "                        time beside the predicted ones\n"
          "  -o FILE               write the plan as a policy file\n"
          "  --check FILE          check a policy file (exit 2 on a mistake)\n",
          out);
}

static const char *tier_word(ck_tier t) {
    return t == CK_TIER_KEEP ? "keep" : t == CK_TIER_OFFLOAD ? "offload" : t == CK_TIER_RECOMPUTE ? "recompute" : "auto";
}

static double gib(double b) { return b / (double)CK_GiB; }

static int parse_targets(const char *s, uint32_t *out) {
    static const char *const names[] = {"q", "k", "v", "o", "gate", "up", "down"};
    uint32_t t = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int k = 0; k < 7; k++)
            if (strcmp(tok, names[k]) == 0) t |= 1u << k, found = 1;
        if (!found) return -1;
    }
    *out = t;
    return t ? 0 : -1;
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static const char *method_word(int m) { return m == CK_METHOD_FULL ? "full" : m == CK_METHOD_LORA ? "lora" : "qlora"; }

/* What bounds the sequence: the part of the peak that grows fastest. */
static void bound_of(const ck_act_model *am, const ck_plan *p, char *out, size_t n) {
    if (strcmp(p->peak_at, "loss") == 0) {
        snprintf(out, n, "the loss phase (logits and their fp32 copies, %.2f GiB)", gib(p->loss));
        return;
    }
    int big = -1;
    for (int k = 0; k < am->n; k++)
        if (p->tier[k] != CK_TIER_KEEP && (big < 0 || am->c[k].bytes > am->c[big].bytes)) big = k;
    if (big >= 0)
        snprintf(out, n, "backward's working set (one layer's stashed tensors back, the largest "
                         "layers.*.%s at %.2f GiB; prefetch; activation gradients)",
                 am->c[big].name, gib((double)am->c[big].bytes));
    else
        snprintf(out, n, "the kept activations (%.2f GiB over all layers)", gib(p->kept));
}

static int write_policy(const char *path, const char *gpu, const char *model, uint64_t budget,
                        const ck_train_shape *t, const char *targets, const char *dtype,
                        const ck_act_model *am, const ck_plan *p) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "ckalloc-plan: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "# written by ckalloc-plan: predicted peak %.2f GiB, step time +%.1f%%\n", gib(p->peak),
            100 * p->overhead);
    fprintf(f, "version: 1\nhardware: %s\nbudget: %lluM\nmodel: %s\n", gpu,
            (unsigned long long)(budget >> 20), model);
    fprintf(f, "training: {method: %s, ", method_word(t->method));
    if (t->method != CK_METHOD_FULL) fprintf(f, "rank: %u, targets: [%s], ", t->rank, targets);
    fprintf(f, "seq: %llu, batch: %llu, dtype: %s, attention: %s, checkpointing: %s}\n",
            (unsigned long long)t->seq, (unsigned long long)t->batch, dtype,
            t->attention == CK_ATTN_EAGER ? "eager" : "flash", t->checkpointing ? "layer" : "none");
    fputs("rules:\n", f);
    for (int k = 0; k < am->n; k++)
        fprintf(f, "  - {match: \"layers.*.%s\", tier: %s}   # %s\n", am->c[k].name,
                tier_word(p->tier[k]), p->reason[k]);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "ckalloc-plan: write error on %s\n", path);
        return -1;
    }
    return 0;
}

/* ---- --simulate: the plan as a training step through the tier engine ---- */

typedef struct sim_result {
    double peak, step, step_keep;
    double resident; /* the most tensor bytes on the device at once (live less what the engine
                        holds off it), sampled after each allocation and fetch */
    ck_stats st;
    int ok;
    char err[512];
} sim_result;

#define SIM_CHECK(call)                                                                            \
    do {                                                                                           \
        if ((call) != CK_OK) {                                                                     \
            snprintf(r->err, sizeof r->err, "%s: %s", #call, ck_last_error());                    \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* A recipe that rebuilds class c the way the activation model costs it:
 * its main replay step over inputs in[] (a weight: a foreign pointer, never
 * read: the simulation moves no data). */
/* Tensor bytes on the device now: allocated less offloaded and dropped. */
static void sample(ck_pool *pool, double *max) {
    ck_stats t;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    if (ck_get_stats(pool, &t) != CK_OK) return;
    double r = (double)(t.allocated_bytes.current - t.offloaded_bytes.current - t.dropped_bytes.current);
    if (r > *max) *max = r;
}

static void sim_recipe(const ck_act_class *c, void *const *in, uint32_t e, ck_recipe *rc) {
    static _Alignas(64) unsigned char weight[64];
    ck_recipe_init(rc);
    ck_dtype dt = e == 4 ? CK_DTYPE_F32 : CK_DTYPE_BF16, din = c->rin_bytes == 4 ? CK_DTYPE_F32 : dt;
    if (c->rop == CK_OP_LINEAR) {
        int64_t xs[2] = {(int64_t)c->rrows, (int64_t)c->rk}, ws[2] = {(int64_t)c->rcols, (int64_t)c->rk};
        ck_step *st = ck_recipe_step(rc, CK_OP_LINEAR, dt);
        st->in[0] = ck_recipe_input(rc, in[0], dt, 2, xs);
        st->in[1] = ck_recipe_input(rc, weight, dt, 2, ws);
    } else if (c->rop == CK_OP_RMSNORM) {
        int64_t xs[2] = {(int64_t)c->rrows, (int64_t)c->rcols};
        ck_step *st = ck_recipe_step(rc, CK_OP_RMSNORM, dt);
        st->in[0] = ck_recipe_input(rc, in[0], din, 2, xs);
        st->eps = 1e-6f;
    } else {
        int64_t n[1] = {(int64_t)(c->rrows * c->rcols)};
        ck_step *st = ck_recipe_step(rc, (ck_op)c->rop, dt);
        st->in[0] = ck_recipe_input(rc, in[0], din, 1, n);
        if (c->rop == CK_OP_MUL) st->in[1] = ck_recipe_input(rc, in[1] ? in[1] : in[0], dt, 1, n);
    }
}

/* One run: two steps (the first teaches the engine the step's shape), the
 * second timed. keep_all: every class kept, no budget (the baseline). */
static void simulate_one(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                         const ck_plan *p, int keep_all, double *step, double *peak, sim_result *r) {
    double rate = ck__plan_rate(am, hw, o);
    double Ff = am->layer_fwd_flops / rate, Fb = am->layer_bwd_flops / rate;
    uint64_t O = 0;
    for (int k = 0; k < am->n; k++)
        if (!keep_all && p->tier[k] == CK_TIER_OFFLOAD) O += am->c[k].bytes;
    char conf[512], budget[48] = "";
    if (!keep_all) snprintf(budget, sizeof budget, ",budget=%llu", (unsigned long long)o->budget);
    snprintf(conf, sizeof conf,
             "backend=host,host_mem=1T,live=0,sim_clock=1,sim_nodata=1,release=eager,chunk_align=2M,"
             "host_alloc=cache,host_budget=1T,prefetch=%llu,sim_h2d=%.0f,sim_d2h=%.0f,sim_bandwidth=%.0f,"
             "sim_flops=%.0f%s",
             (unsigned long long)O, hw->h2d, hw->d2h, hw->mem_bw, rate, budget);
    ck_pool *pool = NULL;
    void **ptr = NULL, *persist = NULL;
    ck_event e0 = NULL, e1 = NULL;
    r->ok = 0;
    size_t L = (size_t)am->layers, n = (size_t)am->n;
    SIM_CHECK(ck_pool_create_conf(&pool, conf));
    ptr = calloc(L * n, sizeof *ptr);
    if (!ptr) {
        snprintf(r->err, sizeof r->err, "out of host memory");
        goto done;
    }
    SIM_CHECK(ck_event_create(pool, &e0));
    SIM_CHECK(ck_event_create(pool, &e1));
    SIM_CHECK(ck_malloc(pool, &persist, (size_t)am->persistent, NULL));
    double loss = ck__plan_loss(am, o);
    for (int stepno = 0; stepno < 2; stepno++) {
        SIM_CHECK(ck_step_begin(pool));
        SIM_CHECK(ck_event_record(pool, e0, NULL));
        for (size_t l = 0; l < L; l++) {
            SIM_CHECK(ck__sim_busy(pool, NULL, Ff * 1e9));
            void **lp = ptr + l * n;
            for (size_t k = 0; k < n; k++) {
                SIM_CHECK(ck_malloc(pool, &lp[k], (size_t)am->c[k].bytes, NULL));
                if (stepno == 1) sample(pool, &r->resident);
            }
            for (size_t k = 0; k < n; k++) {
                const ck_act_class *c = &am->c[k];
                ck_tier t = keep_all ? CK_TIER_KEEP : p->tier[k];
                if (c->bytes <= CK_PLAN_MIN_TAG || t == CK_TIER_KEEP) continue;
                char name[96];
                snprintf(name, sizeof name, "layers.%zu.%s", l, c->name);
                SIM_CHECK(ck_tag(pool, lp[k], name, t));
                if (t == CK_TIER_RECOMPUTE) {
                    void *in[2] = {c->in[0] >= 0 ? lp[c->in[0]] : NULL, c->in[1] >= 0 ? lp[c->in[1]] : NULL};
                    ck_recipe rc;
                    sim_recipe(c, in, am->dtype_bytes, &rc);
                    SIM_CHECK(ck_set_recipe(pool, lp[k], &rc));
                }
            }
            for (size_t k = 0; k < n; k++) {
                ck_tier t = keep_all ? CK_TIER_KEEP : p->tier[k];
                if (am->c[k].bytes > CK_PLAN_MIN_TAG && t != CK_TIER_KEEP) SIM_CHECK(ck_stash(pool, lp[k], NULL));
            }
            /* The layer's releases happen before the next layer, as they
             * would behind its compute (the copy worker's wall time must
             * not show as memory held). */
            for (size_t k = 0; k < n; k++) ck__tier_settle(pool, lp[k], 10);
        }
        void *lb;
        SIM_CHECK(ck_malloc(pool, &lb, (size_t)(loss + (double)am->final_norm), NULL));
        if (stepno == 1) sample(pool, &r->resident);
        SIM_CHECK(ck__sim_busy(pool, NULL, am->head_flops / rate * 1e9));
        SIM_CHECK(ck_free(pool, lb, NULL));
        for (size_t l = L; l-- > 0;) {
            void **lp = ptr + l * n;
            /* the host reaches each layer's backward when the stream does */
            SIM_CHECK(ck_stream_synchronize(pool, NULL));
            for (size_t k = n; k-- > 0;) {
                ck_tier t = keep_all ? CK_TIER_KEEP : p->tier[k];
                if (am->c[k].bytes > CK_PLAN_MIN_TAG && t != CK_TIER_KEEP) SIM_CHECK(ck_fetch(pool, lp[k], NULL));
            }
            void *w;
            SIM_CHECK(ck_malloc(pool, &w, (size_t)am->layer_backward, NULL));
            if (stepno == 1) sample(pool, &r->resident);
            SIM_CHECK(ck__sim_busy(pool, NULL, Fb * 1e9));
            SIM_CHECK(ck_free(pool, w, NULL));
            for (size_t k = 0; k < n; k++) {
                SIM_CHECK(ck_free(pool, lp[k], NULL));
                lp[k] = NULL;
            }
        }
        SIM_CHECK(ck_event_record(pool, e1, NULL));
        SIM_CHECK(ck_step_end(pool));
        SIM_CHECK(ck_stream_synchronize(pool, NULL));
        if (stepno == 0) SIM_CHECK(ck_reset_peak_stats(pool));
    }
    float ms = 0;
    SIM_CHECK(ck_event_elapsed_ms(pool, e0, e1, &ms));
    ck_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    SIM_CHECK(ck_get_stats(pool, &st));
    *step = ms / 1e3;
    *peak = (double)st.physical_bytes.peak;
    if (!keep_all) r->st = st;
    r->ok = 1;
done:
    if (pool) {
        for (size_t i = 0; ptr && i < L * n; i++)
            if (ptr[i]) ck_free(pool, ptr[i], NULL);
        if (persist) ck_free(pool, persist, NULL);
        if (e0) ck_event_destroy(pool, e0);
        if (e1) ck_event_destroy(pool, e1);
        ck_pool_destroy(pool);
    }
    free(ptr);
}

static void simulate(const ck_act_model *am, const ck_hw_profile *hw, const ck_plan_opts *o,
                     const ck_plan *p, sim_result *r) {
    double peak_keep = 0;
    simulate_one(am, hw, o, p, 1, &r->step_keep, &peak_keep, r);
    r->resident = 0;
    if (r->ok) simulate_one(am, hw, o, p, 0, &r->step, &r->peak, r);
}

enum { O_GPU = 256, O_MODEL, O_METHOD, O_RANK, O_TARGETS, O_SEQ, O_BATCH, O_DTYPE, O_ATTN, O_BUDGET,
       O_MFU, O_CHUNK, O_MAXOV, O_MAXSEQ, O_JSON, O_CHECK, O_SIM, O_CKPT };

int main(int argc, char **argv) {
    const char *gpu = NULL, *model = NULL, *out_path = NULL, *check = NULL, *targets_s = "q,k,v,o";
    const char *dtype_s = "bf16";
    ck_train_shape t = {.method = CK_METHOD_LORA, .rank = 16, .dtype_bytes = 2, .seq = 4096, .batch = 1,
                        .attention = CK_ATTN_FLASH};
    uint64_t budget = 0;
    ck_plan_opts o = {0};
    double max_ov = 0.10;
    int max_seq = 0, json = 0, sim = 0;
    static const struct option lo[] = {
        {"gpu", 1, 0, O_GPU},       {"model", 1, 0, O_MODEL},   {"method", 1, 0, O_METHOD},
        {"rank", 1, 0, O_RANK},     {"targets", 1, 0, O_TARGETS}, {"seq", 1, 0, O_SEQ},
        {"batch", 1, 0, O_BATCH},   {"dtype", 1, 0, O_DTYPE},   {"attention", 1, 0, O_ATTN},
        {"budget", 1, 0, O_BUDGET}, {"mfu", 1, 0, O_MFU},       {"loss-chunk", 1, 0, O_CHUNK},
        {"max-overhead", 1, 0, O_MAXOV}, {"max-seq", 0, 0, O_MAXSEQ}, {"json", 0, 0, O_JSON},
        {"check", 1, 0, O_CHECK},   {"simulate", 0, 0, O_SIM},  {"checkpointing", 1, 0, O_CKPT},
        {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
        errno = 0;
        switch (c) {
        case O_GPU: gpu = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_METHOD:
            if (!strcmp(optarg, "full")) t.method = CK_METHOD_FULL;
            else if (!strcmp(optarg, "lora")) t.method = CK_METHOD_LORA;
            else if (!strcmp(optarg, "qlora")) t.method = CK_METHOD_QLORA;
            else goto bad_value;
            break;
        case O_RANK:
            t.rank = (uint32_t)strtoul(optarg, &end, 10);
            if (*end || !t.rank || t.rank > 65536 || errno) goto bad_value;
            break;
        case O_TARGETS:
            if (parse_targets(optarg, &t.targets) != 0) goto bad_value;
            targets_s = optarg;
            break;
        case O_SEQ:
            t.seq = strtoull(optarg, &end, 10);
            if (*end || !t.seq || t.seq > (1u << 24) || errno) goto bad_value;
            break;
        case O_BATCH:
            t.batch = strtoull(optarg, &end, 10);
            if (*end || !t.batch || t.batch > 65536 || errno) goto bad_value;
            break;
        case O_DTYPE:
            if (!strcmp(optarg, "bf16") || !strcmp(optarg, "fp16")) t.dtype_bytes = 2;
            else if (!strcmp(optarg, "fp32")) t.dtype_bytes = 4;
            else goto bad_value;
            dtype_s = optarg;
            break;
        case O_ATTN:
            if (!strcmp(optarg, "flash")) t.attention = CK_ATTN_FLASH;
            else if (!strcmp(optarg, "eager")) t.attention = CK_ATTN_EAGER;
            else goto bad_value;
            break;
        case O_BUDGET:
            if (ck__parse_size(optarg, strlen(optarg), &budget) != 0 || !budget) goto bad_value;
            break;
        case O_MFU:
            o.mfu = strtod(optarg, &end);
            if (*end || !(o.mfu > 0 && o.mfu <= 1)) goto bad_value;
            break;
        case O_CHUNK: /* 0: the whole loss */
            o.loss_chunk = strtoull(optarg, &end, 10);
            if (*end || end == optarg || errno) goto bad_value;
            break;
        case O_MAXOV:
            max_ov = strtod(optarg, &end);
            if (*end || !(max_ov >= 0 && max_ov <= 100)) goto bad_value;
            break;
        case O_MAXSEQ: max_seq = 1; break;
        case O_JSON: json = 1; break;
        case O_CHECK: check = optarg; break;
        case O_SIM: sim = 1; break;
        case O_CKPT:
            if (!strcmp(optarg, "none")) t.checkpointing = 0;
            else if (!strcmp(optarg, "layer")) t.checkpointing = 1;
            else goto bad_value;
            break;
        case 'o': out_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_BAD;
        }
        continue;
    bad_value:
        fprintf(stderr, "ckalloc-plan: bad value '%s' for --%s\n", optarg, lo[c - O_GPU].name);
        return EXIT_BAD;
    }
    if (optind != argc) {
        usage(stderr);
        return EXIT_BAD;
    }
    if (check) {
        if (gpu || model) {
            fprintf(stderr, "ckalloc-plan: --check takes only the file\n");
            return EXIT_BAD;
        }
        if (ck_policy_check(check) != CK_OK) {
            fprintf(stderr, "ckalloc-plan: %s\n", ck_last_error());
            return EXIT_BAD;
        }
        printf("%s: a good policy file\n", check);
        return 0;
    }
    if (!gpu || !model) {
        fprintf(stderr, "ckalloc-plan: --gpu and --model are required\n");
        usage(stderr);
        return EXIT_BAD;
    }
    if (t.method == CK_METHOD_FULL && t.targets) {
        fprintf(stderr, "ckalloc-plan: --targets is for lora and qlora\n");
        return EXIT_BAD;
    }
    ck_hw_profile hw;
    ck_model_profile mp;
    if (ck__hw_builtin(gpu, &hw) != CK_OK || ck__model_builtin(model, &mp) != CK_OK) {
        fprintf(stderr, "ckalloc-plan: %s\n", ck_last_error());
        return EXIT_BAD;
    }
    o.budget = budget ? budget : (uint64_t)((double)hw.memory * 0.92);
    ck_act_model am;
    ck_plan p, ck;
    uint64_t seq_ckpt = 0, seq_chunk = 0;
    if (max_seq) {
        if (ck__plan_max_seq(&mp, &t, &hw, &o, max_ov, 0, &t.seq, &am, &p) != CK_OK) goto fail;
        ck_act_model a2;
        ck_plan p2;
        ck_train_shape plain = t; /* the baseline: plain checkpointing of the same model */
        plain.checkpointing = 0;
        if (ck__plan_max_seq(&mp, &plain, &hw, &o, 1e9, 1, &seq_ckpt, &a2, &p2) != CK_OK) goto fail;
        if (!o.loss_chunk) {
            ck_plan_opts oc = o;
            oc.loss_chunk = 1024;
            if (ck__plan_max_seq(&mp, &t, &hw, &oc, max_ov, 0, &seq_chunk, &a2, &p2) != CK_OK) goto fail;
        }
        if (!t.seq) {
            fprintf(stderr, "ckalloc-plan: not even 128 tokens fit %s in %.2f GiB\n", model, gib((double)o.budget));
            return EXIT_NOFIT;
        }
    } else {
        if (ck__act_model(&mp, &t, &am) != CK_OK || ck__plan(&am, &hw, &o, &p) != CK_OK) goto fail;
    }
    {
        ck_train_shape plain = t;
        plain.checkpointing = 0;
        ck_act_model am0;
        if (ck__act_model(&mp, &plain, &am0) != CK_OK) goto fail;
        ck__plan_checkpointing(&am0, &hw, &o, &ck);
    }
    sim_result sr = {0};
    if (sim && p.feasible) {
        simulate(&am, &hw, &o, &p, &sr);
        if (!sr.ok) {
            fprintf(stderr, "ckalloc-plan: --simulate: %s\n", sr.err);
            return EXIT_NOFIT;
        }
    }
    char bound[256];
    bound_of(&am, &p, bound, sizeof bound);

    if (json) {
        printf("{\"gpu\":\"%s\",\"model\":\"%s\",\"method\":\"%s\",\"seq\":%llu,\"batch\":%llu,"
               "\"budget\":%llu,\"feasible\":%s,\"peak\":%.0f,\"persistent\":%.0f,\"kept\":%.0f,"
               "\"transient\":%.0f,\"loss\":%.0f,\"peak_at\":\"%s\",\"step_s\":%.6f,\"added_s\":%.6f,"
               "\"overhead\":%.4f,\"crossover_flop_per_byte\":%.1f,\"checkpointing\":{\"peak\":%.0f,"
               "\"feasible\":%s,\"overhead\":%.4f},\"bound\":",
               gpu, model, method_word(t.method), (unsigned long long)t.seq,
               (unsigned long long)t.batch, (unsigned long long)o.budget, p.feasible ? "true" : "false",
               p.peak, p.persistent, p.kept, p.transient, p.loss, p.peak_at, p.step, p.added,
               p.overhead, p.crossover, ck.peak, ck.feasible ? "true" : "false", ck.overhead);
        json_str(stdout, bound);
        if (sr.ok)
            printf(",\"simulated\":{\"peak\":%.0f,\"resident_peak\":%.0f,\"step_s\":%.6f,\"step_keep_s\":%.6f,\"overhead\":%.4f,"
                   "\"fetch_wait_s\":%.6f,\"prefetch_hits\":%llu,\"prefetch_misses\":%llu,\"evictions\":%llu}",
                   sr.peak, sr.resident, sr.step, sr.step_keep, sr.step / sr.step_keep - 1, (double)sr.st.fetch_wait_ns / 1e9,
                   (unsigned long long)sr.st.prefetch_hits, (unsigned long long)sr.st.prefetch_misses,
                   (unsigned long long)sr.st.num_evictions);
        if (max_seq)
            printf(",\"max_seq\":%llu,\"max_seq_checkpointing\":%llu,\"max_seq_chunked_loss\":%llu",
                   (unsigned long long)t.seq, (unsigned long long)seq_ckpt, (unsigned long long)seq_chunk);
        printf(",\"classes\":[");
        for (int k = 0; k < am.n; k++) {
            printf("%s{\"tag\":\"layers.*.%s\",\"bytes\":%llu,\"tier\":\"%s\",\"reason\":", k ? "," : "",
                   am.c[k].name, (unsigned long long)am.c[k].bytes, tier_word(p.tier[k]));
            json_str(stdout, p.reason[k]);
            printf(",\"kept_by\":");
            json_str(stdout, am.c[k].kept_by);
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("%s on %s, %s, %llu x %llu tokens, %s, %s attention; budget %.2f GiB\n", model, gpu,
               method_word(t.method), (unsigned long long)t.batch, (unsigned long long)t.seq, dtype_s,
               t.attention == CK_ATTN_EAGER ? "eager" : "flash", gib((double)o.budget));
        if (t.method != CK_METHOD_FULL) printf("  LoRA rank %u on %s\n", t.rank, targets_s);
        printf("\n%-24s %12s  %-10s %s\n", "tensor (per layer)", "bytes", "tier", "why");
        for (int k = 0; k < am.n; k++)
            printf("layers.*.%-15s %9.1f MiB  %-10s %s\n", am.c[k].name, (double)am.c[k].bytes / (1 << 20),
                   tier_word(p.tier[k]), p.reason[k]);
        printf("\npredicted peak      %8.2f GiB %s(at the %s)\n", gib(p.peak), p.feasible ? "" : "DOES NOT FIT ",
               p.peak_at);
        printf("  persistent        %8.2f GiB  weights, adapters, gradients, optimizer\n", gib(p.persistent));
        printf("  kept              %8.2f GiB  every layer's kept tensors\n", gib(p.kept));
        printf("  transient         %8.2f GiB  one layer's tensors back, prefetch, backward work\n",
               gib(p.transient));
        printf("  loss phase        %8.2f GiB\n", gib(p.loss));
        printf("step time           %8.3f s on %.0f%% of %.1f TFLOP/s; the plan adds %.3f s (%+.1f%%)\n",
               p.step, 100 * (o.mfu > 0 ? o.mfu : 0.5),
               (t.dtype_bytes == 4 ? hw.flops_fp32 : hw.flops_bf16) / 1e12, p.added, 100 * p.overhead);
        printf("crossover           %8.0f FLOP per byte (recompute is cheaper below)\n", p.crossover);
        printf("bounded by          %s\n", bound);
        printf("checkpointing       peak %.2f GiB%s, step time %+.1f%% (plain per-layer, same budget)\n",
               gib(ck.peak), ck.feasible ? "" : " (does not fit)", 100 * ck.overhead);
        if (sr.ok)
            printf("simulated           tensors on the device at most %.2f GiB (predicted peak %.2f; the "
                   "pool's physical peak %.2f), step %.3f s (predicted %.3f), %+.1f%% over keeping "
                   "everything (predicted %+.1f%%)\n",
                   gib(sr.resident), gib(p.peak), gib(sr.peak), sr.step, p.step + p.added,
                   100 * (sr.step / sr.step_keep - 1), 100 * p.overhead);
        if (max_seq) {
            printf("longest sequence    %llu tokens at <= %.0f%% overhead; checkpointing %llu (%.2fx)\n",
                   (unsigned long long)t.seq, 100 * max_ov, (unsigned long long)seq_ckpt,
                   seq_ckpt ? (double)t.seq / (double)seq_ckpt : 0.0);
            if (seq_chunk)
                printf("                    with a loss chunked by 1024 tokens: %llu\n",
                       (unsigned long long)seq_chunk);
        }
    }
    if (out_path && write_policy(out_path, gpu, model, o.budget, &t, targets_s, dtype_s, &am, &p) != 0)
        return EXIT_NOFIT;
    return p.feasible ? 0 : EXIT_NOFIT;
fail:
    fprintf(stderr, "ckalloc-plan: %s\n", ck_last_error());
    return EXIT_BAD;
}
