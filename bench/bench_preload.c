/* bench_preload: what the LD_PRELOAD path adds over a linked ck_malloc on a
 * cache hit. Runs under LD_PRELOAD=libckalloc_preload.so with the stand-in
 * driver (tests/fakecuda) as libcuda.so.1; re-executes itself that way when
 * started plainly. In one run, interleaved rounds of:
 *   linked  ck_malloc + ck_free on the preload library's own pool;
 *   driver  cuMemAllocAsync + cuMemFreeAsync (the hooks, through the PLT);
 *   runtime cudaMallocAsync + cudaFreeAsync (the runtime hooks);
 * same sizes, same stream, same pool, so every pair is a cache hit.
 * overhead_ns = (driver pair - linked pair) / 2 calls, median over rounds.
 * The stand-in's cuCtxGetCurrent takes a global mutex (the real driver reads
 * thread-local state), so this overstates the hook cost, if anything.
 *
 * Prints ONE JSON line. Usage: bench_preload [--rounds N] [--pairs N] */
#include "bench_util.h"
#include "ckalloc/ckalloc.h"
#include "cuda_abi.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

CUresult cuInit(unsigned int);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuMemAllocAsync(CUdeviceptr *, size_t, CUstream);
CUresult cuMemFreeAsync(CUdeviceptr, CUstream);
CUresult cuStreamCreate(CUstream *, unsigned int);
int cudaMallocAsync(void **, size_t, CUstream);
int cudaFreeAsync(void *, CUstream);



static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define FAIL(...)                                  \
    do {                                           \
        fprintf(stderr, "bench_preload: " __VA_ARGS__); \
        fprintf(stderr, "\n");                     \
        exit(1);                                   \
    } while (0)

static const size_t sizes[] = {512, 4096, 65536, 1 << 20, 3 << 20, 16 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

int main(int argc, char **argv) {
    int rounds = 31, pairs = 20000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--pairs") == 0 && i + 1 < argc) pairs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc) i++; /* bench.sh's BENCH_ARGS */
        else {
            fprintf(stderr, "usage: bench_preload [--rounds N] [--pairs N]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > 1000 || pairs < 1) {
        fprintf(stderr, "bench_preload: --rounds 1..1000, --pairs >= 1\n");
        return 2;
    }
    ck_pool *(*get_pool)(int) = (ck_pool * (*)(int)) dlsym(RTLD_DEFAULT, "ckalloc_preload_pool");
    if (!get_pool) {
        if (getenv("CKBENCH_REEXEC")) FAIL("LD_PRELOAD did not take");
        setenv("CKBENCH_REEXEC", "1", 1);
        setenv("LD_PRELOAD", CK_PRELOAD_LIB, 1);
        setenv("LD_LIBRARY_PATH", CK_FAKE_DRIVER_DIR, 1);
        setenv("CKALLOC_CONF", "live=0", 1);
        execv("/proc/self/exe", argv);
        FAIL("cannot re-execute under LD_PRELOAD");
    }
    /* Resolved like a linked call would be: a direct pointer to the API. */
    ck_status (*ckm)(ck_pool *, void **, size_t, ck_stream) =
        (ck_status(*)(ck_pool *, void **, size_t, ck_stream))dlsym(RTLD_DEFAULT, "ck_malloc");
    ck_status (*ckf)(ck_pool *, void *, ck_stream) =
        (ck_status(*)(ck_pool *, void *, ck_stream))dlsym(RTLD_DEFAULT, "ck_free");
    CUcontext ctx;
    CUstream s;
    if (cuInit(0) || cuDevicePrimaryCtxRetain(&ctx, 0) || cuCtxSetCurrent(ctx) ||
        cuStreamCreate(&s, 0))
        FAIL("stand-in driver set-up failed");
    ck_pool *pool = get_pool(0);
    if (!pool || !ckm || !ckf) FAIL("no pool from the preload library");

    double *lk = calloc((size_t)rounds, sizeof *lk), *dr = calloc((size_t)rounds, sizeof *dr),
           *rt = calloc((size_t)rounds, sizeof *rt);
    /* Warm: every size cached on this stream. */
    for (size_t k = 0; k < NSIZES; k++) {
        CUdeviceptr d;
        if (cuMemAllocAsync(&d, sizes[k], s) || cuMemFreeAsync(d, s)) FAIL("warm-up failed");
    }
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < pairs; i++) {
            void *p;
            if (ckm(pool, &p, sizes[i % NSIZES], (ck_stream)s) || ckf(pool, p, (ck_stream)s))
                FAIL("ck_malloc/ck_free failed");
        }
        uint64_t t1 = now_ns();
        for (int i = 0; i < pairs; i++) {
            CUdeviceptr d;
            if (cuMemAllocAsync(&d, sizes[i % NSIZES], s) || cuMemFreeAsync(d, s))
                FAIL("cuMemAllocAsync/cuMemFreeAsync failed");
        }
        uint64_t t2 = now_ns();
        for (int i = 0; i < pairs; i++) {
            void *p;
            if (cudaMallocAsync(&p, sizes[i % NSIZES], s) || cudaFreeAsync(p, s))
                FAIL("cudaMallocAsync/cudaFreeAsync failed");
        }
        uint64_t t3 = now_ns();
        lk[r] = (double)(t1 - t0) / pairs;
        dr[r] = (double)(t2 - t1) / pairs;
        rt[r] = (double)(t3 - t2) / pairs;
    }
    ck_stats st = {.struct_size = sizeof st};
    ck_status (*stats)(ck_pool *, ck_stats *) =
        (ck_status(*)(ck_pool *, ck_stats *))dlsym(RTLD_DEFAULT, "ck_get_stats");
    if (!stats || stats(pool, &st) != CK_OK || st.allocation.current != 0) FAIL("pool not empty");
    double l = median(lk, rounds), d = median(dr, rounds), u = median(rt, rounds);
    double over = (d - l) / 2, over_rt = (u - l) / 2;
    printf("{\"bench\":\"preload_overhead\",\"rounds\":%d,\"pairs\":%d,\"linked_pair_ns\":%.1f,"
           "\"driver_hook_pair_ns\":%.1f,\"runtime_hook_pair_ns\":%.1f,"
           "\"overhead_ns_per_call\":%.1f,\"runtime_overhead_ns_per_call\":%.1f,"
           "\"target_ns\":50,\"meets_target\":%s,\"driver\":\"stand-in (tests/fakecuda)\"}\n",
           rounds, pairs, l, d, u, over, over_rt, over <= 50 && over_rt <= 50 ? "true" : "false");
    free(lk);
    free(dr);
    free(rt);
    return 0;
}
