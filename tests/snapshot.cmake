# Command-line tests of snapshots read by ckalloc-stat (included from
# tests/CMakeLists.txt): the report, --json, bad files, and --html. Snapshots
# come from ckalloc-replay with snapshot=PATH (written when it destroys its
# pool). The "browser" test opens the page in headless Chromium; it needs the
# chromium package (scripts/install-deps.sh --browser), so `make test` leaves
# it out and `make test-all` runs it.

find_program(CK_PYTHON3 python3)
if(NOT CK_PYTHON3 OR NOT TARGET ckalloc-stat)
  message(STATUS "ckalloc: snapshot CLI tests skipped (no python3 or no ckalloc-stat)")
  return()
endif()
set(CK_SNAP_WORK ${CMAKE_CURRENT_BINARY_DIR}/snapshot-tests)
add_executable(ck_snapdemo ${CMAKE_CURRENT_SOURCE_DIR}/tools/ck_snapdemo.c)
target_link_libraries(ck_snapdemo PRIVATE ckalloc_static)
find_program(CK_CHROMIUM NAMES chromium chromium-browser google-chrome)
if(NOT CK_CHROMIUM)
  set(CK_CHROMIUM chromium) # looked up again when the test runs
endif()

# S = ckalloc-stat, R = ckalloc-replay, D = tests/data, W = scratch dir,
# PY = python3, B = tests/browser ($7: the chromium binary, $8: ck_snapdemo); jq FILE EXPR prints EXPR of the JSON in
# FILE (as j); expect_rc as in tools.cmake.
set(CK_SNAP_PRELUDE [=[
set -u
S="$1" R="$2" D="$3" W="$4" PY="$5" B="$6"
mkdir -p "$W"
jq() {
  "$PY" -c 'import json,sys
j=json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$@"
}
expect_rc() {
  if [ "$1" -ne "$2" ]
  then
    echo "FAILED: exit status $1, expected $2"
    exit 1
  fi
}
]=])

function(ck_snapshot_test name script)
  add_test(NAME ${name}
    COMMAND sh -c "${CK_SNAP_PRELUDE}${script}" sh
      $<TARGET_FILE:ckalloc-stat> $<TARGET_FILE:ckalloc-replay>
      ${CMAKE_CURRENT_SOURCE_DIR}/data ${CK_SNAP_WORK} ${CK_PYTHON3}
      ${CMAKE_CURRENT_SOURCE_DIR}/browser ${CK_CHROMIUM} $<TARGET_FILE:ck_snapdemo>)
  set_tests_properties(${name} PROPERTIES LABELS "tools" TIMEOUT 300 ${ARGN})
endfunction()

# The snapshot every test reads: rmm_sample.csv replayed (8 allocations, 8
# frees), written when ckalloc-replay destroys its pool.
ck_snapshot_test(snapshot_write [=[
rm -f "$W/s.json"
"$R" --json --conf "snapshot=$W/s.json" "$D/rmm_sample.csv" > "$W/s_replay.json"
expect_rc $? 0
test "$(jq "$W/s.json" '" ".join(map(str, (j["format"], j["version"], j["reason"], len(j["pools"]))))')" = "ckalloc-snapshot 1 destroy 1"
]=] FIXTURES_SETUP ck_snapshot)

ck_snapshot_test(snapshot_stat_report [=[
"$S" "$W/s.json" > "$W/s_report.txt"
expect_rc $? 0
cat "$W/s_report.txt"
grep -q "s.json" "$W/s_report.txt" && grep -q "host backend" "$W/s_report.txt" && grep -q "allocated" "$W/s_report.txt" || exit 1
# the whole run's table names the peak the stats report
PEAK=$(jq "$W/s.json" 'j["pools"][0]["stats"]["allocated_bytes"]["peak"]')
"$PY" - "$W/s_report.txt" "$PEAK" <<'PYEOF'
import re, sys
text, peak = open(sys.argv[1]).read(), int(sys.argv[2])
m = re.search(r"memory over the whole run \((\d+) operations in (\d+) buckets; live peaks at ([0-9.]+) (B|KiB|MiB|GiB)", text)
units = {"B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}
ok = m is not None and abs(float(m.group(3)) * units[m.group(4)] - peak) <= 0.005 * units[m.group(4)]
print(("ok: " if ok else "FAILED: ") + "the whole-run table's peak %s, the stats' %d" % (m.group(0) if m else None, peak))
sys.exit(0 if ok else 1)
PYEOF
]=] FIXTURES_REQUIRED ck_snapshot)

# --json carries the snapshot's numbers unchanged.
ck_snapshot_test(snapshot_stat_json [=[
"$S" --json "$W/s.json" > "$W/s_stat.json"
expect_rc $? 0
"$PY" - "$W/s.json" "$W/s_stat.json" "$W/s_replay.json" <<'PYEOF'
import json, sys
snap = json.load(open(sys.argv[1]))
out = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
rep = json.load(open(sys.argv[3]))
sp, op = snap["pools"][0], out["pools"][0]
checks = [
    (out["pid"] == snap["pid"], "pid"),
    (abs(out["taken_at"] - snap["taken_at"]) < 0.01, "taken_at"),
    (op["device"] == sp["device"] and op["backend"] == sp["backend"], "device, backend"),
    (op["budget"] == sp["stats"]["budget"], "budget"),
    (op["nsegments"] == len(sp["segments"]) and op["nblocks"] == len(sp["blocks"]), "row counts"),
    (len(op["timeline"]) == len(sp["trace"]["records"]), "timeline points"),
    (op["timeline"][-1]["physical"] == sp["trace"]["records"][-1]["physical"], "last point"),
    (len(op["history"]["buckets"]) == len(sp["history"]["buckets"]) and
     op["history"]["total"] == sp["history"]["total"], "history buckets"),
    (max(b["live"][1] for b in op["history"]["buckets"]) == sp["stats"]["allocated_bytes"]["peak"],
     "history's max live = the peak"),
    (op["requested_bytes"]["peak"] == rep["peak_live_bytes"], "peak requested = the replay's peak live"),
]
for k in ("allocated_bytes", "reserved_bytes", "physical_bytes", "requested_bytes", "segment", "allocation"):
    checks.append((op[k] == sp["stats"][k], k))
for k in ("num_map_calls", "num_unmap_calls", "num_ooms", "largest_free"):
    checks.append((op[k] == sp["stats"][k], k))
checks.append((sp["stats"]["num_map_calls"] == rep["map_calls"], "map calls = the replay's"))
bad = [w for ok, w in checks if not ok]
print("FAILED: " + ", ".join(bad) if bad else "ok: %d checks" % len(checks))
sys.exit(1 if bad else 0)
PYEOF
]=] FIXTURES_REQUIRED ck_snapshot)

# Truncated, corrupt, foreign or out-of-range files: exit 2, the file named,
# and what is wrong.
ck_snapshot_test(snapshot_stat_bad_files [=[
F=0
bad() { # FILE EXPECTED-TEXT
  "$S" "$1" > /dev/null 2> "$W/bad.err"
  RC=$?
  cat "$W/bad.err"
  if [ $RC -ne 2 ] || ! grep -q "$1" "$W/bad.err" || ! grep -q "$2" "$W/bad.err"
  then
    echo "FAILED: $1: exit $RC, expected 2 and a message naming the file with '$2'"
    F=1
  fi
}
SZ=$(wc -c < "$W/s.json")
head -c $((SZ / 2)) "$W/s.json" > "$W/bad_truncated.json"
bad "$W/bad_truncated.json" "truncated"
printf 'not json at all\n' > "$W/bad_corrupt.json"
bad "$W/bad_corrupt.json" "not valid JSON (parse error at byte 0"
: > "$W/bad_empty.json"
bad "$W/bad_empty.json" "empty"
sed 's/"ckalloc-snapshot"/"something-else"/' "$W/s.json" > "$W/bad_format.json"
bad "$W/bad_format.json" "not a ckalloc snapshot"
sed 's/"version":1,/"version":99,/' "$W/s.json" > "$W/bad_version.json"
bad "$W/bad_version.json" "version 99 is not supported"
"$PY" -c 'import json,sys
j=json.load(open(sys.argv[1]))
j["pools"][0]["blocks"][0]["size"]=-4096
json.dump(j,open(sys.argv[2],"w"))
del j["pools"][0]["stats"]["reserved_bytes"]
json.dump(j,open(sys.argv[3],"w"))
j=json.load(open(sys.argv[1]))
j["pools"][0]["trace"]["records"][0]["size"]="big"
json.dump(j,open(sys.argv[4],"w"))' "$W/s.json" "$W/bad_negative.json" "$W/bad_missing.json" "$W/bad_type.json"
bad "$W/bad_negative.json" 'pools\[0\].blocks\[0\].size: must be a non-negative integer'
bad "$W/bad_missing.json" 'pools\[0\].stats.reserved_bytes: missing'
bad "$W/bad_type.json" 'pools\[0\].trace.records\[0\].size: must be a number'
"$PY" -c 'import json,sys
j=json.load(open(sys.argv[1]))
j["pools"][0]["history"]["records_per_bucket"]=3
json.dump(j,open(sys.argv[2],"w"))
j=json.load(open(sys.argv[1]))
j["pools"][0]["history"]["buckets"][0]["allocated"]=[5,2]
json.dump(j,open(sys.argv[3],"w"))
j=json.load(open(sys.argv[1]))
j["pools"][0]["history"]["total"]+=1
json.dump(j,open(sys.argv[4],"w"))' "$W/s.json" "$W/bad_span.json" "$W/bad_range.json" "$W/bad_total.json"
bad "$W/bad_span.json" 'pools\[0\].history.records_per_bucket: must be a power of two (got 3)'
bad "$W/bad_range.json" 'pools\[0\].history.buckets\[0\].allocated: must be \[min, max\]'
bad "$W/bad_total.json" 'pools\[0\].history.buckets: cover [0-9]* operations, but total is'
bad "$W/no-such-snapshot.json" "cannot open"
"$S" --html "$W/bad_truncated.json" -o "$W/bad.html" > /dev/null 2>&1
expect_rc $? 2
exit $F
]=] FIXTURES_REQUIRED ck_snapshot)

ck_snapshot_test(snapshot_stat_html [=[
rm -f "$W/s.html"
"$S" --html "$W/s.json" -o "$W/s.html"
expect_rc $? 0
# One self-contained page: no URL to fetch anything from.
if grep -n -i "http" "$W/s.html"
then
  echo "FAILED: the page names a URL"
  exit 1
fi
grep -q '<svg\|<script>' "$W/s.html" && grep -q 'id="timeline-0"' "$W/s.html" && grep -q 'id="recent-0"' "$W/s.html" && grep -q 'id="largest-0"' "$W/s.html" || exit 1
# The two ratios' cards, with the one definition each (README "Stats").
"$PY" - "$W/s.json" "$W/s.html" <<'PYEOF'
import json, re, sys
st = json.load(open(sys.argv[1]))["pools"][0]["stats"]
page = open(sys.argv[2]).read()
a, r = st["allocated_bytes"]["current"], st["reserved_bytes"]["current"]
want = {"fragmentation": 1 - a / r if 0 < r and a < r else 0.0,
        "peak_overhead": st["physical_bytes"]["peak"] / st["requested_bytes"]["peak"]}
bad = 0
for k, v in want.items():
    m = re.search(r'<div class="label">%s</div><div class="value">([0-9.]+)</div>' % k, page)
    ok = m is not None and abs(float(m.group(1)) - v) < 5e-4
    print(("ok: " if ok else "FAILED: ") + "card %s %s, expected %.3f" % (k, m.group(1) if m else None, v))
    bad += not ok
sys.exit(1 if bad else 0)
PYEOF
]=] FIXTURES_REQUIRED ck_snapshot)

# ---- the page in a browser (label "browser": make test-all) ----

# ck_snapdemo (tests/tools) writes a snapshot with a known outcome under a
# 64 MiB budget: 100 allocations of distinct sizes (the peak), the even ones
# freed, then 15000 allocate + free pairs, about 30000 operations as in
# `make demo`. The peak is long gone from the ring of the last 4096 (checked
# here), so only the whole-run chart can show it: check_report.py checks that
# its drawn maximum is the reported peak, the ticks, the budget line and the
# time axis; that the recent chart draws one point per recorded operation;
# and that the page lists the 16 largest of the 50 live blocks.
ck_snapshot_test(snapshot_html_browser [=[
C="$7" X="$8"
if ! command -v "$C" > /dev/null 2>&1
then
  echo "chromium is not installed (scripts/install-deps.sh --browser)"
  exit 77
fi
rm -f "$W/browser.json" "$W/browser.html" "$W/browser_dom.html"
"$X" "$W/browser.json" 15000 > "$W/browser_demo.json"
expect_rc $? 0
cat "$W/browser_demo.json"
N=$(jq "$W/browser_demo.json" 'j["records"]')
test "$N" -eq 4096 || exit 1
test "$(jq "$W/browser.json" 'max(r["allocated"] for r in j["pools"][0]["trace"]["records"]) < j["pools"][0]["stats"]["allocated_bytes"]["peak"]')" = True || {
  echo "FAILED: the peak is still in the ring; the test would not show a lost peak"
  exit 1
}
"$S" --html "$W/browser.json" -o "$W/browser.html"
expect_rc $? 0
HOME="$W" timeout 120 "$C" --headless=new --no-sandbox --disable-gpu --no-first-run \
  --user-data-dir="$W/chromium-profile" --dump-dom "file://$W/browser.html" > "$W/browser_dom.html" 2> "$W/chromium.err"
RC=$?
if [ $RC -ne 0 ]
then
  tail -20 "$W/chromium.err"
  expect_rc $RC 0
fi
"$PY" "$B/check_report.py" "$W/browser_dom.html" "$W/browser.json" "$N"
]=] LABELS browser SKIP_RETURN_CODE 77)

# The tier engine's curves: a snapshot of the example trainer (mixed policy:
# tensors offloaded and dropped) drawn in the browser: the whole-run chart
# has an offloaded and a dropped line reaching their peaks.
ck_snapshot_test(snapshot_html_browser_tiers [=[
C="$7"
if ! command -v "$C" > /dev/null 2>&1
then
  echo "chromium is not installed (scripts/install-deps.sh --browser)"
  exit 77
fi
T="$(dirname "$S")/../examples/train"
rm -f "$W/tiers.json" "$W/tiers.html" "$W/tiers_dom.html"
"$T" --steps 2 --policy mixed --conf "snapshot=$W/tiers.json" > /dev/null
expect_rc $? 0
"$S" --html "$W/tiers.json" -o "$W/tiers.html"
expect_rc $? 0
HOME="$W" timeout 120 "$C" --headless=new --no-sandbox --disable-gpu --no-first-run \
  --user-data-dir="$W/chromium-profile-tiers" --dump-dom "file://$W/tiers.html" > "$W/tiers_dom.html" 2> "$W/chromium_tiers.err"
RC=$?
if [ $RC -ne 0 ]
then
  tail -20 "$W/chromium_tiers.err"
  expect_rc $RC 0
fi
"$PY" "$B/check_tiers.py" "$W/tiers_dom.html" "$W/tiers.json"
]=] LABELS browser SKIP_RETURN_CODE 77)
