/* Streams, events and copies through the pool's backend, so the same code
 * drives a GPU or the host backend. */
#include "pool.h"

#define CHECK_POOL(fn)                                                    \
    do {                                                                  \
        if (!p) return ck__err(CK_ERR_INVALID, fn ": pool is NULL");      \
    } while (0)

/* s must be a stream this pool may use (fence.c's registry): a destroyed
 * stream or another pool's is CK_ERR_INVALID naming fn. */
static ck_status stream_ok(ck_pool *p, ck_stream s, const char *fn) {
    if (!s) return CK_OK;
    pool_lock(p);
    uint32_t idx;
    ck_status st = ck__stream_lookup(p, s, fn, &idx);
    pool_unlock(p);
    return st;
}

CK_API ck_status ck_stream_create(ck_pool *p, ck_stream *out) {
    CHECK_POOL("ck_stream_create");
    if (!out) return ck__err(CK_ERR_INVALID, "ck_stream_create: out is NULL");
    ck_stream s;
    ck_status st = p->be->ops->stream_create(p->be, &s);
    if (st != CK_OK) return st;
    pool_lock(p);
    st = ck__stream_register_own(p, s);
    pool_unlock(p);
    if (st != CK_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ck_last_error());
        p->be->ops->stream_destroy(p->be, s);
        return ck__err(st, "%s", msg);
    }
    *out = s;
    return CK_OK;
}

CK_API ck_status ck_stream_destroy(ck_pool *p, ck_stream s) {
    CHECK_POOL("ck_stream_destroy");
    if (!s) return ck__err(CK_ERR_INVALID, "ck_stream_destroy: the default stream cannot be destroyed");
    pool_lock(p);
    uint32_t idx;
    ck_status st = ck__stream_lookup(p, s, "ck_stream_destroy", &idx);
    if (st == CK_OK && !p->sent[idx].own)
        st = ck__err(CK_ERR_INVALID, "ck_stream_destroy: stream %p was not made by ck_stream_create "
                                     "on this pool", (void *)s);
    if (st == CK_OK) {
        /* Retire it under the lock, before the handle is freed: from here on
         * no other thread can record a round or fence event on it, and a
         * stream created at the same address later gets an entry of its
         * own. Once the entry is gone its frees count as passed, so wait
         * for its work first (the backend's destroy waits again). */
        p->be->ops->stream_sync(p->be, s);
        ck__stream_retire(p, idx);
    }
    pool_unlock(p);
    if (st != CK_OK) return st;
    return p->be->ops->stream_destroy(p->be, s);
}

CK_API ck_status ck_stream_synchronize(ck_pool *p, ck_stream s) {
    CHECK_POOL("ck_stream_synchronize");
    ck_status st = stream_ok(p, s, "ck_stream_synchronize");
    return st != CK_OK ? st : p->be->ops->stream_sync(p->be, s);
}

CK_API ck_status ck_stream_wait_event(ck_pool *p, ck_stream s, ck_event e) {
    CHECK_POOL("ck_stream_wait_event");
    if (!e) return ck__err(CK_ERR_INVALID, "ck_stream_wait_event: event is NULL");
    ck_status st = stream_ok(p, s, "ck_stream_wait_event");
    return st != CK_OK ? st : p->be->ops->stream_wait_event(p->be, s, e);
}

CK_API ck_status ck_event_create(ck_pool *p, ck_event *out) {
    CHECK_POOL("ck_event_create");
    if (!out) return ck__err(CK_ERR_INVALID, "ck_event_create: out is NULL");
    return p->be->ops->event_create(p->be, out);
}

CK_API ck_status ck_event_destroy(ck_pool *p, ck_event e) {
    CHECK_POOL("ck_event_destroy");
    if (!e) return ck__err(CK_ERR_INVALID, "ck_event_destroy: event is NULL");
    return p->be->ops->event_destroy(p->be, e);
}

CK_API ck_status ck_event_record(ck_pool *p, ck_event e, ck_stream s) {
    CHECK_POOL("ck_event_record");
    if (!e) return ck__err(CK_ERR_INVALID, "ck_event_record: event is NULL");
    ck_status st = stream_ok(p, s, "ck_event_record");
    return st != CK_OK ? st : p->be->ops->event_record(p->be, e, s);
}

CK_API ck_status ck_event_query(ck_pool *p, ck_event e) {
    CHECK_POOL("ck_event_query");
    if (!e) return ck__err(CK_ERR_INVALID, "ck_event_query: event is NULL");
    return p->be->ops->event_query(p->be, e);
}

CK_API ck_status ck_event_synchronize(ck_pool *p, ck_event e) {
    CHECK_POOL("ck_event_synchronize");
    if (!e) return ck__err(CK_ERR_INVALID, "ck_event_synchronize: event is NULL");
    return p->be->ops->event_sync(p->be, e);
}

CK_API ck_status ck_event_elapsed_ms(ck_pool *p, ck_event a, ck_event b, float *ms) {
    CHECK_POOL("ck_event_elapsed_ms");
    if (!a || !b || !ms) return ck__err(CK_ERR_INVALID, "ck_event_elapsed_ms: NULL argument");
    return p->be->ops->event_elapsed(p->be, a, b, ms);
}

CK_API ck_status ck_memcpy_async(ck_pool *p, void *dst, const void *src, size_t n, ck_stream s) {
    CHECK_POOL("ck_memcpy_async");
    if ((!dst || !src) && n) return ck__err(CK_ERR_INVALID, "ck_memcpy_async: NULL pointer");
    ck_status st = stream_ok(p, s, "ck_memcpy_async");
    return st != CK_OK ? st : p->be->ops->memcpy_async(p->be, dst, src, n, s);
}

ck_status ck__sim_busy(ck_pool *p, ck_stream s, double ns) {
    CHECK_POOL("sim_busy");
    if (!p->be->ops->sim_busy || !p->opts.sim_clock)
        return ck__err(CK_ERR_INVALID, "simulated compute needs the host backend with sim_clock=1");
    if (!(ns >= 0)) return ck__err(CK_ERR_INVALID, "simulated compute of %g ns", ns);
    ck_status st = stream_ok(p, s, "sim_busy");
    return st != CK_OK ? st : p->be->ops->sim_busy(p->be, s, ns);
}

CK_API ck_status ck_memset_async(ck_pool *p, void *dst, int value, size_t n, ck_stream s) {
    CHECK_POOL("ck_memset_async");
    if (!dst && n) return ck__err(CK_ERR_INVALID, "ck_memset_async: NULL pointer");
    ck_status st = stream_ok(p, s, "ck_memset_async");
    return st != CK_OK ? st : p->be->ops->memset_async(p->be, dst, value, n, s);
}
