#!/bin/sh
# Unified size of successive versions of a root file system kept together: our images in one
# OCI layout (independent builds, and --base builds), upstream PuzzleFS's, and tar layers
# (whole-tree tarballs, and Docker-style delta layers holding only new or changed entries),
# gzip and zstd, and Nydus 2.2 RAFS images (zstd) built with the previous version as chunk
# dictionary; every store counts its data and its metadata (bootstraps for Nydus).
# Ours also with larger frame groups at a higher level (--frame-size 4M --level 9: about
# twice the build time) and with settings for distribution (--level 19 and 256 KiB chunks:
# smaller, far slower).
# Versions: Debian bookworm minbase, then + python3, + git, + curl.
#   scripts/bench-versions.sh
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
ours=${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs
theirs=$("$here/scripts/install-upstream.sh")
nydus=$("$here/scripts/install-nydus.sh")
v1=$("$here/scripts/debootstrap-tree.sh" bookworm)
v2=$("$here/scripts/debootstrap-tree.sh" bookworm python3)
v3=$("$here/scripts/debootstrap-tree.sh" bookworm python3 git)
v4=$("$here/scripts/debootstrap-tree.sh" bookworm python3 git curl)
work=$(mktemp -d -p /dev/shm)
mkdir "$work/nydus"
trap 'rm -rf "$work"' EXIT
mib() { du -s --apparent-size --block-size=1 "$@" | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }

dist="--level 19 --chunk-size 256K --frame-size 1M"
big="--level 9 --frame-size 4M"
prev=""
n=0
for tree in "$v1" "$v2" "$v3" "$v4"; do
    n=$((n + 1))
    "$ours" build -c "$tree" "$work/ours:v$n" >/dev/null
    "$ours" build -c $big "$tree" "$work/ours-big:v$n" >/dev/null
    "$theirs" build -c "$tree" "$work/upstream:v$n" >/dev/null
    if [ -z "$prev" ]; then
        "$ours" build -c "$tree" "$work/ours-base:v$n" >/dev/null
        "$theirs" build -c "$tree" "$work/upstream-base:v$n" >/dev/null
        "$ours" build -c $dist "$tree" "$work/ours-dist:v$n" >/dev/null
        tar cf "$work/layer$n.tar" -C "$tree" .
        "$nydus/nydus-image" create -t dir-rafs --compressor zstd -D "$work/nydus" \
            -B "$work/nydus/v$n.boot" "$tree" >/dev/null
    else
        "$nydus/nydus-image" create -t dir-rafs --compressor zstd -D "$work/nydus" \
            -B "$work/nydus/v$n.boot" --chunk-dict "bootstrap=$work/nydus/v$((n - 1)).boot" \
            "$tree" >/dev/null
        "$ours" build -c --base "v$((n - 1))" "$tree" "$work/ours-base:v$n" >/dev/null
        "$theirs" build -c --base-layer "v$((n - 1))" "$tree" "$work/upstream-base:v$n" >/dev/null
        "$ours" build -c $dist --base "v$((n - 1))" "$tree" "$work/ours-dist:v$n" >/dev/null
        # Delta layer: entries that are new or whose type, mode, owner, target or contents changed.
        python3 - "$prev" "$tree" >"$work/delta$n.list" <<'PY'
import hashlib, os, stat, sys
def facts(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            f = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                f += (hashlib.sha256(open(p, 'rb').read()).hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                f += (os.readlink(p),)
            out[os.path.relpath(p, root)] = f
    return out
old, new = facts(sys.argv[1]), facts(sys.argv[2])
for path in sorted(new):
    if old.get(path) != new[path]:
        print('./' + path)
PY
        tar cf "$work/layer$n.tar" -C "$tree" --no-recursion -T "$work/delta$n.list"
    fi
    tar cf "$work/full$n.tar" -C "$tree" .
    prev=$tree
done
for f in "$work"/*.tar; do
    gzip -k -6 "$f"
    zstd -q -3 "$f" -o "$f.zst"
done
echo "| 4 versions of bookworm (minbase, +python3, +git, +curl) | unified MiB |"
echo "|---|---:|"
echo "| puzzlefs (ours), -c, one OCI dir | $(mib "$work/ours") |"
echo "| puzzlefs (ours), -c $big, one OCI dir | $(mib "$work/ours-big") |"
echo "| puzzlefs (ours), -c --base previous | $(mib "$work/ours-base") |"
echo "| puzzlefs (ours), -c $dist --base previous | $(mib "$work/ours-dist") |"
echo "| upstream puzzlefs 0.2, -c, one OCI dir | $(mib "$work/upstream") |"
echo "| upstream puzzlefs 0.2, -c --base-layer previous | $(mib "$work/upstream-base") |"
echo "| nydus 2.2 RAFS v6, zstd, --chunk-dict previous | $(mib "$work/nydus") |"
echo "| tar.gz, whole tree per version | $(mib "$work"/full*.tar.gz) |"
echo "| tar.zst, whole tree per version | $(mib "$work"/full*.tar.zst) |"
echo "| tar.gz, delta layers | $(mib "$work"/layer*.tar.gz) |"
echo "| tar.zst, delta layers | $(mib "$work"/layer*.tar.zst) |"
echo "| (uncompressed tree, v4 alone) | $(mib "$v4") |"
if [ -n "${BENCH_RATIOS:-}" ]; then # chart lines for bench-chart.py: peer size / ours
    o=$(mib "$work/ours-base")
    d=$(mib "$work/ours-dist")
    i=$(mib "$work/ours")
    awk -v o="$o" -v d="$d" -v i="$i" -v n="$(mib "$work/nydus")" -v u="$(mib "$work/upstream-base")" 'BEGIN {
        printf "unified size of 4 versions, -c, default settings\tnydus --chunk-dict\t%.3f\t1.111\n", n / i
        printf "unified size of 4 versions, -c --base\tnydus --chunk-dict\t%.3f\t1.111\n", n / o
        printf "unified size of 4 versions, -c --base, level 19, 256K chunks\tnydus --chunk-dict\t%.3f\t1.111\n", n / d
        printf "unified size of 4 versions, -c --base\tupstream --base-layer\t%.3f\t\n", u / o
    }' >>"$BENCH_RATIOS"
fi
