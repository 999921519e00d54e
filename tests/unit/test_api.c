/* The public API's surface: version, status names, the error sentence, NULL
 * arguments on every entry point, option defaults and struct_size checks. */
#include "testutil.h"

#include "ckalloc/ckalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* expr fails with want, and the error sentence contains each of the words. */
#define ASSERT_FAILS(expr, want, ...)                                                         \
    do {                                                                                      \
        ck_status st_ = (expr);                                                               \
        ck_assert_msg(st_ == (want), "%s gave %s, expected %s (%s)", #expr, ck_status_str(st_), \
                      ck_status_str(want), ck_last_error());                                  \
        const char *words_[] = {__VA_ARGS__};                                                 \
        for (size_t i_ = 0; i_ < sizeof words_ / sizeof words_[0]; i_++)                      \
            ck_assert_msg(strstr(ck_last_error(), words_[i_]) != NULL,                        \
                          "%s: error '%s' does not mention '%s'", #expr, ck_last_error(),     \
                          words_[i_]);                                                        \
    } while (0)

static ck_pool *small_host_pool(void) {
    ck_pool *p = pool_from_conf("backend=host,host_mem=1G");
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Options for a 1 GiB host pool. */
static ck_pool_options host_options(void) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    o.backend = CK_BACKEND_HOST;
    o.host_mem = (uint64_t)1 << 30;
    return o;
}

/* ---- version and status names ------------------------------------------ */

/* One past the end of an allocation is the start of the free remainder
 * beside it: not owned (nobody was handed that address), not a double
 * free; freeing the block itself twice still is one. */
START_TEST(t_free_past_end_not_owned) {
    ck_pool *p = pool_from_conf("backend=host,host_mem=1G");
    void *small, *large;
    ASSERT_OK(ck_malloc(p, &small, 4096, NULL));
    ASSERT_OK(ck_malloc(p, &large, 3 * MiB, NULL));
    ASSERT_FAILS(ck_free(p, (char *)small + 4096, NULL), CK_ERR_NOT_OWNED, "ck_free");
    ASSERT_FAILS(ck_free(p, (char *)large + 3 * MiB, NULL), CK_ERR_NOT_OWNED, "ck_free");
    ASSERT_OK(ck_free(p, small, NULL));
    ASSERT_OK(ck_free(p, large, NULL));
    ASSERT_FAILS(ck_free(p, large, NULL), CK_ERR_DOUBLE_FREE, "ck_free", "already freed");
    ck_status st = ck_free(p, small, NULL);
    ck_assert_msg(st == CK_ERR_DOUBLE_FREE || st == CK_ERR_NOT_OWNED, "second free of small: %s",
                  ck_status_str(st));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_version) {
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", CKALLOC_VERSION_MAJOR, CKALLOC_VERSION_MINOR,
             CKALLOC_VERSION_PATCH);
    ck_assert_ptr_nonnull(ck_version());
    ck_assert_str_eq(ck_version(), want);
    ck_assert_int_eq(CKALLOC_VERSION, CKALLOC_VERSION_MAJOR * 10000 + CKALLOC_VERSION_MINOR * 100 +
                                          CKALLOC_VERSION_PATCH);
}
END_TEST

START_TEST(t_status_str) {
    static const struct {
        ck_status s;
        const char *name;
    } all[] = {
        {CK_OK, "CK_OK"},
        {CK_ERR_INVALID, "CK_ERR_INVALID"},
        {CK_ERR_NOMEM, "CK_ERR_NOMEM"},
        {CK_ERR_NOT_OWNED, "CK_ERR_NOT_OWNED"},
        {CK_ERR_DOUBLE_FREE, "CK_ERR_DOUBLE_FREE"},
        {CK_ERR_NO_DEVICE, "CK_ERR_NO_DEVICE"},
        {CK_ERR_BACKEND, "CK_ERR_BACKEND"},
        {CK_ERR_IO, "CK_ERR_IO"},
        {CK_ERR_NOT_READY, "CK_ERR_NOT_READY"},
    };
    size_t n = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n; i++) {
        ck_assert_ptr_nonnull(ck_status_str(all[i].s));
        ck_assert_str_eq(ck_status_str(all[i].s), all[i].name);
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(ck_status_str(all[i].s), ck_status_str(all[j].s));
    }
    /* A value outside the enum still gets a string, distinct from every real one. */
    const char *unk = ck_status_str((ck_status)999);
    ck_assert_ptr_nonnull(unk);
    for (size_t i = 0; i < n; i++) ck_assert_str_ne(unk, all[i].name);
}
END_TEST

/* ---- the error sentence ------------------------------------------------- */

static void *fresh_thread_error(void *arg) {
    (void)arg;
    return (void *)(strcmp(ck_last_error(), "") == 0 ? (uintptr_t)1 : (uintptr_t)0);
}

START_TEST(t_last_error_thread_local) {
    ck_pool *p = small_host_pool();
    void *x = NULL;
    ASSERT_FAILS(ck_malloc(p, &x, 0, NULL), CK_ERR_INVALID, "ck_malloc", "size");
    ck_assert_str_ne(ck_last_error(), "");
    /* Another thread has its own (empty) sentence. */
    pthread_t t;
    void *ret = NULL;
    ck_assert_int_eq(pthread_create(&t, NULL, fresh_thread_error, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &ret), 0);
    ck_assert_msg(ret == (void *)(uintptr_t)1, "a new thread's ck_last_error() is not empty");
    /* Ours is still there. */
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "ck_malloc"));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_errors_name_problem) {
    ck_pool *p = small_host_pool();
    void *x = NULL;
    ASSERT_FAILS(ck_malloc(p, &x, 0, NULL), CK_ERR_INVALID, "ck_malloc", "0");
    ASSERT_FAILS(ck_malloc(p, &x, (size_t)1 << 50, NULL), CK_ERR_INVALID, "ck_malloc", "size");
    int local = 0;
    ASSERT_FAILS(ck_free(p, &local, NULL), CK_ERR_NOT_OWNED, "ck_free", "not allocated");
    ASSERT_OK(ck_malloc(p, &x, 4096, NULL));
    ASSERT_FAILS(ck_free(p, (char *)x + 512, NULL), CK_ERR_NOT_OWNED, "ck_free");
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_FAILS(ck_free(p, x, NULL), CK_ERR_DOUBLE_FREE, "ck_free", "already freed");
    ASSERT_FAILS(ck_record_stream(p, &local, NULL), CK_ERR_NOT_OWNED, "ck_record_stream");
    ck_pool_options o;
    ck_pool_options_init(&o);
    ASSERT_FAILS(ck_options_parse(&o, "nosuchkey=1"), CK_ERR_INVALID, "nosuchkey");
    ck_pool *q = NULL;
    ASSERT_FAILS(ck_pool_create_conf(&q, "backend=host,budget=lots"), CK_ERR_INVALID, "budget",
                 "lots");
    ck_assert_ptr_null(q);
    ck_stats st;
    st.struct_size = 0;
    ASSERT_FAILS(ck_get_stats(p, &st), CK_ERR_INVALID, "ck_get_stats", "struct_size");
    ASSERT_FAILS(ck_print_stats(p, stdout, (ck_format)7), CK_ERR_INVALID, "ck_print_stats",
                 "format");
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- NULL arguments ----------------------------------------------------- */

START_TEST(t_null_arguments) {
    ck_pool *p = small_host_pool();
    ck_stream s = NULL;
    ck_event e = NULL;
    ASSERT_OK(ck_stream_create(p, &s));
    ASSERT_OK(ck_event_create(p, &e));
    void *x = NULL;
    ASSERT_OK(ck_malloc(p, &x, 1024, NULL));
    char buf[64];
    float ms = 0;
    ck_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    ck_pool_options o;
    ck_pool_options_init(&o);
    ck_pool *q = NULL;

    /* options and pools */
    ASSERT_FAILS(ck_options_parse(NULL, "backend=host"), CK_ERR_INVALID, "ck_options_parse");
    ASSERT_FAILS(ck_pool_create(NULL, &o), CK_ERR_INVALID, "ck_pool_create");
    ASSERT_FAILS(ck_pool_create_conf(NULL, "backend=host"), CK_ERR_INVALID,
                 "ck_pool_create_conf");

    /* allocation */
    ASSERT_FAILS(ck_malloc(NULL, &x, 16, NULL), CK_ERR_INVALID, "ck_malloc", "pool");
    ASSERT_FAILS(ck_malloc(p, NULL, 16, NULL), CK_ERR_INVALID, "ck_malloc", "ptr");
    ASSERT_FAILS(ck_free(NULL, x, NULL), CK_ERR_INVALID, "ck_free", "pool");
    ASSERT_FAILS(ck_record_stream(NULL, x, s), CK_ERR_INVALID, "ck_record_stream", "pool");
    ASSERT_FAILS(ck_record_stream(p, NULL, s), CK_ERR_INVALID, "ck_record_stream", "NULL");
    ASSERT_FAILS(ck_trim(NULL, NULL), CK_ERR_INVALID, "ck_trim", "pool");

    /* statistics */
    ASSERT_FAILS(ck_get_stats(NULL, &st), CK_ERR_INVALID, "ck_get_stats", "pool");
    ASSERT_FAILS(ck_get_stats(p, NULL), CK_ERR_INVALID, "ck_get_stats", "stats");
    ASSERT_FAILS(ck_reset_peak_stats(NULL), CK_ERR_INVALID, "ck_reset_peak_stats");
    ASSERT_FAILS(ck_print_stats(NULL, stdout, CK_FORMAT_JSON), CK_ERR_INVALID, "ck_print_stats",
                 "pool");
    ASSERT_FAILS(ck_print_stats(p, NULL, CK_FORMAT_JSON), CK_ERR_INVALID, "ck_print_stats", "out");

    /* streams and events */
    ASSERT_FAILS(ck_stream_create(NULL, &s), CK_ERR_INVALID, "ck_stream_create");
    ASSERT_FAILS(ck_stream_create(p, NULL), CK_ERR_INVALID, "ck_stream_create");
    ASSERT_FAILS(ck_stream_destroy(NULL, s), CK_ERR_INVALID, "ck_stream_destroy");
    ASSERT_FAILS(ck_stream_destroy(p, NULL), CK_ERR_INVALID, "ck_stream_destroy");
    ASSERT_FAILS(ck_stream_synchronize(NULL, s), CK_ERR_INVALID, "ck_stream_synchronize");
    ASSERT_FAILS(ck_stream_wait_event(NULL, s, e), CK_ERR_INVALID, "ck_stream_wait_event");
    ASSERT_FAILS(ck_stream_wait_event(p, s, NULL), CK_ERR_INVALID, "ck_stream_wait_event");
    ASSERT_FAILS(ck_event_create(NULL, &e), CK_ERR_INVALID, "ck_event_create");
    ASSERT_FAILS(ck_event_create(p, NULL), CK_ERR_INVALID, "ck_event_create");
    ASSERT_FAILS(ck_event_destroy(NULL, e), CK_ERR_INVALID, "ck_event_destroy");
    ASSERT_FAILS(ck_event_destroy(p, NULL), CK_ERR_INVALID, "ck_event_destroy");
    ASSERT_FAILS(ck_event_record(NULL, e, s), CK_ERR_INVALID, "ck_event_record");
    ASSERT_FAILS(ck_event_record(p, NULL, s), CK_ERR_INVALID, "ck_event_record");
    ASSERT_FAILS(ck_event_query(NULL, e), CK_ERR_INVALID, "ck_event_query");
    ASSERT_FAILS(ck_event_query(p, NULL), CK_ERR_INVALID, "ck_event_query");
    ASSERT_FAILS(ck_event_synchronize(NULL, e), CK_ERR_INVALID, "ck_event_synchronize");
    ASSERT_FAILS(ck_event_synchronize(p, NULL), CK_ERR_INVALID, "ck_event_synchronize");
    ASSERT_FAILS(ck_event_elapsed_ms(NULL, e, e, &ms), CK_ERR_INVALID, "ck_event_elapsed_ms");
    ASSERT_FAILS(ck_event_elapsed_ms(p, NULL, e, &ms), CK_ERR_INVALID, "ck_event_elapsed_ms");
    ASSERT_FAILS(ck_event_elapsed_ms(p, e, NULL, &ms), CK_ERR_INVALID, "ck_event_elapsed_ms");
    ASSERT_FAILS(ck_event_elapsed_ms(p, e, e, NULL), CK_ERR_INVALID, "ck_event_elapsed_ms");
    ASSERT_FAILS(ck_memcpy_async(NULL, x, buf, 16, s), CK_ERR_INVALID, "ck_memcpy_async");
    ASSERT_FAILS(ck_memcpy_async(p, NULL, buf, 16, s), CK_ERR_INVALID, "ck_memcpy_async");
    ASSERT_FAILS(ck_memcpy_async(p, x, NULL, 16, s), CK_ERR_INVALID, "ck_memcpy_async");
    ASSERT_FAILS(ck_memset_async(NULL, x, 0, 16, s), CK_ERR_INVALID, "ck_memset_async");
    ASSERT_FAILS(ck_memset_async(p, NULL, 0, 16, s), CK_ERR_INVALID, "ck_memset_async");

    /* None of the above changed the pool: the block is still live, nothing else is. */
    ASSERT_OK(ck_get_stats(p, &st));
    ck_assert_int_eq(st.allocation.current, 1);
    ck_assert_int_eq(st.requested_bytes.current, 1024);

    /* What may legitimately be NULL: trim's out-parameter and options to pool create. */
    ASSERT_OK(ck_trim(p, NULL));
    /* NULL options mean backend=auto: a CUDA device, or a clear failure that
     * points at backend=host (never host memory the caller did not ask for). */
    ck_status cs = ck_pool_create(&q, NULL);
    if (cs == CK_OK) {
        ck_assert_str_eq(ck_pool_backend(q), "cuda");
        ASSERT_OK(ck_pool_destroy(q));
    } else {
        ck_assert_int_eq(cs, CK_ERR_NO_DEVICE);
        ck_assert_ptr_nonnull(strstr(ck_last_error(), "set backend=host"));
    }

    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_event_destroy(p, e));
    ASSERT_OK(ck_stream_destroy(p, s));
    ASSERT_OK(ck_pool_destroy(p));
    (void)q;
}
END_TEST

/* ck_free(pool, NULL, stream) succeeds and does nothing, as free(NULL) and
 * cudaFree(NULL) do, on the default stream and on a stream of the pool; a NULL
 * pool is still CK_ERR_INVALID. */
START_TEST(t_free_null_ptr) {
    ck_pool *p = small_host_pool();
    ck_stream s = NULL;
    ASSERT_OK(ck_stream_create(p, &s));
    void *x = NULL;
    ASSERT_OK(ck_malloc(p, &x, 4096, s));
    ck_stats before, after;
    memset(&before, 0, sizeof before);
    before.struct_size = sizeof before;
    after = before;
    ASSERT_OK(ck_get_stats(p, &before));

    ck_status st = ck_free(p, NULL, NULL);
    ck_assert_msg(st == CK_OK, "ck_free(p, NULL, NULL) gave %s (%s), expected CK_OK",
                  ck_status_str(st), ck_last_error());
    st = ck_free(p, NULL, s);
    ck_assert_msg(st == CK_OK, "ck_free(p, NULL, s) gave %s (%s), expected CK_OK",
                  ck_status_str(st), ck_last_error());

    /* Nothing was freed or counted: the live block is untouched. */
    ASSERT_OK(ck_get_stats(p, &after));
    ck_assert_int_eq(after.allocation.current, before.allocation.current);
    ck_assert_uint_eq(after.allocation.freed, before.allocation.freed);
    ck_assert_int_eq(after.active.current, before.active.current);
    ck_assert_int_eq(after.requested_bytes.current, 4096);

    ASSERT_FAILS(ck_free(NULL, NULL, NULL), CK_ERR_INVALID, "ck_free", "pool");
    ASSERT_OK(ck_free(p, x, s));
    ASSERT_OK(ck_stream_destroy(p, s));
    /* A stale stream is refused even with nothing to free: every call that
     * takes a stream checks it. */
    ASSERT_FAILS(ck_free(p, NULL, s), CK_ERR_INVALID, "ck_free", "destroyed");
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* The brief for this suite: a NULL pool is CK_ERR_INVALID on every public
 * function that returns a status, ck_pool_destroy included. */
START_TEST(t_destroy_null_pool) {
    ck_status st = ck_pool_destroy(NULL);
    ck_assert_msg(st == CK_ERR_INVALID, "ck_pool_destroy(NULL) gave %s, expected CK_ERR_INVALID",
                  ck_status_str(st));
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "ck_pool_destroy"));
}
END_TEST

START_TEST(t_backend_name_null_pool) {
    /* No status to return: it must still give a string, and not "host"/"cuda". */
    const char *n = ck_pool_backend(NULL);
    ck_assert_ptr_nonnull(n);
    ck_assert_str_ne(n, "host");
    ck_assert_str_ne(n, "cuda");
}
END_TEST

/* ---- options ------------------------------------------------------------ */

START_TEST(t_options_defaults) {
    ck_pool_options o;
    memset(&o, 0xA5, sizeof o);
    ck_pool_options_init(&o);
    ck_assert_uint_eq(o.struct_size, sizeof(ck_pool_options));
    ck_assert_int_eq(o.backend, CK_BACKEND_AUTO);
    ck_assert_int_eq(o.device, 0);
    ck_assert_uint_eq(o.budget, 0);
    ck_assert_uint_eq(o.va_size, 0);
    ck_assert_int_eq(o.release, CK_RELEASE_PRESSURE);
    ck_assert_ptr_null(o.trace_path);
    ck_assert_uint_eq(o.host_mem, 0);
    ck_assert_uint_eq(o.fault_create, 0);
    ck_assert_uint_eq(o.fault_map, 0);
    ck_assert_uint_eq(o.fault_copy, 0);
    ck_assert_int_eq(o.sim_clock, 0);
    ck_assert(o.sim_bandwidth == 0.0);
    ck_pool_options_init(NULL); /* must not crash */
}
END_TEST

START_TEST(t_create_struct_size) {
    ck_pool_options o = host_options();
    ck_pool *p = (ck_pool *)&o; /* must stay untouched on failure */
    ck_pool *const sentinel = p;

    o.struct_size = 0;
    ASSERT_FAILS(ck_pool_create(&p, &o), CK_ERR_INVALID, "struct_size");
    ck_assert_ptr_eq(p, sentinel);
    o.struct_size = sizeof o + 8;
    ASSERT_FAILS(ck_pool_create(&p, &o), CK_ERR_INVALID, "struct_size");
    ck_assert_ptr_eq(p, sentinel);

    /* Bad enum values are refused too. */
    o.struct_size = sizeof o;
    o.backend = (ck_backend_kind)42;
    ASSERT_FAILS(ck_pool_create(&p, &o), CK_ERR_INVALID, "backend");
    o.backend = CK_BACKEND_HOST;
    o.release = (ck_release)42;
    ASSERT_FAILS(ck_pool_create(&p, &o), CK_ERR_INVALID, "release");
    o.release = CK_RELEASE_PRESSURE;
    ck_assert_ptr_eq(p, sentinel);

    /* An older, shorter struct: fields past struct_size take their defaults. */
    o.struct_size = offsetof(ck_pool_options, host_mem);
    o.budget = 64u << 20;
    ASSERT_OK(ck_pool_create(&p, &o));
    ck_assert_ptr_ne(p, sentinel);
    ck_assert_str_eq(ck_pool_backend(p), "host");
    ck_stats st;
    st.struct_size = sizeof st;
    ASSERT_OK(ck_get_stats(p, &st));
    ck_assert_uint_eq(st.budget, 64u << 20);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_backend_host) {
    ck_pool_options o = host_options();
    ck_pool *p = NULL;
    ASSERT_OK(ck_pool_create(&p, &o));
    ck_assert_ptr_nonnull(p);
    ck_assert_str_eq(ck_pool_backend(p), "host");
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

int main(void) {
    Suite *s = suite_create("api");
    TCase *tc = ck_test_tcase(s, "api", 60);
    tcase_add_test(tc, t_version);
    tcase_add_test(tc, t_free_past_end_not_owned);
    tcase_add_test(tc, t_status_str);
    tcase_add_test(tc, t_last_error_thread_local);
    tcase_add_test(tc, t_errors_name_problem);
    tcase_add_test(tc, t_null_arguments);
    tcase_add_test(tc, t_free_null_ptr);
    tcase_add_test(tc, t_destroy_null_pool);
    tcase_add_test(tc, t_backend_name_null_pool);
    tcase_add_test(tc, t_options_defaults);
    tcase_add_test(tc, t_create_struct_size);
    tcase_add_test(tc, t_backend_host);
    return ck_test_run(s);
}
