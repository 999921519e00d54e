/* The pool's two memory ratios, each with one key and one definition
 * everywhere (ck_print_stats, snapshots, ckalloc-stat text / JSON /
 * Prometheus, ckalloc-replay, the Python package); README "Stats".
 *
 *   fragmentation = 1 - allocated / reserved, now: the share of the bytes
 *       mapped in the pool's segments that serves no live block (cached free
 *       ranges, split remainders, rounding). 0 when nothing is reserved.
 *   peak_overhead = peak physical / peak requested: how much physical
 *       memory the pool needed at its worst per byte asked for at its worst
 *       (the project's target is <= 1.05). 0 before any request. */
#ifndef CK_RATIOS_H
#define CK_RATIOS_H

#include <stdint.h>

static inline double ck__fragmentation(uint64_t allocated, uint64_t reserved) {
    if (reserved == 0) return 0.0;
    if (allocated >= reserved) return 0.0;
    return 1.0 - (double)allocated / (double)reserved;
}

static inline double ck__peak_overhead(uint64_t peak_physical, uint64_t peak_requested) {
    return peak_requested ? (double)peak_physical / (double)peak_requested : 0.0;
}

#endif
