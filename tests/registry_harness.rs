//! The registry test harness itself (tests/registry_harness/), checked with curl against real
//! CNCF distribution registries: storage views, basic and token auth (the registry accepts the
//! token server's JWTs), and the fault proxy's failures, corruption, drops and counters.

#[path = "registry_harness/mod.rs"]
mod registry_harness;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use registry_harness::{
    http_status, Auth, Failure, FaultProxy, Kind, Outcome, Registry, TokenServer, ALWAYS,
};
use sha2::{Digest, Sha256};

/// One curl exchange.
#[derive(Debug)]
struct Reply {
    /// curl's exit code (52: empty reply, 7: could not connect).
    exit: i32,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }
}

/// `curl -X METHOD URL` with extra `args` (headers, `-u`, `--data-binary @FILE`).
fn curl(method: &str, url: &str, args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let mut command = Command::new("curl");
    command
        .args(["-s", "-g", "--max-time", "20", "-D"])
        .arg(&head);
    command.arg("-o").arg(&body).args(["-X", method]);
    if method == "HEAD" {
        command.arg("-I");
    }
    let out = command
        .args(args)
        .arg(url)
        .output()
        .expect("curl (scripts/setup.sh installs it)");
    let head = fs::read_to_string(&head).unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        exit: out.status.code().unwrap_or(-1),
        status,
        headers,
        body: fs::read(&body).unwrap_or_default(),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// POST then PUT `?digest=` of `data` into `repo` at `base`; the PUT's reply (or the POST's, if
/// that failed). `auth`: curl arguments (`-u U:P`, `-H Authorization: ...`).
fn push_blob(base: &str, repo: &str, data: &[u8], auth: &[&str]) -> Reply {
    let post = curl("POST", &format!("{base}/v2/{repo}/blobs/uploads/"), auth);
    if post.status != 202 {
        return post;
    }
    let location = post
        .header("Location")
        .expect("upload Location")
        .to_string();
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), data).unwrap();
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{sep}digest=sha256:{}", sha256_hex(data));
    let body = format!("@{}", file.path().display());
    let mut args = auth.to_vec();
    args.extend([
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &body,
    ]);
    curl("PUT", &url, &args)
}

#[test]
fn anonymous_registry_stores_pushed_blobs() {
    let mut registry = Registry::start(Auth::None);
    assert!(registry.addr().starts_with("127.0.0.1:"));
    assert_eq!(registry.stored_blobs(), BTreeSet::new());
    let base = curl("GET", &format!("{}/v2/", registry.url()), &[]);
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("Docker-Distribution-Api-Version"),
        Some("registry/2.0")
    );

    let data = b"harness blob one".repeat(100);
    let hex = sha256_hex(&data);
    let post = curl(
        "POST",
        &format!("{}/v2/harness/one/blobs/uploads/", registry.url()),
        &[],
    );
    assert_eq!(post.status, 202);
    // distribution makes Location absolute, from the request's Host.
    assert!(
        post.header("Location")
            .unwrap()
            .starts_with(&registry.url()),
        "{post:?}"
    );
    let put = push_blob(&registry.url(), "harness/one", &data, &[]);
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(
        put.header("Docker-Content-Digest"),
        Some(format!("sha256:{hex}").as_str())
    );

    assert_eq!(registry.stored_blobs(), BTreeSet::from([hex.clone()]));
    assert_eq!(
        registry.repo_layers("harness/one"),
        BTreeSet::from([hex.clone()])
    );
    assert_eq!(registry.repo_layers("harness/other"), BTreeSet::new());
    assert_eq!(fs::read(registry.blob_data_path(&hex)).unwrap(), data);
    let blob_url = format!("{}/v2/harness/one/blobs/sha256:{hex}", registry.url());
    let head = curl("HEAD", &blob_url, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(data.len().to_string().as_str())
    );

    // Same port and storage after a restart; nothing answers while stopped.
    let addr = registry.addr();
    registry.stop();
    assert_eq!(http_status(&addr, "/v2/"), None);
    registry.restart();
    assert_eq!(registry.addr(), addr);
    assert_eq!(curl("HEAD", &blob_url, &[]).status, 200);
    assert!(
        registry.log_tail(50).contains("listening on 127.0.0.1:"),
        "{}",
        registry.log_tail(50)
    );
}

#[test]
fn garbage_collect_removes_blobs_no_manifest_names() {
    let mut registry = Registry::start(Auth::None);
    let data = b"no manifest names this";
    assert_eq!(
        push_blob(&registry.url(), "harness/gc", data, &[]).status,
        201
    );
    let hex = sha256_hex(data);
    assert_eq!(registry.stored_blobs(), BTreeSet::from([hex.clone()]));
    let output = registry.garbage_collect(false);
    assert_eq!(registry.stored_blobs(), BTreeSet::new(), "{output}");
    let blob_url = format!("{}/v2/harness/gc/blobs/sha256:{hex}", registry.url());
    assert_eq!(curl("HEAD", &blob_url, &[]).status, 404);
    // The repository's link stays behind, dangling: repo_layers is not "present".
    assert_eq!(registry.repo_layers("harness/gc"), BTreeSet::from([hex]));
}

#[test]
fn basic_registry_needs_credentials() {
    let registry = Registry::start(Auth::basic(&[("alice", "s3cret"), ("bob", "hunter2")]));
    let url = format!("{}/v2/", registry.url());
    let anonymous = curl("GET", &url, &[]);
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("WWW-Authenticate"),
        Some("Basic realm=\"puzzlefs-test\"")
    );
    assert_eq!(curl("GET", &url, &["-u", "alice:wrong"]).status, 401);
    assert_eq!(curl("GET", &url, &["-u", "carol:s3cret"]).status, 401);
    assert_eq!(curl("GET", &url, &["-u", "alice:s3cret"]).status, 200);
    assert_eq!(curl("GET", &url, &["-u", "bob:hunter2"]).status, 200);
    assert_eq!(
        push_blob(&registry.url(), "harness/basic", b"x", &[]).status,
        401
    );
    let pushed = push_blob(
        &registry.url(),
        "harness/basic",
        b"x",
        &["-u", "bob:hunter2"],
    );
    assert_eq!(pushed.status, 201);
    assert_eq!(registry.stored_blobs().len(), 1);
}

/// The claims of a JWT, unverified.
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// A token from `server` for `scopes` with curl `auth`; the reply and the token.
fn fetch_token(server: &TokenServer, scopes: &[&str], auth: &[&str]) -> (Reply, Option<String>) {
    let mut url = format!("{}?service={}", server.realm(), server.service());
    for scope in scopes {
        url.push_str(&format!(
            "&scope={}",
            scope.replace(':', "%3A").replace(',', "%2C")
        ));
    }
    let reply = curl("GET", &url, auth);
    let token = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["token"].as_str().map(String::from));
    (reply, token)
}

#[test]
fn token_registry_accepts_our_tokens() {
    let server = TokenServer::start(&[("alice", "s3cret")]);
    let registry = Registry::start(Auth::token(&server));
    let base = format!("{}/v2/", registry.url());

    let challenge = curl("GET", &base, &[]);
    assert_eq!(challenge.status, 401);
    let expected = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        server.realm(),
        server.service()
    );
    assert_eq!(
        challenge.header("WWW-Authenticate"),
        Some(expected.as_str())
    );
    let post = curl(
        "POST",
        &format!("{}/v2/harness/app/blobs/uploads/", registry.url()),
        &[],
    );
    assert_eq!(post.status, 401);
    // The registry lists the actions in no fixed order (seen both ways).
    let scoped = post.header("WWW-Authenticate").unwrap_or_default();
    let actions = scoped
        .strip_prefix(&format!("{expected},scope=\"repository:harness/app:"))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{scoped}"));
    let mut actions: Vec<&str> = actions.split(',').collect();
    actions.sort();
    assert_eq!(actions, ["pull", "push"], "{scoped}");

    // The token server: wrong or missing credentials refused, good ones served.
    let scope = "repository:harness/app:pull,push";
    let (wrong, token) = fetch_token(&server, &[scope], &["-u", "alice:wrong"]);
    assert_eq!((wrong.status, token), (401, None));
    assert_eq!(fetch_token(&server, &[scope], &[]).0.status, 401);
    let (good, token) = fetch_token(&server, &[scope], &["-u", "alice:s3cret"]);
    assert_eq!(good.status, 200, "{good:?}");
    let token = token.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&good.body).unwrap();
    assert_eq!(answer["access_token"], token.as_str());
    assert_eq!(answer["expires_in"], 300);
    let claims = claims(&token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], server.service());
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "harness/app", "actions": ["pull", "push"]}])
    );
    assert_eq!(server.count(), 3);
    let last = server.requests().pop().unwrap();
    assert_eq!(
        last.basic,
        Some(("alice".to_string(), "s3cret".to_string()))
    );
    assert_eq!(last.scopes, vec![scope.to_string()]);
    assert_eq!(last.service.as_deref(), Some(server.service()));
    assert_eq!(last.status, 200);
    assert_eq!(server.requests()[1].basic, None);

    // The registry accepts it: /v2/ and a push.
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(curl("GET", &base, &["-H", &bearer]).status, 200);
    let data = b"pushed with a bearer token";
    let pushed = push_blob(&registry.url(), "harness/app", data, &["-H", &bearer]);
    assert_eq!(pushed.status, 201, "{pushed:?}\n{}", registry.log_tail(20));
    assert_eq!(registry.stored_blobs(), BTreeSet::from([sha256_hex(data)]));

    // ... but not a tampered one, nor one for another repository.
    let mut tampered = token.clone().into_bytes();
    let last_char = tampered.len() - 2;
    tampered[last_char] = if tampered[last_char] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = format!(
        "Authorization: Bearer {}",
        String::from_utf8(tampered).unwrap()
    );
    assert_eq!(curl("GET", &base, &["-H", &tampered]).status, 401);
    let other = push_blob(&registry.url(), "harness/other", data, &["-H", &bearer]);
    assert_eq!(other.status, 401);
    assert!(other
        .header("WWW-Authenticate")
        .unwrap()
        .contains("error=\"insufficient_scope\""));

    // Exactly the actions asked: a pull token does not push.
    let pull = server.issue("alice", &["repository:harness/app:pull"]);
    let pull = format!("Authorization: Bearer {pull}");
    let blob_url = format!(
        "{}/v2/harness/app/blobs/sha256:{}",
        registry.url(),
        sha256_hex(data)
    );
    assert_eq!(curl("HEAD", &blob_url, &["-H", &pull]).status, 200);
    assert_eq!(
        push_blob(&registry.url(), "harness/app", b"y", &["-H", &pull]).status,
        401
    );
}

#[test]
fn token_server_rules() {
    let server = TokenServer::start(&[("alice", "s3cret"), ("bob", "pw")]);
    let registry = Registry::start(Auth::token(&server));
    let alice = ["-u", "alice:s3cret"];

    // Several scopes, each granted.
    let scopes = ["repository:a/b:pull", "repository:c:pull,push"];
    let (reply, token) = fetch_token(&server, &scopes, &alice);
    assert_eq!(reply.status, 200);
    let access = &claims(&token.unwrap())["access"];
    assert_eq!(access[0]["name"], "a/b");
    assert_eq!(access[0]["actions"], serde_json::json!(["pull"]));
    assert_eq!(access[1]["name"], "c");
    assert_eq!(access[1]["actions"], serde_json::json!(["pull", "push"]));
    assert_eq!(server.requests()[0].scopes, scopes.to_vec());

    // Refusals.
    server.refuse_user("bob", 403);
    assert_eq!(
        fetch_token(&server, &scopes, &["-u", "bob:pw"]).0.status,
        403
    );
    assert_eq!(fetch_token(&server, &scopes, &alice).0.status, 200);
    server.refuse_scope("repository:c:", 401);
    assert_eq!(fetch_token(&server, &scopes, &alice).0.status, 401);
    assert_eq!(fetch_token(&server, &scopes[..1], &alice).0.status, 200);
    server.clear_rules();
    assert_eq!(
        fetch_token(&server, &scopes, &["-u", "bob:pw"]).0.status,
        200
    );
    assert_eq!(fetch_token(&server, &scopes, &[]).0.status, 401);
    server.allow_anonymous(true);
    let (anonymous, token) = fetch_token(&server, &scopes, &[]);
    assert_eq!(anonymous.status, 200);
    assert_eq!(claims(&token.unwrap())["sub"], "");

    // A read-only grant: the token is issued, the registry refuses the push.
    server.limit_actions("c", &["pull"]);
    let (_, token) = fetch_token(&server, &["repository:c:pull,push"], &alice);
    let token = token.unwrap();
    assert_eq!(
        claims(&token)["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(
        push_blob(&registry.url(), "c", b"z", &["-H", &bearer]).status,
        401
    );
    server.clear_rules();

    // Expiry: distribution allows 60 s of leeway past `exp`.
    let base = format!("{}/v2/", registry.url());
    server.set_expires_in(-30);
    let lenient = format!("Authorization: Bearer {}", server.issue("alice", &[]));
    assert_eq!(curl("GET", &base, &["-H", &lenient]).status, 200);
    server.set_expires_in(-120);
    let expired = format!("Authorization: Bearer {}", server.issue("alice", &[]));
    assert_eq!(curl("GET", &base, &["-H", &expired]).status, 401);
    assert_eq!(server.count(), 9);
}

#[test]
fn token_server_behind_a_proxy() {
    let server = TokenServer::start(&[]);
    let token_proxy = FaultProxy::start(&server.addr());
    let realm = format!("{}/token", token_proxy.url());
    let registry = Registry::start(Auth::token_with_realm(&server, &realm));
    let challenge = curl("GET", &format!("{}/v2/", registry.url()), &[]);
    let www = challenge.header("WWW-Authenticate").unwrap();
    assert!(
        www.starts_with(&format!("Bearer realm=\"{realm}\"")),
        "{www}"
    );
    token_proxy.fail("GET", "/token", 503, 1);
    let url = format!("{realm}?service={}", server.service());
    assert_eq!(curl("GET", &url, &[]).status, 503);
    let reply = curl("GET", &url, &[]);
    assert_eq!(reply.status, 200);
    let token: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let bearer = format!("Authorization: Bearer {}", token["token"].as_str().unwrap());
    assert_eq!(
        curl("GET", &format!("{}/v2/", registry.url()), &["-H", &bearer]).status,
        200
    );
    assert_eq!(token_proxy.count(Kind::Token), 2);
    assert_eq!(server.count(), 1);
}

#[test]
fn proxy_injects_faults_and_counts() {
    let mut registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.addr());
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let hex = sha256_hex(&data);

    // Upload sessions' Location points at the proxy.
    let post = curl(
        "POST",
        &format!("{}/v2/harness/p/blobs/uploads/", proxy.url()),
        &[],
    );
    assert_eq!(post.status, 202);
    assert!(
        post.header("Location").unwrap().starts_with(&proxy.url()),
        "{post:?}"
    );
    assert_eq!(push_blob(&proxy.url(), "harness/p", &data, &[]).status, 201);
    assert_eq!(registry.stored_blobs(), BTreeSet::from([hex.clone()]));

    // A 503 once, then through.
    let blob_url = format!("{}/v2/harness/p/blobs/sha256:{hex}", proxy.url());
    proxy.fail("HEAD", "/blobs/sha256:", 503, 1);
    assert_eq!(
        curl("GET", &blob_url, &[]).status,
        200,
        "a GET does not match a HEAD rule"
    );
    assert_eq!(curl("HEAD", &blob_url, &[]).status, 503);
    assert_eq!(curl("HEAD", &blob_url, &[]).status, 200);
    proxy.fail("*", "/blobs/sha256:", 500, 1);
    let failed = curl("GET", &blob_url, &[]);
    assert_eq!(failed.status, 500);
    let errors: serde_json::Value = serde_json::from_slice(&failed.body).unwrap();
    assert_eq!(errors["errors"][0]["code"], "UNKNOWN");

    // 429 with Retry-After, twice.
    proxy.fail_with("GET", "/v2/", Failure::new(429).retry_after(7), 2);
    for _ in 0..2 {
        let throttled = curl("GET", &format!("{}/v2/", proxy.url()), &[]);
        assert_eq!(throttled.status, 429);
        assert_eq!(throttled.header("Retry-After"), Some("7"));
        let errors: serde_json::Value = serde_json::from_slice(&throttled.body).unwrap();
        assert_eq!(errors["errors"][0]["code"], "TOOMANYREQUESTS");
    }
    assert_eq!(
        curl("GET", &format!("{}/v2/", proxy.url()), &[]).status,
        200
    );

    // Corruption: same length, other bytes; the stored blob is intact.
    proxy.corrupt_blob(&hex, 1);
    let corrupted = curl("GET", &blob_url, &[]);
    assert_eq!(corrupted.status, 200);
    assert_eq!(corrupted.body.len(), data.len());
    assert_ne!(corrupted.body, data);
    assert_eq!(fs::read(registry.blob_data_path(&hex)).unwrap(), data);
    assert_eq!(curl("GET", &blob_url, &[]).body, data, "the rule ran out");
    proxy.corrupt_blob(&hex, ALWAYS);
    for _ in 0..2 {
        assert_ne!(
            curl("GET", &blob_url, &["-H", "Range: bytes=0-99"]).body,
            data[..100]
        );
    }
    proxy.clear_rules();
    assert_eq!(curl("GET", &blob_url, &[]).body, data);

    // A dropped connection: curl gets an empty reply (exit 52), then the real answer.
    proxy.drop_connection("GET", "/blobs/", 1);
    let dropped = curl("GET", &blob_url, &[]);
    assert_eq!((dropped.exit, dropped.status), (52, 0), "{dropped:?}");
    assert_eq!(curl("GET", &blob_url, &[]).body, data);

    let counts = proxy.counts();
    assert_eq!(counts[&Kind::UploadPost], 2);
    assert_eq!(counts[&Kind::UploadPut], 1);
    assert_eq!(counts[&Kind::BlobHead], 2);
    assert_eq!(counts[&Kind::BlobGet], 9);
    assert_eq!(counts[&Kind::Base], 3);
    assert_eq!(proxy.count(Kind::ManifestPut), 0);
    assert_eq!(proxy.faults_injected(), 2 + 2 + 1 + 2 + 1);
    let seen = proxy.requests();
    assert_eq!(seen.len(), counts.values().sum::<usize>());
    let dropped_at = seen
        .iter()
        .filter(|s| s.outcome == Outcome::Dropped)
        .count();
    assert_eq!(dropped_at, 1);
    let corrupted = seen
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Corrupted(_)));
    assert_eq!(corrupted.count(), 3);
    assert_eq!(seen[2].kind, Kind::UploadPut);
    assert!(seen[2].path.contains("&digest=sha256:"), "{:?}", seen[2]);
    proxy.reset_counts();
    assert_eq!(proxy.counts().len(), 0);

    // Upstream down: 502.
    registry.stop();
    assert_eq!(curl("GET", &blob_url, &[]).status, 502);
    assert_eq!(proxy.requests()[0].outcome, Outcome::UpstreamDown);
}

#[test]
fn kinds_of_requests() {
    let cases = [
        ("GET", "/v2/", Kind::Base),
        ("HEAD", "/v2/a/b/blobs/sha256:00", Kind::BlobHead),
        ("GET", "/v2/a/blobs/sha256:00", Kind::BlobGet),
        (
            "POST",
            "/v2/a/blobs/uploads/?mount=sha256:00&from=b",
            Kind::UploadPost,
        ),
        (
            "PATCH",
            "/v2/a/blobs/uploads/uuid?_state=x",
            Kind::UploadPatch,
        ),
        (
            "PUT",
            "/v2/a/blobs/uploads/uuid?digest=sha256:00",
            Kind::UploadPut,
        ),
        ("DELETE", "/v2/a/blobs/uploads/uuid", Kind::UploadOther),
        ("GET", "/v2/a/manifests/latest", Kind::ManifestGet),
        ("HEAD", "/v2/a/b/manifests/sha256:00", Kind::ManifestHead),
        ("PUT", "/v2/a/manifests/v1", Kind::ManifestPut),
        ("GET", "/v2/blobs/manifests/v1", Kind::ManifestGet),
        ("GET", "/v2/a/tags/list?n=10", Kind::TagsList),
        ("GET", "/token?service=x", Kind::Token),
        ("GET", "/healthz", Kind::Other),
    ];
    for (method, path, kind) in cases {
        assert_eq!(Kind::of(method, path), kind, "{method} {path}");
    }
}

#[test]
fn missing_binary_panics_with_the_fix() {
    let missing = Path::new("/nonexistent/docker-registry");
    let Err(panic) = std::panic::catch_unwind(|| Registry::start_with(missing, Auth::None)) else {
        panic!("started without a binary");
    };
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("scripts/setup.sh"), "{message}");
}
