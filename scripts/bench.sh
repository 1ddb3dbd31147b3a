#!/bin/sh
# The whole benchmark suite in one go, every contender in the same run on the same Debian trees:
# builds, unified size of successive versions, whole-tree reads through FUSE, the
# vhost-user-fs daemons driven by virtiofs-frontend, and the mount table against nydusd through
# their API (bench-mounts.sh). Writes the tables to scripts/bench-results/RESULTS.md and
# MOUNTS.md and the ratios as a chart to scripts/bench-results/performance.svg (or to OUT_DIR),
# and the chart's data to performance.tsv.
# Takes about 16 minutes on 2 cores with RUNS=3 (once the trees and tools are cached), about
# 6 of them in bench-mounts.sh.
#   scripts/bench.sh [RUNS] [OUT_DIR]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
out=${2:-$here/scripts/bench-results}
mkdir -p "$out"
BENCH_RATIOS=$(mktemp)
export BENCH_RATIOS
trap 'rm -f "$BENCH_RATIOS" "$out/RESULTS.md.tmp"' EXIT
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($cpu), Linux $(uname -r),"
    echo "with \`scripts/bench.sh $runs\`. Ratios: above 1 means ours is faster or smaller."
    echo
    echo "### Building an image (Debian bookworm minbase)"
    echo
    "$here/scripts/bench-build.sh" "" "$runs"
    echo
    echo "### Unified size of four successive versions"
    echo
    "$here/scripts/bench-versions.sh"
    echo
    echo "### Whole-tree read through a host FUSE mount"
    echo
    "$here/scripts/bench-mount.sh" "" "$runs"
    echo
    echo "### vhost-user-fs daemons (virtiofs-frontend, bookworm + python3 + git)"
    echo
    "$here/scripts/bench-vhost.sh" "" "$runs"
    echo
    echo "### The mount table vs nydusd 2.2, both driven through the nydusd API"
    echo
    echo "Memory with 1/16/64 images mounted, mount latency, the first read of a new mount and the"
    echo "table's own cost: [MOUNTS.md](MOUNTS.md) (\`scripts/bench-mounts.sh $runs\`, same run)."
} >"$out/RESULTS.md.tmp"
"$here/scripts/bench-mounts.sh" "$runs" "$out" >&2
mv "$out/RESULTS.md.tmp" "$out/RESULTS.md"
cp "$BENCH_RATIOS" "$out/performance.tsv"
"$here/scripts/bench-chart.py" <"$out/performance.tsv" >"$out/performance.svg"
echo "wrote $out/RESULTS.md, performance.tsv and performance.svg" >&2
