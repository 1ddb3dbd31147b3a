//! What the API drives: the [`Control`] trait, implemented by the daemon.

use super::{ApiError, DaemonInfo, MountRequest};
use crate::mounts::MetricsSnapshot;

/// The daemon as the API sees it: in-process over the mount table, or over a control
/// channel to a sandboxed child. Every method is blocking and may take seconds (opening an
/// image, a round trip to the child); the server calls each on tokio's blocking pool, so
/// a slow mount never holds up `GET /api/v1/daemon` or the metrics, and calls of any kind
/// may run concurrently (serialize in the implementation where the table needs it).
///
/// Mount points arrive validated and canonical (see [`validate_mountpoint`]): absolute,
/// UTF-8, no `.`/`..`/empty components, no trailing slash, no control characters, at most
/// 4096 bytes. `fs_type`, `source` and `config` arrive as the client sent them: refusing an
/// unknown type or an unusable source is the implementation's call
/// ([`ApiError::BadRequest`] for those). A panic is answered as a 500 and the server keeps
/// serving. A call whose client hung up still runs to its end.
///
/// [`validate_mountpoint`]: super::validate_mountpoint
pub trait Control: Send + Sync + 'static {
    /// The daemon's identity and state, for `GET /api/v1/daemon`. Kata polls this until
    /// `state` is [`Running`](super::DaemonState::Running).
    fn info(&self) -> DaemonInfo;

    /// Mounts `request` at `mountpoint` (`POST /api/v1/mount`). Typical refusals:
    /// [`ApiError::Conflict`] when the mount point is taken, [`ApiError::BadRequest`] for an
    /// unknown `fs_type` or a source that cannot be opened.
    fn mount(&self, mountpoint: &str, request: MountRequest) -> Result<(), ApiError>;

    /// Unmounts what is at `mountpoint` (`DELETE /api/v1/mount`);
    /// [`ApiError::NotFound`] when nothing is.
    fn umount(&self, mountpoint: &str) -> Result<(), ApiError>;

    /// Everything counted, for `GET /api/v1/metrics` and `GET /metrics`.
    fn metrics(&self) -> Result<MetricsSnapshot, ApiError>;
}
