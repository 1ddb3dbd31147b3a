//! The mount layer's one error type, and the class of each error (whose fault it is), which
//! the API turns into an HTTP status.

use std::io;
use std::path::PathBuf;

/// Whose fault a [`MountError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is wrong (bad mount point, fs_type, source or config; an image its pin
    /// refuses).
    BadRequest,
    /// The request conflicts with what is mounted (already mounted, nested, no free slot).
    Conflict,
    /// The mount point names nothing mounted.
    NotFound,
    /// The daemon failed.
    Internal,
}

/// Why a mount or unmount did not happen. Nothing is changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point is not an absolute, normalized path.
    #[error("invalid mount point {path:?}: {reason}")]
    BadMountpoint {
        /// As given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Something is mounted there already.
    #[error("{0} is already a mount point")]
    AlreadyMounted(String),
    /// The mount point is inside another mount (mounts do not nest).
    #[error("{path} is inside the mount at {mount}")]
    Nested {
        /// The requested mount point.
        path: String,
        /// The mount it would be inside.
        mount: String,
    },
    /// Other mounts are below the mount point (they would be hidden).
    #[error("{0} has mounts below it")]
    MountsBelow(String),
    /// Nothing is mounted there.
    #[error("{0} is not a mount point")]
    NotMounted(String),
    /// Every slot is in use.
    #[error("all {0} mount slots are in use")]
    NoFreeSlot(usize),
    /// The fs_type is not one this daemon mounts.
    #[error("unknown fs_type {0:?} (expected passthrough_fs, puzzlefs or rafs)")]
    UnknownFsType(String),
    /// The source does not say what to mount.
    #[error("invalid source {source_text:?}: {reason}")]
    BadSource {
        /// As given.
        source_text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config is not valid for this fs_type.
    #[error("invalid config: {0}")]
    BadConfig(String),
    /// The source cannot be reached or is not what its fs_type needs.
    #[error("cannot open {path}: {source}")]
    Source {
        /// The host path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The image cannot be served (not a PuzzleFS image, corrupt, refused by its pin).
    #[error("cannot mount image: {0}")]
    Image(String),
    /// The source lies outside what the daemon may reach.
    #[error("{path} is outside the directories this daemon may mount from ({allowed})")]
    Forbidden {
        /// The host path.
        path: PathBuf,
        /// What is allowed.
        allowed: String,
    },
    /// The daemon failed (a file system refused to initialise, the serving process is
    /// gone...).
    #[error("{0}")]
    Internal(String),
}

impl MountError {
    /// Whose fault it is.
    pub fn class(&self) -> ErrorClass {
        match self {
            MountError::BadMountpoint { .. }
            | MountError::UnknownFsType(_)
            | MountError::BadSource { .. }
            | MountError::BadConfig(_)
            | MountError::Source { .. }
            | MountError::Image(_)
            | MountError::Forbidden { .. } => ErrorClass::BadRequest,
            MountError::AlreadyMounted(_)
            | MountError::Nested { .. }
            | MountError::MountsBelow(_)
            | MountError::NoFreeSlot(_) => ErrorClass::Conflict,
            MountError::NotMounted(_) => ErrorClass::NotFound,
            MountError::Internal(_) => ErrorClass::Internal,
        }
    }
}
