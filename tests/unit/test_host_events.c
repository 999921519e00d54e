/* Host backend events: destroying an event while other streams still have a
 * record or a wait on it queued is legal (as in CUDA) and must neither crash
 * nor lose the ordering the wait gives. */
#include "testutil.h"

#include <ckalloc/ckalloc.h>
#include <string.h>

START_TEST(t_destroy_event_with_queued_wait) {
    ck_pool *p;
    ck_assert_int_eq(ck_pool_create_conf(&p, "backend=host"), CK_OK);
    ck_stream a, b;
    ck_assert_int_eq(ck_stream_create(p, &a), CK_OK);
    ck_assert_int_eq(ck_stream_create(p, &b), CK_OK);
    enum { N = 64 << 20 };
    void *src, *mid, *dst;
    ck_assert_int_eq(ck_malloc(p, &src, N, a), CK_OK);
    ck_assert_int_eq(ck_malloc(p, &mid, N, a), CK_OK);
    ck_assert_int_eq(ck_malloc(p, &dst, N, b), CK_OK);
    memset(src, 0x5a, N);
    memset(dst, 0, N);
    for (int round = 0; round < 20; round++) {
        ck_event e;
        ck_assert_int_eq(ck_event_create(p, &e), CK_OK);
        /* a: a long copy then the record; b: waits, then copies on. */
        ck_assert_int_eq(ck_memcpy_async(p, mid, src, N, a), CK_OK);
        ck_assert_int_eq(ck_event_record(p, e, a), CK_OK);
        ck_assert_int_eq(ck_stream_wait_event(p, b, e), CK_OK);
        ck_assert_int_eq(ck_memcpy_async(p, dst, mid, N, b), CK_OK);
        ck_assert_int_eq(ck_event_destroy(p, e), CK_OK); /* record and wait still queued */
        ck_assert_int_eq(ck_stream_synchronize(p, b), CK_OK);
        ck_assert_int_eq(((unsigned char *)dst)[N - 1], 0x5a);
        ck_assert_int_eq(((unsigned char *)dst)[0], 0x5a);
        memset(dst, 0, N);
        memset(mid, 0, N);
    }
    ck_assert_int_eq(ck_free(p, src, a), CK_OK);
    ck_assert_int_eq(ck_free(p, mid, a), CK_OK);
    ck_assert_int_eq(ck_free(p, dst, b), CK_OK);
    ck_assert_int_eq(ck_stream_destroy(p, a), CK_OK);
    ck_assert_int_eq(ck_stream_destroy(p, b), CK_OK);
    ck_assert_int_eq(ck_pool_destroy(p), CK_OK);
}
END_TEST

int main(void) {
    Suite *s = suite_create("host_events");
    TCase *tc = ck_test_tcase(s, "events", 120);
    tcase_add_test(tc, t_destroy_event_with_queued_wait);
    return ck_test_run(s);
}
