#!/bin/sh
# The preload library on a machine without a driver or without a device, and
# what it says on stderr:
#   nodriver.sh PRELOAD_LIB PROG DRIVER_DIR [SANITIZER_RUNTIME:]
# PROG (ckp_nodriver) prints the codes of its CUDA calls; they must be the
# same with and without the preload (the runtime's and driver's own answers),
# and the preload says once what happened, or with verbose=1 that it is
# active and how the driver hooks were matched.
lib=$1 prog=$2 drv=$3 san=${4:-}
missing=libckalloc-test-no-such-driver.so.1
work=${TMPDIR:-/tmp}/ckp_nodriver.$$
mkdir -p "$work" || exit 1
trap 'rm -rf "$work"' EXIT
fail=0
no() { echo "FAIL: $*"; fail=1; }

# run NAME PRELOAD(0|1) ENV...: stdout in $work/NAME.out, stderr in NAME.err
run() {
    name=$1 pre=$2
    shift 2
    if [ "$pre" = 1 ]; then
        env "$@" LD_PRELOAD="$san$lib" "$prog" >"$work/$name.out" 2>"$work/$name.err"
    else
        env "$@" "$prog" >"$work/$name.out" 2>"$work/$name.err"
    fi
    echo "-- $name (preload=$pre): $(cat "$work/$name.out")"
    sed 's/^/   stderr: /' "$work/$name.err"
}
lines() { grep -c '^ckalloc:' "$work/$1.err"; }
same_codes() {
    cmp -s "$work/$1.out" "$work/$2.out" || no "$2 answers differ from $1: $(cat "$work/$2.out") vs $(cat "$work/$1.out")"
}

# No driver at all: the runtime's own error (35, insufficient driver), one line.
nodrv="CKALLOC_CUDA_LIB=$missing CKFAKECUDART_DRIVER=$missing"
run nodrv_plain 0 $nodrv CKALLOC_CONF=budget=1G
run nodrv 1 $nodrv CKALLOC_CONF=budget=1G
grep -q 'cudaMemGetInfo=35 ' "$work/nodrv_plain.out" || no "stand-in runtime without a driver did not say 35"
same_codes nodrv_plain nodrv
[ -s "$work/nodrv_plain.err" ] && no "without the preload something was printed"
[ "$(lines nodrv)" -eq 1 ] || no "no driver: expected one ckalloc line"
grep -q "no CUDA driver ($missing" "$work/nodrv.err" || no "no driver: the line does not say so"
# verbose adds nothing to a failure; backend=host says what it does.
run nodrv_verbose 1 $nodrv CKALLOC_CONF=verbose=1
same_codes nodrv_plain nodrv_verbose
[ "$(lines nodrv_verbose)" -eq 1 ] || no "no driver, verbose=1: expected one ckalloc line"
run nodrv_host 1 $nodrv CKALLOC_CONF=backend=host
same_codes nodrv_plain nodrv_host
[ "$(lines nodrv_host)" -eq 2 ] || no "no driver, backend=host: expected two ckalloc lines"
grep -q "backend=host: the CUDA allocation calls are not served" "$work/nodrv_host.err" ||
    no "backend=host: no line says what it does"

# A driver without devices: the driver's code (100, no device), one line.
nodev="LD_LIBRARY_PATH=$drv CKFAKECUDA_DEVICES=0"
run nodev_plain 0 $nodev
run nodev 1 $nodev CKALLOC_CONF=budget=1G
grep -q 'cudaMemGetInfo=100 ' "$work/nodev_plain.out" || no "stand-in runtime without a device did not say 100"
same_codes nodev_plain nodev
[ "$(lines nodev)" -eq 1 ] || no "no device: expected one ckalloc line"
grep -q "no CUDA device (cuInit: CUresult 100" "$work/nodev.err" || no "no device: the line does not say so"

# A device: silent by default; verbose=1 says it is active and how the hooks
# were matched (by address with this driver, by name when it answers with
# internal addresses).
dev="LD_LIBRARY_PATH=$drv"
run dev_plain 0 $dev
run dev 1 $dev CKALLOC_CONF=budget=1G
grep -q '^cudaMemGetInfo=0 cudaMalloc=0 cudaFree=0 cudaMemGetInfo=0$' "$work/dev.out" || no "with a device the calls failed"
[ -s "$work/dev.err" ] && no "verbose=0 with a working device printed something"
run dev_verbose 1 $dev CKALLOC_CONF=budget=1G,verbose=1
same_codes dev_plain dev_verbose
grep -q "active on 1 CUDA device (libcuda.so.1), budget 1 GiB per device" "$work/dev_verbose.err" ||
    no "verbose=1: no 'active' line"
grep -q "driver hooks matched by address" "$work/dev_verbose.err" || no "verbose=1: no 'matched by address' line"
[ "$(lines dev_verbose)" -eq 2 ] || no "verbose=1: expected two ckalloc lines"
run dev_internal 1 $dev CKFAKECUDA_PROC_INTERNAL=1 CKALLOC_CONF=budget=50%,verbose=1
same_codes dev_plain dev_internal
grep -q "driver hooks matched by name" "$work/dev_internal.err" || no "internal addresses: no 'matched by name' line"
grep -q "budget 50% of each device's memory" "$work/dev_internal.err" || no "budget=50%: not in the 'active' line"

[ $fail = 0 ] && echo "ok: preload without a driver, without a device, and verbose"
exit $fail
