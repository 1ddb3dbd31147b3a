//! The daemon's confinement seen from the host while it serves (it runs with the defaults,
//! `--sandbox namespace --seccomp kill`, unless a test says otherwise): other namespaces, the
//! served directory as its root (a shared directory read-write unless `--readonly`, all else
//! read-only), no capabilities for an image, a seccomp filter on every thread, and every exit
//! path ending every process.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, Compare};
use crate::harness::daemon::{Daemon, READY_LINE};
use crate::harness::image;
use crate::harness::listing::{self, pfs_list};
use crate::harness::tree::make_fixture;
use crate::harness::{run_vm, tail, vm_lock, Vm, DAEMON_DEADLINE};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn proc_path(pid: u32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

/// The only child of `parent`: the sandboxed daemon under its supervisor.
fn only_child(parent: u32) -> u32 {
    let children: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(proc_path(*pid, "stat")).unwrap_or_default();
            // Fields after the command name (which may hold spaces) start after ") ".
            let after = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
            after.split(' ').nth(1) == Some(&parent.to_string())
        })
        .collect();
    assert_eq!(children.len(), 1, "children of {parent}: {children:?}");
    children[0]
}

/// `Field:` of /proc/PID/status, or of one of its threads with `task/TID/status`.
fn status_field(status_file: &Path, field: &str) -> String {
    let text = std::fs::read_to_string(status_file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {}", status_file.display()))
        .trim()
        .to_string()
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// The mounts process `pid` sees: mount point -> whether it is read-only (from the
/// per-mount options of /proc/PID/mountinfo).
fn mounts(pid: u32) -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(proc_path(pid, "mountinfo")).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let read_only = f[5].split(',').any(|o| o == "ro");
            (f[4].to_string(), read_only)
        })
        .collect()
}

/// virtiofsd's set for a shared directory: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID,
/// SETUID, MKNOD, SETFCAP.
const VIRTIOFSD_CAPS: &str = "00000000880000db";
/// The same plus DAC_READ_SEARCH, for a read-write shared directory (fuse-backend-rs's hard
/// links need it once credentials were switched; see `sandbox::caps`).
const WRITABLE_CAPS: &str = "00000000880000df";

/// Every thread of `pid` has the seccomp filter, no new privileges, and `cap_eff`.
fn assert_every_thread_confined(pid: u32, cap_eff: &str) {
    let tasks: Vec<_> = std::fs::read_dir(proc_path(pid, "task"))
        .unwrap()
        .map(|e| e.unwrap().path().join("status"))
        .collect();
    assert!(tasks.len() > 1, "the worker threads are running");
    for status in &tasks {
        assert_eq!(status_field(status, "Seccomp"), "2", "{}", status.display());
        assert_eq!(status_field(status, "Seccomp_filters"), "1");
        assert_eq!(status_field(status, "NoNewPrivs"), "1");
        assert_eq!(status_field(status, "CapEff"), cap_eff);
        assert_eq!(status_field(status, "CapPrm"), cap_eff);
        assert_eq!(status_field(status, "CapInh"), "0000000000000000");
        assert_eq!(status_field(status, "CapAmb"), "0000000000000000");
    }
}

/// Waits (hang detection only) until process `pid` is gone.
fn wait_gone(pid: u32) {
    let end = Instant::now() + DAEMON_DEADLINE;
    while proc_path(pid, "stat").exists() {
        let state = std::fs::read_to_string(proc_path(pid, "stat")).unwrap_or_default();
        if state
            .rsplit_once(") ")
            .is_some_and(|x| x.1.starts_with('Z'))
        {
            return; // a zombie has ended; only its parent's wait is missing
        }
        assert!(Instant::now() < end, "process {pid} is still running");
        thread::sleep(Duration::from_millis(50));
    }
}

/// An image of a one-file tree, built under `dir`: its OCI directory and the image.
fn one_file_image(dir: &Path) -> (PathBuf, image::Image) {
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let oci = dir.join("oci");
    let img = image::build(&tree, &oci, "t", false);
    (oci, img)
}

#[test]
fn namespace_sandbox_confines_an_image_daemon_and_the_guest_reads_everything() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_fixture(&tree);
    let oci = tmp.path().join("oci");
    let img = image::build(&tree, &oci, "sandboxed", true);
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = image::serve(&sock, &img.target, &[]);

    let served = only_child(daemon.pid());
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(proc_path(served, &format!("ns/{ns}"))).unwrap();
        assert_ne!(ours, its, "the daemon shares our {ns} namespace");
    }
    assert!(
        same_file(&proc_path(served, "root"), &oci),
        "the daemon's root is the OCI directory"
    );
    assert!(
        !proc_path(served, "root/tree").exists() && proc_path(served, "root/index.json").exists(),
        "nothing but the OCI directory is reachable"
    );
    let status = proc_path(served, "status");
    assert_eq!(status_field(&status, "CapBnd"), "0000000000000000");
    assert_every_thread_confined(served, "0000000000000000");

    let out = run_vm(&Vm::new(&sock, "sandboxed", &pfs_list("/mnt")));
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 40));
    let guest = listing::parse(&out.output);
    listing::assert_same(&guest, &common::snapshot(&tree), Compare::ALL);
    let exit = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(exit.success(), "daemon exit after the VM quit: {exit}");
    wait_gone(served);
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn namespace_sandbox_serves_shared_dir_xattrs_with_virtiofsd_capabilities() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir_all(share.join("dir")).unwrap();
    std::fs::write(share.join("dir/file"), b"shared").unwrap();
    xattr::set(share.join("dir/file"), "user.pfs", b"sandboxed").unwrap();
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = Daemon::spawn(&[
        "--socket-path",
        s(&sock),
        "--shared-dir",
        s(&share),
        "--xattr",
    ]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);

    let served = only_child(daemon.pid());
    assert!(same_file(&proc_path(served, "root/shared"), &share));
    assert_every_thread_confined(served, WRITABLE_CAPS);
    // The shared directory is the one writable mount; the rest of its root is read-only.
    let want =
        [("/", true), ("/shared", false), ("/proc", true)].map(|(m, ro)| (m.to_string(), ro));
    assert_eq!(
        mounts(served),
        want,
        "mounts (point, read-only) of the daemon"
    );

    // xattrs go through /proc/self/fd/N paths: the sandbox's own /proc must serve them.
    let out = run_vm(&Vm::new(&sock, "sandboxed-xattr", &pfs_list("/mnt")));
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 40));
    let guest = listing::parse(&out.output);
    let file = guest
        .get(b"dir/file".as_slice())
        .unwrap_or_else(|| panic!("dir/file missing: {:?}", guest.keys()));
    assert_eq!(
        file.xattrs.get(b"user.pfs".as_slice()).map(Vec::as_slice),
        Some(b"sandboxed".as_slice())
    );
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
    wait_gone(served);
}

#[test]
fn readonly_shared_dir_is_bound_read_only_with_virtiofsd_capabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = Daemon::spawn(&[
        "--socket-path",
        s(&sock),
        "--shared-dir",
        s(&share),
        "--readonly",
    ]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
    let served = only_child(daemon.pid());
    assert!(same_file(&proc_path(served, "root/shared"), &share));
    assert_every_thread_confined(served, VIRTIOFSD_CAPS);
    let want = [("/", true), ("/shared", true), ("/proc", true)].map(|(m, ro)| (m.to_string(), ro));
    assert_eq!(
        mounts(served),
        want,
        "mounts (point, read-only) of the daemon"
    );
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) }, 0);
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
    wait_gone(served);
}

#[test]
fn sigterm_and_sigkill_of_the_supervisor_end_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, img) = one_file_image(tmp.path());
    let sock = tmp.path().join("vfs.sock");

    // SIGTERM is forwarded: both end, with status 0, and the socket file goes.
    let mut daemon = image::serve(&sock, &img.target, &[]);
    let served = only_child(daemon.pid());
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) }, 0);
    let exit = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(exit.success(), "{exit}");
    wait_gone(served);
    assert!(!sock.exists(), "socket file left behind");

    // SIGKILL (how Kata stops it) cannot be forwarded: the daemon dies with its parent.
    let mut daemon = image::serve(&sock, &img.target, &[]);
    let served = only_child(daemon.pid());
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) }, 0);
    daemon.wait_exit(DAEMON_DEADLINE);
    wait_gone(served);
}

#[test]
fn without_root_the_sandbox_starts_with_a_user_namespace() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (oci, img) = one_file_image(tmp.path());
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let open_up = |p: &Path, mode| std::fs::set_permissions(p, PermissionsExt::from_mode(mode));
    open_up(tmp.path(), 0o755).unwrap();
    open_up(&run, 0o777).unwrap();
    for entry in walk(&oci) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        open_up(&entry, mode).unwrap();
    }
    let sock = run.join("vfs.sock");
    let nobody = 65534;
    let mut daemon = Daemon::spawn_as(nobody, &["--socket-path", s(&sock), "--image", &img.target]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
    let served = only_child(daemon.pid());
    let uid_map = std::fs::read_to_string(proc_path(served, "uid_map")).unwrap();
    let uid_map: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(
        uid_map,
        ["0", "65534", "1"],
        "only the caller is mapped, as root"
    );
    assert!(same_file(&proc_path(served, "root"), &oci));
    assert_every_thread_confined(served, "0000000000000000");
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) }, 0);
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
    wait_gone(served);
    assert!(!sock.exists(), "socket file left behind");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

#[test]
fn seccomp_without_sandbox_starts_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, img) = one_file_image(tmp.path());
    let sock = tmp.path().join("vfs.sock");
    // Serving threads start under the filter, and the SIGTERM path removes the socket file.
    let mut daemon = image::serve(&sock, &img.target, &["--sandbox=none"]);
    let pid = daemon.pid();
    assert_every_thread_confined(pid, &status_field(&proc_path(pid, "status"), "CapEff"));
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let exit = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(exit.success(), "{exit}");
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn chroot_sandbox_confines_without_namespaces() {
    let tmp = tempfile::tempdir().unwrap();
    let (oci, img) = one_file_image(tmp.path());
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = image::serve(&sock, &img.target, &["--sandbox", "chroot"]);
    let pid = daemon.pid();
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_eq!(std::fs::read_link(proc_path(pid, "ns/mnt")).unwrap(), ours);
    assert!(same_file(&proc_path(pid, "root"), &oci));
    assert_every_thread_confined(pid, "0000000000000000");
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());

    let e = Daemon::spawn(&[
        "--socket-path",
        s(&sock),
        "--shared-dir",
        s(&tmp.path().join("tree")),
        "--xattr",
        "--sandbox=chroot",
    ])
    .wait_exit(DAEMON_DEADLINE);
    assert_eq!(
        e.code(),
        Some(1),
        "--xattr needs /proc, which a chroot lacks"
    );
}

#[test]
fn a_mount_table_is_served_from_an_empty_root_and_reaches_only_what_was_mounted() {
    use crate::harness::api;
    let tmp = tempfile::tempdir().unwrap();
    let (oci, img) = one_file_image(tmp.path());
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(tmp.path().join("secret"), b"not mounted").unwrap();
    let (apisock, sock) = (tmp.path().join("api.sock"), tmp.path().join("vfs.sock"));
    let mut daemon = Daemon::spawn(&[
        "virtiofs",
        "--apisock",
        s(&apisock),
        "--sock",
        s(&sock),
        "--allow-mount-from",
        s(tmp.path()),
    ]);
    api::wait_running(&apisock, DAEMON_DEADLINE);
    assert_eq!(
        api::mount(&apisock, "/c", "passthrough_fs", s(&share), "").status,
        204
    );
    assert_eq!(
        api::mount(&apisock, "/i", "rafs", &img.target, "").status,
        204
    );
    let refused = api::mount(&apisock, "/e", "passthrough_fs", "/etc", "");
    assert_eq!(refused.status, 400, "{}", refused.body);

    // supervisor -> waiter -> daemon: the supervisor serves the API, the daemon the table.
    let waiter = only_child(daemon.pid());
    let served = only_child(waiter);
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(proc_path(served, &format!("ns/{ns}"))).unwrap();
        assert_ne!(ours, its, "the daemon shares our {ns} namespace");
    }
    let want = [("/", true), ("/proc", true)].map(|(m, ro)| (m.to_string(), ro));
    assert_eq!(
        mounts(served),
        want,
        "mounts (point, read-only) of the daemon"
    );
    assert_every_thread_confined(served, WRITABLE_CAPS);
    // What it holds: the two sources, as private mounts, and nothing above them.
    let fds: Vec<PathBuf> = std::fs::read_dir(proc_path(served, "fd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for source in [&share, &oci] {
        assert!(
            fds.iter().any(|fd| same_file(fd, source)),
            "{}",
            source.display()
        );
    }
    let reached = fds
        .iter()
        .filter(|fd| same_file(fd, &share) || same_file(fd, &oci));
    for fd in reached {
        assert!(
            !fd.join("../secret").exists(),
            "{} reaches above its source",
            fd.display()
        );
    }

    // Kata stops it with SIGKILL: nothing is left behind.
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) }, 0);
    daemon.wait_exit(DAEMON_DEADLINE);
    wait_gone(waiter);
    wait_gone(served);
}
