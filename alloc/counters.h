/* The pool's counters, listed once. Every report reads them through these
 * lists: ck__stats_from_counters, ck_reset_peak_stats, ck_print_stats (table
 * and JSON, and so snapshots), ckalloc-stat's JSON and its snapshot reader.
 * A new counter is a field in ck_counters (live.h) and ck_stats
 * (ckalloc.h) plus one line here.
 *
 * CK_STAT_LIST(X): X(name, is_bytes) for each ck_stat (current, peak,
 * allocated, freed), in print order.
 * CK_COUNT_LIST(X): X(name) for each plain count. */
#ifndef CK_COUNTERS_H
#define CK_COUNTERS_H

#define CK_STAT_LIST(X)                                                                            \
    X(allocated_bytes, 1)                                                                          \
    X(requested_bytes, 1)                                                                          \
    X(active_bytes, 1)                                                                             \
    X(inactive_split_bytes, 1)                                                                     \
    X(reserved_bytes, 1)                                                                           \
    X(mapped_bytes, 1)                                                                             \
    X(physical_bytes, 1)                                                                           \
    X(allocation, 0)                                                                               \
    X(active, 0)                                                                                   \
    X(inactive_split, 0)                                                                           \
    X(segment, 0)                                                                                  \
    X(offloaded_bytes, 1)                                                                          \
    X(dropped_bytes, 1)                                                                            \
    X(moving_bytes, 1)                                                                             \
    X(host_bytes, 1)

#define CK_COUNT_LIST(X)                                                                           \
    X(num_alloc_retries)                                                                           \
    X(num_ooms)                                                                                    \
    X(num_map_calls)                                                                               \
    X(num_unmap_calls)                                                                             \
    X(num_create_calls)                                                                            \
    X(num_release_calls)                                                                           \
    X(num_stashes)                                                                                 \
    X(num_fetches)                                                                                 \
    X(bytes_to_host)                                                                               \
    X(bytes_to_device)                                                                             \
    X(num_replays)                                                                                 \
    X(prefetch_hits)                                                                               \
    X(prefetch_misses)                                                                             \
    X(num_evictions)                                                                               \
    X(fetch_wait_ns)                                                                               \
    X(replay_ns)

#endif
