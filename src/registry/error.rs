//! Errors of the registry layer: references, credentials, HTTP, and what a registry sent.

use std::path::PathBuf;

use crate::format::Digest;
use crate::oci::OciError;

/// What went wrong talking to a registry or moving an image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// An image location that does not parse.
    #[error("bad image location {location:?}: {reason}")]
    BadLocation {
        /// What was given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry answered a request with an error status.
    #[error("{0}")]
    Status(Box<StatusError>),
    /// The request could not be made or its answer not read (connection, TLS, timeout).
    #[error("{registry}: {what}: {}", chain(.source))]
    Http {
        /// host[:port].
        registry: String,
        /// What was being done.
        what: String,
        /// The underlying error.
        source: reqwest::Error,
    },
    /// The registry broke the protocol (no upload location, an unparsable challenge, ...).
    #[error("{registry}: {reason}")]
    Protocol {
        /// host[:port].
        registry: String,
        /// What it did wrong.
        reason: String,
    },
    /// A blob's bytes are not what its digest or size says; nothing of it was kept.
    #[error("blob {digest} from {from}: {problem}; nothing of it was kept")]
    BadBlob {
        /// Where it came from.
        from: String,
        /// The blob.
        digest: Digest,
        /// How it differs.
        problem: String,
    },
    /// A manifest that cannot be used.
    #[error("manifest of {image}: {reason}")]
    BadManifest {
        /// The image.
        image: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Credentials that cannot be read or used.
    #[error("credentials: {0}")]
    Credentials(String),
    /// TLS configuration (`--cert-dir`) that cannot be used.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The local layout refused something.
    #[error(transparent)]
    Oci(#[from] OciError),
}

/// An error status a registry answered, with what it said about it.
#[derive(Debug)]
pub struct StatusError {
    /// host[:port].
    pub registry: String,
    /// The request's method.
    pub method: String,
    /// The request's path.
    pub path: String,
    /// The HTTP status.
    pub status: u16,
    /// The registry's error code (`BLOB_UNKNOWN`, ...), if it sent one.
    pub code: Option<String>,
    /// The registry's message, if it sent one.
    pub message: Option<String>,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        write!(
            f,
            "{}: {} {}: {}{reason}{}{}",
            self.registry,
            self.method,
            self.path,
            self.status,
            detail(&self.code, &self.message),
            hint_for(self.status)
        )
    }
}

fn detail(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

/// reqwest's errors say little at the top ("error sending request"); the cause is below.
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl RegistryError {
    /// A received blob that failed to commit: a digest mismatch names where it came from.
    pub(crate) fn from_commit(e: OciError, from: String) -> Self {
        match e {
            OciError::DigestMismatch { expected, actual } => RegistryError::BadBlob {
                from,
                digest: expected,
                problem: format!("its bytes hash to {actual}"),
            },
            other => other.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io {
            path: path.into(),
            source,
        }
    }

    /// The HTTP status of a [`RegistryError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status(s) => Some(s.status),
            _ => None,
        }
    }
}

/// What a status usually means, for the one line the user reads.
fn hint_for(status: u16) -> &'static str {
    match status {
        401 => {
            "; the registry wants credentials: give --creds USER:PASS or an auth file (--authfile)"
        }
        403 => "; these credentials may not do this",
        404 => "; no such repository, tag or blob",
        413 => "; the registry refuses a body this large",
        429 => "; the registry is rate limiting and kept refusing after retries",
        500..=599 => "; the registry failed and kept failing after retries",
        _ => "",
    }
}
