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
    #[error("{registry}: {method} {path}: {status}{}{hint}", detail(.code, .message))]
    Status {
        /// host[:port].
        registry: String,
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
        /// The HTTP status, with its reason phrase.
        status: String,
        /// The registry's error code (`BLOB_UNKNOWN`, ...), if it sent one.
        code: Option<String>,
        /// The registry's message, if it sent one.
        message: Option<String>,
        /// What the status usually means for the user, with a leading separator.
        hint: &'static str,
    },
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
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io {
            path: path.into(),
            source,
        }
    }

    /// The HTTP status of a [`RegistryError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => status.split(' ').next()?.parse().ok(),
            _ => None,
        }
    }
}

/// What a status usually means, for the one line the user reads.
pub(crate) fn hint_for(status: u16) -> &'static str {
    match status {
        401 => "; the registry wants credentials: give --creds USER:PASS or an auth file (--authfile)",
        403 => "; these credentials may not do this",
        404 => "; no such repository, tag or blob",
        413 => "; the registry refuses a body this large",
        429 => "; the registry is rate limiting and kept refusing after retries",
        500..=599 => "; the registry failed and kept failing after retries",
        _ => "",
    }
}
