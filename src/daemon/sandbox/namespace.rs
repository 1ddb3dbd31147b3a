//! Entering new namespaces: user (when not root), pid (by forking: the parent stays outside
//! as the [`Supervisor`]), then mount, network, IPC and UTS for the daemon child.

use std::io::{self, Read};
use std::os::fd::AsFd;

use rustix::fs::{fcntl_setfl, OFlags};
use rustix::process::{getegid, geteuid, set_parent_process_death_signal, Pid, Signal};
use rustix::thread::{unshare_unsafe, UnshareFlags};

use super::{SandboxError, Supervisor};

/// What forking into the new pid namespace made of this process.
pub(super) enum Forked {
    /// The parent, outside the namespaces.
    Supervisor(Supervisor),
    /// The child: pid 1 of the new pid namespace, in new mount, net, IPC and UTS namespaces.
    Daemon,
}

/// Moves the daemon into new namespaces (see the module doc). Must run before any thread is
/// started: fork copies only the calling thread.
pub(super) fn enter() -> Result<Forked, SandboxError> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(SandboxError::Threads(threads));
    }
    if !geteuid().is_root() {
        enter_user_namespace()?;
    }
    // SAFETY: NEWPID does not unshare the file descriptor table (no FILES flag), so no thread
    // can be left with descriptors it cannot see; it only affects children created later.
    unsafe { unshare_unsafe(UnshareFlags::NEWPID) }
        .map_err(SandboxError::setup("create a pid namespace"))?;
    // SIGCHLD must not be ignored, or the supervisor could neither see nor reap its child.
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let (alive_r, alive_w) = io::pipe().map_err(SandboxError::setup("create a pipe"))?;

    // SAFETY: the process has exactly one thread (checked above), so the child is a complete
    // copy of it: no lock can be held by a thread that does not exist in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(SandboxError::setup("fork")(io::Error::last_os_error())),
        0 => {
            drop(alive_w);
            set_parent_process_death_signal(Some(Signal::KILL))
                .map_err(SandboxError::setup("set the parent death signal"))?;
            // The parent may have died before the line above: then no signal will come, but
            // the pipe's write end is closed.
            if supervisor_gone(alive_r)? {
                return Err(SandboxError::SupervisorGone);
            }
            let flags = UnshareFlags::NEWNS
                | UnshareFlags::NEWNET
                | UnshareFlags::NEWIPC
                | UnshareFlags::NEWUTS;
            // SAFETY: no FILES flag: the descriptor table stays shared as it was (and this
            // process has a single thread).
            unsafe { unshare_unsafe(flags) }.map_err(SandboxError::setup(
                "create mount, net, ipc and uts namespaces",
            ))?;
            Ok(Forked::Daemon)
        }
        child => {
            drop(alive_r);
            Ok(Forked::Supervisor(Supervisor {
                // `child` is positive: fork returned neither -1 nor 0.
                child: Pid::from_raw(child).ok_or(SandboxError::SupervisorGone)?,
                _alive: alive_w,
            }))
        }
    }
}

fn thread_count() -> Result<usize, SandboxError> {
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(SandboxError::setup("list /proc/self/task"))?;
    Ok(tasks.count())
}

/// True when the read end of the liveness pipe sees EOF: every write end is closed.
fn supervisor_gone(alive: io::PipeReader) -> Result<bool, SandboxError> {
    fcntl_setfl(alive.as_fd(), OFlags::NONBLOCK)
        .map_err(SandboxError::setup("set the liveness pipe non-blocking"))?;
    let mut byte = [0u8; 1];
    match (&alive).read(&mut byte) {
        Ok(0) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(SandboxError::setup("read the liveness pipe")(e)),
    }
}

/// Without root, a user namespace where this user is root gives the rights to build the
/// others. Only this one uid and gid are mapped: files of other owners show as the overflow
/// id (65534) inside, which matters for a shared directory, not for an image.
fn enter_user_namespace() -> Result<(), SandboxError> {
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    // SAFETY: NEWUSER does not unshare the file descriptor table (no FILES flag).
    unsafe { unshare_unsafe(UnshareFlags::NEWUSER) }
        .map_err(SandboxError::setup("create a user namespace"))?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(SandboxError::setup(&format!("write {file}")))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}
