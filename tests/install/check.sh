#!/bin/sh
# Installs the build into a scratch prefix, then builds the consumers twice:
# with find_package(ckalloc) and with pkg-config. Each must run:
#   consumer          C, ckalloc::ckalloc / -lckalloc
#   cxx_consumer      C++17 (-Wall -Wextra -Wpedantic -Werror), the same library
#   preload_consumer  C++, ckalloc::preload / -lckalloc_preload, ckalloc/preload.h
set -eu
build=$1 src=$2 work=$1/install-test
cxx=${CXX:-c++}
# CK_WERROR=0 (a build with CKALLOC_WERROR=OFF) keeps the warnings, drops -Werror.
werror=-Werror
if [ "${CK_WERROR:-1}" = 0 ]; then werror=; fi
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
for h in ckalloc.h replay.h preload.h tier.h policy.h; do
    [ -f "$work/prefix/include/ckalloc/$h" ] || { echo "install: include/ckalloc/$h not installed" >&2; exit 1; }
done
# Every installed header compiles alone, pedantically, in each C and C++
# standard a trainer may use.
for h in "$work"/prefix/include/ckalloc/*.h; do
    name=ckalloc/$(basename "$h")
    printf '#include <%s>\n#include <%s>\nint ck_header_check;\n' "$name" "$name" >"$work/h.c"
    cp "$work/h.c" "$work/h.cpp"
    for std in c99 c11 c17; do
        cc -std=$std -Wall -Wextra -Wpedantic $werror -I"$work/prefix/include" -c "$work/h.c" \
            -o "$work/h.o" || { echo "install: $name does not compile as $std" >&2; exit 1; }
    done
    for std in c++11 c++17 c++20; do
        "$cxx" -std=$std -Wall -Wextra -Wpedantic -Wold-style-cast $werror -I"$work/prefix/include" \
            -c "$work/h.cpp" -o "$work/h.o" || { echo "install: $name does not compile as $std" >&2; exit 1; }
    done
done
cmake -S "$src/consumer" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$work/prefix" -DCK_WERROR="${CK_WERROR:-1}" >/dev/null
cmake --build "$work/cmake" >/dev/null
libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -1)
libdir=$(dirname "$libdir")
export LD_LIBRARY_PATH="$libdir:${LD_LIBRARY_PATH:-}"
"$work/cmake/consumer"
"$work/cmake/cxx_consumer"
CKALLOC_CONF=backend=host,live=0 "$work/cmake/preload_consumer"

flags=$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags --libs ckalloc)
cflags=$(PKG_CONFIG_PATH="$libdir/pkgconfig" pkg-config --cflags ckalloc)
# shellcheck disable=SC2086
cc -o "$work/pc-consumer" "$src/consumer/main.c" $flags
"$work/pc-consumer"
# shellcheck disable=SC2086
"$cxx" -std=c++17 -Wall -Wextra -Wpedantic $werror -o "$work/pc-cxx-consumer" \
    "$src/consumer/cxx_consumer.cpp" $flags
"$work/pc-cxx-consumer"
# shellcheck disable=SC2086
"$cxx" -std=c++17 -Wall -Wextra -Wpedantic $werror -o "$work/pc-preload-consumer" \
    "$src/consumer/preload_consumer.cpp" $cflags -L"$libdir" -lckalloc_preload
CKALLOC_CONF=backend=host,live=0 "$work/pc-preload-consumer"
