#!/usr/bin/env bash
# Everything that needs a real GPU, in two bounded runs made for the device
# tool (about 15 minutes of device time in all, machine starts included):
#
#   bash scripts/gpu-check.sh run1   build + every functional GPU check once
#   bash scripts/gpu-check.sh run2   benchmarks first, then compute-sanitizer
#                                    on ckalloc's kernels only
#
# run1: env (env.txt), build, procaddr (does cuGetProcAddress_v2 return
#   dlsym's address? "same" or "DIFF"), gpu_contract, gpu_kernel_check,
#   gpu_replay, gpu_tier, preload_real (shared and static cudart), torch_train (plain,
#   LD_PRELOAD and pluggable; losses must match). ~4 minutes.
# run2: build (nothing to do when run1's build is still there), bench_replay,
#   bench_replay_torch, bench_cuda_alloc, memcheck on gpu_kernel_check and on
#   preload_real under the preload, racecheck and memcheck on gpu_replay
#   limited to the ck_replay_* kernels (cuBLASLt's are not instrumented).
#   ~5 minutes.
#
# Never installs anything (no network there): the build uses the Debian
# packages scripts/fetch-gpu-deps.sh unpacked into .deps/root here (carry
# ".deps"), or the system's pkg-config when there is no .deps. Only the GPU
# targets are built, with CKALLOC_WERROR=OFF (warnings stay in the log).
#
# Every step runs under `timeout`, and all of them within GPU_CHECK_BUDGET
# seconds (default 400: under the device tool's 420 s timeout_s, so the
# summary is always written). Each step writes one JSON line as it ends:
#   {"run":"run1","step":"gpu_replay","result":"pass","rc":0,"s":12}
# result: pass, skip (exit 77: no device, no torch, no compute-sanitizer),
# fail, timeout, no-time (the budget ran out before it). Output files, all
# flat, written as the run goes (a step that hangs still leaves its log):
#   $OUT/runN.log     every step's output, with a header per step
#   $OUT/runN.jsonl   the step lines, then one summary line
#   $OUT/env.txt      the machine (run1)
#   $OUT/torch.jsonl  torch_train's result lines (run1)
#   $OUT/bench.jsonl  the benchmarks' lines (run2)
# With a real device the step and benchmark lines are also appended to
# bench/results/gpu-<device>.jsonl. Exit 0 when every step passed or was
# skipped, 1 otherwise, 2 bad usage.
#
# Environment: OUT (default BUILD/gpu-out), BUILD (default build-gpu-check),
# CKALLOC_DEPS (default .deps), GPU_CHECK_BUDGET, PYTHON (default python3),
# TORCH_CKALLOC_CONF (default budget=20G).
set -u -o pipefail

usage() { echo "usage: scripts/gpu-check.sh run1|run2" >&2; exit 2; }
[ $# -eq 1 ] || usage
RUN=$1
case $RUN in run1 | run2) ;; *) usage ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2
build=${BUILD:-build-gpu-check}
case $build in /*) ;; *) build=$root/$build ;; esac
deps=${CKALLOC_DEPS:-.deps}
case $deps in /*) ;; *) deps=$root/$deps ;; esac
out=${OUT:-$build/gpu-out}
case $out in /*) ;; *) out=$root/$out ;; esac
py=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET:-400}
case $budget in '' | *[!0-9]*) echo "gpu-check: GPU_CHECK_BUDGET must be whole seconds, not '$budget'" >&2; exit 2 ;; esac
t_start=$SECONDS

mkdir -p "$out" || { echo "gpu-check: cannot create OUT=$out" >&2; exit 2; }
log=$out/$RUN.log res=$out/$RUN.jsonl
: >"$log"
: >"$res"
export PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
export PYTHONPATH=$root/tools/python${PYTHONPATH:+:$PYTHONPATH}

device=$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 |
    tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '-' | tr -s '-' | sed 's/^-//; s/-$//')
results=
if [ -n "$device" ]; then
    mkdir -p bench/results && results=$root/bench/results/gpu-$device.jsonl
fi
keep() { # LINE: also into bench/results when there is a real device
    [ -z "$results" ] || printf '%s\n' "$1" >>"$results"
}

status=0 failed=
record() { # STEP RESULT RC SECONDS [EXTRA JSON FIELDS]
    local line
    line=$(printf '{"run":"%s","step":"%s","result":"%s","rc":%d,"s":%d%s}' \
        "$RUN" "$1" "$2" "$3" "$4" "${5:+,$5}")
    printf '%s\n' "$line" | tee -a "$res"
    keep "$line"
    case $2 in pass | skip) ;; *) status=1 failed=$failed${failed:+,}$1 ;; esac
}

# step NAME SECONDS [--out FILE] CMD...: CMD under timeout (never past the
# budget), its output into the log (stdout into FILE instead, appended, with
# --out). Sets rc, s and step_result (pass, skip on exit 77, fail, timeout,
# no-time); a no-time step is recorded here, the others by the caller.
step() {
    local name=$1 t=$2 to=
    shift 2
    if [ "$1" = --out ]; then to=$2; shift 2; fi
    local left=$((budget - (SECONDS - t_start) - 5))
    if [ $left -lt 10 ]; then
        echo "=== $name: not run, ${left}s of GPU_CHECK_BUDGET left" >>"$log"
        rc=124 s=0 step_result=no-time
        record "$name" no-time 124 0
        return 0
    fi
    [ "$t" -le $left ] || t=$left
    local off t0=$SECONDS
    off=$(stat -c %s "$log")
    echo "=== $name (timeout ${t}s) $(date -u +%T)" >>"$log"
    if [ -n "$to" ]; then
        timeout -k 5 "$t" "$@" >>"$to" 2>>"$log"
    else
        timeout -k 5 "$t" "$@" >>"$log" 2>&1
    fi
    rc=$?
    s=$((SECONDS - t0))
    echo "=== $name rc=$rc ${s}s" >>"$log"
    case $rc in 0) step_result=pass ;; 77) step_result=skip ;; 124 | 137) step_result=timeout ;; *) step_result=fail ;; esac
    case $step_result in fail | timeout) tail -c +$((off + 1)) "$log" | tail -25 >&2 ;; esac
    return 0
}
run_step() { # step, then its JSON line
    step "$@"
    [ "$step_result" = no-time ] || record "$1" "$step_result" $rc $s
}

# ---- build: the GPU targets, from the carried prefix, never apt ----
cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCKALLOC_WERROR=OFF)
if [ -f "$deps/root/.complete" ]; then
    dlib=$deps/root/usr/lib/x86_64-linux-gnu
    # Only the carried prefix: the system's .pc files are out of reach.
    export PKG_CONFIG_LIBDIR=$dlib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$deps/root
    unset PKG_CONFIG_PATH
    export LD_LIBRARY_PATH=$dlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    cmake_args+=(-DPKG_CONFIG_EXECUTABLE="$deps/root/usr/bin/pkgconf")
    deps_from=$deps/root
elif command -v pkg-config >/dev/null 2>&1; then
    deps_from=system
else
    deps_from=
fi
# A new build tree gets Ninja when there is one; an old one keeps its own.
[ -f "$build/CMakeCache.txt" ] || ! command -v ninja >/dev/null 2>&1 || cmake_args+=(-G Ninja)
targets="ckalloc ckalloc_preload ckalloc-stat ckalloc-probe gpu_procaddr gpu_contract gpu_replay gpu_tier gpu_kernel_check
    preload_real preload_real_static bench_replay bench_cuda_alloc"

# cuBLASLt for the programs outside a torch process: the library looks in
# CKALLOC_CUBLASLT_PATH's folders after the bare soname and before the
# toolkit's; add the torch wheel's (nvidia/cu13/lib, nvidia/cublas/lib).
wheel=$(timeout 30 "$py" -c 'import nvidia, os
for p in nvidia.__path__:
    for d in ("cu13", "cublas"):
        q = os.path.join(p, d, "lib")
        if os.path.isdir(q): print(q)' 2>/dev/null | tr '\n' ':' | sed 's/:$//')
[ -z "$wheel" ] || export CKALLOC_CUBLASLT_PATH=${CKALLOC_CUBLASLT_PATH:+$CKALLOC_CUBLASLT_PATH:}$wheel

san=$(command -v compute-sanitizer || true)
[ -n "$san" ] || [ ! -x "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" ] ||
    san=${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer

B=$build T=$build/tests/gpu lib=$build/libckalloc_preload.so

if [ $RUN = run1 ]; then
    {
        echo "date: $(date -u +%FT%TZ) commit: $(git rev-parse --short HEAD 2>/dev/null) device: ${device:-none}"
        timeout 20 nvidia-smi
        grep PRETTY /etc/os-release
        gcc --version | head -1
        cmake --version | head -1
        (nvcc --version || "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" --version) | tail -2
        echo "ninja: $(command -v ninja) pkg-config: $(command -v pkg-config) compute-sanitizer: ${san:-none}"
        echo "packages: ${deps_from:-none}"
        [ -x "$deps/root/usr/bin/pkgconf" ] && echo "pkgconf $("$deps/root/usr/bin/pkgconf" --version)"
        timeout 60 "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
        echo "CKALLOC_CUBLASLT_PATH=${CKALLOC_CUBLASLT_PATH:-unset} CUDA_HOME=${CUDA_HOME:-unset}"
        ldconfig -p | grep -E 'libcuda\.so|cublasLt|cudart'
        nproc
        free -g | head -2
        df -h /dev/shm . | tail -2
    } >"$out/env.txt" 2>&1
fi

if [ -n "$deps_from" ]; then
    # shellcheck disable=SC2016 # expanded by the inner shell
    run_step build 240 bash -c 'echo "gpu-check: packages from $0"; b=$1 t=$2; shift 2
        cmake -S . -B "$b" "$@" && cmake --build "$b" -j"$(nproc)" --target $t' \
        "$deps_from" "$build" "$targets" "${cmake_args[@]}"
else
    run_step build 10 sh -c 'echo "gpu-check: no pkg-config and no $1/root/.complete: run scripts/fetch-gpu-deps.sh on a machine with apt, then carry .deps"; exit 1' sh "$deps"
fi
if [ $rc -ne 0 ]; then
    printf '{"run":"%s","step":"summary","ok":false,"failed":"build","s":%d}\n' \
        "$RUN" $((SECONDS - t_start)) | tee -a "$res"
    exit 1
fi

if [ $RUN = run1 ]; then
    # procaddr: a JSON line of its own with the answer.
    case_=
    step procaddr 20 "$T/gpu_procaddr"
    if [ "$step_result" != no-time ]; then
        case_=$(grep -o '"procaddr":"[A-Za-z]*"' "$log" | tail -1 | cut -d'"' -f4)
        r=$step_result
        [ $rc -eq 1 ] && [ "$case_" = DIFF ] && r=pass # an answer, not a failure
        record procaddr "$r" $rc $s "\"case\":\"${case_:-none}\""
    fi
    case $case_ in
    same) echo "procaddr: same (cuGetProcAddress_v2 returns the exported functions: address matching holds)" ;;
    DIFF) echo "procaddr: DIFF (cuGetProcAddress_v2 returns other addresses: only the preload's base-name matching catches cudart's lookups)" ;;
    esac
    run_step gpu_contract 60 "$T/gpu_contract"
    run_step gpu_kernel_check 30 "$T/gpu_kernel_check"
    run_step gpu_replay 120 "$T/gpu_replay"
    run_step gpu_tier 60 "$T/gpu_tier"
    run_step preload_real 45 sh tests/gpu/preload_real.sh "$T/preload_real" "$lib" "$py" "$B/preload-work"
    run_step preload_real_static 45 sh tests/gpu/preload_real.sh "$T/preload_real_static" "$lib" "$py" "$B/preload-work"
    : >"$out/torch.jsonl"
    run_step torch_train 200 --out "$out/torch.jsonl" "$py" tests/gpu/torch_train.py --mode all \
        --lib "$lib" --conf "${TORCH_CKALLOC_CONF:-budget=20G}" --rtol 1e-4 --timeout 60 \
        --stat-tool "$B/tools/ckalloc-stat"
    while IFS= read -r l; do case $l in "{"*) keep "$l" ;; esac; done <"$out/torch.jsonl"
else
    : >"$out/bench.jsonl"
    run_step bench_replay 60 --out "$out/bench.jsonl" "$B/bench/gpu/bench_replay"
    run_step bench_replay_torch 90 --out "$out/bench.jsonl" "$py" bench/bench_replay_torch.py \
        --lib "$B/libckalloc.so" --sizes-mib 64,1024
    run_step bench_cuda_alloc 45 --out "$out/bench.jsonl" "$B/bench/bench_cuda_alloc" 5000
    while IFS= read -r l; do case $l in "{"*) keep "$l" ;; esac; done <"$out/bench.jsonl"
    # The device's hardware profile (policy/hardware format) into $OUT/probe.yaml;
    # "no GPU to measure" is a skip.
    run_step probe 90 sh -c 'o=$("$1" -o "$2" 2>&1); rc=$?; echo "$o"
        case $o in *"no GPU to measure"*) exit 77 ;; esac; exit $rc' sh "$B/tools/ckalloc-probe" "$out/probe.yaml"

    # compute-sanitizer: the programs with kernels on pool memory, and the
    # replay kernels only (kns=ck_replay: cuBLASLt's kernels are left alone).
    sanitize() { # NAME SECONDS TOOL [SANITIZER ARGS] -- CMD...
        local name=$1 t=$2 tool=$3
        shift 3
        if [ -z "$san" ]; then
            echo "=== $name: skipped, compute-sanitizer not found" >>"$log"
            record "$name" skip 77 0 '"why":"no compute-sanitizer"'
            return
        fi
        local sa=()
        while [ "$1" != -- ]; do sa+=("$1"); shift; done
        shift
        step "$name" "$t" "$san" --tool "$tool" --error-exitcode 99 "${sa[@]}" "$@"
        [ "$step_result" != no-time ] || return
        local errs
        errs=$(tail -c 4000 "$log" | grep -oE 'ERROR SUMMARY: [0-9]+' | tail -1 | grep -oE '[0-9]+$')
        record "$name" "$step_result" $rc $s "\"errors\":${errs:-null}"
    }
    export CK_REPLAY_QUICK=1
    sanitize memcheck_kernel_check 45 memcheck -- "$T/gpu_kernel_check"
    # the preload after whatever the sanitizer itself puts in LD_PRELOAD
    sanitize memcheck_preload 60 memcheck --target-processes all -- sh -c \
        'LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD:}$1" CKALLOC_CONF=budget=4G exec "$2"' \
        sh "$lib" "$T/preload_real"
    sanitize racecheck_replay 120 racecheck --kernel-name kns=ck_replay -- "$T/gpu_replay"
    sanitize memcheck_replay 120 memcheck --kernel-name kns=ck_replay -- "$T/gpu_replay"
fi

line=$(printf '{"run":"%s","step":"summary","ok":%s,"failed":"%s","s":%d,"device":"%s"}' "$RUN" \
    "$([ $status -eq 0 ] && echo true || echo false)" "$failed" $((SECONDS - t_start)) "${device:-none}")
printf '%s\n' "$line" | tee -a "$res"
keep "$line"
exit $status
