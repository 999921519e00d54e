/* Live statistics in shared memory, read by ckalloc-stat while the process
 * runs.
 *
 * One segment per process, /dev/shm/ckalloc.<pid> (shm_open "/ckalloc.<pid>",
 * mode 0600), created at the first pool with live=1 and removed when the last
 * such pool is destroyed or the process exits. It holds a header and
 * CK_LIVE_SLOTS slots, one per pool.
 *
 * Hot part: a pool's counters live in its slot (zero copy: pool.c points
 * p->c there), so publishing costs the owner only a sequence counter bumped
 * to odd when the pool lock is taken and back to even when it is released (a
 * seqlock). A reader copies the counters and keeps the copy if seq was even
 * and unchanged around it. That works while the owner is idle or allocates
 * in bursts; against an owner that takes its lock every ~50 ns it rarely
 * succeeds, since the copy itself takes longer than that.
 *
 * Answers: then the reader asks. It adds to `request` (the low half asks for
 * the counters, the top-16 list of live blocks and largest_free, which cost a
 * walk; the high half for the counters only). The owner sees request !=
 * served when it next releases its lock, writes a consistent copy of its
 * counters (and, if asked, the walk's results) into the answer area under a
 * second seqlock, `aseq`, which it writes only when answering, and sets
 * served. The owner paces walks so that they take at most ~0.1% of its time.
 *
 * Layout rules: every field is 8-byte sized or padded, slots are 64-byte
 * aligned, and any change to ck_live_header, ck_live_slot or ck_counters must
 * bump CK_LIVE_VERSION (the size asserts in live.c catch most changes). */
#ifndef CK_LIVE_H
#define CK_LIVE_H

#include "ckalloc/ckalloc.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The pool's counters (published as they are: part of the slot layout). */
typedef struct ck_counters {
    ck_stat allocation, segment, active, inactive_split;
    ck_stat allocated_bytes, reserved_bytes, active_bytes, inactive_split_bytes, requested_bytes;
    ck_stat mapped_bytes, physical_bytes;
    uint64_t num_alloc_retries, num_ooms;
    uint64_t num_map_calls, num_unmap_calls, num_create_calls, num_release_calls;
    ck_stat offloaded_bytes, dropped_bytes, moving_bytes, host_bytes;
    uint64_t num_stashes, num_fetches, bytes_to_host, bytes_to_device, num_replays;
    uint64_t prefetch_hits, prefetch_misses, num_evictions;
    uint64_t fetch_wait_ns, replay_ns;
} ck_counters;

/* stats.c: the public stats for a set of counters (a pool's, or a copy read
 * from the live segment by ckalloc-stat), so both map them one way. */
void ck__stats_from_counters(const ck_counters *c, uint64_t budget, uint64_t largest_free,
                             ck_stats *st);

/* Single writer (the lock holder), readers in other processes: the writer's
 * stores are relaxed atomics (a plain mov on x86), so a concurrent copy is a
 * race-free read of possibly mixed values that the seqlock then rejects. */
static inline void ck__cnt_set(uint64_t *v, uint64_t x) {
    __atomic_store_n(v, x, __ATOMIC_RELAXED);
}
static inline void ck__cnt_inc(uint64_t *v) { ck__cnt_set(v, *v + 1); }

#define CK_LIVE_MAGIC 0x0a6576696c616b63ull /* "ckalive\n" in little-endian bytes */
#define CK_LIVE_VERSION 4u                  /* 2: the answer area with its own seqlock;
                                               3: the tier engine's counters;
                                               4: fetch_wait_ns, replay_ns */
#define CK_LIVE_SLOTS 16
#define CK_LIVE_TOP 16
#define CK_LIVE_DIR "/dev/shm" /* where glibc's shm_open puts "/ckalloc.<pid>" */
#define CK_LIVE_PREFIX "ckalloc."

/* The halves of `request` and `served`. */
#define CK_LIVE_ASK_TOP 1ull              /* counters, top list, largest_free */
#define CK_LIVE_ASK_COUNTERS (1ull << 32) /* counters only */
#define CK_LIVE_TOP_PART(v) ((uint32_t)(v))
#define CK_LIVE_COUNTERS_PART(v) ((uint32_t)((v) >> 32))

typedef struct ck_live_top {
    uint64_t addr, size, requested, stream;
    char tag[32]; /* "" = untagged (no tag API yet) */
} ck_live_top;

typedef struct ck_live_header {
    uint64_t magic;       /* CK_LIVE_MAGIC, stored last when the segment is created */
    uint32_t version;     /* CK_LIVE_VERSION */
    uint32_t header_size; /* sizeof(ck_live_header): the slots start here */
    uint32_t slot_size;   /* sizeof(ck_live_slot) */
    uint32_t nslots;      /* CK_LIVE_SLOTS */
    int32_t pid;
    uint32_t uid;
    uint64_t start_time; /* /proc/PID/stat field 22: tells a reused pid apart */
    uint64_t created_ns; /* CLOCK_REALTIME */
    char cmdline[256];   /* /proc/self/cmdline, NULs as spaces, truncated */
    uint64_t reserved[2];
} ck_live_header;

typedef struct ck_live_slot {
    /* Set by attach/detach (inside a seq window). */
    uint64_t in_use;  /* 1 while a pool owns the slot */
    uint64_t pool_id; /* per-process serial of the pool, from 1 */
    int64_t device;
    char backend[16];
    uint64_t budget, total_mem;
    uint64_t reserved0;
    /* Hot: written under the pool lock. Odd seq: an update is under way. */
    _Alignas(64) _Atomic uint64_t seq;
    uint64_t reserved1;
    ck_counters c;
    /* Answers: written by the owner when it answers. Odd aseq: writing. */
    _Alignas(64) _Atomic uint64_t aseq;
    _Atomic uint64_t served; /* the request value last answered, per half */
    ck_counters ac;          /* the counters at the last answer */
    uint64_t answer_ns;      /* CLOCK_REALTIME of the last answer; 0 = never */
    uint64_t largest_free;   /* as of top_ns */
    uint64_t top_ns;         /* CLOCK_REALTIME when top[] was filled; 0 = never */
    uint64_t ntop;
    ck_live_top top[CK_LIVE_TOP];
    /* Written by readers only, on a line of its own. */
    _Alignas(64) _Atomic uint64_t request;
} ck_live_slot;

/* ---- the owner (live.c; called by pool.c) ---- */

/* Publish p (opts.live=1) in this process's segment; on any failure (no
 * /dev/shm, no free slot, the name taken) p keeps its private counters. */
void ck__live_attach(ck_pool *p);
/* Take p out of the segment (its counters move back into the pool); the
 * segment is removed with its last pool. */
void ck__live_detach(ck_pool *p);
/* Lock held, request != served: answer the request. */
void ck__live_serve(ck_pool *p);

/* ---- the reader (live.c; used by ckalloc-stat, the tests and the bench) ---- */

enum {
    CK_LIVE_OK = 0,
    CK_LIVE_NONE = 1,    /* no segment for this pid */
    CK_LIVE_IGNORED = 2, /* stale or foreign segment: why says which */
    CK_LIVE_ERROR = 3    /* could not read it (why says) */
};

typedef struct ck_live_pool {
    int slot;
    int device;
    uint64_t pool_id;
    char backend[16];
    uint64_t budget, total_mem;
    ck_counters c;
    uint64_t largest_free;
    uint64_t top_ns; /* CLOCK_REALTIME of top[]; 0 = the owner never filled it */
    int top_fresh;   /* the owner answered this read's request for the top list */
    int answered;    /* c is the owner's answer (the direct copy kept failing) */
    int busy;        /* the owner kept its lock and did not answer: c is not set */
    uint32_t ntop;
    ck_live_top top[CK_LIVE_TOP];
} ck_live_pool;

typedef struct ck_live_proc {
    int pid;
    uint32_t uid;
    uint64_t start_time, created_ns;
    char cmdline[256];
    int npools;
    ck_live_pool pools[CK_LIVE_SLOTS];
} ck_live_proc;

/* The direct seqlock read of a slot's hot part (in_use .. c), as
 * ck__live_read tries it first: 0 with a consistent copy in out, or -1 when
 * seq moved through 64 tries and then max_sleeps tries 100 us apart. */
int ck__live_slot_read(const ck_live_slot *sl, ck_live_slot *out, int max_sleeps);

/* "/dev/shm/ckalloc.<pid>" into buf. */
void ck__live_path(int pid, char *buf, size_t n);
/* Field 22 of /proc/PID/stat (start time in clock ticks). 0 on success. */
int ck__live_start_time(int pid, uint64_t *out);

/* A reader kept across reads (ckalloc-stat --watch): open validates pid's
 * segment and maps it; each snapshot then costs a kill(pid, 0) and the copy
 * (the name and the start time are checked again every 250 ms, and the
 * segment reopened if the owner's pools went and came back). */
typedef struct ck_live_reader {
    int pid;
    char path[96];
    void *map;
    ck_live_slot *copy; /* scratch, one per slot */
    uint64_t ino, dev, checked_ns;
    ck_live_header h;
} ck_live_reader;

/* CK_LIVE_* as for ck__live_read; on success close it after use. */
int ck__live_open(int pid, ck_live_reader *r, char *why, size_t whyn);
/* CK_LIVE_OK, or CK_LIVE_NONE when the process exited, IGNORED when the pid
 * was reused, with why set. top_wait_ms as for ck__live_read. */
int ck__live_snapshot(ck_live_reader *r, int top_wait_ms, ck_live_proc *out, char *why,
                      size_t whyn);
void ck__live_close(ck_live_reader *r);

/* Read pid's segment once (open, snapshot, close). top_wait_ms >= 0 also
 * asks the owner for its top list
 * and waits up to that long for the answer; < 0 reads the counters only
 * (asking the owner for them, waiting up to 200 ms, only when the direct
 * copy keeps failing). Returns CK_LIVE_*; on IGNORED/ERROR/NONE `why` (may be
 * NULL) gets one line, e.g. "/dev/shm/ckalloc.12: process 12 is gone (...)". */
int ck__live_read(int pid, int top_wait_ms, ck_live_proc *out, char *why, size_t whyn);

/* Every /dev/shm/ckalloc.<pid>, in pid order: fn gets the result of
 * ck__live_read for each (proc only when rc is CK_LIVE_OK). Returns the
 * number of segments seen, or -1 when the directory cannot be read. */
typedef void ck_live_scan_fn(void *ctx, int pid, int rc, const ck_live_proc *proc, const char *why);
int ck__live_scan(int top_wait_ms, ck_live_scan_fn *fn, void *ctx);

#endif
