//! A hostile (or buggy) runtime on the API while a guest reads: every malformed or refused
//! request gets its exact status and a JSON `{"code","message"}` body and changes nothing;
//! meanwhile another client mounts and unmounts other mount points in a loop, and the guest
//! walks, reads and checks a stable mount over and over. The reads stay correct, the daemon
//! stays up, and afterwards the daemon's `backend_collection` and counters are exactly what
//! the successful requests made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use virtiofs_frontend::{Guest, RunOptions, Workload};

use super::{assert_error_body, file_stats, fixtures, open_fds, serving_pid, TableDaemon};
use crate::harness::api;

/// Mount/unmount cycles of the churning client.
const CYCLES: usize = 200;
/// Passes over the list of bad requests.
const PASSES: usize = 5;
const MAX_BODY: usize = 64 * 1024;

/// Sets the flag when dropped: a panicking thread still releases the others.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One bad request and the status it must get.
struct Bad {
    what: String,
    method: &'static str,
    path: String,
    body: Option<String>,
    status: u16,
}

fn post(what: &str, at: &str, body: String, status: u16) -> Bad {
    Bad {
        what: what.into(),
        method: "POST",
        path: format!("/api/v1/mount?mountpoint={at}"),
        body: Some(body),
        status,
    }
}

fn mount_body(fs_type: &str, source: &str, config: &str) -> String {
    serde_json::json!({"fs_type": fs_type, "source": source, "config": config}).to_string()
}

/// A mount request at `at` that must be refused with `status`.
fn refused(what: &str, at: &str, fs_type: &str, source: &str, config: &str, status: u16) -> Bad {
    post(what, at, mount_body(fs_type, source, config), status)
}

fn other(what: &str, method: &'static str, path: &str, status: u16) -> Bad {
    Bad {
        what: what.into(),
        method,
        path: path.into(),
        body: None,
        status,
    }
}

/// Directories the test mounts from, inside and outside `--allow-mount-from`.
struct Dirs {
    allowed: PathBuf,
    outside: PathBuf,
    share: PathBuf,
    _tmp: tempfile::TempDir,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let allowed = root.join("allowed");
    let outside = root.join("outside");
    let share = allowed.join("share");
    std::fs::create_dir_all(share.join("sub")).unwrap();
    std::fs::write(share.join("sub/file"), b"shared\n").unwrap();
    std::fs::write(allowed.join("a-file"), b"not a directory\n").unwrap();
    std::fs::create_dir_all(outside.join("oci")).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    Dirs {
        allowed,
        outside,
        share,
        _tmp: tmp,
    }
}

fn bad_requests(d: &Dirs) -> Vec<Bad> {
    let fx = fixtures();
    let oci = fx.oci.display().to_string();
    let tag = fx.sets[0].zstd.target.as_str();
    let allowed = |p: &str| d.allowed.join(p).display().to_string();
    let outside = d.outside.display().to_string();
    let other_digest = format!(r#"{{"digest":"{}"}}"#, fx.sets[1].plain.digest);
    let by_digest = format!("{oci}@{}", fx.sets[0].zstd.digest);
    let zeros = format!("{oci}@sha256:{}", "0".repeat(64));
    let mut oversize = mount_body("rafs", tag, "");
    oversize.insert_str(1, &format!(r#""pad":"{}","#, "x".repeat(MAX_BODY)));
    let pt = "passthrough_fs";
    vec![
        // The request itself.
        refused(
            "unknown fs_type",
            "/x",
            "overlay",
            &allowed("share"),
            "",
            400,
        ),
        refused("empty fs_type", "/x", "", &allowed("share"), "", 400),
        post(
            "malformed JSON",
            "/x",
            r#"{"fs_type":"rafs","source":"#.into(),
            400,
        ),
        post("JSON not an object", "/x", r#"["rafs"]"#.into(), 400),
        post("no source", "/x", r#"{"fs_type":"rafs"}"#.into(), 400),
        post(
            "config not a string",
            "/x",
            format!(r#"{{"fs_type":"rafs","source":"{tag}","config":{{}}}}"#),
            400,
        ),
        post("empty body", "/x", String::new(), 400),
        post(
            "a writable overlay",
            "/x",
            format!(r#"{{"fs_type":"rafs","source":"{tag}","overlay":"{{}}"}}"#),
            400,
        ),
        post("body over 64 KiB", "/x", oversize, 413),
        refused("config not JSON", "/x", "rafs", tag, "not json", 400),
        refused(
            "config digest not a digest",
            "/x",
            "rafs",
            tag,
            r#"{"digest":"x"}"#,
            400,
        ),
        refused(
            "cache mode unknown",
            "/x",
            "rafs",
            tag,
            r#"{"cache":"often"}"#,
            400,
        ),
        // The mount point.
        refused("relative mountpoint", "x", "rafs", tag, "", 400),
        refused("'..' in the mountpoint", "/a/../b", "rafs", tag, "", 400),
        refused("'..' as the mountpoint", "/..", "rafs", tag, "", 400),
        refused("'..' percent-encoded", "/a/%2e%2e", "rafs", tag, "", 400),
        refused("'.' in the mountpoint", "/a/./b", "rafs", tag, "", 400),
        refused("empty component", "/a//b", "rafs", tag, "", 400),
        refused("the root", "/", "rafs", tag, "", 400),
        refused("NUL in the mountpoint", "/a%00b", "rafs", tag, "", 400),
        refused("bad percent-encoding", "/a%zz", "rafs", tag, "", 400),
        refused("mountpoint twice", "/a&mountpoint=/b", "rafs", tag, "", 400),
        refused(
            "component over 255 bytes",
            &format!("/{}", "n".repeat(256)),
            "rafs",
            tag,
            "",
            400,
        ),
        post("missing mountpoint", "", mount_body("rafs", tag, ""), 400),
        Bad {
            what: "no query".into(),
            method: "POST",
            path: "/api/v1/mount".into(),
            body: Some(mount_body("rafs", tag, "")),
            status: 400,
        },
        other("other parameter", "POST", "/api/v1/mount?mp=/x", 400),
        other(
            "DELETE without a mountpoint",
            "DELETE",
            "/api/v1/mount",
            400,
        ),
        other(
            "DELETE of a relative path",
            "DELETE",
            "/api/v1/mount?mountpoint=held",
            400,
        ),
        // The source.
        refused(
            "passthrough outside the allow-list",
            "/x",
            pt,
            &outside,
            "",
            400,
        ),
        refused(
            "image outside the allow-list",
            "/x",
            "rafs",
            &format!("{outside}/oci:t"),
            "",
            400,
        ),
        refused(
            "symlink out of the allow-list",
            "/x",
            pt,
            &allowed("escape"),
            "",
            400,
        ),
        refused("/proc", "/x", pt, "/proc", "", 400),
        refused("/proc/self", "/x", pt, "/proc/self", "", 400),
        refused("/sys", "/x", pt, "/sys", "", 400),
        refused("/", "/x", pt, "/", "", 400),
        refused(
            "non-existent directory",
            "/x",
            pt,
            &allowed("missing"),
            "",
            400,
        ),
        refused(
            "a file, not a directory",
            "/x",
            pt,
            &allowed("a-file"),
            "",
            400,
        ),
        refused("relative source", "/x", pt, "share", "", 400),
        refused("image source without a tag", "/x", "rafs", &oci, "", 400),
        refused("relative image source", "/x", "rafs", "oci:tag", "", 400),
        refused("bad tag", "/x", "rafs", &format!("{oci}:bad tag"), "", 400),
        refused(
            "missing tag",
            "/x",
            "rafs",
            &format!("{oci}:no-such-tag"),
            "",
            400,
        ),
        refused("missing manifest", "/x", "puzzlefs", &zeros, "", 400),
        refused(
            "not an OCI layout",
            "/x",
            "rafs",
            &format!("{}:t", allowed("share")),
            "",
            400,
        ),
        refused("refused by its pin", "/x", "rafs", tag, &other_digest, 400),
        refused(
            "digest source, other pin",
            "/x",
            "rafs",
            &by_digest,
            &other_digest,
            400,
        ),
        // The table.
        refused("already mounted", "/held", "rafs", tag, "", 409),
        refused(
            "already mounted, other type",
            "/held",
            pt,
            &allowed("share"),
            "",
            409,
        ),
        refused(
            "already mounted, trailing slash",
            "/held/",
            "rafs",
            tag,
            "",
            409,
        ),
        refused("inside a mount", "/held/sub", "rafs", tag, "", 409),
        refused(
            "inside a mount, deeper",
            "/stable/a/b",
            pt,
            &allowed("share"),
            "",
            409,
        ),
        refused("mounts below it", "/below", "rafs", tag, "", 409),
        other(
            "not mounted",
            "DELETE",
            "/api/v1/mount?mountpoint=/nothing",
            404,
        ),
        other(
            "a table directory",
            "DELETE",
            "/api/v1/mount?mountpoint=/below",
            404,
        ),
        other(
            "inside a mount",
            "DELETE",
            "/api/v1/mount?mountpoint=/held/sub",
            404,
        ),
        // Routes and methods.
        other(
            "GET of the mount route",
            "GET",
            "/api/v1/mount?mountpoint=/held",
            405,
        ),
        other("remount", "PUT", "/api/v1/mount?mountpoint=/held", 405),
        other("POST of the daemon", "POST", "/api/v1/daemon", 405),
        other("DELETE of the metrics", "DELETE", "/api/v1/metrics", 405),
        other("unknown path", "GET", "/api/v1/nothing", 404),
    ]
}

/// The guest's side: walk, read and check `/stable` until `done`, at least twice; returns
/// the rounds and the guest, still connected (the daemon ends with its VMM).
fn read_until(
    d: &TableDaemon,
    tree: &Path,
    started: &AtomicBool,
    done: &AtomicBool,
) -> (usize, Guest) {
    let _release = SetOnDrop(started);
    let mut o = RunOptions::new(&d.sock);
    o.request_queues = 2;
    o.depth = 8;
    o.queue_size = 256;
    o.random_reads = 200;
    let mut g = Guest::connect(&o).unwrap();
    let root = g.lookup_path("/stable").unwrap().unwrap().nodeid;
    let files = file_stats(tree).files;
    let all = [
        Workload::Walk,
        Workload::Readdirplus,
        Workload::Read,
        Workload::Random,
    ];
    let mut rounds = 0;
    loop {
        let r = g
            .workloads(root, Some(tree), &all)
            .unwrap_or_else(|e| panic!("round {rounds}: {e}"));
        assert_eq!(r.verified_files, files, "round {rounds}");
        rounds += 1;
        started.store(true, Ordering::SeqCst);
        if done.load(Ordering::SeqCst) && rounds >= 2 {
            break;
        }
    }
    (rounds, g)
}

/// Mounts and unmounts other mount points, images and a directory, `CYCLES` times.
fn churn(d: &TableDaemon, share: &Path) {
    let fx = fixtures();
    for i in 0..CYCLES {
        let set = &fx.sets[i % fx.sets.len()];
        let c = i % 3;
        let image = format!("/rafs/c{c}/lowerdir");
        d.must_mount(&image, "rafs", &set.zstd.target, "");
        d.must_mount(
            "/churn/share",
            "passthrough_fs",
            share.to_str().unwrap(),
            "",
        );
        d.must_umount(&image);
        d.must_umount("/churn/share");
    }
}

#[test]
fn bad_requests_get_their_status_while_a_guest_reads() {
    let fx = fixtures();
    let dirs = dirs();
    let oci_parent = fx.oci.parent().unwrap().canonicalize().unwrap();
    let d = TableDaemon::start(&[
        "--allow-mount-from",
        dirs.allowed.to_str().unwrap(),
        "--allow-mount-from",
        oci_parent.to_str().unwrap(),
    ]);
    let stable = &fx.sets[0];
    let held = format!("{}@{}", fx.oci.display(), fx.sets[1].plain.digest);
    let below = fx.sets[2].plain.target.clone();
    d.must_mount("/stable", "rafs", &stable.zstd.target, "");
    d.must_mount("/held", "puzzlefs", &held, "");
    d.must_mount("/below/x", "rafs", &below, "{}");
    let mut mounts = 3;
    let mut umounts = 0;

    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let (rounds, guest) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_until(&d, &stable.tree, &started, &done));
        let _stop = SetOnDrop(&done);
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let serving = serving_pid(d.daemon.pid());
        let fds = open_fds(serving);
        let churner = scope.spawn(|| churn(&d, &dirs.share));
        let bad = bad_requests(&dirs);
        for pass in 0..PASSES {
            for b in &bad {
                let r = api::request(&d.api, b.method, &b.path, b.body.as_deref())
                    .unwrap_or_else(|e| panic!("{}: {e}", b.what));
                assert_error_body(&r, b.status, &format!("pass {pass}: {}", b.what));
                // The message is for whoever reads Kata's log: it names what the request
                // named, not how the sandboxed process reached it.
                assert!(!r.body.contains("/proc/self/fd"), "{}: {}", b.what, r.body);
            }
            // The largest body taken is taken.
            let mut body = mount_body("rafs", &stable.plain.target, "");
            let pad = MAX_BODY - body.len() - r#""pad":"","#.len();
            body.insert_str(1, &format!(r#""pad":"{}","#, "y".repeat(pad)));
            assert_eq!(body.len(), MAX_BODY);
            let r = api::request(
                &d.api,
                "POST",
                "/api/v1/mount?mountpoint=/boundary",
                Some(&body),
            )
            .unwrap();
            assert_eq!(r.status, 204, "a body of exactly 64 KiB: {}", r.body);
            d.must_umount("/boundary");
            mounts += 1;
            umounts += 1;
        }
        churner.join().expect("the churning client failed");
        // Every unmount and every refusal closed what its request brought.
        assert_eq!(
            open_fds(serving),
            fds,
            "descriptors leaked by the serving process"
        );
        done.store(true, Ordering::SeqCst);
        reader.join().expect("the guest failed")
    });
    assert!(rounds >= 2, "{rounds}");
    eprintln!("the guest read /stable {rounds} times over");
    mounts += 2 * CYCLES;
    umounts += 2 * CYCLES;

    let want: BTreeMap<String, (String, String)> = [
        ("/below/x", "rafs", below.as_str()),
        ("/held", "puzzlefs", held.as_str()),
        ("/stable", "rafs", stable.zstd.target.as_str()),
    ]
    .into_iter()
    .map(|(at, t, s)| (at.to_string(), (t.to_string(), s.to_string())))
    .collect();
    assert_eq!(d.backends(), want, "only what succeeded is mounted");
    let m = d.metrics();
    assert_eq!(m["mounts_total"], mounts as u64, "{m}");
    assert_eq!(m["umounts_total"], umounts as u64, "{m}");
    let live: Vec<&str> = m["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["mountpoint"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["/below/x", "/held", "/stable"]);
    guest.stop().unwrap();
    let status = { d.daemon }.wait_exit(crate::harness::DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
}

/// Clients racing each other: many mount requests for one mount point at once get exactly
/// one 204 (the winner's source is what is mounted) and 409 for the rest; as many unmounts
/// get one 204 and 404s. Mounts of distinct mount points at once all succeed, each in a
/// slot of its own.
#[test]
fn racing_clients_one_mount_point_one_winner() {
    const CLIENTS: usize = 16;
    let fx = fixtures();
    let d = TableDaemon::start(&[]);
    let source = |i: usize| fx.sets[i % fx.sets.len()].plain.target.clone();
    for round in 0..4 {
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let all: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let d = &d;
                    let src = source(i);
                    scope.spawn(move || d.mount("/contested", "rafs", &src, "").status)
                })
                .collect();
            all.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..CLIENTS).filter(|&i| statuses[i] == 204).collect();
        assert_eq!(winners.len(), 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|&s| s == 204 || s == 409),
            "round {round}: {statuses:?}"
        );
        let backends = d.backends();
        assert_eq!(
            backends["/contested"].1,
            source(winners[0]),
            "round {round}"
        );
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let all: Vec<_> = (0..CLIENTS)
                .map(|_| scope.spawn(|| api::umount(&d.api, "/contested").status))
                .collect();
            all.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(
            statuses.iter().filter(|&&s| s == 204).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|&s| s == 204 || s == 404),
            "{statuses:?}"
        );
        assert!(d.backends().is_empty());
    }
    std::thread::scope(|scope| {
        for i in 0..2 * CLIENTS {
            let d = &d;
            let src = source(i);
            scope.spawn(move || d.must_mount(&format!("/rafs/c{i}/lowerdir"), "rafs", &src, ""));
        }
    });
    let m = d.metrics();
    let slots: std::collections::BTreeSet<u64> = m["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(slots.len(), 2 * CLIENTS, "a slot each: {slots:?}");
    assert_eq!(d.backends().len(), 2 * CLIENTS);
    std::thread::scope(|scope| {
        for i in 0..2 * CLIENTS {
            let d = &d;
            scope.spawn(move || d.must_umount(&format!("/rafs/c{i}/lowerdir")));
        }
    });
    assert!(d.backends().is_empty());
    assert_eq!(d.metrics()["mounts"].as_array().unwrap().len(), 0);
}
