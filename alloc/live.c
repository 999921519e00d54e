/* Live statistics in shared memory: the owner side (one segment per process,
 * one slot per pool, attach/detach, answering top-list requests, fork and
 * exit) and the reader side shared by ckalloc-stat, the tests and the bench.
 * The layout and the protocol are described in live.h. */
#include "pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A reader in another process must see the same bytes: pin the layout. A
 * failing assert means the layout changed: bump CK_LIVE_VERSION, then update
 * the sizes here. */
_Static_assert(sizeof(ck_live_header) == 320, "ck_live_header changed: bump CK_LIVE_VERSION");
_Static_assert(sizeof(ck_counters) == 608, "ck_counters changed: bump CK_LIVE_VERSION");
_Static_assert(sizeof(ck_live_top) == 64, "ck_live_top changed: bump CK_LIVE_VERSION");
_Static_assert(sizeof(ck_live_slot) == 2496, "ck_live_slot changed: bump CK_LIVE_VERSION");
_Static_assert(offsetof(ck_live_slot, seq) == 64 && offsetof(ck_live_slot, c) == 80 &&
                   offsetof(ck_live_slot, aseq) == 704 && offsetof(ck_live_slot, top) == 1360 &&
                   offsetof(ck_live_slot, request) == 2432,
               "ck_live_slot changed: bump CK_LIVE_VERSION");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "the seqlock needs lock-free 64-bit atomics");

#define SEG_SIZE (sizeof(ck_live_header) + CK_LIVE_SLOTS * sizeof(ck_live_slot))
/* The hot part (seq covers it) and the answer area (aseq covers it). */
#define HOT_END (offsetof(ck_live_slot, c) + sizeof(ck_counters))
#define ANS_BEGIN offsetof(ck_live_slot, aseq)
#define ANS_END offsetof(ck_live_slot, request)

/* Word copies with relaxed atomics on the shared side (see live.h). */
typedef uint64_t __attribute__((may_alias)) word_t;

static void copy_in(void *dst, const void *src, size_t n) {
    word_t *d = dst;
    const word_t *s = src;
    for (size_t i = 0; i < n / sizeof *d; i++) __atomic_store_n(&d[i], s[i], __ATOMIC_RELAXED);
}

static void copy_out(void *dst, const void *src, size_t n) {
    word_t *d = dst;
    const word_t *s = src;
    for (size_t i = 0; i < n / sizeof *d; i++) d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

static ck_live_slot *slot_at(void *seg, int i) {
    return (ck_live_slot *)((char *)seg + sizeof(ck_live_header) +
                            (size_t)i * sizeof(ck_live_slot));
}

static uint64_t realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

void ck__live_path(int pid, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s%d", CK_LIVE_DIR, CK_LIVE_PREFIX, pid);
}

int ck__live_start_time(int pid, uint64_t *out) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command (field 2) may hold spaces and parentheses: count fields
     * from the last ')'. */
    char *s = strrchr(buf, ')');
    if (!s) return -1;
    s++;
    for (int field = 3; field < 22; field++) {
        while (*s == ' ') s++;
        while (*s && *s != ' ') s++;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno) return -1;
    *out = v;
    return 0;
}

/* ===================================================== the owner side === */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void *g_seg;        /* this process's mapping, or NULL */
static pid_t g_owner;      /* the pid that created g_seg */
static int g_unlinked;     /* its name is removed already (exit) */
static int g_exiting;      /* past the destructor: create no new segment */
static char g_name[64];    /* "/ckalloc.<pid>" */
static uint64_t g_next_id; /* pool serials */
static ck_pool *g_pools[CK_LIVE_SLOTS];

static void read_cmdline(char *out, size_t n) {
    out[0] = '\0';
    FILE *f = fopen("/proc/self/cmdline", "re");
    if (!f) return;
    size_t len = fread(out, 1, n - 1, f);
    fclose(f);
    out[len] = '\0';
    /* NUL-separated arguments become one line; control bytes could drive
     * the reader's terminal, so they become '?'. */
    for (size_t i = 0; i < len; i++) {
        if (out[i] == '\0') out[i] = ' ';
        else if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f) out[i] = '?';
    }
    while (len && out[len - 1] == ' ') out[--len] = '\0';
}

/* g_name exists although this process has no segment. Replace it only if
 * it was left by an earlier process with our pid (same pid, other start
 * time). Anything else may be live: another copy of ckalloc in this process
 * (a static one beside the preload library), or a segment being created;
 * then this copy's pools stay private. */
static int is_stale_own(uint64_t start) {
    int fd = shm_open(g_name, O_RDONLY, 0);
    if (fd < 0) return 0;
    ck_live_header h;
    int stale = pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h && h.magic == CK_LIVE_MAGIC &&
                h.pid == (int32_t)getpid() && h.start_time != start;
    close(fd);
    return stale;
}

/* Lock held. Creates and maps /ckalloc.<pid>; 0 on success. */
static int seg_create(void) {
    pid_t pid = getpid();
    snprintf(g_name, sizeof g_name, "/%s%d", CK_LIVE_PREFIX, (int)pid);
    uint64_t start = 0;
    ck__live_start_time((int)pid, &start);
    int fd = shm_open(g_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 && errno == EEXIST && is_stale_own(start)) {
        shm_unlink(g_name);
        fd = shm_open(g_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    }
    if (fd < 0) return -1;
    if (ftruncate(fd, (off_t)SEG_SIZE) != 0) {
        close(fd);
        shm_unlink(g_name);
        return -1;
    }
    void *m = mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        shm_unlink(g_name);
        return -1;
    }
    ck_live_header *h = m;
    h->version = CK_LIVE_VERSION;
    h->header_size = sizeof *h;
    h->slot_size = sizeof(ck_live_slot);
    h->nslots = CK_LIVE_SLOTS;
    h->pid = (int32_t)pid;
    h->uid = (uint32_t)getuid();
    h->start_time = start;
    h->created_ns = realtime_ns();
    read_cmdline(h->cmdline, sizeof h->cmdline);
    /* Magic last: a reader that sees it sees a complete header. */
    __atomic_store_n(&h->magic, CK_LIVE_MAGIC, __ATOMIC_RELEASE);
    g_seg = m;
    g_owner = pid;
    g_unlinked = 0;
    return 0;
}

/* Lock held: unmap and remove the segment once no pool uses it. */
static void seg_release_if_unused(void) {
    if (!g_seg) return;
    for (int i = 0; i < CK_LIVE_SLOTS; i++)
        if (g_pools[i]) return;
    if (!g_unlinked && g_owner == getpid()) shm_unlink(g_name);
    munmap(g_seg, SEG_SIZE);
    g_seg = NULL;
}

/* Begin and end a write under a seqlock counter whose only writer is the
 * caller (pool_lock/pool_unlock do the same for the hot part). */
static uint64_t write_begin(_Atomic uint64_t *seq) {
    uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
    atomic_store_explicit(seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    return s;
}

static void write_end(_Atomic uint64_t *seq, uint64_t s) {
    atomic_store_explicit(seq, s + 2, memory_order_release);
}

/* Copy [from, to) of sl into the same place of out while *seq stays even
 * and unchanged: `quick` tries, then max_sleeps more 100 us apart. */
static int seq_read(const ck_live_slot *sl, const _Atomic uint64_t *seq, size_t from, size_t to,
                    ck_live_slot *out, int quick, int max_sleeps) {
    for (int tries = 0;; tries++) {
        uint64_t s1 = atomic_load_explicit(seq, memory_order_acquire);
        if (!(s1 & 1)) {
            copy_out((char *)out + from, (const char *)sl + from, to - from);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(seq, memory_order_relaxed) == s1) return 0;
        }
        if (tries + 1 >= quick + max_sleeps) return -1;
        if (tries + 1 >= quick) sleep_us(100);
    }
}

int ck__live_slot_read(const ck_live_slot *sl, ck_live_slot *out, int max_sleeps) {
    return seq_read(sl, &sl->seq, 0, HOT_END, out, 64, max_sleeps);
}

/* The child of fork must not write the parent's slots (the mapping is
 * shared): prepare copies each pool's counters while the parent holds them
 * steady (copy-on-write gives the child that copy), child repoints its pools
 * at those copies and drops the mapping. A new pool in the child then
 * creates /ckalloc.<childpid>. */
static void at_prepare(void) {
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < CK_LIVE_SLOTS; i++) {
        ck_pool *p = g_pools[i];
        if (!p) continue;
        ck_live_slot tmp;
        /* Busy means another thread is inside a pool call: that pool is not
         * usable in the child anyway, any copy will do. */
        if (ck__live_slot_read(p->live, &tmp, 0) != 0) copy_out(&tmp, p->live, HOT_END);
        p->c_private = tmp.c;
    }
}

static void at_parent(void) { pthread_mutex_unlock(&g_mu); }

static void at_child(void) {
    for (int i = 0; i < CK_LIVE_SLOTS; i++) {
        ck_pool *p = g_pools[i];
        if (!p) continue;
        p->c = &p->c_private;
        atomic_store_explicit(&p->seq_private, 0, memory_order_relaxed);
        p->seq = &p->seq_private;
        p->live = NULL;
        g_pools[i] = NULL;
    }
    if (g_seg) munmap(g_seg, SEG_SIZE); /* never unlink: the name is the parent's */
    g_seg = NULL;
    g_owner = 0;
    g_unlinked = 0;
    pthread_mutex_unlock(&g_mu);
}

static void live_once(void) { pthread_atfork(at_prepare, at_parent, at_child); }

/* At exit (or dlclose) the name goes; the mapping stays, since pools may
 * still be used by later destructors. */
__attribute__((destructor)) static void live_fini(void) {
    pthread_mutex_lock(&g_mu);
    g_exiting = 1;
    if (g_seg && !g_unlinked && g_owner == getpid()) {
        shm_unlink(g_name);
        g_unlinked = 1;
    }
    pthread_mutex_unlock(&g_mu);
}

void ck__live_attach(ck_pool *p) {
    pthread_once(&g_once, live_once);
    pthread_mutex_lock(&g_mu);
    if (!g_seg && (g_exiting || seg_create() != 0)) goto out;
    int i = 0;
    while (i < CK_LIVE_SLOTS && g_pools[i]) i++;
    if (i == CK_LIVE_SLOTS) goto out; /* no free slot: the pool stays private */
    ck_live_slot *sl = slot_at(g_seg, i);
    uint64_t s = write_begin(&sl->seq);
    ck_live_slot head;
    memset(&head, 0, offsetof(ck_live_slot, seq));
    head.in_use = 1;
    head.pool_id = ++g_next_id;
    head.device = p->be->device;
    snprintf(head.backend, sizeof head.backend, "%s", p->be->name);
    head.budget = p->budget;
    head.total_mem = p->be->total_mem;
    copy_in(sl, &head, offsetof(ck_live_slot, seq));
    copy_in(&sl->c, &p->c_private, sizeof sl->c);
    /* Nothing answered yet; a request left by the slot's last pool counts
     * as answered (its reader has given up or will ask again). */
    uint64_t a = write_begin(&sl->aseq);
    static const char zero[ANS_END - offsetof(ck_live_slot, ac)];
    copy_in(&sl->ac, zero, sizeof zero);
    uint64_t req = atomic_load_explicit(&sl->request, memory_order_relaxed);
    atomic_store_explicit(&sl->served, req, memory_order_relaxed);
    write_end(&sl->aseq, a);
    write_end(&sl->seq, s);
    /* The pool is not shared with other threads yet: switch it over. */
    p->live_served = req;
    p->live_next_seq = 0;
    p->live_next_ns = 0;
    p->live_slot = i;
    p->live = sl;
    p->c = &sl->c;
    p->seq = &sl->seq;
    g_pools[i] = p;
out:
    pthread_mutex_unlock(&g_mu);
}

void ck__live_detach(ck_pool *p) {
    pthread_mutex_lock(&g_mu);
    ck_live_slot *sl = p->live;
    if (sl) {
        uint64_t s = write_begin(&sl->seq);
        memcpy(&p->c_private, &sl->c, sizeof p->c_private); /* only we write them */
        ck__cnt_set(&sl->in_use, 0);
        write_end(&sl->seq, s);
        p->c = &p->c_private;
        p->seq = &p->seq_private;
        p->live = NULL;
        g_pools[p->live_slot] = NULL;
        seg_release_if_unused();
    }
    pthread_mutex_unlock(&g_mu);
}

/* Insert b into top (sorted by size, largest first, at most CK_LIVE_TOP). */
static void top_insert(const ck_pool *p, ck_live_top *top, uint64_t *n, const ck_block *b) {
    uint64_t k = *n;
    if (k == CK_LIVE_TOP) {
        if (b->size <= top[k - 1].size) return;
        k--;
    } else {
        (*n)++;
    }
    while (k > 0 && top[k - 1].size < b->size) {
        top[k] = top[k - 1];
        k--;
    }
    memset(&top[k], 0, sizeof top[k]);
    top[k].addr = b->addr;
    top[k].size = b->size;
    top[k].requested = b->requested;
    top[k].stream = (uint64_t)(uintptr_t)b->stream;
    if (b->tag) snprintf(top[k].tag, sizeof top[k].tag, "%s", ck__tier_tag_name(p, b->tag));
}

void ck__live_serve(ck_pool *p) {
    ck_live_slot *sl = p->live;
    uint64_t req = atomic_load_explicit(&sl->request, memory_order_relaxed);
    uint64_t served = p->live_served;
    /* Walks are paced so that they take at most ~0.1% of the owner's time,
     * whatever the pool's size or the readers' rate: after a walk of T ns the
     * next waits 1000 T (at most 1 s: a walk stretched by preemption must not
     * shut readers out). While a walk waits, the clock is read once per 64
     * pool calls (seq grows by 2 per call), not on every call; a request for
     * the counters alone is answered meanwhile. */
    int walk = 0;
    uint64_t t0 = 0;
    if (CK_LIVE_TOP_PART(req) != CK_LIVE_TOP_PART(served)) {
        t0 = ck__now_ns();
        if (t0 >= p->live_next_ns) walk = 1;
        else p->live_next_seq = atomic_load_explicit(p->seq, memory_order_relaxed) + 2 * 64;
    }
    if (!walk && CK_LIVE_COUNTERS_PART(req) == CK_LIVE_COUNTERS_PART(served)) return;

    uint64_t a = write_begin(&sl->aseq);
    copy_in(&sl->ac, p->c, sizeof sl->ac); /* consistent: we hold the lock */
    uint64_t now = realtime_ns();
    ck__cnt_set(&sl->answer_ns, now);
    if (walk) {
        ck_live_top top[CK_LIVE_TOP];
        uint64_t ntop = 0;
        for (size_t i = 0; i <= p->hmask; i++)
            for (ck_block *b = p->htab[i]; b; b = b->hnext)
                if (b->state == BLK_LIVE && !b->is_page) top_insert(p, top, &ntop, b);
        if (ntop < CK_LIVE_TOP) memset(&top[ntop], 0, (CK_LIVE_TOP - ntop) * sizeof top[0]);
        copy_in(sl->top, top, sizeof top);
        ck__cnt_set(&sl->ntop, ntop);
        ck__cnt_set(&sl->largest_free, ck__largest_free(p));
        ck__cnt_set(&sl->top_ns, now);
    }
    write_end(&sl->aseq, a);
    /* A deferred walk keeps its half unanswered. */
    uint64_t done = walk ? req : (served & 0xffffffffull) | (req & ~0xffffffffull);
    atomic_store_explicit(&sl->served, done, memory_order_release);
    p->live_served = done;
    if (walk) {
        uint64_t t1 = ck__now_ns();
        uint64_t pause = 1000 * (t1 - t0);
        p->live_next_ns = t1 + (pause < 1000000000u ? pause : 1000000000u);
    }
}

/* ==================================================== the reader side === */

#define WHY(...) (why ? (void)snprintf(why, whyn, __VA_ARGS__) : (void)0)

/* 0 if the header is ours and its process is alive; else CK_LIVE_IGNORED
 * with why set. */
static int check_header(const char *path, int pid, const struct stat *st, const ck_live_header *h,
                        char *why, size_t whyn) {
    if (h->magic != CK_LIVE_MAGIC) {
        WHY("%s: bad magic 0x%016" PRIx64 " (not a ckalloc live-stats file, or still being created)", path,
            h->magic);
        return CK_LIVE_IGNORED;
    }
    if (h->version != CK_LIVE_VERSION) {
        WHY("%s: layout version %u, this reader knows version %u (ckalloc versions differ)", path,
            h->version, CK_LIVE_VERSION);
        return CK_LIVE_IGNORED;
    }
    if (h->header_size != sizeof *h || h->slot_size != sizeof(ck_live_slot) ||
        h->nslots != CK_LIVE_SLOTS || (uint64_t)st->st_size != SEG_SIZE) {
        WHY("%s: wrong size (%lld bytes, header %u, %u slots of %u; expected %zu bytes)", path,
            (long long)st->st_size, h->header_size, h->nslots, h->slot_size, (size_t)SEG_SIZE);
        return CK_LIVE_IGNORED;
    }
    if (h->pid != pid || h->uid != (uint32_t)st->st_uid) {
        WHY("%s: header names pid %d uid %u, the file is for pid %d uid %u (foreign)", path,
            (int)h->pid, h->uid, pid, (unsigned)st->st_uid);
        return CK_LIVE_IGNORED;
    }
    uint64_t start;
    if (ck__live_start_time(pid, &start) != 0) {
        WHY("%s: process %d is gone (stale: it exited without removing its live-stats file; rm %s)", path,
            pid, path);
        return CK_LIVE_IGNORED;
    }
    if (start != h->start_time) {
        WHY("%s: pid %d was reused (stale: the live-stats file's process started at tick %" PRIu64
            ", the current one at tick %" PRIu64 "; rm %s)",
            path, pid, h->start_time, start, path);
        return CK_LIVE_IGNORED;
    }
    return CK_LIVE_OK;
}

int ck__live_open(int pid, ck_live_reader *r, char *why, size_t whyn) {
    memset(r, 0, sizeof *r);
    if (why && whyn) why[0] = '\0';
    r->pid = pid;
    ck__live_path(pid, r->path, sizeof r->path);
    const char *path = r->path;
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) {
            WHY("%s: no such live-stats file", path);
            return CK_LIVE_NONE;
        }
        WHY("%s: %s", path, strerror(errno));
        return CK_LIVE_ERROR;
    }
    /* Cheap checks before opening: a foreign file is never mapped. */
    if (!S_ISREG(st.st_mode)) {
        WHY("%s: not a regular file (foreign)", path);
        return CK_LIVE_IGNORED;
    }
    if (st.st_uid != geteuid()) {
        WHY("%s: owned by uid %u, not by you (uid %u) (foreign)", path, (unsigned)st.st_uid,
            (unsigned)geteuid());
        return CK_LIVE_IGNORED;
    }
    if (st.st_mode & 077) {
        WHY("%s: mode %04o, ckalloc creates 0600 (foreign)", path, (unsigned)(st.st_mode & 07777));
        return CK_LIVE_IGNORED;
    }
    if ((size_t)st.st_size < sizeof(ck_live_header)) {
        WHY("%s: wrong size (%lld bytes, shorter than a header) (foreign)", path,
            (long long)st.st_size);
        return CK_LIVE_IGNORED;
    }
    /* Read-write: a reader asks for the top list by writing `request`. */
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        WHY("%s: cannot open: %s", path, strerror(errno));
        return errno == ENOENT ? CK_LIVE_NONE : CK_LIVE_ERROR;
    }
    ck_live_header h;
    struct stat st2;
    if (fstat(fd, &st2) != 0 || st2.st_ino != st.st_ino || st2.st_dev != st.st_dev ||
        pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        close(fd);
        WHY("%s: changed while being read", path);
        return CK_LIVE_ERROR;
    }
    int rc = check_header(path, pid, &st2, &h, why, whyn);
    if (rc != CK_LIVE_OK) {
        close(fd);
        return rc;
    }
    /* Populated at once: one fault instead of one per page. */
    void *m = mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    r->copy = malloc(CK_LIVE_SLOTS * sizeof(ck_live_slot));
    if (m == MAP_FAILED || !r->copy) {
        WHY("%s: cannot map: %s", path, m == MAP_FAILED ? strerror(errno) : "out of memory");
        if (m != MAP_FAILED) munmap(m, SEG_SIZE);
        free(r->copy);
        r->copy = NULL;
        return CK_LIVE_ERROR;
    }
    r->map = m;
    r->ino = (uint64_t)st2.st_ino;
    r->dev = (uint64_t)st2.st_dev;
    r->h = h;
    r->checked_ns = ck__now_ns();
    return CK_LIVE_OK;
}

void ck__live_close(ck_live_reader *r) {
    if (r->map) munmap(r->map, SEG_SIZE);
    free(r->copy);
    r->map = NULL;
    r->copy = NULL;
}

/* Is r still the segment of a running process? Each call costs one
 * kill(pid, 0); the name (replaced when the owner's pools went and came
 * back) and the start time (a reused pid) are checked every 250 ms. */
static int still_valid(ck_live_reader *r, char *why, size_t whyn) {
    if (kill(r->pid, 0) != 0 && errno == ESRCH) {
        WHY("%s: process %d exited", r->path, r->pid);
        return CK_LIVE_NONE;
    }
    uint64_t now = ck__now_ns();
    if (now - r->checked_ns < 250 * 1000000ull) return CK_LIVE_OK;
    r->checked_ns = now;
    struct stat st;
    if (lstat(r->path, &st) != 0 || (uint64_t)st.st_ino != r->ino ||
        (uint64_t)st.st_dev != r->dev) {
        int pid = r->pid;
        ck__live_close(r);
        return ck__live_open(pid, r, why, whyn);
    }
    uint64_t start;
    if (ck__live_start_time(r->pid, &start) != 0) {
        WHY("%s: process %d exited", r->path, r->pid);
        return CK_LIVE_NONE;
    }
    if (start != r->h.start_time) {
        WHY("%s: pid %d was reused (stale)", r->path, r->pid);
        return CK_LIVE_IGNORED;
    }
    return CK_LIVE_OK;
}

int ck__live_snapshot(ck_live_reader *r, int top_wait_ms, ck_live_proc *out, char *why,
                      size_t whyn) {
    memset(out, 0, sizeof *out);
    if (why && whyn) why[0] = '\0';
    int rc = r->map ? still_valid(r, why, whyn) : CK_LIVE_ERROR;
    if (rc != CK_LIVE_OK) return rc;
    void *m = r->map;
    ck_live_slot *copy = r->copy;
    out->pid = r->pid;
    out->uid = r->h.uid;
    out->start_time = r->h.start_time;
    out->created_ns = r->h.created_ns;
    memcpy(out->cmdline, r->h.cmdline, sizeof out->cmdline);
    out->cmdline[sizeof out->cmdline - 1] = '\0';

    /* 1. A direct copy of each pool's hot part. 2. Questions to the owner:
     * the top list if wanted, the counters if the direct copy kept failing
     * (an owner busy allocating). 3. Its answers. */
    int used[CK_LIVE_SLOTS] = {0}, hot_ok[CK_LIVE_SLOTS] = {0};
    uint64_t ask[CK_LIVE_SLOTS] = {0}, req[CK_LIVE_SLOTS] = {0};
    int asked = 0;
    for (int i = 0; i < CK_LIVE_SLOTS; i++) {
        ck_live_slot *sl = slot_at(m, i);
        if (!__atomic_load_n(&sl->in_use, __ATOMIC_RELAXED)) continue;
        /* Few tries: each failed copy takes the owner's counter lines away
         * from it, and a busy owner answers at its next unlock anyway. */
        hot_ok[i] = seq_read(sl, &sl->seq, 0, HOT_END, &copy[i], 3, 0) == 0;
        if (hot_ok[i] && !copy[i].in_use) continue; /* detached meanwhile */
        used[i] = 1;
        if (top_wait_ms >= 0) ask[i] |= CK_LIVE_ASK_TOP;
        if (!hot_ok[i]) ask[i] |= CK_LIVE_ASK_COUNTERS;
        if (!ask[i]) continue;
        req[i] = atomic_fetch_add_explicit(&slot_at(m, i)->request, ask[i], memory_order_relaxed) +
                 ask[i];
        asked = 1;
    }
    uint64_t t0 = ck__now_ns();
    uint64_t top_deadline = t0 + (top_wait_ms > 0 ? (uint64_t)top_wait_ms : 0) * 1000000u;
    uint64_t cnt_deadline = t0 + 200 * 1000000ull;
    if (cnt_deadline < top_deadline) cnt_deadline = top_deadline;
    /* The owner answers at its next unlock. Never spin: on a small machine
     * the reader may share the owner's CPU and would hold it off. */
    for (int k = 0; asked; k++) {
        uint64_t now = ck__now_ns();
        int waiting = 0;
        for (int i = 0; i < CK_LIVE_SLOTS; i++) {
            if (!ask[i]) continue;
            uint64_t sv = atomic_load_explicit(&slot_at(m, i)->served, memory_order_acquire);
            if ((ask[i] & CK_LIVE_ASK_TOP) &&
                (int32_t)(CK_LIVE_TOP_PART(sv) - CK_LIVE_TOP_PART(req[i])) < 0 &&
                now < top_deadline)
                waiting = 1;
            if ((ask[i] & CK_LIVE_ASK_COUNTERS) &&
                (int32_t)(CK_LIVE_COUNTERS_PART(sv) - CK_LIVE_COUNTERS_PART(req[i])) < 0 &&
                now < cnt_deadline)
                waiting = 1;
        }
        if (!waiting) break; /* all answered, or past their deadlines */
        if (k < 3) sched_yield();
        else sleep_us(100);
    }
    for (int i = 0; i < CK_LIVE_SLOTS; i++) {
        if (!used[i]) continue;
        const ck_live_slot *sl = slot_at(m, i);
        ck_live_slot *cp = &copy[i];
        ck_live_pool *lp = &out->pools[out->npools++];
        memset(lp, 0, sizeof *lp);
        lp->slot = i;
        uint64_t sv = atomic_load_explicit(&sl->served, memory_order_acquire);
        int got_top = (ask[i] & CK_LIVE_ASK_TOP) &&
                      (int32_t)(CK_LIVE_TOP_PART(sv) - CK_LIVE_TOP_PART(req[i])) >= 0;
        int got_counters =
            got_top || ((ask[i] & CK_LIVE_ASK_COUNTERS) &&
                        (int32_t)(CK_LIVE_COUNTERS_PART(sv) - CK_LIVE_COUNTERS_PART(req[i])) >= 0);
        /* The owner writes answers rarely: this read succeeds at once. */
        int ans_ok = seq_read(sl, &sl->aseq, ANS_BEGIN, ANS_END, cp, 64, 100) == 0;
        if (!hot_ok[i]) {
            if (!ans_ok || !got_counters) {
                lp->busy = 1;
                continue;
            }
            /* The fields before seq change only at attach/detach. */
            copy_out(cp, sl, offsetof(ck_live_slot, seq));
            cp->c = cp->ac;
            lp->answered = 1;
        }
        lp->device = (int)cp->device;
        lp->pool_id = cp->pool_id;
        memcpy(lp->backend, cp->backend, sizeof lp->backend);
        lp->backend[sizeof lp->backend - 1] = '\0';
        lp->budget = cp->budget;
        lp->total_mem = cp->total_mem;
        lp->c = cp->c;
        if (ans_ok && cp->top_ns) {
            lp->largest_free = cp->largest_free;
            lp->top_ns = cp->top_ns;
            lp->top_fresh = got_top;
            lp->ntop = cp->ntop > CK_LIVE_TOP ? CK_LIVE_TOP : (uint32_t)cp->ntop;
            memcpy(lp->top, cp->top, lp->ntop * sizeof lp->top[0]);
            for (uint32_t k = 0; k < lp->ntop; k++)
                lp->top[k].tag[sizeof lp->top[k].tag - 1] = '\0';
        }
    }
    return CK_LIVE_OK;
}

int ck__live_read(int pid, int top_wait_ms, ck_live_proc *out, char *why, size_t whyn) {
    ck_live_reader r;
    memset(out, 0, sizeof *out);
    int rc = ck__live_open(pid, &r, why, whyn);
    if (rc != CK_LIVE_OK) return rc;
    rc = ck__live_snapshot(&r, top_wait_ms, out, why, whyn);
    ck__live_close(&r);
    return rc;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int ck__live_scan(int top_wait_ms, ck_live_scan_fn *fn, void *ctx) {
    DIR *d = opendir(CK_LIVE_DIR);
    if (!d) return -1;
    int *pids = NULL;
    size_t n = 0, cap = 0;
    const size_t plen = strlen(CK_LIVE_PREFIX);
    for (struct dirent *e; (e = readdir(d));) {
        /* Only ckalloc.<pid>: other names are not ours to judge. */
        const char *s = e->d_name;
        if (strncmp(s, CK_LIVE_PREFIX, plen) != 0) continue;
        s += plen;
        if (*s < '1' || *s > '9' || strlen(s) > 9 || s[strspn(s, "0123456789")]) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            int *np = realloc(pids, nc * sizeof *np);
            if (!np) break;
            pids = np;
            cap = nc;
        }
        pids[n++] = atoi(s);
    }
    closedir(d);
    if (n) qsort(pids, n, sizeof *pids, cmp_int);
    ck_live_proc *proc = malloc(sizeof *proc);
    char why[512];
    int seen = 0;
    for (size_t i = 0; proc && i < n; i++) {
        int rc = ck__live_read(pids[i], top_wait_ms, proc, why, sizeof why);
        if (rc == CK_LIVE_NONE) continue; /* removed since the listing */
        seen++;
        fn(ctx, pids[i], rc, rc == CK_LIVE_OK ? proc : NULL, why);
    }
    free(proc);
    free(pids);
    return seen;
}
