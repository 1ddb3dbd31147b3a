//! A fault-injecting HTTP/1.1 reverse proxy in front of a registry (or a token server).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// `times` for a rule that never runs out.
pub const ALWAYS: usize = usize::MAX;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What a request is, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `/v2/`
    Base,
    BlobHead,
    BlobGet,
    BlobDelete,
    UploadPost,
    UploadPatch,
    UploadPut,
    /// GET (status) or DELETE (cancel) of an upload session.
    UploadOther,
    ManifestHead,
    ManifestGet,
    ManifestPut,
    ManifestDelete,
    TagsList,
    /// `/token` (a proxy in front of a token server).
    Token,
    Other,
}

impl Kind {
    /// The kind of `METHOD path` (a query is ignored).
    pub fn of(method: &str, path: &str) -> Kind {
        let path = path.split('?').next().unwrap_or(path);
        let method = method.to_ascii_uppercase();
        if path == "/v2/" || path == "/v2" {
            return Kind::Base;
        }
        if path.starts_with("/token") {
            return Kind::Token;
        }
        if !path.starts_with("/v2/") {
            return Kind::Other;
        }
        if path.contains("/blobs/uploads") {
            return match method.as_str() {
                "POST" => Kind::UploadPost,
                "PATCH" => Kind::UploadPatch,
                "PUT" => Kind::UploadPut,
                _ => Kind::UploadOther,
            };
        }
        let tail = |segment: &str| {
            path.rsplit_once(segment)
                .is_some_and(|(_, r)| !r.contains('/'))
        };
        if tail("/blobs/") {
            return match method.as_str() {
                "HEAD" => Kind::BlobHead,
                "GET" => Kind::BlobGet,
                "DELETE" => Kind::BlobDelete,
                _ => Kind::Other,
            };
        }
        if tail("/manifests/") {
            return match method.as_str() {
                "HEAD" => Kind::ManifestHead,
                "GET" => Kind::ManifestGet,
                "PUT" => Kind::ManifestPut,
                "DELETE" => Kind::ManifestDelete,
                _ => Kind::Other,
            };
        }
        if path.ends_with("/tags/list") {
            return Kind::TagsList;
        }
        Kind::Other
    }
}

/// An injected error answer: registry-style body `{"errors":[{"code","message"}]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub code: String,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Failure {
    /// `status` with the distribution error code it usually comes with.
    pub fn new(status: u16) -> Failure {
        let code = match status {
            400 => "UNSUPPORTED",
            401 => "UNAUTHORIZED",
            403 => "DENIED",
            404 => "BLOB_UNKNOWN",
            429 => "TOOMANYREQUESTS",
            503 => "UNAVAILABLE",
            _ => "UNKNOWN",
        };
        Failure {
            status,
            code: code.to_string(),
            message: format!("injected by FaultProxy ({status})"),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Failure {
        self.retry_after = Some(seconds);
        self
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Upstream's answer, passed on.
    Forwarded(u16),
    /// Upstream's answer with its body corrupted.
    Corrupted(u16),
    /// Upstream's answer with its body cut halfway.
    Cut(u16),
    /// An injected failure.
    Injected(u16),
    /// Connection closed without an answer.
    Dropped,
    /// Upstream did not answer; we answered 502.
    UpstreamDown,
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The request's `Range` header, if any.
    pub range: Option<String>,
    pub kind: Kind,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
enum Action {
    Fail(Failure),
    Drop,
    Corrupt,
    Cut,
}

#[derive(Debug)]
struct Rule {
    method: String,
    path: String,
    left: usize,
    action: Action,
}

impl Rule {
    fn matches(&self, method: &str, path: &str) -> bool {
        self.left > 0
            && (self.method.is_empty()
                || self.method == "*"
                || self.method.eq_ignore_ascii_case(method))
            && path.contains(self.path.as_str())
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
    counts: BTreeMap<Kind, usize>,
    faults: usize,
}

struct Ctx {
    state: Mutex<State>,
    upstream: String,
    addr: String,
}

/// A running proxy, stopped on drop.
pub struct FaultProxy {
    ctx: Arc<Ctx>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 forwarding everything to `upstream` ("HOST:PORT").
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let ctx = Arc::new(Ctx {
            state: Mutex::new(State::default()),
            upstream: upstream.to_string(),
            addr: addr.to_string(),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = ctx.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let ctx = serving.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| {
                                    handle(req, ctx.clone())
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            })
        });
        FaultProxy {
            ctx,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        self.ctx.addr.clone()
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.ctx.addr)
    }

    fn add(&self, method: &str, path_part: &str, times: usize, action: Action) {
        self.ctx.state.lock().unwrap().rules.push(Rule {
            method: method.to_string(),
            path: path_part.to_string(),
            left: times,
            action,
        });
    }

    /// Answers `status` (registry-style body) instead of forwarding, `times` times, to requests
    /// whose method is `method` ("" or "*": any) and whose path and query contain `path_part`.
    pub fn fail(&self, method: &str, path_part: &str, status: u16, times: usize) {
        self.fail_with(method, path_part, Failure::new(status), times);
    }

    /// As `fail`, with a chosen code, message and `Retry-After`.
    pub fn fail_with(&self, method: &str, path_part: &str, failure: Failure, times: usize) {
        self.add(method, path_part, times, Action::Fail(failure));
    }

    /// Closes the connection without answering, `times` times, for matching requests.
    pub fn drop_connection(&self, method: &str, path_part: &str, times: usize) {
        self.add(method, path_part, times, Action::Drop);
    }

    /// Corrupts the body of successful GETs of blob `hex` (sha256), `times` times: the byte in the
    /// middle of each body is inverted, the length kept.
    pub fn corrupt_blob(&self, hex: &str, times: usize) {
        self.add(
            "GET",
            &format!("/blobs/sha256:{hex}"),
            times,
            Action::Corrupt,
        );
    }

    /// Breaks the body of successful GETs of blob `hex` (sha256) halfway, `times` times: the
    /// first half is sent, then the connection is aborted.
    pub fn cut_blob(&self, hex: &str, times: usize) {
        self.add("GET", &format!("/blobs/sha256:{hex}"), times, Action::Cut);
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.ctx.state.lock().unwrap().rules.clear();
    }

    /// How many times rules fired (failures, drops, corruptions).
    pub fn faults_injected(&self) -> usize {
        self.ctx.state.lock().unwrap().faults
    }

    /// Requests of `kind` so far (whatever became of them).
    pub fn count(&self, kind: Kind) -> usize {
        let state = self.ctx.state.lock().unwrap();
        state.counts.get(&kind).copied().unwrap_or(0)
    }

    /// Requests so far by kind.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        self.ctx.state.lock().unwrap().counts.clone()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.ctx.state.lock().unwrap().seen.clone()
    }

    /// Forgets the requests and counts (not the rules).
    pub fn reset_counts(&self) {
        let mut state = self.ctx.state.lock().unwrap();
        state.seen.clear();
        state.counts.clear();
        state.faults = 0;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body that sends its bytes, then fails (the server then aborts the connection).
struct CutBody(Option<Bytes>);

impl hyper::body::Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(Some(match self.0.take() {
            Some(bytes) => Ok(hyper::body::Frame::data(bytes)),
            None => Err(std::io::Error::other("FaultProxy: body cut")),
        }))
    }
}

fn record(ctx: &Ctx, method: &str, path: &str, range: Option<String>, outcome: Outcome) {
    let mut state = ctx.state.lock().unwrap();
    let kind = Kind::of(method, path);
    *state.counts.entry(kind).or_default() += 1;
    let seen = Seen {
        method: method.to_string(),
        path: path.to_string(),
        range,
        kind,
        outcome,
    };
    state.seen.push(seen);
}

/// Takes one use of the first live rule matching and accepted by `wanted`.
fn take(ctx: &Ctx, method: &str, path: &str, wanted: fn(&Action) -> bool) -> Option<Action> {
    let mut state = ctx.state.lock().unwrap();
    let rule = state
        .rules
        .iter_mut()
        .find(|r| wanted(&r.action) && r.matches(method, path))?;
    if rule.left != ALWAYS {
        rule.left -= 1;
    }
    let action = rule.action.clone();
    state.faults += 1;
    Some(action)
}

async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>) -> Result<Response<Body>, std::io::Error> {
    let method = req.method().as_str().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let range = req
        .headers()
        .get(hyper::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match take(&ctx, &method, &path, |a| {
        !matches!(a, Action::Corrupt | Action::Cut)
    }) {
        Some(Action::Drop) => {
            record(&ctx, &method, &path, range.clone(), Outcome::Dropped);
            return Err(std::io::Error::other("FaultProxy: connection dropped"));
        }
        Some(Action::Fail(failure)) => {
            record(
                &ctx,
                &method,
                &path,
                range.clone(),
                Outcome::Injected(failure.status),
            );
            return Ok(failure_response(&failure));
        }
        _ => {}
    }
    let response = match forward(req, &ctx).await {
        Ok(response) => response,
        Err(e) => {
            record(&ctx, &method, &path, range.clone(), Outcome::UpstreamDown);
            let mut failure = Failure::new(502);
            failure.message = format!("FaultProxy: upstream {}: {e}", ctx.upstream);
            return Ok(failure_response(&failure));
        }
    };
    let status = response.status();
    if status.is_success() && method == "GET" {
        if let Some(Action::Corrupt) = take(&ctx, &method, &path, |a| matches!(a, Action::Corrupt))
        {
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.map_err(std::io::Error::other)?;
            let mut bytes = collected.to_bytes().to_vec();
            if !bytes.is_empty() {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0xff;
            }
            record(
                &ctx,
                &method,
                &path,
                range.clone(),
                Outcome::Corrupted(status.as_u16()),
            );
            return Ok(Response::from_parts(parts, full(bytes)));
        }
        if let Some(Action::Cut) = take(&ctx, &method, &path, |a| matches!(a, Action::Cut)) {
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.map_err(std::io::Error::other)?;
            let bytes = collected.to_bytes();
            let half = bytes.slice(..bytes.len() / 2);
            record(
                &ctx,
                &method,
                &path,
                range.clone(),
                Outcome::Cut(status.as_u16()),
            );
            let body = CutBody(Some(half)).map_err(Into::into).boxed();
            return Ok(Response::from_parts(parts, body));
        }
    }
    record(
        &ctx,
        &method,
        &path,
        range.clone(),
        Outcome::Forwarded(status.as_u16()),
    );
    Ok(response.map(|b| b.map_err(Into::into).boxed()))
}

/// Sends `req` upstream on a new connection; its answer with `Location` pointing back at us.
async fn forward(req: Request<Incoming>, ctx: &Ctx) -> Result<Response<Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(&ctx.upstream)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let (mut parts, body) = req.into_parts();
    let host = HeaderValue::from_str(&ctx.upstream).unwrap();
    parts.headers.insert(HOST, host);
    let mut response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| e.to_string())?;
    let theirs = format!("http://{}", ctx.upstream);
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok());
    if let Some(rest) = location.and_then(|l| l.strip_prefix(&theirs)) {
        let rewritten = format!("http://{}{rest}", ctx.addr);
        let value = HeaderValue::from_str(&rewritten).unwrap();
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

fn failure_response(failure: &Failure) -> Response<Body> {
    let body = serde_json::json!({
        "errors": [{ "code": failure.code, "message": failure.message, "detail": null }]
    })
    .to_string();
    let mut response = Response::builder()
        .status(StatusCode::from_u16(failure.status).unwrap())
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .header(CONTENT_LENGTH, body.len());
    if let Some(seconds) = failure.retry_after {
        response = response.header(RETRY_AFTER, seconds);
    }
    response.body(full(body)).unwrap()
}
