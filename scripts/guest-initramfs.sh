#!/bin/sh
# Builds (once) a busybox-static initramfs for virtio-fs test guests and prints its path.
# Its /init loads the virtio and virtiofs modules (from scripts/guest-kernel.sh), then, per the
# kernel command line:
#   pfs.tag=TAG       mount -t virtiofs TAG /mnt (read-write; a read-only daemon says EROFS)
#   pfs.root=1        instead mount TAG at /newroot and switch_root into it, running
#                     /run/pfs-test.sh there (tmpfs are mounted on /newroot/run and /tmp)
# and runs /test.sh (append a cpio holding it to this initramfs), framing its output with
#   @@PFS-BEGIN@@ ... @@PFS-END rc=N@@   then powers off.
# Without /test.sh it starts a shell on the console. It also holds /bin/pfs-list, a static
# lister of every entry's attributes, xattrs, nanosecond mtime and sha256, compiled with
# `gcc -static` from vmm-tests/guest/pfs-list.c (busybox has no getfattr and no %N in stat),
# /bin/pfs-xattr, which sets and removes extended attributes (vmm-tests/guest/pfs-xattr.c;
# busybox has no setfattr), and /bin/pfs-as, which runs a program as another uid and gid
# (vmm-tests/guest/pfs-as.c; busybox's setpriv here cannot).
# Cached under ${PFS_CACHE:-~/.cache/puzzlefs-virtiofsd}.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${PFS_CACHE:-$HOME/.cache/puzzlefs-virtiofsd}
kdir=$("$here/guest-kernel.sh")
busybox=${PFS_BUSYBOX:-/bin/busybox}
if ! [ -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "guest-initramfs.sh: need a static busybox at $busybox (apt-get install busybox-static)" >&2
    exit 1
fi
lister=$here/../vmm-tests/guest/pfs-list.c
xattr_tool=$here/../vmm-tests/guest/pfs-xattr.c
as_tool=$here/../vmm-tests/guest/pfs-as.c
if ! command -v gcc >/dev/null || ! [ -e /usr/lib/x86_64-linux-gnu/libc.a ]; then
    echo "guest-initramfs.sh: need gcc and a static libc (apt-get install gcc libc6-dev)" >&2
    exit 1
fi

init=$(cat <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules/order); do
    insmod "/modules/$m" || echo "pfs-init: insmod $m failed"
done
tag=; root=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        pfs.tag=*) tag=${arg#pfs.tag=} ;;
        pfs.root=1) root=1 ;;
    esac
done
finish() {
    echo "@@PFS-END rc=$1@@"
    sync
    poweroff -f
}
if [ -n "$root" ]; then
    mount -t virtiofs "$tag" /newroot || { echo "pfs-init: mount $tag failed"; finish 99; }
    mount -t tmpfs run /newroot/run || { echo "pfs-init: no /run in the root"; finish 98; }
    mount -t tmpfs tmp /newroot/tmp || true
    cp /test.sh /newroot/run/pfs-test.sh
    mount --move /proc /newroot/proc
    mount --move /sys /newroot/sys
    mount --move /dev /newroot/dev
    echo "@@PFS-BEGIN@@"
    exec switch_root /newroot /bin/sh /run/pfs-test.sh
fi
if [ -n "$tag" ]; then
    mount -t virtiofs "$tag" /mnt || { echo "@@PFS-BEGIN@@"; echo "pfs-init: mount $tag failed"; finish 99; }
fi
if [ -e /test.sh ]; then
    echo "@@PFS-BEGIN@@"
    sh /test.sh
    finish $?
fi
exec sh
INIT
)

kver=$(cat "$kdir/version")
key=$( (printf '%s' "$init"; gcc --version; cat "$lister" "$xattr_tool" "$as_tool" "$busybox" "$kdir"/modules/*.ko) | sha256sum | cut -c1-16)
out=$cache/initramfs/initramfs-$kver-$key.cpio.gz
if [ -e "$out" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache/initramfs"
tmp=$(mktemp -d "$cache/initramfs/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/bin" "$tmp/root/modules" "$tmp/root/proc" "$tmp/root/sys" \
    "$tmp/root/dev" "$tmp/root/mnt" "$tmp/root/newroot" "$tmp/root/tmp"
cp "$busybox" "$tmp/root/bin/busybox"
gcc -static -O2 -s -Wall -Wextra -Werror -o "$tmp/root/bin/pfs-list" "$lister"
gcc -static -O2 -s -Wall -Wextra -Werror -o "$tmp/root/bin/pfs-xattr" "$xattr_tool"
gcc -static -O2 -s -Wall -Wextra -Werror -o "$tmp/root/bin/pfs-as" "$as_tool"
cp "$kdir"/modules/*.ko "$kdir/modules/order" "$tmp/root/modules/"
printf '%s\n' "$init" > "$tmp/root/init"
chmod 755 "$tmp/root/init"
if command -v cpio >/dev/null; then cpio="cpio -o -H newc --quiet -R 0:0"; else cpio="$busybox cpio -o -H newc"; fi
(cd "$tmp/root" && find . | sort | $cpio | gzip -9) > "$tmp/initramfs.cpio.gz"
mv "$tmp/initramfs.cpio.gz" "$out"
echo "$out"
