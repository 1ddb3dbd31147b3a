//! Real Linux guests under QEMU (TCG) served by `puzzlefs-virtiofsd`: the guest mounts
//! `-t virtiofs`, and what it sees is compared with the host. Also the Kata launch styles and
//! the daemon's life cycle (ready line, exit on disconnect, SIGTERM, bad command lines).
//!
//! Tests of PuzzleFS images served to guests are in `images` and `images_kata`; the daemon's
//! sandbox and seccomp filter, seen from the host while it serves, in `sandbox`; fs-verity, on
//! the guest kernel's ext4, in `fs_verity`; a shared directory written by the guest, compared
//! with virtiofsd 1.14, in `shared_dir_writes`. Every launch
//! runs with the defaults (`--sandbox namespace --seccomp kill`) unless it says otherwise.
//!
//! Needs qemu-system-x86, busybox-static, cpio, gcc with a static libc, debootstrap and apt
//! access to Debian's kernel package (scripts/guest-kernel.sh), and upstream PuzzleFS
//! ($UPSTREAM_PUZZLEFS or /opt/upstream-puzzlefs/bin/puzzlefs).

#[path = "../tests/common/mod.rs"]
mod common;
mod fs_verity;
mod harness;
mod images;
mod images_kata;
mod kata_nydus;
mod sandbox;
mod shared_dir_writes;

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use harness::daemon::{binary, Daemon, READY_LINE};
use harness::tree::{
    assert_same, host_listing, listing_script, make_big_files, make_fixture, parse_listing,
};
use harness::{run_vm, vm_lock, Vm, DAEMON_DEADLINE};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Parses `sha256sum` output lines ending in `/NAME` into NAME -> hash.
fn hashes(out: &str, prefix: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once("  "))
        .filter_map(|(h, p)| {
            p.strip_prefix(prefix)
                .map(|n| (n.to_string(), h.to_string()))
        })
        .collect()
}

#[test]
fn runtime_rs_launch_with_readonly_serves_the_tree_read_only() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    make_fixture(&share);
    let before = host_listing(&share);
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = Daemon::spawn(&[
        "--socket-path",
        s(&sock),
        "--shared-dir",
        s(&share),
        "--cache",
        "auto",
        "--readonly",
    ]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);

    // One of each kind of write; each must fail with EROFS (busybox prints strerror).
    let writes = [
        "touch /mnt/new",
        "mkdir /mnt/newdir",
        "echo x >> /mnt/sizes/f1",
        "rm /mnt/sizes/f0",
        "mv /mnt/sizes/f1 /mnt/moved",
        "ln /mnt/sizes/f1 /mnt/hard",
        "ln -s f1 /mnt/sizes/sym",
        "chmod 600 /mnt/sizes/f1",
        "chown 7:7 /mnt/sizes/f1",
        "truncate -s 0 /mnt/sizes/f100",
        "mkfifo /mnt/fifo",
        "rmdir /mnt/empty/dir",
    ];
    let script = format!(
        "{}\ncd /\n{}\nexit 0\n",
        listing_script("/mnt"),
        writes.map(|w| format!("{w} 2>&1")).join("\n")
    );
    let out = run_vm(&Vm::new(&sock, "kata-rs", &script));
    assert_eq!(out.rc, 0, "{}", out.console);
    assert_same(&parse_listing(&out.output), &before);
    let refused = out.output.matches("Read-only file system").count();
    assert_eq!(
        refused,
        writes.len(),
        "every write gets EROFS:\n{}",
        out.output
    );
    assert_same(&host_listing(&share), &before);

    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon exit after the VM quit: {status}");
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn go_runtime_launch_with_inherited_fd3() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    make_fixture(&share);
    let sock = tmp.path().join("kata.sock");
    // Kata's Go runtime listens itself and hands the socket over as fd 3.
    let listener = UnixListener::bind(&sock).unwrap();
    let shared = format!("--shared-dir={}", s(&share));
    let mut daemon = Daemon::spawn_with_fd3(
        &listener,
        &[
            "--fd=3",
            "--syslog",
            "--cache=auto",
            &shared,
            "--thread-pool-size=1",
            "--announce-submounts",
        ],
    );
    drop(listener);

    let script = "sha256sum /mnt/sizes/f1048589 /mnt/sizes/f4097 /mnt/deep/d2/sub/file11.txt\n";
    let out = run_vm(&Vm::new(&sock, "kata-go", script));
    assert_eq!(out.rc, 0, "{}", out.console);
    let got = hashes(&out.output, "/mnt/");
    let host = host_listing(&share);
    for name in ["sizes/f1048589", "sizes/f4097", "deep/d2/sub/file11.txt"] {
        let want = host[&format!("./{name}")].sha256.clone().unwrap();
        assert_eq!(got.get(name), Some(&want), "{name}: {}", out.output);
    }
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon exit after the VM quit: {status}");
}

#[test]
fn concurrent_readers_get_every_byte() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    let want = make_big_files(&share, 8, 4 << 20);
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = Daemon::spawn(&[
        "--socket-path",
        s(&sock),
        "--shared-dir",
        s(&share),
        "--cache=never",
        "--thread-pool-size=4",
    ]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);

    // Eight readers of eight different files, then eight readers of one file, all at once.
    let script = r#"
for i in 0 1 2 3 4 5 6 7; do sha256sum /mnt/big/f$i > /tmp/own$i & done
for i in 0 1 2 3 4 5 6 7; do cat /mnt/big/f3 | sha256sum | sed "s|-\$|/same/$i|" > /tmp/same$i & done
wait
cat /tmp/own* /tmp/same*
"#;
    let mut vm = Vm::new(&sock, "conc", script);
    vm.request_queues = 2;
    let out = run_vm(&vm);
    assert_eq!(out.rc, 0, "{}", out.console);
    assert_eq!(hashes(&out.output, "/mnt/big/"), want, "{}", out.output);
    let same = hashes(&out.output, "/same/");
    assert_eq!(same.len(), 8, "{}", out.output);
    assert!(same.values().all(|h| *h == want["f3"]), "{}", out.output);
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
}

#[test]
fn unknown_flag_is_a_one_line_error() {
    let out = Command::new(binary())
        .args([
            "--socket-path",
            "/nonexistent/s",
            "--shared-dir",
            "/",
            "--frobnicate",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--frobnicate"), "{err}");
}

#[test]
fn bad_fd_and_missing_image_fail_cleanly() {
    let out = Command::new(binary())
        .args(["--fd", "0", "--shared-dir", "/"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--fd 0"), "{err}");

    let out = Command::new(binary())
        .args([
            "--socket-path",
            "/nonexistent/s",
            "--image",
            "/nonexistent/oci:tag",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("image"), "{err}");
}

#[test]
fn sigterm_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = Daemon::spawn(&["--socket-path", s(&sock), "--shared-dir", s(tmp.path())]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
    assert!(sock.exists());
    // SAFETY: kill(2) with a pid we started and still own (not yet reaped).
    assert_eq!(unsafe { libc::kill(daemon.pid() as i32, libc::SIGTERM) }, 0);
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn debian_root_file_system_boots_and_runs_programs() {
    let _one_vm = vm_lock();
    let rootfs = harness::debian_rootfs();
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    // Read-only: the Debian tree is a cache shared by every test run.
    let mut daemon = Daemon::spawn(&[
        "--socket-path",
        s(&sock),
        "--shared-dir",
        s(&rootfs),
        "--cache",
        "always",
        "--readonly",
    ]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);

    // Runs as the Debian root's own /bin/sh (dash), after switch_root.
    let script = r#"
echo "shell=$(readlink -f /bin/sh)"
echo "debian=$(cat /etc/debian_version)"
echo "packages=$(dpkg-query -W -f='${Package}\n' | wc -l)"
echo "dpkg=$(dpkg -l dpkg | tail -n 1 | cut -c1-2)"
apt-cache -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= policy apt | sed -n 's/^ *Installed: /apt=/p'
"#;
    let mut vm = Vm::new(&sock, "rootfs", script);
    vm.root = true;
    let out = run_vm(&vm);
    assert_eq!(out.rc, 0, "{}", out.console);
    let field = |k: &str| {
        out.output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {k}= in guest output:\n{}", out.output))
    };
    assert_eq!(field("shell"), "/usr/bin/dash");
    let version = std::fs::read_to_string(rootfs.join("etc/debian_version")).unwrap();
    assert_eq!(field("debian"), version.trim());
    let status = std::fs::read_to_string(rootfs.join("var/lib/dpkg/status")).unwrap();
    let installed =
        status.matches("\nPackage: ").count() + usize::from(status.starts_with("Package: "));
    assert_eq!(field("packages"), installed.to_string());
    assert_eq!(field("dpkg"), "ii");
    assert!(!field("apt").is_empty() && field("apt") != "(none)");
    eprintln!(
        "[vm] Debian root boot + programs: {:.1} s",
        out.elapsed.as_secs_f64()
    );
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
}

#[test]
fn a_stuck_read_does_not_hold_up_other_requests() {
    use puzzlefs_virtiofsd::daemon::{
        self, Config, Sandbox, Seccomp, ServeOptions, SocketSpec, Source,
    };
    use puzzlefs_virtiofsd::fs::CachePolicy;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    make_fixture(&share);
    let slow = common::pseudo_random(300_000, 77);
    std::fs::write(share.join("slow"), &slow).unwrap();
    std::fs::write(share.join("slow-started"), b"").unwrap();
    std::fs::write(share.join("release"), b"").unwrap();
    let host = host_listing(&share);
    let sock = tmp.path().join("vfs.sock");
    let config = Config {
        socket: SocketSpec::Path(sock.clone()),
        source: Source::SharedDir(share.clone()),
        cache: CachePolicy::Never,
        thread_pool_size: 2,
        xattr: false,
        read_only: false,
        allow_direct_io: false,
        syslog: false,
        log_level: log::LevelFilter::Info,
        sandbox: Sandbox::None,
        seccomp: Seccomp::None,
        chunk_store_bytes: 0,
        chunk_store_dir: None,
        chunk_store_fallback: false,
        reconnect: false,
        ignored: Vec::new(),
    };
    // The daemon runs in this process, generic `serve` over the gated file system.
    let daemon::SharedDir::ReadWrite(shared) = daemon::shared_dir(&share, &config).unwrap() else {
        panic!("a shared directory without read_only is served read-write");
    };
    let fs = Arc::new(harness::gate::Gate::new(*shared));
    let listener = daemon::listen(&config.socket).unwrap();
    let served = fs.clone();
    let server = std::thread::spawn(move || {
        let opts = ServeOptions {
            thread_pool_size: 2,
            ..ServeOptions::default()
        };
        daemon::serve(served, listener, &opts, || {})
    });

    // The slow read is in the daemon before the others start; they must all finish while it
    // is still stuck, since only the lookup of `release` (after OTHERS-DONE) lets it go.
    let script = r#"
cat /mnt/slow | sha256sum | sed 's|-$|/mnt/slow|' > /tmp/slow &
until [ -e /mnt/slow-started ]; do sleep 0.1; done
sha256sum /mnt/sizes/f1048589 /mnt/deep/d0/sub/file1.txt
echo OTHERS-DONE
[ -e /mnt/release ]
wait
echo SLOW-DONE
cat /tmp/slow
"#;
    let out = run_vm(&Vm::new(&sock, "gate", script));
    assert_eq!(out.rc, 0, "{}", out.console);
    assert!(
        !fs.gave_up.load(Ordering::SeqCst),
        "the stuck read was never released"
    );
    let others = out.output.find("OTHERS-DONE").expect("others finished");
    assert!(others < out.output.find("SLOW-DONE").unwrap());
    let got = hashes(&out.output, "/mnt/");
    let want = |p: &str| host[&format!("./{p}")].sha256.clone().unwrap();
    for name in ["slow", "sizes/f1048589", "deep/d0/sub/file1.txt"] {
        assert_eq!(got.get(name), Some(&want(name)), "{name}: {}", out.output);
    }
    server
        .join()
        .unwrap()
        .expect("daemon ends cleanly on disconnect");
}
