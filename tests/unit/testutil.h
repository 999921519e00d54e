/* Helpers shared by the unit tests (defined in testutil.c). */
#ifndef CK_TESTUTIL_H
#define CK_TESTUTIL_H
#include <check.h>
#include <stddef.h>

#include "ckalloc/ckalloc.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

/* 1 in a ThreadSanitizer build. TSan cannot start threads in the child of a
 * threaded fork, and a host pool starts one (its default stream): fork tests
 * make no new pool in the child there. */
#if defined(__SANITIZE_THREAD__)
#define CK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CK_TSAN 1
#endif
#endif
#ifndef CK_TSAN
#define CK_TSAN 0
#endif

/* expr must give CK_OK; otherwise the test fails naming expr, the status and
 * the error sentence. */
#define ASSERT_OK(expr)                                                                        \
    do {                                                                                       \
        ck_status st_ = (expr);                                                                \
        ck_assert_msg(st_ == CK_OK, "%s: %s: %s", #expr, ck_status_str(st_), ck_last_error()); \
    } while (0)

/* Hot-path assertions for model tests that make millions of checks: Check
 * writes a record for every assertion that passes, these call into Check
 * only on failure. */
#define REQ(cond)                                                                                  \
    do {                                                                                           \
        if (!(cond)) ck_abort_msg("%s:%d: failed: %s", __FILE__, __LINE__, #cond);                 \
    } while (0)
#define REQM(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond)) ck_abort_msg(__VA_ARGS__);                                                    \
    } while (0)
#define REQ_EQ(a, b)                                                                               \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            ck_abort_msg("%s:%d: %s == %lld, %s == %lld", __FILE__, __LINE__, #a, a_, #b, b_);     \
    } while (0)
#define OK(expr)                                                                                   \
    do {                                                                                           \
        ck_status st_ = (expr);                                                                    \
        if (st_ != CK_OK) ck_abort_msg("%s: %s: %s", #expr, ck_status_str(st_), ck_last_error());  \
    } while (0)

/* A pool created from conf; the test fails if it cannot be. */
ck_pool *pool_from_conf(const char *conf);

/* A host pool, "backend=host,host_mem=2G" plus ",extra" when extra is not NULL. */
ck_pool *host_pool(const char *extra);

/* ck_get_stats with struct_size set to the full struct; the test fails on error. */
ck_stats stats_of(ck_pool *p);

/* Point the cuda backend at the fake libcuda (tests/fakecuda) and clear every
 * CKFAKECUDA_* setting, so a test starts from the fake's defaults. */
void fake_cuda_env(void);

/* An entry point of the fake libcuda (ckfake_launch_get, cuCtxGetCurrent,
 * ...); the test fails if it has none. The library stays loaded for the
 * whole run, so its records survive between pools. */
void *fake_sym(const char *name);
/* A counter the fake exports (ckfake_live_handles, ckfake_launches, ...). */
unsigned long fake_counter(const char *name);

/* A new empty file $TMPDIR/<prefix>_XXXXXX (or under /tmp); the caller frees
 * the returned path and unlinks the file. */
char *temp_path(const char *prefix);

/* A test case named name with the given timeout (seconds), added to s. */
TCase *ck_test_tcase(Suite *s, const char *name, double timeout);

/* Run a Check suite; returns the process exit status. */
int ck_test_run(Suite *s);
/* The gate: hold a stream at a known point (see testutil.c). gate_block
 * queues on s a copy that cannot run until gate_release() (or the timer of
 * gate_release_after(ms), joined by gate_join()). One gate at a time. */
void gate_create(void);
void gate_block(ck_pool *p, ck_stream s, unsigned char *sink);
void gate_release(void);
void gate_release_after(int ms);
void gate_join(void);
void gate_destroy(void);
/* Bytes the gated copy moves into its sink (one page). */
size_t gate_bytes(void);

#endif
