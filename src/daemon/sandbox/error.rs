//! The sandbox layer's one error type.

use std::io;
use std::path::PathBuf;

/// Why the daemon could not confine itself (it then refuses to serve).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call needed to build the sandbox failed.
    #[error("sandbox: cannot {what}: {source}")]
    Setup {
        /// The step that failed.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// The directory to confine the daemon to is unusable.
    #[error("sandbox: cannot confine to {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Other threads exist, so forking into new namespaces would be unsafe.
    #[error("sandbox: {0} threads are running; the sandbox must be entered before any starts")]
    Threads(usize),
    /// The supervising parent died before the daemon was set up.
    #[error("sandbox: the supervising process is gone")]
    SupervisorGone,
    /// The seccomp filter could not be built or loaded.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

impl SandboxError {
    /// `map_err` helper: names the failed step (works for `io::Error` and rustix's `Errno`).
    pub(crate) fn setup<E: Into<io::Error>>(what: &str) -> impl FnOnce(E) -> SandboxError + '_ {
        move |source| SandboxError::Setup {
            what: what.to_string(),
            source: source.into(),
        }
    }
}
