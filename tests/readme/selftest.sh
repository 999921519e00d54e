#!/bin/sh
# check.sh on a made-up README: each kind of block must get the verdict it
# deserves, so a broken extractor cannot pass the real README vacuously.
#   selftest.sh CHECK_SH INCLUDE_DIR LIB_DIR WORK_DIR CC CXX
set -u
check=$1 inc=$2 libdir=$3 work=$4 cc=$5 cxx=$6
rm -rf "$work"
mkdir -p "$work"
md=$work/README.md
cat >"$md" <<'MD'
# made up

```c
#include <ckalloc/ckalloc.h>
int main(void) { return ck_free(NULL, NULL, NULL) == CK_ERR_INVALID ? 0 : 1; }
```

```sh
echo "a shell block is not compiled"
```

<!-- readme-test: fragment(ck_pool *pool, ck_stream stream) -->
```c
#include <ckalloc/ckalloc.h>
void *p;
if (ck_malloc(pool, &p, 512, stream) != CK_OK) return 1;
```

```c
#include <ckalloc/ckalloc.h>
void *q;
ck_malloc(pool, &q, 512, stream);
```

```c
int main(void) { return 3; }
```

<!-- readme-test: skip pseudo-code -->
```c
this is not C
```

<!-- readme-test: fragments(int n) -->
```cpp
int x = n;
```

```cuda
__global__ void k(void) {}
```
MD
out=$work/out.txt
sh "$check" "$md" "$inc" "$libdir" "$work/run" "$cc" "$cxx" >"$out" 2>&1
rc=$?
cat "$out"
fail=0
expect() {
    if ! grep -qF -- "$1" "$out"; then
        echo "SELFTEST FAIL: the output lacks: $1"
        fail=1
    fi
}
expect "ok: README.md:4 (c block 1)"
expect "ok: README.md:14 (c block 2)"
expect "FAIL: README.md:20 (c block 3) as C99"
expect "FAIL: README.md:26 (c block 4): the program exited with status 3"
expect "skip: README.md:31 (c block 5): pseudo-code"
expect "FAIL: README.md:36 (cpp block 6): unknown marker 'readme-test: fragments(int n)'"
expect "skip: README.md:40 (cuda block 7): no nvcc"
expect "readme check: 7 code blocks"
if grep -q 'shell block' "$work/run"/*.c 2>/dev/null; then
    echo "SELFTEST FAIL: the sh block was extracted"
    fail=1
fi
if [ $rc -ne 1 ]; then
    echo "SELFTEST FAIL: check.sh exited $rc, expected 1"
    fail=1
fi
# A README without any code block is an error, not a pass.
printf '# nothing\n' >"$work/empty.md"
if sh "$check" "$work/empty.md" "$inc" "$libdir" "$work/run2" "$cc" "$cxx" >/dev/null 2>&1; then
    echo "SELFTEST FAIL: a README without code blocks passed"
    fail=1
fi
[ $fail = 0 ] && echo "readme selftest ok"
exit $fail
