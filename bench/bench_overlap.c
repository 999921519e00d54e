/* bench_overlap: how much an offloaded training step costs over one that
 * keeps everything, on the host backend's simulated clock.
 *
 * A step of L layers: forward runs each layer's compute on the default
 * stream (a memset of W bytes, charged W / sim_bandwidth), then makes an
 * activation of A bytes and stashes it; backward fetches the activations in
 * reverse, each followed by twice the forward compute, and frees them. The
 * copies run on the engine's copy stream at sim_d2h / sim_h2d; nothing
 * touches memory (sim_nodata=1). The host reaches each fetch when the
 * default stream does: a copy it queues starts no earlier (the host
 * backend's simulated host time). The step time is the default stream's
 * simulated time from the step's first op to its last (an event pair), of
 * the second of two steps (the engine learns the step's shape in the
 * first: with prefetch on, the last window of forward stays resident, as
 * backward needs it first).
 *
 *   bench_overlap [--layers L] [--act MiB] [--compute-ms F] [--pcie GBps]
 *
 * Defaults: 16 layers, 256 MiB activations, 20 ms of forward compute per
 * layer (backward 40), 25 GB/s each way: the compute window (20 ms) is
 * larger than one activation's transfer (10.7 ms). Prints one JSON line:
 * the step time with every activation KEEP, with OFFLOAD and prefetch, and
 * with OFFLOAD and no prefetch, the overheads against KEEP (issue 12's
 * target: <= 1% with prefetch), and the most live tensor bytes on the
 * device at once in the timed step (allocated minus offloaded; the work
 * buffer included). Exit 0, 1 when a call fails, 2 bad usage. */
#include "ckalloc/tier.h"
#include "bench_util.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Live tensors on the device now: allocated minus what the engine holds off
 * it (the pool's physical bytes also count memory it caches). */
static double resident_gib(ck_pool *p) {
    ck_stats t;
    t.struct_size = sizeof t;
    if (ck_get_stats(p, &t) != CK_OK) return 0;
    return (double)(t.allocated_bytes.current - t.offloaded_bytes.current - t.dropped_bytes.current) /
           (double)GiB;
}

static void check(ck_status st, const char *what) {
    if (st != CK_OK) {
        fprintf(stderr, "bench_overlap: %s: %s: %s\n", what, ck_status_str(st), ck_last_error());
        exit(1);
    }
}

#define DEV_BW 100e9 /* bytes/s of the simulated compute (memsets) */

/* One step; returns its simulated ms. mode 0 keep, 1 offload + prefetch,
 * 2 offload without prefetch. */
static double step_ms(int mode, int L, size_t act, double compute_ms, double pcie, double *peak_gib) {
    char conf[256];
    snprintf(conf, sizeof conf,
             "backend=host,host_mem=1T,live=0,sim_clock=1,sim_nodata=1,sim_bandwidth=%.0f,"
             "sim_h2d=%.0f,sim_d2h=%.0f,chunk_align=4M,release=eager,prefetch=%s",
             DEV_BW, pcie, pcie, mode == 2 ? "0" : "512M");
    ck_pool *p;
    check(ck_pool_create_conf(&p, conf), "pool");
    size_t work_n = (size_t)(compute_ms / 1e3 * DEV_BW);
    void *work;
    check(ck_malloc(p, &work, 2 * work_n, NULL), "malloc work");
    ck_event e0, e1;
    check(ck_event_create(p, &e0), "event");
    check(ck_event_create(p, &e1), "event");
    void **a = calloc((size_t)L, sizeof *a);
    if (!a) exit(1);
    *peak_gib = 0;
    /* Two steps; the second is timed (the engine learns the step's shape
     * in the first). */
    for (int stepno = 0; stepno < 2; stepno++) {
    check(ck_step_begin(p), "step_begin");
    check(ck_event_record(p, e0, NULL), "record");
    for (int l = 0; l < L; l++) {
        check(ck_memset_async(p, work, 0, work_n, NULL), "forward compute");
        check(ck_malloc(p, &a[l], act, NULL), "malloc act");
        check(ck_memset_async(p, a[l], 1, act, NULL), "write act");
        char name[32];
        snprintf(name, sizeof name, "layers.%d.act", l);
        check(ck_tag(p, a[l], name, mode ? CK_TIER_OFFLOAD : CK_TIER_KEEP), "tag");
        check(ck_stash(p, a[l], NULL), "stash");
        /* Host time is compressed here (no data moves): let the release
         * happen before the next layer, as it does when the transfer is
         * shorter than a layer's compute. */
        ck__tier_settle(p, a[l], 10);
        double r = resident_gib(p);
        if (stepno == 1 && r > *peak_gib) *peak_gib = r;
    }
    for (int l = L - 1; l >= 0; l--) {
        /* The host reaches each fetch when the stream does (a host that
         * runs ahead would issue the copies early: a prefetch of its own). */
        check(ck_stream_synchronize(p, NULL), "sync");
        check(ck_fetch(p, a[l], NULL), "fetch");
        double r = resident_gib(p);
        if (stepno == 1 && r > *peak_gib) *peak_gib = r;
        check(ck_memset_async(p, work, 0, 2 * work_n, NULL), "backward compute");
        check(ck_free(p, a[l], NULL), "free act");
    }
    check(ck_event_record(p, e1, NULL), "record");
    check(ck_step_end(p), "step_end");
    check(ck_stream_synchronize(p, NULL), "sync");
    }
    float ms = 0;
    check(ck_event_elapsed_ms(p, e0, e1, &ms), "elapsed");

    ck_event_destroy(p, e0);
    ck_event_destroy(p, e1);
    check(ck_free(p, work, NULL), "free work");
    check(ck_pool_destroy(p), "destroy");
    free(a);
    return ms;
}

int main(int argc, char **argv) {
    int L = 16;
    double act_mib = 256, compute_ms = 20, pcie_gbps = 25;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) goto usage;
        if (strcmp(argv[i], "--layers") == 0) L = atoi(argv[++i]);
        else if (strcmp(argv[i], "--act") == 0) act_mib = atof(argv[++i]);
        else if (strcmp(argv[i], "--compute-ms") == 0) compute_ms = atof(argv[++i]);
        else if (strcmp(argv[i], "--pcie") == 0) pcie_gbps = atof(argv[++i]);
        else if (strcmp(argv[i], "--ops") == 0) i++; /* scripts/bench.sh's BENCH_ARGS */
        else goto usage;
    }
    if (L < 1 || L > 4096 || act_mib < 2 || compute_ms <= 0 || pcie_gbps <= 0) goto usage;
    size_t act = (size_t)(act_mib * (double)MiB);
    double pk[3], t[3];
    for (int m = 0; m < 3; m++) t[m] = step_ms(m, L, act, compute_ms, pcie_gbps * 1e9, &pk[m]);
    char mach[512];
    machine(mach, sizeof mach);
    printf("{\"bench\":\"overlap\",\"machine\":\"%s\",\"backend\":\"host (simulated clock)\","
           "\"layers\":%d,\"act_mib\":%.0f,\"forward_compute_ms\":%.1f,\"pcie_gbps\":%.1f,"
           "\"transfer_ms\":%.2f,\"keep_step_ms\":%.2f,\"offload_prefetch_step_ms\":%.2f,"
           "\"offload_no_prefetch_step_ms\":%.2f,\"overhead_prefetch\":%.4f,"
           "\"overhead_no_prefetch\":%.4f,\"resident_peak_gib_keep\":%.2f,"
           "\"resident_peak_gib_offload_prefetch\":%.2f,\"resident_peak_gib_offload_no_prefetch\":%.2f,"
           "\"target_overhead\":0.01,\"meets_target\":%s}\n",
           mach, L, act_mib, compute_ms, pcie_gbps, (double)act / (pcie_gbps * 1e9) * 1e3, t[0], t[1],
           t[2], t[1] / t[0] - 1.0, t[2] / t[0] - 1.0, pk[0], pk[1], pk[2],
           t[1] / t[0] - 1.0 <= 0.01 ? "true" : "false");
    return 0;
usage:
    fprintf(stderr, "usage: bench_overlap [--layers L] [--act MiB] [--compute-ms F] [--pcie GBps]\n");
    return 2;
}
