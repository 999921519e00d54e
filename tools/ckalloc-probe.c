/* ckalloc-probe: measure the present GPU and write its hardware profile
 * (the format of the files in policy/hardware) for ckalloc-plan.
 *
 * Everything runs through ckalloc on the cuda backend: host-to-device and
 * device-to-host copies from pinned memory (the tier engine's own pinned
 * buffers), device-to-device copies, element-wise memory bandwidth (a replay
 * of add over two large tensors), and GEMM throughput (the replay's linear
 * op, cuBLASLt) in bf16, fp16 and fp32. Each figure is the best of several
 * timed runs (events on one stream).
 *
 *   ckalloc-probe [--device N] [--name NAME] [--quick] [-o FILE]
 *
 * Without a GPU it says so and exits 1. Exit 2: bad usage. */
#include "ckalloc/replay.h"
#include "hostmem.h"
#include "internal.h"
#include "policy.h"
#include "pool.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_FAIL 1
#define EXIT_BAD 2

static void usage(FILE *out) {
    fputs("usage: ckalloc-probe [--device N] [--name NAME] [--quick] [-o FILE]\n"
          "  Measures the GPU (pinned H2D and D2H copies, device copies, element-wise memory\n"
          "  bandwidth, bf16/fp16/fp32 GEMM throughput) and prints its hardware profile as\n"
          "  YAML (the format of policy/hardware/*.yaml), or writes it to FILE.\n"
          "  --name NAME  the profile's name (lowercase letters, digits, '-'; default gpuN)\n"
          "  --quick      smaller sizes and fewer runs\n"
          "Exit: 0 measured, 1 no GPU or a measurement failed, 2 bad usage.\n",
          out);
}

typedef struct probe {
    ck_pool *p;
    ck_stream s;
    ck_event a, z;
    int reps;
} probe;

#define TRY(call)                                                                                  \
    do {                                                                                           \
        if ((call) != CK_OK) {                                                                     \
            fprintf(stderr, "ckalloc-probe: %s: %s\n", #call, ck_last_error());                  \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)

/* Seconds of the best run of a memcpy of n bytes. */
static double time_copy(probe *pr, void *dst, const void *src, size_t n) {
    double best = 1e30;
    for (int r = 0; r < pr->reps; r++) {
        float ms = 0;
        TRY(ck_event_record(pr->p, pr->a, pr->s));
        TRY(ck_memcpy_async(pr->p, dst, src, n, pr->s));
        TRY(ck_event_record(pr->p, pr->z, pr->s));
        TRY(ck_stream_synchronize(pr->p, pr->s));
        TRY(ck_event_elapsed_ms(pr->p, pr->a, pr->z, &ms));
        if (ms > 0 && ms / 1e3 < best) best = ms / 1e3;
    }
    return best;
}

static double time_replay(probe *pr, const ck_recipe *r, void *out, size_t bytes) {
    double best = 1e30;
    TRY(ck_replay(pr->p, r, out, bytes, pr->s)); /* warm-up: module load, cuBLASLt handle */
    TRY(ck_stream_synchronize(pr->p, pr->s));
    for (int k = 0; k < pr->reps; k++) {
        float ms = 0;
        TRY(ck_event_record(pr->p, pr->a, pr->s));
        TRY(ck_replay(pr->p, r, out, bytes, pr->s));
        TRY(ck_event_record(pr->p, pr->z, pr->s));
        TRY(ck_stream_synchronize(pr->p, pr->s));
        TRY(ck_event_elapsed_ms(pr->p, pr->a, pr->z, &ms));
        if (ms > 0 && ms / 1e3 < best) best = ms / 1e3;
    }
    return best;
}

/* FLOP/s of a GEMM [m, k] x [n, k]^T in dtype dt. */
static double gemm_rate(probe *pr, ck_dtype dt, int64_t m, int64_t k, int64_t n) {
    size_t es = ck_dtype_size(dt);
    void *x = NULL, *w = NULL, *y = NULL;
    double rate = -1;
    if (ck_malloc(pr->p, &x, (size_t)(m * k) * es, pr->s) == CK_OK &&
        ck_malloc(pr->p, &w, (size_t)(n * k) * es, pr->s) == CK_OK &&
        ck_malloc(pr->p, &y, (size_t)(m * n) * es, pr->s) == CK_OK &&
        ck_memset_async(pr->p, x, 0, (size_t)(m * k) * es, pr->s) == CK_OK &&
        ck_memset_async(pr->p, w, 0, (size_t)(n * k) * es, pr->s) == CK_OK) {
        ck_recipe r;
        ck_recipe_init(&r);
        int64_t xs[2] = {m, k}, ws[2] = {n, k};
        ck_step *st = ck_recipe_step(&r, CK_OP_LINEAR, dt);
        st->in[0] = ck_recipe_input(&r, x, dt, 2, xs);
        st->in[1] = ck_recipe_input(&r, w, dt, 2, ws);
        double t = time_replay(pr, &r, y, (size_t)(m * n) * es);
        if (t > 0 && t < 1e30) rate = 2.0 * (double)m * (double)n * (double)k / t;
    } else {
        fprintf(stderr, "ckalloc-probe: GEMM buffers: %s\n", ck_last_error());
    }
    if (x) ck_free(pr->p, x, pr->s);
    if (w) ck_free(pr->p, w, pr->s);
    if (y) ck_free(pr->p, y, pr->s);
    return rate;
}

int main(int argc, char **argv) {
    int device = 0, quick = 0;
    const char *name = NULL, *out_path = NULL;
    static const struct option lo[] = {{"device", 1, 0, 'd'}, {"name", 1, 0, 'n'},
                                       {"quick", 0, 0, 'q'},  {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
        switch (c) {
        case 'd':
            errno = 0;
            device = (int)strtol(optarg, &end, 10);
            if (*end || device < 0 || device > 1023 || errno) {
                fprintf(stderr, "ckalloc-probe: bad --device '%s'\n", optarg);
                return EXIT_BAD;
            }
            break;
        case 'n': name = optarg; break;
        case 'q': quick = 1; break;
        case 'o': out_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_BAD;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return EXIT_BAD;
    }
    char defname[32];
    snprintf(defname, sizeof defname, "gpu%d", device);
    if (!name) name = defname;
    for (const char *s = name; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-') || s - name >= 47) {
            fprintf(stderr, "ckalloc-probe: --name '%s': lowercase letters, digits and '-' (at most 47)\n", name);
            return EXIT_BAD;
        }
    char conf[96];
    snprintf(conf, sizeof conf, "backend=cuda,device=%d,live=0,host_alloc=cache", device);
    probe pr = {0};
    pr.reps = quick ? 3 : 10;
    ck_status st = ck_pool_create_conf(&pr.p, conf);
    if (st != CK_OK) {
        fprintf(stderr, "ckalloc-probe: no GPU to measure: %s\n", ck_last_error());
        return EXIT_FAIL;
    }
    int rc = EXIT_FAIL;
    ck_hostmem hm;
    ck__host_init(pr.p, &hm);
    void *dev_a = NULL, *dev_b = NULL, *host = NULL;
    size_t host_cap = 0;
    size_t n = (size_t)(quick ? 64 : 512) << 20;
    ck_stats stt;
    memset(&stt, 0, sizeof stt);
    stt.struct_size = sizeof stt;
    if (ck_stream_create(pr.p, &pr.s) != CK_OK || ck_event_create(pr.p, &pr.a) != CK_OK ||
        ck_event_create(pr.p, &pr.z) != CK_OK || ck_get_stats(pr.p, &stt) != CK_OK ||
        ck_malloc(pr.p, &dev_a, n, pr.s) != CK_OK || ck_malloc(pr.p, &dev_b, n, pr.s) != CK_OK ||
        ck__host_get(pr.p, &hm, n, &host, &host_cap) != CK_OK) {
        fprintf(stderr, "ckalloc-probe: setting up: %s\n", ck_last_error());
        goto done;
    }
    memset(host, 1, n);
    double h2d = (double)n / time_copy(&pr, dev_a, host, n);
    double d2h = (double)n / time_copy(&pr, host, dev_a, n);
    double d2d = (double)n / time_copy(&pr, dev_b, dev_a, n);
    /* element-wise: add reads two tensors and writes one */
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t els[1] = {(int64_t)(n / 2 / 2)}; /* bf16, half the buffer per operand */
    ck_step *sp = ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_BF16);
    sp->in[0] = ck_recipe_input(&r, dev_a, CK_DTYPE_BF16, 1, els);
    sp->in[1] = ck_recipe_input(&r, (char *)dev_a + n / 2, CK_DTYPE_BF16, 1, els);
    double t_ew = time_replay(&pr, &r, dev_b, n / 2);
    double ew = t_ew > 0 && t_ew < 1e30 ? 3.0 * (double)(n / 2) / t_ew : -1;
    int64_t g = quick ? 2048 : 8192;
    double bf16 = gemm_rate(&pr, CK_DTYPE_BF16, g, g, g);
    double fp16 = gemm_rate(&pr, CK_DTYPE_F16, g, g, g);
    double fp32 = gemm_rate(&pr, CK_DTYPE_F32, g / 2, g / 2, g / 2);
    if (!(h2d > 0) || !(d2h > 0) || !(ew > 0) || !(bf16 > 0) || !(fp16 > 0) || !(fp32 > 0) ||
        h2d > 1e15 || d2h > 1e15) {
        fprintf(stderr, "ckalloc-probe: a measurement failed (h2d %g, d2h %g, memory %g, bf16 %g, "
                        "fp16 %g, fp32 %g)\n", h2d, d2h, ew, bf16, fp16, fp32);
        goto done;
    }
    /* the PCIe generation the copies suggest (x16): 3 under 16 GB/s, 4 under 40 */
    double best_link = h2d > d2h ? h2d : d2h;
    int pcie = best_link < 16e9 ? 3 : best_link < 40e9 ? 4 : 5;
    time_t now = time(NULL);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%d", gmtime(&now));
    char text[2048];
    snprintf(text, sizeof text,
            "# Measured by ckalloc-probe on CUDA device %d, %s: copies of %zu MiB from pinned\n"
            "# memory (best of %d), element-wise add for memory bandwidth, GEMMs of %lld (bf16,\n"
            "# fp16) and %lld (fp32) through cuBLASLt. Device-to-device copies: %.1f GB/s.\n"
            "# pcie is inferred from the copy rate, not read from the device.\n"
            "version: 1\nname: %s\nmemory: %lluM\nflops: {bf16: %.4g, fp16: %.4g, fp32: %.4g}\n"
            "memory_bandwidth: %.4g\nh2d: %.4g\nd2h: %.4g\npcie: %d\n",
            device, when, n >> 20, pr.reps, (long long)g, (long long)g / 2, d2d / 1e9, name,
            (unsigned long long)(stt.budget >> 20), bf16, fp16, fp32, ew, h2d, d2h, pcie);
    /* What ckalloc-plan will read: it must parse as a profile. */
    ck_hw_profile check;
    if (ck__hw_parse(text, strlen(text), "the probe's profile", &check) != CK_OK) {
        fprintf(stderr, "ckalloc-probe: %s\n", ck_last_error());
        goto done;
    }
    FILE *f = out_path ? fopen(out_path, "w") : stdout;
    if (!f) {
        fprintf(stderr, "ckalloc-probe: cannot write %s: %s\n", out_path, strerror(errno));
        goto done;
    }
    fputs(text, f);
    if (out_path ? fclose(f) != 0 : fflush(f) != 0) {
        fprintf(stderr, "ckalloc-probe: write error on %s\n", out_path ? out_path : "stdout");
        goto done;
    }
    rc = 0;
done:
    if (host) ck__host_put(pr.p, &hm, host, host_cap);
    ck__host_fini(pr.p, &hm);
    if (dev_a) ck_free(pr.p, dev_a, pr.s);
    if (dev_b) ck_free(pr.p, dev_b, pr.s);
    if (pr.a) ck_event_destroy(pr.p, pr.a);
    if (pr.z) ck_event_destroy(pr.p, pr.z);
    if (pr.s) {
        ck_stream_synchronize(pr.p, pr.s);
        ck_stream_destroy(pr.p, pr.s);
    }
    ck_pool_destroy(pr.p);
    return rc;
}
