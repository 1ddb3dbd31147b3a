//! Hostile or broken clients (an error or a closed connection, never a stuck or dead
//! server), the socket itself, and shutdown.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use puzzlefs_virtiofsd::api::{self, ServerConfig};

use crate::support::*;

#[test]
fn garbage_gets_400_or_a_close_and_the_server_goes_on() {
    let server = Server::start();
    let garbage: &[&[u8]] = &[
        b"\x00\x01\x02\xff\xfe garbage\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /api/v1/daemon HTTP/9.9\r\n\r\n",
        b"GET /api/v1/daemon HTTP/1.1\r\nHost unix\r\n\r\n",
        // Raw UTF-8 in the target passes hyper (then 405 here); invalid UTF-8 does not.
        b"GET /api/v1/mount?mountpoint=/caf\xc3\xa9 HTTP/1.1\r\nHost: unix\r\nConnection: close\r\n\r\n",
        b"DELETE /api/v1/mount?mountpoint=/\xff\xfe HTTP/1.1\r\nHost: unix\r\n\r\n",
        b"POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: zz\r\n\r\n{}",
        b"POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ];
    for g in garbage {
        let mut s = server.connect();
        s.write_all(g).unwrap();
        match read_reply(&mut s) {
            None => {}
            Some(r) => assert!(
                (400..500).contains(&r.status),
                "{:?}: {r:?}",
                String::from_utf8_lossy(g)
            ),
        }
        assert!(closed(&mut s), "{:?}", String::from_utf8_lossy(g));
        still_serves(&server);
    }
    assert_eq!(server.control.mount_calls(), vec![]);
}

#[test]
fn huge_headers_get_431() {
    let server = Server::start();
    // The server may answer and close before the client has written it all (the write then
    // fails with EPIPE); the answer is still there to read.
    let mut s = server.connect();
    let _ = s.write_all(
        format!(
            "GET /api/v1/daemon HTTP/1.1\r\nHost: unix\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        )
        .as_bytes(),
    );
    let r = read_reply(&mut s).expect("a response");
    assert_eq!(r.status, 431, "{r:?}");
    let long_target = format!(
        "GET /api/v1/mount?mountpoint=/{} HTTP/1.1\r\nHost: unix\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let mut s = server.connect();
    let _ = s.write_all(long_target.as_bytes());
    if let Some(r) = read_reply(&mut s) {
        assert!(
            r.status == 431 || r.status == 414 || r.status == 400,
            "{r:?}"
        );
    }
    still_serves(&server);
}

#[test]
fn a_client_that_leaves_mid_body_changes_nothing() {
    let server = Server::start();
    let mut s = server.connect();
    s.write_all(
        b"POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nHost: unix\r\nContent-Length: 1000\r\n\r\n{\"fs_type\":",
    )
    .unwrap();
    drop(s);
    still_serves(&server);
    // And one that goes quiet mid-body gets 408 once the body timeout passes.
    let server = Server::with_config(ServerConfig {
        body_read_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    let mut s = server.connect();
    s.write_all(
        b"POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nHost: unix\r\nContent-Length: 1000\r\n\r\n{\"fs_type\":",
    )
    .unwrap();
    let r = read_reply(&mut s).expect("a 408");
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.error().0, "REQUEST_TIMEOUT");
    assert!(closed(&mut s));
    still_serves(&server);
    assert_eq!(server.control.mount_calls(), vec![]);
}

#[test]
fn idle_and_slow_header_connections_are_closed() {
    let server = Server::with_config(ServerConfig {
        header_read_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    // Says nothing.
    let mut silent = server.connect();
    // Starts a request and never finishes its headers.
    let mut slow = server.connect();
    slow.write_all(b"GET /api/v1/daemon HTTP/1.1\r\nHost: un")
        .unwrap();
    // Finishes one request and then idles on keep-alive.
    let mut idle = server.connect();
    idle.write_all(kata_request("GET", "/api/v1/daemon", None).as_bytes())
        .unwrap();
    assert_eq!(read_reply(&mut idle).unwrap().status, 200);
    for s in [&mut silent, &mut slow, &mut idle] {
        // EOF (or a 408 then EOF) from the server, not our 60 s read timeout.
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest);
        assert!(
            r.is_ok() || r.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset,
            "closed by the server"
        );
    }
    still_serves(&server);
}

#[test]
fn many_connections_at_once() {
    let server = Server::with_config(ServerConfig {
        max_connections: 4,
        ..Default::default()
    });
    // More open connections than the limit: the extra ones wait, none is lost.
    let mut conns: Vec<UnixStream> = (0..10).map(|_| server.connect()).collect();
    for s in &mut conns {
        s.write_all(
            (kata_request("GET", "/api/v1/daemon", None)
                .replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n"))
            .as_bytes(),
        )
        .unwrap();
    }
    for s in &mut conns {
        assert_eq!(read_reply(s).unwrap().status, 200);
    }
}

// ---------------------------------------------------------------------------------------
// The socket and the server's life.

#[test]
fn bind_makes_a_private_socket_and_replaces_only_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");

    let live = api::bind(&sock).unwrap();
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Someone listens there: not replaced.
    let e = api::bind(&sock).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");

    // The listener is gone, its file stays (a killed daemon): replaced.
    drop(live);
    assert!(sock.exists());
    let again = api::bind(&sock).unwrap();
    assert!(UnixStream::connect(&sock).is_ok());
    drop(again);

    // Not a socket: left alone.
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    let e = api::bind(&file).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // A directory that does not exist.
    assert!(api::bind(Path::new("/nonexistent-dir/api.sock")).is_err());
}

#[test]
fn shutdown_returns_and_stops_accepting() {
    let server = Server::start();
    still_serves(&server);
    let sock = server.sock.clone();
    let mut open = server.connect();
    server.stop().expect("serve returns Ok");
    // The idle connection was closed, and nobody accepts any more.
    assert!(closed(&mut open));
    match UnixStream::connect(&sock) {
        Err(_) => {}
        Ok(mut s) => {
            let _ = s.write_all(kata_request("GET", "/api/v1/daemon", None).as_bytes());
            assert!(read_reply(&mut s).is_none());
        }
    }
}
