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
    assert!(
        report["workloads"][2]["backend_peak_rss_kib"]
            .as_u64()
            .unwrap()
            > 0
    );
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
