//! The mount table driven through its API, as Kata's nydus mode drives nydusd, with the native
//! vhost-user front end (vmm-tests/frontend) as the guest: no QEMU, so these run in CI.
//!
//! - `many`: 254 images and a pass-through directory in all 255 slots (the 256th mount gets
//!   409), every entry and byte checked against a host tree laid out the same way; the
//!   per-mount metrics add up to exactly what was read.
//! - `hostile`: every malformed or refused API request gets its exact status and a JSON
//!   `{"code","message"}` body, while a guest reads and checks a stable mount and other
//!   mount points are mounted and unmounted in a loop (no descriptor leaks); racing clients
//!   of one mount point get one winner.
//! - `stale`: node ids of an unmounted image or directory get ESTALE, also once the slot
//!   serves the next mount; reads racing remounts get their own image's bytes or ESTALE.
//! - `lifecycle`: `backend_collection` is what was mounted; the daemon's exit (SIGTERM, the
//!   VMM disconnecting) removes both socket files.
//!
//! The daemon runs with the defaults (`--sandbox namespace --seccomp kill`) unless a test
//! says otherwise. Needs root (the sandbox; fixture trees owned by other users).

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

#[path = "mount_table/hostile.rs"]
mod hostile;
#[path = "mount_table/lifecycle.rs"]
mod lifecycle;
#[path = "mount_table/many.rs"]
mod many;
#[path = "mount_table/stale.rs"]
mod stale;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use harness::api::{self, Response};
use harness::daemon::{Daemon, READY_LINE};
use harness::image::{self, Image};
use harness::tree::{make_big_files, make_fixture};
use harness::DAEMON_DEADLINE;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A daemon started as Kata starts nydusd, with its two sockets in a directory of its own.
pub struct TableDaemon {
    pub daemon: Daemon,
    pub api: PathBuf,
    pub sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl TableDaemon {
    /// `virtiofs --log-level info --apisock A --sock S EXTRA...`, once the API says RUNNING
    /// and the serving process waits for its VMM.
    pub fn start(extra: &[&str]) -> TableDaemon {
        let dir = tempfile::tempdir().unwrap();
        let api = dir.path().join("nydusd-api.sock");
        let sock = dir.path().join("vhost-fs.sock");
        let mut args = vec![
            "virtiofs",
            "--log-level",
            "info",
            "--apisock",
            s(&api),
            "--sock",
            s(&sock),
        ];
        args.extend_from_slice(extra);
        let daemon = Daemon::spawn(&args);
        api::wait_running(&api, DAEMON_DEADLINE);
        daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
        TableDaemon {
            daemon,
            api,
            sock,
            _dir: dir,
        }
    }

    pub fn mount(&self, at: &str, fs_type: &str, source: &str, config: &str) -> Response {
        api::mount(&self.api, at, fs_type, source, config)
    }

    /// Mounts, asserting 204 with no body.
    pub fn must_mount(&self, at: &str, fs_type: &str, source: &str, config: &str) {
        let r = self.mount(at, fs_type, source, config);
        assert_eq!(
            r.status, 204,
            "mount {fs_type} {source} at {at}: {}",
            r.body
        );
        assert!(r.body.is_empty(), "{}", r.body);
    }

    /// Unmounts, asserting 204.
    pub fn must_umount(&self, at: &str) {
        let r = api::umount(&self.api, at);
        assert_eq!(r.status, 204, "umount {at}: {}", r.body);
    }

    fn get(&self, path: &str) -> Response {
        let r = api::request(&self.api, "GET", path, None).expect("API request");
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r
    }

    /// `GET /api/v1/daemon`, checked to be RUNNING.
    pub fn info(&self) -> serde_json::Value {
        let v = self.get("/api/v1/daemon").json();
        assert_eq!(v["state"], "RUNNING", "{v}");
        v
    }

    /// `backend_collection` as mount point -> (fs_type, source), each entry checked to name
    /// its own mount point and to carry nothing else (no config: it may hold credentials).
    pub fn backends(&self) -> BTreeMap<String, (String, String)> {
        let info = self.info();
        let all = info["backend_collection"]
            .as_object()
            .unwrap_or_else(|| panic!("no backend_collection: {info}"));
        all.iter()
            .map(|(at, b)| {
                let b = b.as_object().unwrap();
                assert_eq!(b.len(), 3, "{at}: {b:?}");
                assert_eq!(b["mountpoint"], at.as_str(), "{b:?}");
                let f = |k: &str| b[k].as_str().unwrap().to_string();
                (at.clone(), (f("fs_type"), f("source")))
            })
            .collect()
    }

    /// `GET /api/v1/metrics`.
    pub fn metrics(&self) -> serde_json::Value {
        self.get("/api/v1/metrics").json()
    }

    /// `GET /metrics`.
    pub fn prometheus(&self) -> String {
        self.get("/metrics").body
    }
}

/// The JSON error body every refused request must carry: exactly `code` and `message`,
/// both strings, the code the one of `status`.
pub fn assert_error_body(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {:?}", r.body));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {v}"));
    assert_eq!(o.len(), 2, "{what}: {v}");
    let code = o["code"].as_str().unwrap_or_else(|| panic!("{what}: {v}"));
    let message = o["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(!message.is_empty(), "{what}: {v}");
    let want = match status {
        400 => "BAD_REQUEST",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        409 => "CONFLICT",
        413 => "PAYLOAD_TOO_LARGE",
        _ => panic!("{what}: no code known for {status}"),
    };
    assert_eq!(code, want, "{what}: {v}");
}

/// One source tree and its images.
pub struct Built {
    pub name: &'static str,
    pub tree: PathBuf,
    pub plain: Image,
    pub zstd: Image,
}

/// The trees and images the tests mount, built once: all in one OCI layout.
pub struct Fixtures {
    pub oci: PathBuf,
    pub sets: Vec<Built>,
    /// Two versions of one tree: the same names (so the same inode numbers in both
    /// images), other bytes.
    pub v1: Built,
    pub v2: Built,
    _dir: tempfile::TempDir,
}

/// Many small files in a few directories, a symlink per directory.
fn make_many_small(root: &Path) {
    for d in 0..8 {
        let dir = root.join(format!("dir{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            let data = common::pseudo_random(100 + 97 * f, 7000 + (d * 100 + f) as u64);
            fs::write(dir.join(format!("file{f:02}")), data).unwrap();
        }
        std::os::unix::fs::symlink(format!("file{:02}", d), dir.join("link")).unwrap();
    }
}

/// Files whose sizes straddle the chunker's minimum, average and maximum chunk sizes.
fn make_chunk_edges(root: &Path) {
    let dir = root.join("edges");
    fs::create_dir_all(&dir).unwrap();
    for (i, size) in [16383usize, 16384, 65535, 65537, 262143, 262145, 300001]
        .iter()
        .enumerate()
    {
        let data = common::pseudo_random(*size, 9000 + i as u64);
        fs::write(dir.join(format!("s{size}")), data).unwrap();
    }
    fs::write(root.join("README"), b"chunk edges\n").unwrap();
}

/// Version `v` of a small tree whose names never change.
fn make_version(root: &Path, v: u64) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("data")).unwrap();
    fs::write(root.join("etc/version"), format!("version {v}\n")).unwrap();
    fs::write(
        root.join("data/blob"),
        common::pseudo_random(200_000, 100 + v),
    )
    .unwrap();
}

fn built(oci: &Path, parent: &Path, name: &'static str, make: impl Fn(&Path)) -> Built {
    let tree = parent.join(name);
    fs::create_dir_all(&tree).unwrap();
    make(&tree);
    Built {
        name,
        plain: image::build(&tree, oci, &format!("{name}-plain"), false),
        zstd: image::build(&tree, oci, &format!("{name}-zstd"), true),
        tree,
    }
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let oci = dir.path().join("oci");
        let trees = dir.path().join("trees");
        let sets = vec![
            built(&oci, &trees, "fixture", make_fixture),
            built(&oci, &trees, "big", |r| {
                make_big_files(r, 2, (1 << 20) + 4321);
                fs::write(r.join("hello"), b"hello\n").unwrap();
            }),
            built(&oci, &trees, "many", make_many_small),
            built(&oci, &trees, "edges", make_chunk_edges),
        ];
        Fixtures {
            v1: built(&oci, &trees, "v1", |r| make_version(r, 1)),
            v2: built(&oci, &trees, "v2", |r| make_version(r, 2)),
            oci,
            sets,
            _dir: dir,
        }
    })
}

/// `cp -a SRC DEST` (with `link`, hard links instead of copies of the files).
pub fn copy_tree(src: &Path, dest: &Path, link: bool) {
    let mut cmd = Command::new("cp");
    cmd.arg(if link { "-al" } else { "-a" });
    let st = cmd.arg(src).arg(dest).status().unwrap();
    assert!(st.success(), "cp {} {}", src.display(), dest.display());
}

/// A host directory laid out as the table's tree: the table's own directories (mode 0755),
/// and at each mount point a copy of what is mounted there (hard links: cheap, and the
/// bytes are the source's).
pub struct Mirror {
    dir: tempfile::TempDir,
}

impl Mirror {
    pub fn empty() -> Mirror {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Mirror { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Puts (links of) `tree` at mount point `at`, creating its parents as the table does.
    pub fn add(&self, at: &str, tree: &Path) {
        let dest = self.root().join(at.trim_start_matches('/'));
        let mut p = dest.parent().unwrap().to_path_buf();
        let mut missing = Vec::new();
        while !p.exists() {
            missing.push(p.clone());
            p = p.parent().unwrap().to_path_buf();
        }
        for m in missing.iter().rev() {
            fs::create_dir(m).unwrap();
            fs::set_permissions(m, fs::Permissions::from_mode(0o755)).unwrap();
        }
        copy_tree(tree, &dest, true);
    }
}

/// What the regular files under a tree hold (every path: hard links count per name).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileStats {
    pub files: usize,
    pub bytes: u64,
    /// Files of 1 MiB or more (the front end's `random` workload opens each of them once).
    pub large: usize,
}

pub fn file_stats(root: &Path) -> FileStats {
    let mut st = FileStats::default();
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            let sub = file_stats(&e.path());
            st.files += sub.files;
            st.bytes += sub.bytes;
            st.large += sub.large;
        } else if t.is_file() {
            let len = e.metadata().unwrap().len();
            st.files += 1;
            st.bytes += len;
            st.large += usize::from(len >= 1 << 20);
        }
    }
    st
}

/// The mount's entry in `GET /api/v1/metrics`.
pub fn mount_metrics<'a>(m: &'a serde_json::Value, at: &str) -> &'a serde_json::Value {
    m["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["mountpoint"] == at)
        .unwrap_or_else(|| panic!("no metrics for {at}"))
}

/// Requests counted for `op` in a mount's metrics.
pub fn op_requests(mount: &serde_json::Value, op: &str) -> u64 {
    mount["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["op"] == op)
        .map_or(0, |o| o["requests"].as_u64().unwrap())
}

/// The process that serves the table: the daemon itself without a sandbox, else its deepest
/// descendant (the supervisor waits for a process holding the pid namespace, which holds
/// the confined daemon).
pub fn serving_pid(pid: u32) -> u32 {
    let children = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let path = t.unwrap().path().join("children");
            fs::read_to_string(path).unwrap_or_default()
        })
        .collect::<String>();
    match children.split_whitespace().next() {
        Some(child) => serving_pid(child.parse().unwrap()),
        None => pid,
    }
}

/// Descriptors `pid` holds open.
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}
