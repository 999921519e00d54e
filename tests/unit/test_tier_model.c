/* The tier engine against a shadow model: random tag / set_recipe / stash /
 * fetch / free / write sequences (random sizes, streams, tiers, recipes and
 * interleavings) on the host backend, with verify=1, under budget pressure,
 * with a tight host_budget and with a one-shot backend fault (create, map,
 * copy, unmap, release) at a call index chosen by the seed.
 *
 * The model keeps, per live allocation, its size and what its words hold
 * (a seed and a power of 3: word i is 3^k * v(seed, i), exact in f32, so no
 * copy of the data is kept), whether it is tagged, its tier, whether it is
 * stashed and its recipe (y = 2 * x + x, the recipe of test_tier.c, reading
 * another live allocation x). Every fetch is followed by a synchronize and a
 * check of every word; a failed call must leave the model's state intact:
 *   - a failed ck_malloc changes nothing;
 *   - a failed ck_stash leaves the tensor resident, not stashed, intact;
 *   - a failed ck_fetch leaves it stashed, and a retry succeeds (once the
 *     one-shot fault is spent) with the data intact.
 * At the end everything is freed (in whatever state), ck_trim gives every
 * byte back and the tier counters are zero.
 *
 * Contract points the model follows (tier.h): the tensor is not touched
 * between ck_stash and ck_fetch; an input of a stashed tensor with a recipe
 * is never written (a recompute would read the new data); an input freed
 * while its dependent is stashed makes that dependent's fetch fail with
 * CK_ERR_NOT_OWNED when it has to be recomputed (it stays stashed and is
 * then freed).
 *
 * Environment:
 *   CK_TIER_MODEL_OPS      total operations over all runs (default 4000;
 *                          the long run uses 1000000)
 *   CK_TIER_MODEL_SEED     run only this seed (with every variant, or with
 *                          CK_TIER_MODEL_VARIANT), to reproduce a failure
 *   CK_TIER_MODEL_VARIANT  run only the variant of this name
 *   CK_TIER_MODEL_KNOWN_BUGS=0  step around the three defects below, as
 *                          the test did before they were fixed (for
 *                          bisecting only; the default exercises them)
 *   CK_TIER_MODEL_VERBOSE=1  print what each run did (stashes, failures,
 *                          faults injected, replays, backend calls)
 *
 * The host backend injects faults at its create, map, copy, unmap, release
 * and event (record or stream wait) calls; each fault variant sets
 * one key to a call index drawn from the seed. Unmap and release faults are
 * absorbed by the pool (retried, or kept as an orphan handle) and never
 * reach the caller; the model then checks that nothing leaks.
 *
 * DEFECTS THIS TEST FOUND, now fixed (test_tier's t_regressions holds each;
 * the default run exercises these cases, CK_TIER_MODEL_KNOWN_BUGS=0 steps
 * around them again):
 *   A. verify=1 checksums the whole block (the size rounded up to 512) but a
 *      recompute writes only the recipe's result: a RECOMPUTE tensor whose
 *      size is not a multiple of 512 comes back intact yet ck_fetch says
 *      CK_ERR_CORRUPT (the padding was released and comes back zeroed). The
 *      default run gives recipes only to tensors of a multiple of 512 bytes.
 *   B. verify=1: when the checksum copy at the end of ck_fetch fails (here an
 *      injected copy fault), ck_fetch returns CK_ERR_BACKEND but the tensor is
 *      already unstashed: the retry is CK_ERR_INVALID "not stashed". The
 *      default run accepts that outcome (the data is checked all the same).
 *   C. A fetch that calls off a copy out still in flight drops the only
 *      fence on that copy: freeing the tensor (its block is reused, then
 *      released by a RECOMPUTE stash) or stashing it again as RECOMPUTE
 *      unmaps the memory under the copy, which faults. The default run
 *      marks tensors fetched while moving out and calls ck_trim (which waits
 *      for the copy stream's deferred buffers) before stashing or freeing
 *      them again.
 */
#include "ckalloc/tier.h"
#include "testutil.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAXOBJ = 20, NSTREAMS = 3, MAXK = 3 };

typedef struct obj {
    int live;
    uint32_t *ptr;
    size_t size;  /* as asked for (a multiple of 4) */
    size_t bsize; /* rounded up to 512, as the pool counts it */
    uint64_t gen; /* unique per allocation */
    uint32_t seed;
    int k;        /* word i = 3^k * v(seed, i) */
    int tagged;
    ck_tier tier;
    char name[32];
    int stashed;
    int has_recipe;
    int in;          /* the recipe's input (an index into o[]) */
    uint64_t in_gen; /* ... and its allocation */
    int copy_out;    /* a fetch may have called off its copy out, still in flight (bug C) */
} obj;

typedef struct variant {
    const char *name;
    const char *conf;      /* on top of host_pool's "backend=host,host_mem=2G" */
    const char *fault_key; /* NULL, or fault_create / fault_map / ... */
    unsigned fault_max;    /* the fault fires at a call in 1..fault_max */
    int budget;            /* a tight budget: NOMEM from malloc and fetch is an answer;
                              sizes are uniform (larger) to press on it */
    int host_tight;        /* a tight host_budget: NOMEM from stash is an answer */
    int verify;
} variant;

static const variant variants[] = {
    {"plain", "verify=1,chunk_align=4M", NULL, 0, 0, 0, 1},
    {"auto_align", "verify=1,prefetch=0", NULL, 0, 0, 0, 1},
    {"noverify", "chunk_align=4M,prefetch=32M", NULL, 0, 0, 0, 0},
    {"budget", "verify=1,chunk_align=4M,budget=256M", NULL, 0, 1, 0, 1},
    {"host_budget", "verify=1,chunk_align=4M,host_budget=48M", NULL, 0, 0, 1, 1},
    {"fault_create", "verify=1,chunk_align=4M", "fault_create", 100, 0, 0, 1},
    {"fault_map", "verify=1,chunk_align=4M", "fault_map", 16, 0, 0, 1},
    {"fault_copy", "verify=1,chunk_align=4M", "fault_copy", 50, 0, 0, 1},
    {"fault_copy_prefetch0", "verify=1,chunk_align=4M,prefetch=0", "fault_copy", 40, 0, 0, 1},
    {"fault_unmap", "verify=1,chunk_align=4M", "fault_unmap", 80, 0, 0, 1},
    {"fault_release", "verify=1,chunk_align=4M", "fault_release", 80, 0, 0, 1},
    {"fault_event", "verify=1,chunk_align=4M", "fault_event", 120, 0, 0, 1},
    {"fault_event_prefetch0", "verify=1,chunk_align=4M,prefetch=0", "fault_event", 60, 0, 0, 1},
};
enum { NVARIANTS = sizeof variants / sizeof *variants, MIN_SEEDS = 2, MAX_RUN_OPS = 2000 };

typedef struct model {
    ck_pool *p;
    ck_stream st[NSTREAMS]; /* NULL (the default stream) and two of the pool's */
    obj o[MAXOBJ];
    const variant *v;
    char conf[256];
    uint64_t seed, rng, next_gen;
    uint32_t next_seed;
    long op;
    int in_step;
    int known_bugs;
    /* what happened, for the coverage checks */
    long n_stash, n_fetch, n_stash_fail, n_fetch_fail, n_malloc_fail, n_injected, n_orphan_refused,
        n_free_stashed, n_known_b;
} model;

/* Totals over the whole run, checked by the last test. */
static long g_runs, g_stash, g_fetch, g_injected, g_stash_fail, g_fetch_fail, g_orphan_refused,
    g_replays, g_retries;

#define WHERE "[variant %s seed %" PRIu64 " op %ld (%s)] "
#define WARGS M->v->name, M->seed, M->op, M->conf
#define MREQ(cond, fmt, ...) REQM(cond, WHERE fmt, WARGS, ##__VA_ARGS__)
#define MOK(expr)                                                                                \
    do {                                                                                         \
        ck_status st_ = (expr);                                                                  \
        if (st_ != CK_OK)                                                                        \
            ck_abort_msg(WHERE "%s: %s: %s", WARGS, #expr, ck_status_str(st_), ck_last_error()); \
    } while (0)

/* ---- random numbers ------------------------------------------------------ */

static uint64_t rnd(model *M) { /* splitmix64 */
    uint64_t z = (M->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static unsigned rnd_n(model *M, unsigned n) { return (unsigned)(rnd(M) % n); }
static int chance(model *M, unsigned pct) { return rnd_n(M, 100) < pct; }

/* ---- contents ------------------------------------------------------------ */

static const float pow3[MAXK + 1] = {1.0f, 3.0f, 9.0f, 27.0f};

/* v(seed, i): a float with at most 17 significant bits, so 27 v is exact and
 * 2 * x + x (the recipe) gives exactly 3 x. */
static inline float word_value(uint32_t base, size_t i, float m) {
    return (float)((int32_t)((base + (uint32_t)i) & 0xFFFF) - 32768) * 0.125f * m;
}

static void fill_words(uint32_t *w, size_t n, uint32_t seed, int k) {
    uint32_t base = seed * 2654435761u;
    float m = pow3[k];
    float *f = (float *)w;
    for (size_t i = 0; i < n / 4; i++) f[i] = word_value(base, i, m);
}

/* The index of the first word that differs, or n / 4. */
static size_t first_bad(const uint32_t *w, size_t n, uint32_t seed, int k) {
    uint32_t base = seed * 2654435761u;
    float m = pow3[k];
    const float *f = (const float *)w;
    size_t nw = n / 4, i = 0;
    for (; i < nw; i++)
        if (f[i] != word_value(base, i, m)) break;
    return i;
}

static void check_contents(model *M, int i, const char *when) {
    obj *t = &M->o[i];
    size_t bad = first_bad(t->ptr, t->size, t->seed, t->k);
    if (bad != t->size / 4) {
        float want = word_value(t->seed * 2654435761u, bad, pow3[t->k]);
        uint32_t wb;
        memcpy(&wb, &want, 4);
        ck_abort_msg(WHERE "%s: object %d ('%s', %zu bytes, tier %s%s) word %zu of %zu is %#x, "
                           "expected %#x (seed %u, k %d)",
                     WARGS, when, i, t->name, t->size, t->tagged ? ck_tier_name(t->tier) : "untagged",
                     t->has_recipe ? ", recipe" : "", bad, t->size / 4, t->ptr[bad], wb, t->seed, t->k);
    }
}

/* ---- the model's relations ---------------------------------------------- */

static int input_live(const model *M, const obj *t) {
    return t->has_recipe && M->o[t->in].live && M->o[t->in].gen == t->in_gen;
}

/* Some stashed tensor's recipe reads i: i must not be written. */
static int is_protected(const model *M, int i) {
    for (int j = 0; j < MAXOBJ; j++) {
        const obj *t = &M->o[j];
        if (t->live && t->stashed && input_live(M, t) && t->in == i) return 1;
    }
    return 0;
}

/* A stashed tensor whose recipe may not run: its input was freed, or is
 * stashed with the same trouble. */
static int at_risk(const model *M, const obj *t) {
    for (int d = 0; d < MAXOBJ + 1 && t->has_recipe; d++) {
        if (!input_live(M, t)) return 1;
        t = &M->o[t->in];
        if (!t->stashed) return 0;
    }
    return 0;
}

/* After ck_trim (nothing in flight): ck_fetch of i must be refused with
 * CK_ERR_NOT_OWNED, since i has to be recomputed and some recipe on the way
 * lacks its input. */
static int will_refuse(model *M, int i);

/* y lies on x's recipe chain (x depends on y), or x is y. */
static int depends_on(const model *M, int x, int y) {
    for (int d = 0; d < MAXOBJ + 1; d++) {
        if (x == y) return 1;
        const obj *t = &M->o[x];
        if (!input_live(M, t)) return 0;
        x = t->in;
    }
    return 1;
}

/* The contents y = 3 x would have (1 if x's k leaves room). */
static int derived(const model *M, const obj *y, uint32_t *seed, int *k) {
    const obj *x = &M->o[y->in];
    if (!input_live(M, y) || x->k >= MAXK) return 0;
    *seed = x->seed;
    *k = x->k + 1;
    return 1;
}

static int pick(model *M, int (*pred)(const model *, int)) {
    int cand[MAXOBJ], n = 0;
    for (int i = 0; i < MAXOBJ; i++)
        if (M->o[i].live && (!pred || pred(M, i))) cand[n++] = i;
    return n ? cand[rnd_n(M, (unsigned)n)] : -1;
}

static int p_unstashed(const model *M, int i) { return !M->o[i].stashed; }
static int p_tagged_unstashed(const model *M, int i) { return M->o[i].tagged && !M->o[i].stashed; }
static int p_stashed(const model *M, int i) { return M->o[i].stashed; }
static int p_tagged(const model *M, int i) { return M->o[i].tagged; }
static int p_writable(const model *M, int i) { return !M->o[i].stashed && !is_protected(M, i); }

static ck_stream any_stream(model *M) { return M->st[rnd_n(M, NSTREAMS)]; }

static ck_tensor_status info(model *M, int i) {
    ck_tensor_status s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    MOK(ck_tensor_info(M->p, M->o[i].ptr, &s));
    return s;
}

static ck_stats stats(model *M) {
    ck_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    MOK(ck_get_stats(M->p, &s));
    return s;
}

static int injected(void) { return strstr(ck_last_error(), "injected failure") != NULL; }

/* A failed call: is this status an answer the variant allows? */
static void allowed_failure(model *M, ck_status st, int nomem_ok, const char *what) {
    if (st == CK_ERR_BACKEND && M->v->fault_key && injected()) {
        M->n_injected++;
        return;
    }
    if (st == CK_ERR_NOMEM && nomem_ok) return;
    ck_abort_msg(WHERE "%s failed unexpectedly: %s: %s", WARGS, what, ck_status_str(st),
                 ck_last_error());
}

/* ---- per-tensor consistency ---------------------------------------------- */

static void check_info(model *M, int i) {
    obj *t = &M->o[i];
    ck_tensor_status s = info(M, i);
    MREQ(strcmp(s.name, t->name) == 0, "object %d: name '%s', expected '%s'", i, s.name, t->name);
    MREQ(s.tier == t->tier, "'%s': tier %s, expected %s", t->name, ck_tier_name(s.tier),
         ck_tier_name(t->tier));
    MREQ(s.stashed == t->stashed, "'%s': stashed %d, expected %d", t->name, s.stashed, t->stashed);
    MREQ(s.has_recipe == t->has_recipe, "'%s': has_recipe %d, expected %d", t->name, s.has_recipe,
         t->has_recipe);
    MREQ(s.size == t->bsize, "'%s': size %zu, expected %zu", t->name, s.size, t->bsize);
    int released = s.state == CK_TENSOR_OFFLOADED || s.state == CK_TENSOR_DROPPED;
    MREQ(s.device_bytes == (released ? 0 : s.size), "'%s': device_bytes %zu in state %s", t->name,
         s.device_bytes, ck_tensor_state_name(s.state));
    if (!t->stashed) {
        /* Every fetch is followed by a synchronize: nothing is in flight. */
        MREQ(s.state == CK_TENSOR_RESIDENT, "'%s' is not stashed but %s", t->name,
             ck_tensor_state_name(s.state));
        return;
    }
    MREQ(s.state <= CK_TENSOR_COMING_BACK, "'%s': state %d", t->name, (int)s.state);
    switch (t->tier) {
    case CK_TIER_KEEP:
        MREQ(s.applied == CK_TIER_KEEP && s.state == CK_TENSOR_RESIDENT, "KEEP '%s': applied %s, %s",
             t->name, ck_tier_name(s.applied), ck_tensor_state_name(s.state));
        break;
    /* OFFLOAD and RECOMPUTE apply as asked, except in the last prefetch
     * window of a step's forward (as the last step's stashes tell it),
     * which stays resident (applied KEEP) while memory allows. */
    case CK_TIER_OFFLOAD:
        MREQ(s.applied == CK_TIER_OFFLOAD ||
                 (s.applied == CK_TIER_KEEP && s.state == CK_TENSOR_RESIDENT),
             "OFFLOAD '%s': applied %s, %s", t->name, ck_tier_name(s.applied),
             ck_tensor_state_name(s.state));
        MREQ(s.state != CK_TENSOR_DROPPED, "OFFLOAD '%s' is dropped", t->name);
        break;
    case CK_TIER_RECOMPUTE:
        /* Evicted under pressure after a recipe input was freed, it is
         * copied out rather than lost. */
        MREQ(((s.applied == CK_TIER_RECOMPUTE ||
               (s.applied == CK_TIER_KEEP && s.state == CK_TENSOR_RESIDENT)) &&
              s.state != CK_TENSOR_OFFLOADED) ||
                 (s.applied == CK_TIER_OFFLOAD && !input_live(M, t)),
             "RECOMPUTE '%s': applied %s, %s", t->name, ck_tier_name(s.applied),
             ck_tensor_state_name(s.state));
        break;
    case CK_TIER_AUTO:
        MREQ(s.applied != CK_TIER_AUTO, "AUTO '%s': nothing applied at the stash", t->name);
        if (t->has_recipe) {
            /* With a recipe: never copied out, unless an input was freed
             * (then it is copied out rather than lost). */
            if (input_live(M, t))
                MREQ(s.applied != CK_TIER_OFFLOAD && s.state != CK_TENSOR_OFFLOADED,
                     "AUTO '%s' with a recipe: applied %s, %s", t->name, ck_tier_name(s.applied),
                     ck_tensor_state_name(s.state));
        } else
            MREQ(s.applied != CK_TIER_RECOMPUTE && s.state != CK_TENSOR_DROPPED,
                 "AUTO '%s' without a recipe: applied %s, %s", t->name, ck_tier_name(s.applied),
                 ck_tensor_state_name(s.state));
        if (s.applied == CK_TIER_KEEP)
            MREQ(s.state == CK_TENSOR_RESIDENT, "AUTO '%s' kept but %s", t->name,
                 ck_tensor_state_name(s.state));
        break;
    }
}

/* Cheap, after every operation. */
static void check_stats(model *M) {
    ck_stats s = stats(M);
    int64_t live = 0, stashed = 0, n = 0;
    for (int i = 0; i < MAXOBJ; i++) {
        const obj *t = &M->o[i];
        if (!t->live) continue;
        n++;
        live += (int64_t)t->bsize;
        if (t->stashed) stashed += (int64_t)t->bsize;
    }
    MREQ(s.allocated_bytes.current == live, "allocated_bytes %lld, the model has %lld",
         (long long)s.allocated_bytes.current, (long long)live);
    MREQ(s.allocation.current == n, "allocation %lld, the model has %lld",
         (long long)s.allocation.current, (long long)n);
    MREQ(s.offloaded_bytes.current >= 0 && s.dropped_bytes.current >= 0 && s.moving_bytes.current >= 0,
         "negative tier counters: offloaded %lld dropped %lld moving %lld",
         (long long)s.offloaded_bytes.current, (long long)s.dropped_bytes.current,
         (long long)s.moving_bytes.current);
    MREQ(s.offloaded_bytes.current + s.dropped_bytes.current <= stashed,
         "offloaded %lld + dropped %lld > stashed %lld", (long long)s.offloaded_bytes.current,
         (long long)s.dropped_bytes.current, (long long)stashed);
    MREQ(s.moving_bytes.current <= live, "moving %lld > live %lld", (long long)s.moving_bytes.current,
         (long long)live);
    MREQ(s.physical_bytes.current >= 0 && (uint64_t)s.physical_bytes.current <= s.budget,
         "physical %lld over the budget %llu", (long long)s.physical_bytes.current,
         (unsigned long long)s.budget);
}

/* ck_trim settles everything (every stream waited for, every release
 * done): then the counters add up exactly. */
static void audit(model *M) {
    size_t got;
    MOK(ck_trim(M->p, &got));
    int64_t off = 0, drop = 0;
    for (int i = 0; i < MAXOBJ; i++) {
        obj *t = &M->o[i];
        if (!t->live || !t->tagged) continue;
        check_info(M, i);
        ck_tensor_status s = info(M, i);
        MREQ(s.state != CK_TENSOR_MOVING_OUT && s.state != CK_TENSOR_COMING_BACK,
             "'%s' still %s after ck_trim", t->name, ck_tensor_state_name(s.state));
        if (s.state == CK_TENSOR_OFFLOADED) off += (int64_t)t->bsize;
        if (s.state == CK_TENSOR_DROPPED) drop += (int64_t)t->bsize;
    }
    ck_stats s = stats(M);
    MREQ(s.offloaded_bytes.current == off, "offloaded_bytes %lld, tensors offloaded %lld",
         (long long)s.offloaded_bytes.current, (long long)off);
    MREQ(s.dropped_bytes.current == drop, "dropped_bytes %lld, tensors dropped %lld",
         (long long)s.dropped_bytes.current, (long long)drop);
    MREQ(s.moving_bytes.current == 0, "moving_bytes %lld after ck_trim",
         (long long)s.moving_bytes.current);
    check_stats(M);
}

/* ---- operations ---------------------------------------------------------- */

static void write_obj(model *M, int i, uint32_t seed, int k) {
    obj *t = &M->o[i];
    fill_words(t->ptr, t->size, seed, k);
    t->seed = seed;
    t->k = k;
}

/* 1.5 to 40 MiB, log-uniform (more small tensors than large ones, as in a
 * model's activations), aligned in one of four ways. */
static size_t pick_size(model *M) {
    static const size_t lo = 3 * MiB / 2, hi = 40 * MiB;
    size_t n = lo;
    if (M->v->budget) {
        n += rnd(M) % (hi - lo + 1); /* uniform: 20 MiB on average */
    } else {
        for (unsigned e = rnd_n(M, 5); e > 0 && n * 2 <= hi; e--) n *= 2; /* 1.5, 3, 6, 12, 24 */
        n += rnd(M) % (n < hi - n ? n : hi - n + 1);
    }
    switch (rnd_n(M, 4)) {
    case 0: return n & ~(size_t)3;              /* any multiple of 4 */
    case 1: return n & ~(size_t)511;            /* a multiple of 512 */
    case 2: return n & ~(size_t)(4 * KiB - 1);  /* of 4 KiB */
    default: return n & ~(size_t)(2 * MiB - 1) ? n & ~(size_t)(2 * MiB - 1) : 2 * MiB; /* of a chunk */
    }
}

static void op_malloc(model *M) {
    int i = -1;
    for (int k = 0; k < MAXOBJ && i < 0; k++)
        if (!M->o[k].live) i = k;
    if (i < 0) return;
    size_t size = pick_size(M);
    ck_stream s = any_stream(M);
    ck_stats before = stats(M);
    void *ptr = NULL;
    ck_status st = ck_malloc(M->p, &ptr, size, s);
    if (st != CK_OK) {
        allowed_failure(M, st, M->v->budget, "ck_malloc");
        M->n_malloc_fail++;
        ck_stats after = stats(M);
        MREQ(after.allocated_bytes.current == before.allocated_bytes.current &&
                 after.allocation.current == before.allocation.current,
             "a failed ck_malloc changed allocated_bytes %lld -> %lld",
             (long long)before.allocated_bytes.current, (long long)after.allocated_bytes.current);
        return;
    }
    obj *t = &M->o[i];
    memset(t, 0, sizeof *t);
    t->live = 1;
    t->ptr = ptr;
    t->size = size;
    t->bsize = (size + 511) & ~(size_t)511;
    t->gen = ++M->next_gen;
    /* The CPU is not ordered on s: a block s freed just now may still have
     * work of s on it (a fetch freed before its synchronize). */
    MOK(ck_stream_synchronize(M->p, s));
    write_obj(M, i, ++M->next_seed, 0);
}

static void op_tag(model *M) {
    int i = pick(M, p_unstashed);
    if (i < 0) return;
    obj *t = &M->o[i];
    ck_tier tier = (ck_tier)rnd_n(M, 4);
    if (t->has_recipe && chance(M, 40)) tier = CK_TIER_RECOMPUTE;
    if (tier == CK_TIER_RECOMPUTE && !t->has_recipe) tier = CK_TIER_OFFLOAD;
    char name[32];
    if (t->tagged && chance(M, 50)) snprintf(name, sizeof name, "%s", t->name); /* keep the name */
    else snprintf(name, sizeof name, "layers.%d.g%" PRIu64 ".%s", i, t->gen, ck_tier_name(tier));
    MOK(ck_tag(M->p, t->ptr, name, tier));
    t->tagged = 1;
    t->tier = tier;
    snprintf(t->name, sizeof t->name, "%s", name);
}

static void op_untag(model *M) {
    int i = pick(M, p_tagged_unstashed);
    if (i < 0) return;
    obj *t = &M->o[i];
    MOK(ck_untag(M->p, t->ptr));
    t->tagged = 0;
    t->has_recipe = 0;
    t->name[0] = '\0';
    ck_tensor_status s;
    s.struct_size = sizeof s;
    MREQ(ck_tensor_info(M->p, t->ptr, &s) == CK_ERR_INVALID, "untagged '%p' still has info",
         (void *)t->ptr);
}

/* y = 2 * x + x over y's words, reading the first of x's. */
static void recipe_of(ck_recipe *r, const void *x, size_t nel) {
    ck_recipe_init(r);
    int64_t shape[1] = {(int64_t)nel};
    int in = ck_recipe_input(r, x, CK_DTYPE_F32, 1, shape);
    REQ(in == 0);
    ck_step *s = ck_recipe_step(r, CK_OP_SCALE, CK_DTYPE_F32);
    REQ(s != NULL);
    s->in[0] = 0;
    s->alpha = 2.0f;
    s = ck_recipe_step(r, CK_OP_ADD, CK_DTYPE_F32);
    REQ(s != NULL);
    s->in[1] = 0;
}

/* KNOWN BUG A: with verify=1 a recomputed tensor whose size is not a
 * multiple of 512 reads as corrupt: such tensors get no recipe. */
static int p_recipe_target(const model *M, int i) {
    return p_tagged_unstashed(M, i) && !is_protected(M, i) && /* it is rewritten */
           (!M->v->verify || M->known_bugs || M->o[i].size % 512 == 0);
}

static void op_set_recipe(model *M) {
    int y = pick(M, p_recipe_target);
    if (y < 0) return;
    obj *t = &M->o[y];
    if (chance(M, 10)) { /* take it away */
        MOK(ck_set_recipe(M->p, t->ptr, NULL));
        t->has_recipe = 0;
        return;
    }
    int cand[MAXOBJ], n = 0;
    for (int x = 0; x < MAXOBJ; x++) {
        const obj *c = &M->o[x];
        if (c->live && x != y && c->size >= t->size && c->k < MAXK && !depends_on(M, x, y))
            cand[n++] = x;
    }
    if (!n) return;
    int x = cand[rnd_n(M, (unsigned)n)];
    ck_recipe r;
    recipe_of(&r, M->o[x].ptr, t->size / 4);
    MOK(ck_set_recipe(M->p, t->ptr, &r));
    t->has_recipe = 1;
    t->in = x;
    t->in_gen = M->o[x].gen;
    /* What the recipe gives, written by the test (x's words are known from
     * the model, even when x is stashed). */
    write_obj(M, y, M->o[x].seed, M->o[x].k + 1);
    if (chance(M, 50)) {
        ck_tier tier = chance(M, 75) ? CK_TIER_RECOMPUTE : CK_TIER_AUTO;
        MOK(ck_tag(M->p, t->ptr, t->name, tier));
        t->tier = tier;
    }
}

static void op_write(model *M) {
    int i = pick(M, p_writable);
    if (i < 0) return;
    obj *t = &M->o[i];
    uint32_t seed;
    int k;
    if (t->has_recipe && chance(M, 70) && derived(M, t, &seed, &k)) write_obj(M, i, seed, k);
    else write_obj(M, i, ++M->next_seed, 0); /* a stale recipe: refreshed at the stash */
}

/* A stash failed: the tensor is resident, not stashed, intact. */
static void after_failed_stash(model *M, int i) {
    ck_tensor_status s = info(M, i);
    MREQ(!s.stashed && s.state == CK_TENSOR_RESIDENT,
         "a failed stash left '%s' stashed %d, %s", M->o[i].name, s.stashed,
         ck_tensor_state_name(s.state));
    check_info(M, i);
    check_contents(M, i, "after a failed stash");
    M->n_stash_fail++;
}

static void do_free(model *M, int i, ck_stream s);
static void copy_out_wait(model *M, int i);

static void op_stash(model *M) {
    int i = pick(M, p_tagged_unstashed);
    if (i < 0) return;
    obj *t = &M->o[i];
    if (t->has_recipe) {
        uint32_t seed;
        int k;
        if (!derived(M, t, &seed, &k)) {
            /* x is gone or has no room left for 3x: drop the recipe. */
            MOK(ck_set_recipe(M->p, t->ptr, NULL));
            t->has_recipe = 0;
        } else if (t->seed != seed || t->k != k) {
            if (is_protected(M, i)) return;
            write_obj(M, i, seed, k); /* y = 3x again, so a recompute gives y */
        }
    }
    copy_out_wait(M, i);
    ck_stream s = any_stream(M);
    ck_status st = ck_stash(M->p, t->ptr, s);
    if (t->tier == CK_TIER_RECOMPUTE && !t->has_recipe) {
        MREQ(st == CK_ERR_INVALID && strstr(ck_last_error(), "no recipe"),
             "RECOMPUTE '%s' without a recipe: ck_stash gave %s: %s", t->name, ck_status_str(st),
             ck_last_error());
        after_failed_stash(M, i);
        return;
    }
    if (st != CK_OK) {
        allowed_failure(M, st, M->v->host_tight, "ck_stash");
        if (st == CK_ERR_NOMEM)
            MREQ(strstr(ck_last_error(), "host_budget") != NULL, "stash NOMEM: %s", ck_last_error());
        after_failed_stash(M, i);
        return;
    }
    t->stashed = 1;
    M->n_stash++;
    if (chance(M, 10)) { /* stashing twice is refused and changes nothing */
        MREQ(ck_stash(M->p, t->ptr, any_stream(M)) == CK_ERR_INVALID, "a second stash of '%s'",
             t->name);
        MREQ(ck_tag(M->p, t->ptr, "renamed", CK_TIER_KEEP) == CK_ERR_INVALID, "retag of stashed '%s'",
             t->name);
        MREQ(ck_set_recipe(M->p, t->ptr, NULL) == CK_ERR_INVALID, "set_recipe of stashed '%s'",
             t->name);
    }
    if (chance(M, 5)) do_free(M, i, any_stream(M)); /* freed while its copy may be in flight */
}

/* A fetch succeeded: once its stream is synchronized the data is there. */
static int will_refuse(model *M, int i) {
    for (int d = 0; d < MAXOBJ + 1; d++) {
        obj *t = &M->o[i];
        if (!t->stashed || !t->has_recipe || info(M, i).state != CK_TENSOR_DROPPED) return 0;
        if (!input_live(M, t)) return 1;
        i = t->in;
    }
    return 0;
}

static void after_fetch(model *M, int i, ck_stream s) {
    obj *t = &M->o[i];
    t->stashed = 0;
    M->n_fetch++;
    if (chance(M, 4)) { /* freed before anyone waited for the copy in */
        do_free(M, i, any_stream(M));
        return;
    }
    MOK(ck_stream_synchronize(M->p, s));
    check_contents(M, i, "after ck_fetch");
    check_info(M, i);
}

/* KNOWN BUG C: mark the tensors this fetch may call a copy out off for: i
 * and the stashed inputs its recipe may fetch. */
static void mark_copy_out(model *M, int i) {
    if (M->known_bugs) return;
    for (int d = 0; d < MAXOBJ + 1 && i >= 0; d++) {
        obj *t = &M->o[i];
        if (!t->stashed) return;
        ck_tensor_status s = info(M, i);
        if (s.state == CK_TENSOR_MOVING_OUT && s.applied == CK_TIER_OFFLOAD) t->copy_out = 1;
        i = input_live(M, t) ? t->in : -1;
    }
}

/* ... and before such a tensor's memory may go, wait for the copy. */
static void copy_out_wait(model *M, int i) {
    if (!M->o[i].copy_out) return;
    size_t got;
    MOK(ck_trim(M->p, &got));
    for (int j = 0; j < MAXOBJ; j++) M->o[j].copy_out = 0; /* all passed */
}

static void op_fetch(model *M) {
    int i = pick(M, p_stashed);
    if (i < 0) return;
    obj *t = &M->o[i];
    ck_stream s = any_stream(M);
    if (at_risk(M, t)) {
        /* A recipe input on the way was freed: only a tensor that needs
         * that recipe is refused. ck_trim settles the states first. */
        size_t got;
        MOK(ck_trim(M->p, &got));
        if (will_refuse(M, i)) {
            ck_status st = ck_fetch(M->p, t->ptr, s);
            MREQ(st == CK_ERR_NOT_OWNED && strstr(ck_last_error(), "input 0"),
                 "fetch of '%s' whose recipe input is freed: %s: %s", t->name, ck_status_str(st),
                 ck_last_error());
            ck_tensor_status s2 = info(M, i);
            MREQ(s2.stashed && s2.state == CK_TENSOR_DROPPED, "'%s' after the refused fetch: %d %s",
                 t->name, s2.stashed, ck_tensor_state_name(s2.state));
            M->n_orphan_refused++;
            do_free(M, i, any_stream(M));
            return;
        }
    }
    mark_copy_out(M, i);
    ck_status st = ck_fetch(M->p, t->ptr, s);
    if (st == CK_OK) {
        after_fetch(M, i, s);
        return;
    }
    MREQ(st != CK_ERR_CORRUPT, "ck_fetch of '%s': %s", t->name, ck_last_error());
    allowed_failure(M, st, M->v->budget, "ck_fetch");
    M->n_fetch_fail++;
    ck_tensor_status is = info(M, i);
    if (!is.stashed && st == CK_ERR_BACKEND && M->v->verify && !M->known_bugs &&
        strstr(ck_last_error(), "copy call")) {
        /* KNOWN BUG B: the verify checksum's copy failed after the fetch
         * went through; the tensor is back (and must be intact). */
        M->n_known_b++;
        after_fetch(M, i, s);
        return;
    }
    MREQ(is.stashed, "a failed fetch (%s) left '%s' not stashed (%s)", ck_status_str(st), t->name,
         ck_tensor_state_name(is.state));
    check_info(M, i);
    if (st == CK_ERR_NOMEM) return; /* budget pressure: left stashed for later */
    /* The fault is spent: the retry goes through. */
    s = any_stream(M);
    st = ck_fetch(M->p, t->ptr, s);
    MREQ(st == CK_OK, "the retry of a failed fetch of '%s': %s: %s", t->name, ck_status_str(st),
         ck_last_error());
    after_fetch(M, i, s);
}

static void do_free(model *M, int i, ck_stream s) {
    obj *t = &M->o[i];
    if (t->stashed) M->n_free_stashed++;
    /* Tensors whose recipe reads t. */
    for (int j = 0; j < MAXOBJ; j++) {
        obj *d = &M->o[j];
        if (j == i || !d->live || !d->has_recipe || d->in != i || d->in_gen != t->gen) continue;
        if (!d->stashed) { /* a stashed one keeps it: its fetch may be refused */
            MOK(ck_set_recipe(M->p, d->ptr, NULL));
            d->has_recipe = 0;
        }
    }
    copy_out_wait(M, i);
    void *ptr = t->ptr;
    MOK(ck_free(M->p, ptr, s));
    t->live = 0;
    if (chance(M, 5)) {
        ck_status st = ck_free(M->p, ptr, s);
        MREQ(st == CK_ERR_DOUBLE_FREE || st == CK_ERR_NOT_OWNED, "a second free of %p: %s",
             ptr, ck_status_str(st));
    }
}

static void op_free(model *M) {
    int i = pick(M, NULL);
    if (i >= 0) do_free(M, i, any_stream(M));
}

static void op_info(model *M) {
    int i = pick(M, p_tagged);
    if (i >= 0) check_info(M, i);
    i = pick(M, p_unstashed);
    if (i >= 0 && chance(M, 20)) check_contents(M, i, "resident, not stashed");
    if (i >= 0 && !M->o[i].tagged) {
        /* untagged: the engine says so */
        MREQ(ck_stash(M->p, M->o[i].ptr, NULL) == CK_ERR_INVALID, "stash of an untagged tensor");
        MREQ(ck_fetch(M->p, M->o[i].ptr, NULL) == CK_ERR_INVALID, "fetch of an untagged tensor");
    } else if (i >= 0) {
        MREQ(ck_fetch(M->p, M->o[i].ptr, NULL) == CK_ERR_INVALID, "fetch of unstashed '%s'",
             M->o[i].name);
    }
}

static void op_step(model *M) {
    if (M->in_step) MOK(ck_step_end(M->p));
    else MOK(ck_step_begin(M->p));
    M->in_step = !M->in_step;
}

/* ---- a run --------------------------------------------------------------- */

static void run_model(const variant *v, uint64_t seed, long ops, int known_bugs) {
    static model Mstore;
    model *M = &Mstore;
    memset(M, 0, sizeof *M);
    M->v = v;
    M->seed = seed;
    M->rng = seed * 0x2545F4914F6CDD1Dull + 1;
    M->known_bugs = known_bugs;
    int n = snprintf(M->conf, sizeof M->conf, "%s", v->conf);
    if (v->fault_key)
        snprintf(M->conf + n, sizeof M->conf - (size_t)n, ",%s=%u", v->fault_key,
                 1 + rnd_n(M, v->fault_max));
    M->p = host_pool(M->conf);
    M->st[0] = NULL;
    for (int k = 1; k < NSTREAMS; k++) MOK(ck_stream_create(M->p, &M->st[k]));
    /* How many tensors live at once: with budget=256M about 10-20 of 1.5 to
     * 40 MiB press on it. */
    int maxlive = v->budget ? 18 : 8 + (int)rnd_n(M, 8);
    for (M->op = 0; M->op < ops; M->op++) {
        int live = 0;
        for (int i = 0; i < MAXOBJ; i++) live += M->o[i].live;
        unsigned r = rnd_n(M, 100);
        if (r < 12 || (v->budget && live < 10 && r < 30)) {
            if (live < maxlive) op_malloc(M);
            else op_free(M);
        } else if (r < 22) op_tag(M);
        else if (r < 23) op_untag(M);
        else if (r < 33) op_set_recipe(M);
        else if (r < 53) op_stash(M);
        else if (r < 73) op_fetch(M);
        else if (r < 79) op_free(M);
        else if (r < 86) op_write(M);
        else if (r < 93) op_info(M);
        else if (r < 95) op_step(M);
        else if (r < 97) audit(M);
        else {
            size_t got;
            MOK(ck_trim(M->p, &got));
        }
        check_stats(M);
    }
    audit(M);
    /* Fetch about half of what is stashed (checking it), free the rest in
     * whatever state it is in. */
    M->op = ops;
    for (int i = 0; i < MAXOBJ; i++)
        if (M->o[i].live && M->o[i].stashed && !at_risk(M, &M->o[i]) && chance(M, 50)) {
            ck_stream s = any_stream(M);
            mark_copy_out(M, i);
            ck_status st = ck_fetch(M->p, M->o[i].ptr, s);
            if (st == CK_OK) after_fetch(M, i, s);
            else allowed_failure(M, st, v->budget, "ck_fetch at the end");
        }
    for (int i = 0; i < MAXOBJ; i++)
        if (M->o[i].live) do_free(M, i, any_stream(M));
    if (M->in_step) MOK(ck_step_end(M->p));
    size_t got;
    MOK(ck_trim(M->p, &got));
    ck_stats s = stats(M);
    MREQ(s.allocated_bytes.current == 0 && s.allocation.current == 0, "allocated %lld at the end",
         (long long)s.allocated_bytes.current);
    MREQ(s.physical_bytes.current == 0, "physical_bytes %lld after freeing everything and ck_trim",
         (long long)s.physical_bytes.current);
    MREQ(s.offloaded_bytes.current == 0 && s.dropped_bytes.current == 0 && s.moving_bytes.current == 0,
         "tier counters at the end: offloaded %lld dropped %lld moving %lld",
         (long long)s.offloaded_bytes.current, (long long)s.dropped_bytes.current,
         (long long)s.moving_bytes.current);
    MREQ(s.num_stashes >= (uint64_t)M->n_stash && s.num_fetches >= (uint64_t)M->n_fetch,
         "num_stashes %llu (model %ld), num_fetches %llu (model %ld)",
         (unsigned long long)s.num_stashes, M->n_stash, (unsigned long long)s.num_fetches, M->n_fetch);
    if (getenv("CK_TIER_MODEL_VERBOSE"))
        fprintf(stderr,
                "%-22s seed %-6" PRIu64 " ops %ld: stash %ld (failed %ld) fetch %ld (failed %ld) "
                "malloc failed %ld, injected %ld, refused %ld, freed stashed %ld, bug B %ld; "
                "replays %llu, retries %llu, prefetch hits %llu, ooms %llu, to host %llu MiB; calls: "
                "create %llu map %llu unmap %llu release %llu\n",
                v->name, seed, ops, M->n_stash, M->n_stash_fail, M->n_fetch, M->n_fetch_fail,
                M->n_malloc_fail, M->n_injected, M->n_orphan_refused, M->n_free_stashed,
                M->n_known_b, (unsigned long long)s.num_replays,
                (unsigned long long)s.num_alloc_retries, (unsigned long long)s.prefetch_hits,
                (unsigned long long)s.num_ooms, (unsigned long long)(s.bytes_to_host >> 20),
                (unsigned long long)s.num_create_calls, (unsigned long long)s.num_map_calls,
                (unsigned long long)s.num_unmap_calls, (unsigned long long)s.num_release_calls);
    g_runs++;
    g_stash += M->n_stash;
    g_fetch += M->n_fetch;
    g_injected += M->n_injected;
    g_stash_fail += M->n_stash_fail;
    g_fetch_fail += M->n_fetch_fail;
    g_orphan_refused += M->n_orphan_refused;
    g_replays += (long)s.num_replays;
    g_retries += (long)s.num_alloc_retries;
    for (int k = 1; k < NSTREAMS; k++) MOK(ck_stream_destroy(M->p, M->st[k]));
    MOK(ck_pool_destroy(M->p));
}

static long env_long(const char *name, long dflt) {
    const char *e = getenv(name);
    return e && *e ? strtol(e, NULL, 0) : dflt;
}

static long total_ops(void) { return env_long("CK_TIER_MODEL_OPS", 4000); }

START_TEST(t_model) {
    const variant *v = &variants[_i];
    const char *only = getenv("CK_TIER_MODEL_VARIANT");
    if (only && *only && strcmp(only, v->name) != 0) return;
    int known = (int)env_long("CK_TIER_MODEL_KNOWN_BUGS", 1);
    long one_seed = env_long("CK_TIER_MODEL_SEED", -1);
    /* At least two seeds per variant; a long run is cut into runs of at
     * most MAX_RUN_OPS, so it sees many more faults and fresh pools. */
    long per_run = total_ops() / (NVARIANTS * MIN_SEEDS);
    if (per_run > MAX_RUN_OPS) per_run = MAX_RUN_OPS;
    if (per_run < 50) per_run = 50;
    if (one_seed >= 0) {
        run_model(v, (uint64_t)one_seed, per_run, known);
        return;
    }
    long seeds = total_ops() / (NVARIANTS * per_run);
    if (seeds < MIN_SEEDS) seeds = MIN_SEEDS;
    for (long k = 0; k < seeds; k++)
        run_model(v, 100000u * (uint64_t)_i + 17u * (uint64_t)k + 1u, per_run, known);
}
END_TEST

/* The runs together did what the test is for. */
START_TEST(t_coverage) {
    const char *fork = getenv("CK_FORK"); /* the totals live in this process only */
    if (!fork || strcmp(fork, "no") != 0) return;
    if (getenv("CK_TIER_MODEL_VARIANT") || getenv("CK_TIER_MODEL_SEED")) return;
    ck_assert_int_ge(g_runs, NVARIANTS * MIN_SEEDS);
    ck_assert_int_gt(g_stash, 0);
    ck_assert_int_gt(g_fetch, 0);
    ck_assert_int_gt(g_replays, 0);
    ck_assert_int_gt(g_stash_fail, 0);
    ck_assert_int_gt(g_fetch_fail, 0);
    ck_assert_int_gt(g_orphan_refused, 0);
    ck_assert_int_gt(g_injected, 0);
    ck_assert_int_gt(g_retries, 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tier_model");
    /* Timeouts apply only with CK_FORK unset; the long run scales them. */
    double t = 300 + (double)total_ops() * 0.02;
    TCase *tc = ck_test_tcase(s, "model", t);
    tcase_add_loop_test(tc, t_model, 0, NVARIANTS);
    tcase_add_test(tc, t_coverage);
    return ck_test_run(s);
}
