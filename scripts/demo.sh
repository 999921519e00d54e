#!/usr/bin/env bash
# The main job: generate the allocation trace of a 7B LoRA fine-tuning run,
# replay it on ckalloc under a budget of 1.05x its peak live bytes (on the GPU
# when one is present, else on the host backend), and print the stats.
set -euo pipefail
B=${1:-build}
trace=$B/demo-7b-lora.csv
summary=$B/demo-7b-lora.summary.json

echo "== ckalloc demo: 7B LoRA fine-tuning trace (4 steps, seq <= 2048, varying lengths)"
"$B/tools/ckalloc-tracegen" --model 7b --method lora --steps 4 --seq 2048 --summary -o "$trace" 2>"$summary"
cat "$summary"
peak=$(sed -n 's/.*"peak_live_bytes": *\([0-9]*\).*/\1/p' "$summary")
[ -n "$peak" ] || { echo "demo: tracegen printed no peak_live_bytes" >&2; exit 1; }
budget=$((peak * 105 / 100))
# host_mem is the host backend's simulated device size (ignored on a GPU).
conf="backend=auto,budget=$budget,host_mem=$((budget * 2))"
echo "== replay under budget=$budget bytes (1.05 x peak live), conf: $conf"
"$B/tools/ckalloc-replay" --conf "$conf" "$trace"
