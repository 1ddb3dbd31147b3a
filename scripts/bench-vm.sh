#!/bin/bash
# Benchmark (not a test): the same TCG guest boots with a Debian bookworm minbase root file
# system served over virtio-fs by
#   ours: puzzlefs-virtiofsd --image (the zstd-compressed PuzzleFS image of the tree)
#   ref:  virtiofsd --shared-dir (the same image extracted with `puzzlefs extract`)
# and measures, per run:
#   boot   host wall time from QEMU start to the first line of the root's own /bin/sh
#   read   guest time of `find / -xdev -type f -print0 | xargs -0 cat > /dev/null`
#   cpu    the daemon's utime+stime (from /proc/PID/stat) for the whole run
#   memory the daemon's RssAnon+RssFile, and VmRSS / VmHWM, sampled when the read is done.
#          VmRSS also counts the guest memory (shared memfd) the daemon touched: RssShmem.
# Contenders alternate (ours first on odd runs, ref first on even ones); medians and ratios
# are printed as a markdown table. Wall times on these shared 2-core machines swing a lot;
# CPU time is the stable number.
#
#   scripts/bench-vm.sh            RUNS=5 THREADS=1 CACHE=auto MEM=512 by default
#
# Needs what the vmm-tests need, plus the reference daemon at $VIRTIOFSD or
# /opt/virtiofsd/bin/virtiofsd (`cargo install virtiofsd --locked --root /opt/virtiofsd`,
# which needs libseccomp-dev and libcap-ng-dev). Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
RUNS=${RUNS:-5}
THREADS=${THREADS:-1}
CACHE=${CACHE:-auto}
MEM=${MEM:-512}
virtiofsd=${VIRTIOFSD:-/opt/virtiofsd/bin/virtiofsd}
if ! [ -x "$virtiofsd" ]; then
    echo "bench-vm.sh: no virtiofsd at $virtiofsd (cargo install virtiofsd --locked --root /opt/virtiofsd)" >&2
    exit 1
fi

echo "building release binaries..." >&2
(cd "$repo" && cargo build --release --bins -q)
bin=${CARGO_TARGET_DIR:-$repo/target}/release
kernel=$("$here/guest-kernel.sh")/vmlinuz
initramfs=$("$here/guest-initramfs.sh")
tree=$("$here/debootstrap-tree.sh" bookworm)

work=$(mktemp -d /tmp/bench-vm.XXXXXX)
cleanup() {
    for p in $(cat "$work"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

"$bin/puzzlefs" build -c "$tree" "$work/oci:bench" >/dev/null
"$bin/puzzlefs" extract "$work/oci:bench" "$work/extracted"
image_mib=$(du -sm "$work/oci" | cut -f1)
tree_mib=$(du -sm "$work/extracted" | cut -f1)
files=$(find "$work/extracted" -type f | wc -l)

# The guest script, run by the root's /bin/sh (dash) after switch_root; then the initramfs'
# root mode powers off (see scripts/guest-initramfs.sh).
cat > "$work/test.sh" <<'GUEST'
echo "@@SHELL@@"
t0=$(date +%s.%N)
find / -xdev -type f -print0 | xargs -0 cat > /dev/null
t1=$(date +%s.%N)
echo "@@READ@@ $t0 $t1"
sleep 2
echo "@@PFS-END rc=0@@"
sync
echo o > /proc/sysrq-trigger
sleep 60
GUEST
cp "$initramfs" "$work/initrd.img"
size=$(stat -c %s "$work/initrd.img")
head -c $(( (4 - size % 4) % 4 )) /dev/zero >> "$work/initrd.img"
(cd "$work" && echo test.sh | cpio -o -H newc --quiet -R 0:0) >> "$work/initrd.img"

tck=$(getconf CLK_TCK)
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# run CONTENDER RUN: one guest; appends "contender boot read cpu anon+file anon file vmrss
# hwm shmem memfd" (seconds, KiB) to $work/results. Our sandboxed daemon serves from a child
# of the process started (the supervisor): that child is the one measured.
run() {
    local who=$1 sock=$work/$1-$2.sock dpid spid start
    rm -f "$sock"
    case $who in
    ours) "$bin/puzzlefs-virtiofsd" --socket-path "$sock" --image "$work/oci:bench" \
        --cache "$CACHE" --thread-pool-size "$THREADS" 2>"$work/$who.log" & ;;
    ref) "$virtiofsd" --socket-path "$sock" --shared-dir "$work/extracted" --cache "$CACHE" \
        --thread-pool-size "$THREADS" --sandbox none --seccomp none 2>"$work/$who.log" & ;;
    esac
    dpid=$!
    echo "$dpid" > "$work/daemon.pid"
    for _ in $(seq 3000); do [ -S "$sock" ] && break; sleep 0.01; done
    [ -S "$sock" ] || { echo "bench-vm.sh: $who never listened: $(cat "$work/$who.log")" >&2; exit 1; }
    spid=$(pgrep -P "$dpid" | head -n 1 || true)
    spid=${spid:-$dpid}
    start=$EPOCHREALTIME
    qemu-system-x86_64 -accel tcg -nodefaults -no-user-config -no-reboot \
        -m "${MEM}M" -smp 2 \
        -object "memory-backend-memfd,id=mem,size=${MEM}M,share=on" -numa node,memdev=mem \
        -chardev "socket,id=char0,path=$sock" \
        -device vhost-user-fs-pci,chardev=char0,tag=rootfs,queue-size=1024 \
        -kernel "$kernel" -initrd "$work/initrd.img" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 pfs.tag=rootfs pfs.root=1" \
        -display none -monitor none -serial stdio </dev/null 2>"$work/qemu.err" |
        {
            boot= read_s=
            # Lines are handled as they come (no buffering filter in between): the times
            # and samples are taken when the guest prints them.
            while IFS= read -r line; do
                line=${line%$'\r'}
                case $line in
                @@SHELL@@*) boot=$(awk -v a="$EPOCHREALTIME" -v b="$start" 'BEGIN { printf "%.3f", a - b }') ;;
                @@READ@@*)
                    read_s=$(echo "$line" | awk '{ printf "%.3f", $3 - $2 }')
                    if ! [ -e "/proc/$spid/status" ]; then
                        echo "bench-vm.sh: $who died during run $2: $(tail -n 5 "$work/$who.log")" >&2
                        exit 1
                    fi
                    anon=$(status_kib "$spid" RssAnon)
                    file=$(status_kib "$spid" RssFile)
                    vmrss=$(status_kib "$spid" VmRSS)
                    hwm=$(status_kib "$spid" VmHWM)
                    shmem=$(status_kib "$spid" RssShmem)
                    cpu=$(awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$spid/stat")
                    memfd=$("$here/chunk-store-kib.sh" "$spid")
                    echo "$who $boot $read_s $cpu $((anon + file)) $anon $file $vmrss $hwm $shmem $memfd" >> "$work/results"
                    ;;
                esac
            done
            [ -n "$read_s" ] || { echo "bench-vm.sh: $who run $2: the guest never finished" >&2; exit 1; }
        }
    # The daemons exit when the VMM disconnects; give them a moment, then make sure.
    for _ in $(seq 500); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.01; done
    kill "$dpid" 2>/dev/null || true
    wait "$dpid" 2>/dev/null || true
    echo "  run $2 $who: $(tail -n 1 "$work/results")" >&2
}

echo "tree: $files files, $tree_mib MiB; image (zstd): $image_mib MiB; $RUNS runs each" >&2
for r in $(seq "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then run ours "$r"; run ref "$r"; else run ref "$r"; run ours "$r"; fi
done

# Medians per contender and column, then the table.
median() { # median WHO COLUMN
    awk -v w="$1" -v c="$2" '$1 == w { print $c }' "$work/results" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
row() { # row LABEL COLUMN SCALE FORMAT
    local a b
    a=$(median ours "$2"); b=$(median ref "$2")
    awk -v l="$1" -v a="$a" -v b="$b" -v s="$3" -v f="$4" 'BEGIN {
        printf "| %s | " f " | " f " | %.2f |\n", l, a / s, b / s, (b == 0 ? 0 : a / b) }'
}
echo
echo "Debian bookworm minbase root ($files files, $tree_mib MiB; image $image_mib MiB zstd), TCG guest ${MEM} MiB x 2 vCPUs, --cache $CACHE --thread-pool-size $THREADS, median of $RUNS runs each, alternating:"
echo
echo "| metric | puzzlefs-virtiofsd (image) | virtiofsd (extracted tree) | ratio ours/ref |"
echo "|---|---|---|---|"
row "boot to root shell (s, host wall)" 2 1 "%.2f"
row "whole-tree read in guest (s)" 3 1 "%.2f"
row "daemon CPU utime+stime (s)" 4 1 "%.2f"
row "daemon RssAnon+RssFile (MiB)" 5 1024 "%.1f"
row "- of which RssAnon (MiB)" 6 1024 "%.1f"
row "- of which RssFile (MiB)" 7 1024 "%.1f"
row "daemon VmRSS (MiB; includes guest memory touched)" 8 1024 "%.1f"
row "daemon VmHWM (MiB)" 9 1024 "%.1f"
row "daemon RssShmem (MiB; the guest memory touched)" 10 1024 "%.1f"
row "chunk store file, allocated (MiB; page cache outside RSS)" 11 1024 "%.1f"
