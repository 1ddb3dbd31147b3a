//! The one error type of the front end: protocol, memory, FUSE and data-check failures.

use std::io;

/// Everything that can go wrong while driving a vhost-user-fs back end.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A vhost-user message failed (the back end refused it, or the socket broke).
    #[error("vhost-user {step}: {source}")]
    VhostUser {
        step: String,
        #[source]
        source: vhost::Error,
    },
    /// The back end lacks something this run needs.
    #[error("back end does not support {0}")]
    Unsupported(String),
    /// Creating or mapping guest memory, or an eventfd, failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Guest memory access failed (a bug in the front end, never the back end's doing).
    #[error("guest memory: {0}")]
    Memory(String),
    /// The back end answered a FUSE request with an error.
    #[error("{op} {what}: errno {errno} ({})", io::Error::from_raw_os_error(*.errno))]
    Fuse {
        op: &'static str,
        what: String,
        errno: i32,
    },
    /// The back end's answer was malformed.
    #[error("bad reply to {op}: {why}")]
    BadReply { op: &'static str, why: String },
    /// No completion arrived in time: the back end hung, died, or dropped a request.
    /// `unanswered` names them (queue, descriptor, FUSE unique, opcode, age).
    #[error(
        "no completion within {secs} s ({in_flight} requests in flight); back end {state}; \
         unanswered: {unanswered}"
    )]
    Timeout {
        secs: u64,
        in_flight: usize,
        state: &'static str,
        unanswered: String,
    },
    /// `--verify` found differences between the served tree and the source tree.
    #[error("{count} differences from the source tree, first ones:\n{first}")]
    Mismatch { count: usize, first: String },
    /// A wrong option or combination of options.
    #[error("{0}")]
    Usage(String),
}

impl FrontendError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        FrontendError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn vhost(step: impl Into<String>, source: vhost::Error) -> Self {
        FrontendError::VhostUser {
            step: step.into(),
            source,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T> = std::result::Result<T, FrontendError>;
