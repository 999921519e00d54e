/* Allocation traces in the RMM logging-adaptor CSV format:
 *   Thread,Time,Action,Pointer,Size,Stream
 *   140573312345856,18:31:33.419614,allocate,0x7f8a40000000,1024,0x0
 * Time is HH:MM:SS.micro (wall clock); pointers and streams are hex. Actions:
 * allocate, free, allocate failure ("deallocate" is read as free), and the
 * tier engine's rows, which carry a seventh column:
 *   tag    Pointer, Size (the allocation's), 7th "NAME|TIER" (auto, keep,
 *          offload, recompute)
 *   stash, fetch   Pointer, Size, Stream
 *   step   Size = the step's number (from 1), 7th "begin" or "end"
 * A trace with these rows is ckalloc's own: RMM's readers do not know them. */
#ifndef CK_TRACE_H
#define CK_TRACE_H

#include "ckalloc/ckalloc.h"

#include <stddef.h>
#include <stdint.h>

typedef enum ck_trace_action {
    CK_TRACE_ALLOC = 0,
    CK_TRACE_FREE = 1,
    CK_TRACE_ALLOC_FAIL = 2,
    CK_TRACE_TAG = 3,
    CK_TRACE_STASH = 4,
    CK_TRACE_FETCH = 5,
    CK_TRACE_STEP = 6
} ck_trace_action;

#define CK_TRACE_EXTRA_MAX 80 /* the seventh column, NUL included */

typedef struct ck_trace_rec {
    uint64_t thread;
    uint64_t time_us;  /* microseconds since midnight (or since the epoch if the
                          trace wrote epoch seconds) */
    ck_trace_action action;
    uint64_t ptr;
    uint64_t size;
    uint64_t stream;
    /* tag rows: the name and tier (0..3 as ck_tier); step rows: begin = 1
     * for "begin", 0 for "end" */
    char name[CK_TRACE_EXTRA_MAX];
    int tier;
    int begin;
} ck_trace_rec;

/* ---- writer: buffered, called with the pool lock held ---- */

typedef struct ck_trace_writer ck_trace_writer;

/* Create/truncate path and write the header. CK_ERR_IO names the path. */
ck_status ck__trace_open(const char *path, ck_trace_writer **out);
/* Append one record (cheap: stores raw fields; formatting happens on flush). */
void ck__trace_add(ck_trace_writer *w, ck_trace_action a, uint64_t ptr, uint64_t size,
                   uint64_t stream);
/* A row with a seventh column (tag and step rows: rare, so written through
 * at once, after what is buffered). */
void ck__trace_add_extra(ck_trace_writer *w, ck_trace_action a, uint64_t ptr, uint64_t size,
                         uint64_t stream, const char *extra);
/* Format and write buffered records. */
ck_status ck__trace_flush(ck_trace_writer *w);
/* Flush, close and free. */
ck_status ck__trace_close(ck_trace_writer *w);

/* ---- reader ---- */

typedef enum ck_trace_line_kind {
    CK_TRACE_LINE_RECORD = 0, /* *rec filled */
    CK_TRACE_LINE_SKIP = 1    /* header or blank line */
} ck_trace_line_kind;

/* Parse one line (without its newline; len bytes, not NUL-terminated). On a
 * malformed line returns CK_ERR_INVALID and sets the error sentence to what is
 * wrong (the caller prefixes file:line). */
ck_status ck__trace_parse_line(const char *line, size_t len, ck_trace_rec *rec,
                               ck_trace_line_kind *kind);

#endif
