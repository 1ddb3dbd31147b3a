#!/bin/sh
# Unified size of successive versions of a root file system kept together: our images in one
# OCI layout (independent builds, and --base builds), upstream PuzzleFS's, and tar layers
# (whole-tree tarballs, and Docker-style delta layers holding only new or changed entries),
# gzip and zstd. Versions: Debian bookworm minbase, then + python3, + git, + curl.
#   scripts/bench-versions.sh
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
ours=$here/target/release/puzzlefs
theirs=$("$here/scripts/install-upstream.sh")
v1=$("$here/scripts/debootstrap-tree.sh" bookworm)
v2=$("$here/scripts/debootstrap-tree.sh" bookworm python3)
v3=$("$here/scripts/debootstrap-tree.sh" bookworm python3 git)
v4=$("$here/scripts/debootstrap-tree.sh" bookworm python3 git curl)
work=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$work"' EXIT
mib() { du -s --apparent-size --block-size=1 "$@" | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }

prev=""
n=0
for tree in "$v1" "$v2" "$v3" "$v4"; do
    n=$((n + 1))
    "$ours" build -c "$tree" "$work/ours:v$n" >/dev/null
    "$theirs" build -c "$tree" "$work/upstream:v$n" >/dev/null
    if [ -z "$prev" ]; then
        "$ours" build -c "$tree" "$work/ours-base:v$n" >/dev/null
        "$theirs" build -c "$tree" "$work/upstream-base:v$n" >/dev/null
        tar cf "$work/layer$n.tar" -C "$tree" .
    else
        "$ours" build -c --base "v$((n - 1))" "$tree" "$work/ours-base:v$n" >/dev/null
        "$theirs" build -c --base-layer "v$((n - 1))" "$tree" "$work/upstream-base:v$n" >/dev/null
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
echo "| puzzlefs (ours), -c --base previous | $(mib "$work/ours-base") |"
echo "| upstream puzzlefs 0.2, -c, one OCI dir | $(mib "$work/upstream") |"
echo "| upstream puzzlefs 0.2, -c --base-layer previous | $(mib "$work/upstream-base") |"
echo "| tar.gz, whole tree per version | $(mib "$work"/full*.tar.gz) |"
echo "| tar.zst, whole tree per version | $(mib "$work"/full*.tar.zst) |"
echo "| tar.gz, delta layers | $(mib "$work"/layer*.tar.gz) |"
echo "| tar.zst, delta layers | $(mib "$work"/layer*.tar.zst) |"
echo "| (uncompressed tree, v4 alone) | $(mib "$v4") |"
