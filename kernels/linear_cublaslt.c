/* The linear op on the cuda backend: one cuBLASLt matmul, the library
 * loaded at run time (never linked): CKALLOC_CUBLASLT_LIB (a file) when
 * set, else the first candidate that loads and whose cublasLtCreate
 * succeeds (a 13 next to a driver too old for it falls back to 12), tried
 * in this order (ck__lt_candidates), libcublasLt.so.13 before .so.12 in each
 * place: the folders of CKALLOC_CUBLASLT_PATH (colon-separated), the bare
 * sonames (a PyTorch process has already loaded one, and dlopen finds it by
 * its soname; else ld.so's search), then $CUDA_HOME/lib64, $CUDA_PATH/lib64
 * and /usr/local/cuda/lib64 (a toolkit that is not on ld.so's path). The
 * torch wheel's folders (nvidia/cu13/lib, nvidia/cublas/lib) are known only
 * to Python: scripts/gpu-check.sh passes them in CKALLOC_CUBLASLT_PATH.
 *
 * Row-major y[m, nn] = x[m, k] . W[nn, k]^T + b is, read column-major,
 * D (nn x m) = op(A) . B with A = W as a k x nn matrix (ld k) transposed,
 * B = x as k x m (ld k), not transposed, D = y as nn x m (ld nn), and
 * the bias epilogue adding b[nn] to every column of D. Compute type
 * CUBLAS_COMPUTE_32F (fp32 accumulation, no TF32), scale type CUDA_R_32F,
 * alpha 1, beta 0, every matrix of the plan's dtype (f32, f16 or bf16).
 *
 * State: one handle per backend, created at the first linear; for each
 * shape (m, nn, k, dtype, bias or not, and the four pointers' alignments,
 * which the heuristic filters algorithms by) the descriptor, the three
 * layouts and the heuristic's best algorithm are kept in a small cache
 * (LT_CACHE entries, replaced round robin). No workspace is used (the
 * heuristic is asked for workspace-free algorithms), so nothing needs
 * device memory and the call is graph-capture safe. The bias pointer lives
 * in the cached descriptor, so a matmul is queued with the lock held; the
 * queueing is all that happens under it, never a wait. */
#include "cublaslt_abi.h"
#include "internal.h"
#include "launch.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LT_CACHE 16

#define LT_SYMBOLS(X)                    \
    X(cublasLtCreate)                    \
    X(cublasLtDestroy)                   \
    X(cublasLtGetStatusString)           \
    X(cublasLtMatmulDescCreate)          \
    X(cublasLtMatmulDescDestroy)         \
    X(cublasLtMatmulDescSetAttribute)    \
    X(cublasLtMatrixLayoutCreate)        \
    X(cublasLtMatrixLayoutDestroy)       \
    X(cublasLtMatmulPreferenceCreate)    \
    X(cublasLtMatmulPreferenceDestroy)   \
    X(cublasLtMatmulPreferenceSetAttribute) \
    X(cublasLtMatmulAlgoGetHeuristic)    \
    X(cublasLtMatmul)

typedef struct lt_fns {
#define X(name) ck_pfn_##name name;
    LT_SYMBOLS(X)
#undef X
} lt_fns;

typedef struct lt_key {
    int64_t m, nn, k;
    int32_t dtype;
    int32_t bias;
    uint32_t align[4]; /* x, w, out, b */
} lt_key;

typedef struct lt_entry {
    int used;
    lt_key key;
    ck_cublasLtMatmulDesc_t desc;
    ck_cublasLtMatrixLayout_t a, b, d;
    ck_cublasLtMatmulAlgo_t algo;
} lt_entry;

struct ck__lt {
    pthread_mutex_t mu;
    void *lib;
    lt_fns fn;
    ck_cublasLtHandle_t handle;
    lt_entry cache[LT_CACHE];
    unsigned next;
};

ck__lt *ck__lt_new(void) {
    ck__lt *lt = calloc(1, sizeof *lt);
    if (lt)
        pthread_mutex_init(&lt->mu, NULL);
    return lt;
}

static void entry_clear(ck__lt *lt, lt_entry *e) {
    if (e->desc)
        lt->fn.cublasLtMatmulDescDestroy(e->desc);
    if (e->a)
        lt->fn.cublasLtMatrixLayoutDestroy(e->a);
    if (e->b)
        lt->fn.cublasLtMatrixLayoutDestroy(e->b);
    if (e->d)
        lt->fn.cublasLtMatrixLayoutDestroy(e->d);
    memset(e, 0, sizeof *e);
}

int ck__lt_has_handle(ck__lt *lt) {
    if (!lt)
        return 0;
    pthread_mutex_lock(&lt->mu);
    int has = lt->handle != NULL;
    pthread_mutex_unlock(&lt->mu);
    return has;
}

void ck__lt_free(ck__lt *lt, int driver) {
    if (!lt)
        return;
    if (lt->lib) {
        /* Descriptors are host objects: always freed. */
        for (int i = 0; i < LT_CACHE; i++)
            if (lt->cache[i].used)
                entry_clear(lt, &lt->cache[i]);
        if (lt->handle && driver)
            lt->fn.cublasLtDestroy(lt->handle);
        /* The library stays mapped (RTLD_NODELETE): cuBLASLt keeps threads
         * and atexit handlers of its own. */
        dlclose(lt->lib);
    }
    pthread_mutex_destroy(&lt->mu);
    free(lt);
}

static const char *lt_str(const ck__lt *lt, ck_cublasStatus_t s) {
    const char *t = lt->fn.cublasLtGetStatusString ? lt->fn.cublasLtGetStatusString(s) : NULL;
    return t ? t : "unknown cuBLAS status";
}

static ck_status lt_fail(const ck__lt *lt, const char *call, ck_cublasStatus_t s) {
    return ck__err(s == CK_CUBLAS_STATUS_ALLOC_FAILED ? CK_ERR_NOMEM : CK_ERR_BACKEND,
                   "%s failed: %s (cublasStatus_t %d)", call, lt_str(lt, s), (int)s);
}

/* Open one candidate: dlopen, resolve, create a handle (which needs the
 * context current, and fails when the library wants a newer driver). On
 * failure why gets the reason and nothing is kept. */
static int lt_try(ck__lt *lt, const char *name, char *why, size_t why_len) {
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!lib) {
        const char *e = dlerror();
        snprintf(why, why_len, "%s", e ? e : "unknown error");
        return 0;
    }
    lt_fns fn;
#define X(sym)                                                       \
    *(void **)&fn.sym = dlsym(lib, #sym);                            \
    if (!fn.sym) {                                                   \
        snprintf(why, why_len, "%s lacks %s (too old?)", name, #sym); \
        dlclose(lib);                                                \
        return 0;                                                    \
    }
    LT_SYMBOLS(X)
#undef X
    ck_cublasLtHandle_t h = NULL;
    ck_cublasStatus_t r = fn.cublasLtCreate(&h);
    if (r != CK_CUBLAS_STATUS_SUCCESS) {
        const char *t = fn.cublasLtGetStatusString(r);
        snprintf(why, why_len, "%s loads but cublasLtCreate failed: %s (cublasStatus_t %d)", name,
                 t ? t : "?", (int)r);
        dlclose(lib);
        return 0;
    }
    lt->fn = fn;
    lt->lib = lib;
    lt->handle = h;
    return 1;
}

static const char *const lt_sonames[2] = {"libcublasLt.so.13", "libcublasLt.so.12"};

/* dir/soname for both sonames, unless dir is empty, too long or was added. */
static int add_dir(char (*names)[CK_LT_NAME], int n, int max, const char *dir, size_t len) {
    while (len > 1 && dir[len - 1] == '/')
        len--;
    if (!len || len + 20 >= CK_LT_NAME)
        return n;
    for (int k = 0; k < 2; k++) {
        char path[CK_LT_NAME];
        snprintf(path, sizeof path, "%.*s/%s", (int)len, dir, lt_sonames[k]);
        int dup = 0;
        for (int i = 0; i < n && !dup; i++)
            dup = strcmp(names[i], path) == 0;
        if (!dup && n < max)
            snprintf(names[n++], CK_LT_NAME, "%s", path);
    }
    return n;
}

int ck__lt_candidates(char (*names)[CK_LT_NAME], int max) {
    int n = 0;
    const char *path = getenv("CKALLOC_CUBLASLT_PATH");
    for (const char *p = path; p && *p;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        n = add_dir(names, n, max, p, len);
        p = end ? end + 1 : p + len;
    }
    for (int k = 0; k < 2 && n < max; k++)
        snprintf(names[n++], CK_LT_NAME, "%s", lt_sonames[k]);
    const char *homes[3] = {getenv("CUDA_HOME"), getenv("CUDA_PATH"), "/usr/local/cuda"};
    for (int h = 0; h < 3; h++) {
        if (!homes[h] || !*homes[h])
            continue;
        char dir[CK_LT_NAME];
        size_t hl = strlen(homes[h]);
        while (hl > 1 && homes[h][hl - 1] == '/')
            hl--;
        int dl = snprintf(dir, sizeof dir, "%.*s/lib64", (int)hl, homes[h]);
        if (dl > 0 && (size_t)dl < sizeof dir)
            n = add_dir(names, n, max, dir, (size_t)dl);
    }
    return n;
}

/* Append sep (when buf is not empty) and text to buf, cut at its end. */
static void cat(char *buf, size_t len, const char *sep, const char *text) {
    size_t l = strlen(buf);
    const char *parts[2] = {l ? sep : "", text};
    for (int i = 0; i < 2; i++) {
        size_t t = strlen(parts[i]);
        if (l + t >= len)
            t = l + 1 < len ? len - l - 1 : 0;
        memcpy(buf + l, parts[i], t);
        l += t;
        buf[l] = '\0';
    }
}

/* The first candidate that loads and starts; lt->mu held. */
static ck_status lt_open(ck__lt *lt) {
    const char *env = getenv("CKALLOC_CUBLASLT_LIB");
    char why[320];
    if (env && *env) {
        if (lt_try(lt, env, why, sizeof why))
            return CK_OK;
        if (strstr(why, "cublasLtCreate failed") || strstr(why, " lacks "))
            return ck__err(CK_ERR_BACKEND,
                           "cuBLASLt (%s, from CKALLOC_CUBLASLT_LIB) cannot be used: %s", env, why);
        return ck__err(CK_ERR_BACKEND,
                       "cuBLASLt (%s, from CKALLOC_CUBLASLT_LIB) not found: %s; a linear replay on "
                       "the cuda backend needs it",
                       env, why);
    }
    char names[CK_LT_MAX_CANDIDATES][CK_LT_NAME];
    int n = ck__lt_candidates(names, CK_LT_MAX_CANDIDATES);
    /* Bare sonames: dlopen's reason. A path that is not there: only listed
     * (searched). One that is there and fails: its reason, as "unusable". */
    char missing[1200] = "", unusable[1400] = "", searched[1400] = "";
    for (int i = 0; i < n; i++) {
        int bare = strchr(names[i], '/') == NULL;
        if (!bare && access(names[i], F_OK) != 0) {
            cat(searched, sizeof searched, ", ", names[i]);
            continue;
        }
        if (lt_try(lt, names[i], why, sizeof why))
            return CK_OK;
        int loaded = strstr(why, "cublasLtCreate failed") || strstr(why, " lacks ");
        if (bare && !loaded) {
            cat(missing, sizeof missing, "; ", why);
        } else {
            /* a file that is there but fails: which one, and why */
            if (!loaded)
                cat(unusable, sizeof unusable, "; ", names[i]);
            cat(unusable, sizeof unusable, loaded ? "; " : ": ", why);
        }
    }
    if (*unusable)
        return ck__err(CK_ERR_BACKEND, "cuBLASLt cannot be used: %s%s%s", unusable,
                       *missing ? "; " : "", missing);
    return ck__err(CK_ERR_BACKEND,
                   "cuBLASLt (libcublasLt.so.13 or .12) not found: %s; not at %s; a linear replay "
                   "on the cuda backend needs it (the CUDA toolkit's, or PyTorch's nvidia-cublas "
                   "package: CKALLOC_CUBLASLT_LIB names the file, CKALLOC_CUBLASLT_PATH folders "
                   "to search first)",
                   missing, *searched ? searched : "(no other place)");
}

static int lt_type(int32_t dtype, ck_cudaDataType_t *t) {
    switch (dtype) {
    case CK_DTYPE_F32: *t = CK_CUDA_R_32F; return 1;
    case CK_DTYPE_F16: *t = CK_CUDA_R_16F; return 1;
    case CK_DTYPE_BF16: *t = CK_CUDA_R_16BF; return 1;
    default: return 0;
    }
}

/* The largest power of two dividing p, capped at 256 (cuBLASLt's default
 * assumption, which an unaligned pointer would break). */
static uint32_t align_of(const void *p) {
    uintptr_t v = (uintptr_t)p;
    uint32_t a = 256;
    while (a > 1 && v % a)
        a >>= 1;
    return a;
}

#define LT_TRY(call, ...)                                   \
    do {                                                    \
        ck_cublasStatus_t s_ = lt->fn.call(__VA_ARGS__);    \
        if (s_ != CK_CUBLAS_STATUS_SUCCESS) {               \
            st = lt_fail(lt, #call, s_);                    \
            goto fail;                                      \
        }                                                   \
    } while (0)

/* Build the cache entry for key; lt->mu held. */
static ck_status entry_make(ck__lt *lt, lt_entry *e, const lt_key *key, const void *bias) {
    ck_status st = CK_OK;
    ck_cudaDataType_t t;
    ck_cublasLtMatmulPreference_t pref = NULL;
    lt_type(key->dtype, &t);
    memset(e, 0, sizeof *e);
    e->key = *key;

    LT_TRY(cublasLtMatmulDescCreate, &e->desc, CK_CUBLAS_COMPUTE_32F, CK_CUDA_R_32F);
    int32_t ta = CK_CUBLAS_OP_T, tb = CK_CUBLAS_OP_N;
    uint32_t epi = key->bias ? CK_CUBLASLT_EPILOGUE_BIAS : CK_CUBLASLT_EPILOGUE_DEFAULT;
    LT_TRY(cublasLtMatmulDescSetAttribute, e->desc, CK_CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    LT_TRY(cublasLtMatmulDescSetAttribute, e->desc, CK_CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    LT_TRY(cublasLtMatmulDescSetAttribute, e->desc, CK_CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
           sizeof epi);
    if (key->bias) {
        /* the heuristic reads the bias pointer's alignment from here */
        LT_TRY(cublasLtMatmulDescSetAttribute, e->desc, CK_CUBLASLT_MATMUL_DESC_BIAS_POINTER,
               &bias, sizeof bias);
        int32_t bt = t;
        LT_TRY(cublasLtMatmulDescSetAttribute, e->desc, CK_CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
               &bt, sizeof bt);
    }
    LT_TRY(cublasLtMatrixLayoutCreate, &e->a, t, (uint64_t)key->k, (uint64_t)key->nn, key->k);
    LT_TRY(cublasLtMatrixLayoutCreate, &e->b, t, (uint64_t)key->k, (uint64_t)key->m, key->k);
    LT_TRY(cublasLtMatrixLayoutCreate, &e->d, t, (uint64_t)key->nn, (uint64_t)key->m, key->nn);

    LT_TRY(cublasLtMatmulPreferenceCreate, &pref);
    uint64_t ws = 0;
    uint32_t al_a = key->align[1], al_b = key->align[0], al_cd = key->align[2];
    LT_TRY(cublasLtMatmulPreferenceSetAttribute, pref, CK_CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
           &ws, sizeof ws);
    LT_TRY(cublasLtMatmulPreferenceSetAttribute, pref, CK_CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
           &al_a, sizeof al_a);
    LT_TRY(cublasLtMatmulPreferenceSetAttribute, pref, CK_CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
           &al_b, sizeof al_b);
    LT_TRY(cublasLtMatmulPreferenceSetAttribute, pref, CK_CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
           &al_cd, sizeof al_cd);
    LT_TRY(cublasLtMatmulPreferenceSetAttribute, pref, CK_CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
           &al_cd, sizeof al_cd);

    ck_cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    int got = 0;
    LT_TRY(cublasLtMatmulAlgoGetHeuristic, lt->handle, e->desc, e->a, e->b, e->d, e->d, pref, 1,
           &res, &got);
    if (got < 1 || res.state != CK_CUBLAS_STATUS_SUCCESS) {
        st = ck__err(CK_ERR_BACKEND,
                     "cuBLASLt has no algorithm for a linear of m=%lld n=%lld k=%lld (%s%s; "
                     "alignment x %u, w %u, out %u bytes, no workspace)",
                     (long long)key->m, (long long)key->nn, (long long)key->k,
                     ck_dtype_name((ck_dtype)key->dtype), key->bias ? ", bias" : "",
                     key->align[0], key->align[1], key->align[2]);
        goto fail;
    }
    e->algo = res.algo;
    lt->fn.cublasLtMatmulPreferenceDestroy(pref);
    e->used = 1;
    return CK_OK;

fail:
    if (pref)
        lt->fn.cublasLtMatmulPreferenceDestroy(pref);
    entry_clear(lt, e);
    return st;
}

static ck_status linear_locked(ck__lt *lt, const ck__plan *p, CUstream s) {
    ck_status st = CK_OK;
    if (!lt->lib && (st = lt_open(lt)) != CK_OK)
        return st;
    ck_cudaDataType_t t;
    if (p->x_dtype != p->out_dtype || !lt_type(p->x_dtype, &t))
        return ck__err(CK_ERR_INVALID, "linear: x is %s and the result %s; cuBLASLt runs f32, f16 "
                       "or bf16 with one dtype throughout",
                       ck_dtype_name((ck_dtype)p->x_dtype), ck_dtype_name((ck_dtype)p->out_dtype));
    if (p->k <= 0)
        return ck__err(CK_ERR_INVALID, "linear: k = %lld; the cuda backend needs k >= 1",
                       (long long)p->k);

    lt_key key;
    memset(&key, 0, sizeof key);
    key.m = p->m;
    key.nn = p->nn;
    key.k = p->k;
    key.dtype = p->x_dtype;
    key.bias = p->b != NULL;
    key.align[0] = align_of(p->x);
    key.align[1] = align_of(p->w);
    key.align[2] = align_of(p->out);
    key.align[3] = p->b ? align_of(p->b) : 0;

    lt_entry *e = NULL;
    for (int i = 0; i < LT_CACHE && !e; i++)
        if (lt->cache[i].used && memcmp(&lt->cache[i].key, &key, sizeof key) == 0)
            e = &lt->cache[i];
    if (!e) {
        e = &lt->cache[lt->next++ % LT_CACHE];
        if (e->used)
            entry_clear(lt, e);
        if ((st = entry_make(lt, e, &key, p->b)) != CK_OK)
            return st;
    } else if (key.bias) {
        const void *bias = p->b;
        ck_cublasStatus_t r = lt->fn.cublasLtMatmulDescSetAttribute(
            e->desc, CK_CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
        if (r != CK_CUBLAS_STATUS_SUCCESS)
            return lt_fail(lt, "cublasLtMatmulDescSetAttribute(BIAS_POINTER)", r);
    }

    const float one = 1.0f, zero = 0.0f;
    ck_cublasStatus_t r = lt->fn.cublasLtMatmul(lt->handle, e->desc, &one, p->w, e->a, p->x, e->b,
                                                &zero, p->out, e->d, p->out, e->d, &e->algo, NULL,
                                                0, (void *)s);
    if (r != CK_CUBLAS_STATUS_SUCCESS)
        return lt_fail(lt, "cublasLtMatmul", r);
    return CK_OK;
}

ck_status ck__lt_linear(ck__lt *lt, const ck__plan *p, CUstream s) {
    pthread_mutex_lock(&lt->mu);
    ck_status st = linear_locked(lt, p, s);
    pthread_mutex_unlock(&lt->mu);
    return st;
}
