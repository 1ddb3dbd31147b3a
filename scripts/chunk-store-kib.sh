#!/bin/sh
# Prints the KiB that process PID's verified chunk store holds; 0 when it has none. The
# puzzlefs-virtiofsd store is an unnamed O_TMPFILE in --cache-dir (default /var/tmp: page
# cache, reclaimable) or, with --cache-in-memory, a memfd named pfs-chunks (shared memory);
# either way outside RSS.
#   scripts/chunk-store-kib.sh PID
kib=0
for f in /proc/"$1"/fd/*; do
    case $(readlink "$f" 2>/dev/null) in
    /memfd:pfs-chunks* | */#[0-9]*" (deleted)") kib=$((kib + $(stat -L -c '%b * %B / 1024' "$f" 2>/dev/null || echo 0))) ;;
    esac
done
echo "$kib"
