//! Kata's conversation, as its Go runtime holds it, and the metrics; curl as a standard client.

use std::io::Write;

use puzzlefs_virtiofsd::api::MountRequest;
use puzzlefs_virtiofsd::mounts::MetricsSnapshot;

use crate::support::*;

#[test]
fn kata_conversation() {
    let server = Server::start();

    // Readiness: Kata parses the body whatever the status; runtime-rs wants 200.
    let r = server.kata("GET", "/api/v1/daemon", None);
    assert_eq!(r.status, 200);
    let info = r.json();
    assert_eq!(info["state"], "RUNNING");
    assert_eq!(info["id"], "test-daemon");
    let version = info["version"].as_object().expect("version is an object");
    for k in [
        "package_ver",
        "git_commit",
        "build_time",
        "profile",
        "rustc",
    ] {
        assert!(version[k].is_string(), "version.{k}: {info}");
    }

    // The shared directory.
    let body = r#"{"fs_type":"passthrough_fs","source":"/run/kata-containers/shared/sandboxes/s1/shared","config":""}"#;
    let r = server.kata("POST", "/api/v1/mount?mountpoint=/containers", Some(body));
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), None);

    // A container image, the query not encoded, the config a JSON string.
    let src = "/var/lib/containerd-nydus/snapshots/12/fs/image/image.boot";
    let r = server.kata(
        "POST",
        "/api/v1/mount?mountpoint=/rafs/0123abcd_x-y.z/lowerdir",
        Some(&rafs_body(src)),
    );
    assert_eq!(r.status, 204, "{r:?}");

    let info = server.kata("GET", "/api/v1/daemon", None).json();
    let mounts = info["backend_collection"].as_object().unwrap();
    assert_eq!(mounts.len(), 2, "{info}");
    assert_eq!(mounts["/containers"]["fs_type"], "passthrough_fs");
    assert_eq!(mounts["/rafs/0123abcd_x-y.z/lowerdir"]["source"], src);

    let r = server.kata(
        "DELETE",
        "/api/v1/mount?mountpoint=/rafs/0123abcd_x-y.z/lowerdir",
        None,
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());

    assert_eq!(
        server.control.mount_calls(),
        vec![
            Call::Mount(
                "/containers".into(),
                MountRequest {
                    fs_type: "passthrough_fs".into(),
                    source: "/run/kata-containers/shared/sandboxes/s1/shared".into(),
                    config: String::new(),
                    overlay: None,
                }
            ),
            Call::Mount(
                "/rafs/0123abcd_x-y.z/lowerdir".into(),
                MountRequest {
                    fs_type: "rafs".into(),
                    source: src.into(),
                    config: RAFS_CONFIG.into(),
                    overlay: None,
                }
            ),
            Call::Umount("/rafs/0123abcd_x-y.z/lowerdir".into()),
        ]
    );
    server.stop().unwrap();
}

#[test]
fn encoded_and_raw_queries_reach_the_control_alike() {
    let server = Server::start();
    let body = rafs_body("/b");
    let r = server.kata(
        "POST",
        "/api/v1/mount?mountpoint=%2Frafs%2Fc1%2Flowerdir%2F",
        Some(&body),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let r = server.kata("DELETE", "/api/v1/mount?mountpoint=/rafs/c1/lowerdir", None);
    assert_eq!(r.status, 204, "{r:?}");
    // Raw UTF-8 (a client that sends it unencoded) and its encoded form are one name.
    let raw = kata_request("POST", "/api/v1/mount?mountpoint=/caf\u{e9}", Some(&body));
    assert_eq!(server.raw(raw.as_bytes()).status, 204);
    let r = server.kata("DELETE", "/api/v1/mount?mountpoint=/caf%C3%A9", None);
    assert_eq!(r.status, 204, "{r:?}");
    let calls = server.control.mount_calls();
    assert!(matches!(&calls[0], Call::Mount(mp, _) if mp == "/rafs/c1/lowerdir"));
    assert_eq!(calls[1], Call::Umount("/rafs/c1/lowerdir".into()));
    assert!(matches!(&calls[2], Call::Mount(mp, _) if mp == "/caf\u{e9}"));
    assert_eq!(calls[3], Call::Umount("/caf\u{e9}".into()));
}

/// runtime-rs (hyper client): the query percent-encoded, `Content-Type: application/json`
/// and an empty body on every request, GET and DELETE included; it requires 200 on GET.
#[test]
fn runtime_rs_conversation() {
    let server = Server::start();
    let empty = |method: &str, target: &str| {
        format!(
            "{method} {target} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"
        )
    };
    let r = server.raw(empty("GET", "/api/v1/daemon").as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "RUNNING");
    let body = r#"{"fs_type":"passthrough_fs","source":"/run/kata-containers/shared/sandboxes/s/rw","config":""}"#;
    let post = format!(
        "POST /api/v1/mount?mountpoint=%2Fcontainers HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(server.raw(post.as_bytes()).status, 204);
    let r = server.raw(empty("DELETE", "/api/v1/mount?mountpoint=%2Fcontainers").as_bytes());
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(
        server.control.mount_calls()[1],
        Call::Umount("/containers".into())
    );
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start();
    let mut s = server.connect();
    for _ in 0..3 {
        s.write_all(kata_request("GET", "/api/v1/daemon", None).as_bytes())
            .unwrap();
        let r = read_reply(&mut s).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["state"], "RUNNING");
    }
    let body = r#"{"fs_type":"passthrough_fs","source":"/x","config":""}"#;
    s.write_all(
        kata_request("POST", "/api/v1/mount?mountpoint=/containers", Some(body)).as_bytes(),
    )
    .unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 204);
    // Two requests in one write (pipelined).
    let two = kata_request("GET", "/metrics", None) + &kata_request("GET", "/api/v1/daemon", None);
    s.write_all(two.as_bytes()).unwrap();
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
    assert_eq!(read_reply(&mut s).unwrap().status, 200);
}

#[test]
fn metrics_json_and_prometheus() {
    let server = Server::start();
    let r = server.kata("GET", "/api/v1/metrics", None);
    assert_eq!(r.status, 200);
    let back: MetricsSnapshot = serde_json::from_value(r.json()).unwrap();
    assert_eq!(back, snapshot());

    let r = server.kata("GET", "/api/v1/metrics/blobcache", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["hits"], 3);
    assert_eq!(r.json()["capacity_bytes"], 1 << 20);

    let r = server.kata("GET", "/metrics", None);
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("\npuzzlefs_live_mounts 1\n"), "{text}");
    assert!(text.contains(
        "\npuzzlefs_read_bytes_total{mountpoint=\"/containers\",fs_type=\"passthrough_fs\"} 123\n"
    ));
    assert!(text.contains("\npuzzlefs_chunk_store_hits_total 3\n"));
}

// ---------------------------------------------------------------------------------------
// A standard HTTP client: curl (scripts/setup.sh installs it).

#[test]
fn curl_speaks_to_it() {
    assert!(
        std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_ok(),
        "curl is missing (apt-get install curl)"
    );
    let server = Server::start();
    let curl = |args: &[&str]| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&server.sock)
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (body.to_string(), code.to_string())
    };
    let (body, code) = curl(&["http://localhost/api/v1/daemon"]);
    assert_eq!(code, "200");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "RUNNING");

    let (body, code) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"fs_type":"passthrough_fs","source":"/x","config":""}"#,
        "http://localhost/api/v1/mount?mountpoint=/containers",
    ]);
    assert_eq!((body.as_str(), code.as_str()), ("", "204"));
    // curl's own encoding of the query.
    let (_, code) = curl(&[
        "-G",
        "-X",
        "DELETE",
        "--data-urlencode",
        "mountpoint=/containers",
        "http://localhost/api/v1/mount",
    ]);
    assert_eq!(code, "204");
    // A large body (curl may ask `Expect: 100-continue` first): 413 either way.
    let big = format!(r#"{{"source":"{}"}}"#, "x".repeat(100 * 1024));
    let (body, code) = curl(&["-d", &big, "http://localhost/api/v1/mount?mountpoint=/big"]);
    assert_eq!(code, "413", "{body}");
    assert!(body.contains("PAYLOAD_TOO_LARGE"));
    assert_eq!(
        server.control.mount_calls(),
        vec![
            Call::Mount(
                "/containers".into(),
                MountRequest {
                    fs_type: "passthrough_fs".into(),
                    source: "/x".into(),
                    config: String::new(),
                    overlay: None,
                }
            ),
            Call::Umount("/containers".into()),
        ]
    );
}
