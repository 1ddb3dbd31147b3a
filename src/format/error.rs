//! Errors of the metadata layer.

/// Why metadata could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The Cap'n Proto message is malformed or exceeds the traversal and nesting limits.
    #[error("malformed metadata: {0}")]
    Capnp(#[from] capnp::Error),
    /// A union discriminant this reader does not know.
    #[error("malformed metadata: unknown inode type {0}")]
    UnknownInodeType(u16),
    /// A field holds a value that cannot be right.
    #[error("malformed metadata: {0}")]
    Invalid(String),
    /// The metadata is larger than the configured limits allow.
    #[error("metadata too large: {0}")]
    TooLarge(String),
    /// A digest string that is not `sha256:` followed by 64 hex digits.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    BadDigest(String),
}
