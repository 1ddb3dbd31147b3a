#!/bin/sh
# How the cost of pushing an image depends on how many blobs hold its chunks: the chunks of a
# `build -c` image of bookworm + python3 + git, concatenated in manifest order into packs of
# about SIZE bytes (cut at chunk boundaries), each layout pushed by skopeo to a fresh local
# registry (Debian's docker-registry). Reports wall seconds and the registry's CPU seconds per
# pack size: the data for choosing a pack size (docs/format.md).
#   scripts/bench-pack-size.sh [SIZES...]   (default: 256K 1M 4M 16M 64M; 0 = one blob per chunk,
#   which skopeo takes about 10 minutes to push: see docs/performance.md)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- 256K 1M 4M 16M 64M
cargo build --release --bin puzzlefs --manifest-path "$here/Cargo.toml" >&2
ours=${CARGO_TARGET_DIR:-$here/target}/release/puzzlefs
tree=$("$here/scripts/debootstrap-tree.sh" bookworm python3 git)
work=$(mktemp -d)
. "$here/scripts/local-registry.sh"
trap 'stop_registry; rm -rf "$work"' EXIT
"$ours" build -c "$tree" "$work/image:t" >/dev/null
echo "| pack size | blobs | push wall s | registry CPU s |"
echo "|---|---:|---:|---:|"
for size in "$@"; do
    rm -rf "$work/packed"
    python3 - "$work/image" "$work/packed" "$size" <<'PY'
import hashlib, json, os, sys
src, dst, size = sys.argv[1], sys.argv[2], sys.argv[3]
mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
limit = int(size[:-1]) * mult[size[-1]] if size[-1] in mult else int(size)
index = json.load(open(f"{src}/index.json"))
m = json.load(open(f"{src}/blobs/sha256/" + index["manifests"][0]["digest"][7:]))
os.makedirs(f"{dst}/blobs/sha256")
def put(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{dst}/blobs/sha256/{d}", "wb").write(data)
    return {"mediaType": "application/vnd.puzzlefs.image.filedata.v1", "digest": "sha256:" + d, "size": len(data)}
layers, pack = [], b""
for l in m["layers"]:
    data = open(f"{src}/blobs/sha256/" + l["digest"][7:], "rb").read()
    if limit == 0:
        layers.append(put(data))
        continue
    pack += data
    if len(pack) >= limit:
        layers.append(put(pack))
        pack = b""
if pack:
    layers.append(put(pack))
cfg = put(b"{}")
cfg["mediaType"] = "application/vnd.oci.empty.v1+json"
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": cfg, "layers": layers}).encode()
md = put(man)
open(f"{dst}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md["digest"], "size": md["size"],
           "annotations": {"org.opencontainers.image.ref.name": "t"}}]}, open(f"{dst}/index.json", "w"))
PY
    blobs=$(($(find "$work/packed/blobs/sha256" -type f | wc -l) - 2))
    fresh_registry
    /usr/bin/time -f "%e" -o "$work/t" skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
        "oci:$work/packed:t" "docker://127.0.0.1:$port/p:t" >/dev/null
    cpu=$(registry_cpu)
    stop_registry
    echo "| $size | $blobs | $(cat "$work/t") | $cpu |"
done
