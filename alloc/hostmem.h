/* Pinned host memory for offloaded tensors: buffers page-locked once (the
 * backend's host_pin: cuMemHostRegister on cuda) and kept for reuse, so a
 * training loop's steady-state steps pin nothing new. Bounded by
 * host_budget. Called with the pool lock held. */
#ifndef CK_HOSTMEM_H
#define CK_HOSTMEM_H

#include "pool.h"

typedef struct ck_hbuf {
    void *p;
    size_t cap;
} ck_hbuf;

typedef struct ck_hostmem {
    uint64_t budget;  /* host_budget in force */
    uint64_t held;    /* bytes mapped and pinned, in use or cached */
    ck_hbuf *cache;   /* free buffers */
    size_t ncache, cap_cache;
    uint64_t pins;    /* buffers pinned so far (a steady state adds none) */
} ck_hostmem;

void ck__host_init(ck_pool *p, ck_hostmem *h);
/* A pinned buffer of at least n bytes: *cap gets its size. CK_ERR_NOMEM
 * naming host_budget when it does not fit even after dropping the cache. */
ck_status ck__host_get(ck_pool *p, ck_hostmem *h, size_t n, void **out, size_t *cap);
/* Back to the cache. */
void ck__host_put(ck_pool *p, ck_hostmem *h, void *buf, size_t cap);
/* Unpin and unmap every cached buffer; returns the bytes given back. */
uint64_t ck__host_trim(ck_pool *p, ck_hostmem *h);

#endif
