#!/bin/sh
# The mount table (`puzzlefs-virtiofsd virtiofs --apisock A --sock S`, as Kata's nydus mode
# launches its daemon) side by side with nydusd 2.2 driven through its own API, in the same
# run, contenders alternating, medians of RUNS (default 3). Images of one Debian tree
# (bookworm minbase): ours `puzzlefs build -c` (zstd), nydusd's `nydus-image create` (RAFS v6,
# zstd), blobs on tmpfs; COUNT images mounted at Kata's mountpoints /rafs/cI/lowerdir: with
# DISTINCT=1 (the default) COUNT different images, the tree with one file changed
# (/etc/pfs-instance holds I), sharing their other chunks (ours in one OCI layout, nydusd's
# built with the first as chunk dictionary), so each mount has metadata of its own as
# containers of different images do; with DISTINCT=0 one image mounted COUNT times. Both daemons are started as Kata starts them (`virtiofs --log-level info
# --apisock --sock`, no thread options: nydusd's virtiofs mode has none), ours with its
# default sandbox and seccomp filter, nydusd with a fresh, empty blobcache work_dir (tmpfs)
# per daemon; our chunk store is new per daemon too. Measures:
#   1. memory: RSS of the serving process (ours: the grandchild supervisor -> waiter ->
#      daemon; nydusd: itself) with 1, 16 and 64 images mounted, after a front-end walk of
#      the whole served tree (all mounts) and after a read of it (MOUNTS_READ=0: walk only);
#      our chunk store and nydusd's blobcache dir beside it;
#   2. latency: POST to 204 and POST to the last byte of one file (FIRST_READ) under the new
#      mountpoint, read by a front end connected before the first mount, over COUNT mounts;
#      then DELETE;
#   3. the table's own cost: daemon CPU of walks and whole-tree reads (cold, then warm)
#      through the table (image at /img) against today's single-image mode (--image), same
#      image and front end, depth 16 and 1, in COST_RUNS back-to-back pairs.
# Writes $OUT_DIR/MOUNTS.md (default scripts/bench-results) and prints a summary; the raw
# JSON stays in $BENCH_OUT if set.
#   scripts/bench-mounts.sh [RUNS] [OUT_DIR]
# Environment: TREE (default the cached bookworm minbase), COUNT (64), FIRST_READ
# (etc/passwd), MOUNTS_READ (1), WALKS (walks per session in 3 at depth 16, a fifth of it at
# depth 1; 30), COST_RUNS (paired runs of 3; 3 x RUNS), PHASES (which of "memory latency
# cost" to run; all), BENCH_RATIOS (chart lines).
# Contenders alternate, and which goes first alternates from run to run.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
out_dir=${2:-$here/scripts/bench-results}
count=${COUNT:-64}
first_read=${FIRST_READ:-etc/passwd}
mounts_read=${MOUNTS_READ:-1}
walks=${WALKS:-30}
phases=${PHASES:-memory latency cost}
distinct=${DISTINCT:-1}
cost_runs=${COST_RUNS:-$((3 * runs))}
for tool in python3 pgrep du awk; do
    command -v "$tool" >/dev/null || { echo "bench-mounts.sh: $tool is missing" >&2; exit 1; }
done
[ "$count" -ge 16 ] || { echo "bench-mounts.sh: COUNT must be at least 16" >&2; exit 1; }
tree_in=${TREE:-$("$here/scripts/debootstrap-tree.sh" bookworm)}
cargo build --release --workspace --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release
for b in puzzlefs puzzlefs-virtiofsd virtiofs-frontend; do
    [ -x "$bin/$b" ] || { echo "bench-mounts.sh: no $bin/$b" >&2; exit 1; }
done
nydus=$("$here/scripts/install-nydus.sh")
for b in nydusd nydus-image; do
    [ -x "$nydus/$b" ] || { echo "bench-mounts.sh: no $nydus/$b" >&2; exit 1; }
done
client=$here/scripts/bench-mounts-client.py
[ "$(id -u)" = 0 ] || { echo "bench-mounts.sh: run as root (a private tmpfs; our sandbox)" >&2; exit 1; }
work=""
daemon=""
pid=""
alive() { # pid: running (not gone, not a zombie)
    al_state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$al_state" ] && [ "$al_state" != Z ]
}
stop() { # the daemon, as Kata stops it: SIGTERM, up to 5 s, SIGKILL
    for stop_pid in $daemon $pid; do
        kill "$stop_pid" 2>/dev/null || true
        stop_n=0
        while alive "$stop_pid" && [ $stop_n -lt 100 ]; do
            stop_n=$((stop_n + 1))
            sleep 0.05
        done
        ! alive "$stop_pid" || kill -KILL "$stop_pid" 2>/dev/null || true
    done
    [ -z "$daemon" ] || wait "$daemon" 2>/dev/null || true
    daemon=""
    pid=""
}
cleanup() {
    stop
    if [ -n "$work" ]; then
        umount "$work" 2>/dev/null || true
        rm -rf "$work"
    fi
    rm -f "$out_dir/MOUNTS.md.tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
# A private tmpfs, not /dev/shm: our API refuses sources under /dev (and /, /proc, /sys).
work=$(mktemp -d)
mount -t tmpfs -o mode=0700 tmpfs "$work"
out=${BENCH_OUT:-$work/out}
mkdir -p "$out" "$out_dir"

echo "preparing images of $tree_in in $work" >&2
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
tree=$work/tree
cp -a "$tree_in" "$tree"
[ -f "$tree/$first_read" ] || { echo "bench-mounts.sh: no file $first_read in the tree" >&2; exit 1; }
"$bin/puzzlefs" build -c "$tree" "$work/oci:zstd" >/dev/null
mkdir -p "$work/nydus" "$work/nydus-cache"
"$nydus/nydus-image" create -t dir-rafs --fs-version 6 --compressor zstd -D "$work/nydus" \
    -B "$work/nydus.boot" "$tree" >/dev/null 2>&1
"$here/scripts/nydus-config.sh" "$work/nydus" "$work/nydus-cache" >"$work/nydus.json"
tree_bytes=$(du -s --apparent-size --block-size=1 "$tree" | cut -f1)
if [ "$distinct" = 1 ]; then
    echo "building $count distinct images for each contender" >&2
    n=0
    while [ $n -lt "$count" ]; do
        echo "$n" >"$tree/etc/pfs-instance"
        "$bin/puzzlefs" build -c "$tree" "$work/oci:zstd$n" >/dev/null
        "$nydus/nydus-image" create -t dir-rafs --fs-version 6 --compressor zstd -D "$work/nydus" \
            --chunk-dict "bootstrap=$work/nydus.boot" -B "$work/nydus$n.boot" "$tree" >/dev/null 2>&1
        n=$((n + 1))
    done
    rm "$tree/etc/pfs-instance"
fi
# What each contender's mount request carries (mounts of many images: {i} is the mount's
# number; the table's cost is measured on the first image).
source_of() { if [ "$1" = ours ]; then echo "$work/oci:zstd"; else echo "$work/nydus.boot"; fi; }
sources_of() {
    if [ "$distinct" = 1 ]; then
        if [ "$1" = ours ]; then echo "$work/oci:zstd{i}"; else echo "$work/nydus{i}.boot"; fi
    else
        source_of "$1"
    fi
}
config_of() { if [ "$1" = ours ]; then echo -; else echo "$work/nydus.json"; fi; }

start_table() { # contender vhost-socket api-socket [extra args] -> $daemon, waits for RUNNING
    st_c=$1 st_sock=$2 st_api=$3
    shift 3
    rm -f "$st_sock" "$st_api"
    if [ "$st_c" = ours ]; then
        "$bin/puzzlefs-virtiofsd" virtiofs --log-level info --rlimit-nofile 0 --apisock "$st_api" \
            --sock "$st_sock" "$@" 2>>"$work/daemon.log" &
    else
        rm -rf "$work/nydus-cache"/*
        "$nydus/nydusd" virtiofs --log-level info --rlimit-nofile 0 --apisock "$st_api" \
            --sock "$st_sock" 2>>"$work/daemon.log" &
    fi
    daemon=$!
    python3 "$client" wait "$st_api"
    wait_socket "$st_sock"
}
wait_socket() {
    ws_n=0
    while ! [ -S "$1" ]; do
        ws_n=$((ws_n + 1))
        [ $ws_n -lt 600 ] || { echo "bench-mounts.sh: nothing listens on $1" >&2; exit 1; }
        sleep 0.05
    done
}
serving_pid() { # the deepest descendant: ours serves from a (grand)child, nydusd itself
    sp_p=$1
    while sp_c=$(pgrep -P "$sp_p" | head -n 1) && [ -n "$sp_c" ]; do sp_p=$sp_c; done
    echo "$sp_p"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tree_ns() { # daemon: CPU ns on record (schedstat) of the threads of daemon and its descendants
    # (nanoseconds, where utime+stime count 10 ms ticks; threads that end meanwhile drop out)
    tn_p=$1 tn_t=0
    while [ -n "$tn_p" ]; do
        tn_t=$((tn_t + $(cat "/proc/$tn_p/task"/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d", s}')))
        tn_p=$(pgrep -P "$tn_p" | head -n 1)
    done
    echo "$tn_t"
}
above_ticks() { # daemon pid: CPU ticks of the processes from daemon down to pid's parent
    at_p=$1 at_t=0
    while [ -n "$at_p" ] && [ "$at_p" != "$2" ]; do
        at_t=$((at_t + $(cpu_ticks "$at_p")))
        at_p=$(pgrep -P "$at_p" | head -n 1)
    done
    echo "$at_t"
}

if [ "$mounts_read" = 1 ]; then mem_workloads=walk,read; else mem_workloads=walk; fi
repeat() { # n word: word,word,... n times
    rp_i=0
    while [ $rp_i -lt "$1" ]; do
        [ $rp_i = 0 ] || printf ,
        printf %s "$2"
        rp_i=$((rp_i + 1))
    done
}
# Enough of each workload for about 0.5 s of daemon CPU (CPU time counts 10 ms ticks): walks
# cost ~15-25 ms at depth 16 and ~100 ms at depth 1; warm reads of the tree ~0.05 s / 0.13 s.
cost_workloads() { # depth
    if [ "$1" = 1 ]; then
        echo "$(repeat $(((walks + 4) / 5)) walk),read,$(repeat 4 read)"
    else
        echo "$(repeat "$walks" walk),read,$(repeat 8 read)"
    fi
}
has() { case " $phases " in *" $1 "*) true ;; *) false ;; esac; }
i=1
while [ $i -le "$runs" ]; do
    # Who goes first alternates from run to run.
    if [ $((i % 2)) = 1 ]; then pair="ours nydusd"; else pair="nydusd ours"; fi
    # 1. Memory with 1, 16 and COUNT images mounted.
    for n in 1 16 "$count"; do
        has memory || break
        for c in $pair; do
            echo "$(date +%T) run $i memory, $n mounts, $c" >&2
            start_table "$c" "$work/vhost.sock" "$work/api.sock"
            pid=$(serving_pid "$daemon")
            before=$(tree_ns "$daemon")
            python3 "$client" mount "$work/api.sock" "/rafs/c{i}/lowerdir" "$n" "$(sources_of $c)" \
                "$(config_of $c)" >/dev/null
            # CPU ns of all the daemon's threads for the n mounts.
            echo $(($(tree_ns "$daemon") - before)) >"$out/mem-$c-n$n-r$i.mountcpu"
            if [ "$c" = ours ]; then
                cache_cmd="'$here/scripts/chunk-store-kib.sh' $pid"
            else
                cache_cmd="du -sk '$work/nydus-cache' | cut -f1"
            fi
            python3 "$client" session "$pid" "$cache_cmd" "$out/mem-$c-n$n-r$i.json" -- \
                "$bin/virtiofs-frontend" --socket "$work/vhost.sock" --backend-pid "$pid" \
                --depth 16 --workload "$mem_workloads" --json --read-paths-from -
            stop
        done
    done
    # 2. Mount latency and the first read of each new mount.
    for c in $pair; do
        has latency || break
        echo "$(date +%T) run $i latency, $count mounts, $c" >&2
        start_table "$c" "$work/vhost.sock" "$work/api.sock"
        pid=$(serving_pid "$daemon")
        python3 "$client" latency "$work/api.sock" "/rafs/c{i}/lowerdir" "$count" \
            "$(sources_of $c)" "$(config_of $c)" "$first_read" "$tree" -- \
            "$bin/virtiofs-frontend" --socket "$work/vhost.sock" --depth 16 --read-paths-from - \
            >"$out/lat-$c-r$i.json"
        stop
    done
    i=$((i + 1))
done
# 3. The table's own cost: the same image through the table and in single-image mode, in
# COST_RUNS pairs (more than RUNS: CPU time swings with the other tenants' load).
has cost || cost_runs=0
i=1
while [ $i -le "$cost_runs" ]; do
    if [ $((i % 2)) = 1 ]; then modes="single table"; else modes="table single"; fi
    for depth in 16 1; do
        for c in $modes; do
            echo "$(date +%T) run $i table cost, depth $depth, $c" >&2
            if [ "$c" = single ]; then
                rm -f "$work/vhost.sock"
                "$bin/puzzlefs-virtiofsd" --log-level info --rlimit-nofile 0 --cache always \
                    --socket-path "$work/vhost.sock" --image "$work/oci:zstd" 2>>"$work/daemon.log" &
                daemon=$!
                wait_socket "$work/vhost.sock"
            else
                start_table ours "$work/vhost.sock" "$work/api.sock" --cache always
                python3 "$client" mount "$work/api.sock" /img 1 "$work/oci:zstd" - >/dev/null
            fi
            pid=$(serving_pid "$daemon")
            above=$(above_ticks "$daemon" "$pid")
            "$bin/virtiofs-frontend" --socket "$work/vhost.sock" --backend-pid "$pid" \
                --depth "$depth" --workload "$(cost_workloads "$depth")" --json >"$out/cost-$c-d$depth-r$i.json"
            # CPU ticks of the processes above the serving one (supervisor, waiter) meanwhile.
            echo $(($(above_ticks "$daemon" "$pid") - above)) >"$out/cost-$c-d$depth-r$i.above"
            stop
        done
    done
    i=$((i + 1))
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo "# The mount table vs nydusd 2.2, both driven through the nydusd API"
    echo
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($cpu), Linux $(uname -r),"
    echo "with \`scripts/bench-mounts.sh $runs\` (DISTINCT=$distinct COUNT=$count FIRST_READ=$first_read MOUNTS_READ=$mounts_read WALKS=$walks COST_RUNS=$cost_runs PHASES=\"$phases\")."
    echo "Load average (1, 5, 15 min) before: $load_before; after: $load_after (a shared 2-core VM:"
    echo "wall-clock figures swing, CPU seconds of the serving process are the stable ones)."
    echo
    DISTINCT=$distinct python3 "$here/scripts/bench-mounts-report.py" "$out" "$tree_bytes" "$count" "$walks" "$first_read"
} >"$out_dir/MOUNTS.md.tmp"
mv "$out_dir/MOUNTS.md.tmp" "$out_dir/MOUNTS.md"
DISTINCT=$distinct SUMMARY=1 python3 "$here/scripts/bench-mounts-report.py" "$out" "$tree_bytes" "$count" "$walks" "$first_read"
echo "wrote $out_dir/MOUNTS.md" >&2
