#!/bin/sh
# Creates (once) a real Debian root file system for tests and benchmarks and prints its path.
#   scripts/debootstrap-tree.sh [SUITE] [EXTRA_PACKAGES...]
# SUITE defaults to bookworm (minbase variant). Extra packages are installed with apt in a
# chroot, giving realistic successive versions of a rootfs. Cached under $PFS_CACHE.
set -eu
suite=${1:-bookworm}
[ $# -gt 0 ] && shift
extra=$*
cache=${PFS_CACHE:-$HOME/.cache/puzzlefs-virtiofsd}
name=$suite-minbase
[ -n "$extra" ] && name=$name+$(echo "$extra" | tr ' ' '+')
dest=$cache/rootfs/$name
if [ -e "$dest.complete" ]; then
    echo "$dest"
    exit 0
fi
mkdir -p "$cache/rootfs"
base=$cache/rootfs/$suite-minbase
if [ ! -e "$base.complete" ]; then
    rm -rf "$base.tmp"
    debootstrap --variant=minbase "$suite" "$base.tmp" http://deb.debian.org/debian >&2
    rm -rf "$base"
    mv "$base.tmp" "$base"
    touch "$base.complete"
fi
if [ -n "$extra" ]; then
    rm -rf "$dest.tmp"
    cp -a "$base" "$dest.tmp"
    mount -t proc proc "$dest.tmp/proc"
    trap 'umount "$dest.tmp/proc" 2>/dev/null || true' EXIT
    chroot "$dest.tmp" sh -c "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $extra && apt-get clean" >&2
    umount "$dest.tmp/proc"
    trap - EXIT
    rm -rf "$dest"
    mv "$dest.tmp" "$dest"
    touch "$dest.complete"
fi
echo "$dest"
