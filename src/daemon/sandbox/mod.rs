//! Confinement of the daemon before it serves a guest, as virtiofsd does it: new namespaces
//! and pivot_root into the served directory (or a chroot), capabilities dropped, then a
//! seccomp allow-list of the system calls serving needs.
//!
//! A shared directory served read-write (the default for `--shared-dir`) stays writable in
//! the sandbox: its bind mount is read-write while the rest of the daemon's root (an empty
//! tmpfs and its own /proc) is read-only; the daemon keeps the capabilities that acting as
//! any owner needs, and the seccomp filter adds the write path's system calls. With
//! `--readonly`, and for images, the bind mount is read-only and those calls are refused.
//!
//! Order (driven by `daemon::start`): [`block_stop_signals`]; [`isolate`] (in namespace mode
//! the process forks and the parent becomes a [`Supervisor`]); open what only the host file
//! system has (the pass-through file system's /proc/self/fd); [`Jail::confine`];
//! [`load_seccomp`]; start threads; [`unblock_stop_signals`] once handlers are in place.

mod caps;
mod error;
mod jail;
mod namespace;
mod seccomp;
mod supervisor;
mod syscalls;

use std::path::{Path, PathBuf};

use rustix::thread::CapabilitySet;

pub use error::SandboxError;
pub use seccomp::TRAPPED_EXIT_STATUS;
pub(crate) use supervisor::stop_signals;
pub use supervisor::{block_stop_signals, unblock_stop_signals, Supervisor};
pub(crate) use syscalls::Needs;

use super::config::{Sandbox, Seccomp};

/// What [`isolate`] made of this process.
pub(crate) enum Isolated {
    /// The parent of the daemon, outside its namespaces: only waits for it.
    Supervisor(Supervisor),
    /// The daemon: confine it with [`Jail::confine`].
    Daemon(Jail),
}

/// Enters the namespaces of `mode` (namespace mode forks; the others do nothing yet).
/// Must run before any thread is started.
pub(crate) fn isolate(mode: Sandbox) -> Result<Isolated, SandboxError> {
    if mode == Sandbox::Namespace {
        if let namespace::Forked::Supervisor(s) = namespace::enter()? {
            return Ok(Isolated::Supervisor(s));
        }
    }
    Ok(Isolated::Daemon(Jail { mode }))
}

/// [`isolate`] for a supervisor that will start threads (see
/// `namespace::enter_keeping_threads`).
pub(crate) fn isolate_keeping_threads(mode: Sandbox) -> Result<Isolated, SandboxError> {
    if mode == Sandbox::Namespace {
        if let namespace::Forked::Supervisor(s) = namespace::enter_keeping_threads()? {
            return Ok(Isolated::Supervisor(s));
        }
    }
    Ok(Isolated::Daemon(Jail { mode }))
}

/// A daemon process about to be confined.
pub(crate) struct Jail {
    mode: Sandbox,
}

/// What the confined daemon serves, which sets how its root is built and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confined {
    /// A PuzzleFS image: its OCI directory, read-only; no capabilities.
    Image,
    /// A shared directory with `--readonly`: read-only; virtiofsd's capabilities.
    ReadOnlyDir,
    /// A shared directory served read-write: a read-write bind; virtiofsd's capabilities and
    /// DAC_READ_SEARCH (see `caps::WRITABLE_PASSTHROUGH`).
    WritableDir,
}

impl Jail {
    /// Makes `dir` the root directory and drops every capability except, for a shared
    /// directory, those virtiofsd keeps (plus DAC_READ_SEARCH when it is served read-write).
    /// Returns the path `dir` now has: `/`, or `/shared` for a shared directory in the
    /// namespace sandbox (whose root then also holds the daemon's own /proc). In the
    /// namespace sandbox `dir` is bind-mounted read-only unless it is a writable shared
    /// directory; a chroot changes no mount. Call before starting threads: capabilities are
    /// per thread.
    pub(crate) fn confine(self, dir: &Path, served: Confined) -> Result<PathBuf, SandboxError> {
        let inside = match (self.mode, served) {
            (Sandbox::None, _) => return Ok(dir.to_path_buf()),
            (Sandbox::Namespace, Confined::Image) => {
                jail::pivot_into(dir).map(|()| PathBuf::from("/"))?
            }
            (Sandbox::Namespace, Confined::ReadOnlyDir) => jail::pivot_into_with_proc(dir, false)?,
            (Sandbox::Namespace, Confined::WritableDir) => jail::pivot_into_with_proc(dir, true)?,
            (Sandbox::Chroot, _) => jail::chroot_into(dir).map(|()| PathBuf::from("/"))?,
        };
        caps::keep_only(match served {
            Confined::Image => CapabilitySet::empty(),
            Confined::ReadOnlyDir => caps::PASSTHROUGH,
            Confined::WritableDir => caps::WRITABLE_PASSTHROUGH,
        })?;
        Ok(inside)
    }

    /// For a mount table: the root becomes an empty read-only directory holding only the
    /// daemon's own /proc (namespace sandbox; no sandbox changes nothing), and the daemon
    /// keeps what a read-write shared directory needs, since it may be given one. A chroot
    /// cannot reach what is mounted later: refused.
    pub(crate) fn confine_table(self) -> Result<(), SandboxError> {
        match self.mode {
            Sandbox::None => return Ok(()),
            Sandbox::Namespace => jail::pivot_into_proc_only()?,
            Sandbox::Chroot => {
                return Err(SandboxError::Setup {
                    what: "serve a mount table in a chroot".into(),
                    source: std::io::Error::other("use --sandbox namespace or none"),
                })
            }
        }
        caps::keep_only(caps::WRITABLE_PASSTHROUGH)
    }
}

/// Loads the seccomp allow-list with `action` for anything else, on every thread.
pub(crate) fn load_seccomp(action: Seccomp, needs: Needs) -> Result<(), SandboxError> {
    seccomp::load(action, needs)
}
