//! One registry over HTTP(S): reused connections, authentication (anonymous, basic, and
//! bearer tokens cached per scope and fetched again on a 401), and retries with backoff on
//! connection failures, timeouts, 429 and 5xx.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use super::challenge::Challenge;
use super::error::StatusError;
use super::{Credentials, RegistryError};

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Verify TLS certificates and use HTTPS only. Off: accept any certificate and fall back
    /// to plain HTTP when HTTPS fails (skopeo's `--tls-verify=false`).
    pub tls_verify: bool,
    /// A directory of `*.crt` CA certificates and `*.cert`/`*.key` client pairs (skopeo's
    /// `--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    /// Credentials for every registry; without them each registry's entry of the auth file.
    pub credentials: Option<Credentials>,
    /// The auth file to read instead of the usual places.
    pub authfile: Option<PathBuf>,
    /// Retries of a failed request before giving up.
    pub retries: u32,
    /// The first retry's delay; each next one doubles it (at most 10 s).
    pub backoff: Duration,
    /// Connecting, and each wait for bytes of an answer, time out after this.
    pub timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: true,
            cert_dir: None,
            credentials: None,
            authfile: None,
            retries: 4,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Bytes read from a file at a time while streaming it to a registry.
const UPLOAD_READ_BYTES: usize = 1 << 20;

/// A blob to upload, which can be sent again on a retry.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Bytes in memory.
    Bytes(bytes::Bytes),
    /// A file of `len` bytes, streamed.
    File {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
}

/// A request: method, path below the registry (or an absolute URL), the token scopes it
/// needs, extra headers and body.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: String,
    pub scopes: &'a [String],
    pub headers: HeaderMap,
    pub body: Option<Payload>,
    /// Whether a failure may be retried by sending the same request again.
    pub retry: bool,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, url: impl Into<String>, scopes: &'a [String]) -> Self {
        Request {
            method,
            url: url.into(),
            scopes,
            headers: HeaderMap::new(),
            body: None,
            retry: true,
        }
    }
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by the scopes they were asked for.
    tokens: HashMap<String, String>,
}

/// A client for one registry.
pub struct Client {
    http: reqwest::Client,
    /// `host[:port]` as named in references.
    registry: String,
    host: String,
    insecure: bool,
    credentials: Option<Credentials>,
    base: tokio::sync::OnceCell<String>,
    auth: Mutex<AuthState>,
    /// Held while a token is fetched, so concurrent requests wait for one fetch.
    fetching: tokio::sync::Mutex<()>,
    retries: u32,
    backoff: Duration,
}

impl Client {
    /// A client for `registry` (`host[:port]`) whose API lives on `api_host`.
    pub fn new(
        registry: &str,
        api_host: &str,
        opts: &ClientOptions,
    ) -> Result<Self, RegistryError> {
        let credentials = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => Credentials::lookup(registry, opts.authfile.as_deref())?,
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("puzzlefs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.timeout)
            .read_timeout(opts.timeout)
            .danger_accept_invalid_certs(!opts.tls_verify);
        if let Some(dir) = &opts.cert_dir {
            builder = with_cert_dir(builder, dir)?;
        }
        let http = builder
            .build()
            .map_err(|e| RegistryError::Tls(e.to_string()))?;
        Ok(Client {
            http,
            registry: registry.into(),
            host: api_host.into(),
            insecure: !opts.tls_verify,
            credentials,
            base: tokio::sync::OnceCell::new(),
            auth: Mutex::new(AuthState::default()),
            fetching: tokio::sync::Mutex::new(()),
            retries: opts.retries,
            backoff: opts.backoff,
        })
    }

    /// `host[:port]`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `scheme://host[:port]`, found on first use by `GET /v2/`, which also tells which
    /// authentication the registry wants.
    pub(crate) async fn base(&self) -> Result<&str, RegistryError> {
        self.base
            .get_or_try_init(|| async {
                let https = format!("https://{}", self.host);
                // Under --tls-verify=false a plain-HTTP registry fails the HTTPS handshake at
                // once, and every retry of it would fail the same way: no retries of a failed
                // connection there (statuses such as 429 are still retried).
                let connect_retries = if self.insecure { 0 } else { self.retries };
                match self.ping(&https, connect_retries).await {
                    Ok(()) => Ok(https),
                    Err(e) if self.insecure => {
                        let http = format!("http://{}", self.host);
                        self.ping(&http, self.retries)
                            .await
                            .map(|()| http)
                            .map_err(|e2| match e2 {
                                RegistryError::Http { .. } => e,
                                other => other,
                            })
                    }
                    Err(RegistryError::Http {
                        registry,
                        what,
                        source,
                    }) => Err(RegistryError::Http {
                        registry,
                        what: format!(
                            "{what} over HTTPS (for a plain-HTTP registry: --tls-verify=false)"
                        ),
                        source,
                    }),
                    Err(e) => Err(e),
                }
            })
            .await
            .map(String::as_str)
    }

    async fn ping(&self, base: &str, connect_retries: u32) -> Result<(), RegistryError> {
        let url = format!("{base}/v2/");
        let resp = self
            .with_retries("GET /v2/", connect_retries, || self.http.get(&url))
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            self.auth
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .challenge = challenge;
        } else if !resp.status().is_success() {
            return Err(self.status_error(resp, "GET", "/v2/").await);
        }
        Ok(())
    }

    /// Sends `req`, authenticating as the registry asks and retrying what may be retried.
    /// Any status comes back as a response; see [`Client::expect`].
    pub(crate) async fn send(&self, req: &Request<'_>) -> Result<Response, RegistryError> {
        let base = self.base().await?;
        let url = if req.url.starts_with('/') {
            format!("{base}{}", req.url)
        } else {
            req.url.clone()
        };
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            self.ensure_token(req.scopes).await?;
            let mut builder = self
                .http
                .request(req.method.clone(), &url)
                .headers(req.headers.clone());
            if let Some(auth) = self.authorization(req.scopes) {
                builder = builder.header(AUTHORIZATION, auth);
            }
            if let Some(body) = &req.body {
                builder = attach(builder, body)?;
            }
            let what = || format!("{} {}", req.method, path_of(&url));
            let resp = match builder.send().await {
                Ok(r) => r,
                Err(e) if req.retry && attempt < self.retries && transient(&e) => {
                    attempt += 1;
                    tokio::time::sleep(self.delay(attempt)).await;
                    continue;
                }
                Err(e) => return Err(self.http_error(what(), e)),
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                if self.reauthenticate(&resp, req.scopes).await? {
                    continue;
                }
            }
            if req.retry && attempt < self.retries && retryable_status(status) {
                attempt += 1;
                let wait = retry_after(&resp).unwrap_or_else(|| self.delay(attempt));
                tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The response if its status is one of `ok`, else the registry's error as one line.
    pub(crate) async fn expect(
        &self,
        resp: Response,
        method: &Method,
        ok: &[u16],
    ) -> Result<Response, RegistryError> {
        if ok.contains(&resp.status().as_u16()) {
            Ok(resp)
        } else {
            let path = path_of(resp.url().as_str()).to_string();
            Err(self.status_error(resp, method.as_str(), &path).await)
        }
    }

    pub(crate) async fn status_error(
        &self,
        resp: Response,
        method: &str,
        path: &str,
    ) -> RegistryError {
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(default)]
            errors: Vec<Item>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            code: Option<String>,
            message: Option<String>,
        }
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let first = serde_json::from_slice::<Body>(&body)
            .ok()
            .and_then(|b| b.errors.into_iter().next());
        let (code, message) = match first {
            Some(i) => (i.code, i.message.filter(|m| !m.is_empty())),
            None => (None, None),
        };
        RegistryError::Status(Box::new(StatusError {
            registry: self.registry.clone(),
            method: method.into(),
            path: path.into(),
            status: status.as_u16(),
            code,
            message,
        }))
    }

    pub(crate) fn http_error(&self, what: String, source: reqwest::Error) -> RegistryError {
        RegistryError::Http {
            registry: self.registry.clone(),
            what,
            source,
        }
    }

    pub(crate) fn protocol_error(&self, reason: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        (self.backoff * 2u32.saturating_pow(attempt.saturating_sub(1))).min(Duration::from_secs(10))
    }

    pub(crate) fn retries(&self) -> u32 {
        self.retries
    }

    /// A plain request with retries on 429/5xx and on up to `connect_retries` transient
    /// failures (for the ping and the token server, which take no authentication of ours).
    async fn with_retries(
        &self,
        what: &str,
        connect_retries: u32,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        loop {
            match build().send().await {
                Ok(r) if retryable_status(r.status()) && attempt < self.retries => {}
                Ok(r) => return Ok(r),
                Err(e) if transient(&e) && attempt < connect_retries.min(self.retries) => {}
                Err(e) => return Err(self.http_error(what.into(), e)),
            }
            attempt += 1;
            tokio::time::sleep(self.delay(attempt)).await;
        }
    }

    fn authorization(&self, scopes: &[String]) -> Option<HeaderValue> {
        let state = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let value = match state.challenge.as_ref()? {
            Challenge::Basic => {
                let c = self.credentials.as_ref()?;
                basic_value(c)
            }
            Challenge::Bearer { .. } => format!("Bearer {}", state.tokens.get(&scopes.join(" "))?),
        };
        let mut v = HeaderValue::from_str(&value).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    /// Under a bearer challenge, fetches a token for `scopes` if none is cached.
    async fn ensure_token(&self, scopes: &[String]) -> Result<(), RegistryError> {
        if !self.needs_token(scopes) {
            return Ok(());
        }
        let _one_at_a_time = self.fetching.lock().await;
        let bearer = {
            let state = self.auth.lock().unwrap_or_else(|p| p.into_inner());
            match &state.challenge {
                Some(Challenge::Bearer { realm, service, .. })
                    if !state.tokens.contains_key(&scopes.join(" ")) =>
                {
                    Some((realm.clone(), service.clone()))
                }
                _ => None,
            }
        };
        if let Some((realm, service)) = bearer {
            let token = self.fetch_token(&realm, service.as_deref(), scopes).await?;
            self.auth
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .tokens
                .insert(scopes.join(" "), token);
        }
        Ok(())
    }

    fn needs_token(&self, scopes: &[String]) -> bool {
        let state = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        matches!(state.challenge, Some(Challenge::Bearer { .. }))
            && !state.tokens.contains_key(&scopes.join(" "))
    }

    /// After a 401: takes the challenge it carries and drops the token that failed, so the
    /// next attempt fetches a new one. Returns whether trying again can help.
    async fn reauthenticate(
        &self,
        resp: &Response,
        scopes: &[String],
    ) -> Result<bool, RegistryError> {
        let Some(challenge) = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
        else {
            return Ok(false);
        };
        if challenge == Challenge::Basic && self.credentials.is_none() {
            return Ok(false);
        }
        let mut state = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let had = state.challenge.replace(challenge);
        let dropped = state.tokens.remove(&scopes.join(" ")).is_some();
        Ok(dropped || had != state.challenge)
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, RegistryError> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| self.protocol_error(format!("bad token realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
            if let Some(c) = &self.credentials {
                q.append_pair("account", &c.user);
            }
        }
        let resp = self
            .with_retries("token request", self.retries, || {
                let b = self.http.get(url.clone());
                match &self.credentials {
                    Some(c) => b.basic_auth(&c.user, Some(&c.password)),
                    None => b,
                }
            })
            .await?;
        if !resp.status().is_success() {
            let path = format!("{} (token server)", path_of(url.as_str()));
            return Err(self.status_error(resp, "GET", &path).await);
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.http_error("token request".into(), e))?;
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| self.protocol_error(format!("token server answered no JSON: {e}")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.protocol_error("token server answered no token"))
    }
}

fn basic_value(c: &Credentials) -> String {
    use base64::Engine;
    let raw = format!("{}:{}", c.user, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn attach(
    builder: reqwest::RequestBuilder,
    body: &Payload,
) -> Result<reqwest::RequestBuilder, RegistryError> {
    Ok(match body {
        Payload::Bytes(b) => builder.body(b.clone()),
        Payload::File { path, len } => {
            let file = std::fs::File::open(path).map_err(|e| RegistryError::io(path, e))?;
            // Large reads: each one is a blocking-pool round trip (4 KiB by default made a
            // 16 MiB pack 4 thousand of them, and pushes six times slower than skopeo).
            let stream = tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(file),
                UPLOAD_READ_BYTES,
            );
            builder
                .header(reqwest::header::CONTENT_LENGTH, *len)
                .body(reqwest::Body::wrap_stream(stream))
        }
    })
}

/// The path and query of a URL, for messages.
pub(crate) fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

fn transient(e: &reqwest::Error) -> bool {
    e.is_timeout() || e.is_connect() || e.is_request() || e.is_body()
}

fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS
        || (s.is_server_error()
            && s != StatusCode::NOT_IMPLEMENTED
            && s != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

fn with_cert_dir(
    mut builder: reqwest::ClientBuilder,
    dir: &std::path::Path,
) -> Result<reqwest::ClientBuilder, RegistryError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RegistryError::io(dir, e))?;
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let tls = |p: &std::path::Path, e: String| RegistryError::Tls(format!("{}: {e}", p.display()));
    for path in &names {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| RegistryError::io(p, e));
        match ext {
            "crt" => {
                let pem = read(path)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| tls(path, e.to_string()))?;
                if certs.is_empty() {
                    return Err(tls(path, "no PEM certificate in it".into()));
                }
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            "cert" => {
                let key = path.with_extension("key");
                let mut pem = read(path)?;
                pem.push(b'\n');
                pem.extend(
                    read(&key)
                        .map_err(|_| tls(path, format!("no key {} beside it", key.display())))?,
                );
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| tls(path, e.to_string()))?;
                builder = builder.identity(id);
            }
            "key" if !path.with_extension("cert").exists() => {
                return Err(tls(path, "a key without its .cert".into()));
            }
            _ => {}
        }
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_delays() {
        assert_eq!(path_of("http://h:1/v2/a/blobs/x?y=1"), "/v2/a/blobs/x?y=1");
        assert_eq!(path_of("https://h"), "/");
        let c = Client::new(
            "h",
            "h",
            &ClientOptions {
                credentials: Some(Credentials::parse("u:p").unwrap()),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        assert_eq!(c.delay(1), Duration::from_millis(200));
        assert_eq!(c.delay(3), Duration::from_millis(800));
        assert_eq!(c.delay(40), Duration::from_secs(10));
        assert_eq!(
            basic_value(&Credentials::parse("u:p").unwrap()),
            "Basic dTpw"
        );
    }

    #[test]
    fn statuses_worth_retrying() {
        for s in [429, 500, 502, 503, 504] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 413, 501] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn a_cert_dir_with_junk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), b"not pem").unwrap();
        let opts = ClientOptions {
            cert_dir: Some(dir.path().into()),
            ..ClientOptions::default()
        };
        let err = Client::new("h", "h", &opts).err().unwrap();
        assert!(err.to_string().contains("ca.crt"), "{err}");
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        std::fs::write(dir.path().join("me.key"), b"k").unwrap();
        assert!(Client::new("h", "h", &opts).is_err());
    }
}
