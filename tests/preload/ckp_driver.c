#define _GNU_SOURCE
/* A driver-API program (links libcuda.so.1, here the stand-in) run with and
 * without LD_PRELOAD=libckalloc_preload.so. With it, every cuMemAlloc* must
 * come from ckalloc's pool, including through cuGetProcAddress and dlsym;
 * foreign and bad pointers must get the driver's own answers.
 *
 *   ckp_driver plain     no preload: allocations reach the driver
 *   ckp_driver preload   the full interposition check (CKALLOC_CONF=budget=1G)
 *   ckp_driver tier      an offload round trip through the preloaded library;
 *                        the program's malloc stays libc's
 */
#include "ckp_check.h"
#include "cuda_abi.h"

#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

CUresult cuInit(unsigned int);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemAllocAsync(CUdeviceptr *, size_t, CUstream);
CUresult cuMemFreeAsync(CUdeviceptr, CUstream);
CUresult cuMemGetInfo_v2(size_t *, size_t *);
CUresult cuStreamCreate(CUstream *, unsigned int);
CUresult cuStreamDestroy_v2(CUstream);
CUresult cuStreamBeginCapture_v2(CUstream, int);
CUresult cuStreamEndCapture(CUstream, void **);
CUresult cuGetProcAddress_v2(const char *, void **, int, unsigned long long, int *);
CUresult ckfake_alloc_direct(CUdeviceptr *, size_t);

#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

static void init(void) {
    CUcontext ctx;
    CHECK(cuInit(0) == CUDA_SUCCESS);
    CHECK(cuDevicePrimaryCtxRetain(&ctx, 0) == CUDA_SUCCESS);
    CHECK(cuCtxSetCurrent(ctx) == CUDA_SUCCESS);
}

static void plain(void) {
    CHECK(!preloaded());
    CUdeviceptr d;
    CHECK(cuMemAlloc_v2(&d, MiB) == CUDA_SUCCESS);
    CHECK(ckfake_memalloc_calls() == 1);
    CHECK(cuMemFree_v2(d) == CUDA_SUCCESS);
    CHECK(cuMemFree_v2(d) == CUDA_ERROR_INVALID_VALUE);
}

static void basic(void) {
    CUdeviceptr d[8];
    for (int i = 0; i < 8; i++) {
        CHECK(cuMemAlloc_v2(&d[i], (size_t)(i + 1) * 3 * MiB + 100) == CUDA_SUCCESS);
        memset((void *)(uintptr_t)d[i], i, (size_t)(i + 1) * 3 * MiB + 100); /* mapped, writable */
    }
    CHECK(ckfake_memalloc_calls() == 0); /* none reached the driver's allocator */
    ck_stats st = pool_stats();
    CHECK(st.allocation.current == 8);
    for (int i = 0; i < 8; i++) CHECK(((unsigned char *)(uintptr_t)d[i])[100] == i);

    /* The budget is what the program sees. */
    size_t f, t;
    CHECK(cuMemGetInfo_v2(&f, &t) == CUDA_SUCCESS);
    CHECK(t == GiB);
    CHECK(f <= t - (size_t)st.allocated_bytes.current);

    for (int i = 0; i < 8; i++) CHECK(cuMemFree_v2(d[i]) == CUDA_SUCCESS);
    CHECK(pool_stats().allocation.current == 0);

    /* Bad pointers get the driver's answer, and change nothing. */
    CHECK(cuMemFree_v2(d[3]) == CUDA_ERROR_INVALID_VALUE); /* double free */
    CUdeviceptr x;
    CHECK(cuMemAlloc_v2(&x, 4 * MiB) == CUDA_SUCCESS);
    CHECK(cuMemFree_v2(x + 4096) == CUDA_ERROR_INVALID_VALUE); /* interior */
    CHECK(pool_stats().allocation.current == 1);
    CHECK(cuMemFree_v2(x) == CUDA_SUCCESS);

    /* A pointer the driver handed out without us goes back to the driver. */
    CUdeviceptr foreign;
    CHECK(ckfake_alloc_direct(&foreign, MiB) == CUDA_SUCCESS);
    unsigned long frees = ckfake_memfree_calls();
    CHECK(cuMemFree_v2(foreign) == CUDA_SUCCESS);
    CHECK(ckfake_memfree_calls() == frees + 1);
    CHECK(ckfake_memalloc_live() == 0);
    CHECK(cuMemFree_v2((CUdeviceptr)0x7000dead0000ull) == CUDA_ERROR_INVALID_VALUE);

    /* Over the budget: the driver's out-of-memory code. */
    CHECK(cuMemAlloc_v2(&x, 2 * GiB) == CUDA_ERROR_OUT_OF_MEMORY);
    CHECK(pool_stats().num_ooms == 1);
}

static void streams_and_lookups(void) {
    unsigned long driver_allocs = ckfake_memalloc_calls();
    CUstream s[3];
    for (int i = 0; i < 3; i++) CHECK(cuStreamCreate(&s[i], 0) == CUDA_SUCCESS);
    CUdeviceptr d[3];
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 3; i++) CHECK(cuMemAllocAsync(&d[i], 5 * MiB, s[i]) == CUDA_SUCCESS);
        for (int i = 0; i < 3; i++) CHECK(cuMemFreeAsync(d[i], s[(i + 1) % 3]) == CUDA_SUCCESS);
    }
    CHECK(pool_stats().allocation.current == 0);

    /* cuGetProcAddress: base names resolve to our hooks. */
    CUresult (*alloc)(CUdeviceptr *, size_t) = NULL;
    CHECK(cuGetProcAddress_v2("cuMemAlloc", (void **)&alloc, 13000, 0, NULL) == CUDA_SUCCESS);
    CHECK(alloc && (void *)alloc == dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"));
    CUdeviceptr y;
    CHECK(alloc(&y, MiB) == CUDA_SUCCESS);
    /* dlsym on the driver's own handle, as cudart and PyTorch do. */
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    CHECK(h);
    CUresult (*gpa)(const char *, void **, int, unsigned long long, int *) = NULL;
    *(void **)&gpa = dlsym(h, "cuGetProcAddress_v2");
    CHECK(gpa && (void *)gpa == (void *)cuGetProcAddress_v2);
    CUresult (*free_async)(CUdeviceptr, CUstream) = NULL;
    CHECK(gpa("cuMemFreeAsync", (void **)&free_async, 13000, 0, NULL) == CUDA_SUCCESS);
    CHECK((void *)free_async == (void *)cuMemFreeAsync);
    CUresult (*free_ptsz)(CUdeviceptr, CUstream) = NULL;
    CHECK(gpa("cuMemFreeAsync", (void **)&free_ptsz, 13000, 2, NULL) == CUDA_SUCCESS);
    CHECK((void *)free_ptsz == dlsym(RTLD_DEFAULT, "cuMemFreeAsync_ptsz"));
    CHECK(free_async(y, s[0]) == CUDA_SUCCESS);
    CHECK(ckfake_memalloc_calls() == driver_allocs);
    CHECK(pool_stats().allocation.current == 0);

    /* Graph capture: allocations on the capturing stream are the driver's;
     * a free of our memory inside the capture waits for its end. */
    CUdeviceptr before, during;
    CHECK(cuMemAllocAsync(&before, 2 * MiB, s[1]) == CUDA_SUCCESS);
    CHECK(cuStreamBeginCapture_v2(s[1], 0) == CUDA_SUCCESS);
    CHECK(cuMemAllocAsync(&during, 2 * MiB, s[1]) == CUDA_SUCCESS);
    CHECK(ckfake_memalloc_calls() == driver_allocs + 1);
    CHECK(cuMemFreeAsync(before, s[1]) == CUDA_SUCCESS);
    CHECK(pool_stats().allocation.current == 1); /* held back */
    CHECK(cuMemFreeAsync(during, s[1]) == CUDA_SUCCESS);
    CHECK(ckfake_memalloc_live() == 0);
    void *graph;
    CHECK(cuStreamEndCapture(s[1], &graph) == CUDA_SUCCESS);
    CHECK(pool_stats().allocation.current == 0);

    /* A stream destroyed after freeing on it: the pool must forget it. */
    CHECK(cuMemAllocAsync(&y, 3 * MiB, s[2]) == CUDA_SUCCESS);
    CHECK(cuMemFreeAsync(y, s[2]) == CUDA_SUCCESS);
    CHECK(cuStreamDestroy_v2(s[2]) == CUDA_SUCCESS);
    for (int i = 0; i < 16; i++) {
        CHECK(cuMemAllocAsync(&y, (size_t)(i + 1) * MiB, s[0]) == CUDA_SUCCESS);
        CHECK(cuMemFreeAsync(y, s[1]) == CUDA_SUCCESS);
    }
    size_t released = 0;
    ck_pool *(*get)(int) = (ck_pool * (*)(int)) dlsym(RTLD_DEFAULT, "ckalloc_preload_pool");
    ck_status (*trim)(ck_pool *, size_t *) =
        (ck_status(*)(ck_pool *, size_t *))dlsym(RTLD_DEFAULT, "ck_trim");
    CHECK(trim(get(0), &released) == CK_OK); /* runs a round over every stream it knows */
    CHECK(cuStreamDestroy_v2(s[0]) == CUDA_SUCCESS);
    CHECK(cuStreamDestroy_v2(s[1]) == CUDA_SUCCESS);
}

static void after_fork(void) {
    CUdeviceptr d;
    CHECK(cuMemAlloc_v2(&d, MiB) == CUDA_SUCCESS);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The child's first allocation makes its own pool. */
        CUdeviceptr c;
        if (cuMemAlloc_v2(&c, MiB) != CUDA_SUCCESS || c == 0) _exit(3);
        if (pool_stats().allocation.current != 1) _exit(4);
        exit(cuMemFree_v2(c) == CUDA_SUCCESS ? 0 : 5);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(pool_stats().allocation.current == 1);
    CHECK(cuMemFree_v2(d) == CUDA_SUCCESS);
}

/* The tier engine through the preload library: a tensor offloaded to pinned
 * host memory and back. jemalloc (when the process has the static TLS to
 * load it) serves that memory from a private arena: it is loaded, yet this
 * program's malloc is still the C library's. */
static void tier(void) {
    typedef ck_status (*tag_fn)(ck_pool *, void *, const char *, int);
    typedef ck_status (*sf_fn)(ck_pool *, void *, ck_stream);
    ck_pool *(*get)(int) = (ck_pool * (*)(int)) dlsym(RTLD_DEFAULT, "ckalloc_preload_pool");
    tag_fn tag = (tag_fn)dlsym(RTLD_DEFAULT, "ck_tag");
    sf_fn stash = (sf_fn)dlsym(RTLD_DEFAULT, "ck_stash"), fetch = (sf_fn)dlsym(RTLD_DEFAULT, "ck_fetch");
    ck_status (*trim)(ck_pool *, size_t *) = (ck_status(*)(ck_pool *, size_t *))dlsym(RTLD_DEFAULT, "ck_trim");
    ck_status (*sync)(ck_pool *, ck_stream) =
        (ck_status(*)(ck_pool *, ck_stream))dlsym(RTLD_DEFAULT, "ck_stream_synchronize");
    CHECK(get && tag && stash && fetch && trim && sync);
    CUdeviceptr d;
    CHECK(cuMemAlloc_v2(&d, 8 * MiB) == CUDA_SUCCESS);
    memset((void *)(uintptr_t)d, 0x3c, 8 * MiB);
    ck_pool *p = get(0);
    CHECK(tag(p, (void *)(uintptr_t)d, "act", 2 /* CK_TIER_OFFLOAD */) == CK_OK);
    CHECK(stash(p, (void *)(uintptr_t)d, NULL) == CK_OK);
    size_t got;
    CHECK(trim(p, &got) == CK_OK);
    CHECK(pool_stats().offloaded_bytes.current == (int64_t)(8 * MiB));
    CHECK(fetch(p, (void *)(uintptr_t)d, NULL) == CK_OK);
    CHECK(sync(p, NULL) == CK_OK);
    for (size_t i = 0; i < 8 * MiB; i += 4096) CHECK(((unsigned char *)(uintptr_t)d)[i] == 0x3c);
    CHECK(cuMemFree_v2(d) == CUDA_SUCCESS);
    Dl_info mi;
    CHECK(dladdr(dlsym(RTLD_DEFAULT, "malloc"), &mi) && mi.dli_fname);
    /* The C library's (or a sanitizer's interceptor), never jemalloc's. */
    CHECK(strstr(mi.dli_fname, "jemalloc") == NULL);
    const char *want = getenv("CKP_EXPECT_JEMALLOC");
    if (want && *want == '1') CHECK(dlopen("libjemalloc.so.2", RTLD_NOW | RTLD_NOLOAD) != NULL);
    printf("tier: malloc from %s; jemalloc %s\n", mi.dli_fname,
           dlopen("libjemalloc.so.2", RTLD_NOW | RTLD_NOLOAD) ? "loaded (private)" : "not loaded");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: ckp_driver plain|preload|tier\n");
        return 2;
    }
    init();
    if (strcmp(argv[1], "plain") == 0) {
        plain();
    } else if (strcmp(argv[1], "tier") == 0) {
        CHECK(preloaded());
        tier();
    } else {
        CHECK(preloaded());
        basic();
        streams_and_lookups();
        after_fork();
    }
    printf("ok: ckp_driver %s\n", argv[1]);
    return 0;
}
