/* Uses only the installed header and library: a host pool, one allocation. */
#include <ckalloc/ckalloc.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    ck_pool *p;
    if (ck_pool_create_conf(&p, "backend=host,budget=64M") != CK_OK) {
        fprintf(stderr, "consumer: %s\n", ck_last_error());
        return 1;
    }
    void *x;
    if (ck_malloc(p, &x, 4096, NULL) != CK_OK) return 1;
    memset(x, 7, 4096);
    if (ck_free(p, x, NULL) != CK_OK || ck_pool_destroy(p) != CK_OK) return 1;
    if (strcmp(ck_version(), "0.1.0") != 0) return 1;
    printf("consumer ok: ckalloc %s\n", ck_version());
    return 0;
}
