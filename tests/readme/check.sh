#!/bin/sh
# Compiles every C, C++ and CUDA code block of README.md, read at test time,
# so the README cannot drift from the headers.
#
#   check.sh README INCLUDE_DIR LIB_DIR WORK_DIR CC CXX [NVCC]
#
# A fenced block is ```c, ```cpp (or ```c++) or ```cuda (or ```cu). The line
# just above its fence (blank lines between are allowed) may say how to treat it:
#   <!-- readme-test: fragment(ck_pool *pool, ck_stream stream) -->
#       statements, not a translation unit: its #include lines go first and the
#       rest becomes the body of a function taking those parameters (the free
#       variables the block uses) and returning int;
#   <!-- readme-test: skip REASON -->
#       not compiled (say why).
# Without a marker a block is a translation unit as written. One that defines
# main( is also linked against the library (libckalloc_preload when it
# includes ckalloc/preload.h) and run; it must exit 0. A C block is compiled
# as C99 and as C++; a cpp block as C++; both also by nvcc -x cu when NVCC is
# given; a cuda block only by nvcc (reported as skipped without it). All with
# -Wall -Wextra -Werror (CK_WERROR=0 in the environment, set by a build with
# CKALLOC_WERROR=OFF, keeps the warnings but drops -Werror). Errors point at
# README lines (#line).
set -u
readme=$1 inc=$2 libdir=$3 work=$4 cc=$5 cxx=$6 nvcc=${7:-}
rm -rf "$work"
mkdir -p "$work"
[ -r "$readme" ] || { echo "readme check: cannot read $readme" >&2; exit 2; }
name=$(basename "$readme")

# Split the README into block files: N.LANG (the code), N.meta (line, lang, marker).
awk -v dir="$work" '
    function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
    inblock && /^[ \t]*```[ \t]*$/ { inblock = 0; close(file); next }
    inblock { print > file; next }
    skipping && /^[ \t]*```[ \t]*$/ { skipping = 0; next }
    skipping { next }
    /^[ \t]*```[A-Za-z0-9_+-]*[ \t]*$/ {
        lang = trim(substr(trim($0), 4))
        if (lang == "c++") lang = "cpp"
        if (lang == "cu") lang = "cuda"
        if (lang == "c" || lang == "cpp" || lang == "cuda") {
            n++
            file = dir "/" n "." lang
            printf "" > file
            printf "%d %s %s\n", NR + 1, lang, marker > (dir "/" n ".meta")
            close(dir "/" n ".meta")
            inblock = 1
            start = NR
        } else {
            skipping = 1
        }
        marker = ""
        next
    }
    /^[ \t]*$/ { next }
    {
        if (match($0, /^<!-- *readme-test: *.*-->[ \t]*$/)) {
            m = $0
            sub(/^<!-- *readme-test: */, "", m)
            sub(/ *-->[ \t]*$/, "", m)
            marker = m
        } else {
            marker = ""
        }
    }
    END { if (inblock) { printf "README.md: the block opened at line %d is never closed\n", start > "/dev/stderr"; exit 1 } }
' "$readme" || exit 1

werror=-Werror nvwerror="-Werror all-warnings" xwerror=,-Werror
if [ "${CK_WERROR:-1}" = 0 ]; then werror= nvwerror= xwerror=; fi
cflags="-Wall -Wextra $werror -Wno-unused-parameter -I$inc"
fail=0 built=0 ran=0 skipped=0 blocks=0

# compile WHAT OUT CMD...: run a compiler, report a failure with its output.
compile() {
    what=$1 log=$2
    shift 2
    if ! "$@" >"$log" 2>&1; then
        echo "FAIL: $what"
        echo "  \$ $*"
        sed 's/^/  /' "$log"
        fail=1
        return 1
    fi
    built=$((built + 1))
    return 0
}

for meta in "$work"/*.meta; do
    [ -e "$meta" ] || continue
    n=$(basename "$meta" .meta)
    read -r line lang marker <"$meta"
    blocks=$((blocks + 1))
    src=$work/$n.$lang
    where="$name:$line ($lang block $n)"
    case $marker in
    skip*)
        reason=${marker#skip}
        echo "skip: $where:${reason:- (no reason given)}"
        skipped=$((skipped + 1))
        continue
        ;;
    esac

    # The translation unit to compile: as written, or the fragment wrapped.
    tu=$work/$n.tu
    case $marker in
    fragment\(*\))
        params=${marker#fragment(}
        params=${params%)}
        {
            grep '^[[:space:]]*#[[:space:]]*include' "$src"
            echo "int ck_readme_fragment_$n($params);"
            echo "int ck_readme_fragment_$n($params) {"
            echo "#line $line \"$readme\""
            sed 's/^[[:space:]]*#[[:space:]]*include.*//' "$src"
            echo "    return 0;"
            echo "}"
        } >"$tu"
        ;;
    '')
        { echo "#line $line \"$readme\""; cat "$src"; } >"$tu"
        ;;
    *)
        echo "FAIL: $where: unknown marker 'readme-test: $marker' (fragment(PARAMS) or skip REASON)"
        fail=1
        continue
        ;;
    esac
    program=0
    [ -z "$marker" ] && grep -q '\bmain[[:space:]]*(' "$src" && program=1

    if [ "$lang" = c ]; then
        cp "$tu" "$work/$n.c.c"
        compile "$where as C99" "$work/$n.c.log" \
            "$cc" -std=c99 -Wpedantic $cflags -c "$work/$n.c.c" -o "$work/$n.c.o" || continue
    fi
    if [ "$lang" = c ] || [ "$lang" = cpp ]; then
        cp "$tu" "$work/$n.cpp.cpp"
        compile "$where as C++" "$work/$n.cpp.log" \
            "$cxx" -std=c++17 -Wpedantic $cflags -c "$work/$n.cpp.cpp" -o "$work/$n.cpp.o" || continue
    fi
    if [ -n "$nvcc" ]; then
        cp "$tu" "$work/$n.cu"
        compile "$where as CUDA (nvcc)" "$work/$n.cu.log" \
            "$nvcc" -x cu -std=c++17 $nvwerror \
            -Xcompiler=-Wall,-Wextra$xwerror,-Wno-unused-parameter -I"$inc" \
            -c "$work/$n.cu" -o "$work/$n.cu.o" || continue
    elif [ "$lang" = cuda ]; then
        echo "skip: $where: no nvcc"
        skipped=$((skipped + 1))
        continue
    fi

    if [ $program = 1 ] && [ "$lang" != cuda ]; then
        lib=ckalloc
        grep -q 'ckalloc/preload\.h' "$src" && lib=ckalloc_preload
        obj=$work/$n.cpp.o link=$cxx
        [ "$lang" = c ] && obj=$work/$n.c.o link=$cc
        compile "$where: link" "$work/$n.link.log" \
            "$link" -o "$work/$n.prog" "$obj" -L"$libdir" -l$lib -Wl,-rpath,"$libdir" || continue
        (cd "$work" && env -u CKALLOC_CONF "./$n.prog" >"$n.run.log" 2>&1)
        rc=$?
        if [ $rc -ne 0 ]; then
            echo "FAIL: $where: the program exited with status $rc:"
            sed 's/^/  /' "$work/$n.run.log"
            fail=1
            continue
        fi
        ran=$((ran + 1))
    fi
    echo "ok: $where"
done

echo "readme check: $blocks code blocks, $built compiles, $ran programs run, $skipped skipped"
if [ "$blocks" -eq 0 ]; then
    echo "FAIL: no c/cpp/cuda code block found in $readme" >&2
    exit 1
fi
exit $fail
