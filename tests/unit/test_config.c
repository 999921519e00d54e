/* ck_options_parse and ck_pool_create_conf: sizes, every key, and the errors
 * for unknown keys, bad values and malformed items. */
#include "testutil.h"

#include "ckalloc/ckalloc.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TiB ((uint64_t)1 << 40) /* KiB, MiB, GiB: testutil.h */

static ck_pool_options parsed(const char *conf) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    ck_status st = ck_options_parse(&o, conf);
    ck_assert_msg(st == CK_OK, "'%s': %s: %s", conf, ck_status_str(st), ck_last_error());
    return o;
}

/* conf must fail with CK_ERR_INVALID, leave the options byte-identical, and
 * the sentence must mention every non-NULL word. */
static void rejects(const char *conf, const char *w1, const char *w2) {
    ck_pool_options o;
    memset(&o, 0x5A, sizeof o); /* padding too: the check below is bytewise */
    ck_pool_options_init(&o);
    o.budget = 12345;
    o.device = 7;
    ck_pool_options before;
    memcpy(&before, &o, sizeof o);
    ck_status st = ck_options_parse(&o, conf);
    ck_assert_msg(st == CK_ERR_INVALID, "'%s' gave %s, expected CK_ERR_INVALID", conf,
                  ck_status_str(st));
    ck_assert_msg(memcmp(&o, &before, sizeof o) == 0, "'%s' changed the options though it failed",
                  conf);
    const char *e = ck_last_error();
    ck_assert_msg(e[0] != '\0', "'%s': empty error sentence", conf);
    if (w1) ck_assert_msg(strstr(e, w1) != NULL, "'%s': error '%s' does not name '%s'", conf, e, w1);
    if (w2) ck_assert_msg(strstr(e, w2) != NULL, "'%s': error '%s' does not name '%s'", conf, e, w2);
}

static uint64_t budget_of(const char *value) {
    char conf[256];
    snprintf(conf, sizeof conf, "budget=%s", value);
    return parsed(conf).budget;
}

/* ---- sizes -------------------------------------------------------------- */

START_TEST(t_sizes_binary) {
    ck_assert_uint_eq(budget_of("4096"), 4096);
    ck_assert_uint_eq(budget_of("4096B"), 4096);
    ck_assert_uint_eq(budget_of("1K"), KiB);
    ck_assert_uint_eq(budget_of("3k"), 3 * KiB);
    ck_assert_uint_eq(budget_of("512M"), 512 * MiB);
    ck_assert_uint_eq(budget_of("20G"), 20 * GiB);
    ck_assert_uint_eq(budget_of("2T"), 2 * TiB);
    ck_assert_uint_eq(budget_of("7KiB"), 7 * KiB);
    ck_assert_uint_eq(budget_of("5MiB"), 5 * MiB);
    ck_assert_uint_eq(budget_of("24GiB"), 24 * GiB);
    ck_assert_uint_eq(budget_of("1TiB"), TiB);
    ck_assert_uint_eq(budget_of("1gib"), GiB);
}
END_TEST

START_TEST(t_sizes_decimal) {
    ck_assert_uint_eq(budget_of("1KB"), 1000);
    ck_assert_uint_eq(budget_of("250MB"), 250000000ull);
    ck_assert_uint_eq(budget_of("16GB"), 16000000000ull);
    ck_assert_uint_eq(budget_of("2TB"), 2000000000000ull);
    ck_assert_uint_eq(budget_of("3gb"), 3000000000ull);
}
END_TEST

START_TEST(t_sizes_fractions) {
    ck_assert_uint_eq(budget_of("1.5G"), GiB + GiB / 2);
    ck_assert_uint_eq(budget_of("0.5M"), MiB / 2);
    ck_assert_uint_eq(budget_of("2.25GiB"), 2 * GiB + GiB / 4);
    ck_assert_uint_eq(budget_of("1.5GB"), 1500000000ull);
    ck_assert_uint_eq(budget_of(".5K"), 512);
}
END_TEST

START_TEST(t_whitespace) {
    ck_pool_options o = parsed("  backend = host ,\tbudget =  20G , release=eager  ");
    ck_assert_int_eq(o.backend, CK_BACKEND_HOST);
    ck_assert_uint_eq(o.budget, 20 * GiB);
    ck_assert_int_eq(o.release, CK_RELEASE_EAGER);
    /* Empty items are skipped; an empty string changes nothing. */
    o = parsed(",,budget=1M,,");
    ck_assert_uint_eq(o.budget, MiB);
    ck_pool_options a = parsed(""), b;
    ck_pool_options_init(&b);
    ck_assert_int_eq(memcmp(&a, &b, sizeof a), 0);
}
END_TEST

START_TEST(t_bad_sizes) {
    const char *bad[] = {"lots", "", "12Q", "1.5.5G", "G", "-1G", "99999999999999999999",
                         "20000000T", "1e3", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char conf[128];
        snprintf(conf, sizeof conf, "budget=%s", bad[i]);
        rejects(conf, "budget", bad[i][0] ? bad[i] : NULL);
    }
}
END_TEST

START_TEST(t_budget_none) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    ASSERT_OK(ck_options_parse(&o, "budget=8G"));
    ck_assert_uint_eq(o.budget, 8 * GiB);
    ASSERT_OK(ck_options_parse(&o, "budget=none"));
    ck_assert_uint_eq(o.budget, 0);
    ASSERT_OK(ck_options_parse(&o, "budget=8G"));
    ASSERT_OK(ck_options_parse(&o, "budget=unlimited"));
    ck_assert_uint_eq(o.budget, 0);
    /* Zero bytes is no budget at all, not "no cap": that is spelled none. */
    rejects("budget=0", "'budget'", "0 bytes");
    rejects("budget=0.1", "'budget'", "0 bytes");
    rejects("budget=0.9B", "'budget'", "0.9B");
    rejects("budget=0K", "'budget'", "none");
    ck_assert_uint_eq(budget_of("0.5K"), 512);
}
END_TEST

START_TEST(t_budget_percent) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    ck_assert(o.budget_fraction == 0);
    ASSERT_OK(ck_options_parse(&o, "budget=90%"));
    ck_assert_uint_eq(o.budget, 0);
    ck_assert(o.budget_fraction == 0.9);
    ASSERT_OK(ck_options_parse(&o, "budget = 12.5 %"));
    ck_assert(o.budget_fraction == 0.125);
    ASSERT_OK(ck_options_parse(&o, "budget=100%"));
    ck_assert(o.budget_fraction == 1.0);
    /* A size or none replaces the share, and a share replaces a size. */
    ASSERT_OK(ck_options_parse(&o, "budget=8G"));
    ck_assert_uint_eq(o.budget, 8 * GiB);
    ck_assert(o.budget_fraction == 0);
    ASSERT_OK(ck_options_parse(&o, "budget=50%"));
    ck_assert_uint_eq(o.budget, 0);
    ASSERT_OK(ck_options_parse(&o, "budget=none"));
    ck_assert(o.budget_fraction == 0 && o.budget == 0);
    const char *bad[] = {"0%", "0.0%", "101%", "100.5%", "%", "x%", "90%%", "-5%", "1e2%",
                         "9 0%", "50%G", "G%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char conf[64];
        snprintf(conf, sizeof conf, "budget=%s", bad[i]);
        rejects(conf, "'budget'", bad[i]);
    }
    rejects("budget=0%", "at most 100%", NULL);
    rejects("budget=250%", "at most 100%", NULL);

    /* Resolved against the device's memory when the pool is made: on the
     * host backend, host_mem. */
    ck_pool *p;
    ASSERT_OK(ck_pool_create_conf(&p, "backend=host,host_mem=1G,budget=25%,live=0"));
    ck_stats st = {.struct_size = sizeof st};
    ASSERT_OK(ck_get_stats(p, &st));
    ck_assert_uint_eq(st.budget, 256 * MiB);
    void *a = NULL, *b = NULL;
    ASSERT_OK(ck_malloc(p, &a, 200 * MiB, NULL));
    ck_assert_int_eq(ck_malloc(p, &b, 100 * MiB, NULL), CK_ERR_NOMEM); /* over 25% */
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_pool_destroy(p));
    /* Set through the struct: checked by ck_pool_create. */
    ck_pool_options_init(&o);
    o.backend = CK_BACKEND_HOST;
    o.budget_fraction = 1.5;
    ck_assert_int_eq(ck_pool_create(&p, &o), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "budget_fraction"));
}
END_TEST

START_TEST(t_snapshot_signal) {
    ck_assert_int_eq(parsed("snapshot_signal=USR1").snapshot_signal, SIGUSR1);
    ck_assert_int_eq(parsed("snapshot_signal=SIGUSR2").snapshot_signal, SIGUSR2);
    ck_assert_int_eq(parsed("snapshot_signal=none").snapshot_signal, 0);
    ck_assert_int_eq(parsed("snapshot_signal=34").snapshot_signal, 34);
    ck_assert_int_eq(parsed("snapshot_signal=1").snapshot_signal, SIGHUP);
    /* A fault signal's handler returns to the faulting instruction: every
     * crash would become a busy loop. KILL and STOP cannot be caught. */
    const int refused[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGKILL, SIGSTOP};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char conf[64], num[16];
        snprintf(num, sizeof num, "%d", refused[i]);
        snprintf(conf, sizeof conf, "snapshot_signal=%s", num);
        rejects(conf, "'snapshot_signal'", "SEGV");
    }
    rejects("snapshot_signal=65", "'snapshot_signal'", "65");
    rejects("snapshot_signal=SEGV", "'snapshot_signal'", NULL);
    /* The same rule when the field is set directly. */
    char dir[] = "/tmp/ckcfg_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/snap.json", dir);
    ck_pool_options o;
    ck_pool_options_init(&o);
    o.backend = CK_BACKEND_HOST;
    o.host_mem = 64 * MiB;
    o.live = 0;
    o.snapshot_path = path;
    o.snapshot_signal = SIGSEGV;
    ck_pool *p = NULL;
    ck_assert_int_eq(ck_pool_create(&p, &o), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "snapshot_signal"));
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(t_verbose) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    ck_assert_int_eq(o.verbose, 0);
    ASSERT_OK(ck_options_parse(&o, "verbose=1"));
    ck_assert_int_eq(o.verbose, 1);
    ASSERT_OK(ck_options_parse(&o, "verbose=off"));
    ck_assert_int_eq(o.verbose, 0);
    rejects("verbose=2", "'verbose'", "2");
    rejects("verbose=loud", "'verbose'", "loud");
}
END_TEST

/* chunk_align: auto (0, the default), off (UINT64_MAX) or a size; 0 bytes
 * and words it does not know are refused naming the key. A pool with an
 * explicit size starts blocks that large on a 2 MiB chunk from the first
 * allocation; auto does not until an eviction (test_phys checks that). */
START_TEST(t_chunk_align) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    ck_assert_uint_eq(o.chunk_align, 0);
    ASSERT_OK(ck_options_parse(&o, "chunk_align=4M"));
    ck_assert_uint_eq(o.chunk_align, 4u << 20);
    ASSERT_OK(ck_options_parse(&o, "chunk_align=off"));
    ck_assert_uint_eq(o.chunk_align, UINT64_MAX);
    ASSERT_OK(ck_options_parse(&o, "chunk_align=auto"));
    ck_assert_uint_eq(o.chunk_align, 0);
    rejects("chunk_align=0", "'chunk_align'", "0");
    rejects("chunk_align=sometimes", "'chunk_align'", "sometimes");

    ck_pool *p = pool_from_conf("backend=host,host_mem=1G,chunk_align=4M");
    void *a, *b, *c;
    ASSERT_OK(ck_malloc(p, &a, 3 * MiB, NULL)); /* below the size: packed */
    ASSERT_OK(ck_malloc(p, &b, 5 * MiB, NULL)); /* at or above: on a chunk */
    ASSERT_OK(ck_malloc(p, &c, 3 * MiB, NULL));
    ck_assert_uint_eq((uintptr_t)b % (2 * MiB), 0);
    ck_assert_ptr_eq(b, (char *)a + 4 * MiB); /* a 1 MiB gap before b */
    ck_assert_ptr_eq(c, (char *)b + 5 * MiB); /* the gap is too small for c */
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_free(p, c, NULL));
    ASSERT_OK(ck_pool_destroy(p));

    p = pool_from_conf("backend=host,host_mem=1G,chunk_align=off");
    ASSERT_OK(ck_malloc(p, &a, 3 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, &b, 5 * MiB, NULL));
    ck_assert_ptr_eq(b, (char *)a + 3 * MiB); /* packed: no alignment */
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* ---- every key ---------------------------------------------------------- */

START_TEST(t_every_key) {
    ck_pool_options o = parsed(
        "backend=cuda,device=3,budget=20G,va=64G,release=eager,trace=out/t.csv,host_mem=24G,"
        "fault_create=5,fault_map=6,fault_copy=7,sim_clock=1,sim_bandwidth=25GB");
    ck_assert_int_eq(o.backend, CK_BACKEND_CUDA);
    ck_assert_int_eq(o.device, 3);
    ck_assert_uint_eq(o.budget, 20 * GiB);
    ck_assert_uint_eq(o.va_size, 64 * GiB);
    ck_assert_int_eq(o.release, CK_RELEASE_EAGER);
    ck_assert_ptr_nonnull(o.trace_path);
    ck_assert_str_eq(o.trace_path, "out/t.csv");
    ck_assert_uint_eq(o.host_mem, 24 * GiB);
    ck_assert_uint_eq(o.fault_create, 5);
    ck_assert_uint_eq(o.fault_map, 6);
    ck_assert_uint_eq(o.fault_copy, 7);
    ck_assert_int_eq(o.sim_clock, 1);
    ck_assert(o.sim_bandwidth == 25e9);
    ck_assert_uint_eq(o.struct_size, sizeof o);

    /* The other values of the enumerations, on top of what is there. */
    ASSERT_OK(ck_options_parse(&o, "backend=host,release=pressure,sim_clock=0"));
    ck_assert_int_eq(o.backend, CK_BACKEND_HOST);
    ck_assert_int_eq(o.release, CK_RELEASE_PRESSURE);
    ck_assert_int_eq(o.sim_clock, 0);
    ck_assert_uint_eq(o.budget, 20 * GiB); /* untouched keys keep their values */
    ASSERT_OK(ck_options_parse(&o, "backend=auto,sim_clock=true"));
    ck_assert_int_eq(o.backend, CK_BACKEND_AUTO);
    ck_assert_int_eq(o.sim_clock, 1);
    ASSERT_OK(ck_options_parse(&o, "sim_clock=off,sim_bandwidth=1G"));
    ck_assert_int_eq(o.sim_clock, 0);
    ck_assert(o.sim_bandwidth == (double)GiB);
    ASSERT_OK(ck_options_parse(&o, "sim_flops=19.5T,fault_event=3"));
    ck_assert(o.sim_flops == 19.5e12);
    ck_assert_uint_eq(o.fault_event, 3);
    ASSERT_OK(ck_options_parse(&o, "sim_flops=2.5e9"));
    ck_assert(o.sim_flops == 2.5e9);
    ASSERT_OK(ck_options_parse(&o, "sim_flops= 300 "));
    ck_assert(o.sim_flops == 300);
    /* A later item wins. */
    ASSERT_OK(ck_options_parse(&o, "device=1,device=2"));
    ck_assert_int_eq(o.device, 2);
}
END_TEST

START_TEST(t_null_conf) {
    ck_pool_options o, before;
    ck_pool_options_init(&o);
    o.budget = 77;
    before = o;
    ASSERT_OK(ck_options_parse(&o, NULL));
    ck_assert_int_eq(memcmp(&o, &before, sizeof o), 0);
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

START_TEST(t_unknown_key) {
    rejects("bugdet=20G", "bugdet", NULL);
    rejects("backend=host,colour=blue", "colour", NULL);
    rejects("Budget=1G", "Budget", NULL); /* keys are case-sensitive */
    rejects("=5", NULL, NULL);
}
END_TEST

START_TEST(t_bad_values) {
    static const struct {
        const char *key, *value;
    } bad[] = {
        {"backend", "gpu"},       {"backend", ""},        {"device", "abc"},
        {"device", "-1"},         {"device", "5000"},     {"device", "1.5"},
        {"budget", "x"},          {"va", "big"},          {"va", "0"},
        {"release", "never"},     {"release", "1"},       {"trace", ""},
        {"host_mem", "zz"},       {"host_mem", "0"},      {"fault_create", "x"},
        {"fault_create", "-3"},   {"fault_map", "1.5"},   {"fault_map", "one"},
        {"fault_copy", "1e2"},    {"fault_copy", "99999999999999999999999"},
        {"sim_clock", "2"},       {"sim_clock", "yes!"},  {"sim_bandwidth", "fast"},
        {"sim_bandwidth", "0"},   {"sim_flops", "0"},     {"sim_flops", "fast"},
        {"sim_flops", "-1T"},     {"sim_flops", "1TB"},   {"sim_flops", "T"},
        {"sim_flops", "nan"},     {"sim_flops", "1e400"}, {"fault_event", "x"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char conf[256];
        snprintf(conf, sizeof conf, "backend=host,%s=%s,budget=1G", bad[i].key, bad[i].value);
        char quoted_key[64];
        snprintf(quoted_key, sizeof quoted_key, "'%s'", bad[i].key);
        rejects(conf, quoted_key, bad[i].value[0] ? bad[i].value : NULL);
    }
}
END_TEST

START_TEST(t_item_without_equals) {
    rejects("budget", "budget", "=");
    rejects("backend=host,eager", "eager", "=");
    rejects("budget=1G,release eager", "release eager", NULL);
}
END_TEST

START_TEST(t_failed_parse_leaves_options) {
    /* Valid items before the bad one must not be applied either. */
    ck_pool_options o;
    memset(&o, 0xC3, sizeof o);
    ck_pool_options_init(&o);
    ASSERT_OK(ck_options_parse(&o, "budget=3G,trace=first.csv"));
    ck_pool_options before;
    memcpy(&before, &o, sizeof o);
    const char *confs[] = {
        "budget=5G,backend=host,release=eager,trace=second.csv,fault_map=9,nope=1",
        "backend=cuda,device=2,va=1G,sim_clock=1,sim_bandwidth=2G,host_mem=-1",
        "fault_copy=4,fault_create=4,junk",
    };
    for (size_t i = 0; i < sizeof confs / sizeof confs[0]; i++) {
        ck_assert_int_eq(ck_options_parse(&o, confs[i]), CK_ERR_INVALID);
        ck_assert_msg(memcmp(&o, &before, sizeof o) == 0, "'%s' changed the options", confs[i]);
    }
    /* The string an earlier successful parse returned survives failed ones
     * (alloc/config.c commits strings only when the whole string parsed). */
    ck_assert_str_eq(o.trace_path, "first.csv");
}
END_TEST

/* ---- ck_pool_create_conf and CKALLOC_CONF -------------------------------- */

START_TEST(t_create_conf_string) {
    ck_pool *p = NULL;
    ASSERT_OK(ck_pool_create_conf(&p, "backend=host,host_mem=1G,budget=96M"));
    ck_assert_str_eq(ck_pool_backend(p), "host");
    ck_stats st;
    st.struct_size = sizeof st;
    ASSERT_OK(ck_get_stats(p, &st));
    ck_assert_uint_eq(st.budget, 96 * MiB);
    ASSERT_OK(ck_pool_destroy(p));

    /* budget=none: the cap is the (simulated) device's memory. */
    ASSERT_OK(ck_pool_create_conf(&p, "backend=host,host_mem=1G,budget=none"));
    ASSERT_OK(ck_get_stats(p, &st));
    ck_assert_uint_eq(st.budget, GiB);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

START_TEST(t_create_conf_env) {
    ck_pool *p = NULL;
    ck_stats st;
    st.struct_size = sizeof st;

    ck_assert_int_eq(setenv("CKALLOC_CONF", "backend=host,host_mem=512M,budget=48M", 1), 0);
    ASSERT_OK(ck_pool_create_conf(&p, NULL));
    ck_assert_str_eq(ck_pool_backend(p), "host");
    ASSERT_OK(ck_get_stats(p, &st));
    ck_assert_uint_eq(st.budget, 48 * MiB);
    ASSERT_OK(ck_pool_destroy(p));

    /* An explicit string wins over the environment. */
    ASSERT_OK(ck_pool_create_conf(&p, "backend=host,host_mem=512M,budget=40M"));
    ASSERT_OK(ck_get_stats(p, &st));
    ck_assert_uint_eq(st.budget, 40 * MiB);
    ASSERT_OK(ck_pool_destroy(p));

    /* A bad CKALLOC_CONF fails and names the key. */
    ck_assert_int_eq(setenv("CKALLOC_CONF", "backend=host,budgett=1G", 1), 0);
    p = NULL;
    ck_assert_int_eq(ck_pool_create_conf(&p, NULL), CK_ERR_INVALID);
    ck_assert_ptr_null(p);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "budgett"));

    ck_assert_int_eq(setenv("CKALLOC_CONF", "backend=host,release=sometimes", 1), 0);
    ck_assert_int_eq(ck_pool_create_conf(&p, NULL), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "release"));
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "sometimes"));
    ck_assert_ptr_null(p);

    /* Unset: defaults. backend=auto is the cuda backend when a device is
     * present; without one it fails and says how to ask for host memory. */
    ck_assert_int_eq(unsetenv("CKALLOC_CONF"), 0);
    ck_status cs = ck_pool_create_conf(&p, NULL);
    if (cs == CK_OK) {
        ck_assert_str_eq(ck_pool_backend(p), "cuda");
        ASSERT_OK(ck_get_stats(p, &st));
        ck_assert_uint_gt(st.budget, 0);
        ASSERT_OK(ck_pool_destroy(p));
    } else {
        ck_assert_int_eq(cs, CK_ERR_NO_DEVICE);
        ck_assert_ptr_null(p);
        ck_assert_ptr_nonnull(strstr(ck_last_error(), "backend=auto"));
        ck_assert_ptr_nonnull(strstr(ck_last_error(), "set backend=host"));
    }
}
END_TEST

/* backend=auto without a driver: a clear failure, never host memory that
 * was not asked for; backend=host still works. */
START_TEST(t_auto_needs_device) {
    ck_assert_int_eq(setenv("CKALLOC_CUDA_LIB", "libckalloc-test-no-such-driver.so.1", 1), 0);
    ck_pool *p = (ck_pool *)1;
    ck_assert_int_eq(ck_pool_create_conf(&p, "budget=64M"), CK_ERR_NO_DEVICE);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "no CUDA driver"));
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "set backend=host"));
    ck_pool_options o;
    ck_pool_options_init(&o);
    ck_assert_int_eq(o.backend, CK_BACKEND_AUTO);
    ck_assert_int_eq(ck_pool_create(&p, &o), CK_ERR_NO_DEVICE);
    /* backend=cuda says what is missing, without the backend=auto advice. */
    o.backend = CK_BACKEND_CUDA;
    ck_assert_int_eq(ck_pool_create(&p, &o), CK_ERR_NO_DEVICE);
    ck_assert_ptr_null(strstr(ck_last_error(), "backend=auto"));
    ASSERT_OK(ck_pool_create_conf(&p, "backend=host,host_mem=256M,budget=64M"));
    ck_assert_str_eq(ck_pool_backend(p), "host");
    ASSERT_OK(ck_pool_destroy(p));
    ck_assert_int_eq(unsetenv("CKALLOC_CUDA_LIB"), 0);
}
END_TEST

START_TEST(t_trace_string_copied) {
    /* The pool copies the trace path: a later parse on this thread must not
     * redirect the trace of a pool already created. */
    const char *dir = getenv("TMPDIR");
    char path1[4096], path2[4096], conf[8300];
    snprintf(path1, sizeof path1, "%s/ck_cfg_trace1_%d.csv", dir && *dir ? dir : "/tmp",
             (int)getpid());
    snprintf(path2, sizeof path2, "%s/ck_cfg_trace2_%d.csv", dir && *dir ? dir : "/tmp",
             (int)getpid());
    unlink(path1);
    unlink(path2);
    snprintf(conf, sizeof conf, "backend=host,host_mem=256M,trace=%s", path1);
    ck_pool *p = NULL;
    ASSERT_OK(ck_pool_create_conf(&p, conf));
    ck_pool_options o;
    ck_pool_options_init(&o);
    snprintf(conf, sizeof conf, "trace=%s", path2);
    ASSERT_OK(ck_options_parse(&o, conf));
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 1000, NULL));
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_pool_destroy(p));
    FILE *f = fopen(path1, "r");
    ck_assert_msg(f != NULL, "trace %s was not written", path1);
    char line[256];
    int rows = 0;
    while (fgets(line, sizeof line, f)) rows++;
    fclose(f);
    ck_assert_int_eq(rows, 3); /* header, allocate, free */
    FILE *g = fopen(path2, "r");
    ck_assert_msg(g == NULL, "the second path was written to");
    unlink(path1);
}
END_TEST

int main(void) {
    Suite *s = suite_create("config");
    TCase *tc = ck_test_tcase(s, "config", 60);
    tcase_add_test(tc, t_sizes_binary);
    tcase_add_test(tc, t_sizes_decimal);
    tcase_add_test(tc, t_sizes_fractions);
    tcase_add_test(tc, t_whitespace);
    tcase_add_test(tc, t_bad_sizes);
    tcase_add_test(tc, t_budget_none);
    tcase_add_test(tc, t_budget_percent);
    tcase_add_test(tc, t_snapshot_signal);
    tcase_add_test(tc, t_verbose);
    tcase_add_test(tc, t_chunk_align);
    tcase_add_test(tc, t_every_key);
    tcase_add_test(tc, t_null_conf);
    tcase_add_test(tc, t_unknown_key);
    tcase_add_test(tc, t_bad_values);
    tcase_add_test(tc, t_item_without_equals);
    tcase_add_test(tc, t_failed_parse_leaves_options);
    tcase_add_test(tc, t_create_conf_string);
    tcase_add_test(tc, t_create_conf_env);
    tcase_add_test(tc, t_trace_string_copied);
    tcase_add_test(tc, t_auto_needs_device);
    return ck_test_run(s);
}
