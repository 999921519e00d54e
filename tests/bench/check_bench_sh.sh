#!/bin/sh
# scripts/bench.sh on a made-up build directory (one fake benchmark, no
# replay tools): results go to BUILD/bench-results.jsonl and the tracked
# bench/results/host-latest.jsonl is left alone unless --save is given.
#   check_bench_sh.sh SOURCE_DIR WORK_DIR
set -u
src=$1 work=$2
rm -rf "$work"
mkdir -p "$work/build/bench" "$work/root/scripts"
fail=0
bad() { echo "FAIL: $*"; fail=1; }

cat >"$work/build/bench/bench_fake" <<'SH'
#!/bin/sh
echo "fake: a line that is not a result"
echo '{"bench":"fake","ns":1}'
SH
chmod +x "$work/build/bench/bench_fake"

tracked=$src/bench/results/host-latest.jsonl
sum() { if [ -f "$1" ]; then cksum <"$1"; else echo absent; fi; }
before=$(sum "$tracked")

# 1. A plain run: stdout and BUILD/bench-results.jsonl get the results.
out=$("$src/scripts/bench.sh" "$work/build" 2>"$work/err1")
rc=$?
[ $rc -eq 0 ] || bad "plain run exited $rc: $(cat "$work/err1")"
printf '%s\n' "$out" | grep -qx '{"bench":"fake","ns":1}' || bad "stdout lacks the fake result: $out"
printf '%s\n' "$out" | grep -q '"bench":"replay","skipped"' || bad "stdout lacks the replay skip line: $out"
printf '%s\n' "$out" | grep -q 'not a result' && bad "a non-JSON line was passed on"
res=$work/build/bench-results.jsonl
[ -f "$res" ] || bad "no $res"
[ "$(cat "$res" 2>/dev/null)" = "$out" ] || bad "bench-results.jsonl differs from stdout"
[ "$(sum "$tracked")" = "$before" ] || bad "bench.sh rewrote the tracked $tracked"

# 2. --save also writes ROOT/bench/results/host-latest.jsonl (a copy of the
#    script in a scratch root, so the real tracked file is not touched).
cp "$src/scripts/bench.sh" "$work/root/scripts/bench.sh"
"$work/root/scripts/bench.sh" --save "$work/build" >/dev/null 2>"$work/err2" ||
    bad "--save run failed: $(cat "$work/err2")"
cmp -s "$work/root/bench/results/host-latest.jsonl" "$res" ||
    bad "--save did not write the results to bench/results/host-latest.jsonl"

# 3. A benchmark that fails is reported and makes the run fail.
printf '#!/bin/sh\nexit 3\n' >"$work/build/bench/bench_broken"
chmod +x "$work/build/bench/bench_broken"
out=$("$src/scripts/bench.sh" "$work/build" 2>/dev/null)
rc=$?
[ $rc -eq 1 ] || bad "a failing benchmark gave exit $rc, expected 1"
printf '%s\n' "$out" | grep -q '"bench":"bench_broken","error":"exited with status 3"' ||
    bad "no error line for bench_broken: $out"

# 3b. A benchmark that exits 77 (skipped: no device) is passed on as its own
#     skip line and does not fail the run (make bench on a machine without a
#     GPU ran into bench_cuda_alloc's 77 and failed).
rm -f "$work/build/bench/bench_broken"
printf '#!/bin/sh\necho "{\\"bench\\":\\"gpu_thing\\",\\"skipped\\":\\"no CUDA device\\"}"\nexit 77\n' >"$work/build/bench/bench_skips"
chmod +x "$work/build/bench/bench_skips"
out=$("$src/scripts/bench.sh" "$work/build" 2>/dev/null)
rc=$?
[ $rc -eq 0 ] || bad "a skipped benchmark gave exit $rc, expected 0: $out"
printf '%s\n' "$out" | grep -qx '{"bench":"gpu_thing","skipped":"no CUDA device"}' ||
    bad "no skip line for bench_skips: $out"
rm -f "$work/build/bench/bench_skips"

# 4. Bad usage.
"$src/scripts/bench.sh" --bogus >/dev/null 2>&1
[ $? -eq 2 ] || bad "--bogus did not exit 2"
"$src/scripts/bench.sh" "$work/nonexistent" >/dev/null 2>"$work/err4"
[ $? -eq 2 ] || bad "a missing build directory did not exit 2"
grep -q 'not found' "$work/err4" || bad "a missing build directory is not named: $(cat "$work/err4")"

[ "$(sum "$tracked")" = "$before" ] || bad "the tracked $tracked changed"
[ $fail = 0 ] && echo "bench.sh check ok"
exit $fail
