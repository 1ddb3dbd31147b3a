#!/bin/sh
# What crash recovery costs in steady state: the serving process's CPU per request with and
# without INFLIGHT_SHMFD tracking, driven natively by vmm-tests' virtiofs-frontend with
# cloud-hypervisor's message flow (one request queue, depth 16):
#   plain      puzzlefs-virtiofsd --image (no --reconnect: no respawner, no relay)
#   untracked  --reconnect --sandbox namespace (respawner and relay), front end --no-inflight
#   tracked    the same, the front end accepts INFLIGHT_SHMFD: every request is marked in the
#              inflight region when taken and cleared when answered
# Workloads: readdirplus, read (cold), read (warm), RANDOM_READS (default 200k) random 4 KiB
# reads; every file verified.
# Contenders alternate; RUNS rounds; medians of daemon CPU (utime+stime of the serving
# process) per request, and ratios against plain.
#   scripts/bench-inflight.sh [TREE] [RUNS]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
tree_in=${1:-$("$here/scripts/debootstrap-tree.sh" bookworm python3 git)}
runs=${2:-5}
cargo build --release --workspace --manifest-path "$here/Cargo.toml" >&2
bin=${CARGO_TARGET_DIR:-$here/target}/release
work=$(mktemp -d -p /dev/shm)
daemon=""
cleanup() {
    [ -z "$daemon" ] || kill "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "preparing an image of $tree_in in $work" >&2
cp -a "$tree_in" "$work/tree"
"$bin/puzzlefs" build -c "$work/tree" "$work/oci:zstd" >/dev/null

deepest() { # pid -> the deepest process under it (respawner -> waiter -> daemon)
    p=$1
    while c=$(pgrep -P "$p" | head -n 1) && [ -n "$c" ]; do p=$c; done
    echo "$p"
}

ready() { # contender socket: listening, and behind a respawner its generation started
    [ -S "$2" ] || return 1
    [ "$1" = plain ] || [ "$(deepest "$daemon")" != "$daemon" ]
}

i=1
while [ "$i" -le "$runs" ]; do
    for c in plain untracked tracked; do
        sock=$work/$c.sock
        rm -f "$sock"
        case $c in
        plain) set -- ;;
        *) set -- --reconnect --sandbox namespace ;;
        esac
        "$bin/puzzlefs-virtiofsd" --socket-path "$sock" --image "$work/oci:zstd" \
            --cache always "$@" 2>>"$work/daemon.log" &
        daemon=$!
        n=0
        while ! ready "$c" "$sock"; do
            n=$((n + 1))
            [ $n -lt 200 ] || { echo "bench-inflight.sh: $c did not start" >&2; exit 1; }
            sleep 0.05
        done
        pid=$(deepest "$daemon")
        flag=""
        [ "$c" != untracked ] || flag=--no-inflight
        echo "run $i $c (serving pid $pid)" >&2
        "$bin/virtiofs-frontend" --socket "$sock" --profile cloud-hypervisor --queues 1 \
            --depth 16 --verify "$work/tree" --backend-pid "$pid" $flag \
            --workload readdirplus,read,read,random --random-reads "${RANDOM_READS:-200000}" --json \
            >"$work/$c-r$i.json"
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
        daemon=""
    done
    i=$((i + 1))
done

python3 - "$work" "$runs" <<'EOF'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
contenders = ["plain", "untracked", "tracked"]
rows = {}
for c in contenders:
    for r in range(1, runs + 1):
        report = json.load(open(f"{work}/{c}-r{r}.json"))
        seen = {}
        for w in report["workloads"]:
            name = w["workload"]
            seen[name] = seen.get(name, 0) + 1
            if name == "read":
                name = "read (cold)" if seen[name] == 1 else "read (warm)"
            cpu = w.get("backend_cpu_s")
            if cpu is None or not w["ops"]:
                continue
            rows.setdefault(name, {}).setdefault(c, []).append(cpu * 1e9 / w["ops"])
print(f"daemon CPU per request, microseconds (median of {runs}; ratio to plain)")
print(f"{'workload':<14}" + "".join(f"{c:>22}" for c in contenders))
for name, by in rows.items():
    base = statistics.median(by["plain"])
    cells = []
    for c in contenders:
        m = statistics.median(by[c]) / 1000
        cells.append(f"{m:9.2f} ({m * 1000 / base:4.2f}x)")
    print(f"{name:<14}" + "".join(f"{x:>22}" for x in cells))
EOF
