/* Internals shared by the library's sources. Nothing here is installed. */
#ifndef CK_INTERNAL_H
#define CK_INTERNAL_H

#include "ckalloc/ckalloc.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define CK_INTERNAL __attribute__((visibility("hidden")))

#define CK_KiB ((uint64_t)1 << 10)
#define CK_MiB ((uint64_t)1 << 20)
#define CK_GiB ((uint64_t)1 << 30)
#define CK_TiB ((uint64_t)1 << 40)

/* error.c: set this thread's error sentence and return s. */
ck_status ck__err(ck_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ck__clear_error(void);

/* config.c: parse "512M", "20G", "1.5GiB", "4096". Returns 0 on success. */
int ck__parse_size(const char *s, size_t len, uint64_t *out);
/* 1 if sig may be the snapshot signal: a signal number that can be caught
 * and is not a synchronous fault (SEGV, BUS, FPE, ILL, TRAP, SYS), whose
 * handler returning would re-run the faulting instruction forever. */
int ck__snapshot_signal_ok(int sig);
/* Format bytes as "1.50 GiB" into buf. Returns buf. */
const char *ck__fmt_bytes(uint64_t bytes, char *buf, size_t n);

/* Monotonic and wall-clock time, nanoseconds. */
uint64_t ck__now_ns(void);

static inline uint64_t ck__align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* Host backend with sim_clock: stream s is busy for ns of simulated time,
 * in order with its other work (ckalloc-replay --timed charges a trace's
 * gaps as compute). CK_ERR_INVALID on any other pool. */
ck_status ck__sim_busy(ck_pool *p, ck_stream s, double ns);

/* Tier engine (tier.c): poll until ptr's stash has released its memory (at
 * most max_s seconds of wall time), without moving the simulated host's
 * clock; for tools that replay training without its compute. */
void ck__tier_settle(ck_pool *p, void *ptr, double max_s);

#endif
