//! virtiofsd 1.14, the reference back end ($VIRTIOFSD or /opt/virtiofsd/bin/virtiofsd, from
//! scripts/setup.sh), run unconfined (`--sandbox none --seccomp none`) as the tests compare
//! behaviour, not confinement.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DAEMON_DEADLINE;

/// The virtiofsd binary; panics with the way to install it when it is missing.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("VIRTIOFSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/virtiofsd/bin/virtiofsd"));
    assert!(
        path.exists(),
        "{} missing: run scripts/setup.sh (cargo install virtiofsd --version 1.14.0)",
        path.display()
    );
    path
}

/// A running virtiofsd; killed on drop if still running.
pub struct Virtiofsd(pub Child);

impl Virtiofsd {
    /// Serves `dir` on `socket` with `extra` arguments, once the socket exists.
    pub fn start(socket: &Path, dir: &Path, extra: &[&str]) -> Virtiofsd {
        let child = Command::new(binary())
            .arg("--socket-path")
            .arg(socket)
            .arg("--shared-dir")
            .arg(dir)
            .args(["--sandbox", "none", "--seccomp", "none"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start virtiofsd");
        let end = Instant::now() + DAEMON_DEADLINE;
        while !socket.exists() {
            assert!(Instant::now() < end, "virtiofsd never created its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Virtiofsd(child)
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
