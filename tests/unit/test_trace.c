/* The trace writer and the RMM CSV line parser (alloc/trace.c). */
#include "internal.h"
#include "testutil.h"
#include "trace.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ck_status parse(const char *line, ck_trace_rec *r, ck_trace_line_kind *k) {
    return ck__trace_parse_line(line, strlen(line), r, k);
}

/* Parses a line that must be a record. */
static ck_trace_rec rec_of(const char *line) {
    ck_trace_rec r;
    ck_trace_line_kind k;
    memset(&r, 0xab, sizeof r);
    ck_status st = parse(line, &r, &k);
    ck_assert_msg(st == CK_OK, "'%s' failed: %s", line, ck_last_error());
    ck_assert_int_eq(k, CK_TRACE_LINE_RECORD);
    return r;
}

/* A malformed line: CK_ERR_INVALID and a sentence containing want. */
static void bad(const char *line, const char *want) {
    ck_trace_rec r;
    ck_trace_line_kind k;
    ck_status st = parse(line, &r, &k);
    ck_assert_msg(st == CK_ERR_INVALID, "'%s' gave %d, not CK_ERR_INVALID", line, st);
    ck_assert_msg(strstr(ck_last_error(), want), "'%s': error '%s' does not name '%s'", line,
                  ck_last_error(), want);
}

START_TEST(test_round_trip) {
    char *path = temp_path("ck_trace");
    ck_trace_writer *w = NULL;
    ck_assert_int_eq(ck__trace_open(path, &w), CK_OK);
    /* More than one buffer's worth, so ck__trace_add flushes on its own. */
    enum { N = 10000 };
    for (uint64_t i = 0; i < N; i++) {
        ck_trace_action a = (ck_trace_action)(i % 3);
        ck__trace_add(w, a, 0x7f0000000000ULL + i * 512, i * 7 + 1, i % 5 == 0 ? 0 : 0xabc0 + i % 2);
    }
    ck_assert_int_eq(ck__trace_close(w), CK_OK);

    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, f);
    ck_assert_int_gt(len, 0);
    ck_assert_str_eq(line, "Thread,Time,Action,Pointer,Size,Stream\n");
    ck_trace_rec r;
    ck_trace_line_kind k;
    ck_assert_int_eq(ck__trace_parse_line(line, (size_t)len, &r, &k), CK_OK);
    ck_assert_int_eq(k, CK_TRACE_LINE_SKIP);
    uint64_t i = 0, prev_t = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        ck_assert_msg(ck__trace_parse_line(line, (size_t)len, &r, &k) == CK_OK, "line %s: %s",
                      line, ck_last_error());
        ck_assert_int_eq(k, CK_TRACE_LINE_RECORD);
        ck_assert_int_eq(r.action, (int)(i % 3));
        ck_assert_uint_eq(r.ptr, 0x7f0000000000ULL + i * 512);
        ck_assert_uint_eq(r.size, i * 7 + 1);
        ck_assert_uint_eq(r.stream, i % 5 == 0 ? 0 : 0xabc0 + i % 2);
        ck_assert_uint_eq(r.thread, (uint64_t)pthread_self());
        ck_assert_uint_lt(r.time_us, 86400ULL * 1000000ULL);
        /* wall clock within one run: non-decreasing unless midnight passed */
        ck_assert(r.time_us >= prev_t || prev_t - r.time_us > 3600ULL * 1000000ULL);
        prev_t = r.time_us;
        i++;
    }
    ck_assert_uint_eq(i, N);
    free(line);
    fclose(f);
    unlink(path);
    free(path);
}
END_TEST

START_TEST(test_flush_keeps_writing) {
    char *path = temp_path("ck_trace");
    ck_trace_writer *w = NULL;
    ck_assert_int_eq(ck__trace_open(path, &w), CK_OK);
    ck__trace_add(w, CK_TRACE_ALLOC, 0x1000, 512, 0);
    ck_assert_int_eq(ck__trace_flush(w), CK_OK);
    ck_assert_int_eq(ck__trace_flush(w), CK_OK); /* nothing buffered */
    ck__trace_add(w, CK_TRACE_FREE, 0x1000, 512, 0);
    ck_assert_int_eq(ck__trace_close(w), CK_OK);
    FILE *f = fopen(path, "r");
    char buf[256];
    int lines = 0;
    while (fgets(buf, sizeof buf, f))
        lines++;
    fclose(f);
    ck_assert_int_eq(lines, 3);
    unlink(path);
    free(path);
    /* NULL writer: tracing off */
    ck__trace_add(NULL, CK_TRACE_ALLOC, 1, 1, 0);
    ck_assert_int_eq(ck__trace_flush(NULL), CK_OK);
    ck_assert_int_eq(ck__trace_close(NULL), CK_OK);
}
END_TEST

START_TEST(test_skip_lines) {
    const char *skips[] = {"Thread,Time,Action,Pointer,Size,Stream",
                           "Thread,Time,Action,Pointer,Size,Stream\r",
                           "Thread,Time,Action,Pointer,Size,Stream,Tag",
                           "",
                           "\r",
                           "   \t"};
    for (size_t i = 0; i < sizeof skips / sizeof skips[0]; i++) {
        ck_trace_rec r;
        ck_trace_line_kind k = CK_TRACE_LINE_RECORD;
        ck_assert_int_eq(parse(skips[i], &r, &k), CK_OK);
        ck_assert_int_eq(k, CK_TRACE_LINE_SKIP);
    }
    ck_trace_rec r;
    ck_trace_line_kind k = CK_TRACE_LINE_RECORD;
    ck_assert_int_eq(ck__trace_parse_line(NULL, 0, &r, &k), CK_OK);
    ck_assert_int_eq(k, CK_TRACE_LINE_SKIP);
}
END_TEST

START_TEST(test_rmm_fields) {
    ck_trace_rec r = rec_of("140573312345856,18:31:33.419614,allocate,0x7f8a40000000,1024,0x0");
    ck_assert_uint_eq(r.thread, 140573312345856ULL);
    ck_assert_uint_eq(r.time_us, ((18 * 60 + 31) * 60 + 33) * 1000000ULL + 419614);
    ck_assert_int_eq(r.action, CK_TRACE_ALLOC);
    ck_assert_uint_eq(r.ptr, 0x7f8a40000000ULL);
    ck_assert_uint_eq(r.size, 1024);
    ck_assert_uint_eq(r.stream, 0);

    r = rec_of("7,00:00:01.5,free,0X7F8A4000ABCD,1024,0x55d0c8a3f2b0\r");
    ck_assert_int_eq(r.action, CK_TRACE_FREE);
    ck_assert_uint_eq(r.time_us, 1500000);
    ck_assert_uint_eq(r.ptr, 0x7f8a4000abcdULL);
    ck_assert_uint_eq(r.stream, 0x55d0c8a3f2b0ULL);

    r = rec_of("7,00:00:01.123456789,deallocate,0x10,0,0");
    ck_assert_int_eq(r.action, CK_TRACE_FREE);
    ck_assert_uint_eq(r.time_us, 1123456);
    ck_assert_uint_eq(r.size, 0);
    ck_assert_uint_eq(r.stream, 0);

    r = rec_of("7,23:59:59,allocate failure,0x0,68719476736,12");
    ck_assert_int_eq(r.action, CK_TRACE_ALLOC_FAIL);
    ck_assert_uint_eq(r.time_us, 86399ULL * 1000000ULL);
    ck_assert_uint_eq(r.ptr, 0);
    ck_assert_uint_eq(r.size, 68719476736ULL);
    ck_assert_uint_eq(r.stream, 12); /* decimal stream */

    /* a null pointer printed as a bare 0 */
    r = rec_of("7,23:59:59.0,allocate failure,0,4096,0x0");
    ck_assert_uint_eq(r.ptr, 0);
}
END_TEST

START_TEST(test_epoch_time) {
    ck_trace_rec r = rec_of("1,1634567890.123456,allocate,0x1000,512,0x0");
    ck_assert_uint_eq(r.time_us, 1634567890123456ULL);
    r = rec_of("1,1634567890.1,allocate,0x1000,512,0x0");
    ck_assert_uint_eq(r.time_us, 1634567890100000ULL);
    r = rec_of("1,1634567890,allocate,0x1000,512,0x0");
    ck_assert_uint_eq(r.time_us, 1634567890000000ULL);
}
END_TEST

START_TEST(test_extra_columns) {
    ck_trace_rec r = rec_of("1,10:00:00.000001,allocate,0x2000,4096,0x0,layers.3.attn");
    ck_assert_uint_eq(r.ptr, 0x2000);
    ck_assert_uint_eq(r.size, 4096);
    r = rec_of("1,10:00:00.000001,free,0x2000,4096,0x0,,x,y,\r");
    ck_assert_int_eq(r.action, CK_TRACE_FREE);
    /* spaces around fields are tolerated */
    r = rec_of("1, 10:00:00.000001 , allocate , 0x2000 , 4096 , 0x0 ");
    ck_assert_uint_eq(r.size, 4096);
}
END_TEST

START_TEST(test_malformed) {
    bad("1,10:00:00.0,allocate,0x10,512", "expected 6 columns");
    bad("garbage", "expected 6 columns");
    bad("x1,10:00:00.0,allocate,0x10,512,0x0", "column 1 (Thread): 'x1'");
    bad("1,10:00,allocate,0x10,512,0x0", "column 2 (Time): '10:00'");
    bad("1,25:00:00.0,allocate,0x10,512,0x0", "column 2 (Time)");
    bad("1,10:00:00.,allocate,0x10,512,0x0", "column 2 (Time)");
    bad("1,10:00:00.1234567890,allocate,0x10,512,0x0", "column 2 (Time)");
    bad("1,10:0a:00.0,allocate,0x10,512,0x0", "column 2 (Time)");
    bad("1,,allocate,0x10,512,0x0", "column 2 (Time): ''");
    bad("1,10:00:00.0,alloc,0x10,512,0x0", "column 3 (Action): 'alloc'");
    bad("1,10:00:00.0,ALLOCATE,0x10,512,0x0", "column 3 (Action)");
    bad("1,10:00:00.0,allocate,0xZZ,512,0x0", "column 4 (Pointer): '0xZZ' is not a hex number");
    bad("1,10:00:00.0,allocate,1234,512,0x0", "column 4 (Pointer): '1234'");
    bad("1,10:00:00.0,allocate,0x,512,0x0", "column 4 (Pointer)");
    bad("1,10:00:00.0,allocate,0x1ffffffffffffffff,512,0x0", "column 4 (Pointer)");
    bad("1,10:00:00.0,allocate,0x10,12a,0x0", "column 5 (Size): '12a'");
    bad("1,10:00:00.0,allocate,0x10,-5,0x0", "column 5 (Size)");
    bad("1,10:00:00.0,allocate,0x10,18446744073709551616,0x0", "column 5 (Size)");
    bad("1,10:00:00.0,allocate,0x10,18446744073709551616,0x0", "overflows");
    bad("1,10:00:00.0,allocate,0x10,512,zz", "column 6 (Stream): 'zz'");
    bad("1,10:00:00.0,allocate,0x10,512,", "column 6 (Stream)");
    /* bad bytes are shown safely and long text is cut */
    bad("1,10:00:00.0,\x01\xff,0x10,512,0x0", "column 3 (Action): '?" "?'");
    bad("1,10:00:00.0,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ",0x10,512,0x0",
        "...'");
    /* the maximum values are fine */
    ck_trace_rec r = rec_of("18446744073709551615,10:00:00.0,allocate,0xffffffffffffffff,"
                            "18446744073709551615,0xFFFFFFFFFFFFFFFF");
    ck_assert_uint_eq(r.size, UINT64_MAX);
    ck_assert_uint_eq(r.ptr, UINT64_MAX);
}
END_TEST

START_TEST(test_respects_len) {
    /* The valid text past len must not be read. */
    const char *full = "1,10:00:00.0,allocate,0x10,512,0x0";
    const char *cut = strstr(full, ",0x0");
    ck_trace_rec r;
    ck_trace_line_kind k;
    ck_assert_int_eq(ck__trace_parse_line(full, (size_t)(cut - full), &r, &k), CK_ERR_INVALID);
    /* a heap copy without a terminator, for ASan */
    size_t n = strlen(full);
    char *p = malloc(n);
    memcpy(p, full, n);
    ck_assert_int_eq(ck__trace_parse_line(p, n, &r, &k), CK_OK);
    ck_assert_int_eq(k, CK_TRACE_LINE_RECORD);
    ck_assert_uint_eq(r.stream, 0);
    ck_assert_int_eq(ck__trace_parse_line(p, n - 1, &r, &k), CK_ERR_INVALID); /* "0x" */
    ck_assert_int_eq(ck__trace_parse_line(p, n - 2, &r, &k), CK_OK);          /* "0" */
    ck_assert_int_eq(ck__trace_parse_line(p, n - 3, &r, &k), CK_ERR_INVALID); /* "" */
    free(p);
}
END_TEST

START_TEST(test_unwritable) {
    ck_trace_writer *w = NULL;
    const char *path = "/nonexistent-ckalloc-dir/sub/trace.csv";
    ck_assert_int_eq(ck__trace_open(path, &w), CK_ERR_IO);
    ck_assert_ptr_null(w);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), path));
}
END_TEST

START_TEST(test_disk_full) {
    /* /dev/full accepts the open and fails every write with ENOSPC. */
    if (access("/dev/full", W_OK) != 0)
        return;
    ck_trace_writer *w = NULL;
    ck_assert_int_eq(ck__trace_open("/dev/full", &w), CK_OK);
    for (int i = 0; i < 20000; i++) /* several buffer flushes: must not crash */
        ck__trace_add(w, CK_TRACE_ALLOC, 0x1000 + (uint64_t)i, 512, 0);
    ck_assert_int_eq(ck__trace_flush(w), CK_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "/dev/full"));
    ck__trace_add(w, CK_TRACE_FREE, 0x1000, 512, 0);
    ck_assert_int_eq(ck__trace_close(w), CK_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "/dev/full"));
}
END_TEST


/* The tier engine's rows: tag (NAME|TIER), stash, fetch, step (begin/end),
 * written by the writer and read back; a malformed seventh column names
 * what is wrong. */
START_TEST(test_tier_rows) {
    char *path = temp_path("ck_trace_tier");
    ck_trace_writer *w = NULL;
    ck_assert_int_eq(ck__trace_open(path, &w), CK_OK);
    ck__trace_add(w, CK_TRACE_ALLOC, 0x7000, 8 << 20, 0);
    ck__trace_add_extra(w, CK_TRACE_STEP, 0, 1, 0, "begin");
    ck__trace_add_extra(w, CK_TRACE_TAG, 0x7000, 8 << 20, 0, "layers.0.mlp.act|recompute");
    ck__trace_add(w, CK_TRACE_STASH, 0x7000, 8 << 20, 0xabc);
    ck__trace_add(w, CK_TRACE_FETCH, 0x7000, 8 << 20, 0xabc);
    ck__trace_add_extra(w, CK_TRACE_STEP, 0, 1, 0, "end");
    ck_assert_int_eq(ck__trace_close(w), CK_OK);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int want[] = {CK_TRACE_ALLOC, CK_TRACE_STEP, CK_TRACE_TAG, CK_TRACE_STASH, CK_TRACE_FETCH, CK_TRACE_STEP};
    int n = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        ck_trace_rec r;
        ck_trace_line_kind k;
        ck_assert_msg(ck__trace_parse_line(line, (size_t)len, &r, &k) == CK_OK, "%s: %s", line, ck_last_error());
        if (k != CK_TRACE_LINE_RECORD) continue;
        ck_assert_int_lt(n, 6);
        ck_assert_int_eq(r.action, want[n]);
        if (n == 1) ck_assert_int_eq(r.begin, 1);
        if (n == 5) ck_assert_int_eq(r.begin, 0);
        if (n == 2) {
            ck_assert_str_eq(r.name, "layers.0.mlp.act");
            ck_assert_int_eq(r.tier, 3);
            ck_assert_uint_eq(r.ptr, 0x7000);
        }
        if (n == 3) ck_assert_uint_eq(r.stream, 0xabc);
        n++;
    }
    ck_assert_int_eq(n, 6);
    free(line);
    fclose(f);
    unlink(path);
    free(path);

    bad("1,10:00:00.0,tag,0x10,512,0x0", "seventh column (NAME|TIER)");
    bad("1,10:00:00.0,tag,0x10,512,0x0,act", "is not NAME|TIER");
    bad("1,10:00:00.0,tag,0x10,512,0x0,act|sometimes", "is not NAME|TIER");
    bad("1,10:00:00.0,tag,0x10,512,0x0,|keep", "is not NAME|TIER");
    bad("1,10:00:00.0,tag,0x10,512,0x0,a\tb|keep", "is not NAME|TIER");
    bad("1,10:00:00.0,tag,0x10,512,0x0,a\"b|keep", "is not NAME|TIER");
    {
        /* A NUL in the name (found by fuzz_trace): it used to parse as an
         * empty name. */
        static const char nul[] = "1,10:00:00.0,tag,0x10,512,0x0,\0\0x|offload";
        ck_trace_rec nr;
        ck_trace_line_kind nk;
        ck_assert_int_eq(ck__trace_parse_line(nul, sizeof nul - 1, &nr, &nk), CK_ERR_INVALID);
    }
    bad("1,10:00:00.0,step,0x0,1,0x0", "seventh column (begin or end)");
    bad("1,10:00:00.0,step,0x0,1,0x0,middle", "'middle' is not begin or end");
    bad("1,10:00:00.0,stashh,0x10,512,0x0", "column 3 (Action)");
    ck_trace_rec r = rec_of("1,10:00:00.0,tag,0x10,512,0x0,a b|offload");
    ck_assert_str_eq(r.name, "a b");
    ck_assert_int_eq(r.tier, 2);
}
END_TEST

static Suite *trace_suite(void) {
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("trace");
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_flush_keeps_writing);
    tcase_add_test(tc, test_skip_lines);
    tcase_add_test(tc, test_rmm_fields);
    tcase_add_test(tc, test_epoch_time);
    tcase_add_test(tc, test_extra_columns);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_respects_len);
    tcase_add_test(tc, test_unwritable);
    tcase_add_test(tc, test_disk_full);
    tcase_add_test(tc, test_tier_rows);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return ck_test_run(trace_suite()); }
