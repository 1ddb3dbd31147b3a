#!/bin/sh
# Prepares a fresh Debian 12 machine: system packages, the Rust build, and upstream PuzzleFS
# (the reference implementation the tests interoperate with). Idempotent; needs root.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
packages="capnproto fuse3 qemu-system-x86 busybox-static debootstrap skopeo umoci zstd attr
    fsverity e2fsprogs libseccomp-dev libcap-ng-dev cpio xz-utils kmod ca-certificates gcc libc6-dev
    curl"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
fi
"$here/scripts/install-upstream.sh" >/dev/null
# virtiofsd 1.14, the reference daemon the front-end tests compare with.
if ! /opt/virtiofsd/bin/virtiofsd --version 2>/dev/null | grep -q "^virtiofsd 1\.14\."; then
    cargo install virtiofsd --version 1.14.0 --locked --root /opt/virtiofsd >&2
fi
cargo build --release --workspace --manifest-path "$here/Cargo.toml" >&2
