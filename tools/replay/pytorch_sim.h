/* A simulation of PyTorch's native CUDA caching allocator policy
 * (c10/cuda/CUDACachingAllocator.cpp with its defaults: no
 * expandable_segments, no max_split_size_mb, no garbage_collection_threshold,
 * no roundup_power2_divisions), so ckalloc-replay can say what PyTorch would
 * have reserved for the same trace. It books sizes only; nothing is
 * allocated on a device.
 *
 * The policy, as PyTorch implements it:
 * - sizes round up to a multiple of 512 B (at least 512 B);
 * - requests of at most 1 MiB come from the small pool, others from the
 *   large pool; a block only serves requests on the stream it was made for;
 * - a request takes the smallest cached block of its pool and stream that
 *   fits (best fit, ties by address) and splits off the rest when the rest is
 *   at least 512 B (small pool) or more than 1 MiB (large pool);
 * - with no cached block, one cudaMalloc of a segment: 2 MiB for a small
 *   request, 20 MiB for a request under 10 MiB, else the size rounded up to
 *   2 MiB;
 * - a free merges the block with free neighbours of its segment; nothing is
 *   given back to the device, except when a cudaMalloc would pass the limit:
 *   then every cached segment that is wholly free is released (cudaFree) and
 *   the cudaMalloc is tried once more, and fails if it still does not fit. */
#ifndef CK_PYTORCH_SIM_H
#define CK_PYTORCH_SIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct pt_sim pt_sim;

typedef struct pt_sim_stats {
    uint64_t reserved_bytes;      /* segments now held */
    uint64_t peak_reserved_bytes; /* what the GPU would have had to hold */
    uint64_t allocated_bytes;     /* blocks handed out (rounded sizes) */
    uint64_t peak_allocated_bytes;
    uint64_t segment_allocs;    /* cudaMalloc calls */
    uint64_t segment_frees;     /* cudaFree calls */
    uint64_t num_alloc_retries; /* cache flushes before a retried cudaMalloc */
    uint64_t num_ooms;          /* requests that failed even after the flush */
    uint64_t limit;             /* 0 = none */
} pt_sim_stats;

/* limit caps the reserved bytes (as torch.cuda.set_per_process_memory_fraction
 * or the device's size would); 0 = no limit. NULL when out of host memory. */
pt_sim *pt_sim_new(uint64_t limit);
void pt_sim_destroy(pt_sim *s);

/* 0 and *handle set, or -1 when the request does not fit under the limit,
 * with a sentence in err. size > 0. Out of host memory exits the process. */
int pt_sim_malloc(pt_sim *s, uint64_t size, uint32_t stream, void **handle, char *err,
                  size_t errn);
void pt_sim_free(pt_sim *s, void *handle);

void pt_sim_get_stats(const pt_sim *s, pt_sim_stats *out);

/* The rounding rules, exposed for tests and for the report. */
uint64_t pt_sim_round_size(uint64_t size);
uint64_t pt_sim_segment_size(uint64_t rounded);

#endif
