#!/bin/sh
# Whole-tree read through FUSE: our `puzzlefs mount` vs upstream PuzzleFS 0.2's mount vs
# `nydusd fuse` (Nydus 2.2, RAFS v6 zstd image, blob cache on tmpfs, emptied per run) vs the
# plain directory, on compressed images of the same Debian tree, in the same run, alternating.
# Each read uses a fresh mount (empty FUSE page cache); blob files and the plain directory
# are in the host page cache for every contender. Reports median wall seconds of the read,
# CPU seconds of the reader (tar and cat) and of the FUSE server (utime+stime of its process).
# BASELINE=PATH adds another `puzzlefs` binary (an earlier build) as one more contender.
#   scripts/bench-mount.sh [ROOTFS] [RUNS]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rootfs=${1:-$("$here/scripts/debootstrap-tree.sh" bookworm)}
runs=${2:-3}
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
ours=${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs
theirs=$("$here/scripts/install-upstream.sh")
nydus=$("$here/scripts/install-nydus.sh")
work=$(mktemp -d -p /dev/shm)
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$ours" build -c "$rootfs" "$work/ours:t" >/dev/null
"$theirs" build -c "$rootfs" "$work/upstream:t" >/dev/null
mkdir -p "$work/nydus" "$work/nydus-cache"
"$nydus/nydus-image" create -t dir-rafs --compressor zstd -D "$work/nydus" -B "$work/nydus.boot" \
    "$rootfs" >/dev/null 2>&1
"$here/scripts/nydus-config.sh" "$work/nydus" "$work/nydus-cache" >"$work/nydus.json"
ticks=$(getconf CLK_TCK)
readall() { # name dir: appends "wall reader-cpu" to $work/name.t
    /usr/bin/time -f "%e %U %S" -o "$work/time" \
        sh -c 'cd "$1" && tar cf - --numeric-owner . | cat >/dev/null' sh "$2"
    awk '{printf "%.2f %.2f", $1, $2 + $3}' "$work/time" >>"$work/$1.t"
}
served() { # name binary image: one read through a fresh foreground mount of image
    if [ "$1" = nydusd ]; then
        rm -rf "$work/nydus-cache"/*
        "$2" fuse --rlimit-nofile 0 --log-level warn --mountpoint "$mnt" --bootstrap "$3" \
            --config "$work/nydus.json" 2>/dev/null &
    else
        "$2" mount -f "$3" "$mnt" 2>/dev/null &
    fi
    pid=$!
    while ! mountpoint -q "$mnt"; do sleep 0.05; done
    readall "$1" "$mnt"
    awk -v t="$ticks" '{printf " %.2f\n", ($14 + $15) / t}' "/proc/$pid/stat" >>"$work/$1.t"
    umount "$mnt"
    wait "$pid" || true
}
i=0
while [ $i -lt "$runs" ]; do
    readall plain "$rootfs"
    echo " 0" >>"$work/plain.t"
    served ours "$ours" "$work/ours:t"
    if [ -n "${BASELINE:-}" ]; then served baseline "$BASELINE" "$work/ours:t"; fi
    served upstream "$theirs" "$work/upstream:t"
    served nydusd "$nydus/nydusd" "$work/nydus.boot"
    i=$((i + 1))
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { cut -d' ' -f"$2" "$work/$1.t" | median; }
p=$(col plain 1)
echo "| whole-tree read, compressed image ($runs runs, medians) | wall s | vs plain dir | reader CPU s | server CPU s |"
echo "|---|---:|---:|---:|---:|"
row() {
    echo "$(col "$2" 1) $p $(col "$2" 2) $(col "$2" 3)" |
        awk -v name="$1" '{printf "| %s | %.2f | %.1fx | %.2f | %.2f |\n", name, $1, $1 / $2, $3, $4}'
}
row "plain directory" plain
row "puzzlefs mount (ours)" ours
if [ -n "${BASELINE:-}" ]; then row "puzzlefs mount ($BASELINE)" baseline; fi
row "upstream puzzlefs 0.2 mount" upstream
row "nydusd 2.2 fuse (RAFS v6, zstd)" nydusd
echo "$(col upstream 1) $(col ours 1) $(col upstream 2) $(col ours 2) $(col upstream 3) $(col ours 3)" |
    awk '{printf "upstream/ours: wall %.1fx, reader CPU %.1fx, server CPU %.1fx, reader+server CPU %.1fx\n",
        $1 / $2, $3 / $4, $5 / $6, ($3 + $5) / ($4 + $6)}'
if [ -n "${BENCH_RATIOS:-}" ]; then # chart lines for bench-chart.py: peer / ours
    for peer in upstream nydusd; do
        echo "$(col $peer 1) $(col ours 1) $(col $peer 3) $(col ours 3)" | awk -v p="$peer" '{
            t = (p == "upstream") ? 10 : ""
            printf "FUSE whole-tree read, wall\t%s\t%.3f\t%s\n", p, $1 / $2, t
            printf "FUSE whole-tree read, server CPU\t%s\t%.3f\t\n", p, $3 / $4 }' >>"$BENCH_RATIOS"
    done
fi
