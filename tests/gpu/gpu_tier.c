/* The tier engine on a real CUDA device: offload to pinned host memory and
 * back, recompute through the replay kernels, prefetch, all with verify=1
 * (a fetch that brings back anything but the stashed bytes is
 * CK_ERR_CORRUPT). One line per check; exit 0 when all pass, 1 when any
 * fails, 77 (skipped) when there is no device. Prints one JSON line with
 * the stash/fetch counters and the measured copy rates. */
#include "ckalloc/tier.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MiB ((size_t)1 << 20)

static int failures;

static int check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", ok ? "ok" : "FAIL");
    vprintf(fmt, ap);
    if (!ok && ck_last_error()[0]) printf(" [%s]", ck_last_error());
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (!ok) failures++;
    return ok;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static ck_tensor_state state_of(ck_pool *p, const void *x) {
    ck_tensor_status s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    return ck_tensor_info(p, x, &s) == CK_OK ? s.state : (ck_tensor_state)-1;
}

static ck_stats stats_of(ck_pool *p) {
    ck_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    ck_get_stats(p, &s);
    return s;
}

/* A recipe: a dropout mask over n bytes (no live input) or y = 2x + x. */
static void mask_recipe(ck_recipe *r, size_t n, uint64_t seed) {
    ck_recipe_init(r);
    int64_t sh[1] = {(int64_t)n};
    ck_step *s = ck_recipe_step(r, CK_OP_DROPOUT_MASK, CK_DTYPE_U8);
    s->in[0] = ck_recipe_input(r, NULL, CK_DTYPE_U8, 1, sh);
    s->p = 0.5f;
    s->seed = seed;
}

static void triple_recipe(ck_recipe *r, const void *x, size_t nel) {
    ck_recipe_init(r);
    int64_t sh[1] = {(int64_t)nel};
    int in = ck_recipe_input(r, x, CK_DTYPE_F32, 1, sh);
    ck_step *s = ck_recipe_step(r, CK_OP_SCALE, CK_DTYPE_F32);
    s->in[0] = in;
    s->alpha = 2.0f;
    s = ck_recipe_step(r, CK_OP_ADD, CK_DTYPE_F32);
    s->in[1] = in;
}

int main(void) {
    ck_pool *p;
    ck_status st = ck_pool_create_conf(&p, "backend=cuda,live=0,chunk_align=4M,verify=1,prefetch=64M");
    if (st == CK_ERR_NO_DEVICE) {
        printf("skipped: no CUDA device (%s)\n", ck_last_error());
        return 77;
    }
    if (!check(st == CK_OK, "pool on the cuda backend")) return 1;

    /* Offload: fill with a replayed mask, stash, release, fetch (verified). */
    enum { NT = 4 };
    size_t n = 64 * MiB;
    void *t[NT];
    ck_recipe r;
    for (int i = 0; i < NT; i++) {
        check(ck_malloc(p, &t[i], n, NULL) == CK_OK, "malloc tensor %d", i);
        mask_recipe(&r, n, (uint64_t)i + 1);
        st = ck_replay(p, &r, t[i], n, NULL);
        if (i == 0 && st == CK_ERR_BACKEND && strstr(ck_last_error(), "without CUDA kernels")) {
            /* a sanitizer build, run on the stand-in driver */
            printf("skipped: %s\n", ck_last_error());
            ck_free(p, t[i], NULL);
            ck_pool_destroy(p);
            return 77;
        }
        check(st == CK_OK, "fill tensor %d", i);
        char name[32];
        snprintf(name, sizeof name, "layers.%d.act", i);
        check(ck_tag(p, t[i], name, CK_TIER_OFFLOAD) == CK_OK, "tag %s", name);
    }
    int64_t before = stats_of(p).physical_bytes.current;
    double t0 = now_s();
    for (int i = 0; i < NT; i++) check(ck_stash(p, t[i], NULL) == CK_OK, "stash %d", i);
    size_t got;
    check(ck_trim(p, &got) == CK_OK, "trim (the copies out finish)");
    double d2h = (double)(NT * n) / (now_s() - t0) / 1e9;
    for (int i = 0; i < NT; i++) check(state_of(p, t[i]) == CK_TENSOR_OFFLOADED, "tensor %d offloaded", i);
    int64_t after = stats_of(p).physical_bytes.current;
    check(before - after >= (int64_t)(NT * (n - 2 * MiB)), "physical down by %lld MiB (>= %zu)",
          (long long)((before - after) >> 20), NT * (n - 2 * MiB) >> 20);
    t0 = now_s();
    for (int i = NT - 1; i >= 0; i--) check(ck_fetch(p, t[i], NULL) == CK_OK, "fetch %d (verified)", i);
    check(ck_stream_synchronize(p, NULL) == CK_OK, "synchronize");
    double h2d = (double)(NT * n) / (now_s() - t0) / 1e9;
    ck_stats s = stats_of(p);
    check(s.prefetch_hits >= 1, "prefetch hits %llu", (unsigned long long)s.prefetch_hits);
    for (int i = 0; i < NT; i++) ck_free(p, t[i], NULL);

    /* Recompute through the replay kernels, verified against the forward. */
    size_t nel = 8 * MiB / 4;
    void *x, *y;
    check(ck_malloc(p, &x, nel * 4, NULL) == CK_OK && ck_malloc(p, &y, nel * 4, NULL) == CK_OK,
          "malloc x, y");
    mask_recipe(&r, nel * 4, 99);
    check(ck_replay(p, &r, x, nel * 4, NULL) == CK_OK, "fill x");
    triple_recipe(&r, x, nel);
    check(ck_replay(p, &r, y, nel * 4, NULL) == CK_OK, "y = 3x (forward)");
    check(ck_tag(p, y, "mlp.act", CK_TIER_RECOMPUTE) == CK_OK && ck_set_recipe(p, y, &r) == CK_OK,
          "tag y RECOMPUTE with its recipe");
    check(ck_stash(p, y, NULL) == CK_OK && ck_trim(p, &got) == CK_OK, "stash y");
    check(state_of(p, y) == CK_TENSOR_DROPPED, "y dropped");
    check(ck_fetch(p, y, NULL) == CK_OK, "fetch y: rebuilt bit for bit (verified)");
    check(ck_stream_synchronize(p, NULL) == CK_OK, "synchronize");
    ck_free(p, x, NULL);
    ck_free(p, y, NULL);
    s = stats_of(p);
    printf("{\"test\":\"gpu_tier\",\"stashes\":%llu,\"fetches\":%llu,\"replays\":%llu,"
           "\"prefetch_hits\":%llu,\"d2h_gbps\":%.2f,\"h2d_verified_gbps\":%.2f,\"failures\":%d}\n",
           (unsigned long long)s.num_stashes, (unsigned long long)s.num_fetches,
           (unsigned long long)s.num_replays, (unsigned long long)s.prefetch_hits, d2h, h2d,
           failures);
    check(ck_pool_destroy(p) == CK_OK, "destroy");
    return failures ? 1 : 0;
}
