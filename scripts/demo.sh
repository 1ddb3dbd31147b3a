#!/bin/sh
# The main job on a fresh machine: set up, turn a real Debian root file system into a
# PuzzleFS image, and serve it without unpacking anything.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
pfs=$here/target/release/puzzlefs
work=${PFS_DEMO_DIR:-/tmp/puzzlefs-demo}
rootfs=$("$here/scripts/debootstrap-tree.sh" bookworm)
mkdir -p "$work"
echo "== building $rootfs into $work/oci:bookworm (compressed)"
"$pfs" build -c "$rootfs" "$work/oci:bookworm"
"$pfs" inspect "$work/oci:bookworm"
"$pfs" check "$work/oci:bookworm"
mnt=$work/mnt
mkdir -p "$mnt"
mountpoint -q "$mnt" && "$pfs" umount "$mnt"
echo "== mounting it read-only at $mnt and running programs from it"
"$pfs" mount "$work/oci:bookworm" "$mnt"
trap '"$pfs" umount "$mnt"' EXIT
chroot "$mnt" /bin/sh -c '. /etc/os-release; echo "$PRETTY_NAME"; dpkg -l | grep -c ^ii; ls -l /bin/sh'
