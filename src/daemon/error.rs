//! The daemon layer's one error type.

use std::io;
use std::path::PathBuf;

/// Everything that can stop the daemon from serving.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The command line is wrong (unknown flag, bad value, missing socket...).
    #[error("{0}")]
    Usage(String),
    /// The shared directory cannot be served.
    #[error("cannot serve {path}: {source}")]
    SharedDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The image cannot be opened.
    #[error("cannot open image: {0}")]
    Image(String),
    /// The vhost-user socket cannot be created or used.
    #[error("vhost-user socket {what}: {source}")]
    Socket {
        /// Which socket operation failed.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// Worker threads or event fds could not be created.
    #[error("cannot start workers: {0}")]
    Workers(io::Error),
    /// The daemon could not confine itself.
    #[error(transparent)]
    Sandbox(#[from] super::SandboxError),
    /// The vhost-user protocol layer failed.
    #[error("vhost-user: {0}")]
    VhostUser(String),
}

impl DaemonError {
    pub(crate) fn socket(what: impl Into<String>, source: io::Error) -> Self {
        DaemonError::Socket {
            what: what.into(),
            source,
        }
    }
}
