#!/bin/sh
# Prints the nydusd configuration the benchmarks use: blobs from a local directory, and a blob
# cache (decompressed data) in another; RAFS v6 needs the cache.
#   scripts/nydus-config.sh BLOB_DIR CACHE_DIR
set -eu
cat <<JSON
{"device": {"backend": {"type": "localfs", "config": {"dir": "$1"}},
            "cache": {"type": "blobcache", "config": {"work_dir": "$2"}}},
 "mode": "direct", "digest_validate": false, "enable_xattr": true}
JSON
