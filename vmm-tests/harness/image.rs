//! PuzzleFS images for guests: built from host trees by our `puzzlefs build` or by upstream
//! PuzzleFS, and the daemon serving one.

use std::path::Path;
use std::process::Command;

use super::daemon::{Daemon, READY_LINE};
use super::DAEMON_DEADLINE;

/// An image in an OCI layout: `OCI_DIR:TAG` and its manifest digest (`sha256:...`).
pub struct Image {
    pub target: String,
    pub digest: String,
}

/// Runs `bin build [-c] TREE OCI:TAG` and returns its stdout and the target.
fn run_build(bin: &Path, tree: &Path, oci: &Path, tag: &str, compressed: bool) -> (String, String) {
    let target = format!("{}:{tag}", oci.display());
    let mut cmd = Command::new(bin);
    cmd.arg("build");
    if compressed {
        cmd.arg("-c");
    }
    let out = cmd.arg(tree).arg(&target).output().unwrap();
    assert!(
        out.status.success(),
        "{} build {}: {}",
        bin.display(),
        tree.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), target)
}

/// Builds `tree` into `oci:tag` with our `puzzlefs build` (`-c`: zstd seekable chunks).
pub fn build(tree: &Path, oci: &Path, tag: &str, compressed: bool) -> Image {
    let bin = Path::new(env!("CARGO_BIN_EXE_puzzlefs"));
    let (stdout, target) = run_build(bin, tree, oci, tag, compressed);
    let digest = stdout.trim().to_string();
    assert!(digest.starts_with("sha256:"), "build printed {digest:?}");
    Image { target, digest }
}

/// Builds `tree` into `oci:tag` with upstream PuzzleFS (`build -c` when `compressed`).
pub fn build_upstream(tree: &Path, oci: &Path, tag: &str, compressed: bool) -> String {
    run_build(&crate::common::upstream(), tree, oci, tag, compressed).1
}

/// Starts the daemon on `socket` serving `target` with `extra` flags, and waits until it
/// says it is ready.
pub fn serve(socket: &Path, target: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--socket-path", socket.to_str().unwrap(), "--image", target];
    args.extend_from_slice(extra);
    let daemon = Daemon::spawn(&args);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
    daemon
}
