#!/bin/sh
# `puzzlefs push` of a Debian tree (bookworm minbase + python3 + git) to an empty local
# registry (Debian's docker-registry, CNCF distribution 2.8, on loopback) against `skopeo
# copy` of the same tree as one tar.zst OCI layer, alternating, each into a fresh registry.
# Then the bytes a version sends after its predecessor (bookworm, then + python3) against
# the true delta: the stored bytes of the chunks the new version has and the old one lacks,
# plus the new metadata.
# Reports medians and ratios (ours / skopeo: below 1 means we are faster).
#   scripts/bench-push.sh [RUNS] [JOBS]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
jobs=${2:-8}
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
ours=${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs
v1=$("$here/scripts/debootstrap-tree.sh" bookworm)
v2=$("$here/scripts/debootstrap-tree.sh" bookworm python3)
v3=$("$here/scripts/debootstrap-tree.sh" bookworm python3 git)
command -v skopeo >/dev/null || { echo "bench-push.sh: no skopeo (scripts/setup.sh)" >&2; exit 1; }
work=$(mktemp -d)
. "$here/scripts/local-registry.sh"
trap 'stop_registry; rm -rf "$work"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# The tree as a one-layer OCI image (tar, zstd -3, as skopeo/podman would push it).
tar_layout() { # tree dir
    mkdir -p "$2/blobs/sha256"
    tar -C "$1" --numeric-owner --xattrs -cf "$work/layer.tar" .
    diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    zstd -q -3 -T0 -f "$work/layer.tar" -o "$work/layer.tar.zst"
    rm "$work/layer.tar"
    layer=$(sha256sum "$work/layer.tar.zst" | cut -d' ' -f1)
    lsize=$(stat -c %s "$work/layer.tar.zst")
    mv "$work/layer.tar.zst" "$2/blobs/sha256/$layer"
    printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}' \
        "$diff_id" >"$work/config.json"
    config=$(sha256sum "$work/config.json" | cut -d' ' -f1)
    csize=$(stat -c %s "$work/config.json")
    mv "$work/config.json" "$2/blobs/sha256/$config"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:%s","size":%s}]}' \
        "$config" "$csize" "$layer" "$lsize" >"$work/manifest.json"
    manifest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
    msize=$(stat -c %s "$work/manifest.json")
    mv "$work/manifest.json" "$2/blobs/sha256/$manifest"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$2/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"t"}}]}' \
        "$manifest" "$msize" >"$2/index.json"
}

"$ours" build -c "$v3" "$work/ours:t" >/dev/null
tar_layout "$v3" "$work/tar"
blobs=$(find "$work/ours/blobs/sha256" -type f | wc -l)
ours_mib=$(du -sm --apparent-size "$work/ours" | cut -f1)
tar_mib=$(du -sm --apparent-size "$work/tar" | cut -f1)
i=0
while [ "$i" -le "$runs" ]; do # run 0 warms up and is not counted
    fresh_registry
    /usr/bin/time -f "%e" -o "$work/t" "$ours" push --tls-verify=false -j "$jobs" "$work/ours:t" \
        "docker://127.0.0.1:$port/ours:t" >/dev/null 2>&1
    [ "$i" -gt 0 ] && { cat "$work/t" >>"$work/ours.times"; registry_cpu >>"$work/ours.cpu"; echo >>"$work/ours.cpu"; }
    fresh_registry
    /usr/bin/time -f "%e" -o "$work/t" skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
        "oci:$work/tar:t" "docker://127.0.0.1:$port/tar:t" >/dev/null 2>&1
    [ "$i" -gt 0 ] && { cat "$work/t" >>"$work/tar.times"; registry_cpu >>"$work/tar.cpu"; echo >>"$work/tar.cpu"; }
    i=$((i + 1))
done
ow=$(median <"$work/ours.times")
tw=$(median <"$work/tar.times")
oc=$(median <"$work/ours.cpu")
tc=$(median <"$work/tar.cpu")
echo "| push of bookworm+python3+git to an empty registry ($runs runs, medians) | wall s | registry CPU s | MiB | blobs |"
echo "|---|---:|---:|---:|---:|"
echo "| puzzlefs push -j $jobs (build -c image) | $ow | $oc | $ours_mib | $blobs |"
echo "| skopeo copy (one tar.zst layer) | $tw | $tc | $tar_mib | 3 |"
awk -v o="$ow" -v t="$tw" 'BEGIN {printf "push wall ours/skopeo %.2fx\n", o/t}'

# Bytes a version sends after its predecessor, against the true delta.
fresh_registry
"$ours" build -c "$v1" "$work/versions:v1" >/dev/null
"$ours" build -c "$v2" "$work/versions:v2" >/dev/null
"$ours" push --tls-verify=false "$work/versions:v1" "docker://127.0.0.1:$port/v:v1" >/dev/null 2>&1
"$ours" push --tls-verify=false --json "$work/versions:v2" "docker://127.0.0.1:$port/v:v2" \
    >"$work/v2.json" 2>/dev/null
sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_sent"])' "$work/v2.json")
# The true delta: the stored bytes of the chunks v2 uses and v1 does not, plus v2's metadata.
"$ours" inspect --json "$work/versions" >"$work/inspect.json"
delta=$(python3 - "$work/inspect.json" <<'PY'
import json, sys
v2 = next(i for i in json.load(open(sys.argv[1]))["images"] if i["tag"] == "v2")
print(v2["chunk_bytes"] - v2["shared_bytes"] + v2["metadata_bytes"])
PY
)
echo "bookworm -> +python3: sent $sent bytes, true delta $delta bytes: $(awk -v s="$sent" -v d="$delta" 'BEGIN {printf "%.3fx", s/d}')"
