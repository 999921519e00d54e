#!/bin/sh
# Run here (a machine with apt and a network), from anywhere in the checkout,
# before a GPU run: downloads the Debian 12 packages the build needs and the
# GPU machine lacks (pkgconf, check + subunit, cJSON, libyaml) and unpacks them into
# .deps/root (ignored by git, about 0.5 MiB). Name ".deps" in the device
# tool's `carry`; scripts/gpu-check.sh builds against it there, never apt.
#
#   scripts/fetch-gpu-deps.sh [--force]     (--force: fetch again)
#
# Nothing is installed on this machine (apt-get download + dpkg -x, no root).
# Exit 0 done (or already there), 1 a download or unpack failed, 2 bad usage.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
force=0
case ${1:-} in
'') ;;
--force) force=1 ;;
*) echo "usage: scripts/fetch-gpu-deps.sh [--force]" >&2; exit 2 ;;
esac
pkgs="check libsubunit-dev libsubunit0 libcjson-dev libcjson1 pkgconf-bin libpkgconf3 libyaml-dev libyaml-0-2"
d=.deps
if [ $force = 0 ] && [ -f $d/root/.complete ] && [ "$(cat $d/root/.complete)" = "$pkgs" ]; then
    echo "fetch-gpu-deps: $d/root is there ($(cat $d/root/.complete)); --force fetches again"
    exit 0
fi
if ! git check-ignore -q $d/root 2>/dev/null; then
    echo "fetch-gpu-deps: $d/ is not ignored by git (add it to .gitignore)" >&2
    exit 1
fi
command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
    { echo "fetch-gpu-deps: needs apt-get and dpkg (a Debian 12 machine)" >&2; exit 1; }
rm -rf $d/root $d/debs
mkdir -p $d/debs
# shellcheck disable=SC2086 # the list splits on purpose
(cd $d/debs && apt-get download $pkgs) ||
    { echo "fetch-gpu-deps: apt-get download failed (no network here?)" >&2; exit 1; }
for f in $d/debs/*.deb; do
    dpkg -x "$f" $d/root || { echo "fetch-gpu-deps: dpkg -x $f failed" >&2; exit 1; }
done
# Documentation and checkmk (a script the build never runs) are not needed.
rm -rf $d/debs $d/root/usr/share $d/root/usr/bin/checkmk
lib=$d/root/usr/lib/x86_64-linux-gnu
for pc in check libcjson yaml-0.1; do
    [ -f $lib/pkgconfig/$pc.pc ] || { echo "fetch-gpu-deps: $lib/pkgconfig/$pc.pc missing after unpack" >&2; exit 1; }
done
[ -x $d/root/usr/bin/pkgconf ] || { echo "fetch-gpu-deps: $d/root/usr/bin/pkgconf missing after unpack" >&2; exit 1; }
echo "$pkgs" >$d/root/.complete
echo "fetch-gpu-deps: $(du -sh $d | cut -f1) in $d (carry it: [\".deps\"])"
