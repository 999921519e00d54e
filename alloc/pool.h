/* The caching allocator's internal state, shared by pool.c, phys.c,
 * check.c, stats.c, snapshot.c and stream.c.
 *
 * Picture: one or more VA regions reserved from the backend; blocks tile
 * each region in address order. Physical memory is held per *chunk* (the
 * backend's granularity, 2 MiB): each mapped chunk is one physical handle
 * with one mapping of its own (phys.c), so any chunk that no resident block
 * touches can be unmapped and released, whatever was mapped beside it, and
 * a run of chunks is mapped with one backend call. Large requests (> 1 MiB)
 * are best-fit from the large heap's free blocks; small ones come from
 * 2 MiB pages that are themselves large blocks and start on a chunk (so a
 * page is exactly one chunk). Blocks of at least the pool's align_min start
 * on a chunk boundary too, so they share at most their last chunk.
 *
 * Cross-stream safety uses "rounds": a round records one event on every
 * stream that freed something since the previous round. A free block (or
 * idle chunk) stamped with round r is safe for any stream, or to unmap,
 * once round r+1 has completed; before that only its own stream may reuse it.
 */
#ifndef CK_POOL_H
#define CK_POOL_H

#include "backend.h"
#include "internal.h"
#include "live.h"
#include "lock.h"
#include "trace.h"

#include <pthread.h>

#define CK_ROUND 512u                 /* every size is rounded up to this */
#define CK_SMALL_MAX (1u << 20)       /* <= this: served from small pages */
#define CK_PAGE_SIZE (2u << 20)       /* one small page */
#define CK_MAX_ALLOC ((size_t)1 << 46) /* larger requests are CK_ERR_INVALID */
#define CK_NBINS 576
#define CK_ROUND_EVERY 64u /* frees between background rounds */
/* Quick lists: freed small blocks kept whole, one LIFO list per size, so a
 * cached malloc+free of the same size neither splits nor merges. */
#define CK_QUICK_CLASSES (CK_SMALL_MAX / CK_ROUND + 1)
#define CK_QUICK_PER_CLASS 32u
#define CK_QUICK_MAX_BYTES ((uint64_t)32 << 20)
/* Large blocks get a few slots of their own: a training step frees and
 * asks for the same large sizes again; their chunks stay held. */
#define CK_LQUICK_N 16u
#define CK_FENCE_WAIT_NS 5000000u /* longest wait for another stream's free before mapping */
#define CK_ALIGN_MIN ((uint64_t)4 << 20) /* align_min once the pool evicts (chunk_align=auto) */
#define CK_VA_DEFAULT_MAX ((uint64_t)256 << 30) /* the default first reservation's cap */

typedef struct ck_block ck_block;
typedef struct ck_region ck_region;

enum { BLK_FREE = 0, BLK_LIVE = 1, BLK_PENDING = 2 };

/* One granule of a region's address space and the physical memory under it. */
typedef struct ck_chunk {
    ck_phys h;           /* the physical handle mapped here (when mapped) */
    uint64_t free_round; /* round of the last free of a block touching it */
    uint32_t nres;       /* resident live/pending large blocks touching it */
    uint32_t iprev, inext; /* idle list (index + 1; 0 = none) */
    uint8_t mapped;
    uint8_t idle;        /* on the region's idle list: mapped, nres == 0 */
} ck_chunk;

struct ck_region {
    uintptr_t va;
    size_t size;
    size_t nchunks;
    ck_chunk *chunk;
    uint32_t idle_head, idle_tail; /* idle chunks, oldest first (index + 1) */
    ck_block *last;   /* the block that ends the region */
    uintptr_t used_top; /* nothing at or above this was ever handed out */
    uintptr_t map_top;  /* nothing at or above this was ever mapped */
    ck_region *next;
};

/* A stream the pool knows (fence.c). */
#define CK_NO_STREAM UINT32_MAX
typedef struct ck_sent {
    ck_stream s;
    uint32_t gen;   /* bumped when the stream goes: (index, gen) pairs go stale */
    uint32_t hnext; /* hash chain, or free list when not hashed (index + 1) */
    uint8_t live, own, dirty, hashed;
    uint8_t fev_waited; /* a bounded wait on fev timed out: only poll it now */
    ck_event fev;      /* fence_wait's event on this stream, or NULL */
    uint64_t fev_seq;  /* p->free_seq when fev was recorded */
    uint64_t done_seq; /* frees on this stream numbered below this have passed */
    uint64_t checked_gen; /* foreign: the streams-created count when last checked */
} ck_sent;

typedef struct ck_heap {
    ck_block *bins[CK_NBINS];
    uint64_t bitmap[(CK_NBINS + 63) / 64];
} ck_heap;

struct ck_block {
    uintptr_t addr;
    size_t size;
    size_t requested;         /* live: bytes asked for */
    ck_block *prev, *next;    /* address neighbours (NULL at region/page edges) */
    ck_block *fprev, *fnext;  /* bin list (free) or pending list */
    ck_block *hnext;          /* hash chain; also the block freelist link */
    ck_block *page;           /* small blocks: the large block hosting the page */
    ck_region *region;
    ck_stream stream;         /* live: allocation stream; free: stream that freed it */
    uint64_t free_round;
    uint64_t free_seq;        /* free: the pool's free count when it was freed */
    uint64_t *uses;           /* ck_record_stream's streams: index << 32 | generation */
    ck_event *pend;           /* pending: events that must complete first */
    uint32_t nuses, cap_uses, npend;
    uint16_t bin;
    uint8_t state;
    uint8_t small;            /* lives in the small heap */
    uint8_t is_page;          /* large block hosting a small page */
    uint8_t evicted;          /* live, its chunks given back (ck__pool_evict) */
    uint8_t quick;            /* free small block on a quick list (not merged, not binned) */
    uint8_t freed;            /* free, and its address was handed out and freed (a second
                                 free there is a double free, not a stray pointer) */
    uint32_t nlive;           /* page host: its small blocks that are live or pending */
    uint16_t tag;             /* 0 = untagged, else the tag's name id (tier.c) */
    uint8_t tier_hook;        /* live: tagged, or an input of a recipe: ck_free tells tier.c */
    struct ck_tmeta *tm;      /* live and tagged: the tier engine's record (tier.c) */
};

/* Recent operations, for snapshots: a ring of the last CK_RING_N, written
 * under the pool lock with a few stores per operation (no formatting). */
#define CK_RING_N 4096u /* power of two */
enum {
    CK_RING_ALLOC = 0,
    CK_RING_FREE = 1,
    CK_RING_ALLOC_FAIL = 2,
    CK_RING_MAP = 3,
    CK_RING_UNMAP = 4,
    CK_RING_TIER = 5 /* a tensor's tier state changed (offloaded or dropped bytes moved) */
};
/* ck_ring_rec.action: the action in the low 8 bits; the tier engine's
 * offloaded and dropped bytes after the op, in MiB (rounded), in bits 8-35
 * and 36-63 (a record stays one cache line). */
#define CK_RING_ACTION(a) ((unsigned)((a) & 0xff))
#define CK_RING_OFFLOADED(a) ((int64_t)(((a) >> 8) & 0xfffffff) << 20)
#define CK_RING_DROPPED(a) ((int64_t)((a) >> 36) << 20)
static inline uint64_t ck__ring_tierbits(int64_t offloaded, int64_t dropped) {
    uint64_t o = offloaded > 0 ? ((uint64_t)offloaded + (1u << 19)) >> 20 : 0;
    uint64_t d = dropped > 0 ? ((uint64_t)dropped + (1u << 19)) >> 20 : 0;
    if (o > 0xfffffff) o = 0xfffffff;
    if (d > 0xfffffff) d = 0xfffffff;
    return o << 8 | d << 36;
}

typedef struct ck_ring_rec {
    uint64_t tick; /* ck__ring_clock(), or 0 when the pool does not stamp; snapshot.c
                      turns it into ns */
    uint64_t addr, size, stream;
    int64_t allocated, reserved, physical; /* the pool's bytes after the op */
    uint64_t action; /* CK_RING_ACTION / CK_RING_OFFLOADED / CK_RING_DROPPED */
} ck_ring_rec;

/* The whole run, for snapshots (the ring keeps only the last CK_RING_N): up
 * to CK_HIST_N buckets of consecutive records, each with the first and last
 * record's tick and the min and max of allocated, reserved and physical
 * bytes. When every bucket is in use and the last is full, neighbours merge
 * in pairs (snapshot.c) and a bucket covers twice as many records: constant
 * memory, any run length, and every peak is some bucket's max. The ring is
 * folded in when it is about to wrap (and a copy of the rest when a snapshot
 * is taken), so an operation pays one test, and the folding runs as tight
 * min/max loops over the ring. */
#define CK_HIST_N 1024u /* even */
typedef struct ck_hist_bucket {
    uint64_t tick0, tick1;
    int64_t lo[5], hi[5]; /* allocated, reserved, physical, offloaded, dropped */
} ck_hist_bucket;

typedef struct ck_hist {
    uint64_t folded; /* ring records folded in so far */
    uint64_t span; /* records per full bucket (a power of two; 0 before the first) */
    uint64_t fill; /* records in the last bucket */
    uint32_t n;    /* buckets in use */
    ck_hist_bucket b[CK_HIST_N];
} ck_hist;

/* snapshot.c: merge pairs of buckets (h->n == CK_HIST_N, the last full);
 * fold ring records [h->folded, upto) into h (at most CK_RING_N of them). */
void ck__hist_halve(ck_hist *h);
void ck__hist_fold(ck_hist *h, const ck_ring_rec *ring, uint64_t upto);

/* A cheap timestamp for the ring: the TSC where there is one (a third of
 * clock_gettime's cost on a VM), calibrated against ck__now_ns when a
 * snapshot is written. Even so it is most of the ring's cost (~3 ns a
 * record), so only pools with a snapshot path stamp their records. */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
static inline uint64_t ck__ring_clock(void) { return __rdtsc(); }
#elif defined(__aarch64__)
static inline uint64_t ck__ring_clock(void) {
    uint64_t v;
    __asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
    return v;
}
#else
static inline uint64_t ck__ring_clock(void) { return ck__now_ns(); }
#endif

/* ck_counters is defined in live.h: it is part of the shared-memory layout. */

struct ck_pool {
    ck_lock mu;
    ck_backend *be;
    ck_pool_options opts;
    char *trace_path;
    ck_trace_writer *trace;
    char *snapshot_path; /* owned copy (snapshot.c); opts.snapshot_path points here */
    uint64_t budget;
    size_t gran;
    size_t va_default;

    ck_region *regions;
    ck_heap large, small;
    ck_block *spare_page; /* one fully free small page kept to avoid churn */
    ck_block *quick[CK_QUICK_CLASSES]; /* by size / CK_ROUND, linked by fnext/fprev */
    uint64_t quick_map[(CK_QUICK_CLASSES + 63) / 64]; /* non-empty lists */
    uint16_t nquick_class[CK_QUICK_CLASSES];
    uint64_t nquick, quick_bytes;
    ck_block *lquick[CK_LQUICK_N]; /* freed large blocks kept whole (holding their chunks) */
    uint32_t nlquick;
    uint64_t lquick_bytes;

    /* address -> block, for every block except hosting pages */
    ck_block **htab;
    size_t hmask, hcount;
    int hbits;

    ck_block *block_free; /* recycled block structs */
    void **slabs;
    size_t nslabs, cap_slabs;

    ck_block *pending, *pending_tail; /* freed blocks waiting on record_stream events, oldest first */
    size_t npending;

    uint64_t nidle;     /* idle chunks, all regions */
    ck_phys *orphans;   /* unmapped handles the driver would not release yet (phys.c) */
    size_t norphans, cap_orphans;
    uint64_t align_min; /* large blocks this size or more start on a chunk */
    int debug_check;    /* CKALLOC_CHECK=1: ck__pool_check after each malloc/free */
    int op_hooks;       /* trace or debug_check: op_hooks runs after each malloc/free */

    /* rounds */
    uint64_t round_issued, round_done;
    uint32_t *dirty;        /* streams (entries) that freed since the last round */
    size_t ndirty, cap_dirty;
    /* the stream registry (fence.c) */
    ck_sent *sent;
    size_t nsent, cap_sent;
    uint32_t sfree;         /* free entries (index + 1) */
    uint32_t *sbucket, smask;
    uint32_t last_sidx;     /* the entry looked up last */
    uint32_t frees_since_round; /* a round starts every CK_ROUND_EVERY frees */
    uint64_t free_seq;      /* frees so far (numbers them for fence_wait) */
    uint64_t round_stuck;   /* a bounded wait for this round timed out */
    ck_event *round_ev;     /* events of the round in flight */
    size_t nround_ev, cap_round_ev;
    ck_event *ev_cache;     /* idle events for reuse */
    size_t nev_cache, cap_ev_cache;

    struct ck_tier_engine *tier;   /* the tier engine, made at the first ck_tag (tier.c) */

    /* The counters: p->c points into the pool's live slot (shared memory,
     * ckalloc-stat reads it) or at c_private (live=0, no segment, no free
     * slot, or a forked child). seq is the slot's seqlock counter or
     * seq_private; pool_lock/pool_unlock bump it. */
    ck_counters *c;
    _Atomic uint64_t *seq;
    ck_live_slot *live;     /* NULL when private */
    uint64_t live_served;   /* the last reader request answered */
    uint64_t live_next_seq; /* answer no new request before seq reaches this */
    uint64_t live_next_ns;  /* nor before this time (ck__now_ns) */
    int live_slot;
    _Atomic uint64_t seq_private;
    ck_counters c_private;

    /* recent operations (snapshot.c reads them under the lock) */
    uint64_t ring_n;                /* records ever pushed */
    int ring_stamp;                 /* 1: records get a time (set by snapshot attach) */
    uint64_t ring_tierbits;         /* ck__ring_tierbits of the tier engine's bytes now */
    uint64_t ring_tick0, ring_ns0;  /* clock calibration taken at create */
    ck_ring_rec ring[CK_RING_N];
    ck_hist hist;                   /* the whole run, bucketed */
};

/* Add delta to a counter. Stores are relaxed atomics: the counters may sit
 * in the live segment, where ckalloc-stat copies them while the lock holder
 * writes (see live.h). Inline: the cached path makes several a call. */
static inline void ck__stat_up(ck_stat *s, uint64_t d) {
    int64_t cur = s->current + (int64_t)d;
    __atomic_store_n(&s->current, cur, __ATOMIC_RELAXED);
    ck__cnt_set(&s->allocated, s->allocated + d);
    if (cur > s->peak) __atomic_store_n(&s->peak, cur, __ATOMIC_RELAXED);
}
static inline void ck__stat_down(ck_stat *s, uint64_t d) {
    __atomic_store_n(&s->current, s->current - (int64_t)d, __ATOMIC_RELAXED);
    ck__cnt_set(&s->freed, s->freed + d);
}
static inline void ck__stat_add(ck_stat *s, int64_t delta) {
    int64_t cur = s->current + delta;
    __atomic_store_n(&s->current, cur, __ATOMIC_RELAXED);
    if (delta > 0) {
        ck__cnt_set(&s->allocated, s->allocated + (uint64_t)delta);
        if (cur > s->peak) __atomic_store_n(&s->peak, cur, __ATOMIC_RELAXED);
    } else {
        ck__cnt_set(&s->freed, s->freed + (uint64_t)-delta);
    }
}

/* One record of the recent-operations ring: a few stores, so the cached
 * alloc+free pair stays cheap; the clock is read only by pools that will
 * write snapshots. */
static inline void ck__ring_push(ck_pool *p, unsigned action, uintptr_t addr, size_t size,
                             ck_stream s) {
    ck_ring_rec *r = &p->ring[p->ring_n++ & (CK_RING_N - 1)];
    r->tick = p->ring_stamp ? ck__ring_clock() : 0;
    r->action = action | p->ring_tierbits;
    r->addr = addr;
    r->size = size;
    r->stream = (uintptr_t)s;
    r->allocated = p->c->allocated_bytes.current;
    r->reserved = p->c->reserved_bytes.current;
    r->physical = p->c->physical_bytes.current;
    if (!(p->ring_n & (CK_RING_N - 1))) ck__hist_fold(&p->hist, p->ring, p->ring_n); /* about to wrap */
}

/* Largest free range that is fully mapped; called with the lock held. */
uint64_t ck__largest_free(ck_pool *p);

/* phys.c, the physical layer (lock held). Chunks are counted by the large
 * blocks that touch them: hold when a block becomes live or a page is
 * carved, drop (stamping the round of the free) when it is freed. */
size_t ck__chunk_of(const ck_pool *p, const ck_region *r, uintptr_t a);
ck_status ck__region_new(ck_pool *p, size_t size, ck_region **out);
void ck__region_delete(ck_pool *p, ck_region *r); /* unmaps what is left */
ck_region *ck__region_of(const ck_pool *p, uintptr_t a);
/* Map every unmapped chunk under [a, a+n); on failure what this call
 * mapped is given back. New chunks are idle until held. */
ck_status ck__phys_map(ck_pool *p, ck_region *r, uintptr_t a, size_t n);
/* Bytes of the chunks under [a, a+n) that are not mapped. */
size_t ck__phys_unmapped(const ck_pool *p, const ck_region *r, uintptr_t a, size_t n);
/* Bytes of the chunks under [a, a+n) that no resident block holds
 * (unmapped or idle): what placing a block there costs the budget once
 * every idle chunk elsewhere is released. *unmapped gets
 * ck__phys_unmapped's answer from the same walk. */
size_t ck__phys_cost(const ck_pool *p, const ck_region *r, uintptr_t a, size_t n, size_t *unmapped);
void ck__phys_hold(ck_pool *p, ck_region *r, uintptr_t a, size_t n);
void ck__phys_drop(ck_pool *p, ck_region *r, uintptr_t a, size_t n, uint64_t round);
/* Release idle chunks whose last free is fenced, oldest first, skipping
 * those under [keep_a, keep_a+keep_n), until `want` bytes (SIZE_MAX: all).
 * Returns the bytes released. */
size_t ck__phys_release(ck_pool *p, size_t want, uintptr_t keep_a, size_t keep_n);
/* Release the idle chunks under [a, a+n) now: those wholly inside it at
 * once, the edge chunks once their frees are fenced. Returns bytes. */
size_t ck__phys_release_under(ck_pool *p, ck_region *r, uintptr_t a, size_t n);
void ck__phys_release_all(ck_pool *p, ck_region *r);

/* The tier engine's hold on a live block's memory (each takes the lock).
 * evict: the block stays allocated at its address, its chunks that no
 * other resident block touches are unmapped and released now (*released:
 * the bytes). The caller has made sure no queued work still uses it, on
 * any stream, including work from before the block was allocated on its
 * stream (the chunks wholly under it are released without a fence).
 * restore: map them back at the same address, under the budget as an
 * allocation would (CK_ERR_NOMEM with the pool's sentence when it cannot);
 * the contents are undefined until the caller refills them. */
ck_status ck__pool_evict(ck_pool *p, void *ptr, size_t *released);
ck_status ck__pool_restore(ck_pool *p, void *ptr);
/* The same with the lock held, on a live block. */
ck_status ck__evict_locked(ck_pool *p, ck_block *b, size_t *released);
ck_status ck__restore_locked(ck_pool *p, ck_block *b);
/* Lock held: the live block that starts at ptr, or an error naming fn and
 * what ptr is. */
ck_status ck__live_block(ck_pool *p, void *ptr, const char *fn, ck_block **out);
/* Lock held: the live block holding [ptr, ptr+n) (NULL, with *why, if none). */
ck_block *ck__span_block(ck_pool *p, const void *ptr, size_t n, const char **why);

/* ---- the tier engine (tier.c), called by the pool with the lock held ---- */
/* Under budget pressure, after the streams were waited for: finish pending
 * releases, then evict resident stashed tensors until need bytes are free
 * (0: only finish). Returns the physical bytes released. */
size_t ck__tier_reclaim(ck_pool *p, size_t need);
/* ck_free of a block with tier_hook set (tagged, or a recipe's input):
 * forget it, and mark the recipes that read it. Events the free must wait
 * for (a copy still reading or writing it) go into ev[] (at most 2);
 * returns how many. */
uint32_t ck__tier_on_free(ck_pool *p, ck_block *b, ck_event *ev);
/* ck_pool_destroy: wait for the copy stream, give back host memory. */
void ck__tier_destroy(ck_pool *p);
/* Put a parsed policy in force (taken; policy/policy.h). */
struct ck_policy;
ck_status ck__tier_set_policy(ck_pool *p, struct ck_policy *pol);
/* Count the timed spans (fetch waits, replays) the streams have passed;
 * never waits. Pool lock held. */
void ck__tier_count_spans(ck_pool *p);
/* The name of tag id t ("" for 0 or unknown). */
const char *ck__tier_tag_name(const ck_pool *p, uint16_t t);
/* Tag names known (ids 1..count). */
size_t ck__tier_tag_count(const ck_pool *p);
/* check.c: the engine's invariants (records, lists, counters); 0 or -1 with why. */
int ck__tier_check(ck_pool *p, char *why, size_t n);
/* What serves pinned host memory ("jemalloc", "cache", "none yet") and why
 * jemalloc does not; the NUMA node bound to (-1 none, -2 none to bind to)
 * and why; mappings pinned so far. Lock held or not in use. */
typedef struct ck_host_info {
    const char *allocator, *why, *numa_why;
    int numa;
    uint64_t pins, held;
} ck_host_info;
void ck__tier_host_info(ck_pool *p, ck_host_info *out);
/* Bytes of live tensors whose device memory is released (offloaded or dropped). */
uint64_t ck__tier_released_bytes(const ck_pool *p);
/* kernels/replay.c: ck_replay with the pool lock held. */
struct ck_recipe;
ck_status ck__replay_locked(ck_pool *p, const struct ck_recipe *r, void *out, size_t out_bytes,
                            ck_stream stream);

/* check.c: 0 if every invariant of the pool's structure holds (blocks,
 * bins, hash, chunks and their counts, idle lists, counters), else -1 with
 * the first broken one described in why. Lock held or no other thread in
 * the pool. */
int ck__pool_check(ck_pool *p, char *why, size_t n);
/* CKALLOC_CHECK=1: run the check (lock held) and abort saying what broke. */
void ck__pool_check_or_abort(ck_pool *p, const char *after);

/* fence.c: streams and rounds (lock held). */
int ck__grow_array(void *v, size_t *cap, size_t n, size_t elem, size_t first);
ck_status ck__streams_init(ck_pool *p);
void ck__streams_free(ck_pool *p);
/* The entry of stream s, registering a foreign CUstream on first sight;
 * CK_ERR_INVALID (a sentence naming fn) for a destroyed stream or another
 * pool's, with nothing changed. */
ck_status ck__stream_lookup(ck_pool *p, ck_stream s, const char *fn, uint32_t *idx);
ck_status ck__stream_register_own(ck_pool *p, ck_stream s);
/* 1 if s is the default stream or a registered stream not destroyed. */
int ck__stream_alive(const ck_pool *p, ck_stream s);
/* 1 if the free numbered seq on stream s is known to have passed, waiting
 * for it at most CK_FENCE_WAIT_NS (and not at all again on a stream whose
 * last such wait timed out, until that event completes). */
int ck__stream_passed(ck_pool *p, ck_stream s, uint64_t seq);
/* The stream of entry idx is gone (its work done): forget it. */
void ck__stream_retire(ck_pool *p, uint32_t idx);
void ck__mark_dirty(ck_pool *p, uint32_t idx);
/* An event recorded on s (a cached fence); put it back when passed. */
ck_status ck__event_record(ck_pool *p, ck_stream s, ck_event *out);
void ck__event_put(ck_pool *p, ck_event e);
/* Has e passed? wait=0 asks without blocking (only a completed event
 * counts); wait=1 blocks until it completes and goes on regardless of
 * errors (destroy and quiesce must finish). */
int ck__event_passed(ck_pool *p, ck_event e, int wait);
/* Poll the round in flight: 1 if it (or an earlier one) completed. */
int ck__round_poll(ck_pool *p, int wait);
void ck__round_issue(ck_pool *p);
/* Wait until frees stamped `stamp` are fenced (round_done > stamp),
 * issuing the rounds that need it, for at most CK_FENCE_WAIT_NS, and not
 * at all on a round whose wait timed out once. 1 if they are. */
int ck__round_wait_bounded(ck_pool *p, uint64_t stamp);
/* Wait for every stream that freed memory. */
ck_status ck__pool_quiesce(ck_pool *p);
/* pool.c: release=eager housekeeping, run by pool calls (lock held). */
void ck__pool_eager_release(ck_pool *p);

/* For the interposition library (each takes the lock): 1 if ptr lies in one
 * of the pool's VA regions; forget a stream its owner is about to destroy. */
int ck__pool_contains(ck_pool *p, const void *ptr);
/* Where [ptr, ptr+n) lies: 0 outside the pool's address space, 1 inside one
 * live allocation whose pages are all mapped, -1 otherwise with *why set to
 * a phrase ("is not inside a live allocation", ...). n > 0. */
int ck__pool_span(ck_pool *p, const void *ptr, size_t n, const char **why);
int ck__pool_span_locked(ck_pool *p, const void *ptr, size_t n, const char **why);
void ck__pool_stream_gone(ck_pool *p, ck_stream s);

/* stats.c: the stats of p (lock held), and the one emitter for a copy of them. */
void ck__stats_fill(ck_pool *p, ck_stats *st);
ck_status ck__stats_print(FILE *out, ck_format format, const char *backend, const ck_stats *st);

/* snapshot.c: pools with a snapshot path are written at exit, on their
 * signal, and by detach (ck_pool_destroy, before teardown). attach copies the
 * path into p->opts.snapshot_path; detach returns CK_ERR_IO if the write failed. */
ck_status ck__snapshot_attach(ck_pool *p);
ck_status ck__snapshot_detach(ck_pool *p);

/* The pool lock, which is also the write side of the live seqlock (see
 * live.h): seq is odd while the lock is held. Its only writer is the lock
 * holder, so a relaxed load + store suffices; the release fence orders the
 * odd value before the counter stores, the release store of the even value
 * after them. Use these wherever the pool mutex is taken. */
static inline void pool_lock(ck_pool *p) {
    ck_lock_acquire(&p->mu);
    uint64_t s = atomic_load_explicit(p->seq, memory_order_relaxed);
    atomic_store_explicit(p->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static inline void pool_unlock(ck_pool *p) {
    uint64_t s = atomic_load_explicit(p->seq, memory_order_relaxed);
    /* One relaxed load on the hot path: has a reader asked for the top list?
     * seq doubles as an operation count that paces the answers (live.c). */
    if (p->live && atomic_load_explicit(&p->live->request, memory_order_relaxed) != p->live_served &&
        s >= p->live_next_seq)
        ck__live_serve(p);
    atomic_store_explicit(p->seq, s + 1, memory_order_release);
    ck_lock_release(&p->mu);
}

#endif
