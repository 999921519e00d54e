/* bench_streams: cross-stream reuse under churn, on the host backend.
 *
 * For k streams (made with ck_stream_create; k = 1 uses one such stream),
 * random churn of the bench_util size mix (60% <= 64 KiB, 25% <= 1 MiB,
 * 15% 2-32 MiB) keeps about TARGET bytes live; every block is freed on the
 * stream that allocated it, as a framework does; no budget. Each stream
 * gets a little queued work now and then (a 4 KiB memset into a block it
 * owns), so its frees are really stream-ordered. What is measured:
 * physical / peak live (the pool's peak physical bytes over its peak live
 * bytes: 1.0 is perfect reuse) and the cost per operation.
 *
 *   bench_streams [--ops N] [--live BYTES] [--streams 1,2,4,16] [--seed S] [--sync-free]
 *
 * --sync-free waits for the stream before each free, as the preload's
 * cudaFree does (cudaFree is synchronous).
 *
 * Prints one JSON line: {"bench":"streams", ..., "runs":[{"streams":k,
 * "physical_over_peak_live":x,"ns_per_op":y,...},...]}. Exit 0, 1 when the
 * pool fails, 2 bad usage. */
#include "ckalloc/ckalloc.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct blk {
    void *p;
    size_t n;
    int s;
} blk;

static void die(const char *what) {
    fprintf(stderr, "bench_streams: %s: %s\n", what, ck_last_error());
    exit(1);
}

typedef struct result {
    int k;
    double ratio, ns_per_op;
    long long peak_live, peak_phys, ops;
    unsigned long long maps, unmaps;
} result;

static int sync_free; /* --sync-free */

static result run(int k, long long ops, size_t target, uint64_t seed) {
    ck_pool_options o;
    ck_pool_options_init(&o);
    o.backend = CK_BACKEND_HOST;
    o.host_mem = (uint64_t)64 << 30; /* address space only: untouched memory commits nothing */
    o.live = 0;
    ck_pool *p;
    if (ck_pool_create(&p, &o) != CK_OK) die("pool");
    ck_stream st[64];
    for (int i = 0; i < k; i++)
        if (ck_stream_create(p, &st[i]) != CK_OK) die("stream");
    size_t cap = 1 << 16, n = 0, live = 0;
    blk *b = malloc(cap * sizeof *b);
    if (!b) exit(1);
    uint64_t rng = seed;
    uint64_t t0 = now_ns();
    for (long long op = 0; op < ops; op++) {
        int do_alloc = live < target || n == 0;
        if (!do_alloc && live < target + target / 8) do_alloc = rng_next(&rng) % 2;
        if (do_alloc && n < cap) {
            size_t sz = mix_size(&rng);
            int s = (int)(rng_next(&rng) % (uint64_t)k);
            void *x;
            if (ck_malloc(p, &x, sz, st[s]) != CK_OK) die("ck_malloc");
            if (rng_next(&rng) % 16 == 0 && ck_memset_async(p, x, 1, sz < 4096 ? sz : 4096, st[s]) != CK_OK)
                die("memset");
            b[n++] = (blk){x, sz, s};
            live += sz;
        } else {
            size_t i = (size_t)(rng_next(&rng) % n);
            if (sync_free && ck_stream_synchronize(p, st[b[i].s]) != CK_OK) die("sync");
            if (ck_free(p, b[i].p, st[b[i].s]) != CK_OK) die("ck_free");
            live -= b[i].n;
            b[i] = b[--n];
        }
    }
    uint64_t t1 = now_ns();
    ck_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    if (ck_get_stats(p, &s) != CK_OK) die("stats");
    result r = {k, 0, 0, s.requested_bytes.peak, s.physical_bytes.peak, ops, s.num_map_calls,
                s.num_unmap_calls};
    r.ratio = (double)s.physical_bytes.peak / (double)s.requested_bytes.peak;
    r.ns_per_op = (double)(t1 - t0) / (double)ops;
    for (size_t i = 0; i < n; i++)
        if (ck_free(p, b[i].p, st[b[i].s]) != CK_OK) die("ck_free");
    for (int i = 0; i < k; i++)
        if (ck_stream_destroy(p, st[i]) != CK_OK) die("stream destroy");
    if (ck_pool_destroy(p) != CK_OK) die("destroy");
    free(b);
    return r;
}

int main(int argc, char **argv) {
    long long ops = 200000;
    size_t target = (size_t)2 << 30;
    uint64_t seed = 0x5eed;
    int ks[16] = {1, 2, 4, 16}, nk = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ops") && i + 1 < argc) ops = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--live") && i + 1 < argc) target = (size_t)atoll(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = (uint64_t)atoll(argv[++i]);
        else if (!strcmp(argv[i], "--sync-free")) sync_free = 1;
        else if (!strcmp(argv[i], "--streams") && i + 1 < argc) {
            nk = 0;
            for (char *t = strtok(argv[++i], ","); t && nk < 16; t = strtok(NULL, ",")) ks[nk++] = atoi(t);
        } else {
            fprintf(stderr, "usage: bench_streams [--ops N] [--live BYTES] [--streams 1,2,4,16] [--seed S] [--sync-free]\n");
            return 2;
        }
    }
    if (ops <= 0 || target == 0 || nk == 0 || !seed) {
        fprintf(stderr, "bench_streams: --ops, --live and --seed must be positive\n");
        return 2;
    }
    for (int i = 0; i < nk; i++)
        if (ks[i] < 1 || ks[i] > 64) {
            fprintf(stderr, "bench_streams: a stream count must be 1..64\n");
            return 2;
        }
    char mach[512];
    machine(mach, sizeof mach);
    printf("{\"bench\":\"streams\",\"machine\":\"%s\",\"ops\":%lld,\"target_live\":%zu,\"sync_free\":%s,\"runs\":[",
           mach, ops, target, sync_free ? "true" : "false");
    double worst = 0;
    for (int i = 0; i < nk; i++) {
        result r = run(ks[i], ops, target, seed);
        if (r.ratio > worst) worst = r.ratio;
        printf("%s{\"streams\":%d,\"physical_over_peak_live\":%.4f,\"peak_live\":%lld,\"peak_physical\":%lld,"
               "\"ns_per_op\":%.1f,\"map_calls\":%llu,\"unmap_calls\":%llu}",
               i ? "," : "", r.k, r.ratio, r.peak_live, r.peak_phys, r.ns_per_op, r.maps, r.unmaps);
        fflush(stdout);
    }
    printf("],\"worst_physical_over_peak_live\":%.4f,\"target\":1.20}\n", worst);
    return 0;
}
