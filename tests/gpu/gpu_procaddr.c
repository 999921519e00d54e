/* Does the driver's cuGetProcAddress_v2 return the same address as
 * dlsym(libcuda, "<versioned name>")? The preload's driver-level hooks
 * first match what cudart looks up by address; where the answer is "DIFF"
 * only the base-name fallback catches those calls. scripts/gpu-check.sh runs
 * this on the GPU machine and records the answer.
 *
 *   gpu_procaddr [DRIVER]     (default libcuda.so.1)
 *
 * One line per name ("same"/"DIFF", the base name, flags, both addresses),
 * then one JSON line: {"procaddr":"same"|"DIFF"|"none","names":N,"same":S,
 * "diff":K,"absent":A,"diff_names":"a,b"}; "absent" counts names the driver
 * does not export or resolve (no answer either way). Exit 0 no DIFF, 1 any
 * DIFF, 77 no driver or no device (cuInit fails). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef int (*gpa_t)(const char *, void **, int, unsigned long long, int *);
typedef int (*init_t)(unsigned);

int main(int argc, char **argv) {
    const char *lib = argc > 1 ? argv[1] : "libcuda.so.1";
    if (argc > 2) {
        fprintf(stderr, "usage: gpu_procaddr [DRIVER]\n");
        return 2;
    }
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("skipped: no CUDA driver (%s: %s)\n", lib, dlerror());
        return 77;
    }
    init_t init;
    gpa_t gpa;
    *(void **)&init = dlsym(h, "cuInit");
    *(void **)&gpa = dlsym(h, "cuGetProcAddress_v2");
    if (!init || !gpa) {
        printf("skipped: %s lacks cuInit or cuGetProcAddress_v2\n", lib);
        return 77;
    }
    int ir = init(0);
    if (ir != 0) {
        printf("skipped: no CUDA device (cuInit returned %d)\n", ir);
        return 77;
    }
    static const struct {
        const char *base, *exported;
        unsigned long long flags; /* 2: per-thread default stream */
    } t[] = {
        {"cuMemAlloc", "cuMemAlloc_v2", 0},
        {"cuMemFree", "cuMemFree_v2", 0},
        {"cuMemAllocAsync", "cuMemAllocAsync", 0},
        {"cuMemAllocAsync", "cuMemAllocAsync_ptsz", 2},
        {"cuMemFreeAsync", "cuMemFreeAsync", 0},
        {"cuMemFreeAsync", "cuMemFreeAsync_ptsz", 2},
        {"cuMemGetInfo", "cuMemGetInfo_v2", 0},
        {"cuStreamDestroy", "cuStreamDestroy_v2", 0},
        {"cuStreamBeginCapture", "cuStreamBeginCapture_v2", 0},
        {"cuStreamBeginCapture", "cuStreamBeginCapture_v2_ptsz", 2},
        {"cuStreamEndCapture", "cuStreamEndCapture", 0},
        {"cuStreamEndCapture", "cuStreamEndCapture_ptsz", 2},
        {"cuGetProcAddress", "cuGetProcAddress_v2", 0},
    };
    enum { N = sizeof t / sizeof *t };
    /* A name the driver does not export (dlsym NULL) or does not resolve
     * answers nothing either way: counted apart, not as DIFF. */
    int bad = 0, same_n = 0, absent = 0;
    char diff[512] = "";
    for (size_t i = 0; i < N; i++) {
        void *p = NULL;
        int st = -1;
        int r = gpa(t[i].base, &p, 13000, t[i].flags, &st);
        void *d = dlsym(h, t[i].exported);
        Dl_info di;
        memset(&di, 0, sizeof di);
        if (p)
            dladdr(p, &di);
        const char *what;
        if (r != 0 || !p || !d) {
            what = "absent";
            absent++;
        } else if (p == d) {
            what = "same";
            same_n++;
        } else {
            what = "DIFF";
            size_t l = strlen(diff);
            snprintf(diff + l, sizeof diff - l, "%s%s", bad ? "," : "", t[i].exported);
            bad++;
        }
        printf("%-6s %-22s flags=%llu -> %p (%s) dlsym(%s)=%p r=%d st=%d\n", what, t[i].base,
               t[i].flags, p, di.dli_sname ? di.dli_sname : "?", t[i].exported, d, r, st);
    }
    printf("{\"procaddr\":\"%s\",\"names\":%d,\"same\":%d,\"diff\":%d,\"absent\":%d,"
           "\"diff_names\":\"%s\"}\n",
           bad ? "DIFF" : same_n ? "same" : "none", (int)N, same_n, bad, absent, diff);
    return bad ? 1 : 0;
}
