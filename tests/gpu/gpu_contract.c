/* The pool contract on a real CUDA device (backend=cuda). One line per
 * check; exit 0 when all pass, 1 when any fails, 77 (skipped) when there is
 * no device. CKALLOC_CUDA_LIB is ignored unless CK_GPU_TEST_FAKE=1, which runs
 * the suite against tests/fakecuda by hand. */
#include "backend.h"
#include "ckalloc/ckalloc.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)
#define CHUNK (16 * MiB) /* host staging for readback */

static int failures;

static int check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", ok ? "ok" : "FAIL");
    vprintf(fmt, ap);
    if (!ok && ck_last_error()[0])
        printf(" [%s]", ck_last_error());
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (!ok)
        failures++;
    return ok;
}

static ck_stats get_stats(ck_pool *p) {
    ck_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    if (ck_get_stats(p, &s) != CK_OK)
        check(0, "ck_get_stats");
    return s;
}

static unsigned char pat(size_t i, unsigned seed) {
    return (unsigned char)((i * 2654435761u) >> 13 ^ seed);
}

static unsigned char *host_buf(void) {
    unsigned char *b = malloc(CHUNK);
    if (!b) {
        printf("FAIL: out of host memory\n");
        exit(1);
    }
    return b;
}

/* Fill all n bytes with v, then write a pattern window in the middle, read
 * everything back in chunks and compare. Returns 1 if the data is right. */
static int fill_and_verify(ck_pool *p, unsigned char *d, size_t n, unsigned char v, ck_stream s,
                           unsigned seed) {
    unsigned char *h = host_buf(), *win = host_buf();
    size_t w = n < 8 * MiB ? n / 2 : 8 * MiB, off = (n - w) / 2;
    for (size_t i = 0; i < w; i++)
        win[i] = pat(i, seed);
    int ok = ck_memset_async(p, d, v, n, s) == CK_OK &&
             (w == 0 || ck_memcpy_async(p, d + off, win, w, s) == CK_OK) &&
             ck_stream_synchronize(p, s) == CK_OK;
    for (size_t at = 0; ok && at < n; at += CHUNK) {
        size_t m = n - at < CHUNK ? n - at : CHUNK;
        memset(h, ~v, m);
        ok = ck_memcpy_async(p, h, d + at, m, s) == CK_OK && ck_stream_synchronize(p, s) == CK_OK;
        for (size_t i = 0; ok && i < m; i++) {
            size_t k = at + i;
            unsigned char want = (k >= off && k < off + w) ? win[k - off] : v;
            if (h[i] != want) {
                printf("  mismatch at byte %zu of %zu: got 0x%02x want 0x%02x\n", k, n, h[i], want);
                ok = 0;
            }
        }
    }
    free(h);
    free(win);
    return ok;
}

static void check_stats(ck_pool *p, const char *when, int64_t live, int64_t requested) {
    ck_stats s = get_stats(p);
    check(s.allocation.current == live, "%s: allocation.current %lld == %lld live", when,
          (long long)s.allocation.current, (long long)live);
    check(s.requested_bytes.current == requested, "%s: requested_bytes %lld == %lld", when,
          (long long)s.requested_bytes.current, (long long)requested);
    check(s.allocated_bytes.current >= s.requested_bytes.current &&
              s.active_bytes.current >= s.allocated_bytes.current &&
              s.reserved_bytes.current >= s.allocated_bytes.current &&
              s.mapped_bytes.current >= s.allocated_bytes.current &&
              s.physical_bytes.current >= s.mapped_bytes.current &&
              (uint64_t)s.physical_bytes.current <= s.budget,
          "%s: requested %lld <= allocated %lld <= active %lld; allocated <= reserved %lld, "
          "mapped %lld <= physical %lld <= budget %llu",
          when, (long long)s.requested_bytes.current, (long long)s.allocated_bytes.current,
          (long long)s.active_bytes.current, (long long)s.reserved_bytes.current,
          (long long)s.mapped_bytes.current, (long long)s.physical_bytes.current,
          (unsigned long long)s.budget);
    const ck_stat *all[] = {&s.allocation, &s.segment, &s.allocated_bytes, &s.reserved_bytes,
                            &s.requested_bytes, &s.mapped_bytes, &s.physical_bytes};
    int ok = 1;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        ok &= all[i]->peak >= all[i]->current &&
              (int64_t)(all[i]->allocated - all[i]->freed) == all[i]->current;
    check(ok, "%s: every stat has peak >= current and allocated - freed == current", when);
}

static void sizes_contract(ck_pool *p, ck_stream s) {
    static const size_t sizes[] = {1,       511,         512,         513,     4096,
                                   65536,   1 * MiB - 1, 1 * MiB,     1 * MiB + 1,
                                   2 * MiB, 3 * MiB + 5, 64 * MiB,    256 * MiB + 512,
                                   1 * GiB};
    enum { N = sizeof sizes / sizeof *sizes };
    void *ptr[N] = {0};
    int64_t requested = 0;
    for (int i = 0; i < N; i++) {
        ck_status st = ck_malloc(p, &ptr[i], sizes[i], s);
        if (!check(st == CK_OK && ptr[i] && (uintptr_t)ptr[i] % 512 == 0,
                   "malloc %zu B -> %p (512-aligned)", sizes[i], ptr[i]))
            continue;
        requested += (int64_t)sizes[i];
        check(fill_and_verify(p, ptr[i], sizes[i], (unsigned char)(i + 1), s, (unsigned)i),
              "fill + readback %zu B", sizes[i]);
    }
    /* All live at once: no two blocks overlap. */
    int disjoint = 1;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            uintptr_t a = (uintptr_t)ptr[i], b = (uintptr_t)ptr[j];
            if (a && b && a < b + sizes[j] && b < a + sizes[i])
                disjoint = 0;
        }
    check(disjoint, "%d live blocks do not overlap", N);
    /* Early blocks still hold their data after later allocations mapped more. */
    check(fill_and_verify(p, ptr[4], sizes[4], 0x77, s, 99) &&
              fill_and_verify(p, ptr[11], sizes[11], 0x78, s, 98),
          "earlier blocks still read back after later maps");
    check_stats(p, "all sizes live", N, requested);
    for (int i = 0; i < N; i++)
        if (ptr[i])
            check(ck_free(p, ptr[i], s) == CK_OK, "free %zu B", sizes[i]);
    check(ck_free(p, ptr[0], s) == CK_ERR_DOUBLE_FREE, "second free is CK_ERR_DOUBLE_FREE");
    check_stats(p, "after frees", 0, 0);
    ck_stats st = get_stats(p);
    check(st.allocated_bytes.current == 0, "allocated_bytes back to 0");
}

static void reuse_contract(ck_pool *p, ck_stream s) {
    static const size_t sizes[] = {4096, 8 * MiB};
    for (int i = 0; i < 2; i++) {
        void *a = NULL, *b = NULL;
        ck_malloc(p, &a, sizes[i], s);
        ck_free(p, a, s);
        ck_stats before = get_stats(p);
        ck_status st = ck_malloc(p, &b, sizes[i], s);
        ck_stats after = get_stats(p);
        check(st == CK_OK && a == b && after.num_map_calls == before.num_map_calls,
              "a freed %zu B block is reused at once on its stream (%p == %p, no new map)",
              sizes[i], a, b);
        ck_free(p, b, s);
    }
}

/* s1 writes a block, s2 copies it (device to device, so the host does not
 * wait) after a few ms of other work; ck_record_stream(s2) must keep the
 * block from going to s3 until s2 is done, whatever s3 writes into it. */
static void streams_contract(ck_pool *p) {
    ck_stream s1 = NULL, s2 = NULL, s3 = NULL;
    ck_event ev = NULL;
    if (!check(ck_stream_create(p, &s1) == CK_OK && ck_stream_create(p, &s2) == CK_OK &&
                   ck_stream_create(p, &s3) == CK_OK && ck_event_create(p, &ev) == CK_OK,
               "create 3 streams and an event"))
        return;
    size_t n = 32 * MiB, big = 256 * MiB;
    void *blk = NULL, *busy = NULL, *dst = NULL, *q = NULL;
    unsigned char *h = malloc(n);
    int ok = h && ck_malloc(p, &blk, n, s1) == CK_OK && ck_malloc(p, &busy, big, s2) == CK_OK &&
             ck_malloc(p, &dst, n, s2) == CK_OK;
    check(ok, "malloc on s1 and s2");
    if (!ok) {
        free(h);
        return;
    }
    ck_memset_async(p, blk, 0x11, n, s1);
    ck_event_record(p, ev, s1);
    ck_stream_wait_event(p, s2, ev);
    /* Keep s2 busy for a few ms, then copy blk on s2. */
    for (int i = 0; i < 32; i++)
        ck_memcpy_async(p, (char *)busy + (i % 2) * (big / 2),
                        (char *)busy + ((i + 1) % 2) * (big / 2), big / 2, s2);
    ck_memcpy_async(p, dst, blk, n, s2);
    check(ck_record_stream(p, blk, s2) == CK_OK, "ck_record_stream(blk, s2)");
    check(ck_free(p, blk, s1) == CK_OK, "free blk on s1 while s2 still reads it");
    ck_status st = ck_malloc(p, &q, n, s3);
    if (st == CK_OK)
        ck_memset_async(p, q, 0x22, n, s3);
    check(st == CK_OK, "malloc the same size on s3 (%s)", q == blk ? "same block: s2 was done"
                                                                      : "another block");
    ck_stream_synchronize(p, s1);
    ck_stream_synchronize(p, s2);
    ck_stream_synchronize(p, s3);
    memset(h, 0, n);
    ck_memcpy_async(p, h, dst, n, s2);
    ck_stream_synchronize(p, s2);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += h[i] != 0x11;
    check(bad == 0, "s2 read what s1 wrote, untouched by s3 (%zu bad bytes)", bad);

    ck_event e0 = NULL, e1 = NULL;
    float ms = -1;
    ok = ck_event_create(p, &e0) == CK_OK && ck_event_create(p, &e1) == CK_OK &&
         ck_event_record(p, e0, s2) == CK_OK &&
         ck_memset_async(p, busy, 0, big, s2) == CK_OK && ck_event_record(p, e1, s2) == CK_OK &&
         ck_event_synchronize(p, e1) == CK_OK && ck_event_query(p, e1) == CK_OK &&
         ck_event_elapsed_ms(p, e0, e1, &ms) == CK_OK && ms >= 0.0f;
    check(ok, "events: record, synchronize, query, elapsed (%.3f ms for a 256 MiB memset)",
          (double)ms);
    ck_event_destroy(p, e0);
    ck_event_destroy(p, e1);

    if (q)
        ck_free(p, q, s3);
    ck_free(p, busy, s2);
    ck_free(p, dst, s2);
    ck_event_destroy(p, ev);
    check(ck_stream_destroy(p, s1) == CK_OK && ck_stream_destroy(p, s2) == CK_OK &&
              ck_stream_destroy(p, s3) == CK_OK,
          "destroy streams");
    free(h);
}

static void trim_contract(ck_pool *p) {
    ck_stats before = get_stats(p);
    size_t released = 0;
    ck_status st = ck_trim(p, &released);
    ck_stats after = get_stats(p);
    check(st == CK_OK && before.physical_bytes.current > 0 && released > 0 &&
              after.physical_bytes.current < before.physical_bytes.current &&
              (uint64_t)(before.physical_bytes.current - after.physical_bytes.current) == released,
          "ck_trim released %zu B: physical %lld -> %lld", released,
          (long long)before.physical_bytes.current, (long long)after.physical_bytes.current);
    check(after.physical_bytes.current == 0 && after.mapped_bytes.current == 0,
          "nothing live: trim leaves no physical memory");
}

static void budget_contract(void) {
    ck_pool *p = NULL;
    if (!check(ck_pool_create_conf(&p, "backend=cuda,budget=64M") == CK_OK,
               "create pool backend=cuda,budget=64M"))
        return;
    void *a = NULL, *b = NULL;
    check(ck_malloc(p, &a, 40 * MiB, NULL) == CK_OK, "40 MiB fits in a 64 MiB budget");
    ck_status st = ck_malloc(p, &b, 40 * MiB, NULL);
    const char *e = ck_last_error();
    check(st == CK_ERR_NOMEM && strstr(e, "live") && strstr(e, "budget"),
          "another 40 MiB is CK_ERR_NOMEM naming what was live (\"%s\")", e);
    ck_stats s = get_stats(p);
    check(s.num_ooms == 1 && (uint64_t)s.physical_bytes.peak <= 64 * MiB && s.budget == 64 * MiB,
          "num_ooms %llu == 1, physical peak %lld <= budget %llu",
          (unsigned long long)s.num_ooms, (long long)s.physical_bytes.peak,
          (unsigned long long)s.budget);
    check(ck_free(p, a, NULL) == CK_OK && ck_malloc(p, &b, 40 * MiB, NULL) == CK_OK,
          "after the free, 40 MiB fits again");
    ck_free(p, b, NULL);
    /* Different sizes must push out cached memory to fit. */
    st = ck_malloc(p, &a, 60 * MiB, NULL);
    check(st == CK_OK, "60 MiB fits once the cached 40 MiB is unmapped");
    if (st == CK_OK)
        ck_free(p, a, NULL);
    check(ck_pool_destroy(p) == CK_OK, "destroy the budget pool");
}

int main(void) {
    const char *fake = getenv("CK_GPU_TEST_FAKE");
    if (!fake || strcmp(fake, "1") != 0)
        unsetenv("CKALLOC_CUDA_LIB"); /* the real driver only */
    if (!ck__cuda_available()) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    ck_pool *p = NULL;
    ck_status st = ck_pool_create_conf(&p, "backend=cuda");
    if (st == CK_ERR_NO_DEVICE) {
        printf("skipped: no CUDA device (%s)\n", ck_last_error());
        return 77;
    }
    if (!check(st == CK_OK, "create pool backend=cuda"))
        return 1;
    check(strcmp(ck_pool_backend(p), "cuda") == 0, "pool backend is \"%s\"", ck_pool_backend(p));
    ck_stream s = NULL;
    check(ck_stream_create(p, &s) == CK_OK, "create a stream");

    sizes_contract(p, s);
    reuse_contract(p, s);
    streams_contract(p);
    check_stats(p, "after stream checks", 0, 0);
    ck_stream_synchronize(p, s);
    trim_contract(p);
    ck_stats fin = get_stats(p);
    check(fin.num_map_calls > 0 && fin.num_unmap_calls > 0 &&
              fin.num_create_calls == fin.num_release_calls,
          "maps %llu, unmaps %llu, creates %llu == releases %llu",
          (unsigned long long)fin.num_map_calls, (unsigned long long)fin.num_unmap_calls,
          (unsigned long long)fin.num_create_calls, (unsigned long long)fin.num_release_calls);
    check(ck_stream_destroy(p, s) == CK_OK, "destroy the stream");
    check(ck_pool_destroy(p) == CK_OK, "destroy the pool");

    budget_contract();

    printf("%s: %d check%s failed\n", failures ? "FAIL" : "PASS", failures,
           failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
