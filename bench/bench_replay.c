/* Replay kernels against the memory system: for tensor sizes 1 MiB .. 1 GiB
 * (powers of 4; the size of one bf16 input), a device-to-device copy of the
 * same bytes as the baseline, then every element-wise op and a few fused
 * chains, each reported as GB/s = (bytes read + bytes written) / time
 * (ck_recipe_cost's byte counts, CUDA events around `reps` back-to-back
 * replays) and as a ratio to the copy's GB/s. The fused chains are also run
 * as their steps one by one (each a replay of its own, results stored in
 * between), which gives the fusion's speed-up. Prints ONE JSON line.
 *
 *   bench_replay [max_bytes]     (default 1 GiB; CK_REPLAY_BENCH_MAX too)
 *
 * Exits 77 (printing a skipped line) without a CUDA device.
 * CK_REPLAY_BENCH_HOST=1 runs it on a host pool instead: a check of this
 * program without a GPU, its numbers meaningless. Built into
 * build/bench/gpu/ (scripts/gpu-check.sh runs it), not next to the host
 * benchmarks that scripts/bench.sh runs. */
#include "backend.h"
#include "bench_util.h"
#include "ckalloc/ckalloc.h"
#include "ckalloc/replay.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ck_pool *pool;
static ck_stream st;
static ck_event ev0, ev1;

static void die(const char *what) {
    fprintf(stderr, "bench_replay: %s: %s\n", what, ck_last_error());
    exit(1);
}

#define CK(x)              \
    do {                   \
        if ((x) != CK_OK)  \
            die(#x);       \
    } while (0)

/* The device's name from the driver (the library has it open already). */
static void device_name(char *out, size_t n) {
    snprintf(out, n, "unknown");
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!lib)
        lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        return;
    int (*get_name)(char *, int, int);
    *(void **)&get_name = dlsym(lib, "cuDeviceGetName");
    char name[256] = "";
    if (get_name && get_name(name, (int)sizeof name, 0) == 0 && name[0]) {
        for (char *c = name; *c; c++)
            if (*c == '"' || *c == '\\')
                *c = ' ';
        snprintf(out, n, "%s", name);
    }
    dlclose(lib);
}

static void *dalloc(size_t bytes) {
    void *p = NULL;
    CK(ck_malloc(pool, &p, bytes, st));
    CK(ck_memset_async(pool, p, 0x3c, bytes, st)); /* bf16/f16 ~1.0-ish, never NaN */
    return p;
}

/* Mean milliseconds of one call of fn over reps back-to-back calls. */
typedef void (*work_fn)(void *ctx);

static double time_ms(work_fn fn, void *ctx, int reps) {
    fn(ctx); /* warm: the module load, cuBLASLt, caches */
    fn(ctx);
    CK(ck_event_record(pool, ev0, st));
    for (int i = 0; i < reps; i++)
        fn(ctx);
    CK(ck_event_record(pool, ev1, st));
    CK(ck_event_synchronize(pool, ev1));
    float ms = 0;
    CK(ck_event_elapsed_ms(pool, ev0, ev1, &ms));
    return (double)ms / reps;
}

typedef struct copy_ctx {
    void *dst;
    const void *src;
    size_t n;
} copy_ctx;

static void do_copy(void *v) {
    copy_ctx *c = v;
    CK(ck_memcpy_async(pool, c->dst, c->src, c->n, st));
}

typedef struct replay_ctx {
    const ck_recipe *r[CK_MAX_STEPS];
    void *out[CK_MAX_STEPS];
    size_t out_bytes[CK_MAX_STEPS];
    int n; /* recipes run in order (1: fused) */
} replay_ctx;

static void do_replay(void *v) {
    replay_ctx *c = v;
    for (int i = 0; i < c->n; i++)
        if (ck_replay(pool, c->r[i], c->out[i], c->out_bytes[i], st) != CK_OK)
            die("ck_replay");
}

static double recipe_bytes(const ck_recipe *r) {
    double rd = 0, wr = 0;
    CK(ck_recipe_cost(r, NULL, &rd, &wr));
    return rd + wr;
}

/* JSON accumulation: one object per op, arrays over sizes. */
#define MAX_SIZES 8
#define MAX_OPS 32
typedef struct series {
    char name[48];
    double gbps[MAX_SIZES];
    double ratio[MAX_SIZES];
    double fusion[MAX_SIZES]; /* unfused time / fused time; 0 = n/a */
} series;

static series ser[MAX_OPS];
static int nser;

static series *series_for(const char *name) {
    for (int i = 0; i < nser; i++)
        if (strcmp(ser[i].name, name) == 0)
            return &ser[i];
    if (nser == MAX_OPS) {
        fprintf(stderr, "bench_replay: too many series\n");
        exit(1);
    }
    snprintf(ser[nser].name, sizeof ser[nser].name, "%s", name);
    return &ser[nser++];
}

static int reps_for(size_t bytes) {
    size_t r = (size_t)(4 * GiB) / (bytes ? bytes : 1);
    return r < 3 ? 3 : r > 200 ? 200 : (int)r;
}

/* Run the steps of r one by one: recipe k reads step k-1's result (held in
 * scratch buffers of the step's dtype). rs/outs get the recipes/buffers. */
static int unfused(const ck_recipe *r, ck_recipe *rs, void **outs, size_t *out_bytes,
                   void *final_out, size_t final_bytes) {
    ck_tensor out;
    CK(ck_recipe_check(r, &out, NULL));
    size_t n = 1;
    for (int d = 0; d < out.ndim; d++)
        n *= (size_t)out.shape[d];
    for (int k = 0; k < r->n_steps; k++) {
        ck_recipe *one = &rs[k];
        ck_recipe_init(one);
        ck_step s = r->steps[k];
        int map[CK_MAX_INPUTS + 1];
        for (int i = 0; i <= CK_MAX_INPUTS; i++)
            map[i] = -1;
        for (int sl = 0; sl < 3; sl++) {
            int i = s.in[sl];
            if (i < 0)
                continue;
            if (map[i] < 0)
                map[i] = ck_recipe_input(one, r->inputs[i].data, r->inputs[i].dtype,
                                         r->inputs[i].ndim, r->inputs[i].shape);
            s.in[sl] = map[i];
        }
        if (k > 0) {
            s.in[0] = ck_recipe_input(one, outs[k - 1], r->steps[k - 1].dtype, out.ndim, out.shape);
        }
        one->steps[0] = s;
        one->n_steps = 1;
        if (k == r->n_steps - 1) {
            outs[k] = final_out;
            out_bytes[k] = final_bytes;
        } else {
            out_bytes[k] = n * ck_dtype_size(s.dtype);
            outs[k] = dalloc(out_bytes[k]);
        }
    }
    return r->n_steps;
}

int main(int argc, char **argv) {
    const char *env = getenv("CK_REPLAY_BENCH_MAX");
    size_t max_bytes = GiB;
    if (argc > 1)
        max_bytes = (size_t)strtoull(argv[1], NULL, 0);
    else if (env && *env)
        max_bytes = (size_t)strtoull(env, NULL, 0);
    if (max_bytes < MiB)
        max_bytes = MiB;
    unsetenv("CKALLOC_CUDA_LIB"); /* the real driver */
    const char *host = getenv("CK_REPLAY_BENCH_HOST");
    int on_host = host && *host && strcmp(host, "0") != 0;
    if (!on_host && !ck__cuda_available()) {
        printf("{\"bench\":\"replay_kernels\",\"skipped\":\"no CUDA device\"}\n");
        return 77;
    }
    if (ck_pool_create_conf(&pool, on_host ? "backend=host,host_mem=16G" : "backend=cuda") != CK_OK) {
        printf("{\"bench\":\"replay_kernels\",\"skipped\":\"%s\"}\n",
               "ckalloc could not open the CUDA device");
        return 77;
    }
    CK(ck_stream_create(pool, &st));
    CK(ck_event_create(pool, &ev0));
    CK(ck_event_create(pool, &ev1));
    char dev[256] = "host backend (not a measurement)";
    if (!on_host)
        device_name(dev, sizeof dev);

    size_t sizes[MAX_SIZES];
    double copy_gbps[MAX_SIZES];
    int nsizes = 0;
    for (size_t s = MiB; s <= max_bytes && nsizes < MAX_SIZES; s *= 4)
        sizes[nsizes++] = s;

    static const ck_op unary[] = {CK_OP_SILU,  CK_OP_GELU_ERF, CK_OP_GELU_TANH, CK_OP_RELU,
                                  CK_OP_SCALE, CK_OP_CAST,     CK_OP_DROPOUT,   CK_OP_DROPOUT_MASK};
    static const ck_op binary[] = {CK_OP_SWIGLU, CK_OP_GEGLU_ERF, CK_OP_GEGLU_TANH, CK_OP_ADD,
                                   CK_OP_MUL};
    const int64_t H = 4096; /* hidden size: the rows of the norm chains */

    for (int si = 0; si < nsizes; si++) {
        size_t bytes = sizes[si];
        int64_t n = (int64_t)(bytes / 2); /* bf16 elements */
        int64_t sh[] = {n / H, H}, shr[] = {H};
        void *a = dalloc(bytes), *b = dalloc(bytes), *o = dalloc(bytes * 2); /* room for f32 */
        void *w = dalloc((size_t)H * 2);
        int reps = reps_for(bytes);

        copy_ctx cc = {o, a, bytes};
        double ms = time_ms(do_copy, &cc, reps);
        copy_gbps[si] = 2.0 * (double)bytes / (ms * 1e6);

        /* element-wise ops, bf16 in and out (cast: bf16 -> f16; mask: u8) */
        for (size_t k = 0; k < sizeof unary / sizeof *unary + sizeof binary / sizeof *binary; k++) {
            int bin = k >= sizeof unary / sizeof *unary;
            ck_op op = bin ? binary[k - sizeof unary / sizeof *unary] : unary[k];
            ck_dtype odt = op == CK_OP_DROPOUT_MASK ? CK_DTYPE_U8
                           : op == CK_OP_CAST       ? CK_DTYPE_F16
                                                    : CK_DTYPE_BF16;
            ck_recipe r;
            ck_recipe_init(&r);
            ck_step *s = ck_recipe_step(&r, op, odt);
            s->in[0] = ck_recipe_input(&r, op == CK_OP_DROPOUT_MASK ? NULL : a, CK_DTYPE_BF16, 2, sh);
            if (bin)
                s->in[1] = ck_recipe_input(&r, b, CK_DTYPE_BF16, 2, sh);
            s->alpha = 0.5f, s->p = 0.1f, s->seed = 1234;
            replay_ctx rc = {{&r}, {o}, {bytes * 2}, 1};
            ms = time_ms(do_replay, &rc, reps);
            series *se = series_for(ck_op_get(op)->name);
            se->gbps[si] = recipe_bytes(&r) / (ms * 1e6);
            se->ratio[si] = se->gbps[si] / copy_gbps[si];
        }

        /* fused chains, and the same steps one by one */
        for (int c = 0; c < 3; c++) {
            ck_recipe r;
            ck_recipe_init(&r);
            ck_step *s;
            const char *name;
            if (c == 0) { /* gate/up -> swiglu -> cast (the MLP's activation) */
                name = "chain_swiglu_cast";
                s = ck_recipe_step(&r, CK_OP_SWIGLU, CK_DTYPE_F32);
                s->in[0] = ck_recipe_input(&r, a, CK_DTYPE_BF16, 2, sh);
                s->in[1] = ck_recipe_input(&r, b, CK_DTYPE_BF16, 2, sh);
                ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_BF16);
            } else if (c == 1) { /* rmsnorm -> cast */
                name = "chain_rmsnorm_cast";
                s = ck_recipe_step(&r, CK_OP_RMSNORM, CK_DTYPE_F32);
                s->in[0] = ck_recipe_input(&r, a, CK_DTYPE_BF16, 2, sh);
                s->in[1] = ck_recipe_input(&r, w, CK_DTYPE_BF16, 1, shr);
                ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_BF16);
            } else { /* residual add -> dropout -> cast */
                name = "chain_add_dropout_cast";
                s = ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32);
                s->in[0] = ck_recipe_input(&r, a, CK_DTYPE_BF16, 2, sh);
                s->in[1] = ck_recipe_input(&r, b, CK_DTYPE_BF16, 2, sh);
                s = ck_recipe_step(&r, CK_OP_DROPOUT, CK_DTYPE_F32);
                s->p = 0.1f, s->seed = 99;
                ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_BF16);
            }
            replay_ctx rc = {{&r}, {o}, {bytes * 2}, 1};
            double fused = time_ms(do_replay, &rc, reps);
            ck_recipe rs[CK_MAX_STEPS];
            replay_ctx uc;
            memset(&uc, 0, sizeof uc);
            uc.n = unfused(&r, rs, uc.out, uc.out_bytes, o, bytes * 2);
            for (int k = 0; k < uc.n; k++)
                uc.r[k] = &rs[k];
            double parts = time_ms(do_replay, &uc, reps);
            for (int k = 0; k + 1 < uc.n; k++)
                CK(ck_free(pool, uc.out[k], st));
            series *se = series_for(name);
            se->gbps[si] = recipe_bytes(&r) / (fused * 1e6);
            se->ratio[si] = se->gbps[si] / copy_gbps[si];
            se->fusion[si] = parts / fused;
        }
        CK(ck_free(pool, a, st));
        CK(ck_free(pool, b, st));
        CK(ck_free(pool, o, st));
        CK(ck_free(pool, w, st));
        CK(ck_stream_synchronize(pool, st));
        CK(ck_trim(pool, NULL));
    }

    char mach[512];
    machine(mach, sizeof mach);
    printf("{\"bench\":\"replay_kernels\",\"device\":\"%s\",\"machine\":\"%s\",\"dtype\":\"bf16\","
           "\"bytes\":\"read + written per replay (ck_recipe_cost)\",\"sizes\":[",
           dev, mach);
    for (int i = 0; i < nsizes; i++)
        printf("%s%zu", i ? "," : "", sizes[i]);
    printf("],\"copy_gbps\":[");
    for (int i = 0; i < nsizes; i++)
        printf("%s%.1f", i ? "," : "", copy_gbps[i]);
    printf("],\"ops\":{");
    double worst = 1e9;
    const char *worst_op = "";
    for (int k = 0; k < nser; k++) {
        printf("%s\"%s\":{\"gbps\":[", k ? "," : "", ser[k].name);
        for (int i = 0; i < nsizes; i++)
            printf("%s%.1f", i ? "," : "", ser[k].gbps[i]);
        printf("],\"ratio_vs_copy\":[");
        for (int i = 0; i < nsizes; i++)
            printf("%s%.3f", i ? "," : "", ser[k].ratio[i]);
        printf("]");
        if (ser[k].fusion[0] > 0) {
            printf(",\"fusion_speedup\":[");
            for (int i = 0; i < nsizes; i++)
                printf("%s%.2f", i ? "," : "", ser[k].fusion[i]);
            printf("]");
        }
        printf("}");
        if (ser[k].ratio[nsizes - 1] < worst)
            worst = ser[k].ratio[nsizes - 1], worst_op = ser[k].name;
    }
    printf("},\"largest_size\":%zu,\"worst_ratio_at_largest\":%.3f,\"worst_op_at_largest\":\"%s\"}\n",
           sizes[nsizes - 1], worst, worst_op);
    CK(ck_event_destroy(pool, ev0));
    CK(ck_event_destroy(pool, ev1));
    CK(ck_stream_destroy(pool, st));
    CK(ck_pool_destroy(pool));
    return 0;
}
