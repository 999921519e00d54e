/* The backend vtable: every call that touches a device goes through here.
 * Two implementations: backend_cuda.c (driver VMM, loaded at run time) and
 * backend_host.c (the same semantics in process memory). */
#ifndef CK_BACKEND_H
#define CK_BACKEND_H

#include "ckalloc/ckalloc.h"

#include <stdint.h>

typedef struct ck_backend ck_backend;
struct ck__plan; /* kernels/plan.h */

/* An opaque physical allocation (CUmemGenericAllocationHandle on cuda). */
typedef uint64_t ck_phys;

struct ck_backend_ops {
    void (*destroy)(ck_backend *b);
    /* Free and total device memory, bytes. */
    ck_status (*mem_info)(ck_backend *b, uint64_t *free_bytes, uint64_t *total_bytes);
    /* Reserve size bytes of address space aligned to granularity. */
    ck_status (*reserve)(ck_backend *b, size_t size, uintptr_t *va);
    ck_status (*unreserve)(ck_backend *b, uintptr_t va, size_t size);
    /* Create size bytes of physical memory (a multiple of granularity). */
    ck_status (*create)(ck_backend *b, size_t size, ck_phys *out);
    ck_status (*release)(ck_backend *b, ck_phys h);
    /* Map n handles of `chunk` bytes each back to back from va (inside one
     * reservation, nothing mapped there yet), one mapping per handle, and
     * make the run read/write with one access call. On failure nothing of
     * it stays mapped. */
    ck_status (*map)(ck_backend *b, uintptr_t va, size_t chunk, size_t n, const ck_phys *h);
    /* Unmap exactly one earlier mapping (one handle's: a part of one, or two
     * at once, is refused as CUDA refuses it); the range faults on touch
     * afterwards. release takes only handles that are no longer mapped. */
    ck_status (*unmap)(ck_backend *b, uintptr_t va, size_t size);
    ck_status (*memcpy_async)(ck_backend *b, void *dst, const void *src, size_t n, ck_stream s);
    ck_status (*memset_async)(ck_backend *b, void *dst, int value, size_t n, ck_stream s);
    ck_status (*stream_create)(ck_backend *b, ck_stream *out);
    ck_status (*stream_destroy)(ck_backend *b, ck_stream s);
    ck_status (*stream_sync)(ck_backend *b, ck_stream s);
    /* *capturing = 1 if s is being captured into a CUDA graph. */
    ck_status (*stream_capturing)(ck_backend *b, ck_stream s, int *capturing);
    ck_status (*stream_wait_event)(ck_backend *b, ck_stream s, ck_event e);
    ck_status (*event_create)(ck_backend *b, ck_event *out);
    /* An event only ever waited on or queried, never timed (the pool's
     * fences): cheaper to record. NULL: event_create serves. */
    ck_status (*fence_create)(ck_backend *b, ck_event *out);
    ck_status (*event_destroy)(ck_backend *b, ck_event e);
    ck_status (*event_record)(ck_backend *b, ck_event e, ck_stream s);
    /* CK_OK when complete, CK_ERR_NOT_READY when not. */
    ck_status (*event_query)(ck_backend *b, ck_event e);
    ck_status (*event_sync)(ck_backend *b, ck_event e);
    ck_status (*event_elapsed)(ck_backend *b, ck_event start, ck_event end, float *ms);
    /* Queue a replay plan (kernels/plan.h) on s: the CPU reference on a host
     * stream's worker, one kernel launch or cuBLASLt matmul on cuda. The plan
     * is copied; the call never waits for the work. */
    ck_status (*replay)(ck_backend *b, const struct ck__plan *plan, ck_stream s);
    /* Page-lock n bytes of host memory at p (page-aligned) for asynchronous
     * copies, and undo it. NULL on a backend whose host memory needs none. */
    ck_status (*host_pin)(ck_backend *b, void *p, size_t n);
    ck_status (*host_unpin)(ck_backend *b, void *p);
    /* The device's PCI domain, bus and device numbers (NULL: no device). */
    ck_status (*pci_id)(ck_backend *b, int *domain, int *bus, int *dev);
    /* Host backend with sim_clock: s is busy for ns of simulated time, in
     * order with its other work (compute a replayed trace no longer has).
     * NULL elsewhere. */
    ck_status (*sim_busy)(ck_backend *b, ck_stream s, double ns);
};

struct ck_backend {
    const struct ck_backend_ops *ops;
    const char *name;     /* "host" or "cuda" */
    size_t granularity;   /* map/create unit, bytes (2 MiB on both backends) */
    uint64_t total_mem;   /* device memory, bytes */
    int device;
};

/* Constructors. On failure they return the status and set the error sentence;
 * *out is untouched. */
ck_status ck__backend_host_create(const ck_pool_options *opts, ck_backend **out);
ck_status ck__backend_cuda_create(const ck_pool_options *opts, ck_backend **out);

/* 1 if a CUDA driver with at least one device can be loaded. Never fails. */
int ck__cuda_available(void);

#endif
