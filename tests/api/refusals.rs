//! What is refused, by this layer (before the Control is called) or by the Control (its
//! kind kept), and a Control that panics or blocks.

use std::io::Write;
use std::os::unix::net::UnixStream;

use puzzlefs_virtiofsd::api::ServerConfig;

use crate::support::*;

// ---------------------------------------------------------------------------------------
// Refusals at this layer: the Control is never called.

#[test]
fn bad_requests_are_refused_before_the_control() {
    let server = Server::start();
    let ok_body = r#"{"fs_type":"passthrough_fs","source":"/x","config":""}"#;
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/api/v1/mount?mountpoint=/a",
            Some("{not json"),
            400,
            "invalid mount request body",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a",
            Some(""),
            400,
            "invalid mount request body",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a",
            Some(r#"{"fs_type":"rafs","config":""}"#),
            400,
            "source",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a",
            Some(r#"{"source":"/x","config":{}}"#),
            400,
            "invalid mount request body",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=containers",
            Some(ok_body),
            400,
            "not an absolute path",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/rafs/../etc",
            Some(ok_body),
            400,
            "\"..\"",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a/./b",
            Some(ok_body),
            400,
            "\".\"",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a//b",
            Some(ok_body),
            400,
            "empty component",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a%00b",
            Some(ok_body),
            400,
            "control character",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a%FF",
            Some(ok_body),
            400,
            "not UTF-8",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a%zz",
            Some(ok_body),
            400,
            "percent-encoding",
        ),
        (
            "POST",
            "/api/v1/mount",
            Some(ok_body),
            400,
            "'mountpoint' should be specified",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=",
            Some(ok_body),
            400,
            "not an absolute path",
        ),
        (
            "POST",
            "/api/v1/mount?mountpoint=/a&mountpoint=/b",
            Some(ok_body),
            400,
            "more than once",
        ),
        (
            "DELETE",
            "/api/v1/mount",
            None,
            400,
            "'mountpoint' should be specified",
        ),
        (
            "DELETE",
            "/api/v1/mount?mountpoint=../x",
            None,
            400,
            "not an absolute path",
        ),
        ("GET", "/api/v1/nothing", None, 404, "no such path"),
        ("GET", "/", None, 404, "no such path"),
        ("GET", "/api/v1/daemon/", None, 404, "no such path"),
        (
            "GET",
            "/api/v1/mount?mountpoint=/a",
            None,
            405,
            "GET is not allowed on /api/v1/mount",
        ),
        (
            "PUT",
            "/api/v1/mount?mountpoint=/a",
            Some(ok_body),
            405,
            "remounting",
        ),
        (
            "POST",
            "/api/v1/daemon",
            Some("{}"),
            405,
            "POST is not allowed",
        ),
        ("DELETE", "/metrics", None, 405, "DELETE is not allowed"),
        ("GET", "/api/v1/daemon/events", None, 501, "not provided"),
        ("GET", "/api/v1/metrics/files", None, 501, "not provided"),
        ("PUT", "/api/v1/daemon/exit", None, 501, "not provided"),
    ];
    for &(method, target, body, status, needle) in cases {
        let r = server.kata(method, target, body);
        assert_eq!(r.status, status, "{method} {target}: {r:?}");
        let (code, message) = r.error();
        assert!(message.contains(needle), "{method} {target}: {message:?}");
        assert!(!code.is_empty());
        if status == 405 {
            assert!(r.header("allow").is_some(), "{method} {target}: Allow");
        }
    }
    assert_eq!(
        server.kata("GET", "/api/v1/mount", None).header("allow"),
        Some("POST, DELETE")
    );
    assert_eq!(
        server.kata("PUT", "/api/v1/daemon", None).header("allow"),
        Some("GET")
    );
    assert_eq!(
        server.control.mount_calls(),
        vec![],
        "the Control saw none of them"
    );
}

#[test]
fn bodies_over_the_limit_get_413() {
    let server = Server::with_config(ServerConfig {
        max_body_bytes: 1024,
        ..Default::default()
    });
    let big = format!(
        r#"{{"fs_type":"rafs","source":"/x","config":"{}"}}"#,
        "a".repeat(2000)
    );
    // Declared: refused on Content-Length, before the body is read (it is not even sent).
    let mut head = kata_request("POST", "/api/v1/mount?mountpoint=/a", Some(&big));
    head.truncate(head.len() - big.len());
    let r = server.raw(head.as_bytes());
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.error().0, "PAYLOAD_TOO_LARGE");
    assert_eq!(r.header("connection"), Some("close"));

    // Declared and sent.
    let r = server.kata("POST", "/api/v1/mount?mountpoint=/a", Some(&big));
    assert_eq!(r.status, 413, "{r:?}");

    // Chunked, no Content-Length: cut off at the limit.
    let mut chunked = String::from(
        "POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nHost: unix\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..3 {
        chunked += &format!("{:x}\r\n{}\r\n", 700, "b".repeat(700));
    }
    chunked += "0\r\n\r\n";
    let r = server.raw(chunked.as_bytes());
    assert_eq!(r.status, 413, "{r:?}");

    // A chunked body under the limit is fine.
    let small = r#"{"fs_type":"passthrough_fs","source":"/x","config":""}"#;
    let chunked = format!(
        "POST /api/v1/mount?mountpoint=/small HTTP/1.1\r\nHost: unix\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n",
        small.len()
    );
    assert_eq!(server.raw(chunked.as_bytes()).status, 204);
    assert_eq!(server.control.mount_calls().len(), 1, "only the small one");
}

// ---------------------------------------------------------------------------------------
// The Control's refusals, passed through with their status.

#[test]
fn control_errors_keep_their_kind() {
    let server = Server::start();
    let body = r#"{"fs_type":"rafs","source":"/x","config":"{}"}"#;
    for (mp, status, code) in [
        ("/err/badrequest", 400, "BAD_REQUEST"),
        ("/err/notfound", 404, "NOT_FOUND"),
        ("/err/conflict", 409, "CONFLICT"),
        ("/err/internal", 500, "INTERNAL"),
        ("/err/unsupported", 501, "UNSUPPORTED"),
        ("/err/unavailable", 503, "UNAVAILABLE"),
    ] {
        let r = server.kata(
            "POST",
            &format!("/api/v1/mount?mountpoint={mp}"),
            Some(body),
        );
        assert_eq!(r.status, status, "{mp}: {r:?}");
        assert_eq!(r.error(), (code.to_string(), format!("refused {mp}")));
    }

    // Unknown fs_type is the Control's call.
    let r = server.kata(
        "POST",
        "/api/v1/mount?mountpoint=/a",
        Some(r#"{"fs_type":"ext4","source":"/dev/sda","config":""}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error().1, "unknown fs_type \"ext4\"");

    // Twice at one place; unmounting what is not there.
    let pt = r#"{"fs_type":"passthrough_fs","source":"/x","config":""}"#;
    assert_eq!(
        server
            .kata("POST", "/api/v1/mount?mountpoint=/c", Some(pt))
            .status,
        204
    );
    let r = server.kata("POST", "/api/v1/mount?mountpoint=/c", Some(pt));
    assert_eq!(
        (r.status, r.error().1.as_str()),
        (409, "/c is already mounted")
    );
    let r = server.kata("DELETE", "/api/v1/mount?mountpoint=/nothing", None);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.error(),
        ("NOT_FOUND".into(), "nothing is mounted at /nothing".into())
    );
}

#[test]
fn a_panicking_control_is_a_500_and_the_server_goes_on() {
    let server = Server::start();
    let body = r#"{"fs_type":"rafs","source":"/x","config":""}"#;
    let r = server.kata("POST", "/api/v1/mount?mountpoint=/panic", Some(body));
    assert_eq!(r.status, 500, "{r:?}");
    let (code, message) = r.error();
    assert_eq!(code, "INTERNAL");
    assert!(message.contains("mount at /panic failed"), "{message}");
    assert!(message.contains("the table fell over"), "{message}");
    let r = server.kata("GET", "/api/v1/daemon", None);
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("RUNNING"))
    );
    let pt = r#"{"fs_type":"passthrough_fs","source":"/x","config":""}"#;
    assert_eq!(
        server
            .kata("POST", "/api/v1/mount?mountpoint=/c", Some(pt))
            .status,
        204
    );
}

#[test]
fn a_blocked_mount_does_not_block_the_rest() {
    let server = Server::start();
    let sock = server.sock.clone();
    let blocked = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&sock).unwrap();
        let body = r#"{"fs_type":"rafs","source":"/slow","config":""}"#;
        s.write_all(kata_request("POST", "/api/v1/mount?mountpoint=/block", Some(body)).as_bytes())
            .unwrap();
        read_reply(&mut s).unwrap().status
    });
    server.control.wait_blocked();

    // While that mount is inside the Control: readiness, metrics, and other mounts.
    for _ in 0..3 {
        let r = server.kata("GET", "/api/v1/daemon", None);
        assert_eq!(r.status, 200);
    }
    assert_eq!(server.kata("GET", "/metrics", None).status, 200);
    assert_eq!(server.kata("GET", "/api/v1/metrics", None).status, 200);
    let pt = r#"{"fs_type":"passthrough_fs","source":"/x","config":""}"#;
    assert_eq!(
        server
            .kata("POST", "/api/v1/mount?mountpoint=/other", Some(pt))
            .status,
        204
    );
    assert!(!blocked.is_finished(), "the mount is still blocked");

    server.control.release();
    assert_eq!(blocked.join().unwrap(), 204, "then it finishes");
}
