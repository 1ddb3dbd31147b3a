//! Entering new namespaces: user (when not root), pid (by forking: the parent stays outside
//! as the [`Supervisor`]), then mount, network, IPC and UTS for the daemon child. A
//! supervisor that must start threads has a waiting process between it and the daemon.

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
    prepare()?;
    new_pid_namespace()?;
    match fork_watched()? {
        Some(supervisor) => Ok(Forked::Supervisor(supervisor)),
        None => daemon_namespaces(),
    }
}

/// Like [`enter`], for a supervisor that must start threads (to serve an API): a process
/// that unshared its pid namespace cannot, so the fork comes first. The child unshares it
/// and forks the daemon, then only waits for it (forwarding stop signals) and ends as it
/// ended: `supervisor -> waiter -> daemon`.
pub(super) fn enter_keeping_threads() -> Result<Forked, SandboxError> {
    prepare()?;
    if let Some(supervisor) = fork_watched()? {
        return Ok(Forked::Supervisor(supervisor));
    }
    new_pid_namespace()?;
    match fork_watched()? {
        Some(waiter) => end_as(waiter.wait()),
        None => daemon_namespaces(),
    }
}

/// Checks that this process has one thread, and gives it a user namespace when not root.
fn prepare() -> Result<(), SandboxError> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(SandboxError::Threads(threads));
    }
    if !geteuid().is_root() {
        enter_user_namespace()?;
    }
    // SIGCHLD must not be ignored, or the supervisor could neither see nor reap its child.
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    Ok(())
}

/// Children from now on start a new pid namespace.
fn new_pid_namespace() -> Result<(), SandboxError> {
    // SAFETY: NEWPID does not unshare the file descriptor table (no FILES flag), so no thread
    // can be left with descriptors it cannot see; it only affects children created later.
    unsafe { unshare_unsafe(UnshareFlags::NEWPID) }
        .map_err(SandboxError::setup("create a pid namespace"))
}

/// Forks. In the parent: its [`Supervisor`]. In the child: `None`, once it is sure to be
/// killed when the parent dies.
fn fork_watched() -> Result<Option<Supervisor>, SandboxError> {
    let (alive_r, alive_w) = io::pipe().map_err(SandboxError::setup("create a pipe"))?;
    // SAFETY: the process has exactly one thread (checked by `prepare`), so the child is a
    // complete copy of it: no lock can be held by a thread that does not exist in the child.
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
            Ok(None)
        }
        child => {
            drop(alive_r);
            Ok(Some(Supervisor {
                // `child` is positive: fork returned neither -1 nor 0.
                child: Pid::from_raw(child).ok_or(SandboxError::SupervisorGone)?,
                _alive: alive_w,
            }))
        }
    }
}

/// In the forked daemon: the mount, network, IPC and UTS namespaces.
fn daemon_namespaces() -> Result<Forked, SandboxError> {
    let flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWNET | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    // SAFETY: no FILES flag: the descriptor table stays shared as it was (and this process
    // has a single thread).
    unsafe { unshare_unsafe(flags) }.map_err(SandboxError::setup(
        "create mount, net, ipc and uts namespaces",
    ))?;
    Ok(Forked::Daemon)
}

/// Ends this process as the daemon it waited for ended: with its exit status, or killed by
/// the same signal.
fn end_as(status: Result<std::process::ExitStatus, SandboxError>) -> ! {
    use std::os::unix::process::ExitStatusExt;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("puzzlefs-virtiofsd: {e}");
            std::process::exit(1)
        }
    };
    if let Some(sig) = status.signal() {
        // SAFETY: restores the default action of `sig`, unblocks it and raises it in this
        // single-threaded process; nothing runs after that but the kernel's default action.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(status.code().unwrap_or(1))
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
