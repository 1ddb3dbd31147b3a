#!/bin/sh
# Fetches (once) the Debian 6.1 guest kernel and the modules a virtio-fs guest needs, and
# prints the directory holding them:
#   $DIR/vmlinuz, $DIR/modules/*.ko (uncompressed), $DIR/version
# Uses only the Debian package registry: `apt-get download linux-image-6.1.0-N-amd64`, the
# newest N apt offers (or $PFS_KERNEL_PACKAGE). Cached under ${PFS_CACHE:-~/.cache/puzzlefs-virtiofsd}.
set -eu
cache=${PFS_CACHE:-$HOME/.cache/puzzlefs-virtiofsd}
# The modules, in load order; paths relative to lib/modules/VERSION/kernel. Besides virtio-fs:
# a virtio disk with ext4 (fs-verity tests; the kernel has CONFIG_FS_VERITY=y built in), and
# overlayfs (container roots as Kata builds them in the guest).
MODULES="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev
drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci fs/fuse/fuse fs/fuse/virtiofs
drivers/block/virtio_blk lib/crc16 crypto/crc32c_generic fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4
fs/overlayfs/overlay"
# A cached kernel counts only if it was made with this module list.
stamp=$(printf '%s' "$MODULES" | sha256sum | cut -c1-16)

pkg=${PFS_KERNEL_PACKAGE:-}
if [ -z "$pkg" ]; then
    # Reuse whatever was fetched before, so that a cached kernel needs no apt lists.
    last=$(ls -d "$cache"/kernel/linux-image-* 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$last" ] && [ "$(cat "$last/complete" 2>/dev/null)" = "$stamp" ]; then
        echo "$last"
        exit 0
    fi
    newest() {
        apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -n 1
    }
    pkg=$(newest)
    if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
        # A fresh machine may have no package lists yet.
        apt-get update -q >&2 || true
        pkg=$(newest)
    fi
    if [ -z "$pkg" ]; then
        echo "guest-kernel.sh: apt offers no linux-image-6.1.0-*-amd64 (run apt-get update)" >&2
        exit 1
    fi
fi
dest=$cache/kernel/$pkg
if [ "$(cat "$dest/complete" 2>/dev/null)" = "$stamp" ]; then
    echo "$dest"
    exit 0
fi
tmp=$dest.tmp
rm -rf "$tmp"
mkdir -p "$tmp/deb" "$tmp/root" "$tmp/out/modules"
chmod 777 "$tmp/deb" # apt's download user writes there
(cd "$tmp/deb" && apt-get download -q "$pkg" >&2)
dpkg-deb -x "$tmp"/deb/*.deb "$tmp/root"
version=$(ls "$tmp/root/lib/modules" | head -n 1)
cp "$tmp/root/boot/vmlinuz-$version" "$tmp/out/vmlinuz"
echo "$version" > "$tmp/out/version"
for m in $MODULES; do
    base=$tmp/root/lib/modules/$version/kernel/$m
    name=$(basename "$m")
    if [ -e "$base.ko" ]; then
        cp "$base.ko" "$tmp/out/modules/$name.ko"
    elif [ -e "$base.ko.xz" ]; then
        xz -dc "$base.ko.xz" > "$tmp/out/modules/$name.ko"
    elif [ -e "$base.ko.zst" ]; then
        zstd -qdc "$base.ko.zst" > "$tmp/out/modules/$name.ko"
    else
        # Built into this kernel: nothing to load.
        echo "guest-kernel.sh: $name is built in" >&2
    fi
done
echo "$MODULES" | tr ' ' '\n' | sed 's|.*/||' | while read -r name; do
    [ -n "$name" ] && [ -e "$tmp/out/modules/$name.ko" ] && echo "$name.ko"
done > "$tmp/out/modules/order"
rm -rf "$dest"
mv "$tmp/out" "$dest"
rm -rf "$tmp"
echo "$stamp" > "$dest/complete"
echo "$dest"
