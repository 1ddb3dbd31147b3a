#!/bin/sh
# Regenerates the committed fixtures: the trees' manifests (tree-v1.manifest, tree-v2.manifest)
# and the OCI layout upstream/ built by upstream PuzzleFS 0.2 from them, with tags plain
# (uncompressed), zstd (-c) and v2 (the second tree, -c with zstd as its base layer), then
# upstream.sha256 over the layout's index.json and oci-layout. Needs root, setfattr, and
# upstream PuzzleFS (installed by scripts/install-upstream.sh, or $UPSTREAM_PUZZLEFS).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
upstream=${UPSTREAM_PUZZLEFS:-$("$here/../scripts/install-upstream.sh")}
version=$("$upstream" --version)
[ "$version" = "puzzlefs 0.2.0" ] || { echo "need upstream puzzlefs 0.2.0, got: $version" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$here/make-tree.sh" "$tmp/v1"
"$here/make-tree.sh" "$tmp/v2" v2
"$here/manifest.sh" "$tmp/v1" >"$here/tree-v1.manifest"
"$here/manifest.sh" "$tmp/v2" >"$here/tree-v2.manifest"
rm -rf "$here/upstream"
"$upstream" build "$tmp/v1" "$here/upstream:plain" >/dev/null
"$upstream" build -c "$tmp/v1" "$here/upstream:zstd" >/dev/null
"$upstream" build -c --base-layer zstd "$tmp/v2" "$here/upstream:v2" >/dev/null
chmod -R a+rX,go-w "$here/upstream"
(cd "$here/upstream" && sha256sum index.json oci-layout) >"$here/upstream.sha256"
