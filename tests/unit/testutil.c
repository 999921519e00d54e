#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ck_pool *pool_from_conf(const char *conf) {
    ck_pool *p = NULL;
    ASSERT_OK(ck_pool_create_conf(&p, conf));
    return p;
}

ck_pool *host_pool(const char *extra) {
    char conf[256];
    snprintf(conf, sizeof conf, "backend=host,host_mem=2G%s%s", extra ? "," : "",
             extra ? extra : "");
    return pool_from_conf(conf);
}

ck_stats stats_of(ck_pool *p) {
    ck_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    ASSERT_OK(ck_get_stats(p, &st));
    return st;
}

void fake_cuda_env(void) {
    static const char *const vars[] = {
        "CKFAKECUDA_DEVICES",    "CKFAKECUDA_TOTAL_MEM",   "CKFAKECUDA_FAIL_CREATE",
        "CKFAKECUDA_FAIL_MAP",   "CKFAKECUDA_FAIL_ACCESS", "CKFAKECUDA_FAIL_CODE",
        "CKFAKECUDA_FD_HANDLES", "CKFAKECUDA_NO_VMM",      "CKFAKECUDA_NOT_READY",
        "CKFAKECUDA_CAPTURING",
    };
    setenv("CKALLOC_CUDA_LIB", CK_FAKECUDA_LIB, 1);
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

char *temp_path(const char *prefix) {
    const char *dir = getenv("TMPDIR");
    char *path = malloc(4096);
    ck_assert_ptr_nonnull(path);
    snprintf(path, 4096, "%s/%s_XXXXXX", dir && *dir ? dir : "/tmp", prefix);
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    return path;
}

TCase *ck_test_tcase(Suite *s, const char *name, double timeout) {
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, timeout);
    suite_add_tcase(s, tc);
    return tc;
}

int ck_test_run(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
