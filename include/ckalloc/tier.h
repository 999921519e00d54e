/* ckalloc/tier.h: the tier engine. Each saved activation is kept in device
 * memory, offloaded to pinned host memory and brought back, or dropped and
 * recomputed from a recipe, always at the same virtual address: pointers a
 * framework holds stay valid throughout.
 *
 * A training step, as the engine sees it:
 *
 *   ck_step_begin(pool);
 *   forward:  x = ck_malloc(...); ck_tag(pool, x, "layers.3.mlp.act", CK_TIER_OFFLOAD);
 *             ... last forward use of x on stream s ...
 *             ck_stash(pool, x, s);        // x's memory may go
 *   backward: ck_fetch(pool, x, s);        // x is back before s's next work
 *             ... use x on s ...; ck_free(pool, x, s);
 *   ck_step_end(pool);
 *
 * Every call is stream-ordered and returns without waiting for a copy or a
 * kernel (verify=1 is the exception: see below). Between ck_stash and
 * ck_fetch the tensor must not be read or written: its pages may be unmapped,
 * and touching them faults (on the host backend as on a GPU).
 *
 * Tiers, applied by ck_stash:
 *   KEEP       nothing moves; stash and fetch only mark the tensor.
 *   OFFLOAD    a device-to-host copy on the pool's copy stream starts after
 *              `stream` reaches the stash; when it completes, the physical
 *              memory under the tensor is released. Fetch maps it back at the
 *              same address, copies host-to-device, and makes `stream` wait.
 *   RECOMPUTE  needs a recipe (ck_set_recipe). Once `stream` passes the
 *              stash, the memory is released. Fetch maps it back, fetches the
 *              recipe's inputs that are themselves stashed, and runs the
 *              recipe (ck_replay) on `stream`.
 *   AUTO       offload (or recompute, with a recipe) when the pool is near
 *              its budget at the stash; otherwise keep it resident, but let
 *              the pool evict it under budget pressure later.
 *
 * Only large allocations (more than 1 MiB) can be tagged. The memory given
 * back is every 2 MiB chunk under the tensor that no other live allocation
 * touches: at most one chunk short of the tensor's size when it starts on a
 * chunk (chunk_align; auto turns 4 MiB alignment on at the first stash).
 *
 * Config keys (CKALLOC_CONF or ck_options_parse): host_budget (pinned host
 * memory the pool may hold; default half the machine's RAM), prefetch (bytes
 * of stashed tensors a fetch starts bringing back ahead, in reverse stash
 * order; default 256M, 0 = off), verify (1: checksum at stash, checked at
 * fetch; fetch then waits for the data). */
#ifndef CKALLOC_TIER_H
#define CKALLOC_TIER_H

#include "ckalloc/ckalloc.h"
#include "ckalloc/replay.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ck_tier {
    CK_TIER_AUTO = 0,
    CK_TIER_KEEP = 1,
    CK_TIER_OFFLOAD = 2,
    CK_TIER_RECOMPUTE = 3
} ck_tier;

typedef enum ck_tensor_state {
    CK_TENSOR_RESIDENT = 0,    /* in device memory, usable (once a fetch's stream waits) */
    CK_TENSOR_MOVING_OUT = 1,  /* stashed; its copy out (or its stream) has not finished */
    CK_TENSOR_OFFLOADED = 2,   /* device memory released; the data is in host memory */
    CK_TENSOR_DROPPED = 3,     /* device memory released; its recipe will rebuild it */
    CK_TENSOR_COMING_BACK = 4  /* fetched; the copy in (or the replay) has not finished */
} ck_tensor_state;

/* "auto", "keep", "offload", "recompute" ("?" for anything else). */
CK_API const char *ck_tier_name(ck_tier tier);
/* "resident", "moving_out", "offloaded", "dropped", "coming_back". */
CK_API const char *ck_tensor_state_name(ck_tensor_state state);

#define CK_TAG_MAX 64 /* a tag name is at most CK_TAG_MAX - 1 bytes */

/* Name the live allocation that starts at ptr and give its tier. Tagging a
 * tagged tensor again renames it and changes its tier (not while stashed).
 * CK_ERR_INVALID: NULL or too long a name, an unknown tier, a stashed tensor,
 * or a small allocation (1 MiB or less: it shares a page). CK_ERR_NOT_OWNED:
 * ptr is not the start of a live allocation of this pool. */
CK_API ck_status ck_tag(ck_pool *pool, void *ptr, const char *name, ck_tier tier);

/* Forget the tag (and recipe) of ptr. Not while stashed (CK_ERR_INVALID). */
CK_API ck_status ck_untag(ck_pool *pool, void *ptr);

/* How to rebuild the tagged tensor at ptr: the recipe is checked
 * (ck_recipe_check), its result must fit the allocation and it may not read
 * the tensor itself. The recipe is copied. Inputs inside the pool must lie in
 * live allocations; freeing one later makes a fetch that needs it fail with
 * CK_ERR_NOT_OWNED naming the input. A NULL recipe removes it. Not while
 * stashed. */
CK_API ck_status ck_set_recipe(ck_pool *pool, void *ptr, const ck_recipe *recipe);

/* Forward is done with ptr (its last use is queued on stream). Applies the
 * tier (see above) without waiting. On failure (no host memory within
 * host_budget, a copy the backend refused, RECOMPUTE without a recipe) the
 * tensor stays resident and not stashed. Stashing twice is CK_ERR_INVALID. */
CK_API ck_status ck_stash(ck_pool *pool, void *ptr, ck_stream stream);

/* Backward needs ptr on stream: work queued on stream after this call sees
 * the tensor as it was at the stash. A tensor not stashed is CK_ERR_INVALID.
 * No device memory within the budget is CK_ERR_NOMEM, a recipe input freed
 * since is CK_ERR_NOT_OWNED; either way the tensor stays stashed and a later
 * fetch can succeed. With verify=1 a tensor that comes back different is
 * CK_ERR_CORRUPT naming its tag. */
CK_API ck_status ck_fetch(ck_pool *pool, void *ptr, ck_stream stream);

/* Mark a training iteration. step_end without a step_begin, or a second
 * step_begin before step_end, is CK_ERR_INVALID. The engine counts steps and,
 * at step_end, completes the releases whose copies have finished. */
CK_API ck_status ck_step_begin(ck_pool *pool);
CK_API ck_status ck_step_end(ck_pool *pool);

typedef struct ck_tensor_status {
    size_t struct_size;       /* set by the caller to sizeof(ck_tensor_status) */
    char name[CK_TAG_MAX];
    ck_tier tier;             /* as tagged */
    ck_tier applied;          /* the tier the last stash applied (AUTO resolved), or AUTO */
    ck_tensor_state state;
    int stashed;              /* 1 between ck_stash and ck_fetch */
    int has_recipe;
    size_t size;              /* bytes of the allocation */
    size_t device_bytes;      /* physical bytes under it held for it alone (0 when released) */
} ck_tensor_status;

/* What the engine knows of the tagged tensor at ptr. Reading it also moves
 * finished copies along (a moving tensor whose copy completed is reported
 * offloaded). An untagged allocation is CK_ERR_INVALID. */
CK_API ck_status ck_tensor_info(ck_pool *pool, const void *ptr, ck_tensor_status *out);

#ifdef __cplusplus
}
#endif

#endif /* CKALLOC_TIER_H */
