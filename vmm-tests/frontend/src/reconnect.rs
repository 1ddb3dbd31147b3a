//! Reconnecting as cloud-hypervisor does after a guest reboot: close the control socket,
//! connect again (every 100 ms, for up to 60 s), replay SET_OWNER, features, memory table and
//! vring setup with each ring's base at the guest's current avail index, and go on with the
//! same FUSE session: no second INIT, the same node ids and handles.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::Frontend;

use crate::device::{Device, Profile};
use crate::error::{FrontendError, Result};

/// Pause between connection attempts (cloud-hypervisor's).
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// How long to keep trying (cloud-hypervisor's).
const RETRY_FOR: Duration = Duration::from_secs(60);

/// How many reconnects a session still owes, and when the next one is due.
#[derive(Debug, Clone)]
pub struct Reconnects {
    socket: PathBuf,
    /// Reconnects still to do.
    pub left: usize,
    /// Completions between two reconnects.
    pub every: usize,
    /// Completions since the last reconnect.
    since: usize,
    /// Reconnects done.
    pub done: usize,
    /// Instead of closing the socket, SIGKILL the deepest process under this one (the
    /// serving process behind a supervisor) and reconnect once the back end hung up.
    pub kill_under: Option<u32>,
    /// For each kill, the time from the SIGKILL to the first completion after it (two kills
    /// with no completion between them count once, from the first).
    pub blackouts: Vec<Duration>,
    killed_at: Option<Instant>,
}

impl Reconnects {
    /// `count` reconnects to `socket`, one after every `every` completions (at least 1).
    pub fn new(socket: impl Into<PathBuf>, count: usize, every: usize) -> Reconnects {
        Reconnects {
            socket: socket.into(),
            left: count,
            every: every.max(1),
            since: 0,
            done: 0,
            kill_under: None,
            blackouts: Vec::new(),
            killed_at: None,
        }
    }

    /// Counts one completion.
    pub fn completed(&mut self) {
        self.since += 1;
        if let Some(at) = self.killed_at.take() {
            self.blackouts.push(at.elapsed());
        }
    }

    /// Whether a reconnect is due: the session stops submitting until nothing is in flight.
    pub fn due(&self) -> bool {
        self.left > 0 && self.since >= self.every
    }

    /// Makes the next reconnect due at once (for the ones the workloads left over).
    pub fn hurry(&mut self) {
        self.since = self.every;
    }

    /// Reconnects `dev` (after killing the serving process, with `kill_under`) and counts it.
    pub fn reconnect(&mut self, dev: &mut Device) -> Result<()> {
        if let Some(top) = self.kill_under {
            let at = kill_deepest(top)?;
            // Two kills with no answer between them make one blackout, from the first.
            self.killed_at.get_or_insert(at);
            dev.wait_for_hangup(RETRY_FOR)?;
        }
        dev.reconnect(&self.socket)?;
        self.left -= 1;
        self.done += 1;
        self.since = 0;
        Ok(())
    }
}

impl Device {
    /// Closes the control socket, connects to `socket` again and replays cloud-hypervisor's
    /// device setup. The rings stay where they are in guest RAM and each restarts at its
    /// current avail index; call it with nothing in flight (no INFLIGHT_SHMFD here, so a
    /// request in flight across a reconnect could be lost, as with cloud-hypervisor).
    pub fn reconnect(&mut self, socket: &Path) -> Result<()> {
        if self.profile != Profile::CloudHypervisor {
            return Err(FrontendError::Usage(
                "reconnects follow cloud-hypervisor: use --profile cloud-hypervisor".into(),
            ));
        }
        // SAFETY: shutdown on the control socket this device owns; it stays open (and is
        // closed once, when the Frontend holding it is replaced below).
        unsafe { libc::shutdown(self.socket_fd(), libc::SHUT_RDWR) };
        self.messages.push("(close)".into());
        let deadline = Instant::now() + RETRY_FOR;
        let frontend = loop {
            match Frontend::connect(socket, self.queues.len() as u64) {
                Ok(f) => break f,
                Err(e) if Instant::now() >= deadline => {
                    return Err(FrontendError::vhost(
                        format!("reconnect {}", socket.display()),
                        e,
                    ))
                }
                Err(_) => std::thread::sleep(RETRY_EVERY),
            }
        };
        self.replace_frontend(frontend);
        self.messages.push("(reconnected)".into());
        self.cloud_hypervisor_setup()
    }
}

/// SIGKILLs the deepest process under `top` (following each process's first child) and
/// returns when.
fn kill_deepest(top: u32) -> Result<Instant> {
    let mut pid = top;
    while let Some(child) = first_child(pid) {
        pid = child;
    }
    if pid == top {
        return Err(FrontendError::Usage(format!(
            "--kill-under {top}: it has no child to kill"
        )));
    }
    let at = Instant::now();
    // SAFETY: kill with a pid read from /proc just now and a constant signal; at worst the
    // process is already gone (ESRCH), which the hang-up wait then sees anyway.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    Ok(at)
}

fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Device {
    /// Waits until the back end's end of the control socket is closed.
    pub fn wait_for_hangup(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.backend_connected() {
            if Instant::now() >= deadline {
                return Err(FrontendError::Usage(
                    "the killed back end still holds the socket".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}
