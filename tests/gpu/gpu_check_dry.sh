#!/usr/bin/env bash
# scripts/gpu-check.sh end to end on a machine without a GPU (`make
# gpu-check-dry`, part of `make test-all`): what the device tool would get,
# checked before any device time is spent.
#
#   tests/gpu/gpu_check_dry.sh [BUILD_DIR]     (default build-gpu-dry; wiped)
#
#  - .deps is fetched when missing (scripts/fetch-gpu-deps.sh: needs apt and
#    a network here, as on any development machine);
#  - bad usage exits 2;
#  - run1 and run2 from a fresh build tree exit 0, every GPU step skipped
#    (exit 77) and the build passed; the steps are exactly the documented
#    ones, each line valid JSON, then a summary with ok true;
#  - each run's OUT holds at most 8 plain files, flat, with names of letters,
#    digits, '.', '_', '-' only (what the device tool brings back);
#  - configure found check, subunit and cJSON under .deps/root only: every
#    pkg-config result in CMakeCache.txt points there, and a package that is
#    only on the system (jemalloc, when installed) was not found;
#  - a run with no budget left writes every file, a "no-time" line and a
#    failing summary, and exits 1;
#  - without a device nothing is written to bench/results.
# Exit 0 pass, 1 fail.
set -u -o pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
build=${1:-build-gpu-dry}
py=${PYTHON:-python3}
fail=0
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

[ -f .deps/root/.complete ] || scripts/fetch-gpu-deps.sh || { echo "FAIL: cannot fetch .deps"; exit 1; }

for a in "" run3 "run1 run2"; do
    # shellcheck disable=SC2086 # the words are the arguments
    bash scripts/gpu-check.sh $a >/dev/null 2>&1
    rc=$?
    [ $rc -eq 2 ] && ok "gpu-check.sh '$a' exits 2" || bad "gpu-check.sh '$a' exited $rc, not 2"
done
GPU_CHECK_BUDGET=4m bash scripts/gpu-check.sh run1 >/dev/null 2>"$root/$build.usage.err"
rc=$?
{ [ $rc -eq 2 ] && grep -q "GPU_CHECK_BUDGET must be whole seconds, not '4m'" "$root/$build.usage.err"; } &&
    ok "a bad budget exits 2 and says so" || bad "GPU_CHECK_BUDGET=4m: rc $rc, $(cat "$root/$build.usage.err")"
rm -f "$root/$build.usage.err"

rm -rf "$build" "$build-out1" "$build-out2" "$build-out0"
before=$(ls bench/results 2>/dev/null | sort)

check_out() { # RUN OUTDIR RC EXPECTED_STEPS...
    local run=$1 dir=$2 rc=$3
    shift 3
    [ "$rc" -eq 0 ] && ok "$run exits 0" || { bad "$run exited $rc"; tail -30 "$dir/$run.log"; }
    "$py" - "$run" "$dir" "$@" <<'EOF' || fail=1
import json, os, re, sys
run, d, want = sys.argv[1], sys.argv[2], sys.argv[3:]
bad = []
entries = os.listdir(d)
if len(entries) > 8:
    bad.append(f"{len(entries)} entries in OUT (at most 8 come back): {entries}")
for e in entries:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", e):
        bad.append(f"OUT entry {e!r} has a character the device tool drops")
    if not os.path.isfile(os.path.join(d, e)) or os.path.islink(os.path.join(d, e)):
        bad.append(f"OUT entry {e!r} is not a plain file")
lines = []
with open(os.path.join(d, run + ".jsonl")) as f:
    for n, l in enumerate(f, 1):
        try:
            lines.append(json.loads(l))
        except ValueError as ex:
            bad.append(f"{run}.jsonl:{n}: not JSON ({ex}): {l.strip()}")
steps = [o.get("step") for o in lines]
if steps != want + ["summary"]:
    bad.append(f"{run} steps {steps}, want {want + ['summary']}")
for o in lines[:-1]:
    exp = "pass" if o.get("step") == "build" else "skip"
    if o.get("result") != exp or o.get("run") != run:
        bad.append(f"{run} step {o.get('step')}: {o}, want result {exp}")
    if o.get("result") == "skip" and o.get("rc") != 77:
        bad.append(f"{run} step {o.get('step')} skipped with rc {o.get('rc')}")
if lines and (lines[-1].get("ok") is not True or lines[-1].get("device") != "none"):
    bad.append(f"{run} summary {lines[-1]}")
if not os.path.getsize(os.path.join(d, run + ".log")):
    bad.append(f"{run}.log is empty")
for b in bad:
    print("FAIL:", b)
if not bad:
    print(f"ok: {run}: {len(lines) - 1} steps as documented, {len(entries)} flat files with safe names")
sys.exit(1 if bad else 0)
EOF
}

OUT=$build-out1 BUILD=$build bash scripts/gpu-check.sh run1 >"$build.run1.stdout" 2>&1
check_out run1 "$build-out1" $? build procaddr gpu_contract gpu_kernel_check gpu_replay gpu_tier \
    preload_real preload_real_static torch_train
for f in env.txt torch.jsonl; do
    [ -s "$build-out1/$f" ] && ok "run1 wrote $f" || bad "run1 did not write $f"
done
grep -q '"procaddr":"' "$build-out1/run1.jsonl" && bad "procaddr answered without a driver" || true
grep -q '"step":"procaddr".*"case":"none"' "$build-out1/run1.jsonl" && ok "procaddr records its case" ||
    bad "procaddr line has no case"

OUT=$build-out2 BUILD=$build bash scripts/gpu-check.sh run2 >"$build.run2.stdout" 2>&1
check_out run2 "$build-out2" $? build bench_replay bench_replay_torch bench_cuda_alloc probe \
    memcheck_kernel_check memcheck_preload racecheck_replay memcheck_replay
n=$(grep -c '^{' "$build-out2/bench.jsonl")
[ "$n" -eq 3 ] && ok "run2: 3 benchmark lines" || bad "run2: $n benchmark lines in bench.jsonl, want 3"
rm -f "$build.run1.stdout" "$build.run2.stdout"

# Configure saw only the carried prefix.
cache=$build/CMakeCache.txt
deps=$root/.deps/root
grep -q "^PKG_CONFIG_EXECUTABLE:FILEPATH=$deps/usr/bin/pkgconf$" "$cache" && ok "pkgconf from .deps" ||
    bad "PKG_CONFIG_EXECUTABLE is $(grep '^PKG_CONFIG_EXECUTABLE:' "$cache")"
for v in pkgcfg_lib_CHECK_check_pic pkgcfg_lib_CHECK_subunit pkgcfg_lib_CJSON_cjson CHECK_INCLUDEDIR CJSON_INCLUDEDIR YAML_INCLUDEDIR; do
    val=$(grep "^$v:" "$cache" | cut -d= -f2-)
    case $val in "$deps"/*) ok "$v under .deps" ;; *) bad "$v is '$val', not under .deps/root" ;; esac
done
if pkg-config --exists jemalloc 2>/dev/null; then
    grep -q '^JEMALLOC_FOUND:INTERNAL=1' "$cache" && bad "jemalloc (system only) was found: system .pc files in reach" ||
        ok "the system's own packages (jemalloc) out of reach"
fi
grep -q '^CKALLOC_WERROR:BOOL=OFF' "$cache" && ok "built with CKALLOC_WERROR=OFF" || bad "CKALLOC_WERROR not OFF"

# No budget left: every file still written, each step "no-time", exit 1.
OUT=$build-out0 BUILD=$build GPU_CHECK_BUDGET=0 bash scripts/gpu-check.sh run1 >/dev/null 2>&1
rc=$?
[ $rc -eq 1 ] && ok "no budget: exit 1" || bad "no budget: exit $rc, not 1"
grep -q '"step":"build","result":"no-time"' "$build-out0/run1.jsonl" &&
    grep -q '"step":"summary","ok":false,"failed":"build"' "$build-out0/run1.jsonl" &&
    ok "no budget: no-time and a failing summary" || bad "no budget: $(cat "$build-out0/run1.jsonl")"

[ "$(ls bench/results 2>/dev/null | sort)" = "$before" ] && ok "nothing written to bench/results" ||
    bad "bench/results changed without a device"
rm -rf "$build-out0"
[ $fail -eq 0 ] && echo "gpu-check dry run: PASS" || echo "gpu-check dry run: FAIL"
exit $fail
