//! Making one directory the whole visible file system: pivot_root into a private bind mount
//! of it (in the new mount namespace; read-only unless it is a shared directory served
//! read-write), or chroot into it.

use std::path::{Path, PathBuf};

use rustix::fs::{mkdir, statvfs, Mode, StatVfsMountFlags};
use rustix::mount::{
    mount, mount_bind_recursive, mount_change, mount_remount, unmount, MountFlags,
    MountPropagationFlags, UnmountFlags,
};
use rustix::process::{chdir, chroot, pivot_root};

use super::SandboxError;

/// Where a shared directory is inside the namespace sandbox.
pub(super) const SHARED_DIR_INSIDE: &str = "/shared";

fn at(dir: &Path) -> impl Fn(rustix::io::Errno) -> SandboxError + '_ {
    move |e| SandboxError::Directory {
        path: dir.to_path_buf(),
        source: e.into(),
    }
}

/// In the new mount namespace: makes a read-only bind mount of `dir` the root directory.
pub(super) fn pivot_into(dir: &Path) -> Result<(), SandboxError> {
    make_mounts_private()?;
    bind_read_only(dir, dir)?;
    pivot_to(dir)
}

/// For a shared directory: fuse-backend-rs reads and writes extended attributes through
/// `/proc/self/fd/N` paths, so the root is an empty read-only tmpfs holding a fresh,
/// read-only /proc (of the new pid namespace: only the daemon shows) and a bind mount of
/// `dir` at [`SHARED_DIR_INSIDE`], read-write when `writable` (its submounts keep their own
/// flags), else read-only. Returns that path.
pub(super) fn pivot_into_with_proc(dir: &Path, writable: bool) -> Result<PathBuf, SandboxError> {
    pivot_into_proc_and(Some((dir, writable)))?;
    Ok(PathBuf::from(SHARED_DIR_INSIDE))
}

/// For a mount table: an empty read-only tmpfs holding only a fresh, read-only /proc (what
/// it serves arrives later, as descriptors of private mounts, reached through /proc/self/fd).
pub(super) fn pivot_into_proc_only() -> Result<(), SandboxError> {
    pivot_into_proc_and(None)
}

/// The root of [`pivot_into_with_proc`] and [`pivot_into_proc_only`]: a tmpfs with /proc
/// and, given `shared`, that directory at [`SHARED_DIR_INSIDE`].
fn pivot_into_proc_and(shared: Option<(&Path, bool)>) -> Result<(), SandboxError> {
    make_mounts_private()?;
    // The new root is built on the host's /proc (hidden in this namespace only): it always
    // exists and is never inside `dir`, so the recursive bind of `dir` cannot copy it.
    let staging = Path::new("/proc");
    let hardened = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount("tmpfs", staging, "tmpfs", hardened, c"mode=0755,size=16k").map_err(at(staging))?;
    let proc = staging.join("proc");
    mkdir(&proc, Mode::from_raw_mode(0o755)).map_err(at(&proc))?;
    if let Some((dir, writable)) = shared {
        let shared = staging.join(SHARED_DIR_INSIDE.trim_start_matches('/'));
        mkdir(&shared, Mode::from_raw_mode(0o755)).map_err(at(&shared))?;
        if writable {
            mount_bind_recursive(dir, &shared).map_err(at(&shared))?;
        } else {
            bind_read_only(dir, &shared)?;
        }
    }
    // Read-only procfs still resolves /proc/self/fd/N to the file, on the file's own mount.
    mount("proc", &proc, "proc", hardened | MountFlags::RDONLY, None).map_err(at(&proc))?;
    mount_remount(staging, hardened | MountFlags::RDONLY, "").map_err(at(staging))?;
    pivot_to(staging)
}

/// Stops mount events from flowing between this namespace and the host.
fn make_mounts_private() -> Result<(), SandboxError> {
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(SandboxError::setup("make the mounts private"))
}

/// Bind-mounts `source` (and the mounts below it) on `target`, read-only.
fn bind_read_only(source: &Path, target: &Path) -> Result<(), SandboxError> {
    mount_bind_recursive(source, target).map_err(at(target))?;
    // A remount must repeat the flags a user namespace may not clear (nosuid, nodev, noexec,
    // atime), so start from what the mount has.
    let kept = locked_flags(statvfs(target).map_err(at(target))?.f_flag);
    mount_remount(target, MountFlags::BIND | MountFlags::RDONLY | kept, "").map_err(at(target))
}

/// Makes the mount at `dir` the root; the old root is detached, so nothing of the host file
/// system stays reachable.
fn pivot_to(dir: &Path) -> Result<(), SandboxError> {
    chdir(dir).map_err(at(dir))?;
    // The old root ends up stacked on the new one, at ".": detach it.
    pivot_root(".", ".").map_err(SandboxError::setup("pivot_root"))?;
    unmount(".", UnmountFlags::DETACH).map_err(SandboxError::setup("detach the old root"))?;
    chdir("/").map_err(SandboxError::setup("chdir /"))
}

/// Without namespaces: chroot into `dir`.
pub(super) fn chroot_into(dir: &Path) -> Result<(), SandboxError> {
    chdir(dir).map_err(at(dir))?;
    chroot(".").map_err(at(dir))?;
    chdir("/").map_err(SandboxError::setup("chdir /"))
}

fn locked_flags(have: StatVfsMountFlags) -> MountFlags {
    let pairs = [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ];
    pairs
        .iter()
        .filter(|(v, _)| have.contains(*v))
        .fold(MountFlags::empty(), |acc, (_, m)| acc | *m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remount_keeps_the_locked_flags_only() {
        let have = StatVfsMountFlags::NOSUID
            | StatVfsMountFlags::NODEV
            | StatVfsMountFlags::RDONLY
            | StatVfsMountFlags::SYNCHRONOUS;
        assert_eq!(locked_flags(have), MountFlags::NOSUID | MountFlags::NODEV);
        assert_eq!(
            locked_flags(StatVfsMountFlags::empty()),
            MountFlags::empty()
        );
    }
}
