# PuzzleFS image metadata.
#
# Field ordinals 0..13 of Inode and 0..2 of Rootfs are the wire layout that upstream PuzzleFS 0.2
# reads and writes, so images stay readable in both directions. Everything this project adds uses
# new ordinals: older readers skip fields they do not know.
@0x913f66cd6192a8a6;

struct Chr {
    major @0 :UInt64;
    minor @1 :UInt64;
}

struct Blk {
    major @0 :UInt64;
    minor @1 :UInt64;
}

struct DirEntry {
    ino @0 :UInt64;
    name @1 :Data;
}

struct Dir {
    entries @0 :List(DirEntry);
    # When set, entries of the same directory inode in lower layers show through unless shadowed.
    lookBelow @1 :Bool;
}

# A byte range of a regular file: `len` bytes starting at `blob.offset` in the blob's
# uncompressed contents.
struct FileChunk {
    blob @0 :BlobRef;
    len @1 :UInt64;
}

struct BlobRef {
    # sha256 of the blob as stored under blobs/sha256/.
    digest @0 :Data;
    offset @1 :UInt64;
    # The stored blob is in the zstd seekable format.
    compressed @2 :Bool;
}

struct Xattr {
    key @0 :Data;
    val @1 :Data;
}

struct InodeAdditional {
    xattrs @0 :List(Xattr);
    symlinkTarget @1 :Data;
}

struct Inode {
    ino @0 :UInt64;
    mode :union {
        unknown @1 :Void;
        fifo @2 :Void;
        chr @3 :Chr;
        dir @4 :Dir;
        blk @5 :Blk;
        file @6 :List(FileChunk);
        lnk @7 :Void;
        sock @8 :Void;
        wht @9 :Void;
    }
    uid @10 :UInt32;
    gid @11 :UInt32;
    # Permission bits including setuid, setgid and sticky (mode & 0o7777).
    permissions @12 :UInt16;
    additional @13 :InodeAdditional;

    # Added by this project (absent in upstream images, which read as the epoch).
    mtimeSec @14 :Int64;
    mtimeNsec @15 :UInt32;
    # sha256 of a regular file's whole contents: lets `build --base` reuse unchanged files'
    # chunks safely and `check` verify files end to end.
    fileDigest @16 :Data;
}

struct InodeVector {
    # Sorted by ino.
    inodes @0 :List(Inode);
}

struct VerityData {
    digest @0 :Data;
    verity @1 :Data;
}

# How the file data stream was cut into blobs and stored; recorded so a later build with
# `--base` can refuse to mix parameters and so tools can report them. Added by this project.
struct Chunking {
    algorithm @0 :Text;
    minSize @1 :UInt32;
    avgSize @2 :UInt32;
    maxSize @3 :UInt32;
    compression @4 :Text;
    zstdFrameSize @5 :UInt32;
    zstdLevel @6 :Int32;
}

# A chunk inside a pack: the unit a reader reads and verifies on its own. Its stored bytes are
# `storedLen` bytes at `storedOffset` in the pack blob: raw, or in a compressed pack one or more
# whole zstd frames. Its contents are `len` bytes at `offset` in the pack's uncompressed view
# (what a BlobRef's offset counts in). Added by this project.
struct PackedChunk {
    # sha256 of the chunk's stored bytes: checks a chunk read on its own (a byte range of the
    # pack) and keys caches of it.
    digest @0 :Data;
    offset @1 :UInt64;
    len @2 :UInt64;
    storedOffset @3 :UInt64;
    storedLen @4 :UInt64;
}

# A content-defined chunk of the data stream compressed together with its neighbours inside
# one packed chunk (a frame group): `len` bytes at `offset` in the pack's uncompressed view,
# whose sha256 is `digest`. Readers need nothing of it; builds use it to find chunks the
# layout already stores. Added by this project.
struct ChunkPart {
    digest @0 :Data;
    offset @1 :UInt64;
    len @2 :UInt64;
}

# A data blob that holds many chunks back to back: raw, or in the zstd seekable format with
# frames that never straddle two packed chunks. File chunks refer to it with an upstream
# BlobRef (digest, offset in its uncompressed view), so upstream readers read it as one blob.
# Added by this project.
struct Pack {
    # sha256 of the pack blob as stored.
    digest @0 :Data;
    compressed @1 :Bool;
    # The chunks the image uses, sorted by offset, not overlapping.
    chunks @2 :List(PackedChunk);
    # The content-defined chunks inside those of `chunks` that group several, sorted by
    # offset; each lies inside one of `chunks`.
    parts @3 :List(ChunkPart);
}

struct Rootfs {
    # Layers, topmost first: an inode number resolves to its first occurrence.
    metadatas @0 :List(InodeVector);
    fsVerityData @1 :List(VerityData);
    manifestVersion @2 :UInt64;
    chunking @3 :Chunking;
    # Blobs that are packs; a BlobRef to any other blob names a blob that is one chunk.
    packs @4 :List(Pack);
}
