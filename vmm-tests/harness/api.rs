//! A client of the daemon's HTTP API on its unix socket, speaking as Kata does: one request
//! per connection, `Content-Type: application/json`, the query as given.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// One answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request and reads the whole answer.
pub fn request(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(sock)?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    // A server refusing the request (413) may answer and close before reading all of it:
    // the rest of the write then fails, and the read after the answer may get a reset.
    // What it answered is what counts.
    let dropped = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    };
    if let Err(e) = stream.write_all(req.as_bytes()) {
        if !dropped(&e) {
            return Err(e);
        }
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if dropped(&e) && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Response {
        status,
        body: body.to_string(),
    })
}

/// Waits, as Kata does, for the socket file and then for `"state":"RUNNING"`.
pub fn wait_running(sock: &Path, deadline: Duration) {
    let start = Instant::now();
    loop {
        if let Ok(r) = request(sock, "GET", "/api/v1/daemon", None) {
            if serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .is_some_and(|v| v["state"] == "RUNNING")
            {
                return;
            }
        }
        assert!(start.elapsed() < deadline, "the API never reported RUNNING");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `POST /api/v1/mount?mountpoint=AT` with Kata's body.
pub fn mount(sock: &Path, at: &str, fs_type: &str, source: &str, config: &str) -> Response {
    let body = serde_json::json!({"fs_type": fs_type, "source": source, "config": config});
    request(
        sock,
        "POST",
        &format!("/api/v1/mount?mountpoint={at}"),
        Some(&body.to_string()),
    )
    .expect("API request")
}

/// `DELETE /api/v1/mount?mountpoint=AT`.
pub fn umount(sock: &Path, at: &str) -> Response {
    request(
        sock,
        "DELETE",
        &format!("/api/v1/mount?mountpoint={at}"),
        None,
    )
    .expect("API request")
}
