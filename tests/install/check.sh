#!/bin/sh
# Installs the build into a scratch prefix, then builds a consumer twice:
# with find_package(ckalloc) and with pkg-config. Both must run.
set -eu
build=$1 src=$2 work=$1/install-test
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$src/consumer" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake" >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib:${LD_LIBRARY_PATH:-}" "$work/cmake/consumer"
libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -1)
flags=$(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs ckalloc)
# shellcheck disable=SC2086
cc -o "$work/pc-consumer" "$src/consumer/main.c" $flags
LD_LIBRARY_PATH="$(dirname "$libdir"):${LD_LIBRARY_PATH:-}" "$work/pc-consumer"
