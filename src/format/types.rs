//! The metadata model: a root file system as layers of inodes.

use std::collections::BTreeMap;

use super::Digest;

/// The `manifestVersion` upstream PuzzleFS 0.2 writes and requires.
pub const MANIFEST_VERSION: u64 = 3;

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;

/// The whole metadata blob of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    /// Layers of inodes, topmost first; each sorted by ino.
    pub layers: Vec<Vec<Inode>>,
    /// fs-verity digest of each blob, by blob digest.
    pub verity: BTreeMap<Digest, [u8; 32]>,
    /// Format version; see [`MANIFEST_VERSION`].
    pub manifest_version: u64,
    /// How the data was chunked and compressed; absent in upstream images.
    pub chunking: Option<Chunking>,
    /// Data blobs that hold many chunks (absent in upstream images, whose every data blob is
    /// one chunk).
    pub packs: Vec<Pack>,
}

/// A data blob holding many chunks back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pack {
    /// Digest of the stored pack blob.
    pub digest: Digest,
    /// Stored in the zstd seekable format (each chunk is whole zstd frames).
    pub compressed: bool,
    /// The chunks the image uses, sorted by offset.
    pub chunks: Vec<PackedChunk>,
    /// The content-defined chunks inside those of `chunks` that group several, sorted by
    /// offset.
    pub parts: Vec<ChunkPart>,
}

/// A content-defined chunk compressed together with its neighbours inside one packed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPart {
    /// sha256 of its contents.
    pub digest: Digest,
    /// Offset of its contents in the pack's uncompressed view.
    pub offset: u64,
    /// Length of its contents.
    pub len: u64,
}

impl ChunkPart {
    /// The parts of `parts` (sorted by offset) inside packed chunk `c`; none if the last of
    /// those starting inside it ends past it.
    pub fn within<'p>(parts: &'p [ChunkPart], c: &PackedChunk) -> &'p [ChunkPart] {
        let end = c.offset.saturating_add(c.len);
        let first = parts.partition_point(|p| p.offset < c.offset);
        let last = parts.partition_point(|p| p.offset < end);
        let inside = &parts[first..last.max(first)];
        match inside.last() {
            Some(p) if p.offset.saturating_add(p.len) > end => &[],
            _ => inside,
        }
    }

    /// Whether `contents`, the uncompressed bytes of packed chunk `c`, hold this part.
    pub fn holds(&self, c: &PackedChunk, contents: &[u8]) -> bool {
        let start = self
            .offset
            .checked_sub(c.offset)
            .and_then(|s| usize::try_from(s).ok());
        let end = start
            .zip(usize::try_from(self.len).ok())
            .and_then(|(s, l)| s.checked_add(l));
        start
            .zip(end)
            .and_then(|(s, e)| contents.get(s..e))
            .is_some_and(|b| Digest::of(b) == self.digest)
    }
}

/// Where a chunk lies in its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedChunk {
    /// sha256 of the chunk's stored bytes.
    pub digest: Digest,
    /// Offset of its contents in the pack's uncompressed view.
    pub offset: u64,
    /// Length of its contents.
    pub len: u64,
    /// Offset of its stored bytes in the pack blob.
    pub stored_offset: u64,
    /// Length of its stored bytes.
    pub stored_len: u64,
}

/// Chunking and compression parameters recorded in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunking {
    /// Chunker name and version, e.g. `fastcdc-v2020`.
    pub algorithm: String,
    /// Minimum chunk size in bytes.
    pub min_size: u32,
    /// Average chunk size in bytes.
    pub avg_size: u32,
    /// Maximum chunk size in bytes.
    pub max_size: u32,
    /// `none` or `zstd-seekable`.
    pub compression: String,
    /// Uncompressed bytes per zstd frame (0 without compression).
    pub zstd_frame_size: u32,
    /// zstd compression level (0 without compression).
    pub zstd_level: i32,
}

/// A point in time, seconds and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    /// Seconds since the epoch (may be negative).
    pub sec: i64,
    /// Nanoseconds, below 1e9.
    pub nsec: u32,
}

/// One inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Inode number, unique in the image; [`ROOT_INO`] is the root directory.
    pub ino: u64,
    /// File type and type-specific data.
    pub kind: InodeKind,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `mode & 0o7777`.
    pub permissions: u16,
    /// Extended attributes, in the order they were listed.
    pub xattrs: Vec<Xattr>,
    /// Target of a symbolic link.
    pub symlink_target: Option<Vec<u8>>,
    /// Modification time.
    pub mtime: Timespec,
    /// sha256 of a regular file's contents (absent in upstream images).
    pub file_digest: Option<Digest>,
}

/// File type and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeKind {
    /// Unknown type (written by upstream for types it cannot classify).
    Unknown,
    /// Named pipe.
    Fifo,
    /// Character device.
    Chr {
        /// Major device number.
        major: u64,
        /// Minor device number.
        minor: u64,
    },
    /// Directory.
    Dir {
        /// Entries, in stored order.
        entries: Vec<DirEntry>,
        /// Lower layers' entries of this directory show through.
        look_below: bool,
    },
    /// Block device.
    Blk {
        /// Major device number.
        major: u64,
        /// Minor device number.
        minor: u64,
    },
    /// Regular file: its bytes, in order.
    File {
        /// Ranges of blobs that make up the file.
        chunks: Vec<FileChunk>,
    },
    /// Symbolic link (target in [`Inode::symlink_target`]).
    Symlink,
    /// Unix socket.
    Socket,
    /// Whiteout: the inode of this number in lower layers is deleted.
    Whiteout,
}

/// A name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode the name refers to.
    pub ino: u64,
    /// The name, arbitrary bytes (validated by readers).
    pub name: Vec<u8>,
}

/// A byte range of a blob's uncompressed contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    /// Digest of the stored blob.
    pub digest: Digest,
    /// Offset in the blob's uncompressed contents.
    pub offset: u64,
    /// Stored in the zstd seekable format.
    pub compressed: bool,
}

/// `len` bytes of a file taken from a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileChunk {
    /// Where the bytes start.
    pub blob: BlobRef,
    /// How many bytes.
    pub len: u64,
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Full name including namespace, e.g. `user.foo`.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

impl Inode {
    /// File type bits (`S_IF*`) for this inode.
    pub fn file_type_bits(&self) -> u32 {
        match self.kind {
            InodeKind::Fifo => libc::S_IFIFO,
            InodeKind::Chr { .. } => libc::S_IFCHR,
            InodeKind::Dir { .. } => libc::S_IFDIR,
            InodeKind::Blk { .. } => libc::S_IFBLK,
            InodeKind::File { .. } | InodeKind::Unknown | InodeKind::Whiteout => libc::S_IFREG,
            InodeKind::Symlink => libc::S_IFLNK,
            InodeKind::Socket => libc::S_IFSOCK,
        }
    }

    /// Full `st_mode`.
    pub fn mode(&self) -> u32 {
        self.file_type_bits() | (u32::from(self.permissions) & 0o7777)
    }

    /// File size: total chunk length for files, target length for symlinks, else 0.
    /// Saturates on absurd chunk lengths (readers validate them separately).
    pub fn size(&self) -> u64 {
        match &self.kind {
            InodeKind::File { chunks } => chunks.iter().fold(0u64, |a, c| a.saturating_add(c.len)),
            InodeKind::Symlink => self.symlink_target.as_ref().map_or(0, |t| t.len() as u64),
            _ => 0,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, InodeKind::Dir { .. })
    }
}
