//! The API layer's one error type: what a request or a [`Control`](super::Control) call can
//! fail with, the HTTP status each kind answers, and the JSON body nydusd's clients parse.

use hyper::StatusCode;
use serde::Serialize;

/// Why a request was not carried out. Each variant is one HTTP status; the text is the
/// `message` of the JSON error body, which Kata turns into its own error, so write it for the
/// person who reads Kata's log ("mountpoint /x is already mounted", not "EEXIST").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad query, bad JSON, an invalid mount point, an unknown
    /// file-system type, a source that cannot be served. 400.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing at that path, or no mount at that mount point. 404.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with that method. 405 (the route adds `Allow`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body was not complete in time. 408.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request clashes with the current state: the mount point is taken, the table is
    /// full, a mount is already under way there. 409.
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit. 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The daemon failed: I/O, a crashed worker, a lost control channel. 500.
    #[error("{0}")]
    Internal(String),
    /// A nydusd feature this daemon does not provide (nydusd answers 501 for its own
    /// `Unsupported`). 501.
    #[error("{0}")]
    Unsupported(String),
    /// The daemon cannot take the request now (not ready yet, shutting down). 503.
    #[error("{0}")]
    Unavailable(String),
}

/// The body of every error response: `{"code": "...", "message": "..."}` (nydusd's
/// `ErrorMessage`; nydusd always sends `"code": "UNDEFINED"`, we send the kind).
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `code` field of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BAD_REQUEST",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::RequestTimeout(_) => "REQUEST_TIMEOUT",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::Internal(_) => "INTERNAL",
            ApiError::Unsupported(_) => "UNSUPPORTED",
            ApiError::Unavailable(_) => "UNAVAILABLE",
        }
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::NotFound(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::RequestTimeout(m)
            | ApiError::Conflict(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::Internal(m)
            | ApiError::Unsupported(m)
            | ApiError::Unavailable(m) => m,
        }
    }

    /// The JSON body: `{"code":"...","message":"..."}`.
    pub fn to_json(&self) -> String {
        let body = ErrorBody {
            code: self.code(),
            message: self.message(),
        };
        // Two strings cannot fail to serialize.
        serde_json::to_string(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status_and_code() {
        let m = || "m".to_string();
        let cases = [
            (ApiError::BadRequest(m()), 400, "BAD_REQUEST"),
            (ApiError::NotFound(m()), 404, "NOT_FOUND"),
            (ApiError::MethodNotAllowed(m()), 405, "METHOD_NOT_ALLOWED"),
            (ApiError::RequestTimeout(m()), 408, "REQUEST_TIMEOUT"),
            (ApiError::Conflict(m()), 409, "CONFLICT"),
            (ApiError::PayloadTooLarge(m()), 413, "PAYLOAD_TOO_LARGE"),
            (ApiError::Internal(m()), 500, "INTERNAL"),
            (ApiError::Unsupported(m()), 501, "UNSUPPORTED"),
            (ApiError::Unavailable(m()), 503, "UNAVAILABLE"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.code(), code);
            assert_eq!(e.message(), "m");
            assert_eq!(e.to_string(), "m");
        }
    }

    #[test]
    fn json_body_is_code_and_message_escaped() {
        let e = ApiError::Conflict("mountpoint \"/a\" is\nalready mounted".into());
        assert_eq!(
            e.to_json(),
            r#"{"code":"CONFLICT","message":"mountpoint \"/a\" is\nalready mounted"}"#
        );
        // What Kata's Go client does with it: unmarshal into {Code, Message}.
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["message"], "mountpoint \"/a\" is\nalready mounted");
        assert_eq!(v.as_object().unwrap().len(), 2);
    }
}
