#!/bin/sh
# vhost-user-fs daemons side by side, driven natively by vmm-tests' virtiofs-frontend (no guest):
#   ours-zstd   puzzlefs-virtiofsd --image (the tree's zstd PuzzleFS image)
#   ours-plain  puzzlefs-virtiofsd --image (the tree's uncompressed PuzzleFS image)
#   virtiofsd   virtiofsd 1.14 --shared-dir (the tree itself, on tmpfs; --sandbox none --seccomp none)
#   nydusd      nydusd 2.2 virtiofs (a RAFS v6 zstd image of the tree, blob cache on tmpfs)
#   ours-chunkframes (only if named in CONTENDERS) the zstd image with the defaults before
#               1 MiB frame groups (--frame-size 256K --level 2)
# CONTENDERS (default "ours-zstd ours-plain virtiofsd nydusd") picks and orders them.
# Each run starts a fresh daemon per queue depth (1, 16, 64) and runs walk, readdirplus, read
# (cold: first whole-tree read), read again (warm) and random 4 KiB reads, every file verified
# against the tree. Contenders alternate; RUNS repeats; medians. Writes the JSON reports to
# $BENCH_OUT (default: a temporary directory) and prints the tables of bench-vhost-report.py.
#   scripts/bench-vhost.sh [TREE] [RUNS]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tree_in=${1:-$("$here/scripts/debootstrap-tree.sh" bookworm python3 git)}
runs=${2:-3}
cargo build --release --workspace --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release
virtiofsd=${VIRTIOFSD:-/opt/virtiofsd/bin/virtiofsd}
[ -x "$virtiofsd" ] || { echo "bench-vhost.sh: no virtiofsd at $virtiofsd (scripts/setup.sh installs it)" >&2; exit 1; }
nydus=$("$here/scripts/install-nydus.sh")
work=$(mktemp -d -p /dev/shm)
out=${BENCH_OUT:-$work/out}
mkdir -p "$out"
daemon=""
cleanup() {
    [ -z "$daemon" ] || kill "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Every contender reads from memory: the tree is copied to tmpfs, images are built there.
echo "preparing images of $tree_in in $work" >&2
tree=$work/tree
cp -a "$tree_in" "$tree"
"$bin/puzzlefs" build -c "$tree" "$work/oci:zstd" >/dev/null
"$bin/puzzlefs" build "$tree" "$work/oci:plain" >/dev/null
contenders=${CONTENDERS:-ours-zstd ours-plain virtiofsd nydusd}
case " $contenders " in *" ours-chunkframes "*)
    "$bin/puzzlefs" build -c --frame-size 256K --level 2 "$tree" "$work/oci:chunkframes" >/dev/null ;;
esac
mkdir -p "$work/nydus" "$work/nydus-cache"
"$nydus/nydus-image" create -t dir-rafs --compressor zstd -D "$work/nydus" \
    -B "$work/nydus.boot" "$tree" >/dev/null 2>&1
"$here/scripts/nydus-config.sh" "$work/nydus" "$work/nydus-cache" >"$work/nydus.json"

start() { # contender socket -> sets $daemon
    rm -f "$2"
    case $1 in
    ours-zstd | ours-plain | ours-chunkframes)
        "$bin/puzzlefs-virtiofsd" --socket-path "$2" --image "$work/oci:${1#ours-}" \
            --cache always 2>>"$work/daemon.log" &
        ;;
    virtiofsd)
        "$virtiofsd" --socket-path "$2" --shared-dir "$tree" --cache always --readonly \
            --sandbox none --seccomp none 2>>"$work/daemon.log" &
        ;;
    nydusd)
        rm -rf "$work/nydus-cache"/*
        "$nydus/nydusd" virtiofs --rlimit-nofile 0 --log-level warn --sock "$2" \
            --bootstrap "$work/nydus.boot" --config "$work/nydus.json" 2>>"$work/daemon.log" &
        ;;
    esac
    daemon=$!
    n=0
    while ! [ -S "$2" ]; do
        n=$((n + 1))
        [ $n -lt 200 ] || { echo "bench-vhost.sh: $1 did not listen" >&2; exit 1; }
        sleep 0.05
    done
}
serving_pid() { # our sandboxed daemon serves from a child process
    child=$(pgrep -P "$1" | head -n 1 || true)
    echo "${child:-$1}"
}
store_sampler() { # pid out: largest size of the daemon's chunk store file, in KiB
    max=0
    while kill -0 "$1" 2>/dev/null; do
        kib=$("$here/scripts/chunk-store-kib.sh" "$1")
        [ "$kib" -le "$max" ] || max=$kib
        echo "$max" >"$2"
        sleep 0.2
    done
}
stop() {
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
    daemon=""
}

i=1
while [ $i -le "$runs" ]; do
    for depth in 1 16 64; do
        for c in $contenders; do
            sock=$work/$c.sock
            start "$c" "$sock"
            pid=$(serving_pid "$daemon")
            echo "run $i depth $depth $c" >&2
            echo 0 >"$out/$c-d$depth-r$i.store"
            store_sampler "$pid" "$out/$c-d$depth-r$i.store" &
            "$bin/virtiofs-frontend" --socket "$sock" --verify "$tree" --backend-pid "$pid" \
                --depth "$depth" --workload walk,readdirplus,read,read,random --json \
                >"$out/$c-d$depth-r$i.json"
            stop
        done
    done
    i=$((i + 1))
done
python3 "$here/scripts/bench-vhost-report.py" "$out" "$(du -s --apparent-size --block-size=1 "$tree" | cut -f1)"
