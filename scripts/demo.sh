#!/bin/sh
# The main job on a fresh machine: set up, turn a real Debian root file system into a
# compressed PuzzleFS image, serve it with puzzlefs-virtiofsd, and boot a QEMU guest whose
# root file system is that image (nothing unpacked), running programs from it. Needs root.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
bin=${CARGO_TARGET_DIR:-$here/target}/release
work=${PFS_DEMO_DIR:-/tmp/puzzlefs-demo}
rootfs=$("$here/scripts/debootstrap-tree.sh" bookworm)
kernel=$("$here/scripts/guest-kernel.sh")/vmlinuz
initramfs=$("$here/scripts/guest-initramfs.sh")
rm -rf "$work"
mkdir -p "$work/extra"

echo "== puzzlefs build -c $rootfs $work/oci:bookworm"
digest=$("$bin/puzzlefs" build -c "$rootfs" "$work/oci:bookworm")
"$bin/puzzlefs" inspect "$work/oci:bookworm"

echo "== puzzlefs-virtiofsd serving it (pinned to $digest)"
"$bin/puzzlefs-virtiofsd" --socket-path "$work/vfs.sock" --image "$work/oci:bookworm" \
    --digest "$digest" --cache always 2>"$work/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
while ! grep -q "Waiting for vhost-user socket connection" "$work/daemon.log"; do
    kill -0 $daemon 2>/dev/null || { cat "$work/daemon.log"; exit 1; }
    sleep 0.1
done

# What the guest runs once it has switched root into the image.
cat > "$work/extra/test.sh" <<'GUEST'
. /etc/os-release
echo "guest root: $(grep ' / ' /proc/mounts)"
echo "running $PRETTY_NAME from the image"
echo "dpkg: $(dpkg -l | grep -c '^ii') packages installed"
mount -t tmpfs apt-cache /var/cache/apt   # the image is read-only; apt wants a cache dir
apt-cache policy bash | head -3
ls -l /bin/sh /usr/bin/dpkg
touch /etc/x 2>&1 | sed 's/^/write attempt: /'
echo "@@PFS-END rc=0@@"
sync
echo o > /proc/sysrq-trigger
sleep 60
GUEST
(cd "$work/extra" && echo test.sh | cpio -o -H newc --quiet | gzip) > "$work/extra.cpio.gz"
cat "$initramfs" "$work/extra.cpio.gz" > "$work/initrd.img"

echo "== booting a QEMU guest (TCG) with the image as its root file system"
qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -no-reboot -m 512M -smp 2 \
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
    -chardev socket,id=char0,path="$work/vfs.sock" \
    -device vhost-user-fs-pci,chardev=char0,tag=rootfs,queue-size=1024 \
    -kernel "$kernel" -initrd "$work/initrd.img" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 pfs.tag=rootfs pfs.root=1" \
    -display none -monitor none -serial stdio </dev/null |
    sed -n '/@@PFS-BEGIN@@/,/@@PFS-END/p' | grep -v '^@@PFS-'
wait $daemon
echo "== daemon exited with status $? after the guest powered off"
