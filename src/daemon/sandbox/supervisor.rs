//! The parent side of the namespace sandbox: the daemon runs as its child (pid 1 of a new pid
//! namespace); the parent forwards SIGTERM and SIGINT to it and reports how it ended.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};

use super::SandboxError;

/// The signals a VMM or Kata uses to stop the daemon, plus SIGCHLD for the supervisor.
pub(crate) fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset only adds valid signal
    // numbers to that initialised set.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

fn change_mask(how: libc::c_int) -> Result<(), SandboxError> {
    let set = stop_signals();
    // SAFETY: `set` is an initialised signal set; the old mask is not asked for (null).
    let rc = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(SandboxError::setup("change the signal mask")(
            io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGCHLD in the calling thread (and the threads and children it
/// starts later): a stop signal that arrives while the daemon sets itself up stays pending
/// until [`unblock_stop_signals`], instead of being lost on a pid 1 without a handler.
pub fn block_stop_signals() -> Result<(), SandboxError> {
    change_mask(libc::SIG_BLOCK)
}

/// Undoes [`block_stop_signals`] in the calling thread, once handlers are installed.
pub fn unblock_stop_signals() -> Result<(), SandboxError> {
    change_mask(libc::SIG_UNBLOCK)
}

/// The parent of a daemon in new namespaces. It must keep running while the daemon does: the
/// daemon is killed (PR_SET_PDEATHSIG) when this process dies.
#[derive(Debug)]
pub struct Supervisor {
    pub(super) child: Pid,
    /// The daemon reads EOF from its end once this process is gone.
    pub(super) _alive: std::io::PipeWriter,
}

impl Supervisor {
    /// Waits for the daemon to end, forwarding SIGTERM and SIGINT to it, and returns how it
    /// ended. The stop signals must be blocked in this thread ([`block_stop_signals`]).
    pub fn wait(self) -> Result<ExitStatus, SandboxError> {
        let set = stop_signals();
        loop {
            // SAFETY: `set` is an initialised signal set; no siginfo is asked for (null).
            let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
            if sig < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(SandboxError::setup("wait for signals")(e));
            }
            if sig == libc::SIGCHLD {
                let ended = waitpid(Some(self.child), WaitOptions::NOHANG)
                    .map_err(SandboxError::setup("wait for the daemon"))?;
                if let Some((_, status)) = ended {
                    return Ok(ExitStatus::from_raw(status.as_raw()));
                }
                continue;
            }
            let forward = if sig == libc::SIGINT {
                Signal::INT
            } else {
                Signal::TERM
            };
            // The daemon may have just exited: SIGCHLD tells, so a failure here is harmless.
            let _ = kill_process(self.child, forward);
        }
    }
}
