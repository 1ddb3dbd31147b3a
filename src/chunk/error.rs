//! Errors of the chunk layer.

/// A chunk blob that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// Not in the zstd seekable format, or its seek table disagrees with its frames.
    #[error("bad zstd seekable blob: {0}")]
    BadSeekable(String),
    /// Decompressed size above the allowed maximum.
    #[error("decompressed size {size} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared or actual size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Chunking or compression parameters out of range.
    #[error("bad chunking parameters: {0}")]
    BadParams(String),
    /// zstd failed.
    #[error("zstd: {0}")]
    Zstd(std::io::Error),
    /// Reading the data stream failed.
    #[error("reading file data: {0}")]
    Io(#[from] std::io::Error),
}
