//! VMM reconnects through the native front end, cloud-hypervisor style: with `--reconnect`
//! our daemon serves connection after connection on one socket with the same FUSE session
//! (the front end never sends INIT again and keeps its node ids and handles), every byte read
//! verified, its memory flat over 100 reconnects; without the flag it exits on the first
//! disconnect, as virtiofsd does. Correctness and resources only: no timing is asserted.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use harness::daemon::Daemon;
use harness::tree::frontend_tree as tree;
use harness::{image, DAEMON_DEADLINE};
use virtiofs_frontend::{run, Profile, RunOptions, RunReport, Workload};

/// The image built from [`tree`], made once.
fn target() -> &'static str {
    static IMAGE: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    &IMAGE
        .get_or_init(|| {
            let oci = tempfile::tempdir().unwrap();
            let img = image::build(tree(), oci.path(), "reconnect", true);
            (oci, img.target)
        })
        .1
}

/// cloud-hypervisor, two request queues, depth 16, walk then read the whole image, verified.
fn options(socket: &Path, reconnects: usize, every: usize) -> RunOptions {
    let mut o = RunOptions::new(socket);
    o.profile = Profile::CloudHypervisor;
    o.request_queues = 2;
    o.queue_size = 256;
    o.depth = 16;
    o.workloads = vec![Workload::Walk, Workload::Read];
    o.verify = Some(tree().to_path_buf());
    o.reconnects = reconnects;
    o.reconnect_every = every;
    o
}

fn files(root: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += files(&e.path());
        } else if t.is_file() {
            n += 1;
        }
    }
    n
}

fn check_verified(r: &RunReport) {
    assert_eq!(r.verified_files, Some(files(tree())), "{r:?}");
    for w in &r.workloads {
        assert!(w.ops > 0, "{w:?}");
    }
}

/// The process serving the device: the sandboxed child of the supervisor `pid`, if any.
fn server_pid(pid: u32) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(pid)
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..i + 3].to_string()))
        .is_some_and(|state| state != "Z" && state != "X")
}

fn connections(d: &Daemon) -> usize {
    d.stderr()
        .iter()
        .filter(|l| l.contains("front end connected"))
        .count()
}

/// Stops a daemon that keeps listening, as Kata does (SIGTERM), and checks it exits cleanly.
fn terminate(mut d: Daemon) {
    // SAFETY: kill(2) on our own child's pid, with a plain signal number.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) }, 0);
    let status = d.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
}

#[test]
fn twenty_reconnects_mid_read_every_byte_verified_and_the_daemon_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let daemon = image::serve(&socket, target(), &["--reconnect"]);
    // Every 8 completions: all 20 reconnects fall inside the walk and the reads.
    let o = options(&socket, 20, 8);
    let r = run(&o).unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    assert_eq!(r.reconnects, 20);
    assert_eq!(r.reconnects_during_workloads, 20, "{r:?}");
    let inits = r.messages.iter().filter(|m| *m == "(reconnected)").count();
    assert_eq!(inits, 20, "{:?}", r.messages);
    check_verified(&r);
    let read = r.workloads.iter().find(|w| w.workload == Workload::Read);
    assert!(read.is_some_and(|w| w.bytes > 6 << 20), "{r:?}");
    // The session's end was one more disconnect: the daemon is still there, listening.
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(daemon.pid()), "{:#?}", daemon.stderr());
    assert_eq!(connections(&daemon), 21, "{:#?}", daemon.stderr());
    UnixStream::connect(&socket).expect("still listening");
    terminate(daemon);
}

#[test]
fn without_the_flag_the_daemon_exits_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let mut daemon = image::serve(&socket, target(), &[]);
    let r = run(&options(&socket, 0, 1)).unwrap_or_else(|e| panic!("{e}"));
    check_verified(&r);
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
    assert!(UnixStream::connect(&socket).is_err(), "nobody listens");
}

#[test]
fn memory_stays_flat_over_a_hundred_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let daemon = image::serve(&socket, target(), &["--reconnect"]);
    let server = server_pid(daemon.pid());
    // Warm-up: 10 reconnects during the workloads (caches and allocator arenas fill), then
    // 100 at the end, each checked with a GETATTR. RSS is sampled when connection 11 is up
    // and once the last one is closed.
    let daemon = Arc::new(Mutex::new(daemon));
    let before = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (daemon, before, done) = (daemon.clone(), before.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if before.lock().unwrap().is_none() && connections(&daemon.lock().unwrap()) >= 11 {
                    *before.lock().unwrap() = Some(vm_rss_kib(server));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let o = options(&socket, 110, 40);
    let r = run(&o);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let daemon = Arc::try_unwrap(daemon).ok().unwrap().into_inner().unwrap();
    let r = r.unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    assert_eq!(r.reconnects, 110);
    check_verified(&r);
    std::thread::sleep(Duration::from_millis(200));
    let after = vm_rss_kib(server);
    let before = before.lock().unwrap().expect("connection 11 was seen");
    eprintln!("server VmRSS: {before} KiB at connection 11, {after} KiB after connection 111");
    assert!(
        after < before + 2048,
        "VmRSS grew from {before} to {after} KiB over 100 reconnects"
    );
    assert!(alive(daemon.pid()));
    terminate(daemon);
}

/// Kata's nydus mode (`virtiofs --apisock`) takes the flag too: an empty mount table's root
/// answers after each of 5 reconnects.
#[test]
fn mount_table_mode_serves_across_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let api = dir.path().join("api.sock");
    let daemon = Daemon::spawn(&[
        "virtiofs",
        "--apisock",
        api.to_str().unwrap(),
        "--sock",
        socket.to_str().unwrap(),
        "--reconnect",
    ]);
    daemon.wait_for_line(harness::daemon::READY_LINE, DAEMON_DEADLINE);
    let mut o = options(&socket, 5, 1);
    o.workloads = Vec::new();
    o.verify = None;
    let r = run(&o).unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    assert_eq!(r.reconnects, 5);
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(daemon.pid()), "{:#?}", daemon.stderr());
    assert_eq!(connections(&daemon), 6, "{:#?}", daemon.stderr());
    terminate(daemon);
}
