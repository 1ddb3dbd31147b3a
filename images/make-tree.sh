#!/bin/sh
# Creates the fixture tree in DIR (which must not exist): every kind of entry PuzzleFS stores
# (directories, regular, empty, sparse and multi-chunk files, small files sharing a chunk, hard
# links, symlinks, device nodes, a FIFO), odd permission bits, owners, xattrs in the user,
# trusted and security namespaces, and long and non-ASCII names. With `v2` as second argument
# it then applies the changes of the fixture's second version (edits, removals, additions).
# Deterministic; needs root (mknod, chown, trusted.* xattrs) and setfattr (package attr).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR [v2]" >&2; exit 2; }
root=$(realpath -m "$1")
version=${2:-v1}
umask 022

v1() {
    mkdir "$root"
    cd "$root"
    mkdir -p etc bin tmp data/small links other dev owned names private
    printf 'fixture\n' >etc/hostname
    printf 'A small tree for PuzzleFS compatibility tests.\n' >etc/motd
    # Spans several chunks (FastCDC cuts 16-256 KiB); text, so it compresses.
    seq 1 20000 >data/seq.txt
    # Small files: several share one chunk, and chunks start and end inside them.
    i=0
    while [ $i -lt 20 ]; do
        seq "$i" 7 $((i * 150 + 40)) >"data/small/$(printf %02d $i).txt"
        i=$((i + 1))
    done
    : >data/empty
    printf head >data/sparse
    truncate -s 65536 data/sparse
    printf tail >>data/sparse
    printf 'linked contents\n' >links/original
    ln links/original links/second
    ln links/original other/third
    ln -s original links/rel
    ln -s /etc/passwd links/abs
    ln -s does/not/exist links/dangling
    ln -s ../data links/dir
    mknod -m 0666 dev/null c 1 3
    mknod -m 0660 dev/loop7 b 7 200
    mknod -m 0640 dev/fifo p
    printf '#!/bin/sh\necho tool\n' >bin/tool
    chmod 0755 bin/tool
    printf '#!/bin/sh\n' >bin/suid
    chmod 4755 bin/suid
    printf '#!/bin/sh\n' >bin/sgid
    chmod 2711 bin/sgid
    printf x >bin/noperm
    chmod 0000 bin/noperm
    chmod 1777 tmp
    chmod 0700 private
    printf 'secret\n' >private/key
    chmod 0600 private/key
    printf owned >owned/by-1234
    chown 1234:5678 owned/by-1234
    chown -h 42:43 links/abs
    setfattr -n user.comment -v hello owned/by-1234
    setfattr -n user.binary -v 0x000102ff owned/by-1234
    setfattr -n trusted.secret -v t owned/by-1234
    # cap_net_bind_service+ep (VFS_CAP_REVISION_2).
    setfattr -n security.capability -v 0x0000000200040000000000000000000000000000 bin/suid
    setfattr -n user.dir -v 'on a directory' data
    setfattr -h -n trusted.onlink -v 'on a symlink' links/abs
    printf 'long name\n' >"names/$(printf '%0255d' 0 | tr 0 l)"
    printf 'utf8\n' >'names/ünïcødé-名前-🙂'
    printf 'q\n' >"names/with space and 'quotes'"
}

# The second version: a file edited, one removed, a directory removed (whiteouts in a layered
# image), a mode changed, and new entries.
v2() {
    seq 1000 3 9000 >data/small/03.txt
    rm data/small/04.txt links/dangling
    rm -r names
    chmod 0700 bin/tool
    mkdir new
    printf 'new\n' >new/file
    seq 5 5 20000 >data/added.txt
}

v1
[ "$version" = v1 ] || v2
