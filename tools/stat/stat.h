/* ckalloc-stat's model of one report: what a live process publishes (live.c
 * reads the shared segment) or what a snapshot file holds (snapshot.c parses
 * it). One printer (report.c) renders either as a table, JSON or Prometheus
 * text; html.c renders a snapshot as one self-contained page. */
#ifndef CKSTAT_STAT_H
#define CKSTAT_STAT_H

#include "ckalloc/ckalloc.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CKSTAT_TOP 16 /* largest live allocations shown */

typedef struct ckstat_top {
    uint64_t addr, size, requested;
    uint64_t stream;
    char tag[32]; /* "" when untagged */
} ckstat_top;

/* One point of the memory timeline (snapshots only). */
typedef struct ckstat_point {
    double t_s;      /* seconds since the first point */
    uint64_t live;   /* allocated_bytes */
    uint64_t reserved;
    uint64_t physical;
    uint64_t offloaded; /* the tier engine's bytes off the device (0 in older snapshots) */
    uint64_t dropped;
} ckstat_point;

/* One bucket of the whole-run history (snapshots only): consecutive
 * operations with the min (lo) and max (hi) of each byte count after them. */
typedef struct ckstat_bucket {
    double t0_s, t1_s; /* first and last operation, seconds since the pool was created */
    uint64_t records;
    ckstat_point lo, hi; /* t_s unused */
} ckstat_bucket;

/* Per-tag totals (snapshots only; "untagged" until tags exist). */
typedef struct ckstat_tagrow {
    char tag[32];
    uint64_t count, bytes;
} ckstat_tagrow;

typedef struct ckstat_pool {
    int device;
    char backend[16];
    ck_stats stats;          /* counters, peaks, budget, largest_free */
    ckstat_top top[CKSTAT_TOP];
    int ntop;
    int top_fresh;           /* live: 1 if the owner refreshed top[] for this read */
    double top_age_s;        /* live: age of top[] when not fresh */
    ckstat_point *timeline;  /* malloc'ed; NULL for live reads */
    size_t npoints;
    double ring_t0_s;        /* timeline[0] in seconds since the pool was created (0: unknown) */
    ckstat_bucket *history;  /* malloc'ed; NULL for live reads and older snapshots */
    size_t nhistory;
    uint64_t history_span;   /* operations per full bucket */
    uint64_t history_total;  /* operations in the run */
    double history_end_s;    /* when the snapshot was taken, seconds since the pool was created */
    int history_timed;       /* 0: the pool did not stamp its operations (times are 0) */
    ckstat_tagrow *tags;     /* malloc'ed; NULL for live reads */
    size_t ntags;
    uint64_t nsegments, nblocks; /* snapshots: rows in the file */
} ckstat_pool;

typedef struct ckstat_report {
    int pid;
    char cmd[256];
    char source[512];        /* "live" or the snapshot path */
    double taken_at;         /* unix seconds */
    ckstat_pool *pools;      /* malloc'ed */
    size_t npools;
} ckstat_report;

typedef enum ckstat_fmt { CKSTAT_TABLE, CKSTAT_JSON, CKSTAT_PROMETHEUS } ckstat_fmt;

/* report.c */
void ckstat_report_free(ckstat_report *r);
void ckstat_print(FILE *out, const ckstat_report *r, ckstat_fmt fmt);
/* Several processes: TABLE one line each, JSON an array of reports,
 * PROMETHEUS one exposition with every process's samples. */
void ckstat_print_list(FILE *out, const ckstat_report *r, size_t n, ckstat_fmt fmt);

/* live.c: pid's segment as a report; the owner is asked for its top list
 * and waited for up to wait_ms. 0 on success; else 1 with err holding one
 * line (the pid is not using ckalloc, is gone, or its segment is ignored). */
int ckstat_live_read(int pid, int wait_ms, ckstat_report *out, char *err, size_t errn);
/* live.c: every process using ckalloc (counters only, no top lists);
 * ignored segments get one line each on err. -1 if /dev/shm is unreadable. */
int ckstat_live_all(ckstat_report **out, size_t *n, FILE *err);

/* snapshot.c: 0 on success; else err holds "PATH: what is wrong". */
int ckstat_load_snapshot(const char *path, ckstat_report *out, char *err, size_t errn);
/* The same from len bytes in memory (name is used in messages; the fuzzer's entry). */
int ckstat_parse_snapshot(const char *buf, size_t len, const char *name, ckstat_report *out,
                          char *err, size_t errn);
/* html.c: 0 on success; else err holds the reason. */
int ckstat_write_html(const ckstat_report *r, const char *out_path, char *err, size_t errn);

#endif
