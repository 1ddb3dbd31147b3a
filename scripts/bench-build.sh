#!/bin/sh
# `puzzlefs build` against upstream PuzzleFS 0.2's, plain and compressed, and Nydus 2.2's
# `nydus-image create` (RAFS v6, zstd), on the same tree in the same run, alternating contenders. Reports median wall and CPU seconds, image size, and
# ratios (upstream / ours: above 1 means we are faster or smaller).
#   scripts/bench-build.sh [ROOTFS] [RUNS]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rootfs=${1:-$("$here/scripts/debootstrap-tree.sh" bookworm)}
runs=${2:-5}
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
ours=${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs
theirs=$("$here/scripts/install-upstream.sh")
nydus=$("$here/scripts/install-nydus.sh")
# tmpfs: measures the tools, not the host disk (ext4 here slows file creation after heavy churn).
work=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$work"' EXIT
tar cf - -C "$rootfs" . >/dev/null # warm the page cache for both
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
measure() { # name binary flags...
    name=$1; shift
    bin=$1; shift
    rm -rf "$work/$name"
    if [ "$name" = nydus-zstd ]; then
        mkdir -p "$work/$name"
        /usr/bin/time -f "%e %U %S" -o "$work/t" "$bin" create -t dir-rafs --compressor zstd \
            -D "$work/$name" -B "$work/$name/boot" "$rootfs" >/dev/null 2>&1
    else
        /usr/bin/time -f "%e %U %S" -o "$work/t" "$bin" build "$@" "$rootfs" "$work/$name:t" >/dev/null
    fi
    awk '{printf "%s %.2f\n", $1, $2 + $3}' "$work/t" >>"$work/$name.times"
    du -sm --apparent-size "$work/$name" | cut -f1 >"$work/$name.size"
}
i=0
while [ $i -lt "$runs" ]; do
    measure ours-plain "$ours"
    measure upstream-plain "$theirs"
    measure ours-zstd "$ours" -c
    measure upstream-zstd "$theirs" -c
    measure nydus-zstd "$nydus/nydus-image"
    i=$((i + 1))
done
echo "| build ($runs runs, medians) | wall s | CPU s | size MiB |"
echo "|---|---:|---:|---:|"
for n in ours-plain upstream-plain ours-zstd upstream-zstd nydus-zstd; do
    w=$(cut -d' ' -f1 "$work/$n.times" | median)
    c=$(cut -d' ' -f2 "$work/$n.times" | median)
    echo "| $n | $w | $c | $(cat "$work/$n.size") |"
    echo "$w $c $(cat "$work/$n.size")" >"$work/$n.med"
done
for kind in plain zstd; do
    read -r ow oc os <"$work/ours-$kind.med"
    read -r uw uc us <"$work/upstream-$kind.med"
    awk -v k="$kind" -v ow="$ow" -v uw="$uw" -v oc="$oc" -v uc="$uc" -v os="$os" -v us="$us" \
        'BEGIN {printf "%s: upstream/ours wall %.2fx, CPU %.2fx, size %.2fx\n", k, uw/ow, uc/oc, us/os}'
done
read -r ow oc os <"$work/ours-zstd.med"
read -r nw nc ns <"$work/nydus-zstd.med"
awk -v ow="$ow" -v nw="$nw" -v oc="$oc" -v nc="$nc" -v os="$os" -v ns="$ns" \
    'BEGIN {printf "zstd: nydus/ours wall %.2fx, CPU %.2fx, size %.2fx\n", nw/ow, nc/oc, ns/os}'
if [ -n "${BENCH_RATIOS:-}" ]; then # chart lines for bench-chart.py: peer / ours
    read -r uw uc us <"$work/upstream-zstd.med"
    awk -v ow="$ow" -v uw="$uw" -v nw="$nw" -v oc="$oc" -v uc="$uc" -v nc="$nc" 'BEGIN {
        printf "build -c, wall\tupstream\t%.3f\t2\n", uw / ow
        printf "build -c, CPU\tupstream\t%.3f\t\n", uc / oc
        printf "build -c, wall\tnydus-image\t%.3f\t\n", nw / ow
    }' >>"$BENCH_RATIOS"
fi
