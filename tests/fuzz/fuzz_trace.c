/* libFuzzer target: arbitrary bytes, line by line, into the trace parser.
 * Each line is copied into its own exact-size heap block so that ASan
 * catches any read past len. */
#include "trace.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void parse_one(const uint8_t *p, size_t n) {
    char *copy = malloc(n ? n : 1);
    if (!copy)
        return;
    if (n)
        memcpy(copy, p, n);
    ck_trace_rec rec;
    ck_trace_line_kind kind;
    ck_status st = ck__trace_parse_line(copy, n, &rec, &kind);
    if (st != CK_OK && st != CK_ERR_INVALID)
        abort(); /* the parser only ever says yes or "malformed" */
    if (st == CK_OK && kind == CK_TRACE_LINE_RECORD &&
        ((unsigned)rec.action > CK_TRACE_STEP ||
         /* a tag row: a non-empty, terminated name and a tier of the four */
         (rec.action == CK_TRACE_TAG &&
          (!rec.name[0] || !memchr(rec.name, 0, sizeof rec.name) || rec.tier < 0 || rec.tier > 3)) ||
         (rec.action == CK_TRACE_STEP && rec.begin != 0 && rec.begin != 1)))
        abort();
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\n') {
            parse_one(data + start, i - start);
            start = i + 1;
        }
    }
    return 0;
}
