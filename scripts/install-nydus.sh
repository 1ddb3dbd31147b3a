#!/bin/sh
# Installs Nydus 2.2 (nydus-image, nydusd with virtio-fs), the closest peer we benchmark against,
# into $NYDUS_ROOT (default /opt/nydus) and prints its bin directory. Needs cmake.
set -eu
root=${NYDUS_ROOT:-/opt/nydus}
if [ ! -x "$root/bin/nydusd" ] || [ ! -x "$root/bin/nydus-image" ]; then
    command -v cmake >/dev/null || apt-get install -y cmake >&2
    cargo install nydus-rs --version 2.2.0 --locked --features virtiofs --root "$root" >&2
fi
echo "$root/bin"
