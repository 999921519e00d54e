/* Fuzz the one-string config parser and the size parser: no input may crash,
 * read out of bounds, or change the options when it is rejected. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    ck_pool_options o, before;
    ck_pool_options_init(&o);
    before = o;
    ck_status st = ck_options_parse(&o, s);
    if (st != CK_OK && memcmp(&o, &before, sizeof o) != 0) abort();
    /* What a parse accepts is what ck_pool_create may rely on: a budget is a
     * size or a share of device memory, never both, and never a fault signal. */
    if (st == CK_OK) {
        if (!(o.budget_fraction >= 0 && o.budget_fraction <= 1)) abort();
        if (o.budget && o.budget_fraction != 0) abort();
        if (o.snapshot_signal && !ck__snapshot_signal_ok(o.snapshot_signal)) abort();
        /* chunk_align is auto (0), off (all ones) or a size of a byte or more:
         * "chunk_align=0" must not parse as auto. */
        if (strstr(s, "chunk_align") == NULL && o.chunk_align != 0) abort();
    }
    uint64_t v;
    (void)ck__parse_size((const char *)data, size, &v);
    free(s);
    return 0;
}
