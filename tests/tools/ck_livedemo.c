/* ck_livedemo: a stand-in trainer for the ckalloc-stat tests. It creates a
 * host pool, makes allocations of known sizes, prints
 *   ready PID ALLOCATED_BYTES REQUESTED_BYTES
 * and then waits until SIGTERM/SIGINT, calling ck_get_stats every 5 ms (as a
 * trainer's allocations would) so that the pool answers ckalloc-stat's
 * top-list requests. --idle makes no call while waiting; --pools 2 adds a
 * second pool (one 2 MiB allocation). On the signal it exits normally, which
 * removes its segment. So that a test killed mid-way leaves nothing running,
 * it also stops when its parent dies, and after 120 s. */
#include "ckalloc/ckalloc.h"

#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void die(const char *what) {
    fprintf(stderr, "ck_livedemo: %s: %s\n", what, ck_last_error());
    exit(1);
}

int main(int argc, char **argv) {
    int idle = 0, npools = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--idle") == 0) idle = 1;
        else if (strcmp(argv[i], "--pools") == 0 && i + 1 < argc) npools = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: ck_livedemo [--idle] [--pools 1|2]\n");
            return 2;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);

    ck_pool *pool, *pool2 = NULL;
    if (ck_pool_create_conf(&pool, "backend=host,host_mem=1G,budget=512M") != CK_OK) die("pool");
    /* Largest first in the report: 7 MiB, 5 MiB, 3 MiB + 1000 B (rounded to
     * 512 B), then four of 64 KiB and one of 1000 B (1024 B). */
    static const size_t sizes[] = {5 << 20,  (3 << 20) + 1000, 7 << 20,  64 << 10,
                                   64 << 10, 64 << 10,         64 << 10, 1000};
    void *ptr[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (ck_malloc(pool, &ptr[i], sizes[i], NULL) != CK_OK) die("ck_malloc");
    void *p2 = NULL;
    if (npools > 1) {
        if (ck_pool_create_conf(&pool2, "backend=host,host_mem=1G") != CK_OK) die("pool 2");
        if (ck_malloc(pool2, &p2, 2 << 20, NULL) != CK_OK) die("ck_malloc 2");
    }
    ck_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    if (ck_get_stats(pool, &st) != CK_OK) die("ck_get_stats");
    printf("ready %d %lld %lld\n", (int)getpid(), (long long)st.allocated_bytes.current,
           (long long)st.requested_bytes.current);
    fflush(stdout);

    struct timespec tick = {0, 5 * 1000 * 1000};
    for (int n = 0; !stop && n < 120 * 200; n++) {
        if (!idle && ck_get_stats(pool, &st) != CK_OK) die("ck_get_stats");
        if (!idle && pool2 && ck_get_stats(pool2, &st) != CK_OK) die("ck_get_stats 2");
        nanosleep(&tick, NULL);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) ck_free(pool, ptr[i], NULL);
    ck_pool_destroy(pool);
    if (pool2) {
        ck_free(pool2, p2, NULL);
        ck_pool_destroy(pool2);
    }
    return 0;
}
