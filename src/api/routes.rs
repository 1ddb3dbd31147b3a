//! Requests to responses: the route table, the handlers, and the bounded body reader.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::{prometheus, query, ApiError, Control, MountRequest};

/// The limits a handler applies to one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest body taken.
    pub max_body_bytes: usize,
    /// Longest time to wait for the whole body.
    pub body_read_timeout: Duration,
}

/// What every handler needs.
pub(crate) struct Ctx {
    pub control: Arc<dyn Control>,
    pub limits: Limits,
}

/// nydusd routes this daemon does not provide: 501 rather than 404, so a client learns the
/// feature is missing, not that it mistyped.
const NYDUSD_ONLY: &[&str] = &[
    "/api/v1/daemon/events",
    "/api/v1/daemon/backend",
    "/api/v1/daemon/start",
    "/api/v1/daemon/exit",
    "/api/v1/daemon/fuse/sendfd",
    "/api/v1/daemon/fuse/takeover",
    "/api/v1/daemon/fuse/resend",
    "/api/v1/metrics/files",
    "/api/v1/metrics/pattern",
    "/api/v1/metrics/backend",
    "/api/v1/metrics/inflight",
    "/api/v2/daemon",
    "/api/v2/blobs",
];

type Reply = Response<Full<Bytes>>;

/// Answers one request. Never fails: every error becomes its status and JSON body.
pub(crate) async fn handle<B>(req: Request<B>, ctx: &Ctx) -> Reply
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let reply = route(req, ctx).await.unwrap_or_else(error_reply);
    let status = reply.status();
    if status.is_server_error() {
        log::warn!("api: {method} {path} -> {status}");
    } else {
        log::debug!("api: {method} {path} -> {status}");
    }
    reply
}

async fn route<B>(req: Request<B>, ctx: &Ctx) -> Result<Reply, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let m = req.method();
    match req.uri().path() {
        "/api/v1/daemon" => match *m {
            Method::GET => daemon_info(ctx).await,
            _ => not_allowed(m, "/api/v1/daemon", "GET"),
        },
        "/api/v1/mount" => match *m {
            Method::POST => mount(req, ctx).await,
            Method::DELETE => umount(req, ctx).await,
            Method::PUT => Ok(with_allow(
                ApiError::MethodNotAllowed(
                    "remounting (PUT /api/v1/mount) is not supported: DELETE, then POST".into(),
                ),
                "POST, DELETE",
            )),
            _ => not_allowed(m, "/api/v1/mount", "POST, DELETE"),
        },
        "/api/v1/metrics" => match *m {
            Method::GET => metrics_json(ctx).await,
            _ => not_allowed(m, "/api/v1/metrics", "GET"),
        },
        "/api/v1/metrics/blobcache" => match *m {
            Method::GET => chunk_store_json(ctx).await,
            _ => not_allowed(m, "/api/v1/metrics/blobcache", "GET"),
        },
        "/metrics" => match *m {
            Method::GET => metrics_text(ctx).await,
            _ => not_allowed(m, "/metrics", "GET"),
        },
        p if NYDUSD_ONLY.contains(&p) => Err(ApiError::Unsupported(format!(
            "nydusd's {p} is not provided by this daemon"
        ))),
        p => Err(ApiError::NotFound(format!("no such path: {p}"))),
    }
}

/// A 405 naming the methods `path` takes.
fn not_allowed(m: &Method, path: &str, allow: &'static str) -> Result<Reply, ApiError> {
    let e = ApiError::MethodNotAllowed(format!("{m} is not allowed on {path} (only {allow})"));
    Ok(with_allow(e, allow))
}

fn with_allow(e: ApiError, allow: &'static str) -> Reply {
    let mut r = error_reply(e);
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

async fn daemon_info(ctx: &Ctx) -> Result<Reply, ApiError> {
    let control = ctx.control.clone();
    let info = blocking("daemon info", move || Ok(control.info())).await?;
    json_reply(&info)
}

async fn mount<B>(req: Request<B>, ctx: &Ctx) -> Result<Reply, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mountpoint = query::mountpoint(req.uri().query())?;
    let body = read_body(req, ctx.limits).await?;
    let request: MountRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid mount request body: {e}")))?;
    let control = ctx.control.clone();
    let what = format!("mount at {mountpoint}");
    blocking(&what, move || control.mount(&mountpoint, request)).await?;
    Ok(no_content())
}

async fn umount<B>(req: Request<B>, ctx: &Ctx) -> Result<Reply, ApiError> {
    let mountpoint = query::mountpoint(req.uri().query())?;
    let control = ctx.control.clone();
    let what = format!("umount of {mountpoint}");
    blocking(&what, move || control.umount(&mountpoint)).await?;
    Ok(no_content())
}

async fn metrics_json(ctx: &Ctx) -> Result<Reply, ApiError> {
    let control = ctx.control.clone();
    let snapshot = blocking("metrics", move || control.metrics()).await?;
    json_reply(&snapshot)
}

async fn chunk_store_json(ctx: &Ctx) -> Result<Reply, ApiError> {
    let control = ctx.control.clone();
    let snapshot = blocking("metrics", move || control.metrics()).await?;
    json_reply(&snapshot.chunk_store)
}

async fn metrics_text(ctx: &Ctx) -> Result<Reply, ApiError> {
    let control = ctx.control.clone();
    let snapshot = blocking("metrics", move || control.metrics()).await?;
    let text = prometheus::render(&snapshot);
    Ok(reply(
        StatusCode::OK,
        Some(prometheus::CONTENT_TYPE),
        text.into(),
    ))
}

/// Runs a [`Control`] call on the blocking pool; a panic there is a 500.
async fn blocking<T, F>(what: &str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(ApiError::Internal(format!(
                "{what} failed: internal error ({why})"
            )))
        }
        Err(_) => Err(ApiError::Internal(format!("{what} was cancelled"))),
    }
}

/// The whole body, at most `limits.max_body_bytes` of it, within `limits.body_read_timeout`.
/// A declared `Content-Length` over the limit is refused before reading a byte (and before
/// hyper sends `100 Continue` to a client that asked for it).
async fn read_body<B>(req: Request<B>, limits: Limits) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body is larger than {} bytes",
            limits.max_body_bytes
        ))
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "request body not received within {} s",
            limits.body_read_timeout.as_secs_f64()
        ))),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "request body could not be read: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn json_reply<T: serde::Serialize>(v: &T) -> Result<Reply, ApiError> {
    let body = serde_json::to_vec(v)
        .map_err(|e| ApiError::Internal(format!("cannot serialize the reply: {e}")))?;
    Ok(reply(StatusCode::OK, Some("application/json"), body.into()))
}

fn no_content() -> Reply {
    reply(StatusCode::NO_CONTENT, None, Bytes::new())
}

fn reply(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

/// An error as its status and `{"code","message"}` body.
fn error_reply(e: ApiError) -> Reply {
    let mut r = reply(e.status(), Some("application/json"), e.to_json().into());
    // The rest of the body is unread: this connection cannot be reused.
    if matches!(
        e,
        ApiError::PayloadTooLarge(_) | ApiError::RequestTimeout(_)
    ) {
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::Frame;

    use super::*;
    use crate::mounts::{
        ChunkStoreMetrics, Histogram, MetricsSnapshot, MountMetrics, Op, OpMetrics,
    };

    struct Fixed;

    impl Control for Fixed {
        fn info(&self) -> super::super::DaemonInfo {
            super::super::DaemonInfo::running()
        }
        fn mount(&self, _: &str, _: MountRequest) -> Result<(), ApiError> {
            Ok(())
        }
        fn umount(&self, _: &str) -> Result<(), ApiError> {
            Ok(())
        }
        fn metrics(&self) -> Result<MetricsSnapshot, ApiError> {
            let m = |mp: &str, ops| MountMetrics {
                mountpoint: mp.into(),
                fs_type: "puzzlefs".into(),
                source: "oci:tag".into(),
                slot: 3,
                generation: 1,
                ops,
                bytes_read: 10,
                bytes_written: 0,
                image: Some(Default::default()),
            };
            let read = OpMetrics {
                op: Op::Read,
                requests: 1,
                errors: 0,
                latency: Histogram {
                    counts: vec![1; 13],
                    sum_seconds: 0.5,
                },
            };
            Ok(MetricsSnapshot {
                uptime_seconds: 2.0,
                mounts_total: 1,
                umounts_total: 0,
                mount_failures_total: 0,
                chunk_store: ChunkStoreMetrics::default(),
                pseudo: m("/", vec![]),
                mounts: vec![m("/rafs/c/lowerdir", vec![read])],
            })
        }
    }

    /// A body that must never be read.
    struct Untouchable;

    impl Body for Untouchable {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            panic!("the body was read");
        }
    }

    fn ctx() -> Ctx {
        Ctx {
            control: Arc::new(Fixed),
            limits: Limits {
                max_body_bytes: 100,
                body_read_timeout: Duration::from_secs(5),
            },
        }
    }

    fn run<B>(req: Request<B>) -> (StatusCode, hyper::HeaderMap, Bytes)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = handle(req, &ctx()).await;
            let (parts, body) = r.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            (parts.status, parts.headers, bytes)
        })
    }

    fn get(uri: &str) -> Request<Full<Bytes>> {
        Request::get(uri).body(Full::new(Bytes::new())).unwrap()
    }

    #[test]
    fn metrics_json_shape() {
        let (status, headers, body) = run(get("/api/v1/metrics"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for k in [
            "uptime_seconds",
            "mounts_total",
            "umounts_total",
            "mount_failures_total",
        ] {
            assert!(v[k].is_number(), "{k}: {v}");
        }
        let mount = &v["mounts"][0];
        assert_eq!(mount["mountpoint"], "/rafs/c/lowerdir");
        assert_eq!(mount["slot"], 3);
        assert_eq!(mount["ops"][0]["op"], "read");
        assert_eq!(
            mount["ops"][0]["latency"]["counts"]
                .as_array()
                .unwrap()
                .len(),
            13
        );
        assert_eq!(mount["image"]["chunk_hits"], 0);
        assert_eq!(v["pseudo"]["mountpoint"], "/");
        assert!(v["chunk_store"]["capacity_bytes"].is_number());

        let (_, _, body) = run(get("/api/v1/metrics/blobcache"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v.as_object().unwrap().len(),
            7,
            "the chunk store alone: {v}"
        );

        let (status, headers, body) = run(get("/metrics"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], prometheus::CONTENT_TYPE);
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("puzzlefs_uptime_seconds 2\n"));
    }

    #[test]
    fn declared_oversize_is_refused_unread() {
        let req = Request::post("/api/v1/mount?mountpoint=/a")
            .header(CONTENT_LENGTH, "101")
            .body(Untouchable)
            .unwrap();
        let (status, headers, body) = run(req);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(headers[CONNECTION], "close");
        assert_eq!(
            body,
            r#"{"code":"PAYLOAD_TOO_LARGE","message":"request body is larger than 100 bytes"}"#
        );
        // The mount point is checked before the body too.
        let req = Request::post("/api/v1/mount?mountpoint=a")
            .body(Untouchable)
            .unwrap();
        assert_eq!(run(req).0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn success_and_method_replies() {
        let req = Request::post("/api/v1/mount?mountpoint=/a")
            .body(Full::new(Bytes::from_static(br#"{"source":"/x"}"#)))
            .unwrap();
        let (status, headers, body) = run(req);
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(body.is_empty() && headers.get(CONTENT_TYPE).is_none());

        let (status, headers, body) = run(get("/api/v1/mount?mountpoint=/a"));
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[ALLOW], "POST, DELETE");
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "METHOD_NOT_ALLOWED");

        let (status, _, body) = run(get("/api/v1/daemon"));
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["state"], "RUNNING");
    }
}
