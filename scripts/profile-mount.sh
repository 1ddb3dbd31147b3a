#!/bin/sh
# Where the time of a whole-tree read through `puzzlefs mount` goes (needs root and perf):
# FUSE requests by opcode (tracepoint fuse:fuse_request_send), tar's time on a CPU, waiting
# for one (runqueue) and blocked (on FUSE replies) from /proc/PID/schedstat, the server's CPU
# by thread, and its hottest symbols (perf record). One fresh mount per measurement, as in
# bench-mount.sh; the plain directory's tar split is printed first for comparison.
#   scripts/profile-mount.sh [ROOTFS]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
rootfs=${1:-$("$here/scripts/debootstrap-tree.sh" bookworm)}
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
ours=${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs
work=$(mktemp -d -p /dev/shm)
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$ours" build -c "$rootfs" "$work/img:t" >/dev/null
mkfifo "$work/pipe"

start() { # mounts the image in the foreground; sets $pid
    "$ours" mount -f "$work/img:t" "$mnt" 2>/dev/null &
    pid=$!
    while ! mountpoint -q "$mnt"; do sleep 0.02; done
}
stop() { umount "$mnt"; wait "$pid" || true; }
tar_split() { # dir: tar's wall, on-CPU, runqueue and blocked seconds
    t0=$(date +%s.%N)
    (cd "$1" && exec tar cf - --numeric-owner .) >"$work/pipe" &
    tp=$!
    cat "$work/pipe" >/dev/null &
    cp=$!
    last=""
    while kill -0 "$tp" 2>/dev/null; do
        l=$(cat "/proc/$tp/schedstat" 2>/dev/null) && last=$l
        sleep 0.01
    done
    wait "$tp"
    wait "$cp"
    echo "$last $t0 $(date +%s.%N)" | awk '{w = $5 - $4; c = $1 / 1e9; q = $2 / 1e9
        printf "wall %.2f s: tar on a CPU %.2f, waiting for one %.2f, blocked %.2f\n", w, c, q, w - c - q}'
}

printf 'plain directory, '
tar_split "$rootfs"
start
printf 'puzzlefs mount,  '
tar_split "$mnt"
echo "server CPU by thread (s):"
for t in /proc/"$pid"/task/*; do
    awk '{printf "  %-16s %.2f\n", $2, ($14 + $15) / 100}' "$t/stat"
done
stop

start
perf record -q -e fuse:fuse_request_send -a -o "$work/requests.data" 2>/dev/null &
pp=$!
sleep 0.5 # perf needs a moment before it records
(cd "$mnt" && tar cf - --numeric-owner . | cat >/dev/null)
kill -INT "$pp"
wait "$pp" || true
stop
echo "FUSE requests by opcode:"
perf script -i "$work/requests.data" 2>/dev/null | grep -o '([A-Z_]*)' | sort | uniq -c | sort -rn

start
perf record -q -F 4000 -g -p "$pid" -o "$work/server.data" 2>/dev/null &
pp=$!
sleep 0.5
(cd "$mnt" && tar cf - --numeric-owner . | cat >/dev/null)
kill -INT "$pp"
wait "$pp" || true
stop
echo "server hottest symbols (self):"
perf report -i "$work/server.data" --no-children --sort sym -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -15
echo "server call paths (children):"
perf report -i "$work/server.data" --children --sort sym -g none 2>/dev/null |
    grep -E 'ZSTD_decompressSequences|digest_blocks|fuse_dev_do_write|fuse_dev_do_read|ksys_read|exc_page_fault|do_epoll_wait|__x64_sys_futex|do_sys_openat2'
