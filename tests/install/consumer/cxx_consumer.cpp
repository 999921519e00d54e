// A C++ downstream program: the installed headers compile as C++17 with
// -Wall -Wextra -Wpedantic -Werror, a cudaStream_t / cudaEvent_t (declared
// here exactly as CUDA's driver_types.h declares them, so no toolkit is
// needed) goes in where ckalloc wants a ck_stream / ck_event without a cast,
// and the pool works: host backend, a stream, an event, a memset, a replay op.
#include <ckalloc/ckalloc.h>
#include <ckalloc/preload.h>
#include <ckalloc/replay.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <type_traits>

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;

static_assert(std::is_same<ck_stream, cudaStream_t>::value, "ck_stream is cudaStream_t");
static_assert(std::is_same<ck_event, cudaEvent_t>::value, "ck_event is cudaEvent_t");
// The preload entry points are declared with the signatures PyTorch's
// CUDAPluggableAllocator expects.
static_assert(std::is_same<decltype(&ckalloc_torch_malloc),
                           void *(*)(ssize_t, int, cudaStream_t)>::value, "torch malloc");
static_assert(std::is_same<decltype(&ckalloc_torch_free),
                           void (*)(void *, ssize_t, int, cudaStream_t)>::value, "torch free");
static_assert(std::is_same<decltype(&ckalloc_preload_pool), ck_pool *(*)(int)>::value, "pool");

#define CHECK(expr)                                                                        \
    do {                                                                                   \
        if (!(expr)) {                                                                     \
            std::fprintf(stderr, "cxx consumer: %s failed (%s)\n", #expr, ck_last_error()); \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

struct pool_deleter {
    void operator()(ck_pool *p) const { ck_pool_destroy(p); }
};

int main() {
    ck_pool *raw = nullptr;
    CHECK(ck_pool_create_conf(&raw, "backend=host,budget=64M,live=0") == CK_OK);
    std::unique_ptr<ck_pool, pool_deleter> pool(raw);

    cudaStream_t stream = nullptr;
    CHECK(ck_stream_create(pool.get(), &stream) == CK_OK);
    cudaEvent_t done = nullptr;
    CHECK(ck_event_create(pool.get(), &done) == CK_OK);

    // The C++ overload takes a typed pointer; *ptr changes only on success.
    float *x = nullptr;
    CHECK(ck_malloc(pool.get(), &x, 1024 * sizeof(float), stream) == CK_OK);
    CHECK(x != nullptr);
    float *const sentinel = x + 1;
    float *y = sentinel;
    CHECK(ck_malloc(pool.get(), &y, 0, stream) == CK_ERR_INVALID);
    CHECK(y == sentinel);
    CHECK(ck_malloc(pool.get(), static_cast<float **>(nullptr), 512, stream) == CK_ERR_INVALID);
    CHECK(std::strstr(ck_last_error(), "ptr") != nullptr);
    void *v = nullptr; // and the C function itself, as before
    CHECK(ck_malloc(pool.get(), &v, 512, stream) == CK_OK);
    CHECK(ck_free(pool.get(), v, stream) == CK_OK);
    CHECK(ck_memset_async(pool.get(), x, 0, 1024 * sizeof(float), stream) == CK_OK);
    CHECK(ck_event_record(pool.get(), done, stream) == CK_OK);
    CHECK(ck_event_synchronize(pool.get(), done) == CK_OK);
    CHECK(ck_event_query(pool.get(), done) == CK_OK);
    for (int i = 0; i < 1024; i++) CHECK(x[i] == 0.0f);

    for (int i = 0; i < 1024; i++) x[i] = static_cast<float>(i - 512);
    ck_recipe r;
    ck_recipe_init(&r);
    const int64_t shape[] = {1024};
    ck_step *relu = ck_recipe_step(&r, CK_OP_RELU, CK_DTYPE_F32);
    CHECK(relu != nullptr);
    relu->in[0] = ck_recipe_input(&r, x, CK_DTYPE_F32, 1, shape);
    CHECK(ck_replay(pool.get(), &r, x, 1024 * sizeof(float), stream) == CK_OK);
    CHECK(ck_stream_synchronize(pool.get(), stream) == CK_OK);
    CHECK(x[0] == 0.0f && x[1023] == 511.0f);

    ck_stats st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK(ck_get_stats(pool.get(), &st) == CK_OK);
    CHECK(st.allocation.current == 1 && st.requested_bytes.current == 4096);

    CHECK(ck_free(pool.get(), nullptr, stream) == CK_OK); // a no-op, as cudaFree(nullptr)
    CHECK(ck_free(pool.get(), x, stream) == CK_OK);
    CHECK(ck_get_stats(pool.get(), &st) == CK_OK);
    CHECK(st.allocation.current == 0);
    CHECK(ck_event_destroy(pool.get(), done) == CK_OK);
    CHECK(ck_stream_destroy(pool.get(), stream) == CK_OK);
    CHECK(ck_pool_destroy(pool.release()) == CK_OK);
    std::printf("cxx consumer ok: ckalloc %s\n", ck_version());
    return 0;
}
