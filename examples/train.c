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
 * CPU reference on the host backend); backward is plain C on the fetched
 * data.
 *
 *   train [--policy keep|offload|recompute|mixed|all] [--steps N] [--layers L]
 *         [--tokens T] [--check] [--conf STR]
 *
 * --policy all (the default) trains once per policy from the same start and
 * prints, per policy, the loss of every step, a checksum of the weights, the
 * peak physical memory and what moved. --check also fails (exit 1) unless
 * every policy's losses and weights are bit-identical to KEEP's and every
 * policy but KEEP peaks lower. Exit 2: bad usage. Host backend only for now:
 * backward has no CUDA kernels.
 *
 * The pool runs with release=eager (memory no tensor uses goes back as soon
 * as the streams pass it), chunk_align=2M (each 2 MiB activation owns its
 * chunk, so a stash gives all of it back) and prefetch=8M (a few tensors
 * ahead: a window as large as the model would bring everything back at the
 * first fetch). --conf adds to that. */
#include <ckalloc/tier.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { D = 64, H = 128, HEADS = 4, HD = D / HEADS, MAXL = 8 };

typedef enum { P_KEEP, P_OFFLOAD, P_RECOMPUTE, P_MIXED, NPOL } policy;
static const char *const pol_names[NPOL] = {"keep", "offload", "recompute", "mixed"};

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

/* ---- plain C for backward ------------------------------------------------ */

static void mm_nn(const float *A, const float *B, float *C, int M, int K, int N) {
    /* C = A B, A [M, K], B [K, N] */
    memset(C, 0, (size_t)M * N * sizeof *C);
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            float a = A[(size_t)i * K + k];
            const float *b = B + (size_t)k * N;
            float *c = C + (size_t)i * N;
            for (int j = 0; j < N; j++) c[j] += a * b[j];
        }
}

static void mm_tn(const float *A, const float *B, float *C, int M, int K, int N) {
    /* C = A^T B, A [K, M], B [K, N] */
    memset(C, 0, (size_t)M * N * sizeof *C);
    for (int k = 0; k < K; k++)
        for (int i = 0; i < M; i++) {
            float a = A[(size_t)k * M + i];
            const float *b = B + (size_t)k * N;
            float *c = C + (size_t)i * N;
            for (int j = 0; j < N; j++) c[j] += a * b[j];
        }
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

static double step(model *m, policy pol, float lr) {
    int T = m->T, L = m->L;
    size_t TD = (size_t)T * D, TH = (size_t)T * H;
    saved sv[MAXL];
    ck_recipe r;
    float *x;
    CK(ck_malloc(pool, (void **)&x, TD * sizeof(float), NULL));
    memcpy(x, m->input, TD * sizeof(float));
    CK(ck_step_begin(pool));
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
} result;

static int train(policy pol, int steps, int L, int T, const char *conf, result *res) {
    model m;
    model_init(&m, L, T);
    char c[512];
    snprintf(c, sizeof c, "backend=host,live=0,chunk_align=2M,prefetch=8M,release=eager%s%s", conf ? "," : "", conf ? conf : "");
    if (ck_pool_create_conf(&pool, c) != CK_OK) return verbose_fail("ck_pool_create_conf");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int s = 0; s < steps; s++) res->loss[s] = step(&m, pol, 0.05f);
    clock_gettime(CLOCK_MONOTONIC, &t1);
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
    fprintf(stderr, "usage: train [--policy keep|offload|recompute|mixed|all] [--steps N] "
                    "[--layers L] [--tokens T] [--check] [--conf STR]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int steps = 4, L = 2, T = 8192, check = 0, only = -1;
    const char *conf = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--check") == 0) check = 1;
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
    result res[NPOL];
    int fails = 0;
    printf("train: %d layers, %d tokens, d_model %d, mlp %d, %d steps, host backend\n", L, T, D, H,
           steps);
    printf("%-10s %-14s %-18s %12s %12s %12s %8s %8s\n", "policy", "final loss", "weights",
           "peak phys", "to host", "to device", "replays", "seconds");
    for (int k = 0; k < NPOL; k++) {
        if (only >= 0 && k != only) continue;
        if (train((policy)k, steps, L, T, conf, &res[k]) != 0) return 1;
        const result *r = &res[k];
        printf("%-10s %-14.9g %016llx %9.2f MiB %8.2f MiB %8.2f MiB %8llu %8.2f\n", pol_names[k],
               r->loss[steps - 1], (unsigned long long)r->whash,
               (double)r->st.physical_bytes.peak / 1048576.0, (double)r->st.bytes_to_host / 1048576.0,
               (double)r->st.bytes_to_device / 1048576.0, (unsigned long long)r->st.num_replays,
               r->seconds);
    }
    if (only < 0) {
        printf("losses by step (keep):");
        for (int s = 0; s < steps; s++) printf(" %.9g", res[P_KEEP].loss[s]);
        printf("\n");
    }
    if (check) {
        if (only >= 0) usage();
        if (!(res[P_KEEP].loss[steps - 1] < res[P_KEEP].loss[0])) {
            printf("check: FAILED: the loss did not go down under KEEP\n");
            fails++;
        }
        for (int k = 1; k < NPOL; k++) {
            int same = res[k].whash == res[P_KEEP].whash;
            for (int s = 0; s < steps; s++)
                if (memcmp(&res[k].loss[s], &res[P_KEEP].loss[s], sizeof(double)) != 0) same = 0;
            if (!same) {
                printf("check: FAILED: %s's losses or weights differ from keep's\n", pol_names[k]);
                fails++;
            }
            if (!(res[k].st.physical_bytes.peak < res[P_KEEP].st.physical_bytes.peak)) {
                printf("check: FAILED: %s peaks at %lld bytes, keep at %lld\n", pol_names[k],
                       (long long)res[k].st.physical_bytes.peak,
                       (long long)res[P_KEEP].st.physical_bytes.peak);
                fails++;
            }
        }
        if (!fails) printf("check: ok: losses and weights bit-identical across tiers; every tier but keep peaks lower\n");
    }
    return fails ? 1 : 0;
}
