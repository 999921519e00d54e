/* The same pair on glibc's malloc/free, called through pointers so the
 * compiler cannot drop the pair (bench/callgrind/pair.sh). */
#include <stdlib.h>

void *(*volatile alloc_fn)(size_t) = malloc;
void (*volatile free_fn)(void *) = free;

int main(int argc, char **argv) {
    size_t size = argc > 1 ? strtoull(argv[1], NULL, 0) : 4096;
    long n = argc > 2 ? atol(argv[2]) : 100000;
    void *keep[64];
    for (int i = 0; i < 64; i++) keep[i] = alloc_fn(512 * (size_t)(i + 1) * 7);
    for (long i = 0; i < n; i++) free_fn(alloc_fn(size));
    for (int i = 0; i < 64; i++) free_fn(keep[i]);
    return 0;
}
