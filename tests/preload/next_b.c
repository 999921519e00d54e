__attribute__((visibility("default"))) int cknext_probe(void) { return 2; }
