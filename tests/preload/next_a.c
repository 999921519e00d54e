/* dlsym(RTLD_NEXT) from a library must find the definition after that
 * library, not after the preload library that hooks dlsym. */
#include <dlfcn.h>

__attribute__((visibility("default"))) int cknext_probe(void) { return 1; }

__attribute__((visibility("default"))) int cknext_call_next(void) {
    int (*next)(void) = (int (*)(void))dlsym(RTLD_NEXT, "cknext_probe");
    return next ? next() : -1;
}
