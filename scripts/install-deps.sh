#!/usr/bin/env bash
# Installs the Debian 12 packages ckalloc builds and tests with, only those
# missing. Run by `make demo` and `make test`; safe to run again.
#   --browser   only chromium, for the HTML report test (`make test-all`)
set -euo pipefail

# Each one is used by the build or the tests today:
#   build-essential         gcc, g++ (README's C++ blocks, the C++ install consumers), make
#   cmake, pkg-config       the build; pkg-config also finds check, cjson and jemalloc
#   check, libsubunit-dev   the unit tests (Check links subunit on Debian)
#   libcjson-dev            test_snapshot reads snapshots back with cJSON
#   libjemalloc-dev         the tier engine's pinned host arena (libjemalloc2, dlopen'ed at
#                           run time) and bench_alloc's malloc baseline
#   libhwloc-dev            NUMA placement of pinned host memory (headers at build time,
#                           libhwloc15 dlopen'ed at run time)
#   libyaml-dev             policy files (yaml.h at build time, libyaml-0-2 dlopen'ed when a
#                           policy is read)
#   clang, libclang-rt-14-dev  `make fuzz` (libFuzzer under ASan+UBSan)
#   python3                 the tool, stat, snapshot and Python package tests
pkgs=(build-essential cmake pkg-config check libsubunit-dev libcjson-dev libjemalloc-dev
      libhwloc-dev libyaml-dev clang libclang-rt-14-dev python3)
if [ "${1:-}" = "--browser" ]; then
    pkgs=(chromium)
elif [ $# -gt 0 ]; then
    echo "usage: install-deps.sh [--browser]" >&2
    exit 2
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "ckalloc: installing missing packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "ckalloc: need root to install: ${missing[*]} (run: apt-get install ${missing[*]})" >&2
        exit 1
    fi
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
