#!/usr/bin/env bash
# Find, for each allocation trace, the smallest budget under which ckalloc
# serves it with no failure, and the map/unmap rate at 1.05 x its peak live.
#
#   scripts/budget-search.sh [--build DIR] [--grid N] [--repeat N] [TRACE...]
#
# With no TRACE, traces are generated with ckalloc-tracegen into a temporary
# directory (removed at the end): every model the generator lists, each
# method it lists (lora, full), 1 and 2 streams when it has --streams, and
# sequence lengths 512 and 2048 when it has --seq, with --steps 2 (short
# traces; override with STEPS=, SEQS="512 2048", METHODS="lora full"),
# plus, when the generator knows Llama-3-8B, the real-run shape: 8b LoRA at
# batch 2, sequence length up to 5760, 8 steps, 78 GiB live at its peak
# (REAL_RUN=0 leaves it out).
#
# For each trace, on the host backend (ckalloc-replay --json):
#   1. replay with no budget: peak_live_bytes (PL);
#   2. binary-search the smallest budget in [PL, 1.5 PL] (1 MiB resolution)
#      at which the replay succeeds (exit 0 and "failures": 0);
#   3. replay at 1.05 PL --repeat times (default 3) and record the largest
#      map_unmap_per_op there (all runs in map_unmap_per_op_at_1_05_runs),
#      and the same over the trace's second half (..._second_half: the
#      first step maps the whole working set; later steps show the churn);
#      min_budget is also replayed --repeat times (min_budget_reruns_ok):
#      with two streams the host backend runs stream threads, and a replay
#      need not be deterministic;
#   4. check monotonicity: replay at N evenly spaced budgets over [PL, 1.5 PL]
#      (--grid N, default 32) and at min_budget + 1..8 MiB. A budget that
#      fails above one that succeeds (or a success below min_budget) is a
#      false out-of-memory; each one is listed in "nonmonotonic" with the
#      replay's error sentence, both budgets replayed --repeat more times
#      and the case marked "deterministic" or "flaky".
#
# Prints one JSON line per trace:
#   {"trace","model","method","streams","seq","peak_live","min_budget",
#    "min_budget_over_peak_live","map_unmap_per_op_at_1_05","ok_at_1_05",
#    "ok_min_budget" (ratio <= 1.01),"ok_map_unmap" (<= 0.01),
#    "map_unmap_per_op_at_1_05_second_half","ok_map_unmap_second_half",
#    "nonmonotonic":[...],"safe_budget" (smallest succeeding budget above
#    every failing one probed),"replays","seconds","machine","replay_build"}
# (or {"trace",...,"error":...} when a trace cannot be measured), then one
# {"summary":true,...} line.
# Exit: 0 every trace measured and monotonic; 1 an error or a non-monotonic
# budget; 2 bad usage. The ok_* targets are reported, not enforced.
set -euo pipefail

usage() {
    echo "usage: budget-search.sh [--build DIR] [--grid N] [--repeat N] [TRACE...]" >&2
    exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
grid=32
repeat=3
traces=()
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) usage ;;
    --build)
        [ $# -ge 2 ] || usage
        build=$2
        shift 2
        ;;
    --grid)
        [ $# -ge 2 ] || usage
        case $2 in '' | *[!0-9]*) usage ;; esac
        grid=$2
        shift 2
        ;;
    --repeat)
        [ $# -ge 2 ] || usage
        case $2 in '' | *[!0-9]*) usage ;; esac
        repeat=$2
        shift 2
        ;;
    --)
        shift
        traces+=("$@")
        break
        ;;
    -?*) usage ;;
    *)
        traces+=("$1")
        shift
        ;;
    esac
done
[ "$grid" -ge 2 ] && [ "$repeat" -ge 1 ] || usage

replay=$build/tools/ckalloc-replay
tracegen=$build/tools/ckalloc-tracegen
if [ ! -x "$replay" ]; then
    echo "budget-search.sh: $replay not found (build first: make build)" >&2
    exit 2
fi
command -v jq >/dev/null || { echo "budget-search.sh: jq is required" >&2; exit 2; }
for t in ${traces[@]+"${traces[@]}"}; do
    if [ "$t" != - ] && [ ! -r "$t" ]; then
        echo "budget-search.sh: cannot read trace '$t'" >&2
        exit 2
    fi
    [ "$t" != - ] || { echo "budget-search.sh: a trace from stdin cannot be replayed many times" >&2; exit 2; }
done

cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//' || true)
machine="$(uname -m)${cpu:+, $cpu}"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/budget-search.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Work on a copy of the tools, so that a rebuild of BUILD during the run
# cannot mix two builds (or fail with "Permission denied" mid-write). The
# tools link libckalloc statically; "replay_build" names the copy's sha256.
mkdir "$tmp/bin"
cp "$replay" "$tmp/bin/ckalloc-replay"
replay=$tmp/bin/ckalloc-replay
if [ -x "$tracegen" ]; then
    cp "$tracegen" "$tmp/bin/ckalloc-tracegen"
    tracegen=$tmp/bin/ckalloc-tracegen
fi
replay_build=$(sha256sum "$replay" | cut -c1-12)
# The checkout the build presumably came from (read-only git queries).
git_head=$(GIT_OPTIONAL_LOCKS=0 git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
tree_dirty=null
if [ "$git_head" != unknown ]; then
    if GIT_OPTIONAL_LOCKS=0 git -C "$root" diff --quiet HEAD -- 2>/dev/null; then tree_dirty=false; else tree_dirty=true; fi
fi

MiB=1048576
start_all=$(date +%s.%N)

# ---- traces to measure: given, or generated -------------------------------
# meta[i] is a JSON object with what is known of trace i (model, method, ...).
meta=()
if [ ${#traces[@]} -eq 0 ]; then
    [ -x "$tracegen" ] || { echo "budget-search.sh: $tracegen not found" >&2; exit 2; }
    help=$("$tracegen" --help 2>&1 || true)
    models=$(printf '%s\n' "$help" | sed -n 's/^ *--model \([^ ]*\).*/\1/p' | tr '|' ' ')
    [ -n "$models" ] || models=7b
    if [ -n "${METHODS:-}" ]; then
        methods=$METHODS
    else
        methods=$(printf '%s\n' "$help" | sed -n 's/^ *--method \([^ ]*\).*/\1/p' | tr '|' ' ')
    fi
    streams_list=1
    printf '%s\n' "$help" | grep -q -- '--streams' && streams_list="1 2"
    seqs=""
    printf '%s\n' "$help" | grep -q -- '--seq ' && seqs=${SEQS:-512 2048}
    steps=""
    printf '%s\n' "$help" | grep -q -- '--steps' && steps=${STEPS:-2}
    for model in $models; do
        for method in ${methods:-_}; do
            for s in $streams_list; do
                for seq in ${seqs:-_}; do
                    args=(--model "$model")
                    name=$model
                    [ "$method" = _ ] || { args+=(--method "$method"); name+=-$method; }
                    [ "$s" = 1 ] && [ "$streams_list" = 1 ] || { args+=(--streams "$s"); name+=-s$s; }
                    [ "$seq" = _ ] || { args+=(--seq "$seq"); name+=-seq$seq; }
                    [ -z "$steps" ] || { args+=(--steps "$steps"); name+=-steps$steps; }
                    f=$tmp/$name.csv
                    "$tracegen" "${args[@]}" -o "$f"
                    traces+=("$f")
                    meta+=("$(jq -cn --arg model "$model" --arg method "$method" \
                        --arg seq "$seq" --arg steps "$steps" --arg gen "ckalloc-tracegen ${args[*]}" \
                        '{model:$model, method:(if $method=="_" then null else $method end),
                          seq:(if $seq=="_" then null else ($seq|tonumber) end),
                          steps:(if $steps=="" then null else ($steps|tonumber) end), gen:$gen}')")
                done
            done
        done
    done
    # The real-run shape (REAL_RUN=0 leaves it out): Llama-3-8B LoRA, batch
    # 2, sequence length drawn up to 5760 each step, 8 steps: 78 GiB live at
    # its peak, loss-phase requests of 4.9-5.4 GiB, cached ranges of one
    # step's lengths beside the next step's live blocks.
    if [ "${REAL_RUN:-1}" = 1 ] && printf '%s\n' "$help" | grep -q -- '--model 8b\|[|]8b'; then
        for s in $streams_list; do
            args=(--model 8b --method lora --batch 2 --seq 5760 --steps 8 --streams "$s")
            f=$tmp/real-run-8b-lora-b2-seq5760-s$s.csv
            "$tracegen" "${args[@]}" -o "$f"
            traces+=("$f")
            meta+=("$(jq -cn --arg gen "ckalloc-tracegen ${args[*]}" \
                '{model:"8b", method:"lora", seq:5760, steps:8, shape:"real-run", gen:$gen}')")
        done
    fi
else
    for t in "${traces[@]}"; do meta+=('{"model":null,"method":null,"seq":null,"steps":null}'); done
fi

# ---- one replay ------------------------------------------------------------
# replay_at TRACE BUDGET ("" = none): sets R_RC, R_JSON, R_ERR (first stderr
# line), R_OK (1 when exit 0 and failures == 0), and counts replays.
nreplays=0
replay_at() {
    local conf=()
    [ -z "$2" ] || conf=(--conf "budget=$2")
    nreplays=$((nreplays + 1))
    R_RC=0
    R_JSON=$("$replay" --json ${conf[@]+"${conf[@]}"} "$1" 2>"$tmp/err") || R_RC=$?
    R_ERR=$(head -n 1 "$tmp/err")
    R_OK=0
    if [ "$R_RC" -eq 0 ] && [ "$(jq -r '.failures' <<<"$R_JSON" 2>/dev/null)" = 0 ]; then
        R_OK=1
    fi
    if [ "$R_RC" -ne 0 ] && [ "$R_RC" -ne 1 ]; then
        return 1
    fi
    [ -n "$R_JSON" ]
}

# probe BUDGET: replay trace $t at BUDGET once (memoised in seen/why).
probe() {
    if [ -n "${seen[$1]+x}" ]; then R_OK=${seen[$1]}; return 0; fi
    replay_at "$t" "$1" || return 1
    seen[$1]=$R_OK
    why[$1]=$R_ERR
}

# count_ok BUDGET N: replay trace $t N times at BUDGET; C_OK = successes.
count_ok() {
    local k
    C_OK=0
    for ((k = 0; k < $2; k++)); do
        replay_at "$t" "$1" || return 1
        C_OK=$((C_OK + R_OK))
    done
}

n_err=0 n_nonmono=0
lines=()
for i in "${!traces[@]}"; do
    t=${traces[$i]}
    m=${meta[$i]}
    tname=$t
    case $t in "$tmp"/*) tname=$(basename "$t") ;; esac
    t0=$(date +%s.%N)
    nreplays=0

    if ! replay_at "$t" "" || [ "$R_OK" != 1 ]; then
        n_err=$((n_err + 1))
        line=$(jq -cn --arg trace "$tname" --argjson m "$m" --arg machine "$machine" \
            --arg err "no-budget replay failed (exit $R_RC): $R_ERR" \
            --arg rb "$replay_build" \
            '{trace:$trace} + $m + {error:$err, machine:$machine, replay_build:$rb}')
        echo "$line"
        lines+=("$line")
        continue
    fi
    pl=$(jq -r '.peak_live_bytes' <<<"$R_JSON")
    streams=$(jq -r '.streams // null' <<<"$R_JSON")
    hi_end=$((pl + pl / 2))

    # (2) binary search: lo fails, hi succeeds.
    declare -A seen=()    # budget -> 1/0 (succeeded)
    declare -A why=()     # budget -> error sentence
    min_budget=null
    err=""
    if ! probe "$pl"; then err="replay at budget $pl: exit $R_RC: $R_ERR"
    elif [ "$R_OK" = 1 ]; then min_budget=$pl
    elif ! probe "$hi_end"; then err="replay at budget $hi_end: exit $R_RC: $R_ERR"
    elif [ "$R_OK" = 1 ]; then
        lo=$pl hi=$hi_end
        while [ $((hi - lo)) -gt $MiB ]; do
            mid=$((lo + (hi - lo) / 2))
            probe "$mid" || { err="replay at budget $mid: exit $R_RC: $R_ERR"; break; }
            if [ "$R_OK" = 1 ]; then hi=$mid; else lo=$mid; fi
        done
        min_budget=$hi
    fi

    # min_budget again, --repeat times: a replay with several streams runs
    # stream threads on the host backend and need not be deterministic.
    min_rep_ok=null
    if [ -z "$err" ] && [ "$min_budget" != null ]; then
        count_ok "$min_budget" "$repeat" || err="replay at budget $min_budget: exit $R_RC: $R_ERR"
        min_rep_ok=$C_OK
    fi

    # (3) 1.05 x peak live, --repeat times: the largest map_unmap_per_op.
    b105=$((pl * 105 / 100))
    mu105=null ok105=null mus='[]' ok105_runs=0 mus2='[]' mu105_2=null
    if [ -z "$err" ]; then
        for ((k = 0; k < repeat; k++)); do
            if ! replay_at "$t" "$b105"; then
                err="replay at budget $b105: exit $R_RC: $R_ERR"
                break
            fi
            mus=$(jq -c --argjson v "$(jq '.map_unmap_per_op' <<<"$R_JSON")" '. + [$v]' <<<"$mus")
            mus2=$(jq -c --argjson v "$(jq '.map_unmap_per_op_second_half // null' <<<"$R_JSON")" \
                '. + [$v]' <<<"$mus2")
            ok105_runs=$((ok105_runs + R_OK))
            if [ "$k" = 0 ]; then
                seen[$b105]=$R_OK
                why[$b105]=$R_ERR
            fi
        done
        if [ -z "$err" ]; then
            mu105=$(jq 'max' <<<"$mus")
            mu105_2=$(jq 'max' <<<"$mus2")
            [ "$ok105_runs" = "$repeat" ] && ok105=true || ok105=false
        fi
    fi

    # (4) monotonicity: a grid over [PL, 1.5 PL] and just above min_budget.
    if [ -z "$err" ]; then
        for ((k = 0; k < grid; k++)); do
            probe $((pl + (hi_end - pl) * k / (grid - 1))) || { err="grid replay: exit $R_RC: $R_ERR"; break; }
        done
        if [ "$min_budget" != null ]; then
            for k in 1 2 3 4 5 6 7 8; do
                b=$((min_budget + k * MiB))
                [ "$b" -le "$hi_end" ] || break
                probe "$b" || { err="replay at budget $b: exit $R_RC: $R_ERR"; break; }
            done
        fi
    fi
    # Every failing budget above the smallest succeeding one is a false OOM.
    # safe_budget: the smallest succeeding budget above every failing one
    # probed (equals min_budget when the outcomes are monotonic).
    nonmono='[]'
    safe_budget=null
    if [ -z "$err" ]; then
        smallest_ok=""
        for b in $(printf '%s\n' "${!seen[@]}" | sort -n); do
            if [ "${seen[$b]}" = 1 ]; then
                [ -n "$smallest_ok" ] || smallest_ok=$b
                [ "$safe_budget" != null ] || safe_budget=$b
            else
                safe_budget=null
            fi
            if [ "${seen[$b]}" = 0 ] && [ -n "$smallest_ok" ]; then
                # Replay both budgets --repeat more times: "deterministic"
                # when the failing one always fails and the smaller one
                # always succeeds, else "flaky".
                count_ok "$b" "$repeat" || { err="replay at budget $b: exit $R_RC: $R_ERR"; break; }
                f_ok=$C_OK
                count_ok "$smallest_ok" "$repeat" || { err="replay at budget $smallest_ok: exit $R_RC: $R_ERR"; break; }
                s_ok=$C_OK
                nonmono=$(jq -c --argjson f "$b" --argjson s "$smallest_ok" --argjson pl "$pl" \
                    --arg e "${why[$b]}" --argjson fo "$f_ok" --argjson so "$s_ok" --argjson r "$repeat" \
                    '. + [{fails_at:$f, fails_over_peak_live:(($f/$pl*10000|round)/10000),
                           succeeds_at:$s, error:$e,
                           reruns:$r, fails_at_reruns_ok:$fo, succeeds_at_reruns_ok:$so,
                           kind:(if $fo == 0 and $so == $r then "deterministic" else "flaky" end)}]' <<<"$nonmono")
            fi
        done
        if [ "$nonmono" != '[]' ]; then n_nonmono=$((n_nonmono + 1)); fi
    fi
    [ -z "$err" ] || n_err=$((n_err + 1))
    unset seen why

    t1=$(date +%s.%N)
    line=$(jq -cn --arg trace "$tname" --argjson m "$m" --argjson streams "$streams" \
        --argjson pl "$pl" --argjson mb "$min_budget" --argjson mu "$mu105" --argjson mu2 "$mu105_2" \
        --argjson ok105 "$ok105" --argjson nm "$nonmono" --arg err "$err" \
        --argjson safe "$safe_budget" --arg rb "$replay_build" \
        --argjson mus "$mus" --argjson minrep "$min_rep_ok" --argjson r "$repeat" \
        --argjson n "$nreplays" --argjson secs "$(echo "$t1 - $t0" | bc)" \
        --arg machine "$machine" '
        ({trace:$trace} + $m + {streams:$streams, peak_live:$pl, min_budget:$mb,
          min_budget_over_peak_live:(if $mb == null then null
                                     else ($mb/$pl*1000000|round)/1000000 end),
          min_budget_reruns_ok:$minrep, reruns:$r,
          map_unmap_per_op_at_1_05:$mu, map_unmap_per_op_at_1_05_runs:$mus,
          map_unmap_per_op_at_1_05_second_half:$mu2,
          ok_at_1_05:$ok105}) as $r
        | $r + {ok_min_budget:($r.min_budget_over_peak_live != null
                               and $r.min_budget_over_peak_live <= 1.01),
                ok_map_unmap:($mu != null and $mu <= 0.01),
                ok_map_unmap_second_half:($mu2 != null and $mu2 <= 0.01),
                nonmonotonic:$nm, safe_budget:$safe,
                replays:$n, seconds:(($secs*100|round)/100),
                machine:$machine, replay_build:$rb}
        + (if $err == "" then {} else {error:$err} end)')
    echo "$line"
    lines+=("$line")
done

end_all=$(date +%s.%N)
printf '%s\n' ${lines[@]+"${lines[@]}"} | jq -cs --argjson nerr "$n_err" --argjson nnm "$n_nonmono" \
    --argjson secs "$(echo "$end_all - $start_all" | bc)" --arg machine "$machine" \
    --arg rb "$replay_build" --arg gh "$git_head" --argjson td "$tree_dirty" '
    {summary:true, traces:length,
     measured:([.[] | select(.error | not)] | length), errors:$nerr,
     ok_min_budget:([.[] | select(.ok_min_budget)] | length),
     ok_map_unmap:([.[] | select(.ok_map_unmap)] | length),
     ok_map_unmap_second_half:([.[] | select(.ok_map_unmap_second_half)] | length),
     ok_at_1_05:([.[] | select(.ok_at_1_05)] | length),
     min_budget_flaky:([.[] | select(.min_budget_reruns_ok != null and .min_budget_reruns_ok < .reruns)] | length),
     nonmonotonic_traces:$nnm,
     nonmonotonic_deterministic:([.[] | select(any(.nonmonotonic[]?; .kind == "deterministic"))] | length),
     max_min_budget_over_peak_live:([.[].min_budget_over_peak_live | numbers] | max),
     max_map_unmap_per_op_at_1_05:([.[].map_unmap_per_op_at_1_05 | numbers] | max),
     max_map_unmap_per_op_at_1_05_second_half:([.[].map_unmap_per_op_at_1_05_second_half | numbers] | max),
     replays:([.[].replays | numbers] | add), seconds:(($secs*10|round)/10),
     machine:$machine, replay_build:$rb, git_head:$gh, tree_dirty:$td}'

[ "$n_err" -eq 0 ] && [ "$n_nonmono" -eq 0 ]
