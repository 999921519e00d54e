/* ckalloc: a caching GPU allocator on the CUDA virtual memory API.
 *
 * The core API: pools, allocation, stats, snapshots, streams and events.
 * ckalloc/replay.h adds the replay ops and ckalloc/preload.h the entry points
 * of libckalloc_preload.so. The headers are C99 and C++ (extern "C", nothing
 * C-only), so C, C++ and CUDA (.cu) sources include them alike. Every call
 * returns a ck_status; on failure ck_last_error() returns a sentence
 * (thread-local) saying what was wrong.
 *
 * A pool owns one backend ("cuda" or "host"), a virtual address range per
 * device and the physical chunks mapped into it. Memory handed out by a pool
 * is device memory on the cuda backend and process memory on the host backend;
 * in both cases it may only be touched by work ordered on a stream (or, on the
 * host backend, directly by the CPU).
 */
#ifndef CKALLOC_H
#define CKALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CKALLOC_STATIC_DEFINE)
#define CK_API
#elif defined(__GNUC__)
#define CK_API __attribute__((visibility("default")))
#else
#define CK_API
#endif

/* ---- version ---------------------------------------------------------- */

#define CKALLOC_VERSION_MAJOR 0
#define CKALLOC_VERSION_MINOR 1
#define CKALLOC_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, for #if comparisons. */
#define CKALLOC_VERSION \
    (CKALLOC_VERSION_MAJOR * 10000 + CKALLOC_VERSION_MINOR * 100 + CKALLOC_VERSION_PATCH)

/* The version of the library actually loaded, as "MAJOR.MINOR.PATCH". */
CK_API const char *ck_version(void);

/* ---- status and errors ------------------------------------------------ */

typedef enum ck_status {
    CK_OK = 0,
    CK_ERR_INVALID = 1,     /* bad argument, size, config key or value */
    CK_ERR_NOMEM = 2,       /* the budget or the device has no room */
    CK_ERR_NOT_OWNED = 3,   /* the pointer is not a live allocation of this pool */
    CK_ERR_DOUBLE_FREE = 4, /* the pointer was already freed (a freed block that has
                               merged into a free neighbour reads as CK_ERR_NOT_OWNED) */
    CK_ERR_NO_DEVICE = 5,   /* no CUDA driver or device */
    CK_ERR_BACKEND = 6,     /* the driver (or host backend) refused a call */
    CK_ERR_IO = 7,          /* a file could not be read or written */
    CK_ERR_NOT_READY = 8,   /* ck_event_query: recorded work has not completed */
    CK_ERR_CORRUPT = 9      /* verify=1: a fetched tensor differs from what was stashed */
} ck_status;

/* A short constant name for a status ("CK_ERR_NOMEM"). */
CK_API const char *ck_status_str(ck_status s);

/* The sentence describing the last failure on this thread ("" if none). The
 * string stays valid until the next ckalloc call on the same thread. */
CK_API const char *ck_last_error(void);

/* ---- pools ------------------------------------------------------------ */

typedef struct ck_pool ck_pool;

/* Streams and events. ck_stream is the same type as CUstream and
 * cudaStream_t (struct CUstream_st *), and ck_event the same as CUevent and
 * cudaEvent_t (struct CUevent_st *), so C, C++ and CUDA code pass theirs in
 * without a cast. On the cuda backend they are the driver's handles; NULL is
 * the legacy default stream. On the host backend streams are worker threads
 * and events are the backend's own, both created with ck_stream_create /
 * ck_event_create on the same pool (NULL is that pool's default stream). */
typedef struct CUstream_st *ck_stream;
typedef struct CUevent_st *ck_event;

typedef enum ck_backend_kind {
    CK_BACKEND_AUTO = 0, /* cuda; without a device ck_pool_create fails (backend=host is explicit) */
    CK_BACKEND_HOST = 1,
    CK_BACKEND_CUDA = 2
} ck_backend_kind;

/* When whole free chunks go back to the device. */
typedef enum ck_release {
    CK_RELEASE_PRESSURE = 0, /* keep them cached; unmap when the budget needs room or on ck_trim */
    CK_RELEASE_EAGER = 1     /* unmap once free and every stream has passed them; checked on
                                each call into the pool (ck_get_stats included), never blocking */
} ck_release;

typedef struct ck_pool_options {
    size_t struct_size;     /* sizeof(ck_pool_options); set by ck_pool_options_init */
    ck_backend_kind backend;
    int device;             /* CUDA device ordinal (cuda backend) */
    uint64_t budget;        /* cap on physical bytes; 0 = the device's memory */
    uint64_t va_size;       /* first VA reservation; 0 = 1.5 x device memory, at most 256 GiB */
    ck_release release;
    const char *trace_path; /* RMM-style CSV trace of every call; NULL = none */
    /* host backend only */
    uint64_t host_mem;      /* simulated device memory; 0 = physical RAM */
    uint64_t fault_create;  /* fail the Nth physical create (1-based); 0 = never */
    uint64_t fault_map;     /* fail the Nth map */
    uint64_t fault_copy;    /* fail the Nth copy */
    int sim_clock;          /* 1: stream time is simulated (copy = bytes / sim_bandwidth) */
    double sim_bandwidth;   /* bytes per second for simulated copies; 0 = 25e9 */
    /* observability (fields are only ever appended: struct_size keeps old callers working) */
    int live;               /* 1 (default): publish live stats for ckalloc-stat; 0: don't */
    const char *snapshot_path; /* JSON snapshot written at exit and on snapshot_signal;
                                  NULL = none. "%p" in it becomes the pid, "%d" the device */
    int snapshot_signal;    /* signal that writes the snapshot (default SIGUSR2); 0 = none.
                               Not SEGV, BUS, FPE, ILL, TRAP, SYS (faults), KILL or STOP */
    double budget_fraction; /* budget as a fraction (0 < f <= 1) of the device's memory
                               (host backend: host_mem), resolved by ck_pool_create; used
                               only when budget is 0 ("budget=90%") */
    int verbose;            /* 1: the preload library says on stderr when it is active;
                               0 (default): it prints only what went wrong */
    uint64_t chunk_align;   /* large blocks of at least this many bytes start on a 2 MiB
                               chunk, so releasing one under a live tensor frees all but
                               2 MiB of it; costs up to 2 MiB of address (and of a shared
                               chunk) per block. 0 = auto (default): off until the pool
                               first releases a live block's memory, then 4 MiB;
                               UINT64_MAX = off */
    uint64_t fault_unmap;   /* host backend: fail the Nth unmap (1-based); 0 = never */
    uint64_t fault_release; /* host backend: fail the Nth release of a handle */
    /* the tier engine (ckalloc/tier.h) */
    uint64_t host_budget;   /* pinned host memory for offloaded tensors, bytes; 0 = half
                               the machine's RAM */
    uint64_t prefetch;      /* bytes a fetch brings back ahead; UINT64_MAX = default
                               (256 MiB), 0 = no prefetch */
    int verify;             /* 1: checksum at stash, checked at fetch (fetch waits) */
    int host_alloc;         /* ck_host_alloc: what serves pinned host memory */
    /* host backend's simulation */
    double sim_h2d, sim_d2h; /* bytes per second of host-to-device and device-to-host
                                copies with sim_clock; 0 = sim_bandwidth */
    int sim_nodata;         /* 1: copies, memsets and replays move no data (only the
                               simulated clock advances): replaying big traces */
    double sim_flops;       /* FLOP/s of a replay with sim_clock: a replay takes the
                               longer of flops / sim_flops and bytes / sim_bandwidth;
                               0 (default) = bytes only */
    uint64_t fault_event;   /* host backend: fail the Nth event record or stream wait
                               (1-based); 0 = never */
    const char *policy_path; /* a policy file (ckalloc/policy.h) put in force at creation;
                                its budget applies when budget is 0. NULL = none */
} ck_pool_options;

/* What serves the tier engine's pinned host memory (config key host_alloc). */
typedef enum ck_host_alloc {
    CK_HOST_ALLOC_AUTO = 0,     /* a private jemalloc arena when jemalloc loads, else the cache */
    CK_HOST_ALLOC_JEMALLOC = 1, /* jemalloc, or offloading fails saying why it cannot load */
    CK_HOST_ALLOC_CACHE = 2     /* ckalloc's own cache of whole pinned buffers */
} ck_host_alloc;

/* Fill *opts with the defaults (auto backend, device 0, no budget, pressure
 * release, no trace). */
CK_API void ck_pool_options_init(ck_pool_options *opts);

/* Parse a one-string config into *opts, on top of what it holds, e.g.
 *   "backend=host,budget=20G,trace=/tmp/t.csv"
 * Keys: backend (auto|host|cuda; auto is cuda, and fails without a device),
 * device, budget (a size, a share such as 90%, or none; 0 bytes is refused),
 * va, release (pressure|eager), trace, live (0|1), snapshot, snapshot_signal
 * (USR1|USR2|none|number, not a fault signal), host_mem, fault_create,
 * fault_map, fault_copy, fault_unmap, fault_release, fault_event, sim_clock (0|1),
 * sim_bandwidth, sim_h2d, sim_d2h, sim_flops (a rate: 19.5e12, 19.5T; K/M/G/T are
 * powers of 1000), sim_nodata (0|1), verbose (0|1), chunk_align (auto|off|a size),
 * the tier engine's host_budget, host_alloc, prefetch and verify (ckalloc/tier.h),
 * and policy (a policy file, ckalloc/policy.h). Sizes take K/M/G/T (powers of 1024), KiB/MiB/GiB/TiB, or
 * KB/MB/GB/TB (powers of 1000). An unknown key or bad value is CK_ERR_INVALID
 * naming it, and *opts is left unchanged. String values (trace) point into
 * storage owned by the library that stays valid until the next successful
 * parse on this thread; ck_pool_create copies them (trace, snapshot) or
 * reads them (policy). */
CK_API ck_status ck_options_parse(ck_pool_options *opts, const char *conf);

/* Create a pool from *opts (NULL = the defaults of ck_pool_options_init) and
 * store it in *out. opts->struct_size must be set (ck_pool_options_init sets
 * it): a caller built against an older, shorter struct gets defaults for the
 * fields it lacks. Fails with CK_ERR_INVALID for bad options, CK_ERR_NO_DEVICE
 * when backend=cuda finds no driver or device, CK_ERR_BACKEND when the
 * address space cannot be reserved, CK_ERR_IO when the trace cannot be opened;
 * *out is left unchanged on failure. String fields are copied. */
CK_API ck_status ck_pool_create(ck_pool **out, const ck_pool_options *opts);

/* ck_pool_options_init + ck_options_parse + ck_pool_create. conf NULL reads
 * the CKALLOC_CONF environment variable (unset = defaults). */
CK_API ck_status ck_pool_create_conf(ck_pool **out, const char *conf);

/* Waits for the pool's streams, releases all memory, flushes the trace.
 * Allocations still live are released too. A NULL pool is CK_ERR_INVALID.
 * Returns CK_ERR_IO if the trace could not be written completely. */
CK_API ck_status ck_pool_destroy(ck_pool *pool);

/* Backend the pool runs on: "host" or "cuda". */
CK_API const char *ck_pool_backend(const ck_pool *pool);

/* ---- allocation ------------------------------------------------------- */

/* Allocate size bytes (rounded up to 512) for use on stream. The block may be
 * used by stream at once; use on another stream needs ck_record_stream before
 * it is freed. A size of 0 or one larger than the address space is
 * CK_ERR_INVALID; no room within the budget is CK_ERR_NOMEM with a sentence
 * saying what was live and what was cached. */
CK_API ck_status ck_malloc(ck_pool *pool, void **ptr, size_t size, ck_stream stream);

/* Free ptr, ordered on stream: the block is reusable at once by work on
 * stream, and by other streams once stream (and every stream given to
 * ck_record_stream) has passed this point. Before mapping new memory the
 * pool waits briefly (at most a few ms, once per event) for another stream
 * to pass a free that would serve, so reuse does not grow with streams. A NULL ptr is CK_OK and does
 * nothing, as with free() and cudaFree(). A pointer the pool did not hand out
 * is CK_ERR_NOT_OWNED, one already freed CK_ERR_DOUBLE_FREE; neither changes
 * anything. */
CK_API ck_status ck_free(ck_pool *pool, void *ptr, ck_stream stream);

/* Say that ptr is also used by work on stream, so that freeing it waits for
 * that work too (like torch's Tensor.record_stream). */
CK_API ck_status ck_record_stream(ck_pool *pool, void *ptr, ck_stream stream);

/* Unmap and release every chunk no live block touches, after waiting for
 * the streams that freed memory and for the streams given to
 * ck_record_stream (as torch.cuda.empty_cache does), so what is free now is
 * given back now. *released (may be NULL) gets the bytes given back. */
CK_API ck_status ck_trim(ck_pool *pool, size_t *released);

/* ---- statistics ------------------------------------------------------- */

typedef struct ck_stat {
    int64_t current;
    int64_t peak;
    uint64_t allocated; /* total ever added */
    uint64_t freed;     /* total ever removed */
} ck_stat;

/* Keys mean what torch.cuda.memory_stats() means by them:
 *   allocation / allocated_bytes: live blocks (bytes are rounded sizes);
 *   requested_bytes: live bytes as asked for;
 *   active / active_bytes: live blocks plus freed blocks still waiting for
 *       other streams (record_stream) to pass;
 *   inactive_split / inactive_split_bytes: free blocks inside small-block
 *       pages that also hold live blocks (space only small requests can use);
 *   segment / reserved_bytes: mapped runs (maximal ranges of mapped 2 MiB
 *       chunks) and their bytes.
 * ckalloc's own:
 *   mapped_bytes: bytes of the pool's address space backed by physical memory;
 *   physical_bytes: all physical memory the pool holds, mapped or cached
 *       unmapped; this is what the budget caps. */
typedef struct ck_stats {
    size_t struct_size; /* set by the caller to sizeof(ck_stats) */
    ck_stat allocation, segment, active, inactive_split;
    ck_stat allocated_bytes, reserved_bytes, active_bytes, inactive_split_bytes, requested_bytes;
    ck_stat mapped_bytes, physical_bytes;
    uint64_t num_alloc_retries; /* allocations that had to unmap cached memory first */
    uint64_t num_ooms;          /* allocations that failed with CK_ERR_NOMEM */
    /* Backend calls that took effect. Each chunk held is one handle:
     * num_create_calls - num_release_calls = chunks held; num_unmap_calls
     * counts chunks unmapped; one map call maps a run of chunks. */
    uint64_t num_map_calls, num_unmap_calls;
    uint64_t num_create_calls, num_release_calls;
    uint64_t budget;            /* the cap in force, bytes */
    uint64_t largest_free;      /* largest mapped free range, bytes */
    /* The tier engine (ckalloc/tier.h). Bytes are the tensors' sizes:
     *   offloaded_bytes: stashed tensors whose data is in host memory only;
     *   dropped_bytes: stashed tensors released, to be recomputed;
     *   moving_bytes: tensors whose copy out or in (or replay) is in flight;
     *   host_bytes: pinned host memory the pool holds (cached buffers too). */
    ck_stat offloaded_bytes, dropped_bytes, moving_bytes, host_bytes;
    uint64_t num_stashes, num_fetches;
    uint64_t bytes_to_host, bytes_to_device; /* copied by stash and fetch */
    uint64_t num_replays;       /* tensors rebuilt by their recipe */
    uint64_t prefetch_hits;     /* fetches of tensors a prefetch had brought back */
    uint64_t prefetch_misses;   /* fetches that had to start bringing the tensor back */
    uint64_t num_evictions;     /* stashed tensors the pool evicted under budget pressure
                                   (each waits for its copy out: a stall the next step's
                                   AUTO decisions learn to avoid) */
    uint64_t fetch_wait_ns;     /* time consumer streams spent in fetches: waiting for a
                                   copy in and running replays (0 for a tensor that never
                                   left); counted once the stream has passed the fetch */
    uint64_t replay_ns;         /* of which replays (the recompute tier) */
} ck_stats;

CK_API ck_status ck_get_stats(ck_pool *pool, ck_stats *stats);

/* Set every peak to its current value. */
CK_API ck_status ck_reset_peak_stats(ck_pool *pool);

typedef enum ck_format { CK_FORMAT_TABLE = 0, CK_FORMAT_JSON = 1 } ck_format;

/* Print the stats as an aligned table or one JSON object. */
CK_API ck_status ck_print_stats(ck_pool *pool, FILE *out, ck_format format);

/* ---- snapshots ---------------------------------------------------------- */

/* Write a JSON snapshot of the pool to path: format "ckalloc-snapshot"
 * version 1, with the pid, command line and time, and per pool its device,
 * backend, stats (the keys of ck_print_stats' JSON), segments, blocks, live
 * bytes per tag and its last 4096 operations (time, action, address, size,
 * stream, and allocated / reserved / physical bytes after each; the time is
 * recorded only by pools created with a snapshot path, and is 0 in the
 * others, since reading a clock costs ~3 ns per operation). "%p" in path
 * becomes the pid, "%d" the device, "%%" a '%'. path NULL writes the pool's
 * own snapshot file (config key snapshot) with every pool that shares it.
 * The file is written beside path under a temporary name and renamed, so a
 * reader never sees half of it. A path that cannot be written is CK_ERR_IO
 * saying why, with nothing left behind. ckalloc-stat FILE.json reports it;
 * ckalloc-stat --html FILE.json -o OUT.html draws it.
 *
 * A pool with a snapshot path also writes it at exit, when destroyed, and on
 * its snapshot_signal (SIGUSR2 by default): ckalloc then takes that signal
 * over (its handler replaces any other) and writes from a thread of its own.
 * A forked child does not write its parent's pools. */
CK_API ck_status ck_snapshot_write(ck_pool *pool, const char *path);

/* ---- streams, events, copies (both backends) --------------------------- */

/* Every call that takes a stream accepts NULL (the pool's default stream),
 * the pool's own streams from ck_stream_create, and on the cuda backend any
 * other CUstream / cudaStream_t. A stream destroyed with ck_stream_destroy,
 * or one that another pool made, is CK_ERR_INVALID with a sentence naming
 * the call, and nothing changes. */

/* Create a stream on the pool's backend and store it in *out: on the cuda
 * backend a CUstream with default flags (as cudaStreamCreate makes), on the
 * host backend a worker thread. Order it after other streams with events. */
CK_API ck_status ck_stream_create(ck_pool *pool, ck_stream *out);
/* Waits for the stream's work, then destroys it. Only the pool's own
 * streams; a second destroy is CK_ERR_INVALID. Costs nothing per block:
 * blocks recorded on it (ck_record_stream) no longer wait for it. */
CK_API ck_status ck_stream_destroy(ck_pool *pool, ck_stream stream);
/* Block the calling thread until all work queued on stream has completed.
 * NULL is the default stream. */
CK_API ck_status ck_stream_synchronize(ck_pool *pool, ck_stream stream);
/* Work queued on stream after this waits for event's recorded work. */
CK_API ck_status ck_stream_wait_event(ck_pool *pool, ck_stream stream, ck_event event);

/* Create an event (with timing) on the pool's backend and store it in *out.
 * An event never recorded counts as completed. */
CK_API ck_status ck_event_create(ck_pool *pool, ck_event *out);
/* Destroy event; work already waiting on it is not affected. */
CK_API ck_status ck_event_destroy(ck_pool *pool, ck_event event);
/* Capture the work queued on stream so far: the event completes when that
 * work has. Recording again replaces what the event captured. */
CK_API ck_status ck_event_record(ck_pool *pool, ck_event event, ck_stream stream);
/* CK_OK when the recorded work has completed, CK_ERR_NOT_READY if not. */
CK_API ck_status ck_event_query(ck_pool *pool, ck_event event);
/* Block the calling thread until the event's recorded work has completed. */
CK_API ck_status ck_event_synchronize(ck_pool *pool, ck_event event);
/* Milliseconds between two completed events (simulated time on a host pool
 * with sim_clock=1). */
CK_API ck_status ck_event_elapsed_ms(ck_pool *pool, ck_event start, ck_event end, float *ms);

/* Copy n bytes, ordered on stream. Either side may be pool memory or host
 * memory (unified addressing). The caller keeps src alive and unchanged until
 * the stream has passed the copy. */
CK_API ck_status ck_memcpy_async(ck_pool *pool, void *dst, const void *src, size_t n,
                                 ck_stream stream);
/* Set n bytes at dst (pool memory) to value, ordered on stream. */
CK_API ck_status ck_memset_async(ck_pool *pool, void *dst, int value, size_t n, ck_stream stream);

#ifdef __cplusplus
} /* extern "C" */

/* C++ (and CUDA): ck_malloc into a typed pointer, without a (void **) cast:
 *   float *x;
 *   ck_malloc(pool, &x, n * sizeof(float), stream);
 * The same call; *ptr is written only on success. */
template <typename T>
inline ck_status ck_malloc(ck_pool *pool, T **ptr, size_t size, ck_stream stream) {
    void *p;
    if (!ptr) /* the library says "ptr is NULL" */
        return ck_malloc(pool, static_cast<void **>(static_cast<void *>(ptr)), size, stream);
    ck_status st = ck_malloc(pool, &p, size, stream);
    if (st == CK_OK) *ptr = static_cast<T *>(p);
    return st;
}
#endif

#endif /* CKALLOC_H */
