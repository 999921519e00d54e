/* Pinned host memory (see hostmem.h). Buffers are whole 2 MiB multiples
 * (64 KiB multiples under 2 MiB), mmap'd and pinned through the backend;
 * a request takes the smallest cached buffer that fits and is at most twice
 * its size, else a new one. */
#include "hostmem.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HOST_SMALL_UNIT ((size_t)64 << 10)
#define HOST_UNIT ((size_t)2 << 20)

void ck__host_init(ck_pool *p, ck_hostmem *h) {
    memset(h, 0, sizeof *h);
    h->budget = p->opts.host_budget;
    if (!h->budget) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        uint64_t ram = (pages > 0 && psz > 0) ? (uint64_t)pages * (uint64_t)psz : 16 * CK_GiB;
        h->budget = ram / 2;
    }
}

static size_t host_round(size_t n) {
    size_t u = n < HOST_UNIT ? HOST_SMALL_UNIT : HOST_UNIT;
    return (n + u - 1) / u * u;
}

static void host_drop(ck_pool *p, ck_hostmem *h, void *buf, size_t cap) {
    if (p->be->ops->host_unpin) p->be->ops->host_unpin(p->be, buf);
    munmap(buf, cap);
    h->held -= cap;
    ck__stat_add(&p->c->host_bytes, -(int64_t)cap);
}

uint64_t ck__host_trim(ck_pool *p, ck_hostmem *h) {
    uint64_t got = 0;
    while (h->ncache) {
        ck_hbuf b = h->cache[--h->ncache];
        host_drop(p, h, b.p, b.cap);
        got += b.cap;
    }
    return got;
}

ck_status ck__host_get(ck_pool *p, ck_hostmem *h, size_t n, void **out, size_t *cap) {
    size_t want = host_round(n), best = SIZE_MAX;
    for (size_t i = 0; i < h->ncache; i++)
        if (h->cache[i].cap >= want && h->cache[i].cap / 2 <= want &&
            (best == SIZE_MAX || h->cache[i].cap < h->cache[best].cap))
            best = i;
    if (best != SIZE_MAX) {
        *out = h->cache[best].p;
        *cap = h->cache[best].cap;
        h->cache[best] = h->cache[--h->ncache];
        return CK_OK;
    }
    /* Make room under host_budget from the cache, largest first. */
    while (h->held + want > h->budget && h->ncache) {
        size_t big = 0;
        for (size_t i = 1; i < h->ncache; i++)
            if (h->cache[i].cap > h->cache[big].cap) big = i;
        ck_hbuf b = h->cache[big];
        h->cache[big] = h->cache[--h->ncache];
        host_drop(p, h, b.p, b.cap);
    }
    char a[32], bud[32], held[32];
    if (h->held + want > h->budget)
        return ck__err(CK_ERR_NOMEM,
                       "out of pinned host memory: %s more would exceed host_budget %s (%s held by "
                       "offloaded tensors); raise host_budget or offload less",
                       ck__fmt_bytes(want, a, sizeof a), ck__fmt_bytes(h->budget, bud, sizeof bud),
                       ck__fmt_bytes(h->held, held, sizeof held));
    void *m = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return ck__err(CK_ERR_NOMEM, "out of host memory: cannot map %s for an offloaded tensor",
                       ck__fmt_bytes(want, a, sizeof a));
    if (p->be->ops->host_pin) {
        ck_status st = p->be->ops->host_pin(p->be, m, want);
        if (st != CK_OK) {
            munmap(m, want);
            return st;
        }
    }
    h->held += want;
    h->pins++;
    ck__stat_add(&p->c->host_bytes, (int64_t)want);
    *out = m;
    *cap = want;
    return CK_OK;
}

void ck__host_put(ck_pool *p, ck_hostmem *h, void *buf, size_t cap) {
    if (ck__grow_array(&h->cache, &h->cap_cache, h->ncache, sizeof *h->cache, 16) != 0) {
        host_drop(p, h, buf, cap);
        return;
    }
    h->cache[h->ncache++] = (ck_hbuf){buf, cap};
}
