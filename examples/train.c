/* train: a small transformer-style trainer written against ckalloc, to show
 * that the tier engine does not change training.
 *
 * Each layer of the model is
 *   n1 = rmsnorm(x) * g1;  q = n1 W1^T;  qr = rope(q);  x1 = x + qr W2^T
 *   n2 = rmsnorm(x1) * g2; g = n2 Wg^T;  u = n2 Wu^T;   s = swiglu(g, u)
 *   y  = x1 + s Wd^T
 * (RMSNorm, RoPE, a SwiGLU MLP and two residuals), trained with SGD on a mean
 * squared error against a fixed target. Every activation backward needs is a
 * pool allocation, tagged and stashed after its last forward use and fetched
 * before backward reads it; the recomputable ones carry their recipe (the
 * replay op that made them in forward, so a rebuilt tensor is bit for bit
 * the one forward made). Forward runs the replay ops through ck_replay (the
 * CPU reference on the host backend); backward's matrix products do too
 * (linear on transposed operands), and its element-wise rest is plain C on
 * the fetched data.
 *
 *   train [--policy keep|offload|recompute|mixed|offload-np|all] [--steps N]
 *         [--layers L] [--tokens T] [--check] [--json] [--conf STR]
 *
 * --policy all (the default) trains once per policy from the same start and
 * prints, per policy, the final loss, a checksum of the weights, the peak
 * physical memory, the most bytes offloaded and dropped at once, what moved,
 * and the step time on the host backend's simulated clock (the mean of the
 * steps after the first, which teaches the engine the step's shape).
 * offload-np is offload with prefetch=0. --check also fails (exit 1) unless
 * every policy's losses and weights are bit-identical to KEEP's and every
 * policy but KEEP peaks lower. --json prints one result line (the table goes
 * to stderr). Exit 2: bad usage. Host backend only for now: the element-wise
 * part of backward has no CUDA kernels.
 *
 * The pool's configuration is SIM_CONF below; --conf adds to it. */
#include <ckalloc/tier.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { D = 64, H = 128, HEADS = 4, HD = D / HEADS, MAXL = 8 };

typedef enum { P_KEEP, P_OFFLOAD, P_RECOMPUTE, P_MIXED, P_OFFLOAD_NP, NPOL } policy;
static const char *const pol_names[NPOL] = {"keep", "offload", "recompute", "mixed",
                                            "offload-np"};

/* The saved activations of one layer, and their tier under each policy. */
enum { A_X, A_N1, A_QR, A_X1, A_N2, A_G, A_U, A_S, NACT };
static const char *const act_names[NACT] = {"x", "attn.norm", "attn.q_rope", "attn.out",
                                            "mlp.norm", "mlp.gate", "mlp.up", "mlp.act"};
static const ck_tier tiers[NPOL][NACT] = {
    [P_KEEP] = {CK_TIER_KEEP, CK_TIER_KEEP, CK_TIER_KEEP, CK_TIER_KEEP, CK_TIER_KEEP,
                CK_TIER_KEEP, CK_TIER_KEEP, CK_TIER_KEEP},
    [P_OFFLOAD] = {CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD,
                   CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD},
    /* Everything with a recipe whose inputs stay: qr's input q is freed in
     * forward, x and x1 are inputs, not results of a replay op. */
    [P_RECOMPUTE] = {CK_TIER_KEEP, CK_TIER_RECOMPUTE, CK_TIER_KEEP, CK_TIER_KEEP,
                     CK_TIER_RECOMPUTE, CK_TIER_RECOMPUTE, CK_TIER_RECOMPUTE, CK_TIER_RECOMPUTE},
    [P_MIXED] = {CK_TIER_OFFLOAD, CK_TIER_RECOMPUTE, CK_TIER_KEEP, CK_TIER_OFFLOAD,
                 CK_TIER_RECOMPUTE, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_RECOMPUTE},
    /* offload with prefetch=0: what prefetch saves */
    [P_OFFLOAD_NP] = {CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD,
                      CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD, CK_TIER_OFFLOAD},
};

typedef struct layer {
    float g1[D], g2[D];
    float *W1, *W2, *Wg, *Wu, *Wd; /* [out, in] */
} layer;

typedef struct model {
    int L, T;
    layer l[MAXL];
    float *target; /* [T, D] */
    float *input;  /* [T, D] */
    int32_t *pos;  /* [T] */
} model;

/* The pool: memory goes back as soon as the streams pass it
 * (release=eager), each 2 MiB activation owns its chunk (chunk_align=2M),
 * a fetch brings back 8 MiB ahead (prefetch=8M). The simulated clock stands
 * for a GPU: replays at 250 GFLOP/s and 500 GB/s, copies to and from the
 * host at 25 GB/s each way. This model's layers are narrow (d_model 64),
 * so the FLOP rate is scaled down to give forward's compute window (about
 * 2.1 ms a layer) the size it has next to the transfers (0.9 ms) in a 7B
 * layer on a consumer GPU: the condition under which prefetch can hide
 * them. */
#define SIM_CONF                                                                                   \
    "backend=host,live=0,chunk_align=2M,prefetch=8M,release=eager,sim_clock=1,sim_flops=250G,"     \
    "sim_bandwidth=500GB,sim_h2d=25GB,sim_d2h=25GB"

static ck_pool *pool;
static int verbose_fail(const char *what) {
    fprintf(stderr, "train: %s: %s\n", what, ck_last_error());
    return 1;
}
#define CK(call)                                                                                   \
    do {                                                                                           \
        if ((call) != CK_OK) exit(verbose_fail(#call));                                            \
    } while (0)

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *mat(size_t n, float scale) {
    float *m = malloc(n * sizeof *m);
    if (!m) exit(1);
    for (size_t i = 0; i < n; i++) m[i] = frand() * scale;
    return m;
}

static void model_init(model *m, int L, int T) {
    rng = 0x9E3779B97F4A7C15ull;
    m->L = L;
    m->T = T;
    for (int i = 0; i < L; i++) {
        layer *l = &m->l[i];
        for (int k = 0; k < D; k++) l->g1[k] = l->g2[k] = 1.0f;
        l->W1 = mat((size_t)D * D, 0.125f);
        l->W2 = mat((size_t)D * D, 0.125f);
        l->Wg = mat((size_t)H * D, 0.125f);
        l->Wu = mat((size_t)H * D, 0.125f);
        l->Wd = mat((size_t)D * H, 0.09f);
    }
    m->input = mat((size_t)T * D, 1.0f);
    m->target = mat((size_t)T * D, 0.5f);
    m->pos = malloc((size_t)T * sizeof *m->pos);
    for (int t = 0; t < T; t++) m->pos[t] = t % 512;
}

static void model_free(model *m) {
    for (int i = 0; i < m->L; i++) {
        free(m->l[i].W1);
        free(m->l[i].W2);
        free(m->l[i].Wg);
        free(m->l[i].Wu);
        free(m->l[i].Wd);
    }
    free(m->input);
    free(m->target);
    free(m->pos);
}

/* ---- recipes: the forward ops, also what rebuilds a recomputed tensor ---- */

static void r_rmsnorm(ck_recipe *r, const float *x, const float *w, int T) {
    ck_recipe_init(r);
    int64_t xs[2] = {T, D}, ws[1] = {D};
    ck_step *s = ck_recipe_step(r, CK_OP_RMSNORM, CK_DTYPE_F32);
    s->in[0] = ck_recipe_input(r, x, CK_DTYPE_F32, 2, xs);
    s->in[1] = ck_recipe_input(r, w, CK_DTYPE_F32, 1, ws);
    s->eps = 1e-6f;
}

static void r_linear(ck_recipe *r, const float *x, const float *W, int T, int K, int N) {
    ck_recipe_init(r);
    int64_t xs[2] = {T, K}, ws[2] = {N, K};
    ck_step *s = ck_recipe_step(r, CK_OP_LINEAR, CK_DTYPE_F32);
    s->in[0] = ck_recipe_input(r, x, CK_DTYPE_F32, 2, xs);
    s->in[1] = ck_recipe_input(r, W, CK_DTYPE_F32, 2, ws);
}

static void r_rope(ck_recipe *r, const float *q, const int32_t *pos, int T) {
    ck_recipe_init(r);
    int64_t qs[3] = {T, HEADS, HD}, ps[1] = {T};
    ck_step *s = ck_recipe_step(r, CK_OP_ROPE, CK_DTYPE_F32);
    s->in[0] = ck_recipe_input(r, q, CK_DTYPE_F32, 3, qs);
    s->in[1] = ck_recipe_input(r, pos, CK_DTYPE_I32, 1, ps);
    s->base = 10000.0f;
}

static void r_swiglu(ck_recipe *r, const float *g, const float *u, int T) {
    ck_recipe_init(r);
    int64_t sh[2] = {T, H};
    ck_step *s = ck_recipe_step(r, CK_OP_SWIGLU, CK_DTYPE_F32);
    s->in[0] = ck_recipe_input(r, g, CK_DTYPE_F32, 2, sh);
    s->in[1] = ck_recipe_input(r, u, CK_DTYPE_F32, 2, sh);
}

/* Run r into a new pool allocation of n floats. */
static float *run(const ck_recipe *r, size_t n) {
    float *out;
    CK(ck_malloc(pool, (void **)&out, n * sizeof(float), NULL));
    CK(ck_replay(pool, r, out, n * sizeof(float), NULL));
    return out;
}

/* ---- backward ------------------------------------------------------------ */

/* Backward's matrix products go through ck_replay's linear op (x W^T), as
 * on a GPU they would be GEMMs: the host backend runs the CPU reference and
 * its simulated clock charges each one its flops. Operands are transposed
 * into scratch by plain C first; the element-wise rest of backward is plain
 * C on the host, after a synchronize (no simulated time). */
static float *scr_a, *scr_b; /* [T, H] floats each */

static void sync_stream(void) { CK(ck_stream_synchronize(pool, NULL)); }

static void transpose(const float *A, float *At, int R, int C) {
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) At[(size_t)j * R + i] = A[(size_t)i * C + j];
}

static void linear_into(const float *X, const float *W, float *C, int M, int K, int N) {
    ck_recipe r;
    r_linear(&r, X, W, M, K, N);
    CK(ck_replay(pool, &r, C, (size_t)M * N * sizeof(float), NULL));
}

static void mm_nn(const float *A, const float *B, float *C, int M, int K, int N) {
    /* C = A B, A [M, K], B [K, N]: linear(A, B^T) */
    sync_stream(); /* the scratch is free, A and B are written */
    transpose(B, scr_b, K, N);
    linear_into(A, scr_b, C, M, K, N);
    sync_stream(); /* C is read on the host next */
}

static void mm_tn(const float *A, const float *B, float *C, int M, int K, int N) {
    /* C = A^T B, A [K, M], B [K, N]: linear(A^T, B^T) */
    sync_stream();
    transpose(A, scr_a, K, M);
    transpose(B, scr_b, K, N);
    linear_into(scr_a, scr_b, C, M, K, N);
    sync_stream();
}

/* dx += rmsnorm backward; dw += its weight gradient. */
static void rmsnorm_bwd(const float *x, const float *w, const float *dy, float *dx, float *dw,
                        int T) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * D, *dr = dy + (size_t)t * D;
        double ss = 0, dot = 0;
        for (int c = 0; c < D; c++) ss += (double)xr[c] * xr[c];
        double r = 1.0 / sqrt(ss / D + 1e-6);
        for (int c = 0; c < D; c++) dot += (double)dr[c] * w[c] * xr[c];
        for (int c = 0; c < D; c++) {
            dx[(size_t)t * D + c] += (float)(r * w[c] * dr[c] - xr[c] * r * r * r * dot / D);
            dw[c] += (float)(dr[c] * xr[c] * r);
        }
    }
}

/* The rotation's transpose (rotate-half form, angle pos * base^(-2i/hd)). */
static void rope_bwd(const float *dout, float *dq, const int32_t *pos, int T) {
    int half = HD / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < HEADS; h++)
            for (int i = 0; i < half; i++) {
                double th = pos[t] * pow(10000.0, -2.0 * i / HD);
                double c = cos(th), s = sin(th);
                size_t o = ((size_t)t * HEADS + h) * HD;
                double a = dout[o + i], b = dout[o + i + half];
                dq[o + i] = (float)(a * c + b * s);
                dq[o + i + half] = (float)(-a * s + b * c);
            }
}

/* ---- one training step ------------------------------------------------------ */

typedef struct saved {
    float *a[NACT];
} saved;

static void tag(float *p, int layer_i, int a, policy pol) {
    char name[48];
    snprintf(name, sizeof name, "layers.%d.%s", layer_i, act_names[a]);
    CK(ck_tag(pool, p, name, tiers[pol][a]));
}

static void stash(float *p) { CK(ck_stash(pool, p, NULL)); }

static float *fetch(float *p) {
    CK(ck_fetch(pool, p, NULL));
    CK(ck_stream_synchronize(pool, NULL)); /* backward reads it on the host */
    return p;
}

static ck_event ev_start, ev_end;

static double step(model *m, policy pol, float lr) {
    int T = m->T, L = m->L;
    size_t TD = (size_t)T * D, TH = (size_t)T * H;
    saved sv[MAXL];
    ck_recipe r;
    float *x;
    CK(ck_malloc(pool, (void **)&x, TD * sizeof(float), NULL));
    memcpy(x, m->input, TD * sizeof(float));
    CK(ck_step_begin(pool));
    CK(ck_event_record(pool, ev_start, NULL));
    for (int i = 0; i < L; i++) {
        layer *l = &m->l[i];
        saved *s = &sv[i];
        s->a[A_X] = x;
        tag(x, i, A_X, pol);
        r_rmsnorm(&r, x, l->g1, T);
        float *n1 = s->a[A_N1] = run(&r, TD);
        tag(n1, i, A_N1, pol);
        CK(ck_set_recipe(pool, n1, &r));
        r_linear(&r, n1, l->W1, T, D, D);
        float *q = run(&r, TD);
        stash(n1);
        r_rope(&r, q, m->pos, T);
        float *qr = s->a[A_QR] = run(&r, TD);
        tag(qr, i, A_QR, pol);
        CK(ck_free(pool, q, NULL));
        r_linear(&r, qr, l->W2, T, D, D);
        float *o = run(&r, TD);
        stash(qr);
        float *x1 = s->a[A_X1];
        CK(ck_malloc(pool, (void **)&x1, TD * sizeof(float), NULL));
        s->a[A_X1] = x1;
        CK(ck_stream_synchronize(pool, NULL));
        for (size_t k = 0; k < TD; k++) x1[k] = x[k] + o[k];
        CK(ck_free(pool, o, NULL));
        stash(x);
        tag(x1, i, A_X1, pol);
        r_rmsnorm(&r, x1, l->g2, T);
        float *n2 = s->a[A_N2] = run(&r, TD);
        tag(n2, i, A_N2, pol);
        CK(ck_set_recipe(pool, n2, &r));
        r_linear(&r, n2, l->Wg, T, D, H);
        float *g = s->a[A_G] = run(&r, TH);
        tag(g, i, A_G, pol);
        CK(ck_set_recipe(pool, g, &r));
        r_linear(&r, n2, l->Wu, T, D, H);
        float *u = s->a[A_U] = run(&r, TH);
        tag(u, i, A_U, pol);
        CK(ck_set_recipe(pool, u, &r));
        stash(n2);
        r_swiglu(&r, g, u, T);
        float *sw = s->a[A_S] = run(&r, TH);
        tag(sw, i, A_S, pol);
        CK(ck_set_recipe(pool, sw, &r));
        stash(g);
        stash(u);
        r_linear(&r, sw, l->Wd, T, H, D);
        float *d = run(&r, TD);
        stash(sw);
        float *y;
        CK(ck_malloc(pool, (void **)&y, TD * sizeof(float), NULL));
        CK(ck_stream_synchronize(pool, NULL));
        for (size_t k = 0; k < TD; k++) y[k] = x1[k] + d[k];
        CK(ck_free(pool, d, NULL));
        stash(x1);
        x = y;
    }
    /* Loss: mean squared error against the target. */
    double loss = 0;
    float *dy = malloc(TD * sizeof *dy), *dx = malloc(TD * sizeof *dx);
    float *ds = malloc(TH * sizeof *ds), *dg = malloc(TH * sizeof *dg), *du = malloc(TH * sizeof *du);
    float *dn = malloc(TD * sizeof *dn), *dq = malloc(TD * sizeof *dq), *t1 = malloc(TD * sizeof *t1);
    float *gW = malloc((size_t)H * D * sizeof *gW);
    if (!dy || !dx || !ds || !dg || !du || !dn || !dq || !t1 || !gW) exit(1);
    for (size_t k = 0; k < TD; k++) {
        double e = (double)x[k] - m->target[k];
        loss += e * e;
        dy[k] = (float)(2.0 * e / (double)TD);
    }
    loss /= (double)TD;
    CK(ck_free(pool, x, NULL));
    for (int i = L - 1; i >= 0; i--) {
        layer *l = &m->l[i];
        saved *s = &sv[i];
        float gg[D];
        /* y = x1 + s Wd^T */
        float *sw = fetch(s->a[A_S]);
        mm_tn(dy, sw, gW, D, T, H); /* dWd [D, H] */
        mm_nn(dy, l->Wd, ds, T, D, H);
        for (size_t k = 0; k < (size_t)D * H; k++) l->Wd[k] -= lr * gW[k];
        CK(ck_free(pool, sw, NULL));
        /* s = silu(g) * u */
        float *g = fetch(s->a[A_G]), *u = fetch(s->a[A_U]);
        for (size_t k = 0; k < TH; k++) {
            double sg = 1.0 / (1.0 + exp(-(double)g[k])), silu = g[k] * sg;
            du[k] = (float)(ds[k] * silu);
            dg[k] = (float)(ds[k] * u[k] * sg * (1.0 + g[k] * (1.0 - sg)));
        }
        CK(ck_free(pool, g, NULL));
        CK(ck_free(pool, u, NULL));
        /* g = n2 Wg^T, u = n2 Wu^T */
        float *n2 = fetch(s->a[A_N2]);
        mm_nn(dg, l->Wg, dn, T, H, D);
        mm_nn(du, l->Wu, t1, T, H, D);
        for (size_t k = 0; k < TD; k++) dn[k] += t1[k];
        mm_tn(dg, n2, gW, H, T, D);
        for (size_t k = 0; k < (size_t)H * D; k++) l->Wg[k] -= lr * gW[k];
        mm_tn(du, n2, gW, H, T, D);
        for (size_t k = 0; k < (size_t)H * D; k++) l->Wu[k] -= lr * gW[k];
        CK(ck_free(pool, n2, NULL));
        /* n2 = rmsnorm(x1) g2; x1 also feeds y */
        float *x1 = fetch(s->a[A_X1]);
        memcpy(dx, dy, TD * sizeof *dx);
        memset(gg, 0, sizeof gg);
        rmsnorm_bwd(x1, l->g2, dn, dx, gg, T);
        for (int c = 0; c < D; c++) l->g2[c] -= lr * gg[c];
        CK(ck_free(pool, x1, NULL));
        /* x1 = x + qr W2^T */
        float *qr = fetch(s->a[A_QR]);
        mm_tn(dx, qr, gW, D, T, D);
        mm_nn(dx, l->W2, t1, T, D, D);
        for (size_t k = 0; k < (size_t)D * D; k++) l->W2[k] -= lr * gW[k];
        CK(ck_free(pool, qr, NULL));
        rope_bwd(t1, dq, m->pos, T);
        /* q = n1 W1^T */
        float *n1 = fetch(s->a[A_N1]);
        mm_nn(dq, l->W1, dn, T, D, D);
        mm_tn(dq, n1, gW, D, T, D);
        for (size_t k = 0; k < (size_t)D * D; k++) l->W1[k] -= lr * gW[k];
        CK(ck_free(pool, n1, NULL));
        /* n1 = rmsnorm(x) g1; x also feeds x1 */
        float *xin = fetch(s->a[A_X]);
        memset(gg, 0, sizeof gg);
        rmsnorm_bwd(xin, l->g1, dn, dx, gg, T);
        for (int c = 0; c < D; c++) l->g1[c] -= lr * gg[c];
        CK(ck_free(pool, xin, NULL));
        memcpy(dy, dx, TD * sizeof *dy);
    }
    CK(ck_event_record(pool, ev_end, NULL));
    CK(ck_step_end(pool));
    free(dy);
    free(dx);
    free(ds);
    free(dg);
    free(du);
    free(dn);
    free(dq);
    free(t1);
    free(gW);
    return loss;
}

static uint64_t weights_hash(const model *m) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < m->L; i++) {
        const layer *l = &m->l[i];
        const float *arrs[7] = {l->g1, l->g2, l->W1, l->W2, l->Wg, l->Wu, l->Wd};
        size_t ns[7] = {D, D, (size_t)D * D, (size_t)D * D, (size_t)H * D, (size_t)H * D, (size_t)D * H};
        for (int a = 0; a < 7; a++) {
            const unsigned char *b = (const unsigned char *)arrs[a];
            for (size_t k = 0; k < ns[a] * sizeof(float); k++) h = (h ^ b[k]) * 1099511628211ull;
        }
    }
    return h;
}

typedef struct result {
    double loss[64];
    uint64_t whash;
    ck_stats st;
    double seconds;
    double step_ms; /* simulated, the mean over the steps after the first */
} result;

static int train(policy pol, int steps, int L, int T, const char *conf, result *res) {
    model m;
    model_init(&m, L, T);
    char c[512];
    snprintf(c, sizeof c, "%s%s%s%s", SIM_CONF, pol == P_OFFLOAD_NP ? ",prefetch=0" : "",
             conf ? "," : "", conf ? conf : "");
    if (ck_pool_create_conf(&pool, c) != CK_OK) return verbose_fail("ck_pool_create_conf");
    size_t scr = (size_t)T * H * sizeof(float);
    scr_a = malloc(scr);
    scr_b = malloc(scr);
    if (!scr_a || !scr_b) return verbose_fail("malloc");
    CK(ck_event_create(pool, &ev_start));
    CK(ck_event_create(pool, &ev_end));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    res->step_ms = 0;
    for (int s = 0; s < steps; s++) {
        res->loss[s] = step(&m, pol, 0.05f);
        CK(ck_stream_synchronize(pool, NULL));
        float ms = 0;
        CK(ck_event_elapsed_ms(pool, ev_start, ev_end, &ms));
        if (s > 0 || steps == 1) res->step_ms += ms / (steps > 1 ? steps - 1 : 1);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CK(ck_event_destroy(pool, ev_start));
    CK(ck_event_destroy(pool, ev_end));
    free(scr_a);
    free(scr_b);
    res->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    res->whash = weights_hash(&m);
    memset(&res->st, 0, sizeof res->st);
    res->st.struct_size = sizeof res->st;
    CK(ck_get_stats(pool, &res->st));
    CK(ck_pool_destroy(pool));
    model_free(&m);
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: train [--policy keep|offload|recompute|mixed|offload-np|all] "
                    "[--steps N] [--layers L] [--tokens T] [--check] [--json] [--conf STR]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int steps = 4, L = 2, T = 8192, check = 0, only = -1, json = 0;
    const char *conf = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--check") == 0) check = 1;
        else if (strcmp(a, "--json") == 0) json = 1;
        else if (i + 1 >= argc) usage();
        else if (strcmp(a, "--steps") == 0) steps = atoi(argv[++i]);
        else if (strcmp(a, "--layers") == 0) L = atoi(argv[++i]);
        else if (strcmp(a, "--tokens") == 0) T = atoi(argv[++i]);
        else if (strcmp(a, "--conf") == 0) conf = argv[++i];
        else if (strcmp(a, "--policy") == 0) {
            const char *p = argv[++i];
            only = -2;
            for (int k = 0; k < NPOL; k++)
                if (strcmp(p, pol_names[k]) == 0) only = k;
            if (strcmp(p, "all") == 0) only = -1;
            if (only == -2) usage();
        } else usage();
    }
    if (steps < 1 || steps > 64 || L < 1 || L > MAXL || T > (1 << 20)) usage();
    if (T <= 4096) {
        fprintf(stderr, "train: --tokens must be more than 4096: smaller activations are 1 MiB or "
                        "less, small allocations that cannot be tagged\n");
        return 2;
    }
    if (json && only >= 0) usage();
    result res[NPOL];
    int fails = 0;
    FILE *out = json ? stderr : stdout; /* --json: the table goes to stderr */
    fprintf(out, "train: %d layers, %d tokens, d_model %d, mlp %d, %d steps, host backend\n", L, T, D, H,
           steps);
    fprintf(out, "%-10s %-14s %-16s %10s %10s %10s %9s %9s %7s %10s %8s\n", "policy", "final loss",
           "weights", "peak phys", "offloaded", "dropped", "to host", "to dev", "replays",
           "step (sim)", "seconds");
    for (int k = 0; k < NPOL; k++) {
        if (only >= 0 && k != only) continue;
        if (train((policy)k, steps, L, T, conf, &res[k]) != 0) return 1;
        const result *r = &res[k];
        fprintf(out, "%-10s %-14.9g %016llx %6.2f MiB %6.2f MiB %6.2f MiB %5.0f MiB %5.0f MiB %7llu "
               "%7.3f ms %8.2f\n",
               pol_names[k], r->loss[steps - 1], (unsigned long long)r->whash,
               (double)r->st.physical_bytes.peak / 1048576.0,
               (double)r->st.offloaded_bytes.peak / 1048576.0,
               (double)r->st.dropped_bytes.peak / 1048576.0, (double)r->st.bytes_to_host / 1048576.0,
               (double)r->st.bytes_to_device / 1048576.0, (unsigned long long)r->st.num_replays,
               r->step_ms, r->seconds);
    }
    if (only < 0) {
        fprintf(out, "step time over keep (simulated clock, steps 2..%d):", steps);
        for (int k = 1; k < NPOL; k++)
            fprintf(out, " %s %+.2f%%", pol_names[k], 100.0 * (res[k].step_ms / res[P_KEEP].step_ms - 1));
        fprintf(out, "\n");
        fprintf(out, "fetch wait (offload): %.3f ms over %d steps; without prefetch %.3f ms\n",
               (double)res[P_OFFLOAD].st.fetch_wait_ns / 1e6, steps,
               (double)res[P_OFFLOAD_NP].st.fetch_wait_ns / 1e6);
    }
    int identical = 1;
    if (only < 0) {
        fprintf(out, "losses by step (keep):");
        for (int s = 0; s < steps; s++) fprintf(out, " %.9g", res[P_KEEP].loss[s]);
        fprintf(out, "\n");
        for (int k = 1; k < NPOL; k++) {
            if (res[k].whash != res[P_KEEP].whash) identical = 0;
            for (int s = 0; s < steps; s++)
                if (memcmp(&res[k].loss[s], &res[P_KEEP].loss[s], sizeof(double)) != 0) identical = 0;
        }
    }
    if (json) {
        double ov = res[P_OFFLOAD].step_ms / res[P_KEEP].step_ms - 1;
        printf("{\"bench\":\"train_overlap\",\"backend\":\"host (simulated clock)\",\"sim\":\"%s\","
               "\"layers\":%d,\"tokens\":%d,\"steps\":%d",
               strstr(SIM_CONF, "sim_clock"), L, T, steps);
        for (int k = 0; k < NPOL; k++)
            printf(",\"%s_step_ms\":%.4f,\"%s_peak_mib\":%.2f", pol_names[k], res[k].step_ms,
                   pol_names[k], (double)res[k].st.physical_bytes.peak / 1048576.0);
        printf(",\"overhead_offload_prefetch\":%.4f,\"overhead_offload_no_prefetch\":%.4f,"
               "\"overhead_recompute\":%.4f,\"overhead_mixed\":%.4f,\"bit_identical\":%s,"
               "\"target_overhead\":0.01,\"meets_target\":%s}\n",
               ov, res[P_OFFLOAD_NP].step_ms / res[P_KEEP].step_ms - 1,
               res[P_RECOMPUTE].step_ms / res[P_KEEP].step_ms - 1,
               res[P_MIXED].step_ms / res[P_KEEP].step_ms - 1, identical ? "true" : "false",
               ov <= 0.01 ? "true" : "false");
    }
    if (check) {
        if (only >= 0) usage();
        if (!(res[P_KEEP].loss[steps - 1] < res[P_KEEP].loss[0])) {
            fprintf(out, "check: FAILED: the loss did not go down under KEEP\n");
            fails++;
        }
        for (int k = 1; k < NPOL; k++) {
            int same = res[k].whash == res[P_KEEP].whash;
            for (int s = 0; s < steps; s++)
                if (memcmp(&res[k].loss[s], &res[P_KEEP].loss[s], sizeof(double)) != 0) same = 0;
            if (!same) {
                fprintf(out, "check: FAILED: %s's losses or weights differ from keep's\n", pol_names[k]);
                fails++;
            }
            if (!(res[k].st.physical_bytes.peak < res[P_KEEP].st.physical_bytes.peak)) {
                fprintf(out, "check: FAILED: %s peaks at %lld bytes, keep at %lld\n", pol_names[k],
                       (long long)res[k].st.physical_bytes.peak,
                       (long long)res[P_KEEP].st.physical_bytes.peak);
                fails++;
            }
        }
        if (!fails) fprintf(out, "check: ok: losses and weights bit-identical across tiers; every tier but keep peaks lower\n");
    }
    return fails ? 1 : 0;
}
