#!/usr/bin/env bash
# The main job: generate the allocation trace of a 7B LoRA fine-tuning run,
# replay it on ckalloc under a budget of 1.05x its peak live bytes (on the GPU
# when one is present, else on the host backend), replay the same trace on a
# simulation of PyTorch's native caching allocator, and print the two side by
# side, each of ckalloc's targets marked ok or MISS.
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
# The GPU when a CUDA device is present, else the host backend, asked for by
# name (backend=auto never falls back to host memory). The replay never
# touches the memory, so it needs no GPU and no RAM for it.
backend=host
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    backend=cuda
fi
conf="backend=$backend,budget=$budget"
echo "== replay under budget=$budget bytes (1.05 x peak live), conf: $conf"
echo "   and the same trace on PyTorch's native policy (simulated), for comparison"
"$B/tools/ckalloc-replay" --policy both --conf "$conf" "$trace"
echo "== to watch a replay live: make demo-live (or ckalloc-replay --pace 60 TRACE & ckalloc-stat -p PID --watch 1)"
echo
echo "== the tier engine on a small trainer (examples/train.c, host backend): the same training"
echo "   with every activation kept, offloaded, recomputed, and mixed; losses and weights must"
echo "   be bit-identical while peak physical memory drops"
"$B/examples/train" --steps 3 --check
