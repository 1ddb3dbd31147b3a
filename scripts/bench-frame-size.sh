#!/bin/sh
# Measures what the zstd frame size costs: image size, build CPU time, and CPU time to verify
# and decompress every blob and read every file (`puzzlefs check`), on a real Debian tree.
#   scripts/bench-frame-size.sh [ROOTFS]
# Prints a markdown table. CPU seconds (user+sys) are reported because wall-clock time on
# shared machines swings widely.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rootfs=${1:-$("$here/scripts/debootstrap-tree.sh" bookworm)}
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
pfs=${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cpu() { /usr/bin/time -f "%U %S" "$@" 2>&1 >/dev/null | tail -1 | awk '{printf "%.2f", $1 + $2}'; }
echo "| frame size | stored MiB | build CPU s | check CPU s |"
echo "|---:|---:|---:|---:|"
for frame in 4096 16384 65536 262144; do
    oci=$work/oci-$frame
    b=$(cpu "$pfs" build -c --frame-size "$frame" "$rootfs" "$oci:t")
    c=$(cpu "$pfs" check "$oci")
    size=$(du -sm --apparent-size "$oci" | cut -f1)
    echo "| $((frame / 1024)) KiB | $size | $b | $c |"
done
