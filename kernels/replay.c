/* ck_replay: the entry point the tier engine calls to rebuild a tensor.
 *
 * It checks the recipe (registry.c), then that every input and the output
 * that lie in the pool are resident, and queues the plan on the pool's
 * backend. Nothing is queued unless everything checks. */
#include "internal.h"
#include "plan.h"
#include "pool.h"

#include <stdlib.h>

typedef int (*span_fn)(ck_pool *p, const void *ptr, size_t n, const char **why);

static ck_status resident(ck_pool *pool, span_fn span, const void *ptr, size_t n, const char *what,
                          int idx) {
    const char *why = "";
    if (n == 0 || span(pool, ptr, n, &why) >= 0) return CK_OK;
    if (idx < 0)
        return ck__err(CK_ERR_NOT_OWNED, "ck_replay: out %p (%zu bytes) %s", ptr, n, why);
    return ck__err(CK_ERR_NOT_OWNED, "ck_replay: %s %d at %p (%zu bytes) %s", what, idx, ptr, n,
                   why);
}

static ck_status replay(ck_pool *pool, span_fn span, const ck_recipe *r, void *out,
                        size_t out_bytes, ck_stream stream) {
    if (!pool) return ck__err(CK_ERR_INVALID, "ck_replay: pool is NULL");
    ck__plan *pl = malloc(sizeof *pl);
    if (!pl) return ck__err(CK_ERR_NOMEM, "ck_replay: out of host memory");
    ck_status st = ck__plan_build(r, out, out_bytes, pl);
    if (st == CK_OK) {
        const void *ptrs[CK_MAX_INPUTS];
        size_t sizes[CK_MAX_INPUTS];
        int index[CK_MAX_INPUTS];
        int n = ck__recipe_spans(r, ptrs, sizes, index);
        for (int i = 0; i < n && st == CK_OK; i++)
            st = resident(pool, span, ptrs[i], sizes[i], "input", index[i]);
        if (st == CK_OK)
            st = resident(pool, span, out,
                          (size_t)pl->n * ck_dtype_size((ck_dtype)pl->out_dtype), "out", -1);
    }
    if (st == CK_OK && !pool->be->ops->replay)
        st = ck__err(CK_ERR_BACKEND, "ck_replay: the %s backend cannot run replay ops",
                     pool->be->name);
    if (st == CK_OK) st = pool->be->ops->replay(pool->be, pl, stream);
    free(pl);
    return st;
}

ck_status ck_replay(ck_pool *pool, const ck_recipe *r, void *out, size_t out_bytes,
                    ck_stream stream) {
    return replay(pool, ck__pool_span, r, out, out_bytes, stream);
}

ck_status ck__replay_locked(ck_pool *pool, const ck_recipe *r, void *out, size_t out_bytes,
                            ck_stream stream) {
    return replay(pool, ck__pool_span_locked, r, out, out_bytes, stream);
}
