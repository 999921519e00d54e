#!/usr/bin/env bash
# Everything that needs a real GPU, in one command (run on a GPU machine from
# the repository root):
#
#   scripts/gpu-check.sh
#
#  1. make build (SKIP_BUILD=1 skips it; BUILD=dir picks the build tree);
#  2. ctest -L gpu (the pool contract, kernels on pool memory, the preload
#     library under a plain CUDA program, and torch_train);
#  3. compute-sanitizer (memcheck) over every GPU test binary, plain, and
#     preload_real under LD_PRELOAD too, when compute-sanitizer is found;
#  4. tests/gpu/torch_train.py in the three modes: plain, preload
#     (LD_PRELOAD=build/libckalloc_preload.so
#     PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync) and pluggable
#     (ckalloc.torch.use), with `ckalloc-stat -p PID` run on the preload run
#     while it trains; the final losses must match plain within 1e-4
#     (relative);
#  5. bench_cuda_alloc, when built;
#  6. the replay kernels: tests/gpu/gpu_replay (run by step 2, and under
#     memcheck by step 3) under compute-sanitizer --tool racecheck, then
#     bench_replay (kernels vs a device-to-device copy) and
#     bench/bench_replay_torch.py (the fused chain vs PyTorch eager).
#
# Every result is one JSON line (each with a "check" key), printed and
# written to bench/results/gpu-<device>.jsonl, and to $OUT/gpu-check.jsonl
# when OUT is set (with the logs). Exit 0 when every check passed or was
# skipped, 1 otherwise.
set -u -o pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
build=${BUILD:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
py=${PYTHON:-python3}
torch_conf=${TORCH_CKALLOC_CONF:-budget=20G}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0

device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 |
    tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '-' | tr -s '-' | sed 's/^-//; s/-$//')
if [ -n "$device" ]; then
    mkdir -p bench/results
    results=bench/results/gpu-$device.jsonl
else
    device=no-gpu # nothing to keep in bench/results
    results=$logs/gpu-$device.jsonl
fi
: >"$results.tmp"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    : >"$OUT/gpu-check.jsonl"
fi

emit() { # one JSON line: stdout, the results file, $OUT
    printf '%s\n' "$1"
    printf '%s\n' "$1" >>"$results.tmp"
    [ -z "${OUT:-}" ] || printf '%s\n' "$1" >>"$OUT/gpu-check.jsonl"
}

# json KEY=VALUE ...: one object; VALUE is kept as a number/true/false/null
# when it reads as one, else it is a string.
json() {
    "$py" - "$@" <<'EOF'
import json, sys
o = {}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    try:
        o[k] = json.loads(v)
    except ValueError:
        o[k] = v
print(json.dumps(o))
EOF
}

keep_log() { [ -z "${OUT:-}" ] || cp "$1" "$OUT/" 2>/dev/null; }

emit "$(json check=machine device="$device" host="$(hostname)" \
    gpus="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tr '\n' ';')" \
    nvcc="$( (nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version 2>/dev/null) | tail -1)" \
    commit="$(git rev-parse --short HEAD 2>/dev/null)" date="$(date -u +%FT%TZ)")"

# ---- 1. build ----
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    make build BUILD="$build" >"$logs/build.log" 2>&1
    rc=$?
    keep_log "$logs/build.log"
    emit "$(json check=build rc=$rc ok=$([ $rc -eq 0 ] && echo true || echo false))"
    if [ $rc -ne 0 ]; then
        tail -30 "$logs/build.log" >&2
        mv "$results.tmp" "$results"
        exit 1
    fi
fi
lib=$build/libckalloc_preload.so

# ---- 2. ctest -L gpu ----
ctest --test-dir "$build" -L gpu --output-on-failure --timeout 900 >"$logs/ctest-gpu.log" 2>&1
rc=$?
keep_log "$logs/ctest-gpu.log"
summary=$(grep -E "tests passed|tests failed" "$logs/ctest-gpu.log" | tail -1)
skipped=$(grep -cE "\*\*\*Skipped|Not Run" "$logs/ctest-gpu.log")
failed=$(sed -n '/tests FAILED:/,$p' "$logs/ctest-gpu.log" | grep -E "^[[:space:]]+[0-9]+ - " |
    sed 's/^[[:space:]]*//' | tr '\n' ';')
emit "$(json check=ctest_gpu rc=$rc ok=$([ $rc -eq 0 ] && echo true || echo false) \
    summary="$summary" skipped=$skipped failed="$failed")"
[ $rc -eq 0 ] || { status=1; tail -60 "$logs/ctest-gpu.log" >&2; }

# ---- 3. compute-sanitizer ----
san=$(command -v compute-sanitizer || true)
[ -n "$san" ] || [ ! -x /usr/local/cuda/bin/compute-sanitizer ] || san=/usr/local/cuda/bin/compute-sanitizer
sanitize() { # NAME CMD...: memcheck one program
    sanitize_tool memcheck "$@"
}
sanitize_tool() { # TOOL NAME CMD...: one compute-sanitizer tool over one program
    local tool=$1 name=$2 log
    shift 2
    log=$logs/san-$name.log
    [ "$tool" = memcheck ] || log=$logs/san-$tool-$name.log
    # CK_REPLAY_QUICK: gpu_replay's small sizes (instrumented kernels are slow)
    CK_REPLAY_QUICK=1 "$san" --tool "$tool" --error-exitcode 99 --target-processes all "$@" \
        >"$log" 2>&1
    local rc=$?
    keep_log "$log"
    local errs
    errs=$(grep -oE "ERROR SUMMARY: [0-9]+" "$log" | tail -1 | grep -oE "[0-9]+$")
    local ok=false
    if [ $rc -eq 0 ] || { [ $rc -eq 77 ] && [ "${errs:-0}" = 0 ]; }; then ok=true; fi
    emit "$(json check=compute_sanitizer tool="$tool" binary="$name" rc=$rc errors="${errs:-null}" \
        ok=$ok skipped=$([ $rc -eq 77 ] && echo true || echo false))"
    [ $ok = true ] || { status=1; tail -40 "$log" >&2; }
}
if [ -z "$san" ]; then
    emit "$(json check=compute_sanitizer skipped=true reason="compute-sanitizer not found")"
else
    for b in "$build"/tests/gpu/*; do
        [ -f "$b" ] && [ -x "$b" ] || continue
        sanitize "$(basename "$b")" "$b"
    done
    # The norm kernels share partial sums through shared memory: racecheck.
    if [ -x "$build/tests/gpu/gpu_replay" ]; then
        sanitize_tool racecheck gpu_replay "$build/tests/gpu/gpu_replay"
    fi
    if [ -x "$build/tests/gpu/preload_real" ] && [ -f "$lib" ]; then
        # Appended to whatever the sanitizer itself puts in LD_PRELOAD.
        sanitize preload_real+LD_PRELOAD sh -c \
            'LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD:}$1" CKALLOC_CONF=budget=4G exec "$2"' \
            sh "$lib" "$build/tests/gpu/preload_real"
    fi
fi

# ---- 4. torch: plain / preload / pluggable, ckalloc-stat, loss match ----
stat_args=()
[ -x "$build/tools/ckalloc-stat" ] && stat_args=(--stat-tool "$build/tools/ckalloc-stat")
PYTHONPATH="$root/tools/python${PYTHONPATH:+:$PYTHONPATH}" CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    "$py" tests/gpu/torch_train.py --mode all --lib "$lib" --conf "$torch_conf" \
    "${stat_args[@]}" --rtol 1e-4 >"$logs/torch.jsonl" 2>"$logs/torch.log"
rc=$?
keep_log "$logs/torch.log"
while IFS= read -r line; do
    case $line in
    "{"*) emit "$(printf '%s' "$line" | "$py" -c 'import json,sys
o = json.loads(sys.stdin.read()); print(json.dumps(dict({"check": o.get("test", "torch")}, **o)))')" ;;
    esac
done <"$logs/torch.jsonl"
emit "$(json check=torch_train_all rc=$rc ok=$([ $rc -eq 0 ] || [ $rc -eq 77 ] && echo true || echo false) \
    skipped=$([ $rc -eq 77 ] && echo true || echo false))"
if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    status=1
    tail -40 "$logs/torch.log" >&2
fi

# ---- 5. ckalloc against cudaMalloc / cudaMallocAsync ----
if [ -x "$build/bench/bench_cuda_alloc" ]; then
    "$build/bench/bench_cuda_alloc" >"$logs/bench_cuda.jsonl" 2>"$logs/bench_cuda.log"
    rc=$?
    while IFS= read -r line; do
        case $line in "{"*) emit "$line" ;; esac
    done <"$logs/bench_cuda.jsonl"
    [ $rc -eq 0 ] || [ $rc -eq 77 ] || emit "$(json check=bench_cuda_alloc rc=$rc ok=false)"
fi

# ---- 6. replay kernels: bandwidth against a copy, and against PyTorch ----
bench_lines() { # CHECK FILE: each JSON line of FILE, with a "check" key
    while IFS= read -r line; do
        case $line in
        "{"*) emit "$(printf '%s' "$line" | "$py" -c 'import json,sys
o = json.loads(sys.stdin.read()); print(json.dumps(dict({"check": sys.argv[1]}, **o)))' "$1")" ;;
        esac
    done <"$2"
}
if [ -x "$build/bench/gpu/bench_replay" ]; then
    "$build/bench/gpu/bench_replay" >"$logs/bench_replay.jsonl" 2>"$logs/bench_replay.log"
    rc=$?
    keep_log "$logs/bench_replay.log"
    bench_lines bench_replay "$logs/bench_replay.jsonl"
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        status=1
        emit "$(json check=bench_replay rc=$rc ok=false)"
        tail -20 "$logs/bench_replay.log" >&2
    fi
fi
if [ -f "$build/libckalloc.so" ]; then
    "$py" bench/bench_replay_torch.py --lib "$build/libckalloc.so" \
        >"$logs/bench_replay_torch.jsonl" 2>"$logs/bench_replay_torch.log"
    rc=$?
    keep_log "$logs/bench_replay_torch.log"
    bench_lines bench_replay_torch "$logs/bench_replay_torch.jsonl"
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
        status=1
        emit "$(json check=bench_replay_torch rc=$rc ok=false)"
        tail -20 "$logs/bench_replay_torch.log" >&2
    fi
fi

emit "$(json check=summary ok=$([ $status -eq 0 ] && echo true || echo false) results="$results")"
mv "$results.tmp" "$results"
exit $status
