/* bench_plan: how long the planner takes on the preset cases (issue 13's
 * target: < 100 ms each). For every GPU x model x method of
 * scripts/gen-presets.sh, the longest sequence is searched once (about
 * 13 plans); then the plan at that sequence is timed, best of 5 runs, and
 * the slowest case is reported, with the whole --max-seq search's time.
 * One JSON line. Exit 0, 1 when a case fails, 2 bad usage. */
#include "bench_util.h"
#include "planner.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc) i++; /* scripts/bench.sh's BENCH_ARGS */
        else {
            fprintf(stderr, "usage: bench_plan\n");
            return 2;
        }
    }
    static const char *const gpus[] = {"rtx3090", "rtx4090", "rtx4080", "rtx4060ti-16gb", "rtx3060", "rtx4070"};
    static const char *const models[] = {"llama-2-7b", "llama-3-8b", "mistral-7b", "qwen2-7b"};
    double worst_plan = 0, worst_search = 0;
    uint64_t worst_evaluated = 0;
    int cases = 0;
    char worst[96] = "";
    for (int g = 0; g < 6; g++)
        for (int m = 0; m < 4; m++)
            for (int method = CK_METHOD_LORA; method <= CK_METHOD_QLORA; method++) {
                ck_hw_profile hw;
                ck_model_profile mp;
                if (ck__hw_builtin(gpus[g], &hw) != CK_OK || ck__model_builtin(models[m], &mp) != CK_OK) {
                    fprintf(stderr, "bench_plan: %s\n", ck_last_error());
                    return 1;
                }
                ck_train_shape t = {.method = method, .rank = 16, .dtype_bytes = 2, .batch = 1};
                ck_plan_opts o = {.budget = (uint64_t)((double)hw.memory * 0.92)};
                ck_act_model am;
                ck_plan p;
                uint64_t seq = 0;
                double t0 = now();
                if (ck__plan_max_seq(&mp, &t, &hw, &o, 0.10, 0, &seq, &am, &p) != CK_OK) return 1;
                double search = now() - t0;
                if (!seq) continue;
                cases++;
                double best = 1e9;
                for (int r = 0; r < 5; r++) {
                    t0 = now();
                    if (ck__plan(&am, &hw, &o, &p) != CK_OK) return 1;
                    double d = now() - t0;
                    if (d < best) best = d;
                }
                if (best > worst_plan) {
                    worst_plan = best;
                    worst_evaluated = p.evaluated;
                    snprintf(worst, sizeof worst, "%s %s %s %llu", gpus[g], models[m],
                             method == CK_METHOD_LORA ? "lora" : "qlora", (unsigned long long)seq);
                }
                if (search > worst_search) worst_search = search;
            }
    char mach[512];
    machine(mach, sizeof mach);
    printf("{\"bench\":\"plan\",\"machine\":\"%s\",\"cases\":%d,\"slowest_plan_ms\":%.3f,"
           "\"slowest_case\":\"%s\",\"assignments_evaluated\":%llu,\"slowest_max_seq_search_ms\":%.3f,"
           "\"target_ms\":100,\"meets_target\":%s}\n",
           mach, cases, worst_plan * 1e3, worst, (unsigned long long)worst_evaluated, worst_search * 1e3,
           worst_plan < 0.1 ? "true" : "false");
    return 0;
}
