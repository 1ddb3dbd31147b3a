#!/bin/sh
# Prints the KiB that process PID's verified chunk store holds (puzzlefs-virtiofsd keeps it in
# a memfd named pfs-chunks: shared memory outside RSS); 0 when it has none.
#   scripts/chunk-store-kib.sh PID
kib=0
for f in /proc/"$1"/fd/*; do
    case $(readlink "$f" 2>/dev/null) in
    /memfd:pfs-chunks*) kib=$((kib + $(stat -L -c '%b * %B / 1024' "$f" 2>/dev/null || echo 0))) ;;
    esac
done
echo "$kib"
