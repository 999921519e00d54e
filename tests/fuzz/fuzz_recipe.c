/* Fuzz the recipe checker and the CPU reference: any recipe a caller can
 * build must be refused with a sentence or run inside its buffers. Every
 * input gets a buffer exactly as large as its shape says (ASan catches a
 * read past it), and the output one exactly the size ck_recipe_check gives.
 *
 * Layout: byte 0 = counts, then per input 4 + ndim bytes, per step 9 bytes,
 * then fill bytes for the buffers. */
#include "ckalloc/replay.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t n;
} cursor;

static uint8_t next(cursor *c) {
    if (!c->n) return 0;
    c->n--;
    return *c->p++;
}

static float param(uint8_t b) {
    static const float vals[] = {0.0f, 1e-6f, 1e-5f, 0.5f, 1.0f, -1.0f, 0.1f, 0.999f, 10000.0f,
                                 500000.0f, 1e30f, -0.0f, INFINITY, -INFINITY, NAN, 2.0f};
    return vals[b % 16];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cursor c = {data, size};
    ck_recipe r;
    memset(&r, 0, sizeof r); /* not ck_recipe_init: counts come from the bytes */
    uint8_t counts = next(&c);
    r.n_inputs = counts & 15;       /* 0..15: past CK_MAX_INPUTS too */
    r.n_steps = (counts >> 4) % 10; /* 0..9 */
    void *bufs[16] = {0};
    int ni = r.n_inputs < CK_MAX_INPUTS ? r.n_inputs : CK_MAX_INPUTS;
    for (int i = 0; i < ni; i++) {
        ck_tensor *t = &r.inputs[i];
        uint8_t flags = next(&c);
        t->dtype = (ck_dtype)(next(&c) % (CK_DTYPE_COUNT + 1));
        t->ndim = next(&c) % (CK_MAX_DIMS + 2); /* 0..5 */
        size_t elems = 1;
        for (int d = 0; d < t->ndim && d < CK_MAX_DIMS; d++) {
            uint8_t v = next(&c);
            t->shape[d] = (flags & 0x80) && d == 0 ? -(int64_t)v : (int64_t)(v % 17);
            if (t->shape[d] > 0) elems *= (size_t)t->shape[d];
        }
        size_t es = ck_dtype_size(t->dtype) ? ck_dtype_size(t->dtype) : 1;
        if (!(flags & 1)) {
            bufs[i] = malloc(elems * es);
            if (!bufs[i]) goto out;
            for (size_t b = 0; b < elems * es; b++) ((uint8_t *)bufs[i])[b] = next(&c) ^ (uint8_t)b;
            /* positions must stay small enough to mean something, but any value is legal */
            t->data = bufs[i];
        }
    }
    int ns = r.n_steps < CK_MAX_STEPS ? r.n_steps : CK_MAX_STEPS;
    for (int k = 0; k < ns; k++) {
        ck_step *s = &r.steps[k];
        s->op = (ck_op)(next(&c) % (CK_OP_COUNT + 1));
        s->dtype = (ck_dtype)(next(&c) % (CK_DTYPE_COUNT + 1));
        for (int j = 0; j < 3; j++) s->in[j] = (int)(next(&c) % 11) - 1; /* -1..9 */
        uint8_t pb = next(&c);
        s->eps = param(pb);
        s->alpha = param((uint8_t)(pb >> 4));
        s->base = param(next(&c));
        s->p = param(next(&c));
        s->seed = next(&c);
        s->offset = (uint64_t)next(&c) << 56;
    }

    ck_tensor out;
    size_t need = 0;
    double f, rd, wr;
    if (ck_recipe_check(&r, &out, &need) == CK_OK) {
        if (ck_recipe_cost(&r, &f, &rd, &wr) != CK_OK) abort(); /* a checked recipe has a cost */
        void *o = malloc(need ? need : 1);
        if (o) {
            if (ck_replay_host(&r, o, need) != CK_OK) abort(); /* checked: it must run */
            free(o);
        }
    } else {
        if (ck_recipe_cost(&r, &f, &rd, &wr) == CK_OK) abort(); /* the two agree */
        float o[4];
        if (ck_replay_host(&r, o, sizeof o) == CK_OK) abort();
    }
out:
    for (int i = 0; i < 16; i++) free(bufs[i]);
    return 0;
}
