//! The `virtiofs-frontend` binary: a verified run against virtiofsd 1.14 (the reference back
//! end, $VIRTIOFSD or /opt/virtiofsd/bin/virtiofsd), JSON output, and clear errors.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn frontend(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_virtiofs-frontend"))
        .args(args)
        .output()
        .unwrap()
}

fn virtiofsd() -> PathBuf {
    let path = std::env::var_os("VIRTIOFSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/virtiofsd/bin/virtiofsd"));
    assert!(
        path.exists(),
        "{} missing: run scripts/setup.sh",
        path.display()
    );
    path
}

fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("d/e")).unwrap();
    fs::write(root.join("d/e/f"), b"hello\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..(2u32 << 20) + 77)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    fs::write(root.join("big"), big).unwrap();
    std::os::unix::fs::symlink("d/e/f", root.join("link")).unwrap();
}

#[test]
fn verified_json_run_against_virtiofsd() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    small_tree(&tree);
    let socket = dir.path().join("sock");
    let mut child = Command::new(virtiofsd())
        .arg("--socket-path")
        .arg(&socket)
        .arg("--shared-dir")
        .arg(&tree)
        .args(["--sandbox", "none", "--seccomp", "none"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        assert!(Instant::now() < end, "virtiofsd never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let out = frontend(&[
        "--socket",
        socket.to_str().unwrap(),
        "--profile",
        "cloud-hypervisor",
        "--depth",
        "16",
        "--verify",
        tree.to_str().unwrap(),
        "--backend-pid",
        &pid,
        "--random-reads",
        "100",
        "--json",
    ]);
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["walk", "readdirplus", "read", "random"]);
    assert_eq!(report["verified_files"], 3);
    assert_eq!(report["profile"], "cloud-hypervisor");
    let read = &report["workloads"][2];
    let peak = read["backend_peak_rss_kib"].as_u64().unwrap();
    let rss = read["backend_rss_kib"].as_u64().unwrap();
    let anon = read["backend_rss_anon_kib"].as_u64().unwrap();
    assert!(0 < anon && anon <= rss && rss <= peak, "{read}");
}

/// Starts virtiofsd serving `tree` on `socket`.
fn serve(tree: &Path, socket: &Path) -> std::process::Child {
    let child = Command::new(virtiofsd())
        .arg("--socket-path")
        .arg(socket)
        .arg("--shared-dir")
        .arg(tree)
        .args(["--sandbox", "none", "--seccomp", "none"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn read_paths_from_stdin_answers_each_path_with_a_json_line() {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    small_tree(&tree);
    let socket = dir.path().join("sock");
    let mut daemon = serve(&tree, &socket);
    let mut fe = Command::new(env!("CARGO_BIN_EXE_virtiofs-frontend"))
        .args(["--socket", socket.to_str().unwrap(), "--depth", "4"])
        .args(["--read-paths-from", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = fe.stdin.take().unwrap();
    stdin
        .write_all(b"/d/e/f\n\n/missing/x\nbig\n/empty\n/d\n")
        .unwrap();
    drop(stdin);
    let out = fe.wait_with_output().unwrap();
    let _ = daemon.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .take(6)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["ready"], true);
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    assert_eq!(lines[1]["path"], "/d/e/f");
    assert_eq!(lines[1]["ok"], true);
    assert_eq!(lines[1]["bytes"], 6);
    assert_eq!(lines[1]["sha256"], sha(b"hello\n"));
    // 3 LOOKUPs, OPEN, one READ, RELEASE.
    assert_eq!(lines[1]["requests"], 6);
    assert_eq!(lines[2]["path"], "/missing/x");
    assert_eq!(lines[2]["ok"], false);
    assert_eq!(lines[2]["op"], "LOOKUP");
    assert_eq!(lines[2]["errno"], libc::ENOENT);
    let big = fs::read(tree.join("big")).unwrap();
    assert_eq!(lines[3]["ok"], true);
    assert_eq!(lines[3]["size"], big.len());
    assert_eq!(lines[3]["bytes"], big.len());
    assert_eq!(lines[3]["sha256"], sha(&big));
    assert_eq!(lines[4]["ok"], true);
    assert_eq!(lines[4]["bytes"], 0);
    // virtiofsd opens a directory with O_RDONLY; reading it fails, and the line says so.
    assert_eq!(lines[5]["ok"], false);
    assert_eq!(lines[5]["op"], "READ");
    assert_eq!(lines[5]["errno"], libc::EISDIR);
}

#[test]
fn bad_invocations_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.sock");
    let out = frontend(&["--socket", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connect") && err.lines().count() == 1, "{err}");

    let out = frontend(&["--socket", "x", "--depth", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("depth"));

    let out = frontend(&["--socket", "x", "--workload", "nonsense"]);
    assert!(!out.status.success());
}

#[test]
fn kill_in_flight_needs_kill_under_and_an_inflight_capable_back_end() {
    let out = frontend(&["--socket", "x", "--kill-in-flight"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--kill-under"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // virtiofsd does not offer INFLIGHT_SHMFD: the first kill is refused before anything is
    // killed. A shell stands for the supervisor and reports how virtiofsd ended.
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    small_tree(&tree);
    let socket = dir.path().join("sock");
    let script = format!(
        "'{}' --socket-path '{}' --shared-dir '{}' --sandbox none --seccomp none 2>/dev/null; \
         echo \"exit $?\"",
        virtiofsd().display(),
        socket.display(),
        tree.display()
    );
    let shell = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = shell.id().to_string();
    let out = frontend(&[
        "--socket",
        socket.to_str().unwrap(),
        "--profile",
        "cloud-hypervisor",
        "--workload",
        "walk",
        "--reconnects",
        "1",
        "--reconnect-every",
        "1",
        "--kill-under",
        &pid,
        "--kill-in-flight",
        "--seed",
        "5",
    ]);
    let shell = shell.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("seed 5"), "{err}");
    assert!(err.contains("INFLIGHT_SHMFD"), "{err}");
    let ended = String::from_utf8_lossy(&shell.stdout);
    assert!(!ended.contains("exit 137"), "virtiofsd was killed: {ended}");
}
