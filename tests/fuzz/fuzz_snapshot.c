/* libFuzzer target: arbitrary bytes into ckalloc-stat's snapshot reader
 * (tools/stat/snapshot.c). The input is copied into an exact-size heap block
 * so ASan catches any read past its end. A rejected input must come with a
 * message naming the file; an accepted one must hold a model the HTML page
 * can be drawn from (written to /dev/null, so its escaping is fuzzed too). */
#include "stat.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    ckstat_report r;
    char err[512];
    if (ckstat_parse_snapshot(copy, size, "in.json", &r, err, sizeof err) != 0) {
        if (strncmp(err, "in.json: ", 9) != 0) abort();
        if (r.pools || r.npools) abort(); /* nothing half-built is handed back */
        free(copy);
        return 0;
    }
    for (size_t i = 0; i < r.npools; i++) {
        const ckstat_pool *p = &r.pools[i];
        if (p->ntop < 0 || p->ntop > CKSTAT_TOP) abort();
        for (int k = 1; k < p->ntop; k++)
            if (p->top[k].size > p->top[k - 1].size) abort(); /* largest first */
        for (size_t k = 1; k < p->npoints; k++)
            if (p->timeline[k].t_s < p->timeline[k - 1].t_s) abort();
        /* the whole-run history: min <= max, buckets cover the total */
        uint64_t covered = 0;
        for (size_t k = 0; k < p->nhistory; k++) {
            const ckstat_bucket *b = &p->history[k];
            if (b->lo.live > b->hi.live || b->lo.reserved > b->hi.reserved ||
                b->lo.physical > b->hi.physical || b->records == 0 || b->records > p->history_span)
                abort();
            covered += b->records;
        }
        if (p->history && covered != p->history_total) abort();
    }
    if (ckstat_write_html(&r, "/dev/null", err, sizeof err) != 0) abort();
    for (size_t i = 0; i < r.npools; i++) {
        free(r.pools[i].timeline);
        free(r.pools[i].history);
        free(r.pools[i].tags);
    }
    free(r.pools);
    free(copy);
    return 0;
}
