//! Errors of the OCI layout layer.

use std::path::PathBuf;

use crate::format::Digest;

/// What went wrong with an OCI directory.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The directory is not an OCI image layout.
    #[error("{}: not an OCI image layout ({reason})", path.display())]
    NotOciLayout {
        /// The directory.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// No manifest carries this tag.
    #[error("no image tagged {tag:?} (tags: {available})")]
    UnknownTag {
        /// The tag asked for.
        tag: String,
        /// The tags present, comma separated.
        available: String,
    },
    /// A blob named in metadata or a manifest is not present.
    #[error("blob {0} is missing")]
    BlobMissing(Digest),
    /// A blob's bytes do not hash to its name.
    #[error("blob {expected} is corrupt: its contents hash to {actual}")]
    DigestMismatch {
        /// The digest the blob is named by.
        expected: Digest,
        /// The digest of what is stored.
        actual: Digest,
    },
    /// A blob ends before a byte range an image needs from it.
    #[error(
        "blob {digest} is truncated: it ends at byte {size}, but an image needs bytes up to {end}"
    )]
    Truncated {
        /// The blob.
        digest: Digest,
        /// Where it ends.
        size: u64,
        /// The end of the range needed.
        end: u64,
    },
    /// A blob is larger than its descriptor says or than a limit allows.
    #[error("blob {digest} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A JSON document (index or manifest) is malformed.
    #[error("{what}: {reason}")]
    BadDocument {
        /// Which document.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob's fs-verity state is not what the image requires.
    #[error("blob {digest}: {problem}")]
    Verity {
        /// The blob.
        digest: Digest,
        /// What is wrong.
        problem: VerityProblem,
    },
    /// An invalid tag name.
    #[error("invalid tag {0:?}: use letters, digits, '_', '.', '-' (at most 128, not starting with '.' or '-')")]
    BadTag(String),
}

/// How a blob fails an fs-verity requirement.
#[derive(Debug, thiserror::Error)]
pub enum VerityProblem {
    /// Verity is off on the file.
    #[error("fs-verity is not enabled on it (see `puzzlefs enable-fs-verity`)")]
    NotEnabled,
    /// The kernel measures another digest than the image records.
    #[error("its fs-verity digest is {actual}, but the image requires {expected}")]
    Mismatch {
        /// What the image records (hex).
        expected: String,
        /// What the kernel measures (hex).
        actual: String,
    },
    /// Verity is on with another hash than SHA-256.
    #[error("fs-verity is on with a hash other than SHA-256")]
    OtherAlgorithm,
    /// The kernel or the file system cannot do fs-verity.
    #[error("no fs-verity here: {0}")]
    Unsupported(std::io::Error),
}

impl OciError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OciError::Io {
            path: path.into(),
            source,
        }
    }
}
