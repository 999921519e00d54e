/* A cached malloc+free pair of one size on a ckalloc host pool, N times,
 * with 64 blocks live (bench/callgrind/pair.sh counts its instructions). */
#include "ckalloc/ckalloc.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    size_t size = argc > 1 ? strtoull(argv[1], NULL, 0) : 4096;
    long n = argc > 2 ? atol(argv[2]) : 100000;
    ck_pool *p;
    if (ck_pool_create_conf(&p, "backend=host,host_mem=4G,live=0") != CK_OK) {
        fprintf(stderr, "pair_ck: %s\n", ck_last_error());
        return 1;
    }
    void *keep[64], *x;
    for (int i = 0; i < 64; i++)
        if (ck_malloc(p, &keep[i], 512 * (size_t)(i + 1) * 7, NULL) != CK_OK) return 1;
    for (long i = 0; i < n; i++) {
        if (ck_malloc(p, &x, size, NULL) != CK_OK || ck_free(p, x, NULL) != CK_OK) return 1;
    }
    for (int i = 0; i < 64; i++) ck_free(p, keep[i], NULL);
    ck_pool_destroy(p);
    return 0;
}
