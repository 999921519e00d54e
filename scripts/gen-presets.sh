#!/bin/sh
# Regenerate policy/presets/ with ckalloc-plan: for Llama-2-7B, Llama-3-8B,
# Mistral-7B and Qwen2-7B, LoRA (r=16 on q,k,v,o) and QLoRA, on 24 GB (RTX
# 3090, 4090), 16 GB (RTX 4080, 4060 Ti 16GB) and 12 GB (RTX 3060, 4070)
# GPUs, the plan at the longest sequence that fits with <= 10% predicted
# overhead (batch 1, bf16, flash attention, the default budget: 92% of the
# GPU's memory). Also presets.md, the table the README shows. A combination
# where nothing fits gets no file and says so in the table.
#
#   scripts/gen-presets.sh PLAN OUTDIR     (PLAN: the ckalloc-plan binary)
#
# The test presets_fresh runs it into a scratch directory and fails when
# what is checked in differs. Exit 0 done, 1 a run failed, 2 bad usage.
set -u
[ $# -eq 2 ] || { echo "usage: gen-presets.sh PLAN OUTDIR" >&2; exit 2; }
plan=$1
out=$2
py=${PYTHON3:-python3}
mkdir -p "$out" || exit 1
rm -f "$out"/*.yaml "$out/presets.md"
{
    echo "| GPU | model | method | longest sequence | predicted peak | overhead | bounded by | plain checkpointing |"
    echo "|---|---|---|---|---|---|---|---|"
} >"$out/presets.md"
for gpu in rtx3090 rtx4090 rtx4080 rtx4060ti-16gb rtx3060 rtx4070; do
    for model in llama-2-7b llama-3-8b mistral-7b qwen2-7b; do
        for method in lora qlora; do
            f=$out/$model-$method-$gpu.yaml
            "$plan" --gpu "$gpu" --model "$model" --method "$method" --max-seq --json -o "$f" >"$out/.plan.json" 2>"$out/.plan.err"
            rc=$?
            if [ $rc -eq 1 ]; then
                rm -f "$f"
                echo "| $gpu | $model | $method | does not fit | | | | |" >>"$out/presets.md"
                continue
            fi
            [ $rc -eq 0 ] || { cat "$out/.plan.err" >&2; exit 1; }
            "$py" - "$out/.plan.json" "$gpu" "$model" "$method" >>"$out/presets.md" <<'PY' || exit 1
import json, sys
j = json.load(open(sys.argv[1]))
gib = 2 ** 30
ck = j["max_seq_checkpointing"]
ckcell = "%d tokens" % ck if ck else "does not fit"
print("| %s | %s | %s | %d tokens | %.2f GiB | +%.1f%% | %s | %s |" % (
    sys.argv[2], sys.argv[3], sys.argv[4], j["max_seq"], j["peak"] / gib, 100 * j["overhead"],
    j["bound"].split(" (")[0], ckcell))
PY
        done
    done
done
rm -f "$out/.plan.json" "$out/.plan.err"
