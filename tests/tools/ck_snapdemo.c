/* ck_snapdemo: a known snapshot for the ckalloc-stat tests.
 *
 *   ck_snapdemo OUT.json [PAIRS]
 *
 * On a host pool (budget 64 MiB) it allocates 100 blocks of distinct sizes, (i + 1) * 8 KiB,
 * frees the even ones, then makes PAIRS (default 0) allocate + free pairs of
 * 4 KiB, and writes OUT.json (its snapshot path) with ck_snapshot_write. It prints one JSON line:
 * the operations done, the ring records the file must hold (every allocate,
 * free, map and unmap, at most the ring's 4096), and the live blocks. */
#include "ckalloc/ckalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RING 4096
#define NBLOCKS 100

static void die(const char *what) {
    fprintf(stderr, "ck_snapdemo: %s: %s\n", what, ck_last_error());
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: ck_snapdemo OUT.json [PAIRS]\n");
        return 2;
    }
    int pairs = argc == 3 ? atoi(argv[2]) : 0;
    if (pairs < 0 || pairs > 10000000) {
        fprintf(stderr, "ck_snapdemo: PAIRS must be 0 to 10000000\n");
        return 2;
    }
    ck_pool *p;
    /* With a snapshot path the ring stamps its records with times. */
    char conf[4200];
    snprintf(conf, sizeof conf, "backend=host,host_mem=1G,budget=64M,snapshot=%s,snapshot_signal=none",
             argv[1]);
    if (ck_pool_create_conf(&p, conf) != CK_OK) die("pool");
    void *v[NBLOCKS], *x;
    uint64_t ops = 0;
    for (int i = 0; i < NBLOCKS; i++, ops++)
        if (ck_malloc(p, &v[i], (size_t)(i + 1) * 8192, NULL) != CK_OK) die("ck_malloc");
    for (int i = 0; i < NBLOCKS; i += 2, ops++)
        if (ck_free(p, v[i], NULL) != CK_OK) die("ck_free");
    for (int i = 0; i < pairs; i++, ops += 2)
        if (ck_malloc(p, &x, 4096, NULL) != CK_OK || ck_free(p, x, NULL) != CK_OK) die("pair");
    ck_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    if (ck_get_stats(p, &st) != CK_OK) die("ck_get_stats");
    if (ck_snapshot_write(p, NULL) != CK_OK) die("ck_snapshot_write");
    uint64_t total = ops + st.num_map_calls + st.num_unmap_calls;
    printf("{\"ops\":%" PRIu64 ",\"records\":%" PRIu64 ",\"live\":%" PRId64 "}\n", ops,
           total < RING ? total : RING, st.allocation.current);
    return ck_pool_destroy(p) == CK_OK ? 0 : 1; /* writes the file again, unchanged */
}
