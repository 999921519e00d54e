/* ck_replay on a cuda pool over tests/fakecuda: the launcher's side of the
 * replay kernels without a GPU. The fake driver accepts the embedded fatbin
 * (it checks the magic), runs nothing, and records every cuLaunchKernel:
 * kernel, grid, block, stream and the bytes of the ck__plan parameter.
 *
 * Checked here: one launch per recipe (a 3-step chain included), the kernel
 * each plan kind gets, the geometry, that the plan which arrives is the one
 * ck__plan_build gives, the module loaded once (threads racing included)
 * and unloaded with the pool, a linear without cuBLASLt, a GPU the fatbin
 * has no image for, a failing launch, and a non-resident input (nothing
 * launched). In a build without nvcc (sanitizer builds) the library has no
 * kernels: there every kernel replay must fail with CK_ERR_BACKEND and
 * launch nothing. */
#include "testutil.h"

#include "backend.h"
#include "ckalloc/replay.h"
#include "internal.h"
#include "launch.h"
#include "plan.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NO_CUBLASLT "/nonexistent/ckalloc-test/libcublasLt.so.13"
#define FAKE_SMS 132

typedef struct launch {
    char name[64];
    unsigned grid[3], block[3], shmem;
    void *stream;
    ck__plan plan;
    size_t plan_len;
} launch;

static launch get_launch(unsigned long i) {
    int (*get)(unsigned long, char *, size_t, unsigned *, unsigned *, unsigned *, void **, void *,
               size_t, size_t *);
    *(void **)&get = fake_sym("ckfake_launch_get");
    launch l;
    memset(&l, 0, sizeof l);
    ck_assert_int_eq(get(i, l.name, sizeof l.name, l.grid, l.block, &l.shmem, &l.stream, &l.plan,
                         sizeof l.plan, &l.plan_len),
                     0);
    return l;
}

static void launches_reset(void) {
    void (*reset)(void);
    *(void **)&reset = fake_sym("ckfake_launch_reset");
    reset();
}

static unsigned long launches(void) { return fake_counter("ckfake_launches"); }

static void setup(void) {
    fake_cuda_env();
    unsetenv("CKFAKECUDA_CC");
    unsetenv("CKFAKECUDA_SMS");
    unsetenv("CKFAKECUDA_FAIL_LAUNCH");
    /* deterministic: never the machine's cuBLASLt */
    setenv("CKALLOC_CUBLASLT_LIB", NO_CUBLASLT, 1);
    ck__clear_error();
    launches_reset();
}

static ck_pool *cuda_pool(void) { return pool_from_conf("backend=cuda,va=1G"); }

static void *dev_alloc(ck_pool *p, size_t n) {
    void *q = NULL;
    ASSERT_OK(ck_malloc(p, &q, n, NULL));
    return q;
}

/* The plan ck_replay should have handed the kernel. */
static ck__plan plan_of(const ck_recipe *r, void *out, size_t out_bytes) {
    ck__plan pl;
    memset(&pl, 0, sizeof pl);
    ASSERT_OK(ck__plan_build(r, out, out_bytes, &pl));
    return pl;
}

static unsigned blocks_for(int64_t threads) {
    int64_t b = (threads + CK_REPLAY_BLOCK - 1) / CK_REPLAY_BLOCK;
    int64_t cap = (int64_t)FAKE_SMS * CK_REPLAY_BLOCKS_PER_SM;
    return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

/* In a build without kernels: r fails cleanly and launches nothing. */
static int no_kernels_expected(ck_pool *p, const ck_recipe *r, void *out, size_t n) {
    if (ck__gpu_kernels_built())
        return 0;
    ck_assert_int_eq(ck_replay(p, r, out, n, NULL), CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), "built without CUDA kernels") != NULL, "error: %s",
                  ck_last_error());
    ck_assert_uint_eq(launches(), 0);
    return 1;
}

/* The one launch on record is `kernel` with plan `want` on stream s. */
static void assert_one_launch(const char *kernel, const ck__plan *want, ck_stream s,
                              unsigned grid) {
    ck_assert_uint_eq(launches(), 1);
    launch l = get_launch(0);
    ck_assert_str_eq(l.name, kernel);
    ck_assert_uint_eq(l.block[0], CK_REPLAY_BLOCK);
    ck_assert_uint_eq(l.block[1], 1);
    ck_assert_uint_eq(l.block[2], 1);
    ck_assert_uint_eq(l.grid[0], grid);
    ck_assert_uint_eq(l.grid[1], 1);
    ck_assert_uint_eq(l.grid[2], 1);
    ck_assert_uint_eq(l.shmem, 0);
    ck_assert_ptr_eq(l.stream, (void *)s);
    ck_assert_uint_eq(l.plan_len, sizeof(ck__plan));
    ck_assert_msg(memcmp(&l.plan, want, sizeof *want) == 0,
                  "the plan the kernel got differs from ck__plan_build's");
}

/* ---- one launch per recipe ---------------------------------------------- */

START_TEST(t_chain_is_one_launch) {
    ck_pool *p = cuda_pool();
    ck_stream s;
    ASSERT_OK(ck_stream_create(p, &s));
    enum { R = 64, C = 1000 }; /* 64000 elements: 8000 chunks of 8 */
    uint16_t *gate = dev_alloc(p, R * C * 2), *up = dev_alloc(p, R * C * 2);
    uint16_t *out = dev_alloc(p, R * C * 2);
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {R, C};
    int g = ck_recipe_input(&r, gate, CK_DTYPE_BF16, 2, sh);
    int u = ck_recipe_input(&r, up, CK_DTYPE_BF16, 2, sh);
    ck_step *st = ck_recipe_step(&r, CK_OP_SWIGLU, CK_DTYPE_BF16);
    st->in[0] = g, st->in[1] = u;
    ck_recipe_step(&r, CK_OP_SCALE, CK_DTYPE_F32)->alpha = 0.5f;
    ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_F16);
    ck_assert_int_eq(r.n_steps, 3);

    if (!no_kernels_expected(p, &r, out, R * C * 2)) {
        ASSERT_OK(ck_replay(p, &r, out, R * C * 2, s));
        ck__plan want = plan_of(&r, out, R * C * 2);
        ck_assert_int_eq(want.kind, CK_PLAN_EW);
        ck_assert_int_eq(want.n_steps, 3);
        ck_assert_int_eq(want.vec, 1);
        assert_one_launch(CK_KERNEL_EW, &want, s, blocks_for((R * C + 7) / 8));
        ck_assert_uint_eq(fake_counter("ckfake_live_modules"), 1);

        /* the module is loaded once; the plan is copied at the call */
        unsigned long loads = fake_counter("ckfake_module_loads");
        ck_recipe r2 = r;
        r2.inputs[g].data = gate + 3; /* unaligned: the scalar path */
        int64_t sh2[] = {R * C - 3};
        r2.inputs[g].ndim = r2.inputs[u].ndim = 1;
        memcpy(r2.inputs[g].shape, sh2, sizeof sh2);
        memcpy(r2.inputs[u].shape, sh2, sizeof sh2);
        ASSERT_OK(ck_replay(p, &r2, out, R * C * 2, NULL));
        ck_assert_uint_eq(launches(), 2);
        launch l = get_launch(1);
        ck__plan want2 = plan_of(&r2, out, R * C * 2);
        ck_assert_int_eq(want2.vec, 0);
        ck_assert_ptr_null(l.stream);
        ck_assert(memcmp(&l.plan, &want2, sizeof want2) == 0);
        ck_assert_uint_eq(fake_counter("ckfake_module_loads"), loads);
    }
    ASSERT_OK(ck_stream_destroy(p, s));
    ASSERT_OK(ck_pool_destroy(p));
    ck_assert_uint_eq(fake_counter("ckfake_live_modules"), 0); /* unloaded with the pool */
    ck_assert_uint_eq(fake_counter("ckfake_ctx_refs"), 0);
}
END_TEST

/* ---- the kernel each plan kind gets ------------------------------------- */

START_TEST(t_norm_kernels) {
    ck_pool *p = cuda_pool();
    enum { R = 100 };
    const int64_t cols_cases[] = {256, 4096}; /* a warp per row; a block per row */
    for (int t = 0; t < 2; t++) {
        const int64_t C = cols_cases[t];
        float *x = dev_alloc(p, R * C * 4), *w = dev_alloc(p, C * 4), *bias = dev_alloc(p, C * 4);
        uint16_t *res = dev_alloc(p, R * C * 2), *out = dev_alloc(p, R * C * 2);
        ck_recipe r;
        ck_recipe_init(&r);
        int64_t sh[] = {R, C}, shw[] = {C};
        int xi = ck_recipe_input(&r, x, CK_DTYPE_F32, 2, sh);
        int wi = ck_recipe_input(&r, w, CK_DTYPE_F32, 1, shw);
        int bi = ck_recipe_input(&r, bias, CK_DTYPE_F32, 1, shw);
        int ri = ck_recipe_input(&r, res, CK_DTYPE_BF16, 2, sh);
        ck_step *st = ck_recipe_step(&r, t ? CK_OP_LAYERNORM : CK_OP_RMSNORM, CK_DTYPE_F32);
        st->in[0] = xi, st->in[1] = wi;
        if (t)
            st->in[2] = bi;
        else
            ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32)->in[1] = bi; /* a row vector */
        ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32)->in[1] = ri;
        ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_BF16);
        if (!no_kernels_expected(p, &r, out, R * C * 2)) {
            launches_reset();
            ASSERT_OK(ck_replay(p, &r, out, R * C * 2, NULL));
            ck__plan want = plan_of(&r, out, R * C * 2);
            ck_assert_int_eq(want.kind, CK_PLAN_NORM);
            unsigned grid = C <= CK_NORM_WARP_MAX_COLS ? blocks_for(R * 32) : blocks_for(R * 256);
            ck_assert_uint_eq(grid, C <= CK_NORM_WARP_MAX_COLS ? (R + 7) / 8 : R);
            assert_one_launch(CK_KERNEL_NORM, &want, NULL, grid);
        }
        ck_free(p, x, NULL), ck_free(p, w, NULL), ck_free(p, bias, NULL);
        ck_free(p, res, NULL), ck_free(p, out, NULL);
    }
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_rope_and_dropout_kernels) {
    ck_pool *p = cuda_pool();
    enum { B = 2, T = 300, H = 8, D = 128 };
    uint16_t *x = dev_alloc(p, (size_t)B * T * H * D * 2), *out = dev_alloc(p, (size_t)B * T * H * D * 2);
    int64_t *pos = dev_alloc(p, B * T * 8);
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {B, T, H, D}, shp[] = {B, T};
    ck_step *st = ck_recipe_step(&r, CK_OP_ROPE, CK_DTYPE_BF16);
    st->in[0] = ck_recipe_input(&r, x, CK_DTYPE_BF16, 4, sh);
    st->in[1] = ck_recipe_input(&r, pos, CK_DTYPE_I64, 2, shp);
    st->base = 500000.0f;
    size_t bytes = (size_t)B * T * H * D * 2;
    if (!no_kernels_expected(p, &r, out, bytes)) {
        ASSERT_OK(ck_replay(p, &r, out, bytes, NULL));
        ck__plan want = plan_of(&r, out, bytes);
        ck_assert_int_eq(want.kind, CK_PLAN_ROPE);
        ck_assert_int_eq(want.rows, B * T);
        ck_assert_int_eq(want.n, (int64_t)B * T * H * D);
        ck_assert_int_eq(ck__rope_width(&want), 8);
        /* 600 tokens x 8 pair-groups: few items, so one head each */
        ck_assert_int_eq(ck__rope_heads_per_item(&want), 1);
        assert_one_launch(CK_KERNEL_ROPE, &want, NULL, blocks_for((int64_t)B * T * H * (D / 2 / 8)));
    }

    /* dropout_mask reads nothing: its plan has no x */
    launches_reset();
    uint8_t *mask = dev_alloc(p, 4099);
    ck_recipe_init(&r);
    int64_t shm[] = {4099};
    st = ck_recipe_step(&r, CK_OP_DROPOUT_MASK, CK_DTYPE_U8);
    st->in[0] = ck_recipe_input(&r, NULL, CK_DTYPE_BF16, 1, shm);
    st->p = 0.1f, st->seed = 0x1234, st->offset = 7;
    if (!no_kernels_expected(p, &r, mask, 4099)) {
        ASSERT_OK(ck_replay(p, &r, mask, 4099, NULL));
        ck__plan want = plan_of(&r, mask, 4099);
        ck_assert_ptr_null(want.x);
        assert_one_launch(CK_KERNEL_EW, &want, NULL, blocks_for((4099 + 7) / 8));
    }
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- failures ----------------------------------------------------------- */

START_TEST(t_linear_without_cublaslt) {
    ck_pool *p = cuda_pool();
    enum { M = 16, K = 64, N = 32 };
    float *x = dev_alloc(p, M * K * 4), *w = dev_alloc(p, N * K * 4), *out = dev_alloc(p, M * N * 4);
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t shx[] = {M, K}, shw[] = {N, K};
    ck_step *st = ck_recipe_step(&r, CK_OP_LINEAR, CK_DTYPE_F32);
    st->in[0] = ck_recipe_input(&r, x, CK_DTYPE_F32, 2, shx);
    st->in[1] = ck_recipe_input(&r, w, CK_DTYPE_F32, 2, shw);
    for (int round = 0; round < 2; round++) { /* the failure is not sticky-wrong */
        ck__clear_error();
        ck_assert_int_eq(ck_replay(p, &r, out, M * N * 4, NULL), CK_ERR_BACKEND);
        const char *e = ck_last_error();
        ck_assert_msg(strstr(e, "cuBLASLt") && strstr(e, "not found") && strstr(e, NO_CUBLASLT),
                      "error: %s", e);
    }
    /* a library that loads but is not cuBLASLt */
    setenv("CKALLOC_CUBLASLT_LIB", "libm.so.6", 1);
    ck_assert_int_eq(ck_replay(p, &r, out, M * N * 4, NULL), CK_ERR_BACKEND);
    const char *e = ck_last_error();
    ck_assert_msg(strstr(e, "cannot be used") && strstr(e, "lacks cublasLt"), "error: %s", e);
    ck_assert_uint_eq(launches(), 0);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_not_resident_launches_nothing) {
    ck_pool *p = cuda_pool();
    enum { N = 4096 };
    float *x = dev_alloc(p, N * 4), *gone = dev_alloc(p, 8 * MiB), *out = dev_alloc(p, N * 4);
    ASSERT_OK(ck_free(p, gone, NULL));
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {N};
    ck_step *st = ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32);
    st->in[0] = ck_recipe_input(&r, x, CK_DTYPE_F32, 1, sh);
    st->in[1] = ck_recipe_input(&r, gone, CK_DTYPE_F32, 1, sh);
    ck_assert_int_eq(ck_replay(p, &r, out, N * 4, NULL), CK_ERR_NOT_OWNED);
    ck_assert_msg(strstr(ck_last_error(), "input 1") != NULL, "error: %s", ck_last_error());
    ck_assert_uint_eq(launches(), 0);
    ck_assert_uint_eq(fake_counter("ckfake_live_modules"), 0); /* not even loaded */
    /* pointers outside the pool are taken as given */
    float *outside = calloc(N, 4);
    r.inputs[1].data = outside;
    if (!no_kernels_expected(p, &r, out, N * 4)) {
        ASSERT_OK(ck_replay(p, &r, out, N * 4, NULL));
        ck_assert_uint_eq(launches(), 1);
    }
    free(outside);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_no_image_for_old_gpu) {
    if (!ck__gpu_kernels_built())
        return;
    setenv("CKFAKECUDA_CC", "75", 1);
    ck_pool *p = cuda_pool();
    float *x = dev_alloc(p, 4096), *out = dev_alloc(p, 4096);
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {1024};
    ck_recipe_step(&r, CK_OP_RELU, CK_DTYPE_F32)->in[0] =
        ck_recipe_input(&r, x, CK_DTYPE_F32, 1, sh);
    ck_assert_int_eq(ck_replay(p, &r, out, 4096, NULL), CK_ERR_BACKEND);
    const char *e = ck_last_error();
    ck_assert_msg(strstr(e, "no kernel image for sm_75") && strstr(e, "sm_80"), "error: %s", e);
    ck_assert_uint_eq(launches(), 0);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_launch_failure_is_reported) {
    if (!ck__gpu_kernels_built())
        return;
    setenv("CKFAKECUDA_FAIL_LAUNCH", "1", 1);
    ck_pool *p = cuda_pool();
    float *x = dev_alloc(p, 4096), *out = dev_alloc(p, 4096);
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {1024};
    ck_recipe_step(&r, CK_OP_SILU, CK_DTYPE_F32)->in[0] =
        ck_recipe_input(&r, x, CK_DTYPE_F32, 1, sh);
    ck_assert_int_eq(ck_replay(p, &r, out, 4096, NULL), CK_ERR_BACKEND);
    const char *e = ck_last_error();
    ck_assert_msg(strstr(e, "cuLaunchKernel(" CK_KERNEL_EW ")") != NULL, "error: %s", e);
    ASSERT_OK(ck_replay(p, &r, out, 4096, NULL)); /* only the first launch fails */
    ck_assert_uint_eq(launches(), 1);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- the lazy load under threads ---------------------------------------- */

typedef struct racer {
    ck_pool *p;
    ck_recipe r;
    void *out;
    ck_status st;
} racer;

static void *race(void *arg) {
    racer *rc = arg;
    for (int i = 0; i < 8 && rc->st == CK_OK; i++)
        rc->st = ck_replay(rc->p, &rc->r, rc->out, 4096, NULL);
    return NULL;
}

START_TEST(t_module_loads_once_under_threads) {
    if (!ck__gpu_kernels_built())
        return;
    ck_pool *p = cuda_pool();
    unsigned long loads = fake_counter("ckfake_module_loads");
    enum { T = 4 };
    racer rc[T];
    pthread_t th[T];
    float *x = dev_alloc(p, 4096);
    for (int t = 0; t < T; t++) {
        rc[t].p = p;
        rc[t].out = dev_alloc(p, 4096);
        rc[t].st = CK_OK;
        ck_recipe_init(&rc[t].r);
        int64_t sh[] = {1024};
        ck_recipe_step(&rc[t].r, CK_OP_GELU_TANH, CK_DTYPE_F32)->in[0] =
            ck_recipe_input(&rc[t].r, x, CK_DTYPE_F32, 1, sh);
    }
    for (int t = 0; t < T; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, race, &rc[t]), 0);
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        ck_assert_int_eq(rc[t].st, CK_OK);
    }
    ck_assert_uint_eq(fake_counter("ckfake_module_loads"), loads + 1);
    ck_assert_uint_eq(launches(), T * 8);
    ASSERT_OK(ck_pool_destroy(p));
    ck_assert_uint_eq(fake_counter("ckfake_live_modules"), 0);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("replay_cuda");
    TCase *tc = ck_test_tcase(s, "fake", 60);
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, t_chain_is_one_launch);
    tcase_add_test(tc, t_norm_kernels);
    tcase_add_test(tc, t_rope_and_dropout_kernels);
    tcase_add_test(tc, t_linear_without_cublaslt);
    tcase_add_test(tc, t_not_resident_launches_nothing);
    tcase_add_test(tc, t_no_image_for_old_gpu);
    tcase_add_test(tc, t_launch_failure_is_reported);
    tcase_add_test(tc, t_module_loads_once_under_threads);
    return s;
}

int main(void) {
    setenv("CKALLOC_CUDA_LIB", CK_FAKECUDA_LIB, 1);
    return ck_test_run(suite());
}
