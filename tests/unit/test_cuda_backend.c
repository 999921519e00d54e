/* The cuda backend against tests/fakecuda (a host-memory libcuda), at the
 * vtable level and through a pool: everything in backend_cuda.c except the
 * real driver runs here. */
#include "backend.h"
#include "internal.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Tests may share one process (CK_FORK=no): start each from a clean env. */
static void setup(void) {
    fake_cuda_env();
    ck__clear_error();
}

static void assert_no_leaks(void) {
    ck_assert_uint_eq(fake_counter("ckfake_live_handles"), 0);
    ck_assert_uint_eq(fake_counter("ckfake_live_mappings"), 0);
    ck_assert_uint_eq(fake_counter("ckfake_live_reservations"), 0);
    ck_assert_uint_eq(fake_counter("ckfake_live_streams"), 0);
    ck_assert_uint_eq(fake_counter("ckfake_live_events"), 0);
    ck_assert_uint_eq(fake_counter("ckfake_ctx_refs"), 0);
}

static ck_backend *make_backend(void) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    ck_backend *b = NULL;
    ck_status st = ck__backend_cuda_create(&o, &b);
    ck_assert_msg(st == CK_OK, "create: %s: %s", ck_status_str(st), ck_last_error());
    ck_assert_ptr_nonnull(b);
    return b;
}

#define OPS(b) ((b)->ops)

static void fill_pattern(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 131u + seed * 7u + (i >> 12));
}

/* ---- creation ---------------------------------------------------------- */

START_TEST(t_create_properties) {
    setenv("CKFAKECUDA_TOTAL_MEM", "1073741824", 1);
    ck_backend *b = make_backend();
    ck_assert_str_eq(b->name, "cuda");
    ck_assert_uint_eq(b->granularity, 2 * MiB);
    ck_assert_uint_eq(b->total_mem, (uint64_t)1 << 30);
    ck_assert_int_eq(b->device, 0);
    ck_assert_uint_eq(fake_counter("ckfake_ctx_refs"), 1);
    uint64_t fr = 0, tot = 0;
    ASSERT_OK(OPS(b)->mem_info(b, &fr, &tot));
    ck_assert_uint_eq(tot, (uint64_t)1 << 30);
    ck_assert_uint_eq(fr, tot);
    OPS(b)->destroy(b);
    assert_no_leaks(); /* the primary context was released */
}
END_TEST

START_TEST(t_no_device) {
    setenv("CKFAKECUDA_DEVICES", "0", 1);
    ck_backend *b = NULL;
    ck_status st = ck__backend_cuda_create(NULL, &b);
    ck_assert_int_eq(st, CK_ERR_NO_DEVICE);
    ck_assert_ptr_null(b);
    ck_assert_msg(strstr(ck_last_error(), "no CUDA device") != NULL, "error: %s",
                  ck_last_error());
    ck_assert_int_eq(ck__cuda_available(), 0);
    setenv("CKFAKECUDA_DEVICES", "1", 1);
    ck_assert_int_eq(ck__cuda_available(), 1);
}
END_TEST

START_TEST(t_no_driver) {
    const char *path = "/nonexistent/ckalloc-test/libcuda.so.1";
    setenv("CKALLOC_CUDA_LIB", path, 1);
    ck_backend *b = NULL;
    ck_status st = ck__backend_cuda_create(NULL, &b);
    ck_assert_int_eq(st, CK_ERR_NO_DEVICE);
    ck_assert_ptr_null(b);
    const char *e = ck_last_error();
    ck_assert_msg(strstr(e, "no CUDA driver") && strstr(e, path), "error: %s", e);
    ck_assert_int_eq(ck__cuda_available(), 0);
}
END_TEST

START_TEST(t_not_a_driver) {
    /* A loadable library without the driver's entry points. */
    setenv("CKALLOC_CUDA_LIB", "libm.so.6", 1);
    ck_backend *b = NULL;
    ck_assert_int_eq(ck__backend_cuda_create(NULL, &b), CK_ERR_NO_DEVICE);
    ck_assert_msg(strstr(ck_last_error(), "cuInit") != NULL, "error: %s", ck_last_error());
    ck_assert_int_eq(ck__cuda_available(), 0);
}
END_TEST

START_TEST(t_bad_ordinal) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    ck_backend *b = NULL;
    o.device = 1;
    ck_assert_int_eq(ck__backend_cuda_create(&o, &b), CK_ERR_INVALID);
    ck_assert_msg(strstr(ck_last_error(), "device 1") != NULL, "error: %s", ck_last_error());
    o.device = -1;
    ck_assert_int_eq(ck__backend_cuda_create(&o, &b), CK_ERR_INVALID);
    ck_assert_ptr_null(b);
    /* With two devices, ordinal 1 is fine. */
    setenv("CKFAKECUDA_DEVICES", "2", 1);
    o.device = 1;
    ASSERT_OK(ck__backend_cuda_create(&o, &b));
    ck_assert_int_eq(b->device, 1);
    uintptr_t va;
    ck_phys h;
    ASSERT_OK(OPS(b)->reserve(b, 2 * MiB, &va));
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h));
    ASSERT_OK(OPS(b)->map(b, va, 2 * MiB, 1, &h));
    ASSERT_OK(OPS(b)->unmap(b, va, 2 * MiB));
    ASSERT_OK(OPS(b)->release(b, h));
    ASSERT_OK(OPS(b)->unreserve(b, va, 2 * MiB));
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

START_TEST(t_no_vmm) {
    setenv("CKFAKECUDA_NO_VMM", "1", 1);
    ck_backend *b = NULL;
    ck_assert_int_eq(ck__backend_cuda_create(NULL, &b), CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), "virtual memory") != NULL, "error: %s",
                  ck_last_error());
    assert_no_leaks(); /* the context retained on the way was released */
}
END_TEST

/* ---- memory ------------------------------------------------------------ */

START_TEST(t_map_write_read) {
    ck_backend *b = make_backend();
    uintptr_t va = 0;
    ck_phys h = 0;
    ASSERT_OK(OPS(b)->reserve(b, 8 * MiB, &va));
    ck_assert_uint_eq(va % b->granularity, 0);
    ASSERT_OK(OPS(b)->create(b, 4 * MiB, &h));
    ASSERT_OK(OPS(b)->map(b, va + 2 * MiB, 4 * MiB, 1, &h));
    ck_assert_uint_eq(fake_counter("ckfake_live_mappings"), 1);

    unsigned char *dev = (unsigned char *)(va + 2 * MiB);
    size_t n = 4 * MiB;
    unsigned char *src = malloc(n), *dst = malloc(n);
    ck_assert_ptr_nonnull(src);
    ck_assert_ptr_nonnull(dst);
    ASSERT_OK(OPS(b)->memset_async(b, dev, 0xAB, n, NULL));
    fill_pattern(src, 1 * MiB, 3);
    ASSERT_OK(OPS(b)->memcpy_async(b, dev + 4096, src, 1 * MiB, NULL));
    ASSERT_OK(OPS(b)->stream_sync(b, NULL));
    memset(dst, 0, n);
    ASSERT_OK(OPS(b)->memcpy_async(b, dst, dev, n, NULL));
    ASSERT_OK(OPS(b)->stream_sync(b, NULL));
    for (size_t i = 0; i < 4096; i++)
        ck_assert_uint_eq(dst[i], 0xAB);
    ck_assert_int_eq(memcmp(dst + 4096, src, 1 * MiB), 0);
    for (size_t i = 4096 + 1 * MiB; i < n; i++)
        ck_assert_uint_eq(dst[i], 0xAB);

    /* Device-to-device copy inside the mapping. */
    ASSERT_OK(OPS(b)->memcpy_async(b, dev + 2 * MiB, dev + 4096, 1 * MiB, NULL));
    ASSERT_OK(OPS(b)->memcpy_async(b, dst, dev + 2 * MiB, 1 * MiB, NULL));
    ck_assert_int_eq(memcmp(dst, src, 1 * MiB), 0);

    ASSERT_OK(OPS(b)->unmap(b, va + 2 * MiB, 4 * MiB));
    /* Unmapped memory is no longer reachable by copies. */
    ck_assert_int_eq(OPS(b)->memset_async(b, dev, 0, 512, NULL), CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), "cuMemsetD8Async") != NULL, "error: %s",
                  ck_last_error());
    ASSERT_OK(OPS(b)->release(b, h));
    ASSERT_OK(OPS(b)->unreserve(b, va, 8 * MiB));
    OPS(b)->destroy(b);
    free(src);
    free(dst);
    assert_no_leaks();
}
END_TEST

START_TEST(t_remap_keeps_contents) {
    ck_backend *b = make_backend();
    uintptr_t va;
    ck_phys h;
    size_t n = 2 * MiB;
    ASSERT_OK(OPS(b)->reserve(b, 16 * MiB, &va));
    ASSERT_OK(OPS(b)->create(b, n, &h));
    ASSERT_OK(OPS(b)->map(b, va, n, 1, &h));
    unsigned char *src = malloc(n), *dst = malloc(n);
    fill_pattern(src, n, 11);
    ASSERT_OK(OPS(b)->memcpy_async(b, (void *)va, src, n, NULL));
    ASSERT_OK(OPS(b)->unmap(b, va, n));
    /* Same handle, another address. */
    uintptr_t va2 = va + 10 * MiB;
    ASSERT_OK(OPS(b)->map(b, va2, n, 1, &h));
    memset(dst, 0, n);
    ASSERT_OK(OPS(b)->memcpy_async(b, dst, (void *)va2, n, NULL));
    ASSERT_OK(OPS(b)->stream_sync(b, NULL));
    ck_assert_int_eq(memcmp(dst, src, n), 0);

    /* Released while mapped: alive until the unmap, like the driver. */
    ASSERT_OK(OPS(b)->release(b, h));
    ck_assert_uint_eq(fake_counter("ckfake_live_handles"), 1);
    ASSERT_OK(OPS(b)->memcpy_async(b, dst, (void *)va2, 4096, NULL));
    ck_assert_int_eq(memcmp(dst, src, 4096), 0);
    ASSERT_OK(OPS(b)->unmap(b, va2, n));
    ck_assert_uint_eq(fake_counter("ckfake_live_handles"), 0);

    ASSERT_OK(OPS(b)->unreserve(b, va, 16 * MiB));
    OPS(b)->destroy(b);
    free(src);
    free(dst);
    assert_no_leaks();
}
END_TEST

START_TEST(t_misuse_is_backend_error) {
    ck_backend *b = make_backend();
    uintptr_t va;
    ck_phys h;
    ASSERT_OK(OPS(b)->reserve(b, 8 * MiB, &va));
    /* Unmap of a range never mapped. */
    ck_assert_int_eq(OPS(b)->unmap(b, va, 2 * MiB), CK_ERR_BACKEND);
    const char *e = ck_last_error();
    ck_assert_msg(strstr(e, "cuMemUnmap") && strstr(e, "invalid argument"), "error: %s", e);

    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h));
    ASSERT_OK(OPS(b)->map(b, va, 2 * MiB, 1, &h));
    /* Unmap must cover exactly one mapping. */
    ck_assert_int_eq(OPS(b)->unmap(b, va, 4 * MiB), CK_ERR_BACKEND);
    /* Mapping over a live mapping, or with the wrong size. */
    ck_assert_int_eq(OPS(b)->map(b, va, 2 * MiB, 1, &h), CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), "cuMemMap") != NULL, "error: %s", ck_last_error());
    ck_assert_int_eq(OPS(b)->map(b, va + 2 * MiB, 4 * MiB, 1, &h), CK_ERR_BACKEND);
    ck_assert_uint_eq(fake_counter("ckfake_live_mappings"), 1);
    ASSERT_OK(OPS(b)->unmap(b, va, 2 * MiB));
    ASSERT_OK(OPS(b)->release(b, h));
    /* Double release. */
    ck_assert_int_eq(OPS(b)->release(b, h), CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), "cuMemRelease") != NULL, "error: %s",
                  ck_last_error());
    ASSERT_OK(OPS(b)->unreserve(b, va, 8 * MiB));
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

START_TEST(t_device_full_is_nomem) {
    setenv("CKFAKECUDA_TOTAL_MEM", "4M", 1);
    ck_backend *b = make_backend();
    ck_phys h1, h2, h3 = 0;
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h1));
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h2));
    uint64_t fr, tot;
    ASSERT_OK(OPS(b)->mem_info(b, &fr, &tot));
    ck_assert_uint_eq(fr, 0);
    ck_assert_int_eq(OPS(b)->create(b, 2 * MiB, &h3), CK_ERR_NOMEM);
    ck_assert_uint_eq(h3, 0); /* untouched on failure */
    ck_assert_msg(strstr(ck_last_error(), "cuMemCreate") && strstr(ck_last_error(), "out of memory"),
                  "error: %s", ck_last_error());
    ASSERT_OK(OPS(b)->release(b, h1));
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h3));
    ASSERT_OK(OPS(b)->release(b, h2));
    ASSERT_OK(OPS(b)->release(b, h3));
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

START_TEST(t_fault_create) {
    /* The 2nd create fails once with out-of-memory, then one with another code. */
    setenv("CKFAKECUDA_FAIL_CREATE", "2", 1);
    ck_backend *b = make_backend();
    ck_phys h[3];
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h[0]));
    ck_assert_int_eq(OPS(b)->create(b, 2 * MiB, &h[1]), CK_ERR_NOMEM);
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h[1])); /* once only */
    ASSERT_OK(OPS(b)->release(b, h[0]));
    ASSERT_OK(OPS(b)->release(b, h[1]));
    OPS(b)->destroy(b);
    assert_no_leaks();

    setenv("CKFAKECUDA_FAIL_CREATE", "1", 1);
    setenv("CKFAKECUDA_FAIL_CODE", "999", 1);
    b = make_backend();
    ck_assert_int_eq(OPS(b)->create(b, 2 * MiB, &h[2]), CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), "cuMemCreate") && strstr(ck_last_error(), "unknown error"),
                  "error: %s", ck_last_error());
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

/* With the fake's fail_var=1, the first map fails in the driver call named
 * call; a failed map leaves nothing mapped, so the same range maps again
 * (and, if touch, the memory works). */
static void first_map_fails(const char *fail_var, const char *call, int touch) {
    setenv(fail_var, "1", 1);
    ck_backend *b = make_backend();
    uintptr_t va;
    ck_phys h;
    ASSERT_OK(OPS(b)->reserve(b, 4 * MiB, &va));
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h));
    ck_assert_int_eq(OPS(b)->map(b, va, 2 * MiB, 1, &h), CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), call) != NULL, "error: %s", ck_last_error());
    ck_assert_uint_eq(fake_counter("ckfake_live_mappings"), 0);
    ASSERT_OK(OPS(b)->map(b, va, 2 * MiB, 1, &h));
    if (touch) ASSERT_OK(OPS(b)->memset_async(b, (void *)va, 1, 2 * MiB, NULL));
    ASSERT_OK(OPS(b)->unmap(b, va, 2 * MiB));
    ASSERT_OK(OPS(b)->release(b, h));
    ASSERT_OK(OPS(b)->unreserve(b, va, 4 * MiB));
    OPS(b)->destroy(b);
    assert_no_leaks();
}

START_TEST(t_fault_map) { first_map_fails("CKFAKECUDA_FAIL_MAP", "cuMemMap", 0); }
END_TEST

START_TEST(t_fault_set_access_unmaps) {
    first_map_fails("CKFAKECUDA_FAIL_ACCESS", "cuMemSetAccess", 1);
}
END_TEST

START_TEST(t_fd_handles_fallback) {
    /* Advertised but refused: create drops the fd handle type and works. */
    setenv("CKFAKECUDA_FD_HANDLES", "2", 1);
    ck_backend *b = make_backend();
    ck_phys h1, h2;
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h1));
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h2));
    ASSERT_OK(OPS(b)->release(b, h1));
    ASSERT_OK(OPS(b)->release(b, h2));
    OPS(b)->destroy(b);
    /* Not advertised: never asked for. */
    setenv("CKFAKECUDA_FD_HANDLES", "0", 1);
    b = make_backend();
    ASSERT_OK(OPS(b)->create(b, 2 * MiB, &h1));
    ASSERT_OK(OPS(b)->release(b, h1));
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

/* ---- streams, events, contexts ----------------------------------------- */

START_TEST(t_streams_events) {
    ck_backend *b = make_backend();
    ck_stream s;
    ck_event e1, e2, e3;
    ASSERT_OK(OPS(b)->stream_create(b, &s));
    ck_assert_ptr_nonnull(s);
    ASSERT_OK(OPS(b)->event_create(b, &e1));
    ASSERT_OK(OPS(b)->event_create(b, &e2));
    ASSERT_OK(OPS(b)->event_create(b, &e3));
    int cap = -1;
    ASSERT_OK(OPS(b)->stream_capturing(b, s, &cap));
    ck_assert_int_eq(cap, 0);
    ASSERT_OK(OPS(b)->stream_capturing(b, NULL, &cap));
    ck_assert_int_eq(cap, 0);

    ASSERT_OK(OPS(b)->event_record(b, e1, s));
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
    ASSERT_OK(OPS(b)->event_record(b, e2, s));
    ASSERT_OK(OPS(b)->event_query(b, e2));
    ASSERT_OK(OPS(b)->event_sync(b, e2));
    ASSERT_OK(OPS(b)->stream_wait_event(b, NULL, e2));
    float ms = -1;
    ASSERT_OK(OPS(b)->event_elapsed(b, e1, e2, &ms));
    ck_assert_msg(ms >= 4.0f && ms < 5000.0f, "elapsed %f ms", (double)ms);
    /* e3 was never recorded: the driver refuses, we report it. */
    ck_assert_int_eq(OPS(b)->event_elapsed(b, e1, e3, &ms), CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), "cuEventElapsedTime") != NULL, "error: %s",
                  ck_last_error());
    ASSERT_OK(OPS(b)->stream_sync(b, s));
    ASSERT_OK(OPS(b)->event_destroy(b, e1));
    ASSERT_OK(OPS(b)->event_destroy(b, e2));
    ASSERT_OK(OPS(b)->event_destroy(b, e3));
    ASSERT_OK(OPS(b)->stream_destroy(b, s));
    /* A destroyed stream is a driver error, not a crash. */
    ck_assert_int_eq(OPS(b)->stream_sync(b, s), CK_ERR_BACKEND);
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

START_TEST(t_event_not_ready) {
    setenv("CKFAKECUDA_NOT_READY", "2", 1);
    ck_backend *b = make_backend();
    ck_stream s;
    ck_event e;
    ASSERT_OK(OPS(b)->stream_create(b, &s));
    ASSERT_OK(OPS(b)->event_create(b, &e));
    ASSERT_OK(OPS(b)->event_record(b, e, s));
    ck__clear_error();
    ck_assert_int_eq(OPS(b)->event_query(b, e), CK_ERR_NOT_READY);
    ck_assert_str_eq(ck_last_error(), ""); /* an answer, not a failure */
    ck_assert_int_eq(OPS(b)->event_query(b, e), CK_ERR_NOT_READY);
    ASSERT_OK(OPS(b)->event_query(b, e));
    /* Synchronizing completes it at once. */
    ASSERT_OK(OPS(b)->event_record(b, e, s));
    ck_assert_int_eq(OPS(b)->event_query(b, e), CK_ERR_NOT_READY);
    ASSERT_OK(OPS(b)->event_sync(b, e));
    ASSERT_OK(OPS(b)->event_query(b, e));
    ASSERT_OK(OPS(b)->event_record(b, e, s));
    ASSERT_OK(OPS(b)->stream_sync(b, s));
    ASSERT_OK(OPS(b)->event_query(b, e));
    ASSERT_OK(OPS(b)->event_destroy(b, e));
    ASSERT_OK(OPS(b)->stream_destroy(b, s));
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

START_TEST(t_capturing) {
    setenv("CKFAKECUDA_CAPTURING", "1", 1);
    ck_backend *b = make_backend();
    ck_stream s;
    int cap = 0;
    ASSERT_OK(OPS(b)->stream_create(b, &s));
    ASSERT_OK(OPS(b)->stream_capturing(b, s, &cap));
    ck_assert_int_eq(cap, 1);
    cap = 0;
    ASSERT_OK(OPS(b)->stream_capturing(b, NULL, &cap));
    ck_assert_int_eq(cap, 1);
    ASSERT_OK(OPS(b)->stream_destroy(b, s));
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

START_TEST(t_context_restored) {
    /* Ops make the primary context current only for their own calls. */
    int (*get_cur)(void **);
    int (*set_cur)(void *);
    *(void **)&get_cur = fake_sym("cuCtxGetCurrent");
    *(void **)&set_cur = fake_sym("cuCtxSetCurrent");
    ck_backend *b = make_backend();
    ck_assert_int_eq(set_cur(NULL), 0);
    uintptr_t va;
    ASSERT_OK(OPS(b)->reserve(b, 2 * MiB, &va));
    void *cur = (void *)1;
    ck_assert_int_eq(get_cur(&cur), 0);
    ck_assert_ptr_null(cur);
    ASSERT_OK(OPS(b)->unreserve(b, va, 2 * MiB));
    OPS(b)->destroy(b);
    assert_no_leaks();
}
END_TEST

/* ---- through a pool ---------------------------------------------------- */

START_TEST(t_pool_on_fake_driver) {
    ck_pool *p = NULL;
    ck_status st = ck_pool_create_conf(&p, "backend=cuda,va=1G");
    ck_assert_msg(st == CK_OK, "%s: %s", ck_status_str(st), ck_last_error());
    ck_assert_str_eq(ck_pool_backend(p), "cuda");
    ck_stream s = NULL;
    ASSERT_OK(ck_stream_create(p, &s));

    static const size_t sizes[] = {1, 512, 4000, 1 * MiB, 1 * MiB + 1, 3 * MiB, 33 * MiB + 7};
    enum { N = sizeof sizes / sizeof *sizes };
    void *ptr[N];
    unsigned char *host = malloc(34 * MiB), *back = malloc(34 * MiB);
    ck_assert_ptr_nonnull(host);
    ck_assert_ptr_nonnull(back);
    fill_pattern(host, 34 * MiB, 5);
    /* Each block: 0x5A everywhere, then the pattern in all but 8 bytes at
     * either end, so a copy that runs short or long shows. */
    for (int i = 0; i < N; i++) {
        ASSERT_OK(ck_malloc(p, &ptr[i], sizes[i], s));
        ck_assert_ptr_nonnull(ptr[i]);
        ASSERT_OK(ck_memset_async(p, ptr[i], 0x5A, sizes[i], s));
        if (sizes[i] > 16)
            ASSERT_OK(ck_memcpy_async(p, (char *)ptr[i] + 8, host, sizes[i] - 16, s));
    }
    ASSERT_OK(ck_stream_synchronize(p, s));
    for (int i = 0; i < N; i++) {
        memset(back, 0, sizes[i]);
        ASSERT_OK(ck_memcpy_async(p, back, ptr[i], sizes[i], s));
        ASSERT_OK(ck_stream_synchronize(p, s));
        size_t n = sizes[i];
        if (n <= 16) {
            for (size_t j = 0; j < n; j++)
                ck_assert_uint_eq(back[j], 0x5A);
            continue;
        }
        for (size_t j = 0; j < 8; j++) {
            ck_assert_uint_eq(back[j], 0x5A);
            ck_assert_uint_eq(back[n - 1 - j], 0x5A);
        }
        ck_assert_msg(memcmp(back + 8, host, n - 16) == 0, "size %zu: data differs", n);
    }

    ck_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(ck_get_stats(p, &stats));
    ck_assert_uint_gt(stats.num_map_calls, 0);
    ck_assert_uint_gt(stats.num_create_calls, 0);
    ck_assert_int_eq(stats.allocation.current, N);
    ck_assert_int_gt(stats.allocated_bytes.current, (int64_t)(33 * MiB));
    ck_assert_int_ge(stats.mapped_bytes.current, stats.allocated_bytes.current);
    /* one mapping and one handle per chunk held */
    ck_assert_uint_eq(fake_counter("ckfake_live_mappings") * 2 * MiB,
                      (uint64_t)stats.physical_bytes.current);
    ck_assert_uint_eq((uint64_t)fake_counter("ckfake_used_bytes"),
                      (uint64_t)stats.physical_bytes.current);

    for (int i = 0; i < N; i++)
        ASSERT_OK(ck_free(p, ptr[i], s));
    ASSERT_OK(ck_get_stats(p, &stats));
    ck_assert_int_eq(stats.allocated_bytes.current, 0);
    ck_assert_int_eq(stats.allocation.current, 0);

    /* Trim gives the physical memory back to the (fake) device. */
    size_t released = 0;
    ASSERT_OK(ck_trim(p, &released));
    ck_assert_uint_gt(released, 0);
    ASSERT_OK(ck_get_stats(p, &stats));
    ck_assert_int_eq(stats.physical_bytes.current, 0);
    ck_assert_uint_eq(fake_counter("ckfake_live_handles"), 0);

    ASSERT_OK(ck_stream_destroy(p, s));
    ASSERT_OK(ck_pool_destroy(p));
    free(host);
    free(back);
    assert_no_leaks();
}
END_TEST

START_TEST(t_pool_create_failure_is_reported) {
    /* The pool's first physical create fails: ck_malloc reports it and the
     * pool still works afterwards. */
    setenv("CKFAKECUDA_FAIL_CREATE", "1", 1);
    setenv("CKFAKECUDA_FAIL_CODE", "999", 1);
    ck_pool *p = pool_from_conf("backend=cuda,va=256M");
    void *ptr = NULL;
    ck_status st = ck_malloc(p, &ptr, 4 * MiB, NULL);
    ck_assert_int_eq(st, CK_ERR_BACKEND);
    ck_assert_msg(strstr(ck_last_error(), "cuMemCreate") != NULL, "error: %s", ck_last_error());
    ASSERT_OK(ck_malloc(p, &ptr, 4 * MiB, NULL));
    ASSERT_OK(ck_free(p, ptr, NULL));
    ASSERT_OK(ck_pool_destroy(p));
    assert_no_leaks();
}
END_TEST

START_TEST(t_pool_cross_stream_waits_for_event) {
    /* Events stay "not ready" until synchronized, so a block freed on s1 must
     * not go to s2 however hard s2 asks, and may once s1 is synchronized.
     * (The first ask waits a few ms for s1's event, polling: it never
     * answers here, so the pool maps instead and, having waited once, only
     * polls after that.) */
    setenv("CKFAKECUDA_NOT_READY", "1000000", 1);
    ck_pool *p = pool_from_conf("backend=cuda,va=16M");
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    void *a = NULL, *b[8], *c = NULL;
    ASSERT_OK(ck_malloc(p, &a, 4 * MiB, s1));
    ASSERT_OK(ck_free(p, a, s1));
    for (int i = 0; i < 8; i++) {
        ASSERT_OK(ck_malloc(p, &b[i], 4 * MiB, s2));
        ck_assert_msg(b[i] != a, "malloc %d on s2 got the block s1 freed before s1 passed it", i);
    }
    ASSERT_OK(ck_stream_synchronize(p, s1));
    /* Eight live 4 MiB blocks fill two 16 MiB regions: the only free memory
     * left is a's region, now safe for s2. */
    ASSERT_OK(ck_malloc(p, &c, 4 * MiB, s2));
    ck_assert_ptr_eq(c, a);
    ASSERT_OK(ck_free(p, c, s2));
    for (int i = 0; i < 8; i++)
        ASSERT_OK(ck_free(p, b[i], s2));
    /* The public event calls see the driver's NOT_READY too. */
    ck_event e;
    ASSERT_OK(ck_event_create(p, &e));
    ASSERT_OK(ck_event_record(p, e, s2));
    ck_assert_int_eq(ck_event_query(p, e), CK_ERR_NOT_READY);
    ASSERT_OK(ck_event_synchronize(p, e));
    ASSERT_OK(ck_event_query(p, e));
    ASSERT_OK(ck_event_destroy(p, e));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
    assert_no_leaks();
}
END_TEST

START_TEST(t_stream_destroy_waits) {
    /* cuStreamDestroy returns before the stream's work is done, but the
     * pool counts a destroyed stream's frees as passed: ck_stream_destroy
     * synchronizes the stream first (the pool before it forgets the stream,
     * the backend again right before cuStreamDestroy). */
    ck_pool *p = pool_from_conf("backend=cuda,va=64M");
    ck_stream s;
    ASSERT_OK(ck_stream_create(p, &s));
    void *a;
    ASSERT_OK(ck_malloc(p, &a, 4 * MiB, s));
    ASSERT_OK(ck_free(p, a, s));
    unsigned long syncs = fake_counter("ckfake_stream_syncs");
    unsigned long streams = fake_counter("ckfake_live_streams");
    ASSERT_OK(ck_stream_destroy(p, s));
    ck_assert_uint_ge(fake_counter("ckfake_stream_syncs"), syncs + 1);
    ck_assert_uint_eq(fake_counter("ckfake_live_streams"), streams - 1);
    ASSERT_OK(ck_pool_destroy(p));
    assert_no_leaks();
}
END_TEST

START_TEST(t_pool_fences_untimed) {
    /* The pool's own fences are only waited on and queried: created with
     * CU_EVENT_DISABLE_TIMING (the stand-in driver counts the live events
     * that keep timing on). ck_event_create's events still time. */
    ck_pool *p = pool_from_conf("backend=cuda,va=64M");
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    void *a = NULL, *b = NULL;
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(ck_malloc(p, &a, 4 * MiB, s1));
        ASSERT_OK(ck_free(p, a, s1));
        ASSERT_OK(ck_malloc(p, &b, 4 * MiB, s2));
        ASSERT_OK(ck_free(p, b, s2));
    }
    ASSERT_OK(ck_stream_synchronize(p, s1));
    ASSERT_OK(ck_stream_synchronize(p, s2));
    ASSERT_OK(ck_malloc(p, &a, 4 * MiB, s2));
    ASSERT_OK(ck_free(p, a, s2));
    unsigned long fences = fake_counter("ckfake_live_events");
    ck_assert_msg(fences > 0, "cross-stream frees made no fence events");
    ck_assert_uint_eq(fake_counter("ckfake_live_events_timing"), 0);
    ck_event e1, e2;
    ASSERT_OK(ck_event_create(p, &e1));
    ASSERT_OK(ck_event_create(p, &e2));
    ck_assert_uint_eq(fake_counter("ckfake_live_events_timing"), 2);
    ASSERT_OK(ck_event_record(p, e1, s1));
    ASSERT_OK(ck_event_record(p, e2, s1));
    float ms = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, e1, e2, &ms));
    ck_assert_msg(ms >= 0.0f, "elapsed %f ms", (double)ms);
    ASSERT_OK(ck_event_destroy(p, e1));
    ASSERT_OK(ck_event_destroy(p, e2));
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
    assert_no_leaks();
}
END_TEST

START_TEST(t_pool_no_maps_during_capture) {
    setenv("CKFAKECUDA_CAPTURING", "1", 1);
    ck_pool *p = pool_from_conf("backend=cuda,va=256M");
    void *a = NULL;
    ck_assert_int_eq(ck_malloc(p, &a, 4 * MiB, NULL), CK_ERR_NOMEM);
    ck_assert_msg(strstr(ck_last_error(), "captur") != NULL, "error: %s", ck_last_error());
    ck_assert_uint_eq(fake_counter("ckfake_live_handles"), 0);
    ASSERT_OK(ck_pool_destroy(p));
    assert_no_leaks();
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda_backend");
    TCase *tc = ck_test_tcase(s, "vtable", 60);
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, t_create_properties);
    tcase_add_test(tc, t_no_device);
    tcase_add_test(tc, t_no_driver);
    tcase_add_test(tc, t_not_a_driver);
    tcase_add_test(tc, t_bad_ordinal);
    tcase_add_test(tc, t_no_vmm);
    tcase_add_test(tc, t_map_write_read);
    tcase_add_test(tc, t_remap_keeps_contents);
    tcase_add_test(tc, t_misuse_is_backend_error);
    tcase_add_test(tc, t_device_full_is_nomem);
    tcase_add_test(tc, t_fault_create);
    tcase_add_test(tc, t_fault_map);
    tcase_add_test(tc, t_fault_set_access_unmaps);
    tcase_add_test(tc, t_fd_handles_fallback);
    tcase_add_test(tc, t_streams_events);
    tcase_add_test(tc, t_event_not_ready);
    tcase_add_test(tc, t_capturing);
    tcase_add_test(tc, t_context_restored);

    TCase *tp = ck_test_tcase(s, "pool", 60);
    tcase_add_checked_fixture(tp, setup, NULL);
    tcase_add_test(tp, t_pool_on_fake_driver);
    tcase_add_test(tp, t_pool_create_failure_is_reported);
    tcase_add_test(tp, t_pool_cross_stream_waits_for_event);
    tcase_add_test(tp, t_pool_no_maps_during_capture);
    tcase_add_test(tp, t_pool_fences_untimed);
    tcase_add_test(tp, t_stream_destroy_waits);
    return s;
}

int main(void) {
    setenv("CKALLOC_CUDA_LIB", CK_FAKECUDA_LIB, 1);
    return ck_test_run(suite());
}
