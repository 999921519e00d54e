/* The tier engine (include/ckalloc/tier.h): keep, offload, recompute, at the
 * same virtual address.
 *
 * A tagged live block has a record (ck_tmeta, b->tm). Stashed records sit
 * on a list in stash order; records with work in flight (a copy out, or a
 * copy in or replay after a fetch) sit on the moving list with the event
 * that marks its end. Nothing here waits for the device except under budget
 * pressure, at ck_pool_destroy and with verify=1: finished work is noticed
 * by polling on the next call into the engine (or into the pool under
 * pressure, through ck__tier_reclaim).
 *
 * The memory under a stashed tensor goes back through the physical layer
 * (ck__evict_locked: every chunk no other live block touches) and comes back
 * at the same address (ck__restore_locked). Everything runs under the pool
 * lock. */
#include "ckalloc/tier.h"

#include <sched.h>
#include <time.h>

#include "hostmem.h"
#include "policy.h"
#include "internal.h"
#include "pool.h"
#include "trace.h"

#include <stdlib.h>
#include <string.h>

#define CK_PREFETCH_DEFAULT ((uint64_t)256 << 20)
#define CK_MAX_TAGS 65535u

typedef struct ck_tmeta {
    ck_block *b;
    uint16_t tag;
    uint8_t tier;      /* as tagged */
    uint8_t applied;   /* what the last stash did (AUTO: what it chose) */
    uint8_t state;     /* ck_tensor_state */
    uint8_t stashed;
    uint8_t prefetched; /* brought back by a prefetch, not yet fetched */
    uint8_t auto_kept;  /* AUTO, left resident at the stash: evictable under pressure */
    uint8_t has_recipe, has_sum;
    uint16_t busy;      /* fetches under way that need it resident (nested: a count) */
    ck_stream sstream;  /* the stream of the last stash */
    uint32_t stashes;   /* stashes so far */
    ck_recipe recipe;
    uintptr_t in_block[CK_MAX_INPUTS]; /* the live block input i lay in (0: outside the pool) */
    uint8_t in_stale;   /* bit i: input i's block was freed since ck_set_recipe */
    uint8_t on_rlist;   /* on the engine's list of tensors with a recipe */
    struct ck_tmeta *rprev, *rnext;
    void *host;         /* the host copy (offload), while it is needed */
    size_t host_cap;
    ck_event ev;        /* the end of the work in flight (moving list), or NULL */
    ck_event sev;       /* resident and stashed: nothing may release its memory before
                           this passes (the stash point, or the last replay reading it) */
    uint64_t sum;       /* verify: checksum at the stash */
    size_t sum_bytes;   /* over this many bytes: the allocation, or a recipe's result */
    size_t recipe_bytes; /* the recipe's result (ck_set_recipe) */
    uint64_t stash_seq;
    struct ck_tmeta *sprev, *snext;
    struct ck_tmeta *mprev, *mnext;
    uint8_t on_moving;
} ck_tmeta;

typedef struct ck_hdefer { /* a host buffer a copy may still use */
    void *host;
    size_t cap;
    ck_event ev;
} ck_hdefer;

struct ck_tier_engine {
    ck_stream copy; /* the copy stream, made at the first offload */
    ck_tmeta *s_head, *s_tail; /* stashed, oldest first */
    ck_tmeta *moving;
    ck_tmeta *recipes; /* tensors with a recipe (their inputs' frees mark them) */
    ck_hdefer *defer;
    size_t ndefer, cap_defer;
    uint64_t stash_seq;
    int in_step;
    uint64_t steps;
    uint64_t released; /* bytes of live tensors offloaded or dropped */
    uint64_t prefetch;
    char **names; /* tag id - 1 -> name */
    size_t nnames, cap_names;
    uint32_t *nhash; /* open addressing: id, 0 = empty */
    size_t nhmask;
    ck_hostmem host;
    void *scratch;
    size_t scratch_cap;
    /* Learning across steps (AUTO), by tag id: evicted[id] bit 0 = evicted
     * under pressure in this step, bit 1 = in the last completed one. */
    uint8_t *evicted;
    size_t cap_evicted;
    uint64_t step_bytes;      /* bytes stashed so far in this step */
    uint64_t last_step_bytes; /* bytes stashed in the last completed step */
    uint64_t step_resident;   /* the most resident live bytes seen at a stash this step */
    /* Timed spans on consumer streams (a fetch's waits and replays): a
     * timing event before and after, read once the stream has passed. */
    struct ck_tspan {
        ck_event a, z;
        int replay; /* its ns go to replay_ns, else to fetch_wait_ns */
    } spans[64];
    size_t nspans;
    ck_event tev[128]; /* idle timing events */
    size_t ntev;
    /* A policy file (policy/policy.c): its rules give AUTO tags a tier. */
    ck_policy *policy;
    uint8_t *ptier; /* by tag id: 0 = not looked up yet, else the rule's tier + 1 */
    size_t cap_ptier;
    ck_evict_order eviction;
};

static const char *const tier_names[] = {"auto", "keep", "offload", "recompute"};
static const char *const state_names[] = {"resident", "moving_out", "offloaded", "dropped",
                                          "coming_back"};

CK_API const char *ck_tier_name(ck_tier t) {
    return (unsigned)t < 4 ? tier_names[t] : "?";
}

CK_API const char *ck_tensor_state_name(ck_tensor_state s) {
    return (unsigned)s < 5 ? state_names[s] : "?";
}

/* ---- tag names ---------------------------------------------------------- */

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int names_rehash(struct ck_tier_engine *T, size_t n) {
    uint32_t *t = calloc(n, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < T->nnames; i++) {
        size_t k = name_hash(T->names[i]) & (n - 1);
        while (t[k]) k = (k + 1) & (n - 1);
        t[k] = (uint32_t)(i + 1);
    }
    free(T->nhash);
    T->nhash = t;
    T->nhmask = n - 1;
    return 0;
}

/* The id of name, added if new; 0 when out of host memory or ids. */
static uint16_t name_id(struct ck_tier_engine *T, const char *name) {
    if (T->nhash) {
        for (size_t k = name_hash(name) & T->nhmask; T->nhash[k]; k = (k + 1) & T->nhmask)
            if (strcmp(T->names[T->nhash[k] - 1], name) == 0) return (uint16_t)T->nhash[k];
    }
    if (T->nnames >= CK_MAX_TAGS) return 0;
    if (!T->nhash || (T->nnames + 1) * 2 > T->nhmask + 1) {
        if (names_rehash(T, T->nhash ? (T->nhmask + 1) * 2 : 64) != 0) return 0;
    }
    if (ck__grow_array(&T->names, &T->cap_names, T->nnames, sizeof *T->names, 16) != 0) return 0;
    char *c = strdup(name);
    if (!c) return 0;
    T->names[T->nnames++] = c;
    size_t k = name_hash(name) & T->nhmask;
    while (T->nhash[k]) k = (k + 1) & T->nhmask;
    T->nhash[k] = (uint32_t)T->nnames;
    return (uint16_t)T->nnames;
}

const char *ck__tier_tag_name(const ck_pool *p, uint16_t t) {
    if (!p->tier || t == 0 || t > p->tier->nnames) return "";
    return p->tier->names[t - 1];
}

void ck__tier_host_info(ck_pool *p, ck_host_info *out) {
    memset(out, 0, sizeof *out);
    out->allocator = "none yet";
    out->why = out->numa_why = "";
    out->numa = -1;
    if (!p->tier) return;
    const ck_hostmem *h = &p->tier->host;
    out->allocator = ck__host_allocator(h, &out->why);
    out->numa = h->numa;
    out->numa_why = h->numa_why;
    out->pins = h->pins;
    out->held = h->held;
}

size_t ck__tier_tag_count(const ck_pool *p) { return p->tier ? p->tier->nnames : 0; }

uint64_t ck__tier_released_bytes(const ck_pool *p) { return p->tier ? p->tier->released : 0; }

/* ---- the engine --------------------------------------------------------- */

/* The pool's own prefetch window (config key prefetch). */
static uint64_t pool_prefetch(const ck_pool *p) {
    return p->opts.prefetch == UINT64_MAX ? CK_PREFETCH_DEFAULT : p->opts.prefetch;
}

static struct ck_tier_engine *engine(ck_pool *p) {
    if (p->tier) return p->tier;
    struct ck_tier_engine *T = calloc(1, sizeof *T);
    if (!T) return NULL;
    T->prefetch = pool_prefetch(p);
    ck__host_init(p, &T->host);
    p->tier = T;
    return T;
}

static ck_status copy_stream(ck_pool *p, ck_stream *out) {
    struct ck_tier_engine *T = p->tier;
    if (!T->copy) {
        ck_status st = p->be->ops->stream_create(p->be, &T->copy);
        if (st != CK_OK) return st;
    }
    *out = T->copy;
    return CK_OK;
}

static const char *tname(const ck_pool *p, const ck_tmeta *m) { return ck__tier_tag_name(p, m->tag); }

/* The tier the policy's rules give m's tag (CK_TIER_AUTO: no policy, no
 * match), looked up once per tag name. */
static ck_tier policy_tier(ck_pool *p, const ck_tmeta *m) {
    struct ck_tier_engine *T = p->tier;
    if (!T->policy || !m->tag) return CK_TIER_AUTO;
    if (m->tag >= T->cap_ptier) {
        size_t nc = T->cap_ptier ? T->cap_ptier : 64;
        while (nc <= m->tag) nc *= 2;
        uint8_t *np = realloc(T->ptier, nc);
        if (!np) return ck__policy_match(T->policy, ck__tier_tag_name(p, m->tag));
        memset(np + T->cap_ptier, 0, nc - T->cap_ptier);
        T->ptier = np;
        T->cap_ptier = nc;
    }
    if (!T->ptier[m->tag])
        T->ptier[m->tag] = (uint8_t)(ck__policy_match(T->policy, ck__tier_tag_name(p, m->tag)) + 1);
    return (ck_tier)(T->ptier[m->tag] - 1);
}

/* The tier m asks for: its tag's, or for AUTO the policy's rule (still
 * AUTO when no rule matches). */
static ck_tier wanted_tier(ck_pool *p, const ck_tmeta *m) {
    return m->tier == CK_TIER_AUTO ? policy_tier(p, m) : (ck_tier)m->tier;
}

static void stash_add(struct ck_tier_engine *T, ck_tmeta *m) {
    m->stash_seq = ++T->stash_seq;
    m->snext = NULL;
    m->sprev = T->s_tail;
    if (T->s_tail) T->s_tail->snext = m;
    else T->s_head = m;
    T->s_tail = m;
    m->stashed = 1;
}

static void stash_del(struct ck_tier_engine *T, ck_tmeta *m) {
    if (!m->stashed) return;
    if (m->sprev) m->sprev->snext = m->snext;
    else T->s_head = m->snext;
    if (m->snext) m->snext->sprev = m->sprev;
    else T->s_tail = m->sprev;
    m->sprev = m->snext = NULL;
    m->stashed = 0;
    m->prefetched = 0;
}

static void rlist_set(struct ck_tier_engine *T, ck_tmeta *m, int on) {
    if (on == m->on_rlist) return;
    if (on) {
        m->rprev = NULL;
        m->rnext = T->recipes;
        if (T->recipes) T->recipes->rprev = m;
        T->recipes = m;
    } else {
        if (m->rprev) m->rprev->rnext = m->rnext;
        else T->recipes = m->rnext;
        if (m->rnext) m->rnext->rprev = m->rprev;
        m->rprev = m->rnext = NULL;
    }
    m->on_rlist = (uint8_t)on;
}

static void moving_add(struct ck_tier_engine *T, ck_tmeta *m, ck_event ev) {
    m->ev = ev;
    m->mprev = NULL;
    m->mnext = T->moving;
    if (T->moving) T->moving->mprev = m;
    T->moving = m;
    m->on_moving = 1;
}

static void moving_del(struct ck_tier_engine *T, ck_tmeta *m) {
    if (!m->on_moving) return;
    if (m->mprev) m->mprev->mnext = m->mnext;
    else T->moving = m->mnext;
    if (m->mnext) m->mnext->mprev = m->mprev;
    m->mprev = m->mnext = NULL;
    m->on_moving = 0;
}

/* Move m to state s, keeping the per-state byte counters. */
static void set_state(ck_pool *p, ck_tmeta *m, ck_tensor_state s) {
    int64_t n = (int64_t)m->b->size;
    struct ck_tier_engine *T = p->tier;
    switch ((ck_tensor_state)m->state) {
    case CK_TENSOR_OFFLOADED: ck__stat_add(&p->c->offloaded_bytes, -n); T->released -= (uint64_t)n; break;
    case CK_TENSOR_DROPPED: ck__stat_add(&p->c->dropped_bytes, -n); T->released -= (uint64_t)n; break;
    case CK_TENSOR_MOVING_OUT:
    case CK_TENSOR_COMING_BACK: ck__stat_add(&p->c->moving_bytes, -n); break;
    case CK_TENSOR_RESIDENT: break;
    }
    switch (s) {
    case CK_TENSOR_OFFLOADED: ck__stat_add(&p->c->offloaded_bytes, n); T->released += (uint64_t)n; break;
    case CK_TENSOR_DROPPED: ck__stat_add(&p->c->dropped_bytes, n); T->released += (uint64_t)n; break;
    case CK_TENSOR_MOVING_OUT:
    case CK_TENSOR_COMING_BACK: ck__stat_add(&p->c->moving_bytes, n); break;
    case CK_TENSOR_RESIDENT: break;
    }
    m->state = (uint8_t)s;
    uint64_t bits = ck__ring_tierbits(p->c->offloaded_bytes.current, p->c->dropped_bytes.current);
    if (bits != p->ring_tierbits) {
        p->ring_tierbits = bits;
        ck__ring_push(p, CK_RING_TIER, m->b->addr, m->b->size, m->sstream);
    }
}

/* A host buffer goes back to the cache once ev passes (ev NULL: now). */
static void host_release(ck_pool *p, void *host, size_t cap, ck_event ev) {
    struct ck_tier_engine *T = p->tier;
    if (!host) return;
    if (ev && !ck__event_passed(p, ev, 0)) {
        if (ck__grow_array(&T->defer, &T->cap_defer, T->ndefer, sizeof *T->defer, 16) == 0) {
            T->defer[T->ndefer++] = (ck_hdefer){host, cap, ev};
            return;
        }
        ck__event_passed(p, ev, 1); /* no room to remember it: wait */
    }
    if (ev) ck__event_put(p, ev);
    ck__host_put(p, &T->host, host, cap);
}

/* A fresh event after everything queued so far on the copy stream. */
static ck_event copy_fence(ck_pool *p) {
    ck_event e = NULL;
    if (p->tier->copy && ck__event_record(p, p->tier->copy, &e) != CK_OK) {
        p->be->ops->stream_sync(p->be, p->tier->copy);
        e = NULL;
    }
    return e;
}

static void defer_poll(ck_pool *p, int wait) {
    struct ck_tier_engine *T = p->tier;
    for (size_t i = 0; i < T->ndefer;) {
        if (ck__event_passed(p, T->defer[i].ev, wait)) {
            ck__event_put(p, T->defer[i].ev);
            ck__host_put(p, &T->host, T->defer[i].host, T->defer[i].cap);
            T->defer[i] = T->defer[--T->ndefer];
        } else {
            i++;
        }
    }
}

/* ---- checksums (verify=1) ----------------------------------------------- */

static uint64_t checksum(const void *data, size_t n) {
    const unsigned char *s = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

/* Checksum n bytes of device memory at dev, after the work queued on
 * `after` (a stream): copied to a scratch buffer on the copy stream, and
 * waited for. */
static ck_status device_checksum(ck_pool *p, const void *dev, size_t n, ck_stream after,
                                 uint64_t *out) {
    struct ck_tier_engine *T = p->tier;
    if (T->scratch_cap < n) {
        void *s = realloc(T->scratch, n);
        if (!s) return ck__err(CK_ERR_NOMEM, "verify: out of host memory for a %zu-byte check", n);
        T->scratch = s;
        T->scratch_cap = n;
    }
    ck_stream cs;
    ck_status st = copy_stream(p, &cs);
    ck_event e = NULL;
    if (st == CK_OK && after != cs) {
        st = ck__event_record(p, after, &e);
        if (st == CK_OK) st = p->be->ops->stream_wait_event(p->be, cs, e);
        if (e) ck__event_put(p, e);
    }
    if (st == CK_OK) st = p->be->ops->memcpy_async(p->be, T->scratch, dev, n, cs);
    if (st == CK_OK) st = p->be->ops->stream_sync(p->be, cs);
    if (st == CK_OK) *out = checksum(T->scratch, n);
    return st;
}

/* ---- finishing work in flight ------------------------------------------- */

/* m's work in flight has passed: a stash releases the memory, a fetch's
 * tensor is resident. */
static void finish(ck_pool *p, ck_tmeta *m) {
    struct ck_tier_engine *T = p->tier;
    moving_del(T, m);
    if (m->ev) ck__event_put(p, m->ev);
    m->ev = NULL;
    if (m->state == CK_TENSOR_COMING_BACK) {
        set_state(p, m, CK_TENSOR_RESIDENT);
        if (m->host && !m->stashed) { /* fetched, and its copy in is done */
            ck__host_put(p, &T->host, m->host, m->host_cap);
            m->host = NULL;
        }
        return;
    }
    /* Moving out: the copy (or the producer stream) has passed the stash. */
    if (p->opts.verify && !m->has_sum) {
        if (m->applied == CK_TIER_OFFLOAD) {
            m->sum = checksum(m->host, m->b->size);
            m->sum_bytes = m->b->size;
            m->has_sum = 1;
        } else if (device_checksum(p, (void *)m->b->addr, m->recipe_bytes, T->copy, &m->sum) == CK_OK) {
            /* only what the recipe writes comes back */
            m->sum_bytes = m->recipe_bytes;
            m->has_sum = 1;
        }
    }
    size_t got = 0;
    ck__evict_locked(p, m->b, &got);
    set_state(p, m, m->applied == CK_TIER_OFFLOAD ? CK_TENSOR_OFFLOADED : CK_TENSOR_DROPPED);
}

/* ---- timed spans ---------------------------------------------------------
 * The engine's own events skip timing (cheaper on a GPU); these are made
 * with timing. A failure to record one only loses the measurement. */

static ck_event tev_get(ck_pool *p) {
    struct ck_tier_engine *T = p->tier;
    if (T->ntev) return T->tev[--T->ntev];
    ck_event e = NULL;
    if (p->be->ops->event_create(p->be, &e) != CK_OK) {
        ck__clear_error();
        return NULL;
    }
    return e;
}

static void tev_put(ck_pool *p, ck_event e) {
    struct ck_tier_engine *T = p->tier;
    if (!e) return;
    if (T->ntev < sizeof T->tev / sizeof *T->tev) T->tev[T->ntev++] = e;
    else p->be->ops->event_destroy(p->be, e);
}

/* Record the start of a span on s; NULL when it cannot be measured. */
static ck_event span_begin(ck_pool *p, ck_stream s) {
    struct ck_tier_engine *T = p->tier;
    if (T->nspans == sizeof T->spans / sizeof *T->spans) return NULL;
    ck_event a = tev_get(p);
    if (a && p->be->ops->event_record(p->be, a, s) != CK_OK) {
        ck__clear_error();
        tev_put(p, a);
        a = NULL;
    }
    return a;
}

/* End the span begun with a on s: its time is counted when s passes.
 * (Counters are named when counted: p->c moves when live stats detach.) */
static void span_end(ck_pool *p, ck_event a, ck_stream s, int replay) {
    struct ck_tier_engine *T = p->tier;
    if (!a) return;
    ck_event z = tev_get(p);
    if (z && p->be->ops->event_record(p->be, z, s) == CK_OK &&
        T->nspans < sizeof T->spans / sizeof *T->spans) {
        T->spans[T->nspans++] = (struct ck_tspan){a, z, replay};
        return;
    }
    ck__clear_error();
    tev_put(p, a);
    tev_put(p, z);
}

/* Count the spans whose streams have passed (all of them with wait). */
static void spans_poll(ck_pool *p, int wait) {
    struct ck_tier_engine *T = p->tier;
    size_t k = 0;
    for (size_t i = 0; i < T->nspans; i++) {
        struct ck_tspan *sp = &T->spans[i];
        ck_status st = wait ? p->be->ops->event_sync(p->be, sp->z) : p->be->ops->event_query(p->be, sp->z);
        if (st == CK_ERR_NOT_READY) {
            T->spans[k++] = *sp;
            continue;
        }
        float ms = 0;
        uint64_t *into = sp->replay ? &p->c->replay_ns : &p->c->fetch_wait_ns;
        if (st == CK_OK && p->be->ops->event_elapsed(p->be, sp->a, sp->z, &ms) == CK_OK && ms > 0)
            ck__cnt_set(into, *into + (uint64_t)((double)ms * 1e6 + 0.5));
        ck__clear_error();
        tev_put(p, sp->a);
        tev_put(p, sp->z);
    }
    T->nspans = k;
}

void ck__tier_count_spans(ck_pool *p) {
    if (p->tier && p->tier->nspans) spans_poll(p, 0);
}

static void poll(ck_pool *p, int wait) {
    struct ck_tier_engine *T = p->tier;
    spans_poll(p, wait);
    for (ck_tmeta *m = T->moving; m;) {
        ck_tmeta *nx = m->mnext;
        if (!m->ev || ck__event_passed(p, m->ev, wait)) finish(p, m);
        m = nx;
    }
    defer_poll(p, wait);
}

/* An AUTO tensor had to be evicted under pressure: the next step stashes
 * it eagerly instead (no stall). */
static void learn_evicted(struct ck_tier_engine *T, uint16_t tag) {
    if (tag >= T->cap_evicted) {
        size_t cap = T->cap_evicted ? T->cap_evicted : 64;
        while (cap <= tag) cap *= 2;
        uint8_t *e = realloc(T->evicted, cap);
        if (!e) return;
        memset(e + T->cap_evicted, 0, cap - T->cap_evicted);
        T->evicted = e;
        T->cap_evicted = cap;
    }
    T->evicted[tag] |= 1;
}

static int learned_evicted(const struct ck_tier_engine *T, uint16_t tag) {
    return tag < T->cap_evicted && (T->evicted[tag] & 2);
}

static ck_status check_inputs(ck_pool *p, ck_tmeta *m);

/* Queue m's copy out into a new host buffer on the copy stream (after the
 * work queued so far on `after` when order is set); *done gets the copy's
 * end. On failure m keeps no buffer (it goes back once the copy stream
 * passes whatever was queued). */
static ck_status copy_out(ck_pool *p, ck_tmeta *m, int order, ck_stream after, ck_event *done) {
    ck_stream cs;
    void *h = NULL;
    size_t cap = 0;
    *done = NULL;
    ck_status st = copy_stream(p, &cs);
    if (st == CK_OK) st = ck__host_get(p, &p->tier->host, m->b->size, &h, &cap);
    if (st == CK_OK && order) {
        ck_event start = NULL;
        st = ck__event_record(p, after, &start);
        if (st == CK_OK) st = p->be->ops->stream_wait_event(p->be, cs, start);
        if (start) ck__event_put(p, start);
    }
    if (st == CK_OK) st = p->be->ops->memcpy_async(p->be, h, (void *)m->b->addr, m->b->size, cs);
    if (st == CK_OK) st = ck__event_record(p, cs, done);
    if (st != CK_OK) {
        if (h) host_release(p, h, cap, copy_fence(p));
        return st;
    }
    m->host = h;
    m->host_cap = cap;
    ck__cnt_set(&p->c->bytes_to_host, p->c->bytes_to_host + m->b->size);
    return CK_OK;
}

/* Evict one resident stashed tensor (prefetched, or AUTO left resident):
 * its data goes to host memory first unless a host copy or a recipe can
 * bring it back. Waits for the copy. Returns the bytes released. */
static size_t evict_resident(ck_pool *p, ck_tmeta *m) {
    if (m->ev) { /* a prefetch still in flight: let it land first */
        ck__event_passed(p, m->ev, 1);
        finish(p, m);
    }
    if (m->sev) {
        ck__event_passed(p, m->sev, 1); /* the producer (or a replay) is done with it */
        ck__event_put(p, m->sev);
        m->sev = NULL;
    }
    /* The tier asked for: a recipe rebuilds only a RECOMPUTE (or AUTO)
     * tensor; an OFFLOAD one is copied out even when it has a recipe. */
    int rebuild = m->has_recipe && wanted_tier(p, m) != CK_TIER_OFFLOAD && check_inputs(p, m) == CK_OK;
    ck__clear_error();
    if (!m->host && !rebuild) {
        /* The producer is done with it (waited for above): copy now. */
        ck_event e;
        if (copy_out(p, m, 0, NULL, &e) != CK_OK) return 0;
        ck__event_passed(p, e, 1);
        ck__event_put(p, e);
        m->applied = CK_TIER_OFFLOAD;
        if (p->opts.verify) {
            m->sum = checksum(m->host, m->b->size);
            m->sum_bytes = m->b->size;
            m->has_sum = 1;
        }
    } else if (!m->host) {
        m->applied = CK_TIER_RECOMPUTE;
        if (p->opts.verify && !m->has_sum &&
            device_checksum(p, (void *)m->b->addr, m->recipe_bytes, p->tier->copy, &m->sum) == CK_OK) {
            m->sum_bytes = m->recipe_bytes;
            m->has_sum = 1;
        }
    } else {
        m->applied = CK_TIER_OFFLOAD;
    }
    size_t got = 0;
    if (ck__evict_locked(p, m->b, &got) != CK_OK) return 0;
    ck__cnt_inc(&p->c->num_evictions);
    if (m->auto_kept) learn_evicted(p->tier, m->tag);
    m->prefetched = 0;
    m->auto_kept = 0;
    set_state(p, m, m->applied == CK_TIER_OFFLOAD ? CK_TENSOR_OFFLOADED : CK_TENSOR_DROPPED);
    return got;
}

/* A stashed tensor pressure may evict: resident, not being rebuilt from,
 * and in pass 0 prefetched, in pass 1 left resident (AUTO, kept tail). */
static int evictable(const ck_tmeta *m, int pass) {
    return !m->busy && m->state == CK_TENSOR_RESIDENT && (pass == 0 ? m->prefetched : m->auto_kept);
}

size_t ck__tier_reclaim(ck_pool *p, size_t need) {
    struct ck_tier_engine *T = p->tier;
    if (!T) return 0;
    uint64_t before = (uint64_t)p->c->physical_bytes.current;
    poll(p, 1);
    size_t got = before > (uint64_t)p->c->physical_bytes.current
                     ? (size_t)(before - (uint64_t)p->c->physical_bytes.current)
                     : 0;
    /* Prefetched tensors first, then those AUTO left resident; the deepest
     * (stashed earliest, needed last) first. KEEP is never touched. */
    for (int pass = 0; pass < 2 && got < need; pass++) {
        if (T->eviction == CK_EVICT_LARGEST) {
            /* The policy's eviction: largest: the biggest candidate first,
             * so fewer tensors make the room. */
            for (;;) {
                ck_tmeta *best = NULL;
                for (ck_tmeta *m = T->s_head; m; m = m->snext)
                    if (evictable(m, pass) && (!best || m->b->size > best->b->size)) best = m;
                if (!best || got >= need) break;
                size_t g = evict_resident(p, best);
                if (!g && best->state == CK_TENSOR_RESIDENT) break; /* it cannot go: stop */
                got += g;
            }
            continue;
        }
        for (ck_tmeta *m = T->s_head; m && got < need; m = m->snext)
            if (evictable(m, pass)) got += evict_resident(p, m);
    }
    return got;
}

/* ---- fetching ----------------------------------------------------------- */

static size_t shape_bytes(const ck_tensor *t) {
    size_t n = ck_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    return n;
}

/* How fetch_one brings a tensor back: for the caller (who waits and takes
 * it), as a recipe input (s waits, it stays stashed), or as a prefetch
 * (nothing waits yet: its own fetch will). */
enum { FETCH_OWN = 0, FETCH_INPUT = 1, FETCH_PREFETCH = 2 };
static ck_status fetch_one(ck_pool *p, ck_tmeta *m, ck_stream s, int depth, int how);

/* The recipe's inputs, checked live and the same allocations as at
 * ck_set_recipe, and brought back when stashed. */
static ck_block *input_block(ck_pool *p, ck_tmeta *m, int i) {
    const char *why = "";
    ck_block *ib = ck__span_block(p, m->recipe.inputs[i].data, shape_bytes(&m->recipe.inputs[i]), &why);
    return ib && ib->addr == m->in_block[i] && !(m->in_stale & (1u << i)) ? ib : NULL;
}

static ck_status check_inputs(ck_pool *p, ck_tmeta *m) {
    for (int i = 0; i < m->recipe.n_inputs; i++)
        if (m->in_block[i] && !input_block(p, m, i))
            return ck__err(CK_ERR_NOT_OWNED,
                           "ck_fetch: tensor '%s' (%p) cannot be recomputed: recipe input %d (%p) "
                           "was freed after ck_set_recipe",
                           tname(p, m), (void *)m->b->addr, i, m->recipe.inputs[i].data);
    return CK_OK;
}

/* check_inputs over the recipe chain: a dropped stashed input must be
 * rebuildable too, or the whole fetch is refused before anything is mapped. */
static ck_status check_chain(ck_pool *p, ck_tmeta *m, int depth) {
    ck_status st = check_inputs(p, m);
    for (int i = 0; st == CK_OK && i < m->recipe.n_inputs && depth < 16; i++) {
        ck_block *ib = m->in_block[i] ? input_block(p, m, i) : NULL;
        if (ib && ib->tm && ib->tm->stashed && ib->tm->state == CK_TENSOR_DROPPED && ib->tm->has_recipe)
            st = check_chain(p, ib->tm, depth + 1);
    }
    return st;
}

/* Mark m's tagged inputs busy (no eviction) while m is being rebuilt. */
static void inputs_busy(ck_pool *p, ck_tmeta *m, int on) {
    for (int i = 0; i < m->recipe.n_inputs; i++) {
        ck_block *ib = m->in_block[i] ? input_block(p, m, i) : NULL;
        if (ib && ib->tm) ib->tm->busy = (uint16_t)(ib->tm->busy + (on ? 1 : -1));
    }
}

/* The replay on s reads m's inputs: a stashed input's memory may not be
 * released before s passes this point. */
static void inputs_read_until(ck_pool *p, ck_tmeta *m, ck_stream s) {
    for (int i = 0; i < m->recipe.n_inputs; i++) {
        ck_block *ib = m->in_block[i] ? input_block(p, m, i) : NULL;
        if (!ib || !ib->tm || !ib->tm->stashed) continue;
        ck_event e;
        if (ck__event_record(p, s, &e) != CK_OK) {
            p->be->ops->stream_sync(p->be, s);
            continue;
        }
        if (ib->tm->sev) ck__event_put(p, ib->tm->sev);
        ib->tm->sev = e;
    }
}

static ck_status fetch_inputs(ck_pool *p, ck_tmeta *m, ck_stream s, int depth) {
    for (int i = 0; i < m->recipe.n_inputs; i++) {
        if (!m->in_block[i]) continue;
        const char *why = "";
        ck_block *ib = ck__span_block(p, m->recipe.inputs[i].data, shape_bytes(&m->recipe.inputs[i]), &why);
        if (ib && ib->tm && ib->tm->stashed && ib->tm->state != CK_TENSOR_RESIDENT &&
            ib->tm->state != CK_TENSOR_COMING_BACK) {
            if (depth > 16)
                return ck__err(CK_ERR_INVALID, "ck_fetch: tensor '%s': recipes nest deeper than 16",
                               tname(p, m));
            ck_status st = fetch_one(p, ib->tm, s, depth + 1, FETCH_INPUT);
            if (st != CK_OK) return st;
        } else if (ib && ib->tm && ib->tm->ev && ib->tm->state == CK_TENSOR_COMING_BACK) {
            ck_status st = p->be->ops->stream_wait_event(p->be, s, ib->tm->ev);
            if (st != CK_OK) return st;
        } else if (ib && ib->tm && ib->tm->stashed && ib->tm->sev) {
            /* Resident and stashed: the replay reads it after its producer
             * is done with it. */
            ck_status st = p->be->ops->stream_wait_event(p->be, s, ib->tm->sev);
            if (st != CK_OK) return st;
        }
    }
    return CK_OK;
}

/* Bring m back on stream s. keep_stashed: a prefetch or a recipe input
 * (the tensor stays stashed, marked prefetched, so the caller's own fetch
 * finds it). */
static ck_status fetch_one(ck_pool *p, ck_tmeta *m, ck_stream s, int depth, int how) {
    int keep_stashed = how != FETCH_OWN;
    struct ck_tier_engine *T = p->tier;
    ck_status st = CK_OK;
    switch ((ck_tensor_state)m->state) {
    case CK_TENSOR_RESIDENT:
        /* Never left: s waits for the stash point, so it sees what the
         * producer stream wrote before the stash (KEEP records none: on
         * another stream, one is recorded now, after the stash). */
        if (m->sev) {
            st = p->be->ops->stream_wait_event(p->be, s, m->sev);
        } else if (m->sstream != s && ck__stream_alive(p, m->sstream)) {
            ck_event e;
            st = ck__event_record(p, m->sstream, &e);
            if (st == CK_OK) {
                st = p->be->ops->stream_wait_event(p->be, s, e);
                ck__event_put(p, e);
            }
        }
        break;
    case CK_TENSOR_COMING_BACK:
        if (m->ev) st = p->be->ops->stream_wait_event(p->be, s, m->ev);
        break;
    case CK_TENSOR_MOVING_OUT:
        /* The data is still in place: call the release off. A copy out may
         * still read it; its host buffer goes back once the copy ends. */
        moving_del(T, m);
        if (m->applied == CK_TIER_OFFLOAD && m->ev) {
            /* The copy out still reads the tensor: s waits for it, so
             * nothing queued on s from now on (a write, a free and the
             * reuse or release that follows it, a later stash) can meet
             * it. The host copy goes back once the copy ends. */
            st = p->be->ops->stream_wait_event(p->be, s, m->ev);
            host_release(p, m->host, m->host_cap, copy_fence(p));
            m->host = NULL;
        }
        /* A recompute's event is the stash point on the producer stream:
         * s waits for it too; a tensor that stays stashed keeps it for a
         * later eviction. */
        if (m->ev && m->applied != CK_TIER_OFFLOAD && st == CK_OK)
            st = p->be->ops->stream_wait_event(p->be, s, m->ev);
        if (m->ev && keep_stashed && !m->sev) m->sev = m->ev;
        else if (m->ev) ck__event_put(p, m->ev);
        m->ev = NULL;
        set_state(p, m, CK_TENSOR_RESIDENT);
        break;
    case CK_TENSOR_OFFLOADED:
    case CK_TENSOR_DROPPED: {
        int drop = m->state == CK_TENSOR_DROPPED;
        if (drop) st = check_chain(p, m, depth);
        if (st != CK_OK) return st;
        m->busy++;
        if (drop) inputs_busy(p, m, 1);
        st = ck__restore_locked(p, m->b);
        if (st == CK_OK && drop) st = fetch_inputs(p, m, s, depth);
        if (st != CK_OK) {
            if (!m->b->evicted) {
                size_t got;
                ck__evict_locked(p, m->b, &got);
            }
            if (drop) inputs_busy(p, m, 0);
            m->busy--;
            return st;
        }
        ck_event e = NULL;
        ck_stream queued = NULL; /* where a copy in or a replay is queued */
        int any = 0;
        if (m->state == CK_TENSOR_OFFLOADED) {
            ck_stream cs;
            st = copy_stream(p, &cs);
            if (st == CK_OK) st = p->be->ops->memcpy_async(p->be, (void *)m->b->addr, m->host, m->b->size, cs);
            if (st == CK_OK) queued = cs, any = 1;
            if (st == CK_OK) st = ck__event_record(p, cs, &e);
            /* A prefetch's consumer waits when it fetches the tensor. */
            if (st == CK_OK && how != FETCH_PREFETCH) st = p->be->ops->stream_wait_event(p->be, s, e);
            if (st == CK_OK) ck__cnt_set(&p->c->bytes_to_device, p->c->bytes_to_device + m->b->size);
        } else {
            ck_event t0 = span_begin(p, s);
            st = ck__replay_locked(p, &m->recipe, (void *)m->b->addr, m->b->size, s);
            if (st == CK_OK) queued = s, any = 1;
            if (st == CK_OK) span_end(p, t0, s, 1);
            else tev_put(p, t0);
            if (st == CK_OK) st = ck__event_record(p, s, &e);
            if (st == CK_OK) ck__cnt_inc(&p->c->num_replays);
            if (st == CK_OK) inputs_read_until(p, m, s);
            inputs_busy(p, m, 0);
        }
        m->busy--;
        if (st != CK_OK) {
            /* Nothing came back: the tensor stays where it was, once the
             * work already queued has stopped writing it. */
            if (e) {
                ck__event_passed(p, e, 1);
                ck__event_put(p, e);
            } else if (any) {
                p->be->ops->stream_sync(p->be, queued);
            }
            size_t got;
            ck__evict_locked(p, m->b, &got);
            return st;
        }
        /* The host copy goes back when the copy in has landed (finish). */
        set_state(p, m, CK_TENSOR_COMING_BACK);
        moving_add(T, m, e);
        break;
    }
    }
    if (st == CK_OK && keep_stashed) m->prefetched = 1;
    return st;
}

/* Start bringing back the tensors stashed just before m (LIFO), up to the
 * prefetch window, where the budget has room without evicting anything. */
static void prefetch_from(ck_pool *p, ck_tmeta *first, ck_stream s) {
    struct ck_tier_engine *T = p->tier;
    uint64_t window = T->prefetch, took = 0;
    for (ck_tmeta *q = first; q && window; q = q->sprev) {
        /* The window is the bytes ahead of this point, back already or not:
         * the walk stops there whatever the list's length. */
        if (took + q->b->size > window) break;
        if (q->state != CK_TENSOR_OFFLOADED) {
            /* Back already, on its way, or dropped: a recompute runs on the
             * consumer's stream, so bringing it early gains nothing. */
            took += q->b->size;
            continue;
        }
        /* Room without evicting anything: a restore maps the chunks under
         * the tensor, which may be one more than its size. */
        if ((uint64_t)p->c->physical_bytes.current + ck__align_up(q->b->size, p->gran) + p->gran >
            p->budget)
            break;
        if (fetch_one(p, q, s, 0, FETCH_PREFETCH) != CK_OK) {
            ck__clear_error();
            break;
        }
        took += q->b->size;
    }
}

/* ---- the public calls ----------------------------------------------------- */

/* CKALLOC_CHECK=1: the pool's invariants after each call, as after malloc/free. */
static void unlock_checked(ck_pool *p, const char *fn) {
    if (p->debug_check) ck__pool_check_or_abort(p, fn);
    pool_unlock(p);
}

/* Copies and events on a stream being captured into a CUDA graph would be
 * captured too (and pull the copy stream into the capture): refused. */
static ck_status not_capturing(ck_pool *p, ck_stream s, const char *fn) {
    int capturing = 0;
    if (p->be->ops->stream_capturing(p->be, s, &capturing) == CK_OK && capturing)
        return ck__err(CK_ERR_INVALID,
                       "%s: stream %p is capturing a CUDA graph; stash and fetch queue copies "
                       "and events, so call them outside the capture (or tag the tensor KEEP)",
                       fn, (void *)s);
    return CK_OK;
}

static ck_status tagged(ck_pool *p, void *ptr, const char *fn, ck_block **out) {
    ck_block *b;
    ck_status st = ck__live_block(p, ptr, fn, &b);
    if (st != CK_OK) return st;
    if (!b->tm) return ck__err(CK_ERR_INVALID, "%s: %p is not tagged (call ck_tag first)", fn, ptr);
    *out = b;
    return CK_OK;
}

CK_API ck_status ck_tag(ck_pool *p, void *ptr, const char *name, ck_tier tier) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_tag: pool is NULL");
    if (!name) return ck__err(CK_ERR_INVALID, "ck_tag: name is NULL");
    size_t len = strlen(name);
    if (len == 0 || len >= CK_TAG_MAX)
        return ck__err(CK_ERR_INVALID, "ck_tag: name '%.40s%s' is %s (1 to %d bytes)", name,
                       len > 40 ? "..." : "", len ? "too long" : "empty", CK_TAG_MAX - 1);
    for (const char *c = name; *c; c++)
        if (*c == ',' || *c == '|' || *c == '"' || (unsigned char)*c < 0x20 || *c == 0x7f)
            return ck__err(CK_ERR_INVALID,
                           "ck_tag: name '%.40s' has a comma, '|', a quote or a control character "
                           "(names go into trace files as CSV)",
                           name);
    if ((unsigned)tier > CK_TIER_RECOMPUTE)
        return ck__err(CK_ERR_INVALID, "ck_tag: tier %d is not a tier (AUTO, KEEP, OFFLOAD, RECOMPUTE)",
                       (int)tier);
    pool_lock(p);
    ck_block *b = NULL;
    ck_status st = ck__live_block(p, ptr, "ck_tag", &b);
    if (st == CK_OK && b->small)
        st = ck__err(CK_ERR_INVALID,
                     "ck_tag: %p is a small allocation (%zu bytes, 1 MiB or less) that shares its "
                     "page with others; only larger allocations can be tagged",
                     ptr, b->requested);
    if (st == CK_OK && b->tm && b->tm->stashed)
        st = ck__err(CK_ERR_INVALID, "ck_tag: '%s' (%p) is stashed; fetch it before tagging it again",
                     tname(p, b->tm), ptr);
    struct ck_tier_engine *T = st == CK_OK ? engine(p) : NULL;
    if (st == CK_OK && !T) st = ck__err(CK_ERR_NOMEM, "ck_tag: out of host memory");
    uint16_t id = 0;
    if (st == CK_OK && (id = name_id(T, name)) == 0)
        st = ck__err(CK_ERR_NOMEM, "ck_tag: cannot add tag name '%s' (out of host memory, or more "
                                   "than %u distinct names)", name, CK_MAX_TAGS);
    if (st == CK_OK && !b->tm) {
        ck_tmeta *m = calloc(1, sizeof *m);
        if (!m) st = ck__err(CK_ERR_NOMEM, "ck_tag: out of host memory");
        else {
            m->b = b;
            b->tm = m;
        }
    }
    if (st == CK_OK) {
        b->tm->tag = id;
        b->tm->tier = (uint8_t)tier;
        b->tag = id;
        b->tier_hook = 1;
        /* chunk_align=auto: later tensors start on a chunk, so a stash gives
         * back all of them but one shared chunk. */
        if (p->opts.chunk_align == 0 && p->align_min > CK_ALIGN_MIN) p->align_min = CK_ALIGN_MIN;
        if (p->trace) {
            char x[CK_TRACE_EXTRA_MAX];
            snprintf(x, sizeof x, "%s|%s", name, ck_tier_name(tier));
            ck__trace_add_extra(p->trace, CK_TRACE_TAG, b->addr, b->requested, 0, x);
        }
    }
    unlock_checked(p, "ck_tag");
    return st;
}

static void meta_free(ck_pool *p, ck_tmeta *m) {
    if (m->sev) ck__event_put(p, m->sev);
    free(m);
}

CK_API ck_status ck_untag(ck_pool *p, void *ptr) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_untag: pool is NULL");
    pool_lock(p);
    ck_block *b = NULL;
    ck_status st = tagged(p, ptr, "ck_untag", &b);
    if (st == CK_OK && b->tm->stashed)
        st = ck__err(CK_ERR_INVALID, "ck_untag: '%s' (%p) is stashed; fetch it first", tname(p, b->tm), ptr);
    if (st == CK_OK) {
        ck_tmeta *m = b->tm;
        if (m->on_moving) { /* a fetch's copy in may still be landing */
            if (m->ev) ck__event_passed(p, m->ev, 1);
            finish(p, m);
        }
        rlist_set(p->tier, m, 0);
        b->tm = NULL;
        b->tag = 0;
        meta_free(p, m);
    }
    unlock_checked(p, "ck_untag");
    return st;
}

CK_API ck_status ck_set_recipe(ck_pool *p, void *ptr, const ck_recipe *r) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_set_recipe: pool is NULL");
    size_t out_bytes = 0;
    if (r) {
        ck_status cst = ck_recipe_check(r, NULL, &out_bytes);
        if (cst != CK_OK) return cst;
    }
    pool_lock(p);
    ck_block *b = NULL;
    ck_status st = tagged(p, ptr, "ck_set_recipe", &b);
    if (st == CK_OK && b->tm->stashed)
        st = ck__err(CK_ERR_INVALID, "ck_set_recipe: '%s' (%p) is stashed; fetch it first",
                     tname(p, b->tm), ptr);
    if (st == CK_OK && r && out_bytes > b->size)
        st = ck__err(CK_ERR_INVALID,
                     "ck_set_recipe: the recipe writes %zu bytes but '%s' (%p) has %zu", out_bytes,
                     tname(p, b->tm), ptr, b->size);
    uintptr_t in_block[CK_MAX_INPUTS] = {0};
    ck_block *in_b[CK_MAX_INPUTS] = {0};
    for (int i = 0; st == CK_OK && r && i < r->n_inputs; i++) {
        const void *d = r->inputs[i].data;
        if (!ck__region_of(p, (uintptr_t)d)) continue; /* a foreign pointer (weights) */
        const char *why = "";
        ck_block *ib = ck__span_block(p, d, shape_bytes(&r->inputs[i]), &why);
        if (!ib)
            st = ck__err(CK_ERR_NOT_OWNED, "ck_set_recipe: input %d (%p) %s", i, d, why);
        else if (ib == b)
            st = ck__err(CK_ERR_INVALID,
                         "ck_set_recipe: input %d (%p) lies in '%s' itself; a recipe cannot read "
                         "the tensor it rebuilds",
                         i, d, tname(p, b->tm));
        else {
            in_block[i] = ib->addr;
            in_b[i] = ib;
        }
    }
    if (st == CK_OK) {
        ck_tmeta *m = b->tm;
        m->has_recipe = r != NULL;
        if (r) {
            m->recipe = *r;
            m->recipe_bytes = out_bytes;
            memcpy(m->in_block, in_block, sizeof in_block);
            m->in_stale = 0;
            /* Their frees must reach the engine, to mark this recipe. */
            for (int i = 0; i < r->n_inputs; i++)
                if (in_b[i]) in_b[i]->tier_hook = 1;
        }
        rlist_set(p->tier, m, r != NULL);
    }
    unlock_checked(p, "ck_set_recipe");
    return st;
}

/* Pressure at the stash for AUTO: the live tensors still on the device
 * (cached free memory does not count: the pool gives it back first) would
 * be within a tenth of the budget. */
static int near_budget(const ck_pool *p, size_t n) {
    uint64_t live = (uint64_t)p->c->allocated_bytes.current, rel = p->tier->released;
    uint64_t resident = live > rel ? live - rel : 0;
    return resident + n > p->budget - p->budget / 10;
}

CK_API ck_status ck_stash(ck_pool *p, void *ptr, ck_stream stream) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_stash: pool is NULL");
    pool_lock(p);
    uint32_t sidx;
    ck_block *b = NULL;
    ck_status st = ck__stream_lookup(p, stream, "ck_stash", &sidx);
    if (st == CK_OK) st = tagged(p, ptr, "ck_stash", &b);
    if (st == CK_OK && b->tm->stashed)
        st = ck__err(CK_ERR_INVALID, "ck_stash: '%s' (%p) is stashed already (fetch it first)",
                     tname(p, b->tm), ptr);
    if (st != CK_OK) {
        pool_unlock(p);
        return st;
    }
    struct ck_tier_engine *T = p->tier;
    ck_tmeta *m = b->tm;
    poll(p, 0);
    ck_tier t = wanted_tier(p, m);
    /* A policy rule's recompute needs a recipe (else offload). */
    if (t == CK_TIER_RECOMPUTE && m->tier == CK_TIER_AUTO && !m->has_recipe) t = CK_TIER_OFFLOAD;
    if (t == CK_TIER_RECOMPUTE && !m->has_recipe)
        st = ck__err(CK_ERR_INVALID, "ck_stash: '%s' (%p) is RECOMPUTE but has no recipe (ck_set_recipe)",
                     tname(p, m), ptr);
    /* A fetch still landing: the stash comes after it on the stream. */
    if (st == CK_OK && m->on_moving && m->ev) st = p->be->ops->stream_wait_event(p->be, stream, m->ev);
    if (st == CK_OK && m->on_moving) {
        if (m->host) { /* its copy in may still read it */
            host_release(p, m->host, m->host_cap, copy_fence(p));
            m->host = NULL;
        }
        finish(p, m);
    }
    int auto_keep = 0;
    /* The last prefetch window's bytes of forward, as the last step's
     * stashes tell them apart: backward needs them first, so sending them
     * out would only stall it (the transfer out and back at the turn). */
    uint64_t end = T->step_bytes + b->size; /* where this tensor ends in the step's stashes */
    int tail = T->in_step && T->last_step_bytes &&
               (end + T->prefetch > T->last_step_bytes || end == T->last_step_bytes);
    if (st == CK_OK && t == CK_TIER_AUTO) {
        /* Eager when the budget is near, or when the last step had to evict
         * this tag under pressure (not in the tail). */
        if (near_budget(p, b->size) || (learned_evicted(T, m->tag) && !tail))
            t = m->has_recipe ? CK_TIER_RECOMPUTE : CK_TIER_OFFLOAD;
        else auto_keep = 1;
    } else if (st == CK_OK && (t == CK_TIER_OFFLOAD || t == CK_TIER_RECOMPUTE) && T->prefetch && tail &&
               !near_budget(p, b->size)) {
        /* Prefetch's other half: the tail stays resident (evictable under
         * pressure like AUTO's, its tier applied then). */
        auto_keep = 1;
    }
    if (st == CK_OK && t != CK_TIER_KEEP) st = not_capturing(p, stream, "ck_stash");
    ck_event e = NULL;
    if (st == CK_OK && t == CK_TIER_OFFLOAD && !auto_keep) {
        st = copy_out(p, m, 1, stream, &e); /* after stream reaches the stash */
    } else if (st == CK_OK && (t == CK_TIER_RECOMPUTE || auto_keep)) {
        st = ck__event_record(p, stream, &e);
    }
    if (st == CK_OK) {
        m->applied = (uint8_t)(auto_keep ? CK_TIER_KEEP : t);
        m->has_sum = 0;
        m->auto_kept = (uint8_t)auto_keep;
        m->sstream = stream;
        m->stashes++;
        T->step_bytes += b->size;
        uint64_t live = (uint64_t)p->c->allocated_bytes.current;
        if (live - T->released > T->step_resident) T->step_resident = live - T->released;
        stash_add(T, m);
        ck__cnt_inc(&p->c->num_stashes);
        if (p->trace) ck__trace_add(p->trace, CK_TRACE_STASH, b->addr, b->requested, (uintptr_t)stream);
        if (auto_keep) {
            if (m->sev) ck__event_put(p, m->sev);
            m->sev = e;
        } else if (t == CK_TIER_OFFLOAD || t == CK_TIER_RECOMPUTE) {
            set_state(p, m, CK_TENSOR_MOVING_OUT);
            moving_add(T, m, e);
            if (ck__event_passed(p, e, 0)) finish(p, m);
        }
    }
    unlock_checked(p, "ck_stash");
    return st;
}

CK_API ck_status ck_fetch(ck_pool *p, void *ptr, ck_stream stream) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_fetch: pool is NULL");
    pool_lock(p);
    uint32_t sidx;
    ck_block *b = NULL;
    ck_status st = ck__stream_lookup(p, stream, "ck_fetch", &sidx);
    if (st == CK_OK) st = tagged(p, ptr, "ck_fetch", &b);
    if (st == CK_OK && !b->tm->stashed)
        st = ck__err(CK_ERR_INVALID, "ck_fetch: '%s' (%p) is not stashed (never stashed, or fetched already)",
                     tname(p, b->tm), ptr);
    if (st != CK_OK) {
        pool_unlock(p);
        return st;
    }
    struct ck_tier_engine *T = p->tier;
    ck_tmeta *m = b->tm;
    poll(p, 0);
    if (m->state != CK_TENSOR_RESIDENT) st = not_capturing(p, stream, "ck_fetch");
    if (st != CK_OK) {
        unlock_checked(p, "ck_fetch");
        return st;
    }
    if (m->prefetched) ck__cnt_inc(&p->c->prefetch_hits);
    else if (m->state == CK_TENSOR_OFFLOADED || m->state == CK_TENSOR_DROPPED)
        ck__cnt_inc(&p->c->prefetch_misses);
    /* What the consumer stream spends on this fetch: waiting for a copy in,
     * running replays (a tensor that never left costs nothing to time). */
    ck_event t0 = m->state != CK_TENSOR_RESIDENT ? span_begin(p, stream) : NULL;
    st = fetch_one(p, m, stream, 0, FETCH_OWN);
    if (st == CK_OK) span_end(p, t0, stream, 0);
    else tev_put(p, t0);
    int corrupt = 0;
    uint64_t now = 0;
    if (st == CK_OK && p->opts.verify && m->has_sum) {
        /* Before the tensor counts as fetched: a check that cannot run
         * fails this fetch, and the tensor stays stashed (it is back: a
         * retry finds it and checks again). */
        st = device_checksum(p, (void *)b->addr, m->sum_bytes, stream, &now);
        if (st != CK_OK) m->prefetched = 1;
        else corrupt = now != m->sum;
    }
    if (st == CK_OK) {
        if (m->host && m->state == CK_TENSOR_RESIDENT) {
            /* A prefetched offload kept its host copy in case it was evicted
             * again: done with now. (Still coming back: finish gives it back
             * when the copy in lands.) */
            ck__host_put(p, &T->host, m->host, m->host_cap);
            m->host = NULL;
        }
        if (m->sev) {
            ck__event_put(p, m->sev);
            m->sev = NULL;
        }
        ck_tmeta *prev = m->sprev;
        stash_del(T, m);
        m->auto_kept = 0;
        m->has_sum = 0;
        ck__cnt_inc(&p->c->num_fetches);
        if (p->trace) ck__trace_add(p->trace, CK_TRACE_FETCH, b->addr, b->requested, (uintptr_t)stream);
        if (corrupt)
            st = ck__err(CK_ERR_CORRUPT,
                         "ck_fetch: tensor '%s' (%p, %zu bytes) came back different from what "
                         "was stashed (checksum %016llx, expected %016llx; applied %s)",
                         tname(p, m), ptr, m->sum_bytes, (unsigned long long)now,
                         (unsigned long long)m->sum, ck_tier_name((ck_tier)m->applied));
        if (prev && T->prefetch) prefetch_from(p, prev, stream); /* LIFO: the ones stashed before m */
    }
    unlock_checked(p, "ck_fetch");
    return st;
}

CK_API ck_status ck_step_begin(ck_pool *p) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_step_begin: pool is NULL");
    pool_lock(p);
    struct ck_tier_engine *T = engine(p);
    ck_status st = CK_OK;
    if (!T) st = ck__err(CK_ERR_NOMEM, "ck_step_begin: out of host memory");
    else if (T->in_step)
        st = ck__err(CK_ERR_INVALID, "ck_step_begin: step %llu has not ended (call ck_step_end)",
                     (unsigned long long)T->steps + 1);
    else {
        T->in_step = 1;
        if (p->trace) ck__trace_add_extra(p->trace, CK_TRACE_STEP, 0, T->steps + 1, 0, "begin");
    }
    pool_unlock(p);
    return st;
}

CK_API ck_status ck_step_end(ck_pool *p) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_step_end: pool is NULL");
    pool_lock(p);
    struct ck_tier_engine *T = p->tier;
    ck_status st = CK_OK;
    if (!T || !T->in_step) st = ck__err(CK_ERR_INVALID, "ck_step_end: no step has begun (call ck_step_begin)");
    else {
        T->in_step = 0;
        T->steps++;
        if (p->trace) ck__trace_add_extra(p->trace, CK_TRACE_STEP, 0, T->steps, 0, "end");
        /* What this step learned joins what the next ones use; a step that
         * never came within half the budget forgets it all (the workload
         * shrank). */
        int forget = T->step_resident < p->budget / 2;
        for (size_t i = 0; i < T->cap_evicted; i++)
            T->evicted[i] = forget ? 0 : (uint8_t)((T->evicted[i] & 2) | ((T->evicted[i] & 1) << 1));
        T->step_resident = 0;
        T->last_step_bytes = T->step_bytes;
        T->step_bytes = 0;
        poll(p, 0);
    }
    pool_unlock(p);
    return st;
}

CK_API ck_status ck_tensor_info(ck_pool *p, const void *ptr, ck_tensor_status *out) {
    if (!p || !out)
        return ck__err(CK_ERR_INVALID, "ck_tensor_info: %s is NULL", p ? "out" : "pool");
    size_t n = out->struct_size;
    if (n < sizeof(size_t) || n > sizeof(ck_tensor_status))
        return ck__err(CK_ERR_INVALID,
                       "ck_tensor_info: struct_size %zu is not one this library knows (set it to "
                       "sizeof(ck_tensor_status))",
                       n);
    pool_lock(p);
    ck_block *b = NULL;
    ck_status st = tagged(p, (void *)ptr, "ck_tensor_info", &b);
    ck_tensor_status s;
    memset(&s, 0, sizeof s);
    if (st == CK_OK) {
        poll(p, 0);
        ck_tmeta *m = b->tm;
        snprintf(s.name, sizeof s.name, "%s", tname(p, m));
        s.tier = (ck_tier)m->tier;
        s.applied = m->stashes ? (ck_tier)m->applied : CK_TIER_AUTO;
        s.state = (ck_tensor_state)m->state;
        s.stashed = m->stashed;
        s.has_recipe = m->has_recipe;
        s.size = b->size;
        s.device_bytes = b->evicted ? 0 : b->size;
    }
    pool_unlock(p);
    if (st == CK_OK) {
        s.struct_size = n;
        memcpy(out, &s, n);
    }
    return st;
}

/* ---- the pool's hooks ----------------------------------------------------- */

uint32_t ck__tier_on_free(ck_pool *p, ck_block *b, ck_event *ev) {
    struct ck_tier_engine *T = p->tier;
    uint32_t n = 0;
    b->tier_hook = 0;
    if (!T) return 0;
    /* Recipes that read this block can no longer be run. */
    for (ck_tmeta *r = T->recipes; r; r = r->rnext)
        for (int i = 0; i < r->recipe.n_inputs; i++)
            if (r->in_block[i] == b->addr) r->in_stale |= (uint8_t)(1u << i);
    ck_tmeta *m = b->tm;
    if (!m) return 0;
    stash_del(T, m);
    rlist_set(T, m, 0);
    if (m->on_moving) {
        moving_del(T, m);
        if (m->ev) {
            if (ck__event_passed(p, m->ev, 0)) ck__event_put(p, m->ev);
            else ev[n++] = m->ev; /* the block is reused only once it passes */
        }
        m->ev = NULL;
    }
    if (m->sev) { /* a replay the engine queued may still read it */
        if (ck__event_passed(p, m->sev, 0)) ck__event_put(p, m->sev);
        else ev[n++] = m->sev;
        m->sev = NULL;
    }
    if (m->host) host_release(p, m->host, m->host_cap, copy_fence(p));
    m->host = NULL;
    set_state(p, m, CK_TENSOR_RESIDENT); /* the counters drop it */
    b->tm = NULL;
    b->tag = 0;
    meta_free(p, m);
    return n;
}

void ck__tier_destroy(ck_pool *p) {
    struct ck_tier_engine *T = p->tier;
    if (T->copy) p->be->ops->stream_sync(p->be, T->copy);
    poll(p, 1);
    for (size_t i = 0; i <= p->hmask && p->htab; i++)
        for (ck_block *b = p->htab[i]; b; b = b->hnext)
            if (b->tm) {
                ck_event ev[2];
                uint32_t n = ck__tier_on_free(p, b, ev);
                for (uint32_t k = 0; k < n; k++) {
                    ck__event_passed(p, ev[k], 1);
                    ck__event_put(p, ev[k]);
                }
            }
    defer_poll(p, 1);
    spans_poll(p, 1);
    for (size_t i = 0; i < T->ntev; i++) p->be->ops->event_destroy(p->be, T->tev[i]);
    ck__host_fini(p, &T->host);
    if (T->copy) p->be->ops->stream_destroy(p->be, T->copy);
    for (size_t i = 0; i < T->nnames; i++) free(T->names[i]);
    free(T->names);
    free(T->nhash);
    free(T->defer);
    free(T->scratch);
    free(T->evicted);
    ck__policy_free(T->policy);
    free(T->ptier);
    free(T);
    p->tier = NULL;
}

/* For the tools that replay or simulate training without its compute: poll
 * (not wait: a wait would move the simulated host's clock) until ptr's
 * stash has released its memory, yielding then sleeping, for at most
 * max_s seconds of wall time. */
void ck__tier_settle(ck_pool *p, void *ptr, double max_s) {
    ck_tensor_status ts;
    ts.struct_size = sizeof ts;
    uint64_t until = ck__now_ns() + (uint64_t)(max_s * 1e9);
    for (int spin = 0;; spin++) {
        if (ck_tensor_info(p, ptr, &ts) != CK_OK || ts.state != CK_TENSOR_MOVING_OUT) break;
        if (spin < 1000) {
            sched_yield();
            continue;
        }
        if (ck__now_ns() > until) break;
        struct timespec nap = {0, 100000};
        nanosleep(&nap, NULL);
    }
    ck__clear_error();
}

/* ---- policy files (include/ckalloc/policy.h) ------------------------------ */

/* Put pol in force (taking it; NULL: none): its rules for AUTO tags, its
 * prefetch window and eviction order. Pool lock held. */
static ck_status set_policy(ck_pool *p, ck_policy *pol) {
    struct ck_tier_engine *T = engine(p);
    if (!T) {
        ck__policy_free(pol);
        return ck__err(CK_ERR_NOMEM, "policy: out of host memory");
    }
    ck__policy_free(T->policy);
    T->policy = pol;
    if (T->ptier) memset(T->ptier, 0, T->cap_ptier);
    T->eviction = pol ? pol->eviction : CK_EVICT_DEEPEST;
    /* the policy's window, else the pool's own (a later policy without
     * one does not keep an earlier policy's) */
    T->prefetch = pol && pol->has_prefetch ? pol->prefetch : pool_prefetch(p);
    return CK_OK;
}

ck_status ck__tier_set_policy(ck_pool *p, ck_policy *pol) {
    pool_lock(p);
    ck_status st = set_policy(p, pol);
    pool_unlock(p);
    return st;
}

CK_API ck_status ck_policy_load(ck_pool *p, const char *path) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_policy_load: pool is NULL");
    ck_policy *pol = NULL;
    ck_status st = ck__policy_read(path, &pol);
    return st != CK_OK ? st : ck__tier_set_policy(p, pol);
}

CK_API ck_status ck_policy_load_string(ck_pool *p, const char *text, size_t len, const char *name) {
    if (!p) return ck__err(CK_ERR_INVALID, "ck_policy_load_string: pool is NULL");
    ck_policy *pol = NULL;
    ck_status st = ck__policy_parse(text, len, name, &pol);
    return st != CK_OK ? st : ck__tier_set_policy(p, pol);
}

CK_API ck_status ck_policy_tier(ck_pool *p, const char *tag, ck_tier *tier) {
    if (!p || !tag || !tier)
        return ck__err(CK_ERR_INVALID, "ck_policy_tier: %s is NULL", !p ? "pool" : !tag ? "tag" : "tier");
    pool_lock(p);
    *tier = p->tier ? ck__policy_match(p->tier->policy, tag) : CK_TIER_AUTO;
    pool_unlock(p);
    return CK_OK;
}

/* ---- the invariant checker's part (check.c) ------------------------------- */

int ck__tier_check(ck_pool *p, char *why, size_t n) {
    struct ck_tier_engine *T = p->tier;
#define TCHK(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (why && n) snprintf(why, n, __VA_ARGS__);                                           \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)
    int64_t off = 0, drop = 0, mov = 0;
    size_t nstashed = 0, nmoving = 0, nrecipes = 0, nonmoving = 0;
    for (size_t i = 0; i <= p->hmask && p->htab; i++)
        for (ck_block *b = p->htab[i]; b; b = b->hnext) {
            ck_tmeta *m = b->tm;
            if (!m) {
                TCHK(b->tag == 0 || b->state != BLK_LIVE, "untagged live block %#lx has tag %u",
                     (unsigned long)b->addr, (unsigned)b->tag);
                continue;
            }
            TCHK(T, "tagged block %#lx without a tier engine", (unsigned long)b->addr);
            TCHK(b->state == BLK_LIVE && !b->small, "tagged block %#lx is not a live large block",
                 (unsigned long)b->addr);
            TCHK(m->b == b && b->tag == m->tag, "tagged block %#lx: record does not match",
                 (unsigned long)b->addr);
            int released = m->state == CK_TENSOR_OFFLOADED || m->state == CK_TENSOR_DROPPED;
            TCHK(released == (int)b->evicted, "'%s' (%#lx) is %s but %s", tname(p, m),
                 (unsigned long)b->addr, state_names[m->state], b->evicted ? "evicted" : "mapped");
            TCHK(!released || m->stashed, "'%s' is released but not stashed", tname(p, m));
            TCHK(m->state != CK_TENSOR_OFFLOADED || m->host, "'%s' is offloaded without a host copy",
                 tname(p, m));
            TCHK(m->on_moving == (m->state == CK_TENSOR_MOVING_OUT || m->state == CK_TENSOR_COMING_BACK),
                 "'%s' is %s, on the moving list: %d", tname(p, m), state_names[m->state], m->on_moving);
            TCHK(m->busy == 0, "'%s' is still marked busy (%u) between calls", tname(p, m), (unsigned)m->busy);
            TCHK(m->on_rlist == m->has_recipe, "'%s': recipe %d but on the recipe list %d", tname(p, m),
                 m->has_recipe, m->on_rlist);
            TCHK(!m->host || m->applied == CK_TIER_OFFLOAD, "'%s' holds a host copy but applied %s",
                 tname(p, m), ck_tier_name((ck_tier)m->applied));
            nrecipes += m->has_recipe;
            if (m->state == CK_TENSOR_OFFLOADED) off += (int64_t)b->size;
            if (m->state == CK_TENSOR_DROPPED) drop += (int64_t)b->size;
            if (m->on_moving) mov += (int64_t)b->size, nonmoving++;
            nstashed += m->stashed;
        }
    if (!T) return 0;
    size_t k = 0;
    uint64_t seq = 0;
    for (ck_tmeta *m = T->s_head, *prev = NULL; m; prev = m, m = m->snext, k++) {
        TCHK(m->stashed && m->sprev == prev && m->b->tm == m, "stash list broken at '%s'", tname(p, m));
        TCHK(m->stash_seq > seq, "stash list out of order at '%s'", tname(p, m));
        seq = m->stash_seq;
        if (!m->snext) TCHK(T->s_tail == m, "stash list tail");
    }
    TCHK(k == nstashed, "%zu tensors on the stash list, %zu stashed", k, nstashed);
    for (ck_tmeta *m = T->moving, *prev = NULL; m; prev = m, m = m->mnext) {
        TCHK(m->on_moving && m->mprev == prev && m->b->tm == m, "moving list broken at '%s'", tname(p, m));
        nmoving++;
    }
    TCHK(nmoving == nonmoving, "%zu on the moving list, %zu tensors moving", nmoving, nonmoving);
    size_t nr = 0;
    for (ck_tmeta *m = T->recipes, *prev = NULL; m; prev = m, m = m->rnext, nr++)
        TCHK(m->on_rlist && m->rprev == prev && m->b->tm == m, "recipe list broken at '%s'", tname(p, m));
    TCHK(nr == nrecipes, "%zu on the recipe list, %zu tensors with a recipe", nr, nrecipes);
    TCHK(off == p->c->offloaded_bytes.current, "offloaded_bytes %lld, tensors offloaded %lld",
         (long long)p->c->offloaded_bytes.current, (long long)off);
    TCHK(drop == p->c->dropped_bytes.current, "dropped_bytes %lld, tensors dropped %lld",
         (long long)p->c->dropped_bytes.current, (long long)drop);
    TCHK(mov == p->c->moving_bytes.current, "moving_bytes %lld, tensors moving %lld",
         (long long)p->c->moving_bytes.current, (long long)mov);
    TCHK((int64_t)T->released == off + drop, "released %llu, offloaded + dropped %lld",
         (unsigned long long)T->released, (long long)(off + drop));
    TCHK((int64_t)T->host.held == p->c->host_bytes.current, "host_bytes %lld, held %llu",
         (long long)p->c->host_bytes.current, (unsigned long long)T->host.held);
#undef TCHK
    return 0;
}
