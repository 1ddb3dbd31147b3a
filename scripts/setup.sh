#!/bin/sh
# Prepares a fresh Debian 12 machine: system packages, the Rust build, and upstream PuzzleFS
# (the reference implementation the tests interoperate with). Checks, but never installs, the
# Rust toolchain (cargo, rustc, clippy, rustfmt at Cargo.toml's rust-version or newer).
# Idempotent; needs root (sudo is not needed and need not exist).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)

fail() {
    echo "setup.sh: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (as a user with sudo: sudo $0)"

# Each package and what uses it: capnproto (schema codegen test), fuse3 (host mounts),
# qemu-system-x86 busybox-static cpio (guests), debootstrap (Debian trees), skopeo
# (tests/skopeo.rs), zstd xz-utils (guest kernel modules), attr (images/ fixtures), fsverity
# e2fsprogs (fs-verity tests), libseccomp-dev libcap-ng-dev (virtiofsd), gcc g++ libc6-dev
# (build scripts; libfuzzer-sys compiles C++), curl (API tests), util-linux (setpriv),
# ca-certificates (cargo, apt over https), docker-registry (CNCF distribution 2.8, the registries
# tests/registry_harness starts), openssl (that harness's token server: its key, certificate and
# JWT signatures).
packages="capnproto fuse3 qemu-system-x86 busybox-static cpio debootstrap skopeo zstd xz-utils
    attr fsverity e2fsprogs libseccomp-dev libcap-ng-dev gcc g++ libc6-dev curl util-linux
    ca-certificates docker-registry openssl"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -q >&2
    # Installing docker-registry would start its system service on port 5000: a policy-rc.d that
    # exits 101 forbids that during the install (only ours, and only if there was none before).
    policy=/usr/sbin/policy-rc.d
    ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# setup.sh: no service starts during its install\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        ours=1
    fi
    status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2 ||
        status=$?
    [ -z "$ours" ] || rm -f "$policy"
    [ "$status" = 0 ] || fail "apt-get install failed ($status)"
fi
# The tests start registries of their own; a system one (started anyway, or by an earlier setup)
# would only hold port 5000.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl stop docker-registry >&2 || true
    systemctl disable docker-registry >&2 2>/dev/null || true
fi
if [ -x /etc/init.d/docker-registry ]; then
    /etc/init.d/docker-registry stop >&2 2>/dev/null || true
fi
# Only the service's own process (its user's): the tests' registries run as root.
if id docker-registry >/dev/null 2>&1 && pids=$(pgrep -u docker-registry -x docker-registry 2>/dev/null); then
    kill $pids 2>/dev/null || true
fi

# version_ge A B: whether the dotted version A is B or newer (numeric parts; missing ones are 0).
version_ge() {
    a=$1
    b=$2
    while [ -n "$a$b" ]; do
        x=${a%%.*}
        y=${b%%.*}
        [ "${x:-0}" -gt "${y:-0}" ] && return 0
        [ "${x:-0}" -lt "${y:-0}" ] && return 1
        case $a in *.*) a=${a#*.} ;; *) a= ;; esac
        case $b in *.*) b=${b#*.} ;; *) b= ;; esac
    done
    return 0
}

# The number in `NAME 1.89.0 (...)` or `NAME 1.89.0-beta.1`.
tool_version() {
    "$@" --version 2>/dev/null | sed -n '1s/^[^ ]* \([0-9][0-9.]*\).*/\1/p'
}

need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$here/Cargo.toml" | head -n 1)
[ -n "$need" ] || fail "no rust-version in $here/Cargo.toml"
problem=""
for tool in rustc cargo; do
    v=$(tool_version "$tool" || true)
    if [ -z "$v" ]; then
        problem="$problem, no $tool"
    elif ! version_ge "$v" "$need"; then
        problem="$problem, $tool $v"
    fi
done
cargo clippy --version >/dev/null 2>&1 || problem="$problem, no clippy"
cargo fmt --version >/dev/null 2>&1 || problem="$problem, no rustfmt"
if [ -n "$problem" ]; then
    fix="rustup toolchain install stable --component clippy rustfmt"
    command -v rustup >/dev/null 2>&1 ||
        fix="curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --component clippy rustfmt, then . \"\$HOME/.cargo/env\""
    fail "need Rust $need or newer with clippy and rustfmt (found:${problem#,}); install it with: $fix"
fi

"$here/scripts/install-upstream.sh" >/dev/null
# virtiofsd 1.14, the reference daemon the front-end tests compare with.
if ! /opt/virtiofsd/bin/virtiofsd --version 2>/dev/null | grep -q "^virtiofsd 1\.14\."; then
    cargo install virtiofsd --version 1.14.0 --locked --root /opt/virtiofsd >&2
fi
cargo build --release --workspace --manifest-path "$here/Cargo.toml" >&2
