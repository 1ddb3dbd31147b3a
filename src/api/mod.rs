//! The nydusd-compatible HTTP API on a unix socket, so Kata's nydus mode
//! (`shared_fs = "virtio-fs-nydus"`) can drive the daemon as it drives nydusd.
//!
//! The layer knows nothing of processes, sandboxes or vhost-user: it turns HTTP/1.1 requests
//! into calls of a [`Control`] (the daemon implements it) and their results into the status
//! codes and JSON bodies nydusd's clients expect. The daemon [`bind`]s the socket (before it
//! confines itself; no runtime needed), hands the listener to tokio and runs [`serve`].
//!
//! # Routes
//!
//! | request | success | body |
//! | --- | --- | --- |
//! | `GET /api/v1/daemon` | 200 | [`DaemonInfo`] as JSON (`version` an object, `state` `"RUNNING"`...) |
//! | `POST /api/v1/mount?mountpoint=/P` + [`MountRequest`] JSON | 204 | none |
//! | `DELETE /api/v1/mount?mountpoint=/P` | 204 | none |
//! | `GET /api/v1/metrics` | 200 | the [`MetricsSnapshot`](crate::mounts::MetricsSnapshot) as JSON |
//! | `GET /api/v1/metrics/blobcache` | 200 | its `chunk_store` part as JSON |
//! | `GET /metrics` | 200 | Prometheus text 0.0.4 ([`render_prometheus`]) |
//!
//! Every failure answers `{"code": "...", "message": "..."}` (`application/json`) with the
//! status of its [`ApiError`]: 400 for a bad query, mount point or body, 404 for an unknown
//! path (or what the [`Control`] did not find), 405 for a wrong method (with `Allow`;
//! `PUT /api/v1/mount`, nydusd's remount, is one), 408 for a body too slow, 409/400/500 as
//! the [`Control`] decides, 413 for a body over the limit (refused on its `Content-Length`
//! before it is read), 500 if a [`Control`] call panics, 501 for nydusd routes this daemon
//! does not provide (`/api/v1/daemon/events`, `/api/v1/metrics/files`...). nydusd answers
//! 500 for every failure; Kata only tests for 204 and reads `message`, so exact 4xx codes
//! cost nothing.
//!
//! # Contract
//!
//! - The mount point is taken from the query raw (Kata does not encode it) or
//!   percent-encoded, and validated here ([`validate_mountpoint`]); the [`Control`] receives
//!   it canonical.
//! - [`Control`] methods are blocking and run on tokio's blocking pool: a slow mount never
//!   stalls `GET /api/v1/daemon` or the metrics. Calls may run concurrently.
//! - Connections are served concurrently (up to [`ServerConfig::max_connections`]), with
//!   keep-alive; a connection idle or slow to send its headers past
//!   [`ServerConfig::header_read_timeout`] is closed; a malformed request gets hyper's 400
//!   (or 431 for huge headers; hyper's own replies have an empty body, the request never
//!   reaches the routes) and its connection is closed. Nothing a client sends can
//!   panic the server or stop it serving others.

mod control;
mod error;
mod prometheus;
mod query;
mod routes;
mod server;
mod types;

pub use control::Control;
pub use error::ApiError;
pub use prometheus::{render as render_prometheus, CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE};
pub use query::{validate as validate_mountpoint, MAX_COMPONENT_LEN, MAX_MOUNTPOINT_LEN};
pub use server::{bind, serve, serve_with, ServerConfig};
pub use types::{BackendInfo, BuildInfo, DaemonInfo, DaemonState, MountRequest};
