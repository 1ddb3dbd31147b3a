#!/bin/sh
# Runs every check and test on a fresh machine: formatting, lints, unit and integration tests
# (real FUSE mounts, upstream PuzzleFS interop, real QEMU guests, the native vhost-user front
# end against our daemon and virtiofsd) for the whole workspace; formatting and lints also for
# the fuzz crate (vmm-tests/fuzz, a workspace of its own). Needs root.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/setup.sh
cargo fmt --check
cargo clippy --workspace --all-targets -- -D warnings
cargo fmt --check --manifest-path vmm-tests/fuzz/Cargo.toml
cargo clippy --manifest-path vmm-tests/fuzz/Cargo.toml --all-targets -- -D warnings
UPSTREAM_PUZZLEFS=$(scripts/install-upstream.sh) \
PFS_DEBIAN_TREE=$(scripts/debootstrap-tree.sh bookworm) \
    cargo test --release --workspace -- --test-threads=2
