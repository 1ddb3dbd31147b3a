//! The native vhost-user-fs front end (vmm-tests/frontend) against real back ends: our daemon
//! serving plain and compressed images of a corner-case tree, and virtiofsd 1.14 serving the
//! tree itself as the reference. Every workload runs with `--verify` through both VMM
//! profiles, one and two request queues, depths 1 and 16; the hostile cases run against our
//! daemon (an image, and a copy of the tree served read-write), each answer compared with the
//! one expected (frontend_smoke/hostile.rs), followed by a verified workload. Correctness
//! only: no timing is asserted.
//!
//! Needs virtiofsd 1.14 ($VIRTIOFSD or /opt/virtiofsd/bin/virtiofsd; scripts/setup.sh).

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;
#[path = "frontend_smoke/hostile.rs"]
mod hostile;

use std::path::Path;
use std::time::Duration;

use harness::daemon::{Daemon, READY_LINE};
use harness::tree::frontend_tree as tree;
use harness::virtiofsd::Virtiofsd;
use harness::{image, DAEMON_DEADLINE};
use hostile::Served;
use virtiofs_frontend::{run, FrontendError, Profile, RunOptions, RunReport, Workload};

fn options(socket: &Path, profile: Profile, queues: usize, depth: usize) -> RunOptions {
    let mut o = RunOptions::new(socket);
    o.profile = profile;
    o.request_queues = queues;
    o.depth = depth;
    o.verify = Some(tree().to_path_buf());
    o.random_reads = 300;
    o.queue_size = 256;
    o
}

/// The vhost-user message names of a run, without queue numbers.
fn message_kinds(r: &RunReport) -> Vec<&str> {
    r.messages
        .iter()
        .map(|m| m.split(' ').next().unwrap())
        .collect()
}

fn check_order(r: &RunReport, queues: usize) {
    let kinds = message_kinds(r);
    // (SET_VRING_NUM for every queue first, then the rest queue by queue: cloud-hypervisor;
    // all of it queue by queue: QEMU.)
    let (first, per_queue) = match r.profile {
        Profile::Qemu => {
            assert_eq!(
                &kinds[..5],
                [
                    "GET_FEATURES",
                    "GET_PROTOCOL_FEATURES",
                    "SET_PROTOCOL_FEATURES",
                    "GET_QUEUE_NUM",
                    "GET_MAX_MEM_SLOTS"
                ],
                "{kinds:?}"
            );
            (
                [].as_slice(),
                [
                    "SET_VRING_NUM",
                    "SET_VRING_BASE",
                    "SET_VRING_ADDR",
                    "SET_VRING_KICK",
                ]
                .as_slice(),
            )
        }
        Profile::CloudHypervisor => {
            assert_eq!(&kinds[..2], ["SET_OWNER", "GET_FEATURES"], "{kinds:?}");
            (
                ["SET_VRING_NUM"].as_slice(),
                [
                    "SET_VRING_ADDR",
                    "SET_VRING_BASE",
                    "SET_VRING_CALL",
                    "SET_VRING_KICK",
                ]
                .as_slice(),
            )
        }
    };
    // Our daemon offers CONFIGURE_MEM_SLOTS: memory goes by ADD_MEM_REG.
    assert!(kinds.contains(&"ADD_MEM_REG"), "{kinds:?}");
    let mem = kinds.iter().position(|k| *k == "ADD_MEM_REG").unwrap();
    let rings: Vec<&str> = kinds[mem + 1..]
        .iter()
        .copied()
        .filter(|k| per_queue.contains(k) || first.contains(k))
        .collect();
    let mut expected = first.repeat(queues + 1);
    expected.extend(per_queue.repeat(queues + 1));
    assert_eq!(rings, expected, "{kinds:?}");
    let enables = kinds.iter().filter(|k| **k == "SET_VRING_ENABLE").count();
    assert!(enables > queues, "{kinds:?}");
}

fn check_workloads(r: &RunReport) {
    let names: Vec<Workload> = r.workloads.iter().map(|w| w.workload).collect();
    assert_eq!(
        names,
        [
            Workload::Walk,
            Workload::Readdirplus,
            Workload::Read,
            Workload::Random
        ]
    );
    for w in &r.workloads {
        assert!(w.ops > 0, "{w:?}");
    }
    // Used-ring lengths are the bytes written (nydusd, for one, reports 0).
    assert_eq!(r.zero_used_len_replies, 0);
    // Every entry of the tree was seen and every file's digest checked.
    let files = walkdir_files(tree());
    assert_eq!(r.verified_files, Some(files), "{r:?}");
}

fn walkdir_files(root: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += walkdir_files(&e.path());
        } else if t.is_file() {
            n += 1;
        }
    }
    n
}

/// Serves `target` with our daemon for one run of `o`, and checks that it exits cleanly.
fn run_ours(target: &str, o: &mut RunOptions) -> RunReport {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let mut daemon = image::serve(&socket, target, &[]);
    o.socket = socket;
    o.backend_pid = Some(daemon.pid());
    let report = run(o).unwrap_or_else(|e| panic!("{:?}: {e}\n{:#?}", o, daemon.stderr()));
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
    report
}

fn every_combination(target: &str) {
    for profile in [Profile::Qemu, Profile::CloudHypervisor] {
        for queues in [1, 2] {
            for depth in [1, 16] {
                let mut o = options(Path::new(""), profile, queues, depth);
                let r = run_ours(target, &mut o);
                check_order(&r, queues);
                check_workloads(&r);
                assert!(r.workloads.iter().all(|w| w.backend_cpu_s.is_some()));
            }
        }
    }
}

#[test]
fn plain_image_every_workload_profile_queue_count_and_depth() {
    let oci = tempfile::tempdir().unwrap();
    let img = image::build(tree(), oci.path(), "plain", false);
    every_combination(&img.target);
}

#[test]
fn compressed_image_every_workload_profile_queue_count_and_depth() {
    let oci = tempfile::tempdir().unwrap();
    let img = image::build(tree(), oci.path(), "zstd", true);
    every_combination(&img.target);
}

/// The chunk store in a given cache directory (an unnamed file there), in a memfd, too small
/// to hold the tree (evictions, chunks served without being stored), and disabled: every byte
/// still verified. (The other tests use the default, an unnamed file in /var/tmp.)
#[test]
fn chunk_store_in_a_directory_in_memory_small_or_off() {
    let oci = tempfile::tempdir().unwrap();
    let img = image::build(tree(), oci.path(), "zstd", true);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    for extra in [
        &["--cache-dir", cache_dir][..],
        &["--cache-in-memory"],
        &["--cache-size", "64K"],
        &["--cache-size", "0"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vfs.sock");
        let mut daemon = image::serve(&socket, &img.target, extra);
        let mut o = options(&socket, Profile::CloudHypervisor, 2, 16);
        o.backend_pid = Some(daemon.pid());
        let r = run(&o).unwrap_or_else(|e| panic!("{extra:?}: {e}\n{:#?}", daemon.stderr()));
        check_workloads(&r);
        let status = daemon.wait_exit(DAEMON_DEADLINE);
        assert!(status.success(), "{extra:?}: daemon: {status}");
    }
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        0,
        "the store has no name"
    );
}

#[test]
fn hostile_requests_get_errors_and_the_daemon_serves_on() {
    let oci = tempfile::tempdir().unwrap();
    let img = image::build(tree(), oci.path(), "hostile", true);
    for profile in [Profile::Qemu, Profile::CloudHypervisor] {
        let mut o = options(Path::new(""), profile, 2, 16);
        o.hostile = true;
        o.hostile_wait = Duration::from_millis(500);
        let r = run_ours(&img.target, &mut o);
        check_workloads(&r);
        hostile::check(&r, Served::Image);
    }
}

/// The same hostile requests against a copy of the tree served read-write (the default for
/// `--shared-dir`, with the default sandbox and seccomp filter): the WRITE through a handle
/// opened read-only gets EBADF, nothing else changes the tree, and the daemon lives on.
#[test]
fn hostile_requests_against_a_read_write_shared_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(tree())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let before = common::snapshot(&copy);
    for profile in [Profile::Qemu, Profile::CloudHypervisor] {
        let socket = tmp.path().join("vfs.sock");
        let mut daemon = Daemon::spawn(&[
            "--socket-path",
            socket.to_str().unwrap(),
            "--shared-dir",
            copy.to_str().unwrap(),
        ]);
        daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
        let mut o = options(&socket, profile, 2, 16);
        o.hostile = true;
        o.hostile_wait = Duration::from_millis(500);
        o.backend_pid = Some(daemon.pid());
        let r = run(&o).unwrap_or_else(|e| panic!("{profile:?}: {e}\n{:#?}", daemon.stderr()));
        check_workloads(&r);
        hostile::check(&r, Served::SharedDir);
        let status = daemon.wait_exit(DAEMON_DEADLINE);
        assert!(status.success(), "daemon: {status}");
    }
    let d = common::diff(&before, &common::snapshot(&copy), common::Compare::ALL);
    assert!(
        d.is_empty(),
        "the hostile requests changed the tree:\n{}",
        d.join("\n")
    );
}

fn start_virtiofsd(socket: &Path, dir: &Path) -> Virtiofsd {
    Virtiofsd::start(socket, dir, &[])
}

/// virtiofsd 1.14 has one request queue (GET_QUEUE_NUM says 2 with hiprio), so the
/// reference runs use one; asking for two is refused before any ring is set up.
#[test]
fn virtiofsd_reference_every_workload_profile_and_depth() {
    for profile in [Profile::Qemu, Profile::CloudHypervisor] {
        for depth in [1, 16] {
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("vfs.sock");
            let mut d = start_virtiofsd(&socket, tree());
            let mut o = options(&socket, profile, 1, depth);
            o.backend_pid = Some(d.0.id());
            let r = run(&o).unwrap_or_else(|e| panic!("{o:?}: {e}"));
            check_workloads(&r);
            let status = d.0.wait().unwrap();
            assert!(status.success(), "virtiofsd: {status}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let _d = start_virtiofsd(&socket, tree());
    let err = run(&options(&socket, Profile::Qemu, 2, 1)).unwrap_err();
    assert!(matches!(err, FrontendError::Unsupported(_)), "{err}");
}
