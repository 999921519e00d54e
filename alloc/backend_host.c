/* The host backend: CUDA VMM semantics in process memory, so every part of
 * ckalloc runs and is tested on machines without a GPU.
 *
 * - VA is reserved with mmap(PROT_NONE); map commits a range read/write with
 *   fresh zero pages, unmap drops the pages and makes the range fault on touch
 *   again (touching an unmapped tensor crashes, as it would on a GPU).
 *   Unlike a real physical handle, contents do not survive unmap + remap.
 * - Streams are worker threads that run queued copies, sets, event records
 *   and event waits in order; events are real cross-stream dependencies.
 * - Fault injection fails the Nth create / map / copy / unmap / release /
 *   event record-or-wait once.
 * - With sim_clock each stream keeps a simulated time: a copy of n bytes
 *   takes n / sim_h2d, n / sim_d2h or n / sim_bandwidth seconds by direction,
 *   a replay the longer of its bytes / sim_bandwidth and its flops /
 *   sim_flops; events carry the time of their stream. The host runs in no
 *   simulated time but blocks: work queued after a synchronize starts no
 *   earlier than the time synchronized to.
 */
#include "backend.h"
#include "plan.h"
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HOST_GRANULARITY (2 * CK_MiB)
#define HOST_PHYS_MAGIC 0x636b706879730a01ull

typedef enum { OP_COPY, OP_SET, OP_RECORD, OP_WAIT, OP_REPLAY, OP_BUSY } op_kind;

struct host_event;

typedef struct host_op {
    struct host_op *next;
    op_kind kind;
    void *dst;
    const void *src;
    size_t n;
    int value;
    struct host_event *ev;
    uint64_t gen;
    double flops;      /* a replay's, for the simulated clock */
    double not_before; /* simulated host time when it was queued */
} host_op;

typedef struct host_stream {
    struct host_backend *hb;
    struct host_stream *next; /* every created stream, so destroy can join them */
    pthread_t thread;
    host_op *head, *tail;
    pthread_cond_t wake; /* signalled when work is queued or the stream stops */
    uint64_t enq, done; /* ops queued / completed */
    double sim_ns;
    int stop;
} host_stream;

typedef struct host_event {
    uint64_t recorded; /* generation of the last record call */
    uint64_t reached;  /* generation the stream has passed */
    double time_ns;    /* stream time when reached (simulated or wall) */
    double time_at[4]; /* the same per generation (gen & 3): a wait on an event
                          recorded again since keeps the time it waits for */
    uint32_t refs;     /* queued ops that point here */
    int destroyed;     /* freed when the last queued op has run */
} host_event;

typedef struct host_phys {
    uint64_t magic;
    size_t size;
    uint32_t nmaps; /* mappings of it now in force */
} host_phys;

/* What the driver knows of a reservation's mappings, per granule:
 * map[i] = 0 unmapped, MAP_INNER inside a mapping, else the mapping that
 * starts at granule i has map[i] granules. It lets the host backend refuse
 * what CUDA refuses: mapping over a mapping, and unmapping anything but
 * exactly one earlier mapping. */
#define MAP_INNER UINT32_MAX
typedef struct reservation {
    uintptr_t va;
    size_t size;
    void *base;
    size_t base_size;
    uint32_t *map;       /* per granule, see above */
    host_phys **handle;  /* per mapping start: its handle */
    struct reservation *next;
} reservation;

typedef struct host_backend {
    ck_backend base;
    pthread_mutex_t mu; /* guards everything below and all streams/events */
    pthread_cond_t cv;  /* broadcast on a completion while anyone waits for one */
    uint32_t nwaiters;  /* threads waiting on cv (waits in workers included) */
    host_stream *def;   /* the NULL stream */
    host_stream *created; /* streams from stream_create still alive */
    reservation *res;
    uint64_t created_bytes;
    uint64_t n_create, n_map, n_copy, n_unmap, n_release;
    uint64_t n_event;
    uint64_t fault_create, fault_map, fault_copy, fault_unmap, fault_release, fault_event;
    int sim_clock;
    double sim_bw, sim_h2d, sim_d2h, sim_flops;
    /* Simulated host time: the latest stream time the host has waited for.
     * The host is taken to run in no time except where it blocks, so work
     * it queues cannot start before that (a copy issued after a
     * synchronize starts after it, not when its stream went idle). */
    double host_ns;
    int nodata;
} host_backend;

static host_backend *hb_of(ck_backend *b) { return (host_backend *)b; }

static host_stream *stream_of(host_backend *hb, ck_stream s) {
    return s ? (host_stream *)s : hb->def;
}

/* ---- stream workers ---- */

/* Wait (hb->mu held) until *v reaches target: woken by completions, which
 * broadcast only while somebody waits, so idle workers are not woken by
 * every op of every stream. */
static void wait_until(host_backend *hb, const uint64_t *v, uint64_t target) {
    if (*v >= target) return;
    hb->nwaiters++;
    while (*v < target) pthread_cond_wait(&hb->cv, &hb->mu);
    hb->nwaiters--;
}

/* 1 if p lies in one of the backend's reservations (device memory). hb->mu
 * held (the workers charge the clock under it). */
static int in_device(host_backend *hb, const void *p) {
    for (reservation *r = hb->res; r; r = r->next)
        if ((uintptr_t)p >= r->va && (uintptr_t)p < r->va + r->size) return 1;
    return 0;
}

/* Simulated ns: a copy at its direction's bandwidth (device to device and a
 * memset at sim_bandwidth); a replay the longer of its bytes at
 * sim_bandwidth and its flops at sim_flops. */
static double op_sim_cost(host_backend *hb, const host_op *op) {
    double bw = hb->sim_bw;
    if (op->kind == OP_COPY) {
        int d_dst = in_device(hb, op->dst), d_src = in_device(hb, op->src);
        if (d_src && !d_dst) bw = hb->sim_d2h;
        else if (d_dst && !d_src) bw = hb->sim_h2d;
    }
    double ns = (double)op->n / bw * 1e9;
    if (op->kind == OP_REPLAY && hb->sim_flops > 0) {
        double f = op->flops / hb->sim_flops * 1e9;
        if (f > ns) ns = f;
    }
    return ns;
}

/* Simulated time at which generation gen of e was reached (hb->mu held). */
static double gen_time(const host_event *e, uint64_t gen) {
    return e->recorded - gen < 4 ? e->time_at[gen & 3] : e->time_ns;
}

/* The host has waited until simulated time t (hb->mu held). */
static void host_waited(host_backend *hb, double t) {
    if (hb->sim_clock && t > hb->host_ns) hb->host_ns = t;
}

static void *stream_main(void *arg) {
    host_stream *s = arg;
    host_backend *hb = s->hb;
    pthread_mutex_lock(&hb->mu);
    for (;;) {
        while (!s->head && !s->stop) pthread_cond_wait(&s->wake, &hb->mu);
        if (!s->head) break; /* stop requested and the queue is drained */
        host_op *op = s->head;
        s->head = op->next;
        if (!s->head) s->tail = NULL;
        if (hb->sim_clock && op->not_before > s->sim_ns) s->sim_ns = op->not_before;
        switch (op->kind) {
        case OP_COPY:
        case OP_SET:
            pthread_mutex_unlock(&hb->mu);
            if (hb->nodata) { /* the simulated clock only */
            } else if (op->kind == OP_COPY) {
                memmove(op->dst, op->src, op->n);
            } else {
                memset(op->dst, op->value, op->n);
            }
            pthread_mutex_lock(&hb->mu);
            if (hb->sim_clock) s->sim_ns += op_sim_cost(hb, op);
            break;
        case OP_REPLAY: /* dst is our copy of the plan; n its bytes moved */
            pthread_mutex_unlock(&hb->mu);
            if (!hb->nodata) ck__ref_run(op->dst);
            free(op->dst);
            pthread_mutex_lock(&hb->mu);
            if (hb->sim_clock) s->sim_ns += op_sim_cost(hb, op);
            break;
        case OP_BUSY: /* flops holds the simulated ns */
            if (hb->sim_clock) s->sim_ns += op->flops;
            break;
        case OP_RECORD:
            if (op->gen > op->ev->reached) {
                op->ev->reached = op->gen;
                op->ev->time_ns = hb->sim_clock ? s->sim_ns : (double)ck__now_ns();
            }
            op->ev->time_at[op->gen & 3] = hb->sim_clock ? s->sim_ns : 0;
            break;
        case OP_WAIT:
            wait_until(hb, &op->ev->reached, op->gen);
            if (hb->sim_clock && gen_time(op->ev, op->gen) > s->sim_ns) s->sim_ns = gen_time(op->ev, op->gen);
            break;
        }
        /* As in CUDA, an event may be destroyed while work still refers to
         * it: the last queued op frees it. */
        if ((op->kind == OP_RECORD || op->kind == OP_WAIT) && --op->ev->refs == 0 &&
            op->ev->destroyed)
            free(op->ev);
        free(op);
        s->done++;
        if (hb->nwaiters) pthread_cond_broadcast(&hb->cv);
    }
    pthread_mutex_unlock(&hb->mu);
    return NULL;
}

static ck_status stream_new(host_backend *hb, host_stream **out) {
    host_stream *s = calloc(1, sizeof *s);
    if (!s) return ck__err(CK_ERR_NOMEM, "host backend: out of host memory creating a stream");
    s->hb = hb;
    pthread_cond_init(&s->wake, NULL);
    int rc = pthread_create(&s->thread, NULL, stream_main, s);
    if (rc != 0) {
        pthread_cond_destroy(&s->wake);
        free(s);
        return ck__err(CK_ERR_BACKEND, "host backend: cannot start a stream thread: %s",
                       strerror(rc));
    }
    *out = s;
    return CK_OK;
}

static void stream_join(host_backend *hb, host_stream *s) {
    pthread_mutex_lock(&hb->mu);
    s->stop = 1;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&hb->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->wake);
    free(s);
}

/* Queue op on s; takes ownership of op. Called with hb->mu held. */
static void enqueue_locked(host_backend *hb, host_stream *s, host_op *op) {
    op->next = NULL;
    op->not_before = hb->host_ns;
    if (s->tail) s->tail->next = op;
    else s->head = op;
    s->tail = op;
    s->enq++;
    pthread_cond_signal(&s->wake);
}

static ck_status enqueue(host_backend *hb, ck_stream st, host_op tmpl) {
    host_op *op = malloc(sizeof *op);
    if (!op) return ck__err(CK_ERR_NOMEM, "host backend: out of host memory queueing work");
    *op = tmpl;
    pthread_mutex_lock(&hb->mu);
    enqueue_locked(hb, stream_of(hb, st), op);
    pthread_mutex_unlock(&hb->mu);
    return CK_OK;
}

/* ---- fault injection: the Nth call fails, once ---- */

static int fault_hit(host_backend *hb, uint64_t *count, uint64_t when) {
    pthread_mutex_lock(&hb->mu);
    uint64_t n = ++*count;
    pthread_mutex_unlock(&hb->mu);
    return when != 0 && n == when;
}

/* ---- ops ---- */

static ck_status h_mem_info(ck_backend *b, uint64_t *free_bytes, uint64_t *total_bytes) {
    host_backend *hb = hb_of(b);
    pthread_mutex_lock(&hb->mu);
    uint64_t used = hb->created_bytes;
    pthread_mutex_unlock(&hb->mu);
    if (total_bytes) *total_bytes = b->total_mem;
    if (free_bytes) *free_bytes = used < b->total_mem ? b->total_mem - used : 0;
    return CK_OK;
}

static ck_status h_reserve(ck_backend *b, size_t size, uintptr_t *va) {
    host_backend *hb = hb_of(b);
    size_t g = b->granularity;
    if (size == 0 || size % g != 0 || size > ((size_t)1 << 47))
        return ck__err(CK_ERR_INVALID, "host backend: cannot reserve %zu bytes", size);
    reservation *r = calloc(1, sizeof *r);
    if (!r) return ck__err(CK_ERR_NOMEM, "host backend: out of host memory");
    r->base_size = size + g;
    r->base = mmap(NULL, r->base_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (r->base == MAP_FAILED) {
        int e = errno;
        free(r);
        char buf[32];
        return ck__err(CK_ERR_NOMEM, "host backend: cannot reserve %s of address space: %s",
                       ck__fmt_bytes(size, buf, sizeof buf), strerror(e));
    }
    r->va = (uintptr_t)ck__align_up((uintptr_t)r->base, g);
    r->size = size;
    r->map = calloc(size / g, sizeof *r->map);
    r->handle = calloc(size / g, sizeof *r->handle);
    if (!r->map || !r->handle) {
        munmap(r->base, r->base_size);
        free(r->map);
        free(r->handle);
        free(r);
        return ck__err(CK_ERR_NOMEM, "host backend: out of host memory");
    }
    pthread_mutex_lock(&hb->mu);
    r->next = hb->res;
    hb->res = r;
    pthread_mutex_unlock(&hb->mu);
    *va = r->va;
    return CK_OK;
}

static ck_status h_unreserve(ck_backend *b, uintptr_t va, size_t size) {
    host_backend *hb = hb_of(b);
    pthread_mutex_lock(&hb->mu);
    reservation **pp = &hb->res;
    while (*pp && (*pp)->va != va) pp = &(*pp)->next;
    reservation *r = *pp;
    if (r) *pp = r->next;
    pthread_mutex_unlock(&hb->mu);
    if (!r || r->size != size) {
        if (r) { /* put it back: nothing changes on a refused call */
            pthread_mutex_lock(&hb->mu);
            r->next = hb->res;
            hb->res = r;
            pthread_mutex_unlock(&hb->mu);
        }
        return ck__err(CK_ERR_BACKEND, "host backend: %#lx is not a reservation", (unsigned long)va);
    }
    munmap(r->base, r->base_size);
    free(r->map);
    free(r->handle);
    free(r);
    return CK_OK;
}

static ck_status h_create(ck_backend *b, size_t size, ck_phys *out) {
    host_backend *hb = hb_of(b);
    if (fault_hit(hb, &hb->n_create, hb->fault_create))
        return ck__err(CK_ERR_BACKEND, "host backend: injected failure of create call %llu",
                       (unsigned long long)hb->fault_create);
    if (size == 0 || size % b->granularity != 0)
        return ck__err(CK_ERR_INVALID, "host backend: create size %zu is not a multiple of %zu",
                       size, b->granularity);
    pthread_mutex_lock(&hb->mu);
    int fits = hb->created_bytes + size <= b->total_mem;
    if (fits) hb->created_bytes += size;
    pthread_mutex_unlock(&hb->mu);
    if (!fits) {
        char a[32], t[32];
        return ck__err(CK_ERR_NOMEM,
                       "host backend: host_mem, the simulated device size, is exhausted (%s more "
                       "of %s)",
                       ck__fmt_bytes(size, a, sizeof a), ck__fmt_bytes(b->total_mem, t, sizeof t));
    }
    host_phys *p = malloc(sizeof *p);
    if (!p) {
        pthread_mutex_lock(&hb->mu);
        hb->created_bytes -= size;
        pthread_mutex_unlock(&hb->mu);
        return ck__err(CK_ERR_NOMEM, "host backend: out of host memory");
    }
    p->magic = HOST_PHYS_MAGIC;
    p->size = size;
    p->nmaps = 0;
    *out = (ck_phys)(uintptr_t)p;
    return CK_OK;
}

static host_phys *phys_of(ck_phys h) {
    host_phys *p = (host_phys *)(uintptr_t)h;
    return p && p->magic == HOST_PHYS_MAGIC ? p : NULL;
}

static ck_status h_release(ck_backend *b, ck_phys h) {
    host_backend *hb = hb_of(b);
    host_phys *p = phys_of(h);
    if (!p) return ck__err(CK_ERR_BACKEND, "host backend: release of an unknown handle");
    if (fault_hit(hb, &hb->n_release, hb->fault_release))
        return ck__err(CK_ERR_BACKEND, "host backend: injected failure of release call %llu",
                       (unsigned long long)hb->fault_release);
    pthread_mutex_lock(&hb->mu);
    uint32_t nmaps = p->nmaps;
    if (!nmaps) hb->created_bytes -= p->size;
    pthread_mutex_unlock(&hb->mu);
    /* ckalloc releases only unmapped handles (the driver would keep a mapped
     * one's memory until its last unmap: a leak in disguise). */
    if (nmaps)
        return ck__err(CK_ERR_BACKEND, "host backend: release of a handle that is still mapped");
    p->magic = 0;
    free(p);
    return CK_OK;
}

/* The reservation holding [va, va+size), or NULL. Lock held. */
static reservation *res_holding(host_backend *hb, uintptr_t va, size_t size) {
    for (reservation *r = hb->res; r; r = r->next)
        if (va >= r->va && size <= r->size && va - r->va <= r->size - size) return r;
    return NULL;
}

/* Map n handles of `chunk` bytes each back to back from va, then make them
 * accessible, as cuMemMap per handle + one cuMemSetAccess over the run. The
 * rules are CUDA's: each handle exactly chunk bytes, the range inside one
 * reservation and not mapped yet. On failure nothing stays mapped. */
static ck_status h_map(ck_backend *b, uintptr_t va, size_t chunk, size_t n, const ck_phys *h) {
    host_backend *hb = hb_of(b);
    size_t g = b->granularity;
    if (fault_hit(hb, &hb->n_map, hb->fault_map))
        return ck__err(CK_ERR_BACKEND, "host backend: injected failure of map call %llu",
                       (unsigned long long)hb->fault_map);
    if (n == 0 || chunk == 0 || chunk % g || va % g || n > SIZE_MAX / chunk)
        return ck__err(CK_ERR_INVALID, "host backend: map of %zu x %zu bytes at %#lx", n, chunk,
                       (unsigned long)va);
    size_t size = n * chunk, per = chunk / g;
    for (size_t i = 0; i < n; i++) {
        host_phys *p = phys_of(h[i]);
        if (!p || p->size != chunk)
            return ck__err(CK_ERR_BACKEND,
                           "host backend: map of %zu bytes with a handle of another size", chunk);
    }
    pthread_mutex_lock(&hb->mu);
    reservation *r = res_holding(hb, va, size);
    size_t first = r ? (va - r->va) / g : 0;
    int clash = 0;
    for (size_t i = 0; r && i < size / g && !clash; i++) clash = r->map[first + i] != 0;
    if (!r || clash) {
        pthread_mutex_unlock(&hb->mu);
        return ck__err(CK_ERR_BACKEND, "host backend: map at %#lx (%zu bytes) %s", (unsigned long)va,
                       size, r ? "overlaps a mapping" : "is not inside one reservation");
    }
    void *m = mmap((void *)va, size, PROT_READ | PROT_WRITE,
                   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        pthread_mutex_unlock(&hb->mu);
        return ck__err(CK_ERR_BACKEND, "host backend: commit of %zu bytes failed: %s", size,
                       strerror(e));
    }
    for (size_t i = 0; i < n; i++) {
        size_t at = first + i * per;
        r->map[at] = (uint32_t)per;
        for (size_t k = 1; k < per; k++) r->map[at + k] = MAP_INNER;
        r->handle[at] = phys_of(h[i]);
        r->handle[at]->nmaps++;
    }
    pthread_mutex_unlock(&hb->mu);
    return CK_OK;
}

/* Unmap exactly one earlier mapping, as cuMemUnmap: a part of one, or a
 * range spanning two, is refused with nothing changed. */
static ck_status h_unmap(ck_backend *b, uintptr_t va, size_t size) {
    host_backend *hb = hb_of(b);
    size_t g = b->granularity;
    if (fault_hit(hb, &hb->n_unmap, hb->fault_unmap))
        return ck__err(CK_ERR_BACKEND, "host backend: injected failure of unmap call %llu",
                       (unsigned long long)hb->fault_unmap);
    pthread_mutex_lock(&hb->mu);
    reservation *r = size && va % g == 0 ? res_holding(hb, va, size) : NULL;
    size_t first = r ? (va - r->va) / g : 0;
    if (!r || r->map[first] == 0 || r->map[first] == MAP_INNER ||
        (size_t)r->map[first] * g != size) {
        pthread_mutex_unlock(&hb->mu);
        return ck__err(CK_ERR_BACKEND,
                       "host backend: unmap of %#lx (%zu bytes) is not exactly one mapping",
                       (unsigned long)va, size);
    }
    /* A fresh PROT_NONE mapping drops the pages and makes the range fault. */
    void *m = mmap((void *)va, size, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        pthread_mutex_unlock(&hb->mu);
        return ck__err(CK_ERR_BACKEND, "host backend: decommit failed: %s", strerror(e));
    }
    memset(&r->map[first], 0, size / g * sizeof *r->map);
    r->handle[first]->nmaps--;
    r->handle[first] = NULL;
    pthread_mutex_unlock(&hb->mu);
    return CK_OK;
}

static ck_status h_memcpy(ck_backend *b, void *dst, const void *src, size_t n, ck_stream s) {
    host_backend *hb = hb_of(b);
    if (fault_hit(hb, &hb->n_copy, hb->fault_copy))
        return ck__err(CK_ERR_BACKEND, "host backend: injected failure of copy call %llu",
                       (unsigned long long)hb->fault_copy);
    if (n == 0) return CK_OK;
    return enqueue(hb, s, (host_op){.kind = OP_COPY, .dst = dst, .src = src, .n = n});
}

static ck_status h_memset(ck_backend *b, void *dst, int value, size_t n, ck_stream s) {
    if (n == 0) return CK_OK;
    return enqueue(hb_of(b), s, (host_op){.kind = OP_SET, .dst = dst, .value = value, .n = n});
}

static ck_status h_sim_busy(ck_backend *b, ck_stream s, double ns) {
    return enqueue(hb_of(b), s, (host_op){.kind = OP_BUSY, .flops = ns});
}

static ck_status h_stream_create(ck_backend *b, ck_stream *out) {
    host_backend *hb = hb_of(b);
    host_stream *s = NULL;
    ck_status st = stream_new(hb, &s);
    if (st != CK_OK) return st;
    pthread_mutex_lock(&hb->mu);
    s->next = hb->created;
    hb->created = s;
    pthread_mutex_unlock(&hb->mu);
    *out = (ck_stream)s;
    return CK_OK;
}

static ck_status h_stream_sync(ck_backend *b, ck_stream st) {
    host_backend *hb = hb_of(b);
    host_stream *s = stream_of(hb, st);
    pthread_mutex_lock(&hb->mu);
    wait_until(hb, &s->done, s->enq);
    host_waited(hb, s->sim_ns);
    pthread_mutex_unlock(&hb->mu);
    return CK_OK;
}

static ck_status h_stream_destroy(ck_backend *b, ck_stream st) {
    host_backend *hb = hb_of(b);
    if (!st) return ck__err(CK_ERR_INVALID, "the default stream cannot be destroyed");
    pthread_mutex_lock(&hb->mu);
    host_stream **pp = &hb->created;
    while (*pp && *pp != (host_stream *)st) pp = &(*pp)->next;
    host_stream *s = *pp;
    if (s) *pp = s->next;
    pthread_mutex_unlock(&hb->mu);
    if (!s) return ck__err(CK_ERR_INVALID, "%p is not a live stream of this pool", (void *)st);
    stream_join(hb, s); /* drains the queue first */
    return CK_OK;
}

static ck_status h_stream_capturing(ck_backend *b, ck_stream s, int *capturing) {
    *capturing = 0;
    return CK_OK;
}

static ck_status h_event_create(ck_backend *b, ck_event *out) {
    host_event *e = calloc(1, sizeof *e);
    if (!e) return ck__err(CK_ERR_NOMEM, "host backend: out of host memory");
    *out = (ck_event)e;
    return CK_OK;
}

static ck_status h_event_destroy(ck_backend *b, ck_event ev) {
    host_backend *hb = hb_of(b);
    host_event *e = (host_event *)ev;
    pthread_mutex_lock(&hb->mu);
    int now = e->refs == 0;
    e->destroyed = 1;
    pthread_mutex_unlock(&hb->mu);
    if (now) free(e);
    return CK_OK;
}

/* The CPU reference on the stream's worker, in order with its copies. */
static ck_status h_replay(ck_backend *b, const ck__plan *plan, ck_stream s) {
    ck__plan *copy = malloc(sizeof *copy);
    if (!copy) return ck__err(CK_ERR_NOMEM, "host backend: out of host memory queueing a replay");
    *copy = *plan;
    ck_status st = enqueue(hb_of(b), s,
                           (host_op){.kind = OP_REPLAY, .dst = copy, .n = plan->bytes, .flops = plan->flops});
    if (st != CK_OK) free(copy);
    return st;
}

/* Queue a record (which starts a new generation of e) or a wait (for the
 * generation recorded last) on stream st. */
static ck_status enqueue_event_op(ck_backend *b, ck_stream st, ck_event ev, op_kind kind) {
    host_backend *hb = hb_of(b);
    host_event *e = (host_event *)ev;
    if (fault_hit(hb, &hb->n_event, hb->fault_event))
        return ck__err(CK_ERR_BACKEND, "host backend: injected failure of event call %llu",
                       (unsigned long long)hb->fault_event);
    host_op *op = malloc(sizeof *op);
    if (!op) return ck__err(CK_ERR_NOMEM, "host backend: out of host memory queueing work");
    pthread_mutex_lock(&hb->mu);
    *op = (host_op){.kind = kind, .ev = e, .gen = kind == OP_RECORD ? ++e->recorded : e->recorded};
    e->refs++;
    enqueue_locked(hb, stream_of(hb, st), op);
    pthread_mutex_unlock(&hb->mu);
    return CK_OK;
}

static ck_status h_event_record(ck_backend *b, ck_event ev, ck_stream s) {
    return enqueue_event_op(b, s, ev, OP_RECORD);
}

static ck_status h_stream_wait_event(ck_backend *b, ck_stream s, ck_event ev) {
    return enqueue_event_op(b, s, ev, OP_WAIT);
}

static ck_status h_event_query(ck_backend *b, ck_event ev) {
    host_backend *hb = hb_of(b);
    host_event *e = (host_event *)ev;
    pthread_mutex_lock(&hb->mu);
    int done = e->reached >= e->recorded;
    pthread_mutex_unlock(&hb->mu);
    return done ? CK_OK : CK_ERR_NOT_READY;
}

static ck_status h_event_sync(ck_backend *b, ck_event ev) {
    host_backend *hb = hb_of(b);
    host_event *e = (host_event *)ev;
    pthread_mutex_lock(&hb->mu);
    wait_until(hb, &e->reached, e->recorded);
    if (e->recorded) host_waited(hb, gen_time(e, e->recorded));
    pthread_mutex_unlock(&hb->mu);
    return CK_OK;
}

static ck_status h_event_elapsed(ck_backend *b, ck_event start, ck_event end, float *ms) {
    host_backend *hb = hb_of(b);
    host_event *a = (host_event *)start, *z = (host_event *)end;
    pthread_mutex_lock(&hb->mu);
    int ok = a->recorded && z->recorded && a->reached >= a->recorded && z->reached >= z->recorded;
    double d = z->time_ns - a->time_ns;
    pthread_mutex_unlock(&hb->mu);
    if (!ok) return ck__err(CK_ERR_NOT_READY, "elapsed time: an event has not completed");
    *ms = (float)(d / 1e6);
    return CK_OK;
}

static void h_destroy(ck_backend *b) {
    host_backend *hb = hb_of(b);
    /* Streams the user did not destroy: drain and join them too. */
    while (hb->created) {
        host_stream *s = hb->created;
        hb->created = s->next;
        stream_join(hb, s);
    }
    stream_join(hb, hb->def);
    while (hb->res) {
        reservation *r = hb->res;
        hb->res = r->next;
        munmap(r->base, r->base_size);
        free(r->map);
        free(r->handle);
        free(r);
    }
    pthread_mutex_destroy(&hb->mu);
    pthread_cond_destroy(&hb->cv);
    free(hb);
}

static const struct ck_backend_ops host_ops = {
    .destroy = h_destroy,
    .mem_info = h_mem_info,
    .reserve = h_reserve,
    .unreserve = h_unreserve,
    .create = h_create,
    .release = h_release,
    .map = h_map,
    .unmap = h_unmap,
    .memcpy_async = h_memcpy,
    .memset_async = h_memset,
    .replay = h_replay,
    .stream_create = h_stream_create,
    .stream_destroy = h_stream_destroy,
    .stream_sync = h_stream_sync,
    .stream_capturing = h_stream_capturing,
    .stream_wait_event = h_stream_wait_event,
    .event_create = h_event_create,
    .event_destroy = h_event_destroy,
    .event_record = h_event_record,
    .event_query = h_event_query,
    .event_sync = h_event_sync,
    .event_elapsed = h_event_elapsed,
    .sim_busy = h_sim_busy,
};

ck_status ck__backend_host_create(const ck_pool_options *opts, ck_backend **out) {
    host_backend *hb = calloc(1, sizeof *hb);
    if (!hb) return ck__err(CK_ERR_NOMEM, "host backend: out of host memory");
    hb->base.ops = &host_ops;
    hb->base.name = "host";
    hb->base.granularity = HOST_GRANULARITY;
    uint64_t total = opts->host_mem;
    if (!total) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        total = (pages > 0 && psz > 0) ? (uint64_t)pages * (uint64_t)psz : 16 * CK_GiB;
    }
    hb->base.total_mem = total / HOST_GRANULARITY * HOST_GRANULARITY;
    hb->base.device = 0;
    hb->fault_create = opts->fault_create;
    hb->fault_map = opts->fault_map;
    hb->fault_copy = opts->fault_copy;
    hb->fault_unmap = opts->fault_unmap;
    hb->fault_release = opts->fault_release;
    hb->fault_event = opts->fault_event;
    hb->sim_flops = opts->sim_flops;
    hb->sim_clock = opts->sim_clock;
    hb->sim_bw = opts->sim_bandwidth > 0 ? opts->sim_bandwidth : 25e9;
    hb->sim_h2d = opts->sim_h2d > 0 ? opts->sim_h2d : hb->sim_bw;
    hb->sim_d2h = opts->sim_d2h > 0 ? opts->sim_d2h : hb->sim_bw;
    hb->nodata = opts->sim_nodata;
    pthread_mutex_init(&hb->mu, NULL);
    pthread_cond_init(&hb->cv, NULL);
    ck_status s = stream_new(hb, &hb->def);
    if (s != CK_OK) {
        pthread_mutex_destroy(&hb->mu);
        pthread_cond_destroy(&hb->cv);
        free(hb);
        return s;
    }
    *out = &hb->base;
    return CK_OK;
}
