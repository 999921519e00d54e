/* Where the cuda backend looks for cuBLASLt (kernels/linear_cublaslt.c):
 * the candidate list's order from the environment, and a linear replay on
 * the stand-in driver finding stand-in libraries (tests/gpu/fake_cublaslt.c)
 * by CKALLOC_CUBLASLT_PATH: a copy whose cublasLtCreate fails is passed
 * over for the next folder's, CKALLOC_CUBLASLT_LIB still wins. The bare
 * sonames come between CKALLOC_CUBLASLT_PATH and the toolkit folders, so
 * what this machine's ld.so finds is never reached by the replay cases. */
#include "testutil.h"

#include "ckalloc/replay.h"
#include "internal.h"
#include "launch.h"

#include <stdlib.h>
#include <string.h>

#define FAKE_DIR CK_TEST_BIN "/tests/gpu/fakecublaslt"
#define LT13 "libcublasLt.so.13"
#define LT12 "libcublasLt.so.12"

static void setup(void) {
    fake_cuda_env();
    unsetenv("CKALLOC_CUBLASLT_LIB");
    unsetenv("CKALLOC_CUBLASLT_PATH");
    unsetenv("CUDA_HOME");
    unsetenv("CUDA_PATH");
    ck__clear_error();
}

static int candidates(char (*names)[CK_LT_NAME], int max) {
    int n = ck__lt_candidates(names, max);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "  candidate %d: %s\n", i, names[i]);
    return n;
}

START_TEST(t_order) {
    /* empty entries and trailing slashes ignored, a folder named twice once */
    setenv("CKALLOC_CUBLASLT_PATH", "/a:/b/::/a/", 1);
    setenv("CUDA_HOME", "/c/", 1);
    setenv("CUDA_PATH", "/c", 1);
    char names[CK_LT_MAX_CANDIDATES][CK_LT_NAME];
    const char *want[] = {"/a/" LT13,         "/a/" LT12,         "/b/" LT13,
                          "/b/" LT12,         LT13,               LT12,
                          "/c/lib64/" LT13,   "/c/lib64/" LT12,   "/usr/local/cuda/lib64/" LT13,
                          "/usr/local/cuda/lib64/" LT12};
    int n = candidates(names, CK_LT_MAX_CANDIDATES);
    ck_assert_int_eq(n, (int)(sizeof want / sizeof *want));
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(names[i], want[i]);
    /* at most max */
    ck_assert_int_eq(candidates(names, 3), 3);
    ck_assert_str_eq(names[2], "/b/" LT13);
}
END_TEST

START_TEST(t_order_default) {
    char names[CK_LT_MAX_CANDIDATES][CK_LT_NAME];
    int n = candidates(names, CK_LT_MAX_CANDIDATES);
    ck_assert_int_eq(n, 4);
    ck_assert_str_eq(names[0], LT13);
    ck_assert_str_eq(names[1], LT12);
    ck_assert_str_eq(names[2], "/usr/local/cuda/lib64/" LT13);
    ck_assert_str_eq(names[3], "/usr/local/cuda/lib64/" LT12);
    /* the toolkit named by CUDA_PATH alone, before the default one */
    setenv("CUDA_PATH", "/opt/cuda-x", 1);
    n = candidates(names, CK_LT_MAX_CANDIDATES);
    ck_assert_int_eq(n, 6);
    ck_assert_str_eq(names[2], "/opt/cuda-x/lib64/" LT13);
    ck_assert_str_eq(names[4], "/usr/local/cuda/lib64/" LT13);
}
END_TEST

/* A linear replay on a fresh cuda pool over the stand-in driver; returns
 * the error (the stand-in cuBLASLt never computes). */
static const char *linear_error(void) {
    static char err[2048];
    ck_pool *p = pool_from_conf("backend=cuda,va=1G");
    enum { M = 16, K = 64, N = 32 };
    void *x = NULL, *w = NULL, *out = NULL;
    ASSERT_OK(ck_malloc(p, &x, M * K * 4, NULL));
    ASSERT_OK(ck_malloc(p, &w, N * K * 4, NULL));
    ASSERT_OK(ck_malloc(p, &out, M * N * 4, NULL));
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t shx[] = {M, K}, shw[] = {N, K};
    ck_step *st = ck_recipe_step(&r, CK_OP_LINEAR, CK_DTYPE_F32);
    st->in[0] = ck_recipe_input(&r, x, CK_DTYPE_F32, 2, shx);
    st->in[1] = ck_recipe_input(&r, w, CK_DTYPE_F32, 2, shw);
    ck_assert_int_eq(ck_replay(p, &r, out, M * N * 4, NULL), CK_ERR_BACKEND);
    snprintf(err, sizeof err, "%s", ck_last_error());
    ASSERT_OK(ck_pool_destroy(p));
    return err;
}

START_TEST(t_path_passes_over_unusable) {
    /* fail's cublasLtCreate fails: the next folder's copy is the one used */
    setenv("CKALLOC_CUBLASLT_PATH", "/nonexistent/ckalloc-test:" FAKE_DIR "/fail:" FAKE_DIR "/ok", 1);
    const char *e = linear_error();
    ck_assert_msg(strstr(e, "cublasLtMatmulDescCreate failed: fake cuBLASLt ok"), "error: %s", e);
}
END_TEST

START_TEST(t_path_first_wins) {
    /* ok before fail: ok, and CUDA_HOME's folder (fail again) never reached */
    setenv("CKALLOC_CUBLASLT_PATH", FAKE_DIR "/ok", 1);
    setenv("CUDA_HOME", FAKE_DIR "/fail", 1);
    const char *e = linear_error();
    ck_assert_msg(strstr(e, "fake cuBLASLt ok") && !strstr(e, "fake cuBLASLt fail"), "error: %s", e);
}
END_TEST

START_TEST(t_env_file_wins) {
    setenv("CKALLOC_CUBLASLT_PATH", FAKE_DIR "/ok", 1);
    setenv("CKALLOC_CUBLASLT_LIB", FAKE_DIR "/fail/" LT13, 1);
    const char *e = linear_error();
    ck_assert_msg(strstr(e, "from CKALLOC_CUBLASLT_LIB") && strstr(e, "cannot be used") &&
                      strstr(e, "cublasLtCreate failed: fake cuBLASLt fail"),
                  "error: %s", e);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cublaslt_search");
    TCase *tc = ck_test_tcase(s, "search", 60);
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, t_order);
    tcase_add_test(tc, t_order_default);
    tcase_add_test(tc, t_path_passes_over_unusable);
    tcase_add_test(tc, t_path_first_wins);
    tcase_add_test(tc, t_env_file_wins);
    return s;
}

int main(void) {
    setenv("CKALLOC_CUDA_LIB", CK_FAKECUDA_LIB, 1);
    return ck_test_run(suite());
}
