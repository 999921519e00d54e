/* The caching allocator's internal state, shared by pool.c, stats.c and
 * stream.c.
 *
 * Picture: one or more VA regions reserved from the backend; physical memory
 * mapped into them in segments (one create + one map each, a whole number of
 * granularity-sized chunks); blocks tile each region in address order. Large
 * requests (> 1 MiB) are best-fit from the large heap's free blocks; small
 * ones come from 2 MiB pages that are themselves large blocks. A segment whose
 * chunks hold no live block can be unmapped (under budget pressure, on trim,
 * or eagerly), so physical memory tracks live bytes, not the VA high water.
 *
 * Cross-stream safety uses "rounds": a round records one event on every
 * stream that freed something since the previous round. A free block (or
 * free segment) stamped with round r is safe for any stream, or to unmap,
 * once round r+1 has completed; before that only its own stream may reuse it.
 */
#ifndef CK_POOL_H
#define CK_POOL_H

#include "backend.h"
#include "internal.h"
#include "trace.h"

#include <pthread.h>

#define CK_ROUND 512u                 /* every size is rounded up to this */
#define CK_SMALL_MAX (1u << 20)       /* <= this: served from small pages */
#define CK_PAGE_SIZE (2u << 20)       /* one small page */
#define CK_MAX_ALLOC ((size_t)1 << 46) /* larger requests are CK_ERR_INVALID */
#define CK_NBINS 576

typedef struct ck_block ck_block;
typedef struct ck_seg ck_seg;
typedef struct ck_region ck_region;

enum { BLK_FREE = 0, BLK_LIVE = 1, BLK_PENDING = 2 };

struct ck_seg {
    uintptr_t va;
    size_t size;
    ck_phys phys;
    ck_region *region;
    uint32_t nbusy;        /* live/pending large blocks overlapping it */
    uint64_t free_round;   /* round when nbusy dropped to 0 */
    ck_seg *lnext, *lprev; /* list of fully free segments, oldest first */
};

struct ck_region {
    uintptr_t va;
    size_t size;
    size_t nchunks;
    ck_seg **chunk; /* per chunk: the segment mapped there, or NULL */
    ck_block *last;   /* the block that ends the region */
    uintptr_t used_top; /* nothing at or above this was ever handed out */
    ck_region *next;
};

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
    ck_stream *uses;          /* streams given to ck_record_stream */
    ck_event *pend;           /* pending: events that must complete first */
    uint32_t nuses, cap_uses, npend;
    uint16_t bin;
    uint8_t state;
    uint8_t small;            /* lives in the small heap */
    uint8_t is_page;          /* large block hosting a small page */
};

typedef struct ck_counters {
    ck_stat allocation, segment, active, inactive_split;
    ck_stat allocated_bytes, reserved_bytes, active_bytes, inactive_split_bytes, requested_bytes;
    ck_stat mapped_bytes, physical_bytes;
    uint64_t num_alloc_retries, num_ooms;
    uint64_t num_map_calls, num_unmap_calls, num_create_calls, num_release_calls;
} ck_counters;

struct ck_pool {
    pthread_mutex_t mu;
    ck_backend *be;
    ck_pool_options opts;
    char *trace_path;
    ck_trace_writer *trace;
    uint64_t budget;
    size_t gran;
    size_t va_default;

    ck_region *regions;
    ck_heap large, small;
    ck_block *spare_page; /* one fully free small page kept to avoid churn */

    /* address -> block, for every block except hosting pages */
    ck_block **htab;
    size_t hmask, hcount;
    int hbits;

    ck_block *block_free; /* recycled block structs */
    void **slabs;
    size_t nslabs, cap_slabs;

    ck_block *pending; /* freed blocks waiting on record_stream events */
    size_t npending;

    ck_seg *free_segs, *free_segs_tail; /* fully free segments, oldest first */

    /* rounds */
    uint64_t round_issued, round_done;
    ck_stream *dirty;       /* streams that freed since the last round */
    size_t ndirty, cap_dirty;
    ck_event *round_ev;     /* events of the round in flight */
    size_t nround_ev, cap_round_ev;
    ck_event *ev_cache;     /* idle events for reuse */
    size_t nev_cache, cap_ev_cache;

    ck_counters c;
};

/* stats.c */
void ck__stat_add(ck_stat *s, int64_t delta);
/* Largest free range that is fully mapped; called with the lock held. */
uint64_t ck__largest_free(ck_pool *p);

/* pool.c: wait for every stream that freed memory, with the lock held. */
ck_status ck__pool_quiesce(ck_pool *p);
/* pool.c: release=eager housekeeping, run by pool calls (lock held). */
void ck__pool_eager_release(ck_pool *p);
/* pool.c: drop a stream from the round bookkeeping before it is destroyed. */
void ck__pool_forget_stream(ck_pool *p, ck_stream s);

#endif
