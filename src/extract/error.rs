//! Errors of the extraction layer.

use std::io;
use std::path::PathBuf;

use crate::reader::ReaderError;

/// Why an extraction failed. A failed extraction leaves no destination directory behind and
/// writes nothing outside it.
///
/// Each message already includes its cause (the field is not also reported as
/// [`std::error::Error::source`], so chained printing does not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The destination cannot be used (exists and is not empty, is not a directory, ...).
    #[error("{}: {reason}", dest.display())]
    Destination {
        /// The destination asked for.
        dest: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file operation on the destination or its parent failed (before or after the tree
    /// itself is written).
    #[error("{}: {error}", path.display())]
    DestinationIo {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// Creating or setting up an entry of the image failed.
    #[error("{path}: cannot {op}: {error}")]
    Io {
        /// Path of the entry in the image (`/`-rooted).
        path: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        error: io::Error,
    },
    /// A file's data could not be read or failed verification.
    #[error("{path}: {error}")]
    Read {
        /// Path of the file in the image.
        path: String,
        /// What went wrong in the reader.
        error: ReaderError,
    },
    /// A directory entry's name could escape or clobber the destination.
    #[error("{dir}: refusing entry {name:?}: {why}")]
    UnsafeName {
        /// Path of the directory holding the entry.
        dir: String,
        /// The name, shown lossily.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A device node, which only root can create.
    #[error(
        "{path}: device nodes can only be created by root \
         (run as root, or skip devices with --skip-devices)"
    )]
    DeviceNeedsRoot {
        /// Path of the device in the image.
        path: String,
    },
    /// Directories nested deeper than extraction allows.
    #[error("{path}: directories nested deeper than {limit} levels")]
    TooDeep {
        /// Path of the directory that is too deep.
        path: String,
        /// The limit.
        limit: usize,
    },
    /// A file yielded a different number of bytes than its size.
    #[error("{path}: image gives {actual} bytes of data for a file of {expected} bytes")]
    SizeMismatch {
        /// Path of the file in the image.
        path: String,
        /// Its size in the metadata.
        expected: u64,
        /// Bytes its extents produced.
        actual: u64,
    },
    /// Extraction failed and the partial tree could not be removed either.
    #[error("{error} (and the partial tree {} could not be removed: {cleanup})", temp.display())]
    Cleanup {
        /// Why the extraction failed.
        error: Box<ExtractError>,
        /// The temporary directory left behind.
        temp: PathBuf,
        /// Why removing it failed.
        cleanup: io::Error,
    },
}

impl ExtractError {
    pub(crate) fn io(path: &[u8], op: &'static str, source: impl Into<io::Error>) -> Self {
        ExtractError::Io {
            path: show(path),
            op,
            error: source.into(),
        }
    }

    /// Whether the error means stored data failed verification or decoding.
    pub fn is_corruption(&self) -> bool {
        match self {
            ExtractError::Read { error, .. } => error.is_corruption(),
            ExtractError::Cleanup { error, .. } => error.is_corruption(),
            _ => false,
        }
    }
}

/// A `map_err` adapter: an I/O error while doing `op` on the entry at `path`.
pub(crate) fn on<'p, E: Into<io::Error>>(
    path: &'p [u8],
    op: &'static str,
) -> impl FnOnce(E) -> ExtractError + 'p {
    move |e| ExtractError::io(path, op, e)
}

/// An image path for messages: `/`-rooted, non-UTF-8 bytes replaced.
pub(crate) fn show(path: &[u8]) -> String {
    let mut s = String::with_capacity(path.len() + 1);
    s.push('/');
    s.push_str(&String::from_utf8_lossy(path));
    s
}
