// Links libckalloc_preload (ckalloc::preload, or -lckalloc_preload) and calls
// what ckalloc/preload.h declares, as a C++ trainer would. Run with
// CKALLOC_CONF=backend=host so that no GPU is needed.
#include <ckalloc/preload.h>

#include <cstdio>
#include <cstring>

#define CHECK(expr)                                                                           \
    do {                                                                                      \
        if (!(expr)) {                                                                        \
            std::fprintf(stderr, "preload consumer: %s failed (%s)\n", #expr, ck_last_error()); \
            return 1;                                                                         \
        }                                                                                     \
    } while (0)

int main() {
    // Bad input gets NULL and a sentence naming it.
    CHECK(ckalloc_preload_pool(-1) == nullptr);
    CHECK(std::strstr(ck_last_error(), "device -1") != nullptr);
    CHECK(ckalloc_torch_malloc(0, 0, nullptr) == nullptr);
    ckalloc_torch_free(nullptr, 0, 0, nullptr); // a no-op

    ck_pool *pool = ckalloc_preload_pool(0);
    CHECK(pool != nullptr);
    CHECK(std::strcmp(ck_pool_backend(pool), "host") == 0);
    CHECK(ckalloc_preload_pool(0) == pool); // one pool per device
    void *p = ckalloc_torch_malloc(1 << 20, 0, nullptr);
    CHECK(p != nullptr);
    ck_stats st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK(ck_get_stats(pool, &st) == CK_OK);
    CHECK(st.allocation.current == 1 && st.requested_bytes.current == (1 << 20));
    ckalloc_torch_free(p, 1 << 20, 0, nullptr);
    CHECK(ck_get_stats(pool, &st) == CK_OK);
    CHECK(st.allocation.current == 0);
    std::printf("preload consumer ok: ckalloc %s\n", ck_version());
    return 0;
}
