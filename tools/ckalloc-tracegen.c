/* ckalloc-tracegen: write a synthetic but realistic allocation trace of a
 * llama-family training run (RMM logging-adaptor CSV, the format
 * ckalloc-replay reads).
 *
 * The allocation pattern follows what PyTorch + Hugging Face do for one
 * optimizer step: inputs, rotary tables, per-layer forward activations with
 * the temporaries RMSNorm / rotary / SiLU create, fp32 logits and the loss,
 * backward in reverse freeing saved activations as it goes, parameter grads
 * created lazily in backward and dropped by zero_grad(set_to_none), Adam
 * states created on the first step. Pointers are fake (a bump allocator with
 * exact-size reuse, so frees match allocations); time is synthetic. The
 * writer formats rows itself because the library's trace writer stamps real
 * thread ids and wall-clock time. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_BAD_USAGE 2

static void usage(FILE *out) {
    fputs("usage: ckalloc-tracegen [options] -o OUT.csv\n"
          "  --model 7b|13b|1b|tiny|8b  llama-family shape (default 7b; 8b: Llama-3-8B)\n"
          "  --method lora|full       LoRA (rank --rank on q,k,v,o) or full fine-tune (default lora)\n"
          "  --rank R                 LoRA rank (default 16)\n"
          "  --steps N                optimizer steps (default 4)\n"
          "  --batch B                batch size (default 1)\n"
          "  --seq L                  max sequence length (default 2048)\n"
          "  --vary-seq / --no-vary-seq  draw each step's length from [L/4, L] (default on)\n"
          "  --seed S                 random seed (default 1)\n"
          "  --streams 1|2            2: inputs and some temporaries on a second stream\n"
          "  --checkpointing          activation checkpointing (recompute layers in backward)\n"
          "  --summary                print {\"ops\":..,\"peak_live_bytes\":..,\"allocs\":..} to stderr\n"
          "  -o, --output FILE        where to write the trace (- = stdout)\n",
          out);
}

typedef struct model {
    const char *name;
    uint64_t hidden, inter, layers, heads, kv_heads, vocab;
} model;

static const model models[] = {
    {"7b", 4096, 11008, 32, 32, 32, 32000},
    {"13b", 5120, 13824, 40, 40, 40, 32000},
    {"1b", 2048, 5632, 22, 32, 4, 32000}, /* TinyLlama-1.1B (grouped-query attention) */
    {"tiny", 256, 688, 4, 4, 4, 32000},
    /* Llama-3-8B: a 128256-token vocabulary makes the loss phase's logits
     * the largest requests (gigabytes at long sequences). */
    {"8b", 4096, 14336, 32, 32, 8, 128256},
};

/* ---- generator state ---------------------------------------------------- */

typedef struct blk {
    uint64_t ptr, size, stream;
} blk;

/* Free fake addresses, one LIFO stack per rounded size, so that a freed
 * address comes back for the next request of the same size as with a real
 * caching allocator. */
typedef struct size_stack {
    uint64_t size; /* 0 = empty slot */
    uint64_t *addrs;
    size_t n, cap;
} size_stack;

typedef struct gen {
    FILE *out;
    uint64_t rng;
    uint64_t clock_us;
    uint64_t next_addr;
    size_stack *stacks;
    size_t nstacks_cap, nstacks;
    uint64_t live, peak, ops, allocs, frees;
    uint64_t side_stream; /* 0 when --streams 1 */
    int alt;              /* alternates small temporaries between the streams */
} gen;

#define THREAD_ID 140573312345856ULL
#define MAIN_STREAM 0ULL
#define SIDE_STREAM 0x55d0c8a3f2b0ULL

static void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n, sz);
    if (!p) {
        fputs("ckalloc-tracegen: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static uint64_t rnd(gen *g) { /* splitmix64 */
    uint64_t z = (g->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rnd_range(gen *g, uint64_t lo, uint64_t hi) { return lo + rnd(g) % (hi - lo + 1); }

static size_t stack_hash(uint64_t s) { return (size_t)((s >> 9) * 0x9e3779b97f4a7c15ULL); }

static size_stack *stack_for(gen *g, uint64_t size);

static void stacks_grow(gen *g) {
    size_stack *old = g->stacks;
    size_t oldcap = g->nstacks_cap;
    g->nstacks_cap = oldcap ? oldcap * 2 : 256;
    g->stacks = xcalloc(g->nstacks_cap, sizeof *g->stacks);
    g->nstacks = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].size) {
            size_stack *s = stack_for(g, old[i].size);
            *s = old[i];
        }
    free(old);
}

static size_stack *stack_for(gen *g, uint64_t size) {
    if ((g->nstacks + 1) * 2 > g->nstacks_cap)
        stacks_grow(g);
    size_t mask = g->nstacks_cap - 1;
    for (size_t i = stack_hash(size) & mask;; i = (i + 1) & mask) {
        if (g->stacks[i].size == size)
            return &g->stacks[i];
        if (!g->stacks[i].size) {
            g->stacks[i].size = size;
            g->nstacks++;
            return &g->stacks[i];
        }
    }
}

static void emit(gen *g, const char *action, const blk *b) {
    g->clock_us += rnd_range(g, 2, 40);
    uint64_t t = (9 * 3600ULL) * 1000000ULL + g->clock_us; /* starts 09:00:00 */
    uint64_t us = t % 1000000, s = t / 1000000;
    fprintf(g->out, "%llu,%02u:%02u:%02u.%06u,%s,0x%" PRIx64 ",%" PRIu64 ",0x%" PRIx64 "\n",
            THREAD_ID, (unsigned)(s / 3600 % 24), (unsigned)(s / 60 % 60), (unsigned)(s % 60),
            (unsigned)us, action, b->ptr, b->size, b->stream);
    g->ops++;
}

static uint64_t round512(uint64_t n) { return (n + 511) / 512 * 512; }

static blk A_on(gen *g, uint64_t size, uint64_t stream) {
    if (size == 0)
        size = 1;
    size_stack *st = stack_for(g, round512(size));
    blk b = {0, size, stream};
    if (st->n) {
        b.ptr = st->addrs[--st->n];
    } else {
        b.ptr = g->next_addr;
        g->next_addr += round512(size);
    }
    emit(g, "allocate", &b);
    g->allocs++;
    g->live += size;
    if (g->live > g->peak)
        g->peak = g->live;
    return b;
}

static blk A(gen *g, uint64_t size) { return A_on(g, size, MAIN_STREAM); }

static void F(gen *g, blk *b) {
    if (!b->ptr)
        return;
    emit(g, "free", b);
    g->frees++;
    g->live -= b->size;
    size_stack *st = stack_for(g, round512(b->size));
    if (st->n == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 4;
        st->addrs = realloc(st->addrs, st->cap * sizeof *st->addrs);
        if (!st->addrs) {
            fputs("ckalloc-tracegen: out of memory\n", stderr);
            exit(1);
        }
    }
    st->addrs[st->n++] = b->ptr;
    b->ptr = 0;
}

/* A small short-lived temporary (scalars, reductions, index tensors), every
 * other one on the side stream when there is one. */
static void small_temps(gen *g, int n) {
    for (int i = 0; i < n; i++) {
        uint64_t sz = rnd(g) % 4 == 0 ? rnd_range(g, 4096, 512 * 1024) : rnd_range(g, 4, 2048);
        uint64_t s = (g->side_stream && (g->alt++ & 1)) ? g->side_stream : MAIN_STREAM;
        blk b = A_on(g, sz, s);
        F(g, &b);
    }
}

/* ---- the model ---------------------------------------------------------- */

typedef struct cfg {
    const model *m;
    int full; /* 0 = LoRA */
    uint64_t rank, steps, batch, seq;
    int vary_seq, checkpointing;
} cfg;

/* A trainable parameter: grad created in backward, dropped at zero_grad. */
typedef struct param {
    uint64_t numel;
    uint64_t grad_bytes_per_el;
    blk grad, exp_avg, exp_avg_sq;
} param;

typedef struct lora_ad {
    blk a, b;        /* weights, fp32 */
    param pa, pb;    /* their grads / Adam states */
    uint64_t in, out;
} lora_ad;

/* Per-layer parameters. */
typedef struct layer_params {
    blk w[9];     /* q k v o gate up down in_norm post_norm (bf16) */
    param p[9];   /* full fine-tune grads */
    lora_ad ad[4]; /* q k v o */
} layer_params;

/* Activations one layer saves for backward. */
typedef struct saved {
    blk rstd1, norm1, q_xa, k_xa, v_xa, q_rot, k_rot, v, attn, lse, o_xa, h1, rstd2, norm2, gate,
        up, act, mid;
} saved;

typedef struct run {
    gen *g;
    const cfg *c;
    uint64_t T, S; /* tokens, sequence length of the current step */
    layer_params *lp;
    blk emb, final_norm, lm_head;
    param p_emb, p_final_norm, p_lm_head;
} run;

static void grad_touch(run *r, param *p) {
    if (!p->grad.ptr)
        p->grad = A(r->g, p->numel * p->grad_bytes_per_el);
}

/* HF LlamaRMSNorm: fp32 upcast, variance, rsqrt (saved), scale, downcast. */
static void rmsnorm_fwd(run *r, blk *rstd, blk *out) {
    gen *g = r->g;
    uint64_t T = r->T, h = r->c->m->hidden;
    blk f32 = A(g, T * h * 4);
    blk var = A(g, T * 4);
    *rstd = A(g, T * 4);
    F(g, &var);
    blk scaled = A(g, T * h * 4);
    F(g, &f32);
    blk down = A(g, T * h * 2);
    F(g, &scaled);
    *out = A(g, T * h * 2);
    F(g, &down);
}

/* Returns the gradient wrt the norm's input; frees g_out and the saved state. */
static blk rmsnorm_bwd(run *r, blk *g_out, blk *rstd, blk *out, param *w) {
    gen *g = r->g;
    uint64_t T = r->T, h = r->c->m->hidden;
    blk t1 = A(g, T * h * 4);
    blk t2 = A(g, T * h * 4);
    if (w)
        grad_touch(r, w);
    small_temps(g, 1);
    F(g, &t1);
    blk gx = A(g, T * h * 2);
    F(g, &t2);
    F(g, g_out);
    F(g, rstd);
    F(g, out);
    return gx;
}

/* LoRA branch forward: x@A (saved for A's grad), then @B added into out. */
static blk lora_fwd(run *r, const lora_ad *ad) {
    gen *g = r->g;
    blk xa = A(g, r->T * r->c->rank * 2);
    blk xab = A(g, r->T * ad->out * 2);
    small_temps(g, 1);
    F(g, &xab);
    return xa;
}

static void lora_bwd(run *r, lora_ad *ad, blk *xa) {
    gen *g = r->g;
    grad_touch(r, &ad->pb);
    blk gxa = A(g, r->T * r->c->rank * 2);
    grad_touch(r, &ad->pa);
    blk gx = A(g, r->T * ad->in * 2);
    F(g, &gx);
    F(g, &gxa);
    F(g, xa);
}

static void layer_fwd(run *r, int l, saved *s) {
    gen *g = r->g;
    const model *m = r->c->m;
    uint64_t T = r->T, h = m->hidden, I = m->inter;
    uint64_t kv = h / m->heads * m->kv_heads;
    int lora = !r->c->full;
    layer_params *lp = &r->lp[l];
    memset(s, 0, sizeof *s);

    rmsnorm_fwd(r, &s->rstd1, &s->norm1);
    blk q = A(g, T * h * 2);
    if (lora)
        s->q_xa = lora_fwd(r, &lp->ad[0]);
    blk k = A(g, T * kv * 2);
    if (lora)
        s->k_xa = lora_fwd(r, &lp->ad[1]);
    s->v = A(g, T * kv * 2);
    if (lora)
        s->v_xa = lora_fwd(r, &lp->ad[2]);
    /* rotary: rotate_half temporaries, then the rotated q/k are saved */
    blk rh = A(g, T * h * 2);
    s->q_rot = A(g, T * h * 2);
    F(g, &rh);
    F(g, &q);
    rh = A(g, T * kv * 2);
    s->k_rot = A(g, T * kv * 2);
    F(g, &rh);
    F(g, &k);
    /* fused attention: output and log-sum-exp are saved */
    s->attn = A(g, T * h * 2);
    s->lse = A(g, r->c->batch * m->heads * r->S * 4);
    small_temps(g, 2);
    blk o = A(g, T * h * 2);
    if (lora)
        s->o_xa = lora_fwd(r, &lp->ad[3]);
    s->h1 = A(g, T * h * 2); /* residual */
    F(g, &o);
    rmsnorm_fwd(r, &s->rstd2, &s->norm2);
    s->gate = A(g, T * I * 2);
    s->up = A(g, T * I * 2);
    s->act = A(g, T * I * 2); /* silu(gate), saved for the product's backward */
    s->mid = A(g, T * I * 2);
    blk down = A(g, T * h * 2);
    if (lora)
        F(g, &s->mid); /* frozen down_proj needs no input for its grad */
    small_temps(g, 2);
    F(g, &down);
}

/* The layer output (residual) is allocated by the caller's next step. */
static blk layer_out(run *r) { return A(r->g, r->T * r->c->m->hidden * 2); }

static void free_saved(gen *g, saved *s) {
    blk *all[] = {&s->rstd1, &s->norm1, &s->q_xa, &s->k_xa, &s->v_xa, &s->q_rot,
                  &s->k_rot, &s->v,     &s->attn, &s->lse,  &s->o_xa, &s->h1,
                  &s->rstd2, &s->norm2, &s->gate, &s->up,   &s->act,  &s->mid};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        F(g, all[i]);
}

/* Backward through layer l. *grad is the gradient wrt the layer output; on
 * return it is the gradient wrt the layer input. */
static void layer_bwd(run *r, int l, saved *s, blk *grad) {
    gen *g = r->g;
    const model *m = r->c->m;
    uint64_t T = r->T, h = m->hidden, I = m->inter;
    uint64_t kv = h / m->heads * m->kv_heads;
    int full = r->c->full;
    layer_params *lp = &r->lp[l];

    /* MLP */
    blk g_mid = A(g, T * I * 2);
    if (full)
        grad_touch(r, &lp->p[6]);
    F(g, &s->mid);
    blk g_act = A(g, T * I * 2);
    blk g_up = A(g, T * I * 2);
    F(g, &g_mid);
    F(g, &s->up);
    blk sig = A(g, T * I * 2);
    blk g_gate = A(g, T * I * 2);
    F(g, &sig);
    F(g, &g_act);
    F(g, &s->act);
    F(g, &s->gate);
    blk t1 = A(g, T * h * 2);
    blk t2 = A(g, T * h * 2);
    if (full) {
        grad_touch(r, &lp->p[4]);
        grad_touch(r, &lp->p[5]);
    }
    blk g_n2 = A(g, T * h * 2);
    F(g, &t1);
    F(g, &t2);
    F(g, &g_gate);
    F(g, &g_up);
    blk g_h1 = rmsnorm_bwd(r, &g_n2, &s->rstd2, &s->norm2, full ? &lp->p[8] : NULL);
    blk g1 = A(g, T * h * 2);
    F(g, &g_h1);
    F(g, grad);
    *grad = g1;
    F(g, &s->h1);

    /* attention */
    blk g_attn = A(g, T * h * 2);
    if (full)
        grad_touch(r, &lp->p[3]);
    else
        lora_bwd(r, &lp->ad[3], &s->o_xa);
    blk dq = A(g, T * h * 2);
    blk dk = A(g, T * kv * 2);
    blk dv = A(g, T * kv * 2);
    blk ws = A(g, T * h * 4); /* fp32 dq accumulator */
    small_temps(g, 2);
    F(g, &ws);
    F(g, &g_attn);
    F(g, &s->attn);
    F(g, &s->lse);
    F(g, &s->q_rot);
    F(g, &s->k_rot);
    F(g, &s->v);
    blk gq = A(g, T * h * 2);
    F(g, &dq);
    blk gk = A(g, T * kv * 2);
    F(g, &dk);
    blk gx = A(g, T * h * 2);
    if (full)
        grad_touch(r, &lp->p[0]);
    else
        lora_bwd(r, &lp->ad[0], &s->q_xa);
    F(g, &gq);
    blk gxk = A(g, T * h * 2);
    if (full)
        grad_touch(r, &lp->p[1]);
    else
        lora_bwd(r, &lp->ad[1], &s->k_xa);
    F(g, &gk);
    F(g, &gxk);
    blk gxv = A(g, T * h * 2);
    if (full)
        grad_touch(r, &lp->p[2]);
    else
        lora_bwd(r, &lp->ad[2], &s->v_xa);
    F(g, &dv);
    F(g, &gxv);
    blk g_x = rmsnorm_bwd(r, &gx, &s->rstd1, &s->norm1, full ? &lp->p[7] : NULL);
    blk g2 = A(g, T * h * 2);
    F(g, &g_x);
    F(g, grad);
    *grad = g2;
}

static void param_init(param *p, uint64_t numel, uint64_t gbytes) {
    memset(p, 0, sizeof *p);
    p->numel = numel;
    p->grad_bytes_per_el = gbytes;
}

typedef struct plist {
    param **v;
    size_t n;
} plist;

static void step(run *r, plist *params, uint64_t step_no) {
    gen *g = r->g;
    const cfg *c = r->c;
    const model *m = c->m;
    uint64_t L = m->layers, h = m->hidden, V = m->vocab;
    uint64_t hd = h / m->heads;
    r->S = c->vary_seq ? rnd_range(g, c->seq / 4 > 0 ? c->seq / 4 : 1, c->seq) : c->seq;
    r->T = c->batch * r->S;
    uint64_t T = r->T;
    uint64_t data = g->side_stream ? g->side_stream : MAIN_STREAM;

    /* batch arrives (on the copy stream with --streams 2) */
    blk ids = A_on(g, T * 8, data), mask = A_on(g, T * 8, data), labels = A_on(g, T * 8, data);
    blk pos = A(g, r->S * 8);
    blk cos = A(g, r->S * hd * 2), sin = A(g, r->S * hd * 2);
    small_temps(g, 3);

    /* forward */
    saved *sv = xcalloc(L, sizeof *sv);
    blk *xin = xcalloc(L + 1, sizeof *xin); /* xin[l] = input of layer l */
    xin[0] = A(g, T * h * 2);               /* embedding output */
    for (uint64_t l = 0; l < L; l++) {
        layer_fwd(r, (int)l, &sv[l]);
        xin[l + 1] = layer_out(r);
        if (c->checkpointing)
            free_saved(g, &sv[l]); /* only the layer input is kept */
    }
    blk rstd_f, norm_f;
    rmsnorm_fwd(r, &rstd_f, &norm_f);
    blk logits16 = A(g, T * V * 2);
    blk logits = A(g, T * V * 4); /* HF upcasts logits to fp32 */
    F(g, &logits16);
    blk shifted = A(g, T * V * 4); /* shift_logits.contiguous() */
    blk lsm = A(g, T * V * 4);     /* log_softmax saved by cross entropy */
    F(g, &shifted);
    blk loss = A(g, 4);
    small_temps(g, 3);

    /* backward */
    blk gloss = A(g, 4);
    blk g_lsm = A(g, T * V * 4);
    F(g, &lsm);
    blk g_logits = A(g, T * V * 4);
    F(g, &g_lsm);
    F(g, &logits);
    blk g_l16 = A(g, T * V * 2);
    F(g, &g_logits);
    blk gh = A(g, T * h * 2);
    if (c->full)
        grad_touch(r, &r->p_lm_head);
    F(g, &g_l16);
    blk grad = rmsnorm_bwd(r, &gh, &rstd_f, &norm_f, c->full ? &r->p_final_norm : NULL);
    for (uint64_t i = L; i-- > 0;) {
        if (c->checkpointing) {
            layer_fwd(r, (int)i, &sv[i]); /* recompute */
            blk out = layer_out(r);
            F(g, &out);
        }
        F(g, &xin[i + 1]);
        layer_bwd(r, (int)i, &sv[i], &grad);
    }
    if (c->full)
        grad_touch(r, &r->p_emb);
    F(g, &grad);
    F(g, &xin[0]);
    F(g, &gloss);
    F(g, &loss);
    free(sv);
    free(xin);

    /* clip_grad_norm_: per-parameter norms, stacked, total, coefficient */
    blk *norms = xcalloc(params->n, sizeof *norms);
    for (size_t i = 0; i < params->n; i++)
        norms[i] = A(g, 4);
    blk stacked = A(g, params->n * 4), total = A(g, 4), coef = A(g, 4);
    for (size_t i = 0; i < params->n; i++)
        F(g, &norms[i]);
    F(g, &stacked);
    F(g, &total);
    F(g, &coef);
    free(norms);

    /* Adam: states on the first step, a temporary per parameter (foreach
     * kernels work on lists, but the sqrt/denominator is materialized) */
    for (size_t i = 0; i < params->n; i++) {
        param *p = params->v[i];
        if (!p->exp_avg.ptr) {
            p->exp_avg = A(g, p->numel * 4);
            p->exp_avg_sq = A(g, p->numel * 4);
        }
        blk denom = A(g, p->numel * 4);
        F(g, &denom);
    }
    small_temps(g, 2);
    /* zero_grad(set_to_none=True) */
    for (size_t i = 0; i < params->n; i++)
        F(g, &params->v[i]->grad);

    F(g, &cos);
    F(g, &sin);
    F(g, &pos);
    F(g, &ids);
    F(g, &mask);
    F(g, &labels);
    (void)step_no;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    cfg c = {.m = &models[0], .full = 0, .rank = 16, .steps = 4, .batch = 1, .seq = 2048,
             .vary_seq = 1, .checkpointing = 0};
    uint64_t seed = 1, nstreams = 1;
    int summary = 0;
    const char *outpath = NULL;
    enum { O_MODEL = 256, O_METHOD, O_RANK, O_STEPS, O_BATCH, O_SEQ, O_VARY, O_NOVARY, O_SEED,
           O_STREAMS, O_CKPT, O_SUMMARY };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, O_MODEL},
        {"method", required_argument, NULL, O_METHOD},
        {"rank", required_argument, NULL, O_RANK},
        {"steps", required_argument, NULL, O_STEPS},
        {"batch", required_argument, NULL, O_BATCH},
        {"seq", required_argument, NULL, O_SEQ},
        {"vary-seq", no_argument, NULL, O_VARY},
        {"no-vary-seq", no_argument, NULL, O_NOVARY},
        {"seed", required_argument, NULL, O_SEED},
        {"streams", required_argument, NULL, O_STREAMS},
        {"checkpointing", no_argument, NULL, O_CKPT},
        {"summary", no_argument, NULL, O_SUMMARY},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case O_MODEL: {
            c.m = NULL;
            for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
                if (strcmp(optarg, models[i].name) == 0)
                    c.m = &models[i];
            if (!c.m) {
                fprintf(stderr, "ckalloc-tracegen: unknown model '%s' (7b, 13b, 1b or tiny)\n", optarg);
                bad = 1;
            }
            break;
        }
        case O_METHOD:
            if (strcmp(optarg, "lora") == 0)
                c.full = 0;
            else if (strcmp(optarg, "full") == 0)
                c.full = 1;
            else {
                fprintf(stderr, "ckalloc-tracegen: unknown method '%s' (lora or full)\n", optarg);
                bad = 1;
            }
            break;
        case O_RANK: bad = parse_u64(optarg, &c.rank) || c.rank == 0 || c.rank > 4096; break;
        case O_STEPS: bad = parse_u64(optarg, &c.steps) || c.steps == 0 || c.steps > 1000000; break;
        case O_BATCH: bad = parse_u64(optarg, &c.batch) || c.batch == 0 || c.batch > 4096; break;
        case O_SEQ: bad = parse_u64(optarg, &c.seq) || c.seq == 0 || c.seq > (1u << 20); break;
        case O_VARY: c.vary_seq = 1; break;
        case O_NOVARY: c.vary_seq = 0; break;
        case O_SEED: bad = parse_u64(optarg, &seed); break;
        case O_STREAMS: bad = parse_u64(optarg, &nstreams) || (nstreams != 1 && nstreams != 2); break;
        case O_CKPT: c.checkpointing = 1; break;
        case O_SUMMARY: summary = 1; break;
        case 'o': outpath = optarg; break;
        case 'h': usage(stdout); return 0;
        default: bad = 1; break;
        }
        if (bad) {
            if (opt >= O_RANK && opt <= O_STREAMS)
                fprintf(stderr, "ckalloc-tracegen: bad value '%s' for --%s\n", optarg,
                        longopts[opt - O_MODEL].name);
            usage(stderr);
            return EXIT_BAD_USAGE;
        }
    }
    if (optind != argc || !outpath) {
        if (!outpath)
            fputs("ckalloc-tracegen: -o OUT.csv is required\n", stderr);
        usage(stderr);
        return EXIT_BAD_USAGE;
    }

    FILE *out = strcmp(outpath, "-") == 0 ? stdout : fopen(outpath, "w");
    if (!out) {
        perror(outpath);
        return 1;
    }
    gen g = {.out = out, .rng = seed, .next_addr = 0x7f3a00000000ULL,
             .side_stream = nstreams == 2 ? SIDE_STREAM : 0};
    fputs("Thread,Time,Action,Pointer,Size,Stream\n", out);

    const model *m = c.m;
    uint64_t h = m->hidden, I = m->inter, kv = h / m->heads * m->kv_heads;
    run r = {.g = &g, .c = &c};
    r.lp = xcalloc(m->layers, sizeof *r.lp);
    /* Every trainable parameter, for the optimizer and zero_grad. */
    plist params = {xcalloc(m->layers * 9 + 3 + m->layers * 8, sizeof(param *)), 0};

    /* Load the model: bf16 weights. */
    r.emb = A(&g, m->vocab * h * 2);
    uint64_t wnumel[9] = {h * h, h * kv, h * kv, h * h, h * I, h * I, I * h, h, h};
    uint64_t ad_out[4] = {h, kv, kv, h};
    for (uint64_t l = 0; l < m->layers; l++) {
        layer_params *lp = &r.lp[l];
        for (int i = 0; i < 9; i++) {
            lp->w[i] = A(&g, wnumel[i] * 2);
            param_init(&lp->p[i], wnumel[i], 2);
            if (c.full)
                params.v[params.n++] = &lp->p[i];
        }
        small_temps(&g, 1);
    }
    r.final_norm = A(&g, h * 2);
    r.lm_head = A(&g, m->vocab * h * 2);
    param_init(&r.p_emb, m->vocab * h, 2);
    param_init(&r.p_final_norm, h, 2);
    param_init(&r.p_lm_head, m->vocab * h, 2);
    if (c.full) {
        params.v[params.n++] = &r.p_emb;
        params.v[params.n++] = &r.p_final_norm;
        params.v[params.n++] = &r.p_lm_head;
    } else {
        /* LoRA adapters (fp32) on q, k, v, o */
        for (uint64_t l = 0; l < m->layers; l++)
            for (int i = 0; i < 4; i++) {
                lora_ad *ad = &r.lp[l].ad[i];
                ad->in = h;
                ad->out = ad_out[i];
                ad->a = A(&g, c.rank * ad->in * 4);
                ad->b = A(&g, ad->out * c.rank * 4);
                param_init(&ad->pa, c.rank * ad->in, 4);
                param_init(&ad->pb, ad->out * c.rank, 4);
                params.v[params.n++] = &ad->pa;
                params.v[params.n++] = &ad->pb;
            }
    }

    for (uint64_t s = 0; s < c.steps; s++)
        step(&r, &params, s);

    /* End of training: drop optimizer state, adapters and weights. */
    for (size_t i = 0; i < params.n; i++) {
        F(&g, &params.v[i]->exp_avg);
        F(&g, &params.v[i]->exp_avg_sq);
    }
    for (uint64_t l = 0; l < m->layers; l++) {
        for (int i = 0; i < 4; i++) {
            F(&g, &r.lp[l].ad[i].a);
            F(&g, &r.lp[l].ad[i].b);
        }
        for (int i = 0; i < 9; i++)
            F(&g, &r.lp[l].w[i]);
    }
    F(&g, &r.emb);
    F(&g, &r.final_norm);
    F(&g, &r.lm_head);

    int rc = 0;
    if (ferror(out) || (out != stdout && fclose(out) != 0) || (out == stdout && fflush(out) != 0)) {
        perror(outpath);
        rc = 1;
    }
    if (summary)
        fprintf(stderr,
                "{\"ops\":%" PRIu64 ",\"peak_live_bytes\":%" PRIu64 ",\"allocs\":%" PRIu64
                ",\"frees\":%" PRIu64 ",\"model\":\"%s\",\"method\":\"%s\",\"steps\":%" PRIu64 "}\n",
                g.ops, g.peak, g.allocs, g.frees, m->name, c.full ? "full" : "lora", c.steps);

    for (size_t i = 0; i < g.nstacks_cap; i++)
        free(g.stacks[i].addrs);
    free(g.stacks);
    free(params.v);
    free(r.lp);
    return rc;
}
