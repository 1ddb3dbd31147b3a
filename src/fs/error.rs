//! Errors of host mounts (file system operations report errno values instead).

use std::io;
use std::path::PathBuf;

/// Why a host mount or unmount failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The mount point does not exist or is not a directory.
    #[error("cannot mount on {}: {reason}", path.display())]
    BadMountpoint {
        /// The mount point given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Opening `/dev/fuse` or the mount itself failed.
    #[error("cannot mount on {}: {reason}", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What the FUSE transport reported.
        reason: String,
    },
    /// Starting the threads that serve the mount failed.
    #[error("cannot serve {}: {error}", path.display())]
    Serve {
        /// The mount point.
        path: PathBuf,
        /// The underlying error (part of the message, not a separate cause, so that
        /// `{:#}` prints it once).
        error: io::Error,
    },
    /// The background process that serves the mount failed to start or to mount.
    #[error("{0}")]
    Background(String),
    /// Nothing is mounted there.
    #[error("{}: not mounted", .0.display())]
    NotMounted(PathBuf),
    /// The kernel (or `fusermount3`) refused to unmount.
    #[error("cannot unmount {}: {reason}", path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
