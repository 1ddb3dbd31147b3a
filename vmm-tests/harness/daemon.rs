//! Runs `puzzlefs-virtiofsd` as a child process the way VMMs and Kata do, and watches its
//! stderr and exit status (with generous deadlines that only detect hangs).

use std::io::{BufRead, BufReader};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The daemon binary built by cargo for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_puzzlefs-virtiofsd"))
}

/// The line Kata's runtime-rs waits for.
pub const READY_LINE: &str = "Waiting for vhost-user socket connection";

/// A running daemon; killed on drop if still running.
pub struct Daemon {
    child: Child,
    stderr: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Daemon {
    /// Starts the daemon with `args`.
    pub fn spawn(args: &[&str]) -> Daemon {
        Self::start(Command::new(binary()).args(args))
    }

    /// Starts the daemon with `args` as user and group `id` (std drops the supplementary
    /// groups when root changes uid).
    pub fn spawn_as(id: u32, args: &[&str]) -> Daemon {
        use std::os::unix::process::CommandExt;
        Self::start(Command::new(binary()).args(args).uid(id).gid(id))
    }

    /// Starts the daemon with `listener` as its fd 3, as Kata's Go runtime does.
    pub fn spawn_with_fd3(listener: &UnixListener, args: &[&str]) -> Daemon {
        let fd: RawFd = listener.as_raw_fd();
        let mut cmd = Command::new(binary());
        cmd.args(args);
        // SAFETY: the closure runs in the forked child before exec and calls only dup2 and
        // fcntl, which are async-signal-safe; `fd` is open in the parent, hence in the child.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // Same number: just let it survive exec.
                    if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) != 3 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Self::start(&mut cmd)
    }

    fn start(cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start puzzlefs-virtiofsd");
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = stderr.clone();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("[daemon] {line}");
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
        });
        Daemon { child, stderr }
    }

    /// Waits until stderr shows `line` exactly; panics after `deadline`.
    pub fn wait_for_line(&self, line: &str, deadline: Duration) {
        let end = Instant::now() + deadline;
        let (lines, cond) = &*self.stderr;
        let mut got = lines.lock().unwrap();
        while !got.iter().any(|l| l == line) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "daemon never printed {line:?}; stderr: {got:#?}"
            );
            got = cond.wait_timeout(got, left).unwrap().0;
        }
    }

    /// Everything the daemon wrote on stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.0.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the daemon to exit; panics after `deadline` (the daemon hung).
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(
                Instant::now() < end,
                "daemon did not exit; stderr: {:#?}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
