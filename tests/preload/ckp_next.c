/* Links libcknext_a then libcknext_b: a's RTLD_NEXT lookup must reach b. */
#include <stdio.h>

int cknext_call_next(void);

int main(void) {
    int v = cknext_call_next();
    if (v != 2) {
        fprintf(stderr, "dlsym(RTLD_NEXT) from libcknext_a found %d, expected 2 (libcknext_b)\n", v);
        return 1;
    }
    printf("ok: ckp_next\n");
    return 0;
}
