#!/bin/sh
# Runs tests/gpu/preload_real plain, then under LD_PRELOAD=libckalloc_preload.so
# with CKALLOC_CONF=budget=4G, and checks both JSON lines:
#   - both runs pass their own pattern checks;
#   - plain: no ckalloc in the process;
#   - preload: ckalloc is in the process, cudaMemGetInfo's total is at most
#     the 4 GiB budget, every allocation of the program went to the pool, and
#     cudaMalloc(&p, 0) answers as it does without the library;
#   - it prints how the hooks matched cudart's cuGetProcAddress answers (by
#     address or by base name) and fails when none reached them.
# Exit 0 pass, 1 fail, 77 skipped (no CUDA device).
#   preload_real.sh BINARY LIBCKALLOC_PRELOAD PYTHON3 WORKDIR
set -u
bin=$1 lib=$2 py=$3 work=$4
name=$(basename "$bin")
mkdir -p "$work"
plain=$work/$name.plain.json pre=$work/$name.preload.json

env -u LD_PRELOAD -u CKALLOC_CONF "$bin" > "$plain"
rc=$?
cat "$plain"
if [ $rc -eq 77 ]; then
    echo "skipped: no CUDA device"
    exit 77
fi
[ $rc -eq 0 ] || { echo "FAILED: $name (plain) exited $rc"; exit 1; }

LD_PRELOAD="$lib" CKALLOC_CONF=budget=4G "$bin" > "$pre"
rc=$?
cat "$pre"
[ $rc -eq 0 ] || { echo "FAILED: $name under LD_PRELOAD exited $rc"; exit 1; }

"$py" - "$plain" "$pre" <<'PYEOF'
import json, sys
def last(p):
    return json.loads(open(p).read().strip().splitlines()[-1])
plain, pre = last(sys.argv[1]), last(sys.argv[2])
G = 1 << 30
checks = [
    ("plain run passed", plain["ok"]),
    ("plain run has no ckalloc", not plain["ckalloc_in_process"]),
    ("preload run passed", pre["ok"]),
    ("ckalloc is in the preloaded process", pre["ckalloc_in_process"] and "ck" in pre),
    ("cudaMemGetInfo total <= 4 GiB at start (%d)" % pre["mem_total_start"], pre["mem_total_start"] <= 4 * G),
    ("cudaMemGetInfo total <= 4 GiB while busy (%d)" % pre["mem_total_busy"], pre["mem_total_busy"] <= 4 * G),
    ("cudaMemGetInfo total <= 4 GiB at end (%d)" % pre["mem_total_end"], pre["mem_total_end"] <= 4 * G),
    ("cudaMemGetInfo free <= total", pre["mem_free_end"] <= pre["mem_total_end"]),
    ("plain total is the device's (> 4 GiB or equal to it)", plain["mem_total_start"] >= pre["mem_total_start"]),
    ("cudaMalloc(&p, 0) answers alike (%s / %s)" % (plain["malloc0"], pre["malloc0"]), plain["malloc0"] == pre["malloc0"]),
]
# Which case holds on this driver: its cuGetProcAddress answers are its
# exported functions (by address) or internal ones (by base name).
print("hooks matched: %d by address, %d by name" % (pre["hooks_by_address"], pre["hooks_by_name"]))
checks += [
    ("plain run has no hook counts", plain["hooks_by_address"] == -1),
    ("cudart's driver lookups reached the hooks (%d by address, %d by name)"
     % (pre["hooks_by_address"], pre["hooks_by_name"]), pre["hooks_by_address"] + pre["hooks_by_name"] > 0),
]
ck = pre.get("ck", {})
if ck:
    checks += [
        ("pool budget is 4 GiB", ck["budget"] == 4 * G),
        ("every allocation went to the pool (%d >= %d)" % (ck["allocation_allocated"], pre["allocs"]),
         ck["allocation_allocated"] >= pre["allocs"]),
        ("nothing live in the pool at the end", ck["allocation_current"] == 0),
        ("no OOM", ck["num_ooms"] == 0),
    ]
bad = 0
for what, ok in checks:
    print(("ok: " if ok else "FAILED: ") + what)
    bad += not ok
sys.exit(1 if bad else 0)
PYEOF
