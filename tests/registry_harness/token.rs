//! A Docker-style token server in the test process: issues RS256 JWTs the registry accepts.
//!
//! Keys, certificate and signatures come from the `openssl` CLI (setup.sh installs it): it keeps
//! RSA and X.509 code out of the crate's dependency tree, and a token costs one short process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

/// The `service` our registries are configured with (the tokens' audience).
pub const SERVICE: &str = "puzzlefs-test-registry";
/// The tokens' `iss`.
pub const ISSUER: &str = "puzzlefs-test-token-issuer";

/// One request the token server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub method: String,
    pub path: String,
    pub service: Option<String>,
    /// Every scope asked for, in order (several `scope` parameters, each maybe space-separated).
    pub scopes: Vec<String>,
    pub account: Option<String>,
    /// The Basic credentials sent, if any (user, password).
    pub basic: Option<(String, String)>,
    /// What the server answered.
    pub status: u16,
}

#[derive(Default)]
struct Rules {
    refused_users: BTreeMap<String, u16>,
    /// (substring of a scope, status).
    refused_scopes: Vec<(String, u16)>,
    /// Repository name -> the only actions granted on it.
    limits: BTreeMap<String, Vec<String>>,
    anonymous: bool,
    /// Seconds from now to the JWT's `exp` (and the answer's `expires_in`).
    expires_in: Option<i64>,
}

struct Shared {
    users: BTreeMap<String, String>,
    key: PathBuf,
    x5c: String,
    rules: Mutex<Rules>,
    requests: Mutex<Vec<TokenRequest>>,
    count: AtomicUsize,
    serial: AtomicUsize,
    stop: AtomicBool,
}

/// A running token server, stopped on drop.
pub struct TokenServer {
    shared: Arc<Shared>,
    addr: String,
    cert_pem: String,
    /// Holds key.pem and cert.pem.
    dir: tempfile::TempDir,
    thread: Option<JoinHandle<()>>,
}

impl TokenServer {
    /// Starts a token server on 127.0.0.1 with these (user, password) accounts. With none, every
    /// request gets a token; with some, wrong credentials get 401 and so (unless
    /// `allow_anonymous(true)`) do missing ones.
    pub fn start(users: &[(&str, &str)]) -> TokenServer {
        let dir = tempfile::Builder::new().prefix("token-").tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=puzzlefs-test-token-issuer",
                "-keyout",
            ],
            &[&key, Path::new("-out"), &cert],
            b"",
        );
        let der = openssl(&["x509", "-outform", "DER", "-in"], &[&cert], b"");
        let shared = Arc::new(Shared {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            key,
            x5c: STANDARD.encode(der),
            rules: Mutex::new(Rules::default()),
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            serial: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serving = shared.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if serving.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let shared = serving.clone();
                std::thread::spawn(move || {
                    let _ = serve(&shared, stream);
                });
            }
        });
        TokenServer {
            shared,
            addr,
            cert_pem: std::fs::read_to_string(&cert).unwrap(),
            dir,
            thread: Some(thread),
        }
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// "http://127.0.0.1:PORT/token".
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn service(&self) -> &str {
        SERVICE
    }

    pub fn issuer(&self) -> &str {
        ISSUER
    }

    /// The PEM of the self-signed certificate the tokens' `x5c` carries.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests so far.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Answers `status` (401 or 403, say) to every request authenticated as `user`.
    pub fn refuse_user(&self, user: &str, status: u16) {
        let mut rules = self.shared.rules.lock().unwrap();
        rules.refused_users.insert(user.to_string(), status);
    }

    /// Answers `status` to every request with a scope containing `scope_part`.
    pub fn refuse_scope(&self, scope_part: &str, status: u16) {
        let mut rules = self.shared.rules.lock().unwrap();
        rules.refused_scopes.push((scope_part.to_string(), status));
    }

    /// Grants at most `actions` on repository `repo`, whatever is asked (as real token servers
    /// do for a read-only user: the token is issued, the registry then refuses the push).
    pub fn limit_actions(&self, repo: &str, actions: &[&str]) {
        let mut rules = self.shared.rules.lock().unwrap();
        let actions = actions.iter().map(|a| a.to_string()).collect();
        rules.limits.insert(repo.to_string(), actions);
    }

    /// Whether requests without credentials get tokens although users are configured.
    pub fn allow_anonymous(&self, allow: bool) {
        self.shared.rules.lock().unwrap().anonymous = allow;
    }

    /// Tokens expire `seconds` from issue (negative: already expired); `expires_in` says so.
    /// The default is 300.
    pub fn set_expires_in(&self, seconds: i64) {
        self.shared.rules.lock().unwrap().expires_in = Some(seconds);
    }

    /// Forgets every rule set since start.
    pub fn clear_rules(&self) {
        *self.shared.rules.lock().unwrap() = Rules::default();
    }

    /// A token for `subject` granting exactly `scopes` (`repository:NAME:pull,push`), as the
    /// server would issue it, without a request.
    pub fn issue(&self, subject: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let rules = self.shared.rules.lock().unwrap();
        let expires = rules.expires_in.unwrap_or(300);
        let access = access(&scopes, &rules.limits);
        drop(rules);
        sign(&self.shared, subject, SERVICE, access, expires)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `openssl ARGS PATHS` with `input` on stdin; its stdout.
pub(super) fn openssl(args: &[&str], paths: &[&Path], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .args(paths)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("openssl: {e}: run scripts/setup.sh (it installs openssl)"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One request per connection (we answer `Connection: close`).
fn serve(shared: &Shared, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Ok(()),
    };
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length: u64 = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink())?;

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut service = None;
    let mut account = None;
    let mut scopes = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "service" => service = Some(value),
            "account" => account = Some(value),
            "scope" => scopes.extend(value.split(' ').filter(|s| !s.is_empty()).map(String::from)),
            _ => {}
        }
    }
    let basic = headers.get("authorization").and_then(|v| parse_basic(v));
    let mut request = TokenRequest {
        method: method.clone(),
        path: path.to_string(),
        service: service.clone(),
        scopes,
        account,
        basic,
        status: 200,
    };
    let (status, body) = answer(shared, &mut request);
    request.status = status;
    shared.requests.lock().unwrap().push(request);
    shared.count.fetch_add(1, Ordering::SeqCst);

    let mut stream = stream;
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 401 {
        response.push_str("WWW-Authenticate: Basic realm=\"puzzlefs-test-token\"\r\n");
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

/// The status and JSON body for `request`.
fn answer(shared: &Shared, request: &mut TokenRequest) -> (u16, String) {
    let error = |status: u16, message: &str| (status, json!({ "details": message }).to_string());
    if request.path != "/token" {
        return error(404, "no such path");
    }
    if request.method != "GET" {
        return error(405, "only GET /token");
    }
    let rules = shared.rules.lock().unwrap();
    let subject = match &request.basic {
        Some((user, password)) => {
            if !shared.users.is_empty() && shared.users.get(user) != Some(password) {
                return error(401, "wrong user name or password");
            }
            user.clone()
        }
        None if !shared.users.is_empty() && !rules.anonymous => {
            return error(401, "credentials required")
        }
        None => String::new(),
    };
    if let Some(status) = rules.refused_users.get(&subject) {
        return error(*status, "user refused");
    }
    for (part, status) in &rules.refused_scopes {
        if request.scopes.iter().any(|s| s.contains(part.as_str())) {
            return error(*status, "scope refused");
        }
    }
    let expires = rules.expires_in.unwrap_or(300);
    let access = access(&request.scopes, &rules.limits);
    drop(rules);
    let service = request
        .service
        .clone()
        .unwrap_or_else(|| SERVICE.to_string());
    let token = sign(shared, &subject, &service, access, expires);
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": expires,
    });
    (200, body.to_string())
}

/// The `access` claim granting what `scopes` ask (`TYPE:NAME:ACTION,ACTION`; NAME may hold ':').
fn access(scopes: &[String], limits: &BTreeMap<String, Vec<String>>) -> Value {
    let mut entries = Vec::new();
    for scope in scopes {
        let (Some((kind, rest)), Some((_, actions))) =
            (scope.split_once(':'), scope.rsplit_once(':'))
        else {
            continue;
        };
        let Some((name, _)) = rest.rsplit_once(':') else {
            continue;
        };
        let mut granted: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
        if let Some(allowed) = limits.get(name) {
            granted.retain(|a| allowed.iter().any(|b| b == a));
        }
        entries.push(json!({ "type": kind, "name": name, "actions": granted }));
    }
    Value::Array(entries)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signed JWT: RS256, `x5c` = our certificate.
fn sign(shared: &Shared, subject: &str, audience: &str, access: Value, expires: i64) -> String {
    let header = json!({ "typ": "JWT", "alg": "RS256", "x5c": [shared.x5c] });
    let now = now();
    let serial = shared.serial.fetch_add(1, Ordering::SeqCst);
    let claims = json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": audience,
        "exp": now + expires,
        "nbf": now - 1,
        "iat": now,
        "jti": format!("{}-{serial}", std::process::id()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = openssl(
        &["dgst", "-sha256", "-sign"],
        &[&shared.key],
        input.as_bytes(),
    );
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// (user, password) from `Basic BASE64`.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Decodes `%XX` and `+` (a space) in a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match u8::from_str_radix(value.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
