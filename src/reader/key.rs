//! [`ChunkKey`]: what a chunk's verified contents are a function of, and so what caches of
//! them are keyed by.

use super::ChunkInfo;
use crate::format::Digest;

/// A blob's digest and how it is stored. The same stored bytes mean different contents when
/// one image says they are zstd-compressed and another says they are not, so caches shared
/// by several images key by both: a hostile image cannot plant contents another image reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey {
    /// sha256 of the stored bytes.
    pub digest: Digest,
    /// Stored compressed (the contents are its decompression). A seekable blob and bare zstd
    /// frames (a chunk in a pack) decode alike, since zstd skips the seek table's skippable
    /// frame, so one flag covers both.
    pub compressed: bool,
}

impl ChunkKey {
    /// The key of a blob with `digest`, stored compressed or not.
    pub fn new(digest: Digest, compressed: bool) -> Self {
        ChunkKey { digest, compressed }
    }
}

impl From<&ChunkInfo> for ChunkKey {
    fn from(blob: &ChunkInfo) -> Self {
        ChunkKey::new(blob.digest, blob.compressed)
    }
}
