#!/usr/bin/env bash
# A replay that lasts, and ckalloc-stat watching it: the demo's 7B LoRA trace
# replayed over PACE seconds (default 60) on the host backend under the
# demo's budget (1.05 x peak live), while
# ckalloc-stat -p shows its pool every second (q quits, and stops the replay).
# Not on a terminal it prints five reports and stops.
set -euo pipefail
B=${1:-build}
PACE=${2:-60}
trace=$B/demo-7b-lora.csv
summary=$B/demo-7b-lora.summary.json
"$B/tools/ckalloc-tracegen" --model 7b --method lora --steps 4 --seq 2048 --summary -o "$trace" 2>"$summary"
peak=$(sed -n 's/.*"peak_live_bytes": *\([0-9]*\).*/\1/p' "$summary")
[ -n "$peak" ] || { echo "demo-live: tracegen printed no peak_live_bytes" >&2; exit 1; }
"$B/tools/ckalloc-replay" --pace "$PACE" --quiet --conf "budget=$((peak * 105 / 100))" "$trace" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
sleep 0.5 # until the pool exists
if [ -t 1 ]; then
    "$B/tools/ckalloc-stat" -p "$pid" --watch 1
else
    "$B/tools/ckalloc-stat" -p "$pid" --watch 1 -n 5
fi
