# Command-line tests of ckalloc-replay and ckalloc-tracegen (included from
# tests/CMakeLists.txt). Each test is a small POSIX sh script; JSON results are
# checked with python3. Scripts avoid ';' (CMake list separator) and the
# generator-expression opener, so they pass through add_test unchanged.

find_program(CK_PYTHON3 python3)
set(CK_TOOLS_WORK ${CMAKE_CURRENT_BINARY_DIR}/tools-tests)

# Every script starts with: R = replay, G = tracegen, D = tests/data,
# W = scratch dir, PY = python3; check FILE EXPR evaluates EXPR on the last
# JSON line of FILE (as j) and fails the test when it is false.
set(CK_TOOLS_PRELUDE [=[
set -u
R="$1" G="$2" D="$3" W="$4" PY="$5"
mkdir -p "$W"
check() {
  "$PY" -c 'import json,sys
j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ok=eval(sys.argv[2])
print(("ok: " if ok else "FAILED: ") + sys.argv[2] + "   " + json.dumps(j))
sys.exit(0 if ok else 1)' "$@"
}
expect_rc() {
  if [ "$1" -ne "$2" ]
  then
    echo "FAILED: exit status $1, expected $2"
    exit 1
  fi
}
]=])

function(ck_tool_test name script)
  add_test(NAME ${name}
    COMMAND sh -c "${CK_TOOLS_PRELUDE}${script}" sh
      $<TARGET_FILE:ckalloc-replay> $<TARGET_FILE:ckalloc-tracegen>
      ${CMAKE_CURRENT_SOURCE_DIR}/data ${CK_TOOLS_WORK} ${CK_PYTHON3})
  set_tests_properties(${name} PROPERTIES LABELS "tools" TIMEOUT 300 ${ARGN})
endfunction()

if(NOT CK_PYTHON3)
  message(STATUS "ckalloc: python3 not found: replay/tracegen CLI tests skipped")
  return()
endif()

# ---- replay on hand-written RMM logs ----

ck_tool_test(replay_rmm_sample [=[
"$R" --json "$D/rmm_sample.csv" > "$W/sample.json"
expect_rc $? 0
check "$W/sample.json" 'j["allocs"] == 8 and j["frees"] == 8 and j["ops"] == 17'
check "$W/sample.json" 'j["unmatched_frees"] == 1 and j["input_failures"] == 1 and j["failures"] == 0'
check "$W/sample.json" 'j["streams"] == 2 and j["peak_live_bytes"] == 46661888 and j["backend"] == "host"'
check "$W/sample.json" 'j["trace"].endswith("rmm_sample.csv") and j["peak_physical_bytes"] >= j["peak_live_bytes"]'
check "$W/sample.json" 'all(k in j for k in ("fragmentation", "map_calls", "unmap_calls", "map_unmap_per_op", "ns_per_op", "budget"))'
]=])

ck_tool_test(replay_rmm_sample_table [=[
"$R" "$D/rmm_sample.csv" > "$W/sample.txt"
expect_rc $? 0
grep -q "peak physical" "$W/sample.txt" && grep -q "physical_bytes" "$W/sample.txt"
]=])

ck_tool_test(replay_rmm_budget_conf [=[
"$R" --json --conf budget=1G "$D/rmm_sample.csv" > "$W/sample_budget.json"
expect_rc $? 0
check "$W/sample_budget.json" 'j["budget"] == 1 << 30 and j["backend"] == "host"'
]=])

ck_tool_test(replay_malformed_trace [=[
"$R" --json "$D/rmm_malformed.csv" > /dev/null 2> "$W/malformed.err"
expect_rc $? 2
cat "$W/malformed.err"
grep -q "rmm_malformed.csv:4: column 4 (Pointer): '0x7f2b8eZZ0000'" "$W/malformed.err"
]=])

ck_tool_test(replay_bad_conf [=[
"$R" --conf bogus_key=1 "$D/rmm_sample.csv" > /dev/null 2> "$W/badconf.err"
expect_rc $? 2
cat "$W/badconf.err"
grep -q "bogus_key" "$W/badconf.err"
]=])

# No driver (a library path that does not exist): a clean sentence, exit 1 (a
# failure of the machine, not of the input), no crash.
ck_tool_test(replay_no_cuda_device [=[
CKALLOC_CUDA_LIB="$W/no-such-libcuda.so" "$R" --conf backend=cuda "$D/rmm_sample.csv" > /dev/null 2> "$W/nodev.err"
expect_rc $? 1
cat "$W/nodev.err"
grep -q "no CUDA driver" "$W/nodev.err"
]=])

ck_tool_test(replay_bad_usage [=[
"$R" > /dev/null 2>&1
expect_rc $? 2
"$R" --no-such-option "$D/rmm_sample.csv" > /dev/null 2>&1
expect_rc $? 2
"$R" "$D/rmm_sample.csv" "$D/rmm_sample.csv" > /dev/null 2>&1
expect_rc $? 2
"$R" "$W/no-such-trace.csv" > /dev/null 2> "$W/missing.err"
expect_rc $? 2
grep -q "no-such-trace.csv" "$W/missing.err"
]=])

ck_tool_test(tracegen_bad_usage [=[
"$G" --model 70b -o "$W/x.csv" > /dev/null 2>&1
expect_rc $? 2
"$G" --method qlora -o "$W/x.csv" > /dev/null 2>&1
expect_rc $? 2
"$G" --steps 0 -o "$W/x.csv" > /dev/null 2>&1
expect_rc $? 2
"$G" --streams 3 -o "$W/x.csv" > /dev/null 2>&1
expect_rc $? 2
"$G" --model tiny > /dev/null 2>&1
expect_rc $? 2
"$G" --model tiny -o "$W/x.csv" extra > /dev/null 2>&1
expect_rc $? 2
]=])

# Same options and seed, same bytes.
ck_tool_test(tracegen_deterministic [=[
"$G" --model tiny --steps 2 --seed 7 -o "$W/det1.csv" && "$G" --model tiny --steps 2 --seed 7 -o "$W/det2.csv"
expect_rc $? 0
cmp "$W/det1.csv" "$W/det2.csv"
]=])

# Every variant replays cleanly: frees match allocations, nothing unmatched.
ck_tool_test(tracegen_variants_replay [=[
for v in "--method lora" "--method full" "--checkpointing --streams 2" "--no-vary-seq --batch 2 --seq 512" "--method full --checkpointing --streams 2"
do
  "$G" --model tiny --steps 2 $v --summary -o "$W/var.csv" 2> "$W/var.summary"
  expect_rc $? 0
  "$R" --json "$W/var.csv" > "$W/var.json"
  expect_rc $? 0
  A=$("$PY" -c 'import json,sys
print(json.load(open(sys.argv[1]))["allocs"])' "$W/var.summary")
  check "$W/var.json" "j['allocs'] == $A and j['frees'] == $A and j['unmatched_frees'] == 0 and j['failures'] == 0" || exit 1
done
]=])

# ---- budget: 1.05 x the trace's peak fits, 0.9 x cannot ----

ck_tool_test(tracegen_tiny [=[
"$G" --model tiny --summary -o "$W/tiny.csv" 2> "$W/tiny.summary"
expect_rc $? 0
check "$W/tiny.summary" 'j["allocs"] > 1000 and j["peak_live_bytes"] > 0'
]=] FIXTURES_SETUP ck_tiny_trace)

ck_tool_test(replay_tiny_budget_105 [=[
B=$("$PY" -c 'import json,sys
print(int(json.load(open(sys.argv[1]))["peak_live_bytes"] * 1.05))' "$W/tiny.summary")
"$R" --json --conf "budget=$B" "$W/tiny.csv" > "$W/tiny105.json"
RC=$?
cat "$W/tiny105.json"
check "$W/tiny105.json" 'j["failures"] == 0' || exit 1
expect_rc $RC 0
]=] FIXTURES_REQUIRED ck_tiny_trace)

ck_tool_test(replay_tiny_budget_090 [=[
B=$("$PY" -c 'import json,sys
print(int(json.load(open(sys.argv[1]))["peak_live_bytes"] * 0.9))' "$W/tiny.summary")
"$R" --json --conf "budget=$B" "$W/tiny.csv" > "$W/tiny090.json" 2> "$W/tiny090.err"
RC=$?
cat "$W/tiny090.err"
expect_rc $RC 1
check "$W/tiny090.json" 'j["failures"] > 0'
grep -q "tiny.csv:[0-9]*: " "$W/tiny090.err"
]=] FIXTURES_REQUIRED ck_tiny_trace)

# ---- the project's fragmentation and map/unmap targets ----

ck_tool_test(tracegen_1b [=[
"$G" --model 1b --steps 6 --vary-seq --summary -o "$W/1b.csv" 2> "$W/1b.summary"
expect_rc $? 0
]=] FIXTURES_SETUP ck_1b_trace)

ck_tool_test(replay_1b_fragmentation [=[
"$R" --json "$W/1b.csv" > "$W/1b.json"
expect_rc $? 0
check "$W/1b.json" 'j["failures"] == 0 and j["unmatched_frees"] == 0'
F=0
check "$W/1b.json" 'j["fragmentation"] <= 1.05' || F=1
check "$W/1b.json" 'j["map_unmap_per_op"] <= 0.01' || F=1
exit $F
]=] FIXTURES_REQUIRED ck_1b_trace)

# ---- the pool's own trace (trace=...) reads back through the replay ----

ck_tool_test(replay_self_trace [=[
rm -f "$W/self.csv"
"$R" --json --conf "trace=$W/self.csv" "$D/rmm_sample.csv" > /dev/null
expect_rc $? 0
head -1 "$W/self.csv" | grep -qx "Thread,Time,Action,Pointer,Size,Stream"
"$R" --json "$W/self.csv" > "$W/self.json"
expect_rc $? 0
check "$W/self.json" 'j["allocs"] == 8 and j["frees"] == 8 and j["unmatched_frees"] == 0 and j["input_failures"] == 0'
check "$W/self.json" 'j["streams"] == 2 and j["peak_live_bytes"] == 46661888'
]=])

ck_tool_test(replay_self_trace_failures [=[
B=$("$PY" -c 'import json,sys
print(int(json.load(open(sys.argv[1]))["peak_live_bytes"] * 0.9))' "$W/tiny.summary")
"$R" --json --conf "budget=$B,trace=$W/tiny_self.csv" "$W/tiny.csv" > "$W/tiny_self1.json" 2> /dev/null
expect_rc $? 1
"$R" --json "$W/tiny_self.csv" > "$W/tiny_self2.json"
expect_rc $? 0
N=$("$PY" -c 'import json,sys
print(json.load(open(sys.argv[1]))["failures"])' "$W/tiny_self1.json")
check "$W/tiny_self2.json" "j['input_failures'] == $N and j['unmatched_frees'] == 0 and j['failures'] == 0"
]=] FIXTURES_REQUIRED ck_tiny_trace)
