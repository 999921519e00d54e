/* ckalloc-stat's live source: a running process's shared-memory segment,
 * read with the library's own reader (alloc/live.c), turned into a report. */
#include "live.h"
#include "stat.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill_pool(ckstat_pool *sp, const ck_live_pool *lp, double now) {
    memset(sp, 0, sizeof *sp);
    sp->device = lp->device;
    snprintf(sp->backend, sizeof sp->backend, "%s", lp->backend);
    ck__stats_from_counters(&lp->c, lp->budget, lp->largest_free, &sp->stats);
    sp->ntop = (int)(lp->ntop > CKSTAT_TOP ? CKSTAT_TOP : lp->ntop);
    for (int k = 0; k < sp->ntop; k++) {
        const ck_live_top *t = &lp->top[k];
        sp->top[k].addr = t->addr;
        sp->top[k].size = t->size;
        sp->top[k].requested = t->requested;
        sp->top[k].stream = t->stream;
        snprintf(sp->top[k].tag, sizeof sp->top[k].tag, "%s", t->tag);
    }
    sp->top_fresh = lp->top_fresh;
    /* < 0: the owner never filled the list (nor largest_free). */
    if (!lp->top_ns) sp->top_age_s = -1;
    else if (!lp->top_fresh) {
        double age = now - (double)lp->top_ns / 1e9;
        sp->top_age_s = age > 0 ? age : 0;
    }
}

/* proc -> report; pools the owner kept locked are left out with a note. */
static int fill_report(const ck_live_proc *proc, ckstat_report *out, FILE *err) {
    memset(out, 0, sizeof *out);
    out->pid = proc->pid;
    snprintf(out->cmd, sizeof out->cmd, "%s", proc->cmdline);
    snprintf(out->source, sizeof out->source, "live");
    out->taken_at = now_s();
    out->pools = calloc(proc->npools ? (size_t)proc->npools : 1, sizeof *out->pools);
    if (!out->pools) return -1;
    for (int i = 0; i < proc->npools; i++) {
        const ck_live_pool *lp = &proc->pools[i];
        if (lp->busy) {
            if (err)
                fprintf(err,
                        "ckalloc-stat: pid %d: the pool in slot %d is busy (its owner held the "
                        "lock through every try); left out of this report\n",
                        proc->pid, lp->slot);
            continue;
        }
        fill_pool(&out->pools[out->npools++], lp, out->taken_at);
    }
    return 0;
}

/* The reader stays open between calls for the same pid (--watch): a refresh
 * then costs the owner's process nothing but the copy. */
static ck_live_reader reader;
static int reader_open;

int ckstat_live_read(int pid, int wait_ms, ckstat_report *out, char *err, size_t errn) {
    memset(out, 0, sizeof *out);
    ck_live_proc *proc = malloc(sizeof *proc);
    if (!proc) {
        snprintf(err, errn, "out of memory");
        return 1;
    }
    char why[512] = "";
    int rc = CK_LIVE_OK;
    if (reader_open && reader.pid != pid) {
        ck__live_close(&reader);
        reader_open = 0;
    }
    if (!reader_open) {
        rc = ck__live_open(pid, &reader, why, sizeof why);
        reader_open = rc == CK_LIVE_OK;
    }
    if (rc == CK_LIVE_OK) rc = ck__live_snapshot(&reader, wait_ms, proc, why, sizeof why);
    if (rc != CK_LIVE_OK && reader_open) {
        ck__live_close(&reader);
        reader_open = 0;
    }
    int ret = 1;
    uint64_t start;
    if (rc == CK_LIVE_OK) {
        ret = fill_report(proc, out, stderr) == 0 ? 0 : 1;
        if (ret) snprintf(err, errn, "out of memory");
    } else if (rc == CK_LIVE_NONE && strstr(why, "exited")) {
        snprintf(err, errn, "%s", why); /* during --watch */
    } else if (rc == CK_LIVE_NONE && ck__live_start_time(pid, &start) != 0) {
        snprintf(err, errn, "no process %d", pid);
    } else if (rc == CK_LIVE_NONE) {
        char path[96];
        ck__live_path(pid, path, sizeof path);
        snprintf(err, errn,
                 "process %d is not using ckalloc (no %s: it has no pool, or runs with live=0)",
                 pid, path);
    } else {
        snprintf(err, errn, "%s", why);
    }
    free(proc);
    return ret;
}

typedef struct collect {
    ckstat_report *r;
    size_t n, cap;
    FILE *err;
    int oom;
} collect;

static void on_segment(void *ctx, int pid, int rc, const ck_live_proc *proc, const char *why) {
    collect *c = ctx;
    if (rc != CK_LIVE_OK) {
        if (c->err) fprintf(c->err, "ckalloc-stat: ignored %s\n", why);
        return;
    }
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 8;
        ckstat_report *nr = realloc(c->r, nc * sizeof *nr);
        if (!nr) {
            c->oom = 1;
            return;
        }
        c->r = nr;
        c->cap = nc;
    }
    if (fill_report(proc, &c->r[c->n], c->err) == 0) c->n++;
    else c->oom = 1;
    (void)pid;
}

int ckstat_live_all(ckstat_report **out, size_t *n, FILE *err) {
    collect c = {NULL, 0, 0, err, 0};
    int seen = ck__live_scan(-1, on_segment, &c);
    if (c.oom && err) fprintf(err, "ckalloc-stat: out of memory: some processes left out\n");
    *out = c.r;
    *n = c.n;
    return seen < 0 ? -1 : (int)c.n;
}
