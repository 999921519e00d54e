/* The lookups: dlsym (how cudart and PyTorch load cuGetProcAddress from
 * libcuda.so.1) and the table of names we replace.
 *
 * This file is built without sanitizers: a sanitizer runtime resolves its
 * interceptors with dlsym(RTLD_NEXT, ...) while it initialises, i.e. through
 * this hook, before instrumented code may run. Nothing here calls into
 * instrumented code on that path (names are compared by hand, not strcmp). */
#include "preload.h"

#include <dlfcn.h>
#include <link.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CKP_API __attribute__((visibility("default")))

/* The hooks (hooks.c). */
typedef int cudaError_t;
CKP_API CUresult cuGetProcAddress(const char *, void **, int, unsigned long long);
CKP_API CUresult cuGetProcAddress_v2(const char *, void **, int, unsigned long long, int *);
CKP_API CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CKP_API CUresult cuMemFree_v2(CUdeviceptr);
CKP_API CUresult cuMemAllocAsync(CUdeviceptr *, size_t, CUstream);
CKP_API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *, size_t, CUstream);
CKP_API CUresult cuMemFreeAsync(CUdeviceptr, CUstream);
CKP_API CUresult cuMemFreeAsync_ptsz(CUdeviceptr, CUstream);
CKP_API CUresult cuMemGetInfo_v2(size_t *, size_t *);
CKP_API CUresult cuStreamDestroy_v2(CUstream);
CKP_API CUresult cuStreamBeginCapture_v2(CUstream, int);
CKP_API CUresult cuStreamBeginCapture_v2_ptsz(CUstream, int);
CKP_API CUresult cuStreamEndCapture(CUstream, void **);
CKP_API CUresult cuStreamEndCapture_ptsz(CUstream, void **);
CKP_API cudaError_t cudaMalloc(void **, size_t);
CKP_API cudaError_t cudaFree(void *);
CKP_API cudaError_t cudaMallocAsync(void **, size_t, CUstream);
CKP_API cudaError_t cudaFreeAsync(void *, CUstream);
CKP_API cudaError_t cudaMallocAsync_ptsz(void **, size_t, CUstream);
CKP_API cudaError_t cudaFreeAsync_ptsz(void *, CUstream);
CKP_API cudaError_t cudaMemGetInfo(size_t *, size_t *);

#define H(name) (void *)name
static void *const hook_fns[CKP_NHOOKS] = {
    H(cuGetProcAddress),        H(cuGetProcAddress_v2),          H(cuMemAlloc_v2),
    H(cuMemFree_v2),            H(cuMemAllocAsync),              H(cuMemAllocAsync_ptsz),
    H(cuMemFreeAsync),          H(cuMemFreeAsync_ptsz),          H(cuMemGetInfo_v2),
    H(cuStreamDestroy_v2),      H(cuStreamBeginCapture_v2),      H(cuStreamBeginCapture_v2_ptsz),
    H(cuStreamEndCapture),      H(cuStreamEndCapture_ptsz),      H(cudaMalloc),
    H(cudaFree),                H(cudaMallocAsync),              H(cudaFreeAsync),
    H(cudaMallocAsync_ptsz),    H(cudaFreeAsync_ptsz),           H(cudaMemGetInfo),
};
#undef H
const char *const ckp_hook_names[CKP_NHOOKS] = {
    "cuGetProcAddress",     "cuGetProcAddress_v2",     "cuMemAlloc_v2",
    "cuMemFree_v2",         "cuMemAllocAsync",         "cuMemAllocAsync_ptsz",
    "cuMemFreeAsync",       "cuMemFreeAsync_ptsz",     "cuMemGetInfo_v2",
    "cuStreamDestroy_v2",   "cuStreamBeginCapture_v2", "cuStreamBeginCapture_v2_ptsz",
    "cuStreamEndCapture",   "cuStreamEndCapture_ptsz", "cudaMalloc",
    "cudaFree",             "cudaMallocAsync",         "cudaFreeAsync",
    "cudaMallocAsync_ptsz", "cudaFreeAsync_ptsz",      "cudaMemGetInfo",
};

static int same(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

void *ckp_hook_by_name(const char *name) {
    if (name[0] != 'c' || name[1] != 'u') return NULL; /* the common case: one load */
    for (size_t i = 0; i < CKP_NHOOKS; i++)
        if (same(ckp_hook_names[i], name)) return hook_fns[i];
    return NULL;
}

/* ------------------------------------------------------- real dlsym -- */

/* Resolved on first use by whichever thread gets there; the answer is the
 * same for all, so a race only repeats the work. No pthread_once: a
 * sanitizer runtime intercepts it and is not ready yet on the first call. */
static _Atomic(void *) real_dlsym_ptr;

void *ckp_real_dlsym(void *handle, const char *name) {
    void *f = atomic_load_explicit(&real_dlsym_ptr, memory_order_acquire);
    if (!f) {
        /* dlvsym is not hooked; glibc 2.34 moved dlsym into libc. */
        f = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
        if (!f) f = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
        if (!f) return NULL;
        atomic_store_explicit(&real_dlsym_ptr, f, memory_order_release);
    }
    void *(*real)(void *, const char *);
    *(void **)&real = f;
    return real(handle, name);
}

/* ---------------------------------------------------------- the hook -- */

/* A program that looks up a function we replace gets our hook, whichever
 * handle it asks. Lookups made by this library itself get the real symbol.
 * RTLD_NEXT must mean "after the caller", not "after us": that search is
 * redone here from the caller's position in the link map. */
static _Atomic(struct link_map *) self_map_ptr;

static struct link_map *map_of(const void *addr) {
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1(addr, &info, (void **)&lm, RTLD_DL_LINKMAP)) return NULL;
    return lm;
}

static struct link_map *find_self(void) {
    struct link_map *m = atomic_load_explicit(&self_map_ptr, memory_order_acquire);
    if (!m) {
        m = map_of((const void *)find_self);
        atomic_store_explicit(&self_map_ptr, m, memory_order_release);
    }
    return m;
}

/* The first object strictly between lo and hi (hi NULL: the end) that
 * defines name itself. dlsym on an object's handle also searches its
 * dependencies, so a hit counts only if it lies in that object. */
static void *search_between(struct link_map *lo, struct link_map *hi, const char *name) {
    for (struct link_map *m = lo->l_next; m && m != hi; m = m->l_next) {
        if (!m->l_name || !m->l_name[0]) continue;
        void *h = dlopen(m->l_name, RTLD_LAZY | RTLD_NOLOAD);
        if (!h) continue;
        void *s = ckp_real_dlsym(h, name);
        dlclose(h);
        if (s && map_of(s) == m) return s;
    }
    return NULL;
}

static int comes_after(struct link_map *a, struct link_map *b) { /* a after b? */
    for (struct link_map *m = b ? b->l_next : NULL; m; m = m->l_next)
        if (m == a) return 1;
    return 0;
}

/* dlsym(RTLD_NEXT, name) as the caller meant it. The C library's own search
 * starts after us; it is right whenever its answer lies after the caller.
 * Otherwise the objects between the caller and that answer are searched
 * here. A sanitizer runtime preloaded before us resolves its interceptors
 * this way while it initialises: for it the range is empty, so nothing
 * here calls dlopen before the runtime is ready. */
static void *next_after(struct link_map *self, struct link_map *caller, const char *name) {
    if (comes_after(self, caller)) { /* the caller is before us */
        void *s = search_between(caller, self, name);
        return s ? s : ckp_real_dlsym(RTLD_NEXT, name);
    }
    void *s = ckp_real_dlsym(RTLD_NEXT, name);
    if (!s || comes_after(map_of(s), caller)) return s;
    return search_between(caller, NULL, name);
}

CKP_API void *dlsym(void *handle, const char *name) {
    const void *from = __builtin_return_address(0);
    struct link_map *self = find_self();
    struct link_map *caller = map_of(from);
    if (caller && caller == self) return ckp_real_dlsym(handle, name);
    void *s;
    if (handle == RTLD_NEXT)
        s = caller ? next_after(self, caller, name) : ckp_real_dlsym(RTLD_DEFAULT, name);
    else
        s = ckp_real_dlsym(handle, name);
    if (s) { /* a NULL name finds nothing */
        void *h = ckp_hook_by_name(name);
        if (h && h != s) return h;
    }
    return s;
}
