#!/bin/sh
# Prints the manifest of the tree in DIR: one line per entry, sorted by path, with tab-separated
# fields path, type (d f l c b p), permission bits (octal), uid, gid, size (0 for directories
# and devices), link count, hard-link group (the group's first path, or -), then sha256 for a
# file, target for a symlink, major:minor for a device (else -), then xattrs as
# name=0xHEX joined by commas (or -). Paths start with / (the root is /). Names must not hold
# tabs or newlines. Needs root to see trusted.* xattrs.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
cd "$1"
export LC_ALL=C
find . -printf '/%P\t%y\t%m\t%U\t%G\t%s\t%n\t%i\n' | sort | while IFS='	' read -r path type mode uid gid size nlink ino; do
    p=.$path
    case $type in
        f) detail=$(sha256sum <"$p" | cut -d' ' -f1) ;;
        l) detail=$(readlink "$p") ;;
        c | b) detail=$(stat -c '%Hr:%Lr' "$p"); size=0 ;;
        *) detail=- ;;
    esac
    [ "$type" = d ] && size=0
    [ "$type" = p ] && size=0
    xattrs=$(getfattr -h -d -m - -e hex --absolute-names "$p" 2>/dev/null | grep = | sort | paste -sd, -)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "$type" "$mode" "$uid" "$gid" \
        "$size" "$nlink" "$ino" "$detail" "${xattrs:--}"
done | awk -F '\t' -v OFS='\t' '
    # Field 8 is the inode number while reading; it becomes the hard-link group.
    { line[NR] = $0; if ($2 == "f" && $7 > 1 && !($8 in first)) first[$8] = $1 }
    END {
        for (i = 1; i <= NR; i++) {
            $0 = line[i]
            $8 = ($2 == "f" && $7 > 1) ? first[$8] : "-"
            print
        }
    }'
