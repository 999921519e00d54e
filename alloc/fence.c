/* Streams as the pool knows them, and the rounds that fence their frees.
 *
 * The registry: every stream a pool has seen has an entry (a small index
 * with a generation). Streams made by ck_stream_create on this pool are its
 * own; on the cuda backend any other CUstream the caller passes (torch's,
 * cudart's) is taken as foreign and registered on first use, unless another
 * ckalloc pool made it. A stream destroyed through ck_stream_destroy leaves
 * its entry behind, dead, on the host backend, so a stale handle is refused
 * (CK_ERR_INVALID) instead of touching freed memory; on cuda the entry goes,
 * since the driver may hand the same address to a stream created elsewhere.
 * Blocks remember the streams given to ck_record_stream as (index,
 * generation), so destroying a stream costs nothing per block.
 *
 * Rounds: a round records one event on every stream that freed something
 * since the previous round (a dirty flag per entry, a list of the dirty).
 * A free stamped with round r is safe for every stream once round r+1 has
 * completed (pool.h). Everything here runs under the pool lock, except the
 * global registry, which has a lock of its own.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* Make room for one more element in a growing array (*v, *cap). Returns 0,
 * or -1 with the array untouched when memory runs out. */
int ck__grow_array(void *v, size_t *cap, size_t n, size_t elem, size_t first) {
    if (n < *cap) return 0;
    size_t c = *cap ? *cap * 2 : first;
    void *nv = realloc(*(void **)v, c * elem);
    if (!nv) return -1;
    *(void **)v = nv;
    *cap = c;
    return 0;
}

/* ------------------------------------------------ the global registry -- */

/* Streams made by ck_stream_create in this process and not destroyed yet,
 * with the pool that made them: a pool refuses another pool's streams. */
typedef struct gstream {
    ck_stream s;
    const ck_pool *owner;
} gstream;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static gstream *g_streams;
static size_t g_n, g_cap;
/* Bumped by every ck_stream_create: a pool's foreign entries checked
 * before then are checked again (the address may now be another pool's). */
static _Atomic uint64_t g_create_gen = 1;

static int global_add(ck_stream s, const ck_pool *owner) {
    pthread_mutex_lock(&g_mu);
    int rc = ck__grow_array(&g_streams, &g_cap, g_n, sizeof *g_streams, 16);
    if (rc == 0) g_streams[g_n++] = (gstream){s, owner};
    pthread_mutex_unlock(&g_mu);
    atomic_fetch_add_explicit(&g_create_gen, 1, memory_order_release);
    return rc;
}

static void global_remove(ck_stream s) {
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++)
        if (g_streams[i].s == s) {
            g_streams[i] = g_streams[--g_n];
            break;
        }
    pthread_mutex_unlock(&g_mu);
}

/* The pool that made s, or NULL. Called once per foreign stream. */
static const ck_pool *global_owner(ck_stream s) {
    const ck_pool *o = NULL;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n && !o; i++)
        if (g_streams[i].s == s) o = g_streams[i].owner;
    pthread_mutex_unlock(&g_mu);
    return o;
}

/* --------------------------------------------------- the pool's registry -- */

static uint32_t shash(const ck_pool *p, ck_stream s) {
    return (uint32_t)(((uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15ull) >> 40) & p->smask;
}

/* Entry index of s (alive or dead), or CK_NO_STREAM. */
static uint32_t sfind(const ck_pool *p, ck_stream s) {
    for (uint32_t i = p->sbucket[shash(p, s)]; i; i = p->sent[i - 1].hnext)
        if (p->sent[i - 1].s == s) return i - 1;
    return CK_NO_STREAM;
}

static void sunlink(ck_pool *p, uint32_t idx) {
    uint32_t *pp = &p->sbucket[shash(p, p->sent[idx].s)];
    while (*pp != idx + 1) pp = &p->sent[*pp - 1].hnext;
    *pp = p->sent[idx].hnext;
    p->sent[idx].hnext = 0;
}

static int srehash(ck_pool *p, uint32_t nbuckets) {
    uint32_t *b = calloc(nbuckets, sizeof *b);
    if (!b) return -1;
    free(p->sbucket);
    p->sbucket = b;
    p->smask = nbuckets - 1;
    for (uint32_t i = 0; i < p->nsent; i++) {
        ck_sent *e = &p->sent[i];
        if (!e->hashed) continue;
        uint32_t h = shash(p, e->s);
        e->hnext = b[h];
        b[h] = i + 1;
    }
    return 0;
}

/* A new entry for s (hashed). Returns its index or CK_NO_STREAM. */
static uint32_t sadd(ck_pool *p, ck_stream s, int own) {
    uint32_t idx;
    if (p->sfree) {
        idx = p->sfree - 1;
        p->sfree = p->sent[idx].hnext;
    } else {
        if (p->nsent >= UINT32_MAX - 1 ||
            ck__grow_array(&p->sent, &p->cap_sent, p->nsent, sizeof *p->sent, 8) != 0)
            return CK_NO_STREAM;
        idx = p->nsent++;
        p->sent[idx].gen = 0;
    }
    ck_sent *e = &p->sent[idx];
    uint32_t gen = e->gen;
    memset(e, 0, sizeof *e); /* not hashed yet: a rehash below leaves it out */
    e->s = s;
    e->gen = gen;
    e->live = 1;
    e->own = (uint8_t)own;
    if (p->nsent > 2u * (p->smask + 1)) srehash(p, 2 * (p->smask + 1)); /* else longer chains */
    e->hashed = 1;
    uint32_t h = shash(p, s);
    e->hnext = p->sbucket[h];
    p->sbucket[h] = idx + 1;
    return idx;
}

/* Entry e's fence event is done with: if it passed, every free on its
 * stream numbered below fev_seq has too. The event goes back to the cache. */
static void fev_drop(ck_pool *p, ck_sent *e, int passed) {
    if (passed) e->done_seq = e->fev_seq;
    ck__event_put(p, e->fev);
    e->fev = NULL;
    e->fev_waited = 0;
}

/* Retire entry idx: its generation moves on, so block uses that name it
 * are stale. keep: leave it hashed and dead (a tombstone that refuses the
 * handle), else free the index for reuse. */
static void sretire(ck_pool *p, uint32_t idx, int keep) {
    ck_sent *e = &p->sent[idx];
    if (e->dirty) {
        for (size_t i = 0; i < p->ndirty; i++)
            if (p->dirty[i] == idx) {
                p->dirty[i] = p->dirty[--p->ndirty];
                break;
            }
        e->dirty = 0;
    }
    if (e->fev) fev_drop(p, e, 0);
    e->live = 0;
    e->gen++;
    if (p->last_sidx == idx) p->last_sidx = CK_NO_STREAM;
    if (keep) return;
    sunlink(p, idx);
    e->hashed = 0;
    e->hnext = p->sfree;
    p->sfree = idx + 1;
}

ck_status ck__streams_init(ck_pool *p) {
    p->last_sidx = CK_NO_STREAM;
    if (srehash(p, 16) != 0 || sadd(p, NULL, 1) != 0) /* entry 0: the default stream */
        return ck__err(CK_ERR_NOMEM, "out of host memory for the stream registry");
    return CK_OK;
}

void ck__streams_free(ck_pool *p) {
    for (uint32_t i = 0; i < p->nsent; i++)
        if (p->sent[i].live && p->sent[i].own && p->sent[i].s) global_remove(p->sent[i].s);
    free(p->sent);
    free(p->sbucket);
    free(p->dirty);
    p->sent = NULL;
    p->sbucket = NULL;
    p->dirty = NULL;
}

ck_status ck__stream_lookup(ck_pool *p, ck_stream s, const char *fn, uint32_t *idx) {
    if (!s) { /* the default stream: entry 0, always there */
        *idx = 0;
        return CK_OK;
    }
    uint32_t i = p->last_sidx;
    if (i == CK_NO_STREAM || p->sent[i].s != s) i = sfind(p, s); /* else the same stream again */
    if (i != CK_NO_STREAM && p->sent[i].live) {
        ck_sent *e = &p->sent[i];
        uint64_t gen = atomic_load_explicit(&g_create_gen, memory_order_acquire);
        if (!e->own && e->checked_gen != gen) {
            /* A foreign handle seen before: since then another pool may
             * have made a stream at the same address (the foreign one was
             * destroyed without this pool hearing of it). */
            const ck_pool *owner = global_owner(s);
            if (owner && owner != p) {
                sretire(p, i, 0);
                return ck__err(CK_ERR_INVALID, "%s: stream %p belongs to another ckalloc pool", fn,
                               (void *)s);
            }
            e->checked_gen = gen;
        }
        p->last_sidx = i;
        *idx = i;
        return CK_OK;
    }
    if (i != CK_NO_STREAM)
        return ck__err(CK_ERR_INVALID, "%s: stream %p was destroyed (ck_stream_destroy)", fn,
                       (void *)s);
    if (strcmp(p->be->name, "cuda") != 0)
        return ck__err(CK_ERR_INVALID,
                       "%s: %p is not a stream of this pool (make streams with ck_stream_create on "
                       "the same pool, or pass NULL for the default stream)",
                       fn, (void *)s);
    const ck_pool *owner = global_owner(s);
    if (owner && owner != p)
        return ck__err(CK_ERR_INVALID, "%s: stream %p belongs to another ckalloc pool", fn,
                       (void *)s);
    uint64_t gen = atomic_load_explicit(&g_create_gen, memory_order_acquire);
    i = sadd(p, s, 0); /* a CUstream made outside ckalloc */
    if (i == CK_NO_STREAM)
        return ck__err(CK_ERR_NOMEM, "%s: out of host memory for the stream registry", fn);
    p->sent[i].checked_gen = gen;
    p->last_sidx = i;
    *idx = i;
    return CK_OK;
}

int ck__stream_alive(const ck_pool *p, ck_stream s) {
    if (!s) return 1;
    uint32_t i = sfind(p, s);
    return i != CK_NO_STREAM && p->sent[i].live;
}

int ck__stream_passed(ck_pool *p, ck_stream s, uint64_t seq) {
    uint32_t i = s ? sfind(p, s) : 0;
    if (i == CK_NO_STREAM || !p->sent[i].live) return 1; /* destroyed: its work is done */
    ck_sent *e = &p->sent[i];
    if (e->fev && ck__event_passed(p, e->fev, 0)) fev_drop(p, e, 1);
    if (e->done_seq > seq) return 1;
    if (e->fev && e->fev_seq <= seq) fev_drop(p, e, 0); /* too old: a newer one replaces it */
    if (!e->fev) {
        int capturing = 0;
        if (p->be->ops->stream_capturing(p->be, s, &capturing) != CK_OK || capturing) return 0;
        if (ck__event_record(p, s, &e->fev) != CK_OK) {
            e->fev = NULL;
            return 0;
        }
        e->fev_seq = p->free_seq;
    }
    if (e->fev_waited) return 0;
    /* A short wait: a stream about to pass its frees is worth it (no new
     * memory); a busy one is not (the caller maps instead, as PyTorch
     * would, and later calls only poll). Never blocks indefinitely, so a
     * stream held up by the host cannot deadlock an allocation. */
    uint64_t t0 = ck__now_ns();
    for (;;) {
        if (ck__event_passed(p, e->fev, 0)) {
            fev_drop(p, e, 1);
            return e->done_seq > seq;
        }
        if (ck__now_ns() - t0 > CK_FENCE_WAIT_NS) break;
        sched_yield();
    }
    e->fev_waited = 1;
    return 0;
}

ck_status ck__stream_register_own(ck_pool *p, ck_stream s) {
    uint32_t i = sfind(p, s);
    if (i != CK_NO_STREAM) sretire(p, i, 0); /* a dead handle made again, or a foreign one seen before */
    i = sadd(p, s, 1);
    if (i == CK_NO_STREAM || global_add(s, p) != 0) {
        if (i != CK_NO_STREAM) sretire(p, i, 0);
        return ck__err(CK_ERR_NOMEM, "ck_stream_create: out of host memory for the stream registry");
    }
    return CK_OK;
}

void ck__stream_retire(ck_pool *p, uint32_t idx) {
    ck_sent *e = &p->sent[idx];
    if (e->own) global_remove(e->s);
    /* A dead host stream stays as a tombstone: its handle was freed memory. */
    sretire(p, idx, e->own && strcmp(p->be->name, "cuda") != 0);
}

/* ------------------------------------------------------------- events -- */

static ck_status event_get(ck_pool *p, ck_event *out) {
    if (p->nev_cache) {
        *out = p->ev_cache[--p->nev_cache];
        return CK_OK;
    }
    /* never timed: a fence where the backend has a cheaper kind */
    if (p->be->ops->fence_create) return p->be->ops->fence_create(p->be, out);
    return p->be->ops->event_create(p->be, out);
}

void ck__event_put(ck_pool *p, ck_event e) {
    if (ck__grow_array(&p->ev_cache, &p->cap_ev_cache, p->nev_cache, sizeof e, 16) != 0) {
        p->be->ops->event_destroy(p->be, e);
        return;
    }
    p->ev_cache[p->nev_cache++] = e;
}

ck_status ck__event_record(ck_pool *p, ck_stream s, ck_event *out) {
    ck_event e;
    ck_status st = event_get(p, &e);
    if (st != CK_OK) return st;
    st = p->be->ops->event_record(p->be, e, s);
    if (st != CK_OK) {
        ck__event_put(p, e);
        return st;
    }
    *out = e;
    return CK_OK;
}

int ck__event_passed(ck_pool *p, ck_event e, int wait) {
    if (wait) return p->be->ops->event_sync(p->be, e), 1;
    return p->be->ops->event_query(p->be, e) == CK_OK;
}

/* ------------------------------------------------------------- rounds -- */

void ck__mark_dirty(ck_pool *p, uint32_t idx) {
    ck_sent *e = &p->sent[idx];
    if (e->dirty) return;
    if (ck__grow_array(&p->dirty, &p->cap_dirty, p->ndirty, sizeof *p->dirty, 8) != 0) {
        /* Cannot track it for the next round: wait for it now, so that the
         * next round (even an empty one) fences its frees truthfully. */
        p->be->ops->stream_sync(p->be, e->s);
        return;
    }
    e->dirty = 1;
    p->dirty[p->ndirty++] = idx;
}

int ck__round_poll(ck_pool *p, int wait) {
    if (p->round_done == p->round_issued) return 1;
    for (size_t i = 0; i < p->nround_ev; i++)
        if (!ck__event_passed(p, p->round_ev[i], wait)) return 0;
    for (size_t i = 0; i < p->nround_ev; i++) ck__event_put(p, p->round_ev[i]);
    p->nround_ev = 0;
    p->round_done = p->round_issued;
    return 1;
}

/* Start a round on every dirty stream (only one round is in flight). A
 * round must cover every dirty stream or none: if one cannot take an event
 * (it is capturing a graph), no round starts and blocks keep to their own
 * streams until it can. */
void ck__round_issue(ck_pool *p) {
    if (!ck__round_poll(p, 0)) return;
    if (p->ndirty == 0) {
        /* No stream freed anything since the last round: every stamp so far
         * is covered already, so an empty round completes at once. */
        p->round_done = ++p->round_issued;
        return;
    }
    for (size_t i = 0; i < p->ndirty; i++) {
        int capturing = 0;
        if (p->be->ops->stream_capturing(p->be, p->sent[p->dirty[i]].s, &capturing) != CK_OK ||
            capturing)
            return;
    }
    while (p->cap_round_ev < p->ndirty)
        if (ck__grow_array(&p->round_ev, &p->cap_round_ev, p->cap_round_ev, sizeof *p->round_ev, 8) != 0)
            return;
    for (size_t i = 0; i < p->ndirty; i++) {
        ck_event e;
        if (ck__event_record(p, p->sent[p->dirty[i]].s, &e) != CK_OK) {
            /* Events recorded so far are harmless: recycle them. */
            for (size_t k = 0; k < p->nround_ev; k++) ck__event_put(p, p->round_ev[k]);
            p->nround_ev = 0;
            return;
        }
        p->round_ev[p->nround_ev++] = e;
    }
    for (size_t i = 0; i < p->ndirty; i++) p->sent[p->dirty[i]].dirty = 0;
    p->ndirty = 0;
    p->round_issued++;
}

int ck__round_wait_bounded(ck_pool *p, uint64_t stamp) {
    uint64_t t0 = ck__now_ns();
    while (p->round_done <= stamp) {
        if (ck__round_poll(p, 0)) {
            if (p->round_done > stamp) break;
            ck__round_issue(p); /* the round that covers stamp */
            if (p->round_done == p->round_issued) return p->round_done > stamp; /* could not */
            continue;
        }
        /* A round is in flight: wait for it, briefly, once. */
        if (p->round_stuck == p->round_issued || ck__now_ns() - t0 > CK_FENCE_WAIT_NS) {
            p->round_stuck = p->round_issued;
            return 0;
        }
        sched_yield();
    }
    return 1;
}

ck_status ck__pool_quiesce(ck_pool *p) {
    ck__round_poll(p, 1);
    ck__round_issue(p);
    ck__round_poll(p, 1);
    return CK_OK;
}
