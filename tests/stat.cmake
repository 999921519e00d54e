# Command-line tests of ckalloc-stat's live modes (included from
# tests/CMakeLists.txt). Each test starts ck_livedemo (tests/tools), a process
# with a host pool and allocations of known sizes, in the background, and
# reads it with ckalloc-stat. Like tools.cmake: POSIX sh, no ';' and no
# generator-expression opener in the scripts; JSON checked with python3.

add_executable(ck_livedemo ${CMAKE_CURRENT_SOURCE_DIR}/tools/ck_livedemo.c)
target_link_libraries(ck_livedemo PRIVATE ckalloc_static)

find_program(CK_STAT_PYTHON3 python3)
if(NOT CK_STAT_PYTHON3)
  message(STATUS "ckalloc: python3 not found: ckalloc-stat tests skipped")
  return()
endif()
set(CK_STAT_WORK ${CMAKE_CURRENT_BINARY_DIR}/stat-tests)

# S = ckalloc-stat, L = ck_livedemo, W = scratch dir, PY = python3.
# start_demo NAME [ARGS] runs ck_livedemo, waits for its "ready" line and sets
# DEMO (its pid), ALLOC and REQ (its allocated and requested bytes). The EXIT
# trap kills it on every path (and it dies with this shell anyway).
# check FILE EXPR: EXPR on the last JSON line of FILE (as j) must hold.
set(CK_STAT_PRELUDE [=[
set -u
S="$1" L="$2" W="$3/$4" PY="$5"
rm -rf "$W"
mkdir -p "$W"
DEMO=""
cleanup() {
  if [ -n "$DEMO" ]
  then
    kill "$DEMO" 2>/dev/null
    wait "$DEMO" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
start_demo() {
  out="$W/$1.demo"
  shift
  "$L" "$@" > "$out" 2> "$out.err" &
  DEMO=$!
  i=0
  while ! grep -q '^ready' "$out" 2>/dev/null
  do
    i=$((i+1))
    if [ $i -gt 600 ] || ! kill -0 "$DEMO" 2>/dev/null
    then
      echo "FAILED: ck_livedemo did not get ready"
      cat "$out.err"
      exit 1
    fi
    sleep 0.05
  done
  set -- $(cat "$out")
  if [ "$2" != "$DEMO" ]
  then
    echo "FAILED: ck_livedemo says pid $2, the shell started $DEMO"
    exit 1
  fi
  ALLOC=$3 REQ=$4
  echo "ck_livedemo: pid $DEMO, allocated $ALLOC, requested $REQ"
}
check() {
  "$PY" -c 'import json,sys
j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ok=eval(sys.argv[2])
print(("ok: " if ok else "FAILED: ") + sys.argv[2] + "   " + json.dumps(j)[:2000])
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

function(ck_stat_test name script)
  add_test(NAME ${name}
    COMMAND sh -c "${CK_STAT_PRELUDE}${script}" sh
      $<TARGET_FILE:ckalloc-stat> $<TARGET_FILE:ck_livedemo> ${CK_STAT_WORK} ${name} ${CK_STAT_PYTHON3})
  set_tests_properties(${name} PROPERTIES LABELS "tools" TIMEOUT 120 ${ARGN})
endfunction()

# The list: one line per process; the demo is there with its bytes.
ck_stat_test(stat_list [=[
start_demo list
"$S" > "$W/list.txt" 2> "$W/list.err"
expect_rc $? 0
cat "$W/list.txt" "$W/list.err"
head -1 "$W/list.txt" | grep -q "PID *COMMAND *POOLS *ALLOCATED *RESERVED *PHYSICAL *PEAK RESERVED" || exit 1
grep -q "^$DEMO  *[^ ]*ck_livedemo  *1  *15.25 MiB " "$W/list.txt" || exit 1
"$S" --json > "$W/list.json"
expect_rc $? 0
check "$W/list.json" "[r['pools'][0]['allocated_bytes']['current'] for r in j if r['pid'] == $DEMO] == [$ALLOC]"
]=])

# -p PID --json: the bytes and the largest allocations, largest first.
ck_stat_test(stat_pid_json [=[
start_demo json
"$S" -p "$DEMO" --json > "$W/p.json"
expect_rc $? 0
check "$W/p.json" "j['pid'] == $DEMO and j['source'] == 'live' and 'ck_livedemo' in j['cmd'] and len(j['pools']) == 1" || exit 1
check "$W/p.json" "j['pools'][0]['allocated_bytes']['current'] == $ALLOC and j['pools'][0]['requested_bytes']['current'] == $REQ" || exit 1
check "$W/p.json" "j['pools'][0]['allocation']['current'] == 8 and j['pools'][0]['budget'] == 512 << 20 and j['pools'][0]['backend'] == 'host'" || exit 1
check "$W/p.json" "[t['size'] for t in j['pools'][0]['top']] == [7 << 20, 5 << 20, (3 << 20) + 1024, 65536, 65536, 65536, 65536, 1024]" || exit 1
check "$W/p.json" "j['pools'][0]['top'][2]['requested'] == (3 << 20) + 1000 and all(t['tag'] is None for t in j['pools'][0]['top'])" || exit 1
check "$W/p.json" "j['pools'][0]['top_fresh'] is True and isinstance(j['pools'][0]['largest_free'], int)" || exit 1
# the two ratios, one definition each (README "Stats")
check "$W/p.json" "abs(j['pools'][0]['fragmentation'] - (1 - $ALLOC / j['pools'][0]['reserved_bytes']['current'])) < 1e-4 and j['pools'][0]['fragmentation'] < 1" || exit 1
check "$W/p.json" "abs(j['pools'][0]['peak_overhead'] - j['pools'][0]['physical_bytes']['peak'] / j['pools'][0]['requested_bytes']['peak']) < 1e-4 and 'fragmentation_peak' not in j['pools'][0]"
]=])

# The table a person reads first.
ck_stat_test(stat_pid_table [=[
start_demo table
"$S" -p "$DEMO" > "$W/p.txt"
expect_rc $? 0
cat "$W/p.txt"
for want in "^pid $DEMO " "^pool 1 of 1: device 0, host backend, budget 512.00 MiB" \
    "^  allocated  *15.25 MiB  *15.25 MiB" "^  reserved " "^  physical " "^  fragmentation  *0\.[0-9]*  *1 - allocated / reserved, now" "^  peak_overhead  *[0-9.]*   peak physical / peak requested" \
    "^  largest free  *[0-9.]* [KM]iB" "^  OOM retries  *0 " "^  OOMs  *0 " "^  budget  *512.00 MiB" \
    "top allocations by size (refreshed for this report)" "^     1  *7.00 MiB  *7.00 MiB  0x[0-9a-f]*  *0x0  *-$" \
    "^     3  *3.00 MiB  *3.00 MiB"
do
  grep -q "$want" "$W/p.txt" || { echo "FAILED: no line matching '$want'" && exit 1
  }
done
]=])

# Prometheus: HELP and TYPE for every family, ckalloc_ names, pid and device
# labels, the right values; with two pools on one device, a pool label too.
ck_stat_test(stat_prometheus [=[
start_demo prom --pools 2
"$S" -p "$DEMO" --prometheus > "$W/p.prom"
expect_rc $? 0
head -12 "$W/p.prom"
"$PY" - "$W/p.prom" "$DEMO" "$ALLOC" "$REQ" << 'EOF'
import re, sys
path, pid, alloc, req = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
help, types, samples = set(), {}, {}
for line in open(path).read().splitlines():
    if line.startswith('# HELP '):
        help.add(line.split()[2])
    elif line.startswith('# TYPE '):
        _, _, name, t = line.split()
        assert t in ('gauge', 'counter'), line
        assert name in help, 'TYPE before HELP: ' + line
        types[name] = t
    else:
        m = re.fullmatch(r'(ckalloc_[a-z_]+)\{([^}]*)\} (\S+)', line)
        assert m, 'bad sample line: ' + line
        name, labels, v = m.group(1), m.group(2), float(m.group(3))
        assert name in types, 'sample before its TYPE: ' + line
        assert (name, labels) not in samples, 'duplicate sample: ' + line
        samples[(name, labels)] = v
        if types[name] == 'counter': assert name.endswith('_total'), line
lab0 = 'pid="%s",device="0",pool="0"' % pid
lab1 = 'pid="%s",device="0",pool="1"' % pid
want = {('ckalloc_allocated_bytes', lab0): alloc, ('ckalloc_requested_bytes', lab0): req,
        ('ckalloc_budget_bytes', lab0): 512 << 20, ('ckalloc_live_allocations', lab0): 8,
        ('ckalloc_allocated_bytes', lab1): 2 << 20, ('ckalloc_ooms_total', lab0): 0,
        ('ckalloc_alloc_retries_total', lab0): 0}
for k, v in want.items():
    assert samples.get(k) == v, '%s = %s, expected %s' % (k, samples.get(k), v)
r = samples[('ckalloc_reserved_bytes', lab0)]
assert abs(samples[('ckalloc_fragmentation_ratio', lab0)] - (1 - alloc / r)) < 1e-5
pk = samples[('ckalloc_peak_physical_bytes', lab0)] / samples[('ckalloc_peak_requested_bytes', lab0)]
assert abs(samples[('ckalloc_peak_overhead_ratio', lab0)] - pk) < 1e-5
assert samples[('ckalloc_peak_allocated_bytes', lab0)] >= alloc
print('ok: %d families, %d samples' % (len(types), len(samples)))
EOF
]=])

# One pool: exactly the labels pid and device.
ck_stat_test(stat_prometheus_labels [=[
start_demo promlabels
"$S" -p "$DEMO" --prometheus > "$W/p.prom"
expect_rc $? 0
grep -qx "ckalloc_allocated_bytes{pid=\"$DEMO\",device=\"0\"} $ALLOC" "$W/p.prom" || exit 1
grep -qx "# TYPE ckalloc_allocated_bytes gauge" "$W/p.prom" || exit 1
grep -qx "# TYPE ckalloc_ooms_total counter" "$W/p.prom" || exit 1
! grep -v "^#" "$W/p.prom" | grep -v "^ckalloc_[a-z_]*{pid=\"$DEMO\",device=\"0\"} [0-9.e+-]*$"
]=])

# --watch SEC -n COUNT: COUNT reports, SEC apart.
ck_stat_test(stat_watch [=[
start_demo watch
"$S" -p "$DEMO" --watch 0.1 -n 3 > "$W/w.txt"
expect_rc $? 0
N=$(grep -c "^pid $DEMO " "$W/w.txt")
[ "$N" -eq 3 ] || { echo "FAILED: $N reports, expected 3" && exit 1
}
"$S" -p "$DEMO" --json --watch 0.1 -n 3 > "$W/w.json"
expect_rc $? 0
[ "$(wc -l < "$W/w.json")" -eq 3 ] || exit 1
"$PY" -c 'import json,sys
rs=[json.loads(l) for l in open(sys.argv[1])]
assert len(rs) == 3 and all(r["pools"][0]["allocated_bytes"]["current"] == int(sys.argv[2]) for r in rs)
assert rs[0]["taken_at"] + 0.15 <= rs[2]["taken_at"], "reports not 0.1 s apart"' "$W/w.json" "$ALLOC"
]=])

# The process exits during --watch: the tool says so and exits 1.
ck_stat_test(stat_watch_owner_exits [=[
start_demo watchexit
P=$DEMO
"$S" -p "$DEMO" --watch 0.1 -n 100 > "$W/we.txt" 2> "$W/we.err" &
WATCH=$!
sleep 0.5
kill -TERM "$DEMO"
wait "$DEMO"
DEMO=""
wait "$WATCH"
RC=$?
cat "$W/we.err"
expect_rc $RC 1
grep -q "^pid " "$W/we.txt" || exit 1
grep -q "process $P exited" "$W/we.err"
]=])

# An owner that makes no call: the counters are still right, the top list
# is not refreshed and the report says so.
ck_stat_test(stat_idle_owner [=[
start_demo idle --idle
"$S" -p "$DEMO" --json > "$W/idle.json"
expect_rc $? 0
check "$W/idle.json" "j['pools'][0]['allocated_bytes']['current'] == $ALLOC and j['pools'][0]['top_fresh'] is False" || exit 1
check "$W/idle.json" "j['pools'][0]['top'] == [] and j['pools'][0]['largest_free'] is None and j['pools'][0]['top_age_s'] is None" || exit 1
"$S" -p "$DEMO" > "$W/idle.txt"
expect_rc $? 0
grep -q "the owner has not refreshed the list" "$W/idle.txt"
]=])

# A pid that is not using ckalloc, and one that does not exist: exit 1.
ck_stat_test(stat_not_ckalloc [=[
"$S" -p $$ > "$W/self.out" 2> "$W/self.err"
expect_rc $? 1
cat "$W/self.err"
grep -q "process $$ is not using ckalloc" "$W/self.err" || exit 1
sh -c 'exit 0' &
GONE=$!
wait $GONE
"$S" -p "$GONE" 2> "$W/gone.err"
expect_rc $? 1
cat "$W/gone.err"
grep -q "no process $GONE" "$W/gone.err"
]=])

# A process that exits removes its segment; one killed outright leaves a
# stale one, which is ignored with a one-line reason.
ck_stat_test(stat_exit_and_stale [=[
start_demo term
P=$DEMO
kill -TERM "$P"
wait "$P"
expect_rc $? 0
DEMO=""
[ ! -e "/dev/shm/ckalloc.$P" ] || { echo "FAILED: /dev/shm/ckalloc.$P left behind" && exit 1
}
"$S" -p "$P" 2> "$W/term.err"
expect_rc $? 1
start_demo kill
P=$DEMO
kill -KILL "$P"
wait "$P"
DEMO=""
[ -e "/dev/shm/ckalloc.$P" ] || { echo "FAILED: SIGKILL left no segment to test with" && exit 1
}
"$S" > "$W/stale.out" 2> "$W/stale.err"
RC=$?
rm -f "/dev/shm/ckalloc.$P"
cat "$W/stale.err"
expect_rc $RC 0
grep -qx "ckalloc-stat: ignored /dev/shm/ckalloc.$P: process $P is gone (stale.*" "$W/stale.err" || exit 1
! grep -q "^$P " "$W/stale.out"
]=])

ck_stat_test(stat_bad_usage [=[
"$S" --help > "$W/help.txt"
expect_rc $? 0
grep -q "usage: ckalloc-stat" "$W/help.txt" || exit 1
for args in "--bogus" "-p" "-p abc" "-p 0" "-p -5" "-p 12x" "--watch 0" "--watch x" "--watch -1" "-n 0" "-n x" \
    "--json --prometheus" "a.json b.json" "--html x.json" "-o out.html" "-p 1 x.json" "x.json --watch 1"
do
  "$S" $args > /dev/null 2> "$W/usage.err"
  RC=$?
  if [ $RC -ne 2 ]
  then
    echo "FAILED: ckalloc-stat $args: exit status $RC, expected 2"
    exit 1
  fi
  [ "$(wc -l < "$W/usage.err")" -ge 1 ] || exit 1
done
]=])

# --watch on a terminal (a pseudo-terminal of 80 x 24, then 12 x 40): each
# report is redrawn in place from the top, cut to the window so the headline
# stays on its first line, a status line last; q quits with exit 0 and the
# terminal is back in line mode. tests/tools/watch_tty.py drives it.
set(CK_STAT_WATCH_TTY [=[
TTY="$6"
start_demo watchtty
"$PY" "$TTY" 24 80 1 "$S" -p "$DEMO" --watch 0.2 > "$W/tty.json"
expect_rc $? 0
check "$W/tty.json" 'j["rc"] == 0 and j["frames"] >= 3 and j["restored"]' || exit 1
check "$W/tty.json" 'j["max_lines"] <= 24 and j["max_cols"] <= 80' || exit 1
check "$W/tty.json" "all(f.startswith('pid $DEMO ') for f in j['first'])" || exit 1
check "$W/tty.json" 'j["last_line"].startswith("every 0.2s, q quits")' || exit 1
"$PY" "$TTY" 12 40 0.6 "$S" -p "$DEMO" --watch 0.2 > "$W/tty_small.json"
expect_rc $? 0
check "$W/tty_small.json" 'j["rc"] == 0 and j["max_lines"] <= 12 and j["max_cols"] <= 40 and "more lines below" in j["last_line"]' || exit 1
check "$W/tty_small.json" "all(f.startswith('pid $DEMO ') for f in j['first'])"
]=])
add_test(NAME stat_watch_tty
  COMMAND sh -c "${CK_STAT_PRELUDE}${CK_STAT_WATCH_TTY}" sh
    $<TARGET_FILE:ckalloc-stat> $<TARGET_FILE:ck_livedemo> ${CK_STAT_WORK} stat_watch_tty
    ${CK_STAT_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/tools/watch_tty.py)
set_tests_properties(stat_watch_tty PROPERTIES LABELS "tools" TIMEOUT 120)
