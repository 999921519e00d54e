/* ckalloc/preload.h: the entry points of libckalloc_preload.so beyond the
 * CUDA functions it interposes.
 *
 * libckalloc_preload.so holds the whole library (every ck_* function) plus
 * one pool per CUDA device behind cudaMalloc, cuMemAlloc and friends. These
 * functions exist only in that library, not in libckalloc.so. Use them from a
 * program started with LD_PRELOAD=libckalloc_preload.so (look them up with
 * dlsym(RTLD_DEFAULT, "ckalloc_preload_pool"); a NULL result means the
 * library is not loaded), or link -lckalloc_preload instead of -lckalloc
 * (CMake: ckalloc::preload). Never link both: each has its own ck_* state.
 *
 * Streams are cudaStream_t / CUstream (ck_stream is the same type). */
#ifndef CKALLOC_PRELOAD_H
#define CKALLOC_PRELOAD_H

#include "ckalloc/ckalloc.h"

#include <sys/types.h> /* ssize_t */

#ifdef __cplusplus
extern "C" {
#endif

/* The pool that serves device's allocations, created on first use with the
 * configuration in CKALLOC_CONF (read when the library loaded), for
 * ck_get_stats, ck_print_stats, ck_trim and the other pool calls. NULL, with
 * ck_last_error() saying why, when device is out of range or the pool cannot
 * be created (no CUDA device, say); such a device's allocations go to the
 * driver. It prints nothing (a hooked allocation that finds no pool prints
 * one line on stderr, once per device). Do not ck_pool_destroy it. */
CK_API ck_pool *ckalloc_preload_pool(int device);

/* How the hooks got into the driver entry points that cuGetProcAddress
 * handed out so far: *by_address counts answers that were the driver's
 * exported functions, *by_name answers that were addresses the driver does
 * not export (matched by the requested base name, ABI version and
 * per-thread flag instead). Either pointer may be NULL. With verbose=1 in
 * CKALLOC_CONF the first match of each kind is also said on stderr. */
CK_API void ckalloc_preload_hook_matches(unsigned long *by_address, unsigned long *by_name);

/* PyTorch's pluggable-allocator pair, the signatures
 * torch.cuda.memory.CUDAPluggableAllocator(path, "ckalloc_torch_malloc",
 * "ckalloc_torch_free") loads. malloc returns size bytes from device's pool,
 * ordered on stream, or NULL (size <= 0, no pool, or no room within the
 * budget). free returns ptr to the pool, ordered on stream; size is ignored,
 * a NULL ptr does nothing, and a pointer the pool does not own prints one
 * line on stderr and changes nothing. */
CK_API void *ckalloc_torch_malloc(ssize_t size, int device, ck_stream stream);
CK_API void ckalloc_torch_free(void *ptr, ssize_t size, int device, ck_stream stream);

#ifdef __cplusplus
}
#endif

#endif /* CKALLOC_PRELOAD_H */
