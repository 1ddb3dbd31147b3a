#!/bin/sh
# Whole-tree read through FUSE: our `puzzlefs mount` vs upstream PuzzleFS 0.2's mount vs the
# plain directory, on compressed images of the same Debian tree, in the same run, alternating.
# Each read uses a fresh mount (empty FUSE page cache); blob files and the plain directory
# are in the host page cache for every contender.
#   scripts/bench-mount.sh [ROOTFS] [RUNS]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rootfs=${1:-$("$here/scripts/debootstrap-tree.sh" bookworm)}
runs=${2:-3}
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
ours=$here/target/release/puzzlefs
theirs=$("$here/scripts/install-upstream.sh")
work=$(mktemp -d -p /dev/shm)
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$ours" build -c "$rootfs" "$work/ours:t" >/dev/null
"$theirs" build -c "$rootfs" "$work/upstream:t" >/dev/null
readall() { # dir -> seconds
    s=$(date +%s.%N)
    (cd "$1" && tar cf - --numeric-owner . | cat >/dev/null)
    e=$(date +%s.%N)
    echo "$e $s" | awk '{printf "%.2f\n", $1 - $2}'
}
wait_mounted() { while ! mountpoint -q "$mnt"; do sleep 0.05; done; }
i=0
while [ $i -lt "$runs" ]; do
    readall "$rootfs" >>"$work/plain.t"
    "$ours" mount "$work/ours:t" "$mnt"
    readall "$mnt" >>"$work/ours.t"
    "$ours" umount "$mnt"
    "$theirs" mount -f "$work/upstream:t" "$mnt" 2>/dev/null &
    wait_mounted
    readall "$mnt" >>"$work/upstream.t"
    umount "$mnt"
    wait
    i=$((i + 1))
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
p=$(median <"$work/plain.t"); o=$(median <"$work/ours.t"); u=$(median <"$work/upstream.t")
echo "| whole-tree read, compressed image ($runs runs, median s) | seconds | vs plain dir |"
echo "|---|---:|---:|"
row() { echo "$2 $p" | awk -v name="$1" '{printf "| %s | %.2f | %.1fx |\n", name, $1, $1 / $2}'; }
row "plain directory" "$p"
row "puzzlefs mount (ours)" "$o"
row "upstream puzzlefs 0.2 mount" "$u"
echo "$u $o" | awk '{printf "ours is %.1fx faster than upstream\n", $1 / $2}'
