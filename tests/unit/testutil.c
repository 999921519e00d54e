#include "testutil.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
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
        "CKFAKECUDA_CAPTURING",  "CKFAKECUDA_CC",          "CKFAKECUDA_SMS",
        "CKFAKECUDA_FAIL_LAUNCH",
    };
    setenv("CKALLOC_CUDA_LIB", CK_FAKECUDA_LIB, 1);
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

void *fake_sym(const char *name) {
    static void *lib;
    if (!lib) lib = dlopen(CK_FAKECUDA_LIB, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(lib != NULL, "dlopen %s: %s", CK_FAKECUDA_LIB, dlerror());
    void *f = dlsym(lib, name);
    ck_assert_msg(f != NULL, "fake lib lacks %s", name);
    return f;
}

unsigned long fake_counter(const char *name) {
    unsigned long (*fn)(void);
    *(void **)&fn = fake_sym(name);
    return fn();
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

/* ---- the gate: a stream held at a known point --------------------------------
 * A copy from a PROT_NONE page faults in the stream's worker thread; the
 * SIGSEGV handler holds that thread until gate_release() makes the page
 * readable, and the copy then runs again. */

static unsigned char *gate_page;
static size_t gate_size;
static int gate_open;
static struct sigaction gate_old_segv;
static pthread_t gate_timer;

static void gate_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    unsigned char *a = si->si_addr;
    if (gate_page && a >= gate_page && a < gate_page + gate_size) {
        while (!__atomic_load_n(&gate_open, __ATOMIC_ACQUIRE)) {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
        return; /* the page is readable now: the faulting copy runs again */
    }
    /* A real fault: put the old handler back and let it happen again. */
    sigaction(SIGSEGV, &gate_old_segv, NULL);
}

void gate_create(void) {
    gate_size = (size_t)sysconf(_SC_PAGESIZE);
    gate_page = mmap(NULL, gate_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(gate_page != MAP_FAILED);
    memset(gate_page, 0x6B, gate_size);
    ck_assert_int_eq(mprotect(gate_page, gate_size, PROT_NONE), 0);
    __atomic_store_n(&gate_open, 0, __ATOMIC_RELEASE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = gate_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGSEGV, &sa, &gate_old_segv), 0);
}

void gate_block(ck_pool *p, ck_stream s, unsigned char *sink) {
    ASSERT_OK(ck_memcpy_async(p, sink, gate_page, gate_size, s));
}

static void gate_open_now(void) {
    mprotect(gate_page, gate_size, PROT_READ | PROT_WRITE);
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
}

void gate_release(void) {
    ck_assert_int_eq(mprotect(gate_page, gate_size, PROT_READ | PROT_WRITE), 0);
    __atomic_store_n(&gate_open, 1, __ATOMIC_RELEASE);
}

static void *gate_timer_main(void *arg) {
    struct timespec ts = {0, (long)(intptr_t)arg * 1000000L};
    nanosleep(&ts, NULL);
    gate_open_now();
    return NULL;
}

void gate_release_after(int ms) {
    ck_assert_int_eq(pthread_create(&gate_timer, NULL, gate_timer_main, (void *)(intptr_t)ms), 0);
}

void gate_join(void) { pthread_join(gate_timer, NULL); }

size_t gate_bytes(void) { return (size_t)sysconf(_SC_PAGESIZE); }

void gate_destroy(void) {
    sigaction(SIGSEGV, &gate_old_segv, NULL);
    munmap(gate_page, gate_size);
    gate_page = NULL;
}
