/* What the host benchmarks share: the clock, the size mix of the allocation
 * workload (xorshift, fixed seeds), the pair sizes, sorting doubles, and the
 * machine line each result carries. Header-only: every bench_* is one file. */
#ifndef CK_BENCH_UTIL_H
#define CK_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* 60% 512 B-64 KiB, 25% 64 KiB-1 MiB, 15% 2-32 MiB. */
static inline size_t mix_size(uint64_t *rng) {
    uint64_t r = rng_next(rng) % 100, v = rng_next(rng);
    if (r < 60) return 512 + (size_t)(v % (64 * KiB - 512 + 1));
    if (r < 85) return 64 * KiB + (size_t)(v % (MiB - 64 * KiB + 1));
    return 2 * MiB + (size_t)(v % (30 * MiB + 1));
}

/* The sizes a cached malloc+free pair rotates through. */
static const size_t pair_sizes[] = {512, 4 * KiB, 64 * KiB, 300 * KiB, MiB, 4 * MiB, 32 * MiB};
#define NPAIR (sizeof pair_sizes / sizeof pair_sizes[0])

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* "x86_64 <cpu model> (<n> cpus)", safe inside a JSON string. */
static inline void machine(char *out, size_t n) {
    struct utsname u;
    const char *arch = uname(&u) == 0 ? u.machine : "unknown";
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                if (c) {
                    c++;
                    while (*c == ' ' || *c == '\t') c++;
                    c[strcspn(c, "\n")] = '\0';
                    snprintf(model, sizeof model, "%s", c);
                }
                break;
            }
        }
        fclose(f);
    }
    for (char *c = model; *c; c++)
        if (*c == '"' || *c == '\\') *c = ' ';
    snprintf(out, n, "%s %s (%ld cpus)", arch, model, sysconf(_SC_NPROCESSORS_ONLN));
}

#endif
