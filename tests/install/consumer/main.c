/* Uses only the installed headers and library: a host pool, one allocation,
 * one replay op (relu in place). */
#include <ckalloc/ckalloc.h>
#include <ckalloc/replay.h>
#include <ckalloc/tier.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    ck_pool *p;
    if (ck_pool_create_conf(&p, "backend=host,budget=64M") != CK_OK) {
        fprintf(stderr, "consumer: %s\n", ck_last_error());
        return 1;
    }
    float *x;
    if (ck_malloc(p, (void **)&x, 4096, NULL) != CK_OK) return 1;
    for (int i = 0; i < 1024; i++) x[i] = (float)(i - 512);
    ck_recipe r;
    ck_recipe_init(&r);
    int64_t shape[] = {1024};
    ck_recipe_step(&r, CK_OP_RELU, CK_DTYPE_F32)->in[0] =
        ck_recipe_input(&r, x, CK_DTYPE_F32, 1, shape);
    if (ck_replay(p, &r, x, 4096, NULL) != CK_OK || ck_stream_synchronize(p, NULL) != CK_OK) {
        fprintf(stderr, "consumer: %s\n", ck_last_error());
        return 1;
    }
    if (x[0] != 0.0f || x[1023] != 511.0f) return 1;
    /* The tier engine: an 8 MiB tensor offloaded and brought back. */
    unsigned char *t;
    if (ck_malloc(p, (void **)&t, 8 << 20, NULL) != CK_OK) return 1;
    memset(t, 0x5a, 8 << 20);
    if (ck_tag(p, t, "act", CK_TIER_OFFLOAD) != CK_OK || ck_stash(p, t, NULL) != CK_OK ||
        ck_fetch(p, t, NULL) != CK_OK || ck_stream_synchronize(p, NULL) != CK_OK) {
        fprintf(stderr, "consumer: %s\n", ck_last_error());
        return 1;
    }
    if (t[0] != 0x5a || t[(8 << 20) - 1] != 0x5a) return 1;
    if (ck_free(p, t, NULL) != CK_OK) return 1;
    if (ck_free(p, x, NULL) != CK_OK || ck_pool_destroy(p) != CK_OK) return 1;
    if (strcmp(ck_version(), "0.1.0") != 0) return 1;
    printf("consumer ok: ckalloc %s, %s\n", ck_version(), ck_op_get(CK_OP_RELU)->name);
    return 0;
}
