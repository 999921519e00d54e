/* The tier engine: tag, stash, fetch; offload to host memory and back,
 * recompute from a recipe, at the same address, with the data intact. */
#include "ckalloc/tier.h"
#include "pool.h"
#include "hostmem.h"
#include "testutil.h"

#include <inttypes.h>
#include <math.h>
#include <time.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static ck_tensor_status info_of(ck_pool *p, const void *ptr) {
    ck_tensor_status s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    ASSERT_OK(ck_tensor_info(p, ptr, &s));
    return s;
}

/* Poll until the stash's release happened (or 10 s pass). */
static ck_tensor_state settle_state(ck_pool *p, const void *ptr) {
    for (int i = 0; i < 100000; i++) {
        ck_tensor_state s = info_of(p, ptr).state;
        if (s != CK_TENSOR_MOVING_OUT && s != CK_TENSOR_COMING_BACK) return s;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return info_of(p, ptr).state;
}

static void fill(void *ptr, size_t n, uint32_t seed) {
    uint32_t *w = ptr;
    for (size_t i = 0; i < n / 4; i++) w[i] = seed * 2654435761u + (uint32_t)i;
}

static int same(const void *ptr, size_t n, uint32_t seed) {
    const uint32_t *w = ptr;
    for (size_t i = 0; i < n / 4; i++)
        if (w[i] != seed * 2654435761u + (uint32_t)i) return 0;
    return 1;
}

static int64_t phys(ck_pool *p) { return stats_of(p).physical_bytes.current; }

START_TEST(t_names) {
    ck_assert_str_eq(ck_tier_name(CK_TIER_AUTO), "auto");
    ck_assert_str_eq(ck_tier_name(CK_TIER_KEEP), "keep");
    ck_assert_str_eq(ck_tier_name(CK_TIER_OFFLOAD), "offload");
    ck_assert_str_eq(ck_tier_name(CK_TIER_RECOMPUTE), "recompute");
    ck_assert_str_eq(ck_tier_name((ck_tier)9), "?");
    ck_assert_str_eq(ck_tensor_state_name(CK_TENSOR_RESIDENT), "resident");
    ck_assert_str_eq(ck_tensor_state_name(CK_TENSOR_MOVING_OUT), "moving_out");
    ck_assert_str_eq(ck_tensor_state_name(CK_TENSOR_OFFLOADED), "offloaded");
    ck_assert_str_eq(ck_tensor_state_name(CK_TENSOR_DROPPED), "dropped");
    ck_assert_str_eq(ck_tensor_state_name(CK_TENSOR_COMING_BACK), "coming_back");
    ck_assert_str_eq(ck_tensor_state_name((ck_tensor_state)-1), "?");
    ck_assert_str_eq(ck_status_str(CK_ERR_CORRUPT), "CK_ERR_CORRUPT");
}
END_TEST

/* Bad input: a clear error, nothing changed. */
START_TEST(t_bad_input) {
    ck_pool *p = host_pool(NULL);
    void *x, *small;
    ASSERT_OK(ck_malloc(p, &x, 8 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, &small, 4 * KiB, NULL));
    char longname[CK_TAG_MAX + 8];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';

    ck_assert_int_eq(ck_tag(NULL, x, "x", CK_TIER_KEEP), CK_ERR_INVALID);
    ck_assert_int_eq(ck_tag(p, x, NULL, CK_TIER_KEEP), CK_ERR_INVALID);
    ck_assert_int_eq(ck_tag(p, x, "", CK_TIER_KEEP), CK_ERR_INVALID);
    ck_assert_int_eq(ck_tag(p, x, longname, CK_TIER_KEEP), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "too long"));
    ck_assert_int_eq(ck_tag(p, x, "x", (ck_tier)7), CK_ERR_INVALID);
    ck_assert_int_eq(ck_tag(p, x, "a,b", CK_TIER_KEEP), CK_ERR_INVALID);
    ck_assert_int_eq(ck_tag(p, x, "a|b", CK_TIER_KEEP), CK_ERR_INVALID);
    ck_assert_int_eq(ck_tag(p, x, "a\nb", CK_TIER_KEEP), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "control character"));
    ck_assert_int_eq(ck_tag(p, small, "s", CK_TIER_OFFLOAD), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "small allocation"));
    ck_assert_int_eq(ck_tag(p, (char *)x + 4096, "x", CK_TIER_KEEP), CK_ERR_NOT_OWNED);
    int on_stack;
    ck_assert_int_eq(ck_tag(p, &on_stack, "x", CK_TIER_KEEP), CK_ERR_NOT_OWNED);

    /* Untagged: every other call says so. */
    ck_tensor_status s;
    s.struct_size = sizeof s;
    ck_assert_int_eq(ck_tensor_info(p, x, &s), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "not tagged"));
    ck_assert_int_eq(ck_stash(p, x, NULL), CK_ERR_INVALID);
    ck_assert_int_eq(ck_fetch(p, x, NULL), CK_ERR_INVALID);
    ck_assert_int_eq(ck_untag(p, x), CK_ERR_INVALID);
    ck_assert_int_eq(ck_set_recipe(p, x, NULL), CK_ERR_INVALID);
    s.struct_size = 0;
    ck_assert_int_eq(ck_tensor_info(p, x, &s), CK_ERR_INVALID);

    ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
    /* Fetch before stash, stash twice, retag or untag while stashed. */
    ck_assert_int_eq(ck_fetch(p, x, NULL), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "not stashed"));
    ck_assert_int_eq(info_of(p, x).stashed, 0);
    ck_assert_int_eq(ck_stash(p, x, NULL), CK_OK);
    ck_assert_int_eq(ck_stash(p, x, NULL), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "stashed already"));
    ck_assert_int_eq(ck_tag(p, x, "y", CK_TIER_KEEP), CK_ERR_INVALID);
    ck_assert_int_eq(ck_untag(p, x), CK_ERR_INVALID);
    ck_assert_int_eq(ck_set_recipe(p, x, NULL), CK_ERR_INVALID);
    ck_tensor_status i = info_of(p, x);
    ck_assert_str_eq(i.name, "x");
    ck_assert_int_eq(i.tier, CK_TIER_OFFLOAD);
    ck_assert_int_eq(i.stashed, 1);
    ASSERT_OK(ck_fetch(p, x, NULL));
    ck_assert_int_eq(ck_fetch(p, x, NULL), CK_ERR_INVALID);
    /* RECOMPUTE without a recipe cannot be stashed. */
    ASSERT_OK(ck_tag(p, x, "x2", CK_TIER_RECOMPUTE));
    ck_assert_int_eq(ck_stash(p, x, NULL), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "no recipe"));
    ck_assert_int_eq(info_of(p, x).stashed, 0);
    ck_assert_str_eq(info_of(p, x).name, "x2");
    ASSERT_OK(ck_untag(p, x));
    ck_assert_int_eq(ck_tensor_info(p, x, &s), CK_ERR_INVALID);

    /* Steps. */
    ck_assert_int_eq(ck_step_end(p), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "no step has begun"));
    ASSERT_OK(ck_step_begin(p));
    ck_assert_int_eq(ck_step_begin(p), CK_ERR_INVALID);
    ASSERT_OK(ck_step_end(p));
    ck_assert_int_eq(ck_step_end(p), CK_ERR_INVALID);
    ck_assert_int_eq(ck_step_begin(NULL), CK_ERR_INVALID);

    /* A destroyed stream is refused. */
    ck_stream st;
    ASSERT_OK(ck_stream_create(p, &st));
    ASSERT_OK(ck_stream_destroy(p, st));
    ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
    ck_assert_int_eq(ck_stash(p, x, st), CK_ERR_INVALID);
    ck_assert_int_eq(info_of(p, x).stashed, 0);

    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_free(p, small, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Offload and back: physical memory drops by all but one chunk, the data
 * comes back bit for bit at the same address, and the counters say so. */
START_TEST(t_offload_roundtrip) {
    ck_pool *p = host_pool("chunk_align=4M");
    size_t sizes[] = {4 * MiB, 16 * MiB + 4096, 33 * MiB};
    for (size_t k = 0; k < 3; k++) {
        size_t n = sizes[k];
        void *pad, *x, *pad2;
        ASSERT_OK(ck_malloc(p, &pad, 3 * MiB, NULL)); /* neighbours share chunks */
        ASSERT_OK(ck_malloc(p, &x, n, NULL));
        ASSERT_OK(ck_malloc(p, &pad2, 3 * MiB, NULL));
        fill(x, n, (uint32_t)k + 1);
        ASSERT_OK(ck_tag(p, x, "layers.0.act", CK_TIER_OFFLOAD));
        ck_tensor_status s0 = info_of(p, x);
        ck_assert_int_eq(s0.applied, CK_TIER_AUTO); /* nothing applied yet */
        int64_t before = phys(p);
        ASSERT_OK(ck_stash(p, x, NULL));
        ck_assert_int_eq(settle_state(p, x), CK_TENSOR_OFFLOADED);
        ck_tensor_status s = info_of(p, x);
        ck_assert_int_eq(s.applied, CK_TIER_OFFLOAD);
        ck_assert_uint_eq(s.device_bytes, 0);
        int64_t after = phys(p);
        ck_assert_msg(before - after >= (int64_t)(n - 2 * MiB), "released %lld of %zu",
                      (long long)(before - after), n);
        ck_stats st = stats_of(p);
        ck_assert_int_eq(st.offloaded_bytes.current, (int64_t)n);
        ck_assert_int_ge(st.host_bytes.current, (int64_t)n);
        ASSERT_OK(ck_fetch(p, x, NULL));
        ASSERT_OK(ck_stream_synchronize(p, NULL));
        ck_assert_msg(same(x, n, (uint32_t)k + 1), "data differs after the round trip");
        ck_assert_int_eq(settle_state(p, x), CK_TENSOR_RESIDENT);
        ck_assert_int_eq(phys(p), before);
        st = stats_of(p);
        ck_assert_int_eq(st.offloaded_bytes.current, 0);
        ck_assert_int_eq(st.moving_bytes.current, 0);
        ASSERT_OK(ck_free(p, x, NULL));
        ASSERT_OK(ck_free(p, pad, NULL));
        ASSERT_OK(ck_free(p, pad2, NULL));
    }
    ck_stats st = stats_of(p);
    ck_assert_uint_eq(st.num_stashes, 3);
    ck_assert_uint_eq(st.num_fetches, 3);
    ck_assert_uint_eq(st.prefetch_misses, 3);
    ck_assert_uint_eq(st.bytes_to_host, 4 * MiB + 16 * MiB + 4096 + 33 * MiB);
    ck_assert_uint_eq(st.bytes_to_device, st.bytes_to_host);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* y = 2 * x + x, as a recipe: RECOMPUTE drops y and rebuilds it. */
static void recipe_of(ck_recipe *r, const float *x, size_t nel) {
    ck_recipe_init(r);
    int64_t shape[1] = {(int64_t)nel};
    int in = ck_recipe_input(r, x, CK_DTYPE_F32, 1, shape);
    ck_assert_int_eq(in, 0);
    ck_step *s = ck_recipe_step(r, CK_OP_SCALE, CK_DTYPE_F32);
    s->in[0] = 0;
    s->alpha = 2.0f;
    s = ck_recipe_step(r, CK_OP_ADD, CK_DTYPE_F32);
    s->in[1] = 0;
}

START_TEST(t_recompute_roundtrip) {
    ck_pool *p = host_pool("chunk_align=4M");
    size_t nel = 2 * 1024 * 1024, n = nel * 4; /* 8 MiB */
    float *x, *y;
    ASSERT_OK(ck_malloc(p, (void **)&x, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&y, n, NULL));
    for (size_t i = 0; i < nel; i++) x[i] = (float)(i % 1000) * 0.25f - 7.0f;
    for (size_t i = 0; i < nel; i++) y[i] = 3.0f * x[i];
    ck_recipe r;
    recipe_of(&r, x, nel);
    ASSERT_OK(ck_tag(p, y, "layers.0.mlp.act", CK_TIER_RECOMPUTE));
    ASSERT_OK(ck_set_recipe(p, y, &r));
    ck_assert_int_eq(info_of(p, y).has_recipe, 1);
    int64_t before = phys(p);
    ASSERT_OK(ck_stash(p, y, NULL));
    ck_assert_int_eq(settle_state(p, y), CK_TENSOR_DROPPED);
    ck_assert_int_ge(before - phys(p), (int64_t)(n - 2 * MiB));
    ck_assert_int_eq(stats_of(p).dropped_bytes.current, (int64_t)n);
    ASSERT_OK(ck_fetch(p, y, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (size_t i = 0; i < nel; i++)
        if (y[i] != 3.0f * x[i]) ck_abort_msg("y[%zu] = %g, expected %g", i, y[i], 3.0f * x[i]);
    ck_assert_uint_eq(stats_of(p).num_replays, 1);

    /* A recipe that reads the tensor itself, or writes more than it holds. */
    ck_recipe bad;
    recipe_of(&bad, y, nel);
    ck_assert_int_eq(ck_set_recipe(p, y, &bad), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "itself"));
    recipe_of(&bad, x, nel * 2); /* reads past x's end */
    ck_assert_int_ne(ck_set_recipe(p, y, &bad), CK_OK);

    /* Freeing an input: the fetch names it, nothing is written, y stays
     * stashed. */
    ASSERT_OK(ck_stash(p, y, NULL));
    ck_assert_int_eq(settle_state(p, y), CK_TENSOR_DROPPED);
    ASSERT_OK(ck_free(p, x, NULL));
    void *x2;
    ASSERT_OK(ck_malloc(p, &x2, n, NULL)); /* possibly at x's address: still refused */
    ck_assert_int_eq(ck_fetch(p, y, NULL), CK_ERR_NOT_OWNED);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "input 0"));
    ck_tensor_status s = info_of(p, y);
    ck_assert_int_eq(s.state, CK_TENSOR_DROPPED);
    ck_assert_int_eq(s.stashed, 1);
    /* Freeing a dropped tensor is fine. */
    ASSERT_OK(ck_free(p, y, NULL));
    ck_assert_int_eq(stats_of(p).dropped_bytes.current, 0);
    ASSERT_OK(ck_free(p, x2, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* A recipe input that is itself offloaded comes back first; the input's own
 * fetch is then a prefetch hit. */
START_TEST(t_recursive_fetch) {
    ck_pool *p = host_pool("chunk_align=4M,prefetch=0");
    size_t nel = 1024 * 1024, n = nel * 4;
    float *x, *y;
    ASSERT_OK(ck_malloc(p, (void **)&x, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&y, n, NULL));
    for (size_t i = 0; i < nel; i++) x[i] = (float)i;
    ck_recipe r;
    recipe_of(&r, x, nel);
    ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
    ASSERT_OK(ck_tag(p, y, "y", CK_TIER_RECOMPUTE));
    ASSERT_OK(ck_set_recipe(p, y, &r));
    ASSERT_OK(ck_stash(p, x, NULL));
    ASSERT_OK(ck_stash(p, y, NULL));
    size_t trimmed;
    ASSERT_OK(ck_trim(p, &trimmed)); /* completes the releases */
    ck_assert_int_eq(info_of(p, x).state, CK_TENSOR_OFFLOADED);
    ck_assert_int_eq(info_of(p, y).state, CK_TENSOR_DROPPED);
    ASSERT_OK(ck_fetch(p, y, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (size_t i = 0; i < nel; i++) ck_assert_msg(y[i] == 3.0f * (float)i, "y[%zu] = %g", i, y[i]);
    ck_assert_int_eq(info_of(p, x).stashed, 1); /* back, but still x's to fetch */
    ASSERT_OK(ck_fetch(p, x, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (size_t i = 0; i < nel; i++) ck_assert_msg(x[i] == (float)i, "x[%zu] = %g", i, x[i]);
    ck_stats st = stats_of(p);
    ck_assert_uint_eq(st.prefetch_hits, 1);
    ck_assert_uint_eq(st.prefetch_misses, 1);
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_free(p, y, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Fetching one tensor starts bringing back those stashed before it. */
START_TEST(t_prefetch) {
    ck_pool *p = host_pool("chunk_align=4M,prefetch=64M");
    void *t[4];
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(ck_malloc(p, &t[i], 16 * MiB, NULL));
        fill(t[i], 16 * MiB, (uint32_t)(10 + i));
        char name[32];
        snprintf(name, sizeof name, "layers.%d.act", i);
        ASSERT_OK(ck_tag(p, t[i], name, CK_TIER_OFFLOAD));
    }
    for (int i = 0; i < 4; i++) ASSERT_OK(ck_stash(p, t[i], NULL));
    for (int i = 0; i < 4; i++) ck_assert_int_eq(settle_state(p, t[i]), CK_TENSOR_OFFLOADED);
    /* Backward: last stashed first. */
    for (int i = 3; i >= 0; i--) {
        ASSERT_OK(ck_fetch(p, t[i], NULL));
        ASSERT_OK(ck_stream_synchronize(p, NULL));
        ck_assert_msg(same(t[i], 16 * MiB, (uint32_t)(10 + i)), "tensor %d differs", i);
        if (i > 0) ck_assert_int_ne(settle_state(p, t[i - 1]), CK_TENSOR_OFFLOADED);
    }
    ck_stats st = stats_of(p);
    ck_assert_uint_eq(st.prefetch_misses, 1);
    ck_assert_uint_eq(st.prefetch_hits, 3);
    for (int i = 0; i < 4; i++) ASSERT_OK(ck_free(p, t[i], NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Budget pressure evicts AUTO tensors left resident, and prefetched ones,
 * before an allocation fails; KEEP stays. */
START_TEST(t_pressure) {
    ck_pool *p = host_pool("budget=64M,chunk_align=4M,prefetch=0");
    void *k, *a[2], *big;
    ASSERT_OK(ck_malloc(p, &k, 16 * MiB, NULL));
    ASSERT_OK(ck_tag(p, k, "keep", CK_TIER_KEEP));
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(ck_malloc(p, &a[i], 12 * MiB, NULL));
        fill(a[i], 12 * MiB, (uint32_t)(20 + i));
        ASSERT_OK(ck_tag(p, a[i], "auto", CK_TIER_AUTO));
    }
    ASSERT_OK(ck_stash(p, k, NULL));
    for (int i = 0; i < 2; i++) ASSERT_OK(ck_stash(p, a[i], NULL));
    /* Not near the budget at the stash: left resident. */
    ck_assert_int_eq(info_of(p, a[0]).state, CK_TENSOR_RESIDENT);
    ck_assert_int_eq(info_of(p, a[0]).applied, CK_TIER_KEEP);
    /* 40 MiB cannot fit beside 16 + 24 MiB under 64 MiB: the AUTO ones go. */
    ASSERT_OK(ck_malloc(p, &big, 40 * MiB, NULL));
    ck_assert_int_eq(info_of(p, k).state, CK_TENSOR_RESIDENT);
    int gone = 0;
    for (int i = 0; i < 2; i++) gone += info_of(p, a[i]).state == CK_TENSOR_OFFLOADED;
    ck_assert_int_ge(gone, 1);
    ck_assert_int_le(stats_of(p).physical_bytes.current, (int64_t)(64 * MiB));
    ASSERT_OK(ck_free(p, big, NULL));
    for (int i = 1; i >= 0; i--) {
        ASSERT_OK(ck_fetch(p, a[i], NULL));
        ASSERT_OK(ck_stream_synchronize(p, NULL));
        ck_assert_msg(same(a[i], 12 * MiB, (uint32_t)(20 + i)), "auto tensor %d differs", i);
    }
    ASSERT_OK(ck_fetch(p, k, NULL));
    for (int i = 0; i < 2; i++) ASSERT_OK(ck_free(p, a[i], NULL));
    ASSERT_OK(ck_free(p, k, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Host memory is budgeted; a stash that does not fit leaves the tensor
 * resident and usable. */
START_TEST(t_host_budget) {
    ck_pool *p = host_pool("host_budget=4M");
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 8 * MiB, NULL));
    fill(x, 8 * MiB, 5);
    ASSERT_OK(ck_tag(p, x, "big", CK_TIER_OFFLOAD));
    ck_assert_int_eq(ck_stash(p, x, NULL), CK_ERR_NOMEM);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "host_budget"));
    ck_tensor_status s = info_of(p, x);
    ck_assert_int_eq(s.stashed, 0);
    ck_assert_int_eq(s.state, CK_TENSOR_RESIDENT);
    ck_assert(same(x, 8 * MiB, 5));
    ck_assert_uint_eq(stats_of(p).num_stashes, 0);
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* A copy the backend refuses: the stash fails, the tensor stays; the next
 * stash succeeds and the round trip is exact. */
START_TEST(t_copy_fault) {
    ck_pool *p = host_pool("fault_copy=1,chunk_align=4M");
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 8 * MiB, NULL));
    fill(x, 8 * MiB, 6);
    ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
    ck_assert_int_eq(ck_stash(p, x, NULL), CK_ERR_BACKEND);
    ck_assert_int_eq(info_of(p, x).stashed, 0);
    ck_assert(same(x, 8 * MiB, 6));
    ASSERT_OK(ck_stash(p, x, NULL));
    ck_assert_int_eq(settle_state(p, x), CK_TENSOR_OFFLOADED);
    ASSERT_OK(ck_fetch(p, x, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    ck_assert(same(x, 8 * MiB, 6));
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* An event call that fails, at each event call of an offload and a
 * recompute round trip on two streams: a failed stash leaves the tensor
 * resident, unstashed and intact; a failed fetch is an error and the retry
 * brings it back; nothing leaks. */
START_TEST(t_event_fault) {
    int hit_stash = 0, hit_fetch = 0;
    for (int n = 1; n <= 24; n++) {
        char conf[96];
        snprintf(conf, sizeof conf, "fault_event=%d,chunk_align=4M,verify=1", n);
        ck_pool *p = host_pool(conf);
        ck_stream s2;
        ASSERT_OK(ck_stream_create(p, &s2));
        float *x, *y;
        ASSERT_OK(ck_malloc(p, (void **)&x, 4 * MiB, NULL));
        ASSERT_OK(ck_malloc(p, (void **)&y, 4 * MiB, NULL));
        fill(x, 4 * MiB, 21);
        ck_recipe r;
        recipe_of(&r, x, MiB);
        ck_status st = ck_replay(p, &r, y, 4 * MiB, NULL);
        if (st == CK_OK) st = ck_stream_synchronize(p, NULL);
        if (st != CK_OK) { /* the replay's own event calls */
            ck_assert_int_eq(st, CK_ERR_BACKEND);
            ASSERT_OK(ck_replay(p, &r, y, 4 * MiB, NULL));
            ASSERT_OK(ck_stream_synchronize(p, NULL));
        }
        float *want = malloc(4 * MiB);
        ck_assert_ptr_nonnull(want);
        memcpy(want, y, 4 * MiB);
        ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
        ASSERT_OK(ck_tag(p, y, "y", CK_TIER_RECOMPUTE));
        ASSERT_OK(ck_set_recipe(p, y, &r));
        void *t[2] = {y, x};
        for (int k = 0; k < 2; k++) {
            st = ck_stash(p, t[k], NULL);
            if (st != CK_OK) {
                ck_assert_msg(st == CK_ERR_BACKEND, "stash: %s", ck_last_error());
                ck_assert_int_eq(info_of(p, t[k]).stashed, 0);
                ck_assert_int_eq(info_of(p, t[k]).state, CK_TENSOR_RESIDENT);
                hit_stash++;
                ASSERT_OK(ck_stash(p, t[k], NULL));
            }
        }
        settle_state(p, x);
        settle_state(p, y);
        for (int k = 1; k >= 0; k--) {
            st = ck_fetch(p, t[k], s2);
            if (st != CK_OK) {
                ck_assert_msg(st == CK_ERR_BACKEND, "fetch: %s", ck_last_error());
                ck_assert_int_eq(info_of(p, t[k]).stashed, 1);
                hit_fetch++;
                ASSERT_OK(ck_fetch(p, t[k], s2));
            }
        }
        ASSERT_OK(ck_stream_synchronize(p, s2));
        ck_assert_msg(same(x, 4 * MiB, 21), "fault_event=%d: x changed", n);
        ck_assert_msg(memcmp(y, want, 4 * MiB) == 0, "fault_event=%d: y changed", n);
        ASSERT_OK(ck_free(p, x, s2));
        ASSERT_OK(ck_free(p, y, s2));
        ASSERT_OK(ck_stream_synchronize(p, s2));
        ASSERT_OK(ck_stream_destroy(p, s2));
        ck_stats sa = stats_of(p);
        ck_assert_int_eq(sa.allocated_bytes.current, 0);
        ck_assert_int_eq(sa.offloaded_bytes.current, 0);
        ASSERT_OK(ck_pool_destroy(p));
        free(want);
    }
    ck_assert_msg(hit_stash > 0 && hit_fetch > 0, "the faults hit %d stashes and %d fetches",
                  hit_stash, hit_fetch);
}
END_TEST

/* fetch_wait_ns and replay_ns, on the simulated clock: what the consumer
 * stream spent in each fetch, as the caller's own events around it see it;
 * nothing for a tensor that never left. */
static double fetch_span_ms(ck_pool *p, void *x) {
    ck_event a, z;
    ASSERT_OK(ck_event_create(p, &a));
    ASSERT_OK(ck_event_create(p, &z));
    ASSERT_OK(ck_event_record(p, a, NULL));
    ASSERT_OK(ck_fetch(p, x, NULL));
    ASSERT_OK(ck_event_record(p, z, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    float ms = -1;
    ASSERT_OK(ck_event_elapsed_ms(p, a, z, &ms));
    ASSERT_OK(ck_event_destroy(p, a));
    ASSERT_OK(ck_event_destroy(p, z));
    (void)info_of(p, x); /* a tier call: the engine reads its spans */
    return ms;
}

START_TEST(t_fetch_wait) {
    ck_pool *p = host_pool("sim_clock=1,sim_h2d=1GB,sim_d2h=1GB,sim_bandwidth=1000G,"
                           "sim_flops=1G,chunk_align=4M,prefetch=0");
    float *x, *y, *k, *in;
    ASSERT_OK(ck_malloc(p, (void **)&x, 8 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&y, 8 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&k, 4 * MiB, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&in, 8 * MiB, NULL));
    fill(x, 8 * MiB, 31);
    fill(in, 8 * MiB, 32);
    ck_recipe r;
    recipe_of(&r, in, 2 * MiB); /* an input that stays: y's fetch only replays */
    ASSERT_OK(ck_replay(p, &r, y, 8 * MiB, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    double flops = 0;
    ASSERT_OK(ck_recipe_cost(&r, &flops, NULL, NULL));
    ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
    ASSERT_OK(ck_tag(p, y, "y", CK_TIER_RECOMPUTE));
    ASSERT_OK(ck_tag(p, k, "k", CK_TIER_KEEP));
    ASSERT_OK(ck_set_recipe(p, y, &r));
    ASSERT_OK(ck_stash(p, k, NULL));
    ASSERT_OK(ck_stash(p, x, NULL));
    ASSERT_OK(ck_stash(p, y, NULL));
    ck_assert_int_eq(settle_state(p, x), CK_TENSOR_OFFLOADED);
    ck_assert_int_eq(settle_state(p, y), CK_TENSOR_DROPPED);
    ck_stats s0 = stats_of(p);
    ck_assert_uint_eq(s0.fetch_wait_ns, 0);
    ck_assert_uint_eq(s0.replay_ns, 0);

    double kept = fetch_span_ms(p, k);
    ck_stats s1 = stats_of(p);
    ck_assert_uint_eq(s1.fetch_wait_ns, 0); /* never left */
    ck_assert(kept < 1e-3);

    double y_ms = fetch_span_ms(p, y); /* the replay: flops / 1 GFLOP/s */
    ck_stats s2 = stats_of(p);
    ck_assert_msg(fabs((double)s2.replay_ns - flops) <= 1e-3 * flops,
                  "replay_ns %" PRIu64 " for %.0f flops at 1 GFLOP/s", s2.replay_ns, flops);
    ck_assert_msg(fabs((double)s2.fetch_wait_ns - y_ms * 1e6) <= 1e3,
                  "fetch_wait_ns %" PRIu64 ", the caller's events %.6f ms", s2.fetch_wait_ns, y_ms);

    double x_ms = fetch_span_ms(p, x); /* at least the copy in: 8 MiB at 1 GB/s */
    ck_stats s3 = stats_of(p);
    ck_assert_msg(x_ms >= 8.388608 - 1e-3, "the copy in took %.6f ms", x_ms);
    ck_assert_msg(fabs((double)(s3.fetch_wait_ns - s2.fetch_wait_ns) - x_ms * 1e6) <= 1e3,
                  "fetch_wait_ns grew by %" PRIu64 ", the caller's events %.6f ms",
                  s3.fetch_wait_ns - s2.fetch_wait_ns, x_ms);
    ck_assert_uint_eq(s3.replay_ns, s2.replay_ns);
    ck_assert(same(x, 8 * MiB, 31));
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_free(p, y, NULL));
    ASSERT_OK(ck_free(p, k, NULL));
    ASSERT_OK(ck_free(p, in, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Freeing a tensor while its copy is in flight, or while offloaded: the
 * memory is reused only once the copy is done, nothing leaks, the counters
 * return to zero. */
START_TEST(t_free_while_moving) {
    ck_pool *p = host_pool("chunk_align=4M");
    for (int round = 0; round < 20; round++) {
        void *x;
        ASSERT_OK(ck_malloc(p, &x, 32 * MiB, NULL));
        ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
        ASSERT_OK(ck_stash(p, x, NULL));
        if (round % 2) settle_state(p, x);
        ASSERT_OK(ck_free(p, x, NULL));
    }
    size_t got;
    ASSERT_OK(ck_trim(p, &got));
    ck_stats st = stats_of(p);
    ck_assert_int_eq(st.allocated_bytes.current, 0);
    ck_assert_int_eq(st.offloaded_bytes.current, 0);
    ck_assert_int_eq(st.moving_bytes.current, 0);
    ck_assert_int_eq(st.physical_bytes.current, 0);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* verify=1: an input changed between stash and fetch makes the rebuilt
 * tensor differ: CK_ERR_CORRUPT naming the tag. An intact one passes. */
START_TEST(t_verify) {
    ck_pool *p = host_pool("verify=1,chunk_align=4M,prefetch=0");
    size_t nel = 1024 * 1024, n = nel * 4;
    float *x, *y, *z;
    ASSERT_OK(ck_malloc(p, (void **)&x, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&y, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&z, n, NULL));
    for (size_t i = 0; i < nel; i++) x[i] = (float)i, y[i] = 3.0f * (float)i;
    fill(z, n, 9);
    ck_recipe r;
    recipe_of(&r, x, nel);
    ASSERT_OK(ck_tag(p, y, "layers.7.mlp.act", CK_TIER_RECOMPUTE));
    ASSERT_OK(ck_set_recipe(p, y, &r));
    ASSERT_OK(ck_tag(p, z, "z", CK_TIER_OFFLOAD));
    ASSERT_OK(ck_stash(p, y, NULL));
    ASSERT_OK(ck_stash(p, z, NULL));
    ck_assert_int_eq(settle_state(p, y), CK_TENSOR_DROPPED);
    ck_assert_int_eq(settle_state(p, z), CK_TENSOR_OFFLOADED);
    ASSERT_OK(ck_fetch(p, z, NULL));
    x[12345] += 1.0f; /* the recipe's input moved on */
    ck_assert_int_eq(ck_fetch(p, y, NULL), CK_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "layers.7.mlp.act"));
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_free(p, y, NULL));
    ASSERT_OK(ck_free(p, z, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* On the cuda backend (the stand-in driver): host memory is pinned with
 * cuMemHostRegister, and the round trip is the same. */
START_TEST(t_cuda_offload) {
    fake_cuda_env();
    ck_pool *p = pool_from_conf("backend=cuda,live=0,chunk_align=4M");
    void *x;
    ASSERT_OK(ck_malloc(p, &x, 8 * MiB, NULL));
    fill(x, 8 * MiB, 3); /* the stand-in's device memory is host memory */
    ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
    int64_t before = phys(p);
    ASSERT_OK(ck_stash(p, x, NULL));
    ck_assert_int_eq(settle_state(p, x), CK_TENSOR_OFFLOADED);
    ck_assert_int_ge(before - phys(p), (int64_t)(6 * MiB));
    ASSERT_OK(ck_fetch(p, x, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    ck_assert(same(x, 8 * MiB, 3));

    /* A stream being captured into a CUDA graph: stash and fetch refuse it,
     * nothing changes; after the capture they work. */
    typedef int (*begin_fn)(ck_stream, int);
    typedef int (*end_fn)(ck_stream, void **);
    begin_fn begin = (begin_fn)fake_sym("cuStreamBeginCapture_v2");
    end_fn end = (end_fn)fake_sym("cuStreamEndCapture");
    typedef int (*retain_fn)(void **, int);
    typedef int (*set_fn)(void *);
    void *ctx = NULL;
    ck_assert_int_eq(((retain_fn)fake_sym("cuDevicePrimaryCtxRetain"))(&ctx, 0), 0);
    ck_assert_int_eq(((set_fn)fake_sym("cuCtxSetCurrent"))(ctx), 0);
    ck_stream cs;
    ASSERT_OK(ck_stream_create(p, &cs));
    ck_assert_int_eq(begin(cs, 0), 0);
    ck_assert_int_eq(ck_stash(p, x, cs), CK_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ck_last_error(), "capturing"));
    ck_assert_int_eq(info_of(p, x).stashed, 0);
    void *graph = NULL;
    ck_assert_int_eq(end(cs, &graph), 0);
    ASSERT_OK(ck_stash(p, x, cs));
    ck_assert_int_eq(settle_state(p, x), CK_TENSOR_OFFLOADED);
    ck_assert_int_eq(begin(cs, 0), 0);
    ck_assert_int_eq(ck_fetch(p, x, cs), CK_ERR_INVALID);
    ck_assert_int_eq(info_of(p, x).state, CK_TENSOR_OFFLOADED);
    ck_assert_int_eq(end(cs, &graph), 0);
    ASSERT_OK(ck_fetch(p, x, cs));
    ASSERT_OK(ck_stream_synchronize(p, cs));
    ck_assert(same(x, 8 * MiB, 3));
    ASSERT_OK(ck_stream_destroy(p, cs));
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_pool_destroy(p));
    typedef int (*release_fn)(int);
    ck_assert_int_eq(((release_fn)fake_sym("cuDevicePrimaryCtxRelease_v2"))(0), 0);
}
END_TEST


/* Pinned host memory: a private jemalloc arena when jemalloc loads (the
 * test_tier_jemalloc run starts the process with the static TLS it needs),
 * ckalloc's own cache otherwise; either way the program's malloc stays the
 * C library's, and steady-state round trips pin nothing new. */
START_TEST(t_host_allocator) {
    const char *want = getenv("CK_TIER_EXPECT_HOST_ALLOC");
    for (int mode = 0; mode < 3; mode++) {
        const char *conf = mode == 0 ? "chunk_align=4M" : mode == 1 ? "chunk_align=4M,host_alloc=cache"
                                                                     : "chunk_align=4M,host_alloc=jemalloc";
        ck_pool *p = host_pool(conf);
        void *x;
        ASSERT_OK(ck_malloc(p, &x, 8 * MiB, NULL));
        fill(x, 8 * MiB, 77);
        ASSERT_OK(ck_tag(p, x, "x", CK_TIER_OFFLOAD));
        ck_status st = ck_stash(p, x, NULL);
        ck_host_info hi;
        ck__tier_host_info(p, &hi);
        if (mode == 2 && st != CK_OK) {
            /* jemalloc asked for and not loadable here: a clear error. */
            ck_assert_int_eq(st, CK_ERR_BACKEND);
            ck_assert_ptr_nonnull(strstr(ck_last_error(), "host_alloc=jemalloc"));
            ck_assert_int_eq(info_of(p, x).stashed, 0);
            ck_assert_msg(!want || strcmp(want, "jemalloc") != 0, "jemalloc expected: %s", ck_last_error());
            ASSERT_OK(ck_free(p, x, NULL));
            ASSERT_OK(ck_pool_destroy(p));
            continue;
        }
        ck_assert_int_eq(st, CK_OK);
        if (mode == 1) ck_assert_str_eq(hi.allocator, "cache");
        if (mode == 2) ck_assert_str_eq(hi.allocator, "jemalloc");
        if (mode == 0 && want) ck_assert_msg(strcmp(hi.allocator, want) == 0, "allocator %s (%s), expected %s",
                                             hi.allocator, hi.why, want);
        if (strcmp(hi.allocator, "cache") == 0) ck_assert_msg(hi.why[0], "no reason given for the cache");
        uint64_t pins = 0;
        for (int round = 0; round < 6; round++) {
            if (round) ASSERT_OK(ck_stash(p, x, NULL));
            size_t got;
            ASSERT_OK(ck_trim(p, &got));
            ck_assert_int_eq(info_of(p, x).state, CK_TENSOR_OFFLOADED);
            ASSERT_OK(ck_fetch(p, x, NULL));
            ASSERT_OK(ck_stream_synchronize(p, NULL));
            ck_assert(same(x, 8 * MiB, 77));
            ck__tier_host_info(p, &hi);
            if (round == 1) pins = hi.pins;
            if (round > 1) ck_assert_uint_eq(hi.pins, pins); /* steady state: nothing new pinned */
        }
        ck_assert_int_eq(ck__host_malloc_is_jemalloc(), 0);
        ck_assert_int_eq(hi.numa, -2); /* the host backend has no GPU to be near */
        ASSERT_OK(ck_free(p, x, NULL));
        ASSERT_OK(ck_pool_destroy(p));
    }
}
END_TEST

/* Learning across steps: an AUTO tensor the pool had to evict under pressure
 * (a stall: it waits for its copy out) is stashed eagerly in the next step,
 * and that step evicts nothing. */
START_TEST(t_learning) {
    ck_pool *p = host_pool("budget=96M,chunk_align=4M,prefetch=0");
    uint64_t ev[3] = {0};
    for (int stepno = 0; stepno < 3; stepno++) {
        ASSERT_OK(ck_step_begin(p));
        void *a[4], *big;
        for (int i = 0; i < 4; i++) {
            ASSERT_OK(ck_malloc(p, &a[i], 12 * MiB, NULL));
            fill(a[i], 12 * MiB, (uint32_t)(40 + i));
            ASSERT_OK(ck_tag(p, a[i], i == 0 ? "l0" : i == 1 ? "l1" : i == 2 ? "l2" : "l3", CK_TIER_AUTO));
        }
        for (int i = 0; i < 4; i++) ASSERT_OK(ck_stash(p, a[i], NULL));
        if (stepno > 0) {
            ck_assert_int_eq(info_of(p, a[0]).applied, CK_TIER_OFFLOAD); /* learned */
            ck_assert_int_eq(info_of(p, a[3]).applied, CK_TIER_KEEP);    /* backward's first */
        }
        uint64_t before = stats_of(p).num_evictions;
        ASSERT_OK(ck_malloc(p, &big, 56 * MiB, NULL)); /* 48 + 56 > 96: pressure */
        ev[stepno] = stats_of(p).num_evictions - before;
        ASSERT_OK(ck_free(p, big, NULL));
        for (int i = 3; i >= 0; i--) {
            ASSERT_OK(ck_fetch(p, a[i], NULL));
            ASSERT_OK(ck_stream_synchronize(p, NULL));
            ck_assert_msg(same(a[i], 12 * MiB, (uint32_t)(40 + i)), "step %d tensor %d differs", stepno, i);
            ASSERT_OK(ck_free(p, a[i], NULL));
        }
        ASSERT_OK(ck_step_end(p));
    }
    ck_assert_uint_ge(ev[0], 1);
    ck_assert_uint_eq(ev[1], 0);
    ck_assert_uint_eq(ev[2], 0);
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Regressions found by the randomized model test.
 * (a) verify=1 and a recipe whose result is smaller than the allocation
 *     (a size not a multiple of 512): only what the recipe writes is
 *     checked; the padding came back zeroed and read as CK_ERR_CORRUPT.
 * (b) verify=1, the checksum's copy fails: the fetch fails and the tensor
 *     stays stashed; a retry succeeds (it used to be fetched already).
 * (c) a fetch that calls off a copy out in flight: the fetch stream waits
 *     for that copy, so freeing the tensor and reusing or releasing its
 *     memory cannot meet the copy (it used to fault in the copy stream). */
START_TEST(t_regressions) {
    /* (a) */
    ck_pool *p = host_pool("verify=1,chunk_align=4M,prefetch=0");
    void *d;
    ASSERT_OK(ck_malloc(p, &d, 64 * MiB, NULL));
    memset(d, 0xab, 64 * MiB); /* the padding of what follows holds garbage */
    ASSERT_OK(ck_free(p, d, NULL));
    size_t nel = 2 * 1024 * 1024 + 1, n = nel * 4;
    float *x, *y;
    ASSERT_OK(ck_malloc(p, (void **)&x, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&y, n, NULL));
    for (size_t i = 0; i < nel; i++) x[i] = (float)(i % 1000), y[i] = 3.0f * (float)(i % 1000);
    ck_recipe r;
    recipe_of(&r, x, nel);
    ASSERT_OK(ck_tag(p, y, "y", CK_TIER_RECOMPUTE));
    ASSERT_OK(ck_set_recipe(p, y, &r));
    ASSERT_OK(ck_stash(p, y, NULL));
    size_t got;
    ASSERT_OK(ck_trim(p, &got));
    ASSERT_OK(ck_fetch(p, y, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (size_t i = 0; i < nel; i++) ck_assert(y[i] == 3.0f * (float)(i % 1000));
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_free(p, y, NULL));
    ASSERT_OK(ck_pool_destroy(p));

    /* (b) copies: 1 out, 2 in, 3 the check (fails once) */
    p = host_pool("verify=1,chunk_align=4M,fault_copy=3");
    void *t;
    ASSERT_OK(ck_malloc(p, &t, 8 * MiB, NULL));
    fill(t, 8 * MiB, 11);
    ASSERT_OK(ck_tag(p, t, "t", CK_TIER_OFFLOAD));
    ASSERT_OK(ck_stash(p, t, NULL));
    ASSERT_OK(ck_trim(p, &got));
    ck_assert_int_eq(ck_fetch(p, t, NULL), CK_ERR_BACKEND);
    ck_assert_int_eq(info_of(p, t).stashed, 1);
    ASSERT_OK(ck_fetch(p, t, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    ck_assert(same(t, 8 * MiB, 11));
    ck_assert_int_eq(info_of(p, t).stashed, 0);
    ASSERT_OK(ck_free(p, t, NULL));
    ASSERT_OK(ck_pool_destroy(p));

    /* (c) */
    p = host_pool("chunk_align=4M");
    size_t big = 256 * MiB;
    float *z;
    ASSERT_OK(ck_malloc(p, (void **)&z, big, NULL));
    memset(z, 0, big);
    for (int round = 0; round < 4; round++) {
        void *a, *b;
        ASSERT_OK(ck_malloc(p, &a, big, NULL));
        memset(a, 1, big);
        ASSERT_OK(ck_tag(p, a, "a", CK_TIER_OFFLOAD));
        ASSERT_OK(ck_stash(p, a, NULL));
        ASSERT_OK(ck_fetch(p, a, NULL)); /* still moving out: called off */
        ASSERT_OK(ck_free(p, a, NULL));
        ASSERT_OK(ck_malloc(p, &b, big, NULL));
        ck_recipe rz;
        recipe_of(&rz, z, big / 4);
        ASSERT_OK(ck_tag(p, b, "b", CK_TIER_RECOMPUTE));
        ASSERT_OK(ck_set_recipe(p, b, &rz));
        ASSERT_OK(ck_stash(p, b, NULL));
        ck_assert_int_eq(settle_state(p, b), CK_TENSOR_DROPPED); /* released: a's copy is done */
        ASSERT_OK(ck_fetch(p, b, NULL));
        ASSERT_OK(ck_stream_synchronize(p, NULL));
        ck_assert(((float *)b)[12345] == 0.0f);
        ASSERT_OK(ck_free(p, b, NULL));
    }
    ASSERT_OK(ck_free(p, z, NULL));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Stashed tensors hold addresses without memory: with a 32 MiB reservation
 * and budget, six 24 MiB tensors live at once (five of them offloaded), the
 * pool reserving more address space as it needs; each comes back intact. */
START_TEST(t_va_headroom) {
    ck_pool *p = host_pool("va=32M,budget=32M,chunk_align=4M");
    void *t[6];
    for (int i = 0; i < 6; i++) {
        ASSERT_OK(ck_malloc(p, &t[i], 24 * MiB, NULL));
        fill(t[i], 24 * MiB, (uint32_t)(60 + i));
        ASSERT_OK(ck_tag(p, t[i], "t", CK_TIER_OFFLOAD));
        ASSERT_OK(ck_stash(p, t[i], NULL));
        size_t got;
        ASSERT_OK(ck_trim(p, &got));
        ck_assert_int_le(phys(p), (int64_t)(32 * MiB));
    }
    for (int i = 5; i >= 0; i--) {
        ASSERT_OK(ck_fetch(p, t[i], NULL));
        ASSERT_OK(ck_stream_synchronize(p, NULL));
        ck_assert_msg(same(t[i], 24 * MiB, (uint32_t)(60 + i)), "tensor %d differs", i);
        ASSERT_OK(ck_free(p, t[i], NULL));
    }
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Prefetch's other half: from the second step on, the last prefetch window
 * of forward stays resident even when tagged OFFLOAD (backward needs it
 * first); with prefetch=0 everything goes out as asked. */
START_TEST(t_tail_resident) {
    for (int pf = 0; pf < 2; pf++) {
        ck_pool *p = host_pool(pf ? "chunk_align=4M,prefetch=8M" : "chunk_align=4M,prefetch=0");
        for (int stepno = 0; stepno < 2; stepno++) {
            ASSERT_OK(ck_step_begin(p));
            void *a[6];
            for (int i = 0; i < 6; i++) {
                ASSERT_OK(ck_malloc(p, &a[i], 8 * MiB, NULL));
                fill(a[i], 8 * MiB, (uint32_t)(70 + i));
                ASSERT_OK(ck_tag(p, a[i], "t", CK_TIER_OFFLOAD));
                ASSERT_OK(ck_stash(p, a[i], NULL));
            }
            size_t got;
            ASSERT_OK(ck_trim(p, &got));
            for (int i = 0; i < 6; i++) {
                ck_tensor_status s = info_of(p, a[i]);
                int kept = pf && stepno == 1 && i == 5; /* the last 8 MiB */
                ck_assert_msg(s.applied == (kept ? CK_TIER_KEEP : CK_TIER_OFFLOAD) &&
                                  s.state == (kept ? CK_TENSOR_RESIDENT : CK_TENSOR_OFFLOADED),
                              "prefetch %d step %d tensor %d: applied %s, %s", pf, stepno, i,
                              ck_tier_name(s.applied), ck_tensor_state_name(s.state));
            }
            for (int i = 5; i >= 0; i--) {
                ASSERT_OK(ck_fetch(p, a[i], NULL));
                ASSERT_OK(ck_stream_synchronize(p, NULL));
                ck_assert(same(a[i], 8 * MiB, (uint32_t)(70 + i)));
                ASSERT_OK(ck_free(p, a[i], NULL));
            }
            ASSERT_OK(ck_step_end(p));
        }
        ASSERT_OK(ck_pool_destroy(p));
    }
}
END_TEST

/* Regressions from a review of the engine.
 * (d) an AUTO tensor with a recipe whose input was freed was dropped under
 *     pressure, so it could never come back: now it is copied out instead.
 * (e) a nested fetch cleared the parent's hold on an input it had brought
 *     back (busy was a flag), so the next input's restore evicted it and
 *     the parent's replay failed: busy is a count now.
 * (f) freeing a tensor that a queued replay still reads (the engine's
 *     event on it was dropped): the memory is reused only after the read. */
static void one_input_recipe(ck_recipe *r, const void *in, size_t nel, ck_op op, float alpha) {
    ck_recipe_init(r);
    int64_t sh[1] = {(int64_t)nel};
    ck_recipe_input(r, in, CK_DTYPE_F32, 1, sh);
    ck_step *st = ck_recipe_step(r, op, CK_DTYPE_F32);
    st->in[0] = 0;
    st->alpha = alpha;
}

START_TEST(t_review_regressions) {
    size_t n = 8 * MiB, nel = n / 4;
    size_t got;
    /* (d) */
    ck_pool *p = host_pool("budget=32M,chunk_align=4M,prefetch=0");
    float *x, *y;
    ASSERT_OK(ck_malloc(p, (void **)&x, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&y, n, NULL));
    for (size_t i = 0; i < nel; i++) x[i] = (float)i, y[i] = 2.0f * (float)i;
    ck_recipe r;
    one_input_recipe(&r, x, nel, CK_OP_SCALE, 2.0f);
    ASSERT_OK(ck_tag(p, y, "y", CK_TIER_AUTO));
    ASSERT_OK(ck_set_recipe(p, y, &r));
    ASSERT_OK(ck_stash(p, y, NULL)); /* far from the budget: resident */
    ASSERT_OK(ck_free(p, x, NULL));
    ASSERT_OK(ck_trim(p, &got));
    void *f;
    ASSERT_OK(ck_malloc(p, &f, 28 * MiB, NULL)); /* y must go */
    ck_assert_int_eq(info_of(p, y).state, CK_TENSOR_OFFLOADED);
    ASSERT_OK(ck_free(p, f, NULL));
    ASSERT_OK(ck_fetch(p, y, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (size_t i = 0; i < nel; i++) ck_assert(y[i] == 2.0f * (float)i);
    ASSERT_OK(ck_free(p, y, NULL));
    ASSERT_OK(ck_pool_destroy(p));

    /* (e) */
    p = host_pool("budget=40M,chunk_align=4M,prefetch=0");
    float *a, *b, *m, *d;
    ASSERT_OK(ck_malloc(p, (void **)&a, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&b, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&m, n, NULL));
    ASSERT_OK(ck_malloc(p, (void **)&d, n, NULL));
    for (size_t i = 0; i < nel; i++) a[i] = (float)i, b[i] = 1.0f, m[i] = a[i] + b[i], d[i] = 5.0f;
    ck_recipe_init(&r);
    int64_t sh[1] = {(int64_t)nel};
    ck_recipe_input(&r, a, CK_DTYPE_F32, 1, sh);
    ck_recipe_input(&r, b, CK_DTYPE_F32, 1, sh);
    ck_step *st = ck_recipe_step(&r, CK_OP_ADD, CK_DTYPE_F32);
    st->in[0] = 0;
    st->in[1] = 1;
    ASSERT_OK(ck_tag(p, a, "a", CK_TIER_OFFLOAD));
    ASSERT_OK(ck_tag(p, b, "b", CK_TIER_OFFLOAD));
    ASSERT_OK(ck_tag(p, m, "m", CK_TIER_RECOMPUTE));
    ASSERT_OK(ck_set_recipe(p, m, &r));
    ASSERT_OK(ck_tag(p, d, "d", CK_TIER_AUTO));
    ASSERT_OK(ck_stash(p, a, NULL));
    ASSERT_OK(ck_stash(p, b, NULL));
    ASSERT_OK(ck_stash(p, m, NULL));
    ASSERT_OK(ck_trim(p, &got));
    ASSERT_OK(ck_stash(p, d, NULL)); /* AUTO, resident */
    ASSERT_OK(ck_malloc(p, &f, 16 * MiB, NULL));
    ASSERT_OK(ck_trim(p, &got));
    ASSERT_OK(ck_fetch(p, m, NULL)); /* a and b come back; d is what may go */
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    for (size_t i = 0; i < nel; i++) ck_assert(m[i] == (float)i + 1.0f);
    ASSERT_OK(ck_free(p, f, NULL));
    ASSERT_OK(ck_fetch(p, d, NULL));
    ASSERT_OK(ck_fetch(p, b, NULL));
    ASSERT_OK(ck_fetch(p, a, NULL));
    ASSERT_OK(ck_stream_synchronize(p, NULL));
    ck_assert(d[123] == 5.0f && a[123] == 123.0f && b[123] == 1.0f);
    ASSERT_OK(ck_free(p, a, NULL));
    ASSERT_OK(ck_free(p, b, NULL));
    ASSERT_OK(ck_free(p, m, NULL));
    ASSERT_OK(ck_free(p, d, NULL));
    ASSERT_OK(ck_pool_destroy(p));

    /* (f) */
    p = host_pool("chunk_align=4M,prefetch=0,release=eager");
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    size_t n2 = 32 * MiB, nel2 = n2 / 4;
    float *fa, *fb;
    ASSERT_OK(ck_malloc(p, (void **)&fa, n2, s1));
    ASSERT_OK(ck_malloc(p, (void **)&fb, n2, s2));
    for (size_t i = 0; i < nel2; i++) fa[i] = 1.0f;
    one_input_recipe(&r, fa, nel2, CK_OP_SCALE, 2.0f);
    ASSERT_OK(ck_tag(p, fb, "b", CK_TIER_RECOMPUTE));
    ASSERT_OK(ck_set_recipe(p, fb, &r));
    ASSERT_OK(ck_stash(p, fb, s2));
    ASSERT_OK(ck_stream_synchronize(p, s2));
    ASSERT_OK(ck_tag(p, fa, "a", CK_TIER_AUTO));
    ASSERT_OK(ck_stash(p, fa, s1)); /* resident */
    size_t big = 64 * MiB;
    float *fin = calloc(big / 4, 4), *fout = malloc(big);
    ck_assert(fin && fout);
    ck_recipe slow;
    one_input_recipe(&slow, fin, big / 4, CK_OP_GELU_ERF, 1.0f);
    for (int i = 0; i < 3; i++) ASSERT_OK(ck_replay(p, &slow, fout, big, s2)); /* s2 busy */
    ASSERT_OK(ck_fetch(p, fb, s2)); /* b's replay on s2 reads a */
    ASSERT_OK(ck_free(p, fa, s1));
    ASSERT_OK(ck_stream_synchronize(p, s1));
    void *t;
    ASSERT_OK(ck_malloc(p, &t, 4 * MiB, s1)); /* eager release runs */
    ASSERT_OK(ck_free(p, t, s1));
    ASSERT_OK(ck_stream_synchronize(p, s2)); /* used to fault in s2's replay */
    ck_assert(fb[0] == 2.0f && fb[nel2 - 1] == 2.0f);
    ASSERT_OK(ck_free(p, fb, s2));
    free(fin);
    free(fout);
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

/* Stash on one stream, fetch on another: work queued on the fetch stream
 * runs after the stash point, even for a KEEP tensor that never left (an
 * event on the stash stream is recorded at the fetch). */
START_TEST(t_cross_stream_fetch) {
    ck_pool *p = host_pool("chunk_align=4M,prefetch=0");
    ck_stream s1, s2;
    ASSERT_OK(ck_stream_create(p, &s1));
    ASSERT_OK(ck_stream_create(p, &s2));
    size_t big = 64 * MiB, n = 8 * MiB, nel = n / 4;
    float *fin = calloc(big / 4, 4), *fout = malloc(big), *x, *host = malloc(n);
    ck_assert(fin && fout && host);
    ASSERT_OK(ck_malloc(p, (void **)&x, n, s1));
    for (size_t i = 0; i < nel; i++) x[i] = 1.0f;
    ck_recipe slow, dbl;
    one_input_recipe(&slow, fin, big / 4, CK_OP_GELU_ERF, 1.0f);
    one_input_recipe(&dbl, x, nel, CK_OP_SCALE, 3.0f);
    for (int tier = 0; tier < 2; tier++) {
        ASSERT_OK(ck_tag(p, x, "x", tier ? CK_TIER_AUTO : CK_TIER_KEEP));
        for (int i = 0; i < 3; i++) ASSERT_OK(ck_replay(p, &slow, fout, big, s1)); /* s1 busy */
        ASSERT_OK(ck_replay(p, &dbl, x, n, s1));  /* x's last write: x = 3x */
        ASSERT_OK(ck_stash(p, x, s1));
        ASSERT_OK(ck_fetch(p, x, s2));
        ASSERT_OK(ck_memcpy_async(p, host, x, n, s2)); /* must see x = 3x */
        ASSERT_OK(ck_stream_synchronize(p, s2));
        float want = tier ? 9.0f : 3.0f;
        ck_assert_msg(host[0] == want && host[nel - 1] == want, "tier %d: read %g before the stash point",
                      tier, host[0]);
        ASSERT_OK(ck_stream_synchronize(p, s1));
        ASSERT_OK(ck_untag(p, x));
    }
    ASSERT_OK(ck_free(p, x, s1));
    free(fin);
    free(fout);
    free(host);
    ASSERT_OK(ck_stream_destroy(p, s1));
    ASSERT_OK(ck_stream_destroy(p, s2));
    ASSERT_OK(ck_pool_destroy(p));
}
END_TEST

int main(void) {
    Suite *s = suite_create("tier");
    TCase *tc = ck_test_tcase(s, "core", 120);
    tcase_add_test(tc, t_names);
    tcase_add_test(tc, t_bad_input);
    tcase_add_test(tc, t_offload_roundtrip);
    tcase_add_test(tc, t_recompute_roundtrip);
    tcase_add_test(tc, t_recursive_fetch);
    tcase_add_test(tc, t_prefetch);
    tcase_add_test(tc, t_pressure);
    tcase_add_test(tc, t_host_budget);
    tcase_add_test(tc, t_copy_fault);
    tcase_add_test(tc, t_event_fault);
    tcase_add_test(tc, t_fetch_wait);
    tcase_add_test(tc, t_free_while_moving);
    tcase_add_test(tc, t_verify);
    tcase_add_test(tc, t_cuda_offload);
    tcase_add_test(tc, t_host_allocator);
    tcase_add_test(tc, t_learning);
    tcase_add_test(tc, t_regressions);
    tcase_add_test(tc, t_va_headroom);
    tcase_add_test(tc, t_tail_resident);
    tcase_add_test(tc, t_review_regressions);
    tcase_add_test(tc, t_cross_stream_fetch);
    return ck_test_run(s);
}
