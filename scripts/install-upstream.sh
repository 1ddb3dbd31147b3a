#!/bin/sh
# Installs upstream PuzzleFS 0.2 (the reference implementation we interoperate with) into
# $UPSTREAM_ROOT (default /opt/upstream-puzzlefs) and prints the binary's path.
# It needs nightly features, so it is built with RUSTC_BOOTSTRAP=1 on the stable toolchain;
# the project itself stays on stable.
set -eu
root=${UPSTREAM_ROOT:-/opt/upstream-puzzlefs}
if [ ! -x "$root/bin/puzzlefs" ]; then
    RUSTC_BOOTSTRAP=1 cargo install puzzlefs --version 0.2.0 --locked --root "$root" >&2
fi
echo "$root/bin/puzzlefs"
