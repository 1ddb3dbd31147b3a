//! The one place where failures of a file system operation become errno values.

use std::io;

use crate::chunk::ChunkError;
use crate::format::{Digest, FormatError};
use crate::oci::OciError;
use crate::reader::ReaderError;

/// Why a FUSE operation failed, before it becomes an errno.
#[derive(Debug)]
pub(crate) enum OpError {
    /// The reader failed (missing or corrupt data, bad path).
    Reader(ReaderError),
    /// Writing the reply failed.
    Reply(io::Error),
    /// An inode number this file system never handed out.
    UnknownInode,
    /// No entry of that name.
    NotFound,
    /// A name longer than NAME_MAX (255 bytes), which no image holds.
    NameTooLong,
    /// The operation needs a directory.
    NotADirectory,
    /// The operation does not work on a directory.
    IsADirectory,
    /// Wrong kind of node or bad argument (readlink on a file, bad `whence`, ...).
    Invalid,
    /// The node has no extended attribute of that name.
    NoXattr,
    /// The caller's buffer is too small for the reply.
    BufferTooSmall,
    /// `SEEK_DATA`/`SEEK_HOLE` at or past the end of the file.
    PastEnd,
    /// Permission bits deny the access.
    PermissionDenied,
    /// Any attempt to change the image.
    ReadOnly,
    /// The operation is not provided (lets the kernel stop asking).
    NotSupported,
}

impl From<ReaderError> for OpError {
    fn from(e: ReaderError) -> Self {
        OpError::Reader(e)
    }
}

impl From<OpError> for io::Error {
    fn from(e: OpError) -> Self {
        io::Error::from_raw_os_error(e.errno())
    }
}

impl OpError {
    /// The errno reported to the kernel or guest.
    pub(crate) fn errno(&self) -> i32 {
        match self {
            OpError::Reader(e) => reader_errno(e),
            OpError::Reply(e) => e.raw_os_error().unwrap_or(libc::EIO),
            OpError::UnknownInode => libc::EBADF,
            OpError::NotFound => libc::ENOENT,
            OpError::NameTooLong => libc::ENAMETOOLONG,
            OpError::NotADirectory => libc::ENOTDIR,
            OpError::IsADirectory => libc::EISDIR,
            OpError::Invalid => libc::EINVAL,
            OpError::NoXattr => libc::ENODATA,
            OpError::BufferTooSmall => libc::ERANGE,
            OpError::PastEnd => libc::ENXIO,
            OpError::PermissionDenied => libc::EACCES,
            OpError::ReadOnly => libc::EROFS,
            OpError::NotSupported => libc::ENOSYS,
        }
    }
}

/// The errno for a reader error: corrupt or undecodable data is `EIO`, a missing path
/// `ENOENT`, a path through a non-directory `ENOTDIR`.
pub fn reader_errno(e: &ReaderError) -> i32 {
    match e {
        ReaderError::Oci(e) => oci_errno(e),
        ReaderError::Format(e) => format_errno(e),
        ReaderError::BadMetadata(_) => libc::EIO,
        ReaderError::UnsupportedVersion(_) => libc::EIO,
        ReaderError::PinMismatch { .. } => libc::EIO,
        ReaderError::Chunk { source, .. } => chunk_errno(source),
        ReaderError::ShortBlob { .. } => libc::EIO,
        ReaderError::ChunkCorrupt(_) => libc::EIO,
        ReaderError::NotFound(_) => libc::ENOENT,
        ReaderError::NotADirectory(_) => libc::ENOTDIR,
        ReaderError::SymlinkLoop(_) => libc::ELOOP,
        ReaderError::ReadAhead(e) => e.raw_os_error().unwrap_or(libc::EIO),
        ReaderError::NoVerityDigest(_) => libc::EIO,
    }
}

fn oci_errno(e: &OciError) -> i32 {
    match e {
        // An I/O error reading a blob keeps its errno (EACCES, EMFILE, ...), except that a
        // vanished file means the image is damaged, not that the path does not exist.
        OciError::Io { source, .. } => match source.raw_os_error() {
            Some(libc::ENOENT) | None => libc::EIO,
            Some(n) => n,
        },
        OciError::NotOciLayout { .. } => libc::EIO,
        OciError::UnknownTag { .. } => libc::ENOENT,
        OciError::BlobMissing(_) => libc::EIO,
        OciError::DigestMismatch { .. } => libc::EIO,
        OciError::TooLarge { .. } => libc::EIO,
        OciError::Truncated { .. } => libc::EIO,
        OciError::BadDocument { .. } => libc::EIO,
        OciError::BadTag(_) => libc::EINVAL,
        // A blob failing its fs-verity requirement is as untrusted as one failing its sha256.
        OciError::Verity { .. } => libc::EIO,
    }
}

fn format_errno(e: &FormatError) -> i32 {
    match e {
        FormatError::Capnp(_)
        | FormatError::UnknownInodeType(_)
        | FormatError::Invalid(_)
        | FormatError::TooLarge(_)
        | FormatError::BadDigest(_) => libc::EIO,
    }
}

fn chunk_errno(e: &ChunkError) -> i32 {
    match e {
        ChunkError::BadSeekable(_)
        | ChunkError::TooLarge { .. }
        | ChunkError::Zstd(_)
        | ChunkError::Io(_) => libc::EIO,
        ChunkError::BadParams(_) => libc::EINVAL,
    }
}

/// The blob a read failed on because its stored data is bad, if that is why it failed.
pub(crate) fn corrupt_blob(e: &ReaderError) -> Option<Digest> {
    match e {
        ReaderError::Chunk { digest, .. } | ReaderError::ShortBlob { digest, .. } => Some(*digest),
        ReaderError::Oci(OciError::DigestMismatch { expected, .. }) => Some(*expected),
        ReaderError::ChunkCorrupt(c) => Some(c.pack),
        ReaderError::Oci(OciError::TooLarge { digest, .. }) => Some(*digest),
        ReaderError::Oci(OciError::Truncated { digest, .. }) => Some(*digest),
        ReaderError::Oci(OciError::BlobMissing(digest)) => Some(*digest),
        ReaderError::Oci(OciError::Verity { digest, .. }) => Some(*digest),
        ReaderError::Oci(_)
        | ReaderError::Format(_)
        | ReaderError::BadMetadata(_)
        | ReaderError::UnsupportedVersion(_)
        | ReaderError::PinMismatch { .. }
        | ReaderError::NotFound(_)
        | ReaderError::NotADirectory(_)
        | ReaderError::SymlinkLoop(_)
        | ReaderError::ReadAhead(_)
        | ReaderError::NoVerityDigest(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn d() -> Digest {
        Digest::of(b"blob")
    }

    #[test]
    fn reader_errors_map_to_errno() {
        let io_err = |n| OciError::Io {
            path: PathBuf::from("/x"),
            source: io::Error::from_raw_os_error(n),
        };
        let cases: Vec<(ReaderError, i32)> = vec![
            (ReaderError::Oci(OciError::BlobMissing(d())), libc::EIO),
            (
                ReaderError::ChunkCorrupt(Box::new(crate::reader::CorruptChunk {
                    pack: d(),
                    offset: 0,
                    expected: d(),
                    actual: Digest::of(b"other"),
                })),
                libc::EIO,
            ),
            (
                ReaderError::Oci(OciError::DigestMismatch {
                    expected: d(),
                    actual: Digest::of(b"other"),
                }),
                libc::EIO,
            ),
            (
                ReaderError::Oci(OciError::TooLarge {
                    digest: d(),
                    size: 2,
                    limit: 1,
                }),
                libc::EIO,
            ),
            (ReaderError::Oci(io_err(libc::EACCES)), libc::EACCES),
            (ReaderError::Oci(io_err(libc::ENOENT)), libc::EIO),
            (
                ReaderError::Oci(OciError::UnknownTag {
                    tag: "t".into(),
                    available: String::new(),
                }),
                libc::ENOENT,
            ),
            (ReaderError::Oci(OciError::BadTag("/".into())), libc::EINVAL),
            (
                ReaderError::Format(FormatError::Invalid("x".into())),
                libc::EIO,
            ),
            (ReaderError::BadMetadata("x".into()), libc::EIO),
            (ReaderError::UnsupportedVersion(9), libc::EIO),
            (
                ReaderError::Chunk {
                    digest: d(),
                    source: ChunkError::BadSeekable("x".into()),
                },
                libc::EIO,
            ),
            (
                ReaderError::ShortBlob {
                    digest: d(),
                    size: 1,
                    end: 2,
                },
                libc::EIO,
            ),
            (ReaderError::NotFound("/a".into()), libc::ENOENT),
            (ReaderError::NotADirectory("/a".into()), libc::ENOTDIR),
            (ReaderError::SymlinkLoop("/a".into()), libc::ELOOP),
            (
                ReaderError::ReadAhead(io::Error::from_raw_os_error(libc::EAGAIN)),
                libc::EAGAIN,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(reader_errno(&e), want, "{e}");
            assert_eq!(OpError::from(e).errno(), want);
        }
    }

    #[test]
    fn local_failures_map_to_errno() {
        let cases = [
            (OpError::UnknownInode, libc::EBADF),
            (OpError::NotFound, libc::ENOENT),
            (OpError::NameTooLong, libc::ENAMETOOLONG),
            (OpError::NotADirectory, libc::ENOTDIR),
            (OpError::IsADirectory, libc::EISDIR),
            (OpError::Invalid, libc::EINVAL),
            (OpError::NoXattr, libc::ENODATA),
            (OpError::BufferTooSmall, libc::ERANGE),
            (OpError::PastEnd, libc::ENXIO),
            (OpError::PermissionDenied, libc::EACCES),
            (OpError::ReadOnly, libc::EROFS),
            (OpError::NotSupported, libc::ENOSYS),
            (
                OpError::Reply(io::Error::from_raw_os_error(libc::ENOSPC)),
                libc::ENOSPC,
            ),
            (OpError::Reply(io::Error::other("x")), libc::EIO),
        ];
        for (e, want) in cases {
            let io: io::Error = e.into();
            assert_eq!(io.raw_os_error(), Some(want));
        }
    }

    #[test]
    fn corrupt_blobs_are_named() {
        let bad = ReaderError::Oci(OciError::DigestMismatch {
            expected: d(),
            actual: Digest::of(b"x"),
        });
        assert_eq!(corrupt_blob(&bad), Some(d()));
        let short = ReaderError::ShortBlob {
            digest: d(),
            size: 0,
            end: 1,
        };
        assert_eq!(corrupt_blob(&short), Some(d()));
        assert_eq!(corrupt_blob(&ReaderError::NotFound("/".into())), None);
        for e in [&bad, &short] {
            assert!(e.is_corruption());
        }
    }
}
