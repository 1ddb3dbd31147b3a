#!/bin/sh
# Measures what verifying every chunk costs whole-image reads through the reader, on a real
# Debian tree stored plain and zstd-compressed (benches/verify.rs says what each pass does).
#   scripts/bench-verify.sh [RUNS] [ROOTFS]
# Images go to /dev/shm (tmpfs: blob reads cost a copy, not a disk), removed afterwards.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-5}
rootfs=${2:-$("$here/scripts/debootstrap-tree.sh" bookworm)}
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
cargo bench --no-run --bench verify --manifest-path "$here/Cargo.toml" >&2
work=$(mktemp -d /dev/shm/bench-verify.XXXXXX)
trap 'rm -rf "$work"' EXIT
"${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs" build "$rootfs" "$work/oci:plain" >/dev/null
"${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs" build -c "$rootfs" "$work/oci:zstd" >/dev/null
for tag in plain zstd; do
    cargo bench -q --bench verify --manifest-path "$here/Cargo.toml" -- "$work/oci" "$tag" "$runs"
    echo
done
