/* Shared by the preload test programs: a check macro and access to the
 * preload library's pool (looked up at run time: the programs do not link
 * ckalloc, exactly like an unmodified CUDA program). */
#ifndef CKP_CHECK_H
#define CKP_CHECK_H

#include "ckalloc/ckalloc.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* Stats of the preload library's pool for device 0; dies if not preloaded. */
static inline ck_stats pool_stats(void) {
    ck_pool *(*get)(int) = (ck_pool * (*)(int)) dlsym(RTLD_DEFAULT, "ckalloc_preload_pool");
    ck_status (*stats)(ck_pool *, ck_stats *) =
        (ck_status(*)(ck_pool *, ck_stats *))dlsym(RTLD_DEFAULT, "ck_get_stats");
    CHECK(get && stats);
    ck_pool *p = get(0);
    CHECK(p);
    ck_stats st = {.struct_size = sizeof st};
    CHECK(stats(p, &st) == CK_OK);
    return st;
}

static inline int preloaded(void) { return dlsym(RTLD_DEFAULT, "ckalloc_preload_pool") != NULL; }

/* Counters of the stand-in driver (tests/fakecuda). */
unsigned long ckfake_memalloc_calls(void);
unsigned long ckfake_memfree_calls(void);
unsigned long ckfake_memalloc_live(void);

#endif
