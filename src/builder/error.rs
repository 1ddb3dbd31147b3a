//! Errors of the builder.

use std::path::PathBuf;

use crate::chunk::ChunkError;
use crate::format::FormatError;
use crate::oci::OciError;
use crate::reader::ReaderError;

/// Why a build failed. A failed build leaves the OCI directory as it was.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading the source tree failed.
    #[error("{}: {source}", path.display())]
    Source {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The source root is not a directory.
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A file's size changed while it was being read.
    #[error("{}: file changed while building (expected {expected} bytes)", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Size seen when scanning.
        expected: u64,
    },
    /// Writing to the OCI directory failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Encoding metadata failed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Compressing a chunk failed.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The base image could not be read.
    #[error("base image: {0}")]
    Base(#[from] ReaderError),
    /// A bug: the build's own bookkeeping disagrees with itself.
    #[error("internal error: {0}")]
    Internal(String),
    /// Interrupted by the caller (for example on SIGINT).
    #[error("build cancelled")]
    Cancelled,
}
