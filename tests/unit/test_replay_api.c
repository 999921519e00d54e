/* The replay API around the kernels: the op registry, recipe building and
 * checking, cost, and ck_replay on a host pool (stream order, residency of
 * pool inputs, nothing queued on error). The ops' values are checked in
 * test_replay_ref.c. */
#include "testutil.h"

#include "ckalloc/replay.h"
#include "plan.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- registry --------------------------------------------------------- */

START_TEST(registry_describes_every_op) {
    for (int i = 0; i < CK_OP_COUNT; i++) {
        const ck_op_info *oi = ck_op_get((ck_op)i);
        ck_assert_ptr_nonnull(oi);
        ck_assert_int_eq(oi->op, i);
        ck_assert(oi->name && *oi->name);
        ck_assert(oi->n_inputs >= 1 && oi->n_inputs <= 3);
        ck_assert(oi->n_required >= 1 && oi->n_required <= oi->n_inputs);
        for (int s = 0; s < oi->n_inputs; s++) ck_assert(oi->inputs[s] && *oi->inputs[s]);
        ck_assert(oi->params && oi->shape_rule && *oi->shape_rule && oi->dtype_rule &&
                  oi->tolerance && *oi->tolerance);
        ck_assert(oi->flops >= 0 && oi->flops_per_k >= 0 && oi->reads >= 0);
        ck_assert(oi->writes == 1);
        ck_op found = CK_OP_COUNT;
        ASSERT_OK(ck_op_find(oi->name, &found));
        ck_assert_int_eq(found, i);
        for (int j = 0; j < i; j++) ck_assert_str_ne(ck_op_get((ck_op)j)->name, oi->name);
    }
    ck_assert_ptr_null(ck_op_get(CK_OP_COUNT));
    ck_assert_ptr_null(ck_op_get((ck_op)-1));
    ck_op o;
    ck_assert_int_eq(ck_op_find("softmax", &o), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "softmax"));
    ck_assert_int_eq(ck_op_find(NULL, &o), CK_ERR_INVALID);
    /* only the GEMM costs per K; element-wise binary ops read two inputs */
    for (int i = 0; i < CK_OP_COUNT; i++)
        ck_assert_int_eq(ck_op_get((ck_op)i)->flops_per_k > 0, i == CK_OP_LINEAR);
    ck_assert(ck_op_get(CK_OP_SWIGLU)->reads == 2 && ck_op_get(CK_OP_ADD)->reads == 2);
    ck_assert_int_eq(ck_op_get(CK_OP_RMSNORM)->cls, CK_OPC_ROWWISE);
    ck_assert_int_eq(ck_op_get(CK_OP_LINEAR)->cls, CK_OPC_STANDALONE);
}
END_TEST

START_TEST(dtype_names_and_sizes) {
    static const size_t want[] = {4, 2, 2, 4, 8, 1};
    static const char *names[] = {"f32", "f16", "bf16", "i32", "i64", "u8"};
    for (int d = 0; d < CK_DTYPE_COUNT; d++) {
        ck_assert_uint_eq(ck_dtype_size((ck_dtype)d), want[d]);
        ck_assert_str_eq(ck_dtype_name((ck_dtype)d), names[d]);
    }
    ck_assert_uint_eq(ck_dtype_size(CK_DTYPE_COUNT), 0);
    ck_assert_str_eq(ck_dtype_name((ck_dtype)-3), "?");
}
END_TEST

/* ---- building and checking -------------------------------------------- */

static float xbuf[4096], ybuf[4096], wbuf[4096];

START_TEST(builder_defaults_and_limits) {
    ck_recipe r;
    ck_recipe_init(&r);
    ck_assert_int_eq(r.n_inputs, 0);
    ck_assert_int_eq(r.n_steps, 0);
    int64_t shape[] = {2, 3};
    for (int i = 0; i < CK_MAX_INPUTS; i++)
        ck_assert_int_eq(ck_recipe_input(&r, xbuf, CK_DTYPE_F32, 2, shape), i);
    ck_assert_int_eq(ck_recipe_input(&r, xbuf, CK_DTYPE_F32, 2, shape), -1);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "inputs"));
    ck_recipe_init(&r);
    ck_assert_int_eq(ck_recipe_input(&r, xbuf, CK_DTYPE_F32, 0, shape), -1);
    ck_assert_int_eq(ck_recipe_input(&r, xbuf, CK_DTYPE_F32, CK_MAX_DIMS + 1, shape), -1);
    ck_assert_int_eq(r.n_inputs, 0);

    ck_step *s = ck_recipe_step(&r, CK_OP_RMSNORM, CK_DTYPE_BF16);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(s->in[0], -1);
    ck_assert_int_eq(s->in[1], -1);
    ck_assert_int_eq(s->in[2], -1);
    ck_assert(s->eps == 1e-6f && s->alpha == 1.0f && s->base == 10000.0f && s->p == 0.0f);
    ck_assert_ptr_null(ck_recipe_step(&r, CK_OP_COUNT, CK_DTYPE_F32));
    ck_assert_int_eq(r.n_steps, 1);
    for (int i = 1; i < CK_MAX_STEPS; i++) ck_assert_ptr_nonnull(ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_F32));
    ck_assert_ptr_null(ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_F32));
    ck_assert_ptr_null(ck_recipe_step(NULL, CK_OP_CAST, CK_DTYPE_F32));
}
END_TEST

/* [rows, cols] f32 x -> op -> dtype, one step. */
static void unary(ck_recipe *r, ck_op op, ck_dtype dt, int64_t rows, int64_t cols) {
    ck_recipe_init(r);
    int64_t shape[] = {rows, cols};
    int x = ck_recipe_input(r, xbuf, CK_DTYPE_F32, 2, shape);
    ck_recipe_step(r, op, dt)->in[0] = x;
}

START_TEST(check_gives_result_shape) {
    ck_recipe r;
    ck_tensor out;
    size_t bytes = 0;
    unary(&r, CK_OP_SILU, CK_DTYPE_BF16, 8, 16);
    ASSERT_OK(ck_recipe_check(&r, &out, &bytes));
    ck_assert_int_eq(out.dtype, CK_DTYPE_BF16);
    ck_assert_int_eq(out.ndim, 2);
    ck_assert(out.shape[0] == 8 && out.shape[1] == 16);
    ck_assert_ptr_null(out.data);
    ck_assert_uint_eq(bytes, 8 * 16 * 2);

    /* linear [2, 5, 16] x [24, 16]^T -> [2, 5, 24] */
    ck_recipe_init(&r);
    int64_t xs[] = {2, 5, 16}, ws[] = {24, 16}, bs[] = {24};
    int x = ck_recipe_input(&r, xbuf, CK_DTYPE_F16, 3, xs);
    int w = ck_recipe_input(&r, wbuf, CK_DTYPE_F16, 2, ws);
    int b = ck_recipe_input(&r, ybuf, CK_DTYPE_F16, 1, bs);
    ck_step *s = ck_recipe_step(&r, CK_OP_LINEAR, CK_DTYPE_F16);
    s->in[0] = x, s->in[1] = w, s->in[2] = b;
    ASSERT_OK(ck_recipe_check(&r, &out, &bytes));
    ck_assert(out.ndim == 3 && out.shape[0] == 2 && out.shape[1] == 5 && out.shape[2] == 24);
    ck_assert_uint_eq(bytes, 2 * 5 * 24 * 2);
    ASSERT_OK(ck_recipe_check(&r, NULL, NULL));

    /* dropout mask: the shape of "like", whose data may be NULL */
    ck_recipe_init(&r);
    int64_t ms[] = {3, 7};
    int like = ck_recipe_input(&r, NULL, CK_DTYPE_BF16, 2, ms);
    s = ck_recipe_step(&r, CK_OP_DROPOUT_MASK, CK_DTYPE_U8);
    s->in[0] = like;
    s->p = 0.25f;
    ASSERT_OK(ck_recipe_check(&r, &out, &bytes));
    ck_assert_int_eq(out.dtype, CK_DTYPE_U8);
    ck_assert_uint_eq(bytes, 21);
}
END_TEST

/* Every bad recipe: CK_ERR_INVALID, a sentence containing want. */
static void expect_bad(const ck_recipe *r, const char *want) {
    ck_status st = ck_recipe_check(r, NULL, NULL);
    ck_assert_msg(st == CK_ERR_INVALID, "expected CK_ERR_INVALID for '%s', got %s", want,
                  ck_status_str(st));
    ck_assert_msg(strstr(ck_last_error(), want), "error '%s' does not say '%s'", ck_last_error(),
                  want);
    /* the same recipe through ck_replay_host touches nothing */
    float out[4] = {7, 7, 7, 7};
    ck_assert_int_eq(ck_replay_host(r, out, sizeof out), CK_ERR_INVALID);
    ck_assert(out[0] == 7 && out[3] == 7);
}

START_TEST(check_rejects_bad_recipes) {
    ck_recipe r;
    ck_assert_int_eq(ck_recipe_check(NULL, NULL, NULL), CK_ERR_INVALID);
    ck_recipe_init(&r);
    expect_bad(&r, "n_steps 0");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.steps[0].op = (ck_op)99;
    expect_bad(&r, "unknown op id 99");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.steps[0].dtype = CK_DTYPE_I32;
    expect_bad(&r, "not f32, f16 or bf16");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.inputs[0].data = NULL;
    expect_bad(&r, "NULL data");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.inputs[0].dtype = CK_DTYPE_I64;
    expect_bad(&r, "it must be f32, f16 or bf16");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.inputs[0].dtype = (ck_dtype)42;
    expect_bad(&r, "unknown dtype 42");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.inputs[0].shape[1] = 0;
    expect_bad(&r, "dim 1 is 0");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.inputs[0].shape[0] = r.inputs[0].shape[1] = (int64_t)1 << 40;
    expect_bad(&r, "overflows");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.steps[0].in[0] = 3;
    expect_bad(&r, "in[0] = 3 is not an input");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    r.steps[0].in[1] = 0;
    expect_bad(&r, "in[1] = 0 but the op has 1 input slot");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    ck_recipe_step(&r, CK_OP_RMSNORM, CK_DTYPE_F32);
    expect_bad(&r, "only element-wise ops may follow the first step");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_F16)->in[0] = 0;
    expect_bad(&r, "in[0] must be -1");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    ck_recipe_step(&r, CK_OP_MUL, CK_DTYPE_F32); /* no b */
    expect_bad(&r, "slot 1 (b) is required");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 4);
    int64_t odd[] = {3};
    ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32)->in[1] = ck_recipe_input(&r, ybuf, CK_DTYPE_F32, 1, odd);
    expect_bad(&r, "shape [3]; it must be [2, 4] or [4]");

    unary(&r, CK_OP_SILU, CK_DTYPE_F32, 2, 2);
    int64_t s2[] = {2, 2};
    ck_recipe_input(&r, ybuf, CK_DTYPE_F32, 2, s2);
    expect_bad(&r, "input 1 is not read");

    unary(&r, CK_OP_SCALE, CK_DTYPE_F32, 2, 2);
    r.steps[0].alpha = INFINITY;
    expect_bad(&r, "alpha is not finite");

    unary(&r, CK_OP_DROPOUT, CK_DTYPE_F32, 2, 2);
    r.steps[0].p = 1.0f;
    expect_bad(&r, "must be in [0, 1)");
    r.steps[0].p = NAN;
    expect_bad(&r, "must be in [0, 1)");

    unary(&r, CK_OP_RMSNORM, CK_DTYPE_F32, 2, 4);
    r.steps[0].eps = -1;
    expect_bad(&r, "eps");
    r.steps[0].eps = 1e-5f;
    r.steps[0].in[1] = ck_recipe_input(&r, wbuf, CK_DTYPE_F32, 1, odd);
    expect_bad(&r, "(weight) has shape [3]; it must be [4]");

    unary(&r, CK_OP_DROPOUT_MASK, CK_DTYPE_F32, 2, 2);
    expect_bad(&r, "must be u8");

    /* rope: dims, head_dim, positions */
    ck_recipe_init(&r);
    int64_t xs[] = {4, 2, 6}, ps[] = {4}, bad_ps[] = {5};
    int x = ck_recipe_input(&r, xbuf, CK_DTYPE_F32, 3, xs);
    int pos = ck_recipe_input(&r, ybuf, CK_DTYPE_I32, 1, bad_ps);
    ck_step *s = ck_recipe_step(&r, CK_OP_ROPE, CK_DTYPE_F32);
    s->in[0] = x, s->in[1] = pos;
    expect_bad(&r, "positions have shape [5]");
    r.inputs[pos].shape[0] = ps[0];
    r.inputs[pos].dtype = CK_DTYPE_F32;
    expect_bad(&r, "i32 or i64");
    r.inputs[pos].dtype = CK_DTYPE_I64;
    r.inputs[x].shape[2] = 7;
    expect_bad(&r, "head_dim 7 must be even");
    r.inputs[x].shape[2] = 6;
    ASSERT_OK(ck_recipe_check(&r, NULL, NULL));
    ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_F16);
    expect_bad(&r, "runs as a recipe of its own");

    /* linear: shapes and dtypes */
    ck_recipe_init(&r);
    int64_t lx[] = {3, 8}, lw[] = {5, 7};
    x = ck_recipe_input(&r, xbuf, CK_DTYPE_BF16, 2, lx);
    int w = ck_recipe_input(&r, wbuf, CK_DTYPE_BF16, 2, lw);
    s = ck_recipe_step(&r, CK_OP_LINEAR, CK_DTYPE_BF16);
    s->in[0] = x, s->in[1] = w;
    expect_bad(&r, "weight has shape [5, 7]; x [3, 8] needs [N, 8]");
    r.inputs[w].shape[1] = 8;
    r.inputs[w].dtype = CK_DTYPE_F16;
    expect_bad(&r, "weight is f16 but x is bf16");
    r.inputs[w].dtype = CK_DTYPE_BF16;
    r.steps[0].dtype = CK_DTYPE_F32;
    expect_bad(&r, "must be x's (bf16)");
}
END_TEST

START_TEST(cost_follows_registry) {
    ck_recipe r;
    double f = -1, rd = -1, wr = -1;
    /* swiglu of [4, 8] bf16 gate/up -> scale -> cast f16 */
    ck_recipe_init(&r);
    int64_t s[] = {4, 8};
    int g = ck_recipe_input(&r, xbuf, CK_DTYPE_BF16, 2, s);
    int u = ck_recipe_input(&r, ybuf, CK_DTYPE_BF16, 2, s);
    ck_step *st = ck_recipe_step(&r, CK_OP_SWIGLU, CK_DTYPE_BF16);
    st->in[0] = g, st->in[1] = u;
    ck_recipe_step(&r, CK_OP_SCALE, CK_DTYPE_BF16)->alpha = 2;
    ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_F16);
    ASSERT_OK(ck_recipe_cost(&r, &f, &rd, &wr));
    double per = ck_op_get(CK_OP_SWIGLU)->flops + ck_op_get(CK_OP_SCALE)->flops +
                 ck_op_get(CK_OP_CAST)->flops;
    ck_assert_double_eq(f, per * 32);
    ck_assert_double_eq(rd, 2 * 32 * 2); /* gate and up once each: nothing in between */
    ck_assert_double_eq(wr, 32 * 2);

    /* linear 6x16 . (10x16)^T + b: 2 M N K + M N flops */
    ck_recipe_init(&r);
    int64_t xs[] = {6, 16}, ws[] = {10, 16}, bs[] = {10};
    int x = ck_recipe_input(&r, xbuf, CK_DTYPE_F32, 2, xs);
    int w = ck_recipe_input(&r, wbuf, CK_DTYPE_F32, 2, ws);
    int b = ck_recipe_input(&r, ybuf, CK_DTYPE_F32, 1, bs);
    st = ck_recipe_step(&r, CK_OP_LINEAR, CK_DTYPE_F32);
    st->in[0] = x, st->in[1] = w, st->in[2] = b;
    ASSERT_OK(ck_recipe_cost(&r, &f, &rd, &wr));
    ck_assert_double_eq(f, 2.0 * 6 * 10 * 16 + 6 * 10);
    ck_assert_double_eq(rd, 4.0 * (6 * 16 + 10 * 16 + 10));
    ck_assert_double_eq(wr, 4.0 * 6 * 10);
    ASSERT_OK(ck_recipe_cost(&r, NULL, NULL, NULL));

    /* a dropout mask reads nothing */
    ck_recipe_init(&r);
    int like = ck_recipe_input(&r, NULL, CK_DTYPE_F32, 2, xs);
    ck_recipe_step(&r, CK_OP_DROPOUT_MASK, CK_DTYPE_U8)->in[0] = like;
    ASSERT_OK(ck_recipe_cost(&r, &f, &rd, &wr));
    ck_assert_double_eq(rd, 0);
    ck_assert_double_eq(wr, 96);
    ck_assert_double_eq(f, ck_op_get(CK_OP_DROPOUT_MASK)->flops * 96);
    r.steps[0].p = 2;
    ck_assert_int_eq(ck_recipe_cost(&r, &f, &rd, &wr), CK_ERR_INVALID);
}
END_TEST

START_TEST(plan_vector_path_needs_alignment) {
    static _Alignas(16) float a[64], o[64];
    ck_recipe r;
    ck__plan pl;
    ck_recipe_init(&r);
    int64_t s[] = {60};
    ck_recipe_step(&r, CK_OP_RELU, CK_DTYPE_F32)->in[0] = ck_recipe_input(&r, a, CK_DTYPE_F32, 1, s);
    ASSERT_OK(ck__plan_build(&r, o, sizeof o, &pl));
    ck_assert_int_eq(pl.kind, CK_PLAN_EW);
    ck_assert_int_eq(pl.vec, 1);
    ck_assert_int_eq(pl.n, 60);
    ck_assert_uint_eq(pl.bytes, 2 * 60 * 4);
    ASSERT_OK(ck__plan_build(&r, o + 1, sizeof o - 4, &pl));
    ck_assert_int_eq(pl.vec, 0);
    r.inputs[0].data = a + 2;
    ASSERT_OK(ck__plan_build(&r, o, sizeof o, &pl));
    ck_assert_int_eq(pl.vec, 0);
    /* a norm over rows of 6 cannot use whole vectors per row */
    ck_recipe_init(&r);
    int64_t ns[] = {10, 6};
    ck_recipe_step(&r, CK_OP_RMSNORM, CK_DTYPE_F32)->in[0] = ck_recipe_input(&r, a, CK_DTYPE_F32, 2, ns);
    ASSERT_OK(ck__plan_build(&r, o, sizeof o, &pl));
    ck_assert_int_eq(pl.kind, CK_PLAN_NORM);
    ck_assert_int_eq(pl.vec, 0);
    ck_assert(pl.rows == 10 && pl.cols == 6);
    /* out too small, out NULL */
    ck_assert_int_eq(ck__plan_build(&r, o, 59 * 4, &pl), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "out_bytes 236 is less than the result's 240"));
    ck_assert_int_eq(ck__plan_build(&r, NULL, sizeof o, &pl), CK_ERR_INVALID);
}
END_TEST

START_TEST(in_place_only_for_the_same_tensor) {
    float a[16];
    for (int i = 0; i < 16; i++) a[i] = (float)i - 8;
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t s[] = {16};
    ck_recipe_step(&r, CK_OP_RELU, CK_DTYPE_F32)->in[0] = ck_recipe_input(&r, a, CK_DTYPE_F32, 1, s);
    ASSERT_OK(ck_replay_host(&r, a, sizeof a));
    for (int i = 0; i < 16; i++) ck_assert(a[i] == (i < 8 ? 0.0f : (float)i - 8));
    /* shifted by one element: a race on a GPU, refused everywhere */
    r.inputs[0].shape[0] = 15;
    ck_assert_int_eq(ck_replay_host(&r, a + 1, 15 * 4), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "overlaps"));
    /* a cast that changes the element size in place: refused */
    r.inputs[0].shape[0] = 8;
    r.steps[0].op = CK_OP_CAST;
    r.steps[0].dtype = CK_DTYPE_BF16;
    ck_assert_int_eq(ck_replay_host(&r, a, 16), CK_ERR_INVALID);
}
END_TEST

/* ---- ck_replay on a host pool ------------------------------------------ */

static void fill(float *p, int n, float base) {
    for (int i = 0; i < n; i++) p[i] = base + 0.25f * (float)(i % 13) - 1.5f;
}

START_TEST(replay_runs_in_stream_order) {
    ck_pool *p = host_pool(NULL);
    ck_stream s;
    ASSERT_OK(ck_stream_create(p, &s));
    enum { N = 1000 };
    float *x, *up, *out;
    ASSERT_OK(ck_malloc(p, (void **)&x, N * 4, s));
    ASSERT_OK(ck_malloc(p, (void **)&up, N * 4, s));
    ASSERT_OK(ck_malloc(p, (void **)&out, N * 2, s));
    fill(x, N, 0), fill(up, N, 1);
    memset(out, 0, N * 2);
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {10, 100};
    int g = ck_recipe_input(&r, x, CK_DTYPE_F32, 2, sh);
    int u = ck_recipe_input(&r, up, CK_DTYPE_F32, 2, sh);
    ck_step *st = ck_recipe_step(&r, CK_OP_SWIGLU, CK_DTYPE_F32);
    st->in[0] = g, st->in[1] = u;
    ck_recipe_step(&r, CK_OP_CAST, CK_DTYPE_BF16);

    /* queued behind a held copy: nothing written until the stream moves */
    static unsigned char sink[1 << 12];
    gate_create();
    gate_block(p, s, sink);
    ASSERT_OK(ck_replay(p, &r, out, N * 2, s));
    uint16_t zero[N] = {0};
    ck_assert_int_eq(memcmp(out, zero, sizeof zero), 0);
    gate_release();
    ASSERT_OK(ck_stream_synchronize(p, s));
    gate_destroy();

    uint16_t want[N];
    ASSERT_OK(ck_replay_host(&r, want, sizeof want));
    ck_assert_int_eq(memcmp(out, want, sizeof want), 0);
    ck_assert_int_ne(memcmp(out, zero, sizeof zero), 0);

    /* a view inside an allocation is resident too; so is memory outside the pool */
    float *outside = malloc(N * 4);
    fill(outside, N, 3);
    r.inputs[u].data = outside;
    r.inputs[g].data = x;
    ASSERT_OK(ck_replay(p, &r, out, N * 2, s));
    int64_t half[] = {5, 100};
    r.inputs[g].data = x + 500, r.inputs[u].data = up + 500;
    memcpy(r.inputs[g].shape, half, sizeof half), memcpy(r.inputs[u].shape, half, sizeof half);
    ASSERT_OK(ck_replay(p, &r, (uint16_t *)out + 500, N, s));
    ASSERT_OK(ck_stream_synchronize(p, s));
    free(outside);

    ASSERT_OK(ck_free(p, x, s));
    ASSERT_OK(ck_free(p, up, s));
    ASSERT_OK(ck_free(p, out, s));
    ASSERT_OK(ck_stream_destroy(p, s));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(replay_refuses_non_resident_inputs) {
    ck_pool *p = host_pool(NULL);
    enum { N = 4096 };
    float *x, *gone, *out, *spacer; /* x + 8 must not run into out */
    ASSERT_OK(ck_malloc(p, (void **)&x, N * 4, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&spacer, N * 4, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&gone, 8 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&out, N * 4, NULL));
    fill(x, N, 0);
    for (int i = 0; i < N; i++) out[i] = 42;
    ASSERT_OK(ck_free(p, gone, NULL));
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {N};
    int a = ck_recipe_input(&r, x, CK_DTYPE_F32, 1, sh);
    int b = ck_recipe_input(&r, gone, CK_DTYPE_F32, 1, sh);
    ck_step *st = ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32);
    st->in[0] = a, st->in[1] = b;

    ck_assert_int_eq(ck_replay(p, &r, out, N * 4, NULL), CK_ERR_NOT_OWNED);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "input 1"));
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "not inside a live allocation"));
    /* past the end of a live allocation */
    r.inputs[b].data = x + 8;
    ck_assert_int_eq(ck_replay(p, &r, out, N * 4, NULL), CK_ERR_NOT_OWNED);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "runs past the end"));
    /* the output is checked too */
    r.inputs[b].data = x;
    ck_assert_int_eq(ck_replay(p, &r, gone, N * 4, NULL), CK_ERR_NOT_OWNED);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "out"));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (int i = 0; i < N; i++) ck_assert(out[i] == 42); /* nothing was queued */
    /* bad arguments */
    ck_assert_int_eq(ck_replay(NULL, &r, out, N * 4, NULL), CK_ERR_INVALID);
    ck_assert_int_eq(ck_replay(p, NULL, out, N * 4, NULL), CK_ERR_INVALID);
    ck_assert_int_eq(ck_replay(p, &r, out, N * 4 - 1, NULL), CK_ERR_INVALID);
    ASSERT_OK(ck_replay(p, &r, out, N * 4, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (int i = 0; i < N; i++) ck_assert(out[i] == x[i] + x[i]);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Small allocations live inside shared pages: a view into one is found by
 * probing, and one freed neighbour does not make the other look gone. */
START_TEST(replay_small_blocks) {
    ck_pool *p = host_pool(NULL);
    float *blk[6];
    for (int i = 0; i < 6; i++) ASSERT_OK(ck_malloc(p, (void **)&blk[i], 2048, NULL));
    ASSERT_OK(ck_free(p, blk[2], NULL));
    for (int i = 0; i < 512; i++) blk[3][i] = (float)i;
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t sh[] = {256};
    ck_step *st = ck_recipe_step(&r, CK_OP_SCALE, CK_DTYPE_F32);
    st->in[0] = ck_recipe_input(&r, blk[3] + 256, CK_DTYPE_F32, 1, sh);
    st->alpha = -2;
    ASSERT_OK(ck_replay(p, &r, blk[4], 1024, NULL));
    r.inputs[0].data = blk[2] + 16;
    ck_assert_int_eq(ck_replay(p, &r, blk[4], 1024, NULL), CK_ERR_NOT_OWNED);
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (int i = 0; i < 256; i++) ck_assert(blk[4][i] == -2.0f * (float)(i + 256));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("replay_api");
    TCase *t = ck_test_tcase(s, "registry", 30);
    tcase_add_test(t, registry_describes_every_op);
    tcase_add_test(t, dtype_names_and_sizes);
    t = ck_test_tcase(s, "recipes", 30);
    tcase_add_test(t, builder_defaults_and_limits);
    tcase_add_test(t, check_gives_result_shape);
    tcase_add_test(t, check_rejects_bad_recipes);
    tcase_add_test(t, cost_follows_registry);
    tcase_add_test(t, plan_vector_path_needs_alignment);
    tcase_add_test(t, in_place_only_for_the_same_tensor);
    t = ck_test_tcase(s, "replay", 60);
    tcase_add_test(t, replay_runs_in_stream_order);
    tcase_add_test(t, replay_refuses_non_resident_inputs);
    tcase_add_test(t, replay_small_blocks);
    return s;
}

int main(void) { return ck_test_run(suite()); }
