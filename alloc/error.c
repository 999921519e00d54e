/* Status names and the thread-local error sentence. */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static _Thread_local char tl_error[1024];

CK_API const char *ck_last_error(void) { return tl_error; }

void ck__clear_error(void) { tl_error[0] = '\0'; }

ck_status ck__err(ck_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_error, sizeof tl_error, fmt, ap);
    va_end(ap);
    return s;
}

CK_API const char *ck_status_str(ck_status s) {
    switch (s) {
    case CK_OK: return "CK_OK";
    case CK_ERR_INVALID: return "CK_ERR_INVALID";
    case CK_ERR_NOMEM: return "CK_ERR_NOMEM";
    case CK_ERR_NOT_OWNED: return "CK_ERR_NOT_OWNED";
    case CK_ERR_DOUBLE_FREE: return "CK_ERR_DOUBLE_FREE";
    case CK_ERR_NO_DEVICE: return "CK_ERR_NO_DEVICE";
    case CK_ERR_BACKEND: return "CK_ERR_BACKEND";
    case CK_ERR_IO: return "CK_ERR_IO";
    case CK_ERR_NOT_READY: return "CK_ERR_NOT_READY";
    case CK_ERR_CORRUPT: return "CK_ERR_CORRUPT";
    }
    return "CK_ERR_UNKNOWN";
}

CK_API const char *ck_version(void) { return CKALLOC_VERSION_STRING; }

uint64_t ck__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *ck__fmt_bytes(uint64_t bytes, char *buf, size_t n) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(buf, n, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, n, "%.2f %s", v, units[u]);
    return buf;
}
