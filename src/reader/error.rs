//! Errors of the reader layer.

use crate::chunk::ChunkError;
use crate::format::{Digest, FormatError};
use crate::oci::OciError;

/// Why an image could not be opened or a file not read.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// The OCI layout, index, manifest or a blob.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// The metadata blob does not decode.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The metadata decodes but describes an impossible or hostile tree.
    #[error("invalid image metadata: {0}")]
    BadMetadata(String),
    /// Metadata version other than the one PuzzleFS images carry.
    #[error("unsupported PuzzleFS manifest version {0} (expected 3)")]
    UnsupportedVersion(u64),
    /// The tag resolves to a different manifest than the one pinned.
    #[error("manifest digest is {actual}, but {expected} was required")]
    PinMismatch {
        /// The pinned digest.
        expected: Digest,
        /// What the tag points at.
        actual: Digest,
    },
    /// fs-verity is required, but the image records no fs-verity digest for a blob.
    #[error("fs-verity required, but the image records no fs-verity digest for {0}")]
    NoVerityDigest(String),
    /// A data blob could not be decoded.
    #[error("blob {digest}: {source}")]
    Chunk {
        /// The blob.
        digest: Digest,
        /// What is wrong with it.
        source: ChunkError,
    },
    /// A chunk read from a pack does not hash to the digest the image records for it.
    #[error("{0}")]
    ChunkCorrupt(Box<CorruptChunk>),
    /// A file extent points past the end of its blob.
    #[error("blob {digest} is {size} bytes but a file needs bytes up to {end}")]
    ShortBlob {
        /// The blob.
        digest: Digest,
        /// Its uncompressed size.
        size: u64,
        /// The end offset a file refers to.
        end: u64,
    },
    /// A path that does not exist in the image.
    #[error("{0}: no such file or directory in the image")]
    NotFound(String),
    /// A path component that is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// Too many symbolic links while resolving a path.
    #[error("{0}: too many levels of symbolic links")]
    SymlinkLoop(String),
    /// The read-ahead thread could not be started.
    #[error("starting the read-ahead thread: {0}")]
    ReadAhead(std::io::Error),
}

impl ReaderError {
    /// Whether the error means stored data failed verification or decoding (as opposed to
    /// something missing or a bad request).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            ReaderError::Chunk { .. }
                | ReaderError::ChunkCorrupt(_)
                | ReaderError::ShortBlob { .. }
                | ReaderError::Oci(OciError::DigestMismatch { .. })
                | ReaderError::Oci(OciError::TooLarge { .. })
                | ReaderError::Oci(OciError::Truncated { .. })
                | ReaderError::Oci(OciError::BlobMissing(_))
        )
    }
}

/// A chunk of a pack whose stored bytes do not hash to its recorded digest.
#[derive(Debug, thiserror::Error)]
#[error("pack {pack} is corrupt: its chunk at byte {offset} hashes to {actual}, not {expected}")]
pub struct CorruptChunk {
    /// The pack blob.
    pub pack: Digest,
    /// Where the chunk's stored bytes start in it.
    pub offset: u64,
    /// The chunk's recorded digest.
    pub expected: Digest,
    /// The digest of what is stored.
    pub actual: Digest,
}
