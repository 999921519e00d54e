#!/usr/bin/env bash
# Instructions per cached malloc+free pair, ckalloc against glibc, counted by
# valgrind --tool=callgrind (repeatable on a noisy machine, unlike time).
# Each program runs with N pairs and with 0 pairs; the difference / N is the
# pair's cost, set-up excluded.
#
#   bench/callgrind/pair.sh [BUILD_DIR] [SIZE ...]
#
# Default sizes: bench_alloc's pair sizes (512 B to 32 MiB). Prints one JSON
# line: {"bench":"pair_instructions","sizes":{SIZE:{ckalloc,glibc,ratio}},
# "ckalloc_median":..,"glibc_median":..,"median_ratio":r,"target_ratio":1.5,
# "meets_target":bool}; the target (issue 11) compares the medians over the
# mix. Exit 0, 1 when a program fails, 2 bad usage or no valgrind.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build}
[ $# -gt 0 ] && shift
case $build in /*) ;; *) build=$root/$build ;; esac
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(512 4096 65536 307200 1048576 4194304 33554432)
command -v valgrind >/dev/null || { echo "pair.sh: valgrind is not installed" >&2; exit 2; }
[ -f "$build/libckalloc.a" ] || { echo "pair.sh: $build/libckalloc.a not found (make build)" >&2; exit 2; }
for s in "${sizes[@]}"; do
    case $s in '' | *[!0-9]*) echo "pair.sh: size '$s' is not a number of bytes" >&2; exit 2 ;; esac
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ckpair.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cc=${CC:-cc}
"$cc" -O2 -I "$root/include" "$root/bench/callgrind/pair_ck.c" "$build/libckalloc.a" -lpthread -lm -ldl -o "$tmp/ck" || exit 1
"$cc" -O2 "$root/bench/callgrind/pair_glibc.c" -o "$tmp/glibc" || exit 1
n=100000
refs() { # PROGRAM SIZE COUNT -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | awk '/refs:/ {gsub(",", "", $NF); print $NF}'
}
out="{\"bench\":\"pair_instructions\",\"pairs\":$n,\"sizes\":{"
first=1 cks=() gls=()
for s in "${sizes[@]}"; do
    ck=$(( ($(refs "$tmp/ck" "$s" $n) - $(refs "$tmp/ck" "$s" 0)) / n ))
    gl=$(( ($(refs "$tmp/glibc" "$s" $n) - $(refs "$tmp/glibc" "$s" 0)) / n ))
    ratio=$(awk -v a="$ck" -v b="$gl" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')
    cks+=("$ck")
    gls+=("$gl")
    [ $first = 1 ] || out+=","
    first=0
    out+="\"$s\":{\"ckalloc\":$ck,\"glibc\":$gl,\"ratio\":$ratio}"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ckm=$(median "${cks[@]}")
glm=$(median "${gls[@]}")
ratio=$(awk -v a="$ckm" -v b="$glm" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')
meets=$(awk -v r="$ratio" 'BEGIN { print (r <= 1.5) ? "true" : "false" }')
echo "$out},\"ckalloc_median\":$ckm,\"glibc_median\":$glm,\"median_ratio\":$ratio,\"target_ratio\":1.5,\"meets_target\":$meets}"
