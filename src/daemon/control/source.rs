//! Opening what a mount request names, on the host side: the directory, resolved once and
//! checked against the [`SourcePolicy`], then cloned into a private detached mount
//! (`open_tree`), so that whoever holds the descriptor reaches that directory and what is
//! below it, nothing above (`..` stops at the clone's root) and nothing else of the host.
//! Read-only sources are cloned read-only, nosuid, nodev, noexec.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{openat, readlinkat, Mode, OFlags, CWD};
use rustix::mount::{open_tree, OpenTreeFlags};

use crate::mounts::{MountError, MountSpec};

/// Host directories never mounted, whatever the allow-list: the host's kernel interfaces.
const NEVER: &[&str] = &["/proc", "/sys", "/dev"];

/// Which host directories mount requests may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePolicy {
    /// If not empty, sources must be inside one of these (as resolved on the host).
    pub allowed: Vec<PathBuf>,
    /// Refuse a source that cannot be cloned into a private mount (a sandboxed daemon must
    /// not get a plain descriptor, from which `..` leads anywhere).
    pub require_private_mount: bool,
}

impl SourcePolicy {
    /// A policy allowing the directories `allowed` as they resolve now (symlinks followed),
    /// since sources are compared once resolved. Each must exist.
    pub fn resolved(allowed: &[PathBuf], require_private_mount: bool) -> io::Result<Self> {
        let allowed = allowed
            .iter()
            .map(|a| {
                a.canonicalize()
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", a.display())))
            })
            .collect::<io::Result<_>>()?;
        Ok(SourcePolicy {
            allowed,
            require_private_mount,
        })
    }

    fn check(&self, spec: &MountSpec, real: &Path) -> Result<(), MountError> {
        let forbidden = |allowed: String| MountError::Forbidden {
            path: spec.host_dir().to_path_buf(),
            allowed,
        };
        if real == Path::new("/") || NEVER.iter().any(|n| real.starts_with(n)) {
            return Err(forbidden("anything but /, /proc, /sys and /dev".into()));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| real.starts_with(a)) {
            let list: Vec<String> = self
                .allowed
                .iter()
                .map(|a| a.display().to_string())
                .collect();
            return Err(forbidden(list.join(", ")));
        }
        Ok(())
    }
}

/// Opens the host directory of `spec` for a mount (see the module doc).
pub fn open_source(spec: &MountSpec, policy: &SourcePolicy) -> Result<OwnedFd, MountError> {
    let dir = spec.host_dir();
    let fail = |source: io::Error| MountError::Source {
        path: dir.to_path_buf(),
        source,
    };
    let fd = openat(
        CWD,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(e.into()))?;
    let link = readlinkat(CWD, reach(&fd), Vec::new()).map_err(|e| fail(e.into()))?;
    let real = PathBuf::from(std::ffi::OsString::from_vec(link.into_bytes()));
    policy.check(spec, &real)?;
    let tree = match open_tree(
        fd.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH
            | OpenTreeFlags::AT_RECURSIVE,
    ) {
        Ok(tree) => tree,
        Err(_) if !policy.require_private_mount => return Ok(fd),
        Err(e) => {
            return Err(MountError::Internal(format!(
                "cannot make a private mount of {} for the sandbox: {e} (the daemon needs \
                 CAP_SYS_ADMIN; or run it with --sandbox none)",
                dir.display()
            )))
        }
    };
    if !spec.writable() {
        read_only(&tree).map_err(|e| {
            MountError::Internal(format!("cannot make {} read-only: {e}", dir.display()))
        })?;
    }
    Ok(tree)
}

/// Makes the detached mount tree `tree` read-only, nosuid, nodev and noexec.
fn read_only(tree: &OwnedFd) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY
            | libc::MOUNT_ATTR_NOSUID
            | libc::MOUNT_ATTR_NODEV
            | libc::MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes from `attr`, a live local;
    // the path is a NUL-terminated empty string and `tree` an open descriptor we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The path through which the holder of `fd` reaches the directory it refers to.
pub fn reach(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, readonly: bool) -> MountSpec {
        let config = if readonly { r#"{"readonly":true}"# } else { "" };
        MountSpec::parse("passthrough_fs", dir.to_str().unwrap(), config).unwrap()
    }

    #[test]
    fn refuses_what_the_policy_does_not_allow() {
        let tmp = tempfile::tempdir().unwrap();
        let inside = tmp.path().join("allowed/share");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(tmp.path().join("other")).unwrap();
        // A symlink from inside to outside is resolved before the check.
        std::os::unix::fs::symlink(tmp.path().join("other"), tmp.path().join("allowed/sneaky"))
            .unwrap();
        // The allowed directory itself named through a symlink: resolved when the policy is.
        std::os::unix::fs::symlink(tmp.path().join("allowed"), tmp.path().join("via-link"))
            .unwrap();
        let policy = SourcePolicy::resolved(&[tmp.path().join("via-link")], false).unwrap();
        assert_eq!(
            policy.allowed,
            [tmp.path().join("allowed").canonicalize().unwrap()]
        );
        assert!(open_source(&spec(&inside, false), &policy).is_ok());
        let missing = SourcePolicy::resolved(&[tmp.path().join("nowhere")], false).unwrap_err();
        assert!(missing.to_string().contains("nowhere"), "{missing}");
        for bad in [tmp.path().join("other"), tmp.path().join("allowed/sneaky")] {
            let e = open_source(&spec(&bad, false), &policy).unwrap_err();
            assert!(
                matches!(e, MountError::Forbidden { .. }),
                "{}: {e}",
                bad.display()
            );
        }
        let open = SourcePolicy::default();
        for never in ["/", "/proc", "/sys/kernel", "/dev"] {
            let e = open_source(&spec(Path::new(never), false), &open).unwrap_err();
            assert!(matches!(e, MountError::Forbidden { .. }), "{never}: {e}");
        }
        let e = open_source(&spec(&tmp.path().join("missing"), false), &open).unwrap_err();
        assert!(matches!(e, MountError::Source { .. }), "{e}");
    }

    #[test]
    fn a_private_mount_reaches_nothing_above_its_root() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join("f"), b"inside").unwrap();
        std::fs::write(tmp.path().join("secret"), b"outside").unwrap();
        let policy = SourcePolicy {
            allowed: Vec::new(),
            require_private_mount: true,
        };
        let rw = open_source(&spec(&share, false), &policy).unwrap();
        let at = reach(&rw);
        assert_eq!(std::fs::read(at.join("f")).unwrap(), b"inside");
        assert!(!at.join("../secret").exists(), "'..' stops at the root");
        std::fs::write(at.join("new"), b"written").unwrap();
        assert_eq!(std::fs::read(share.join("new")).unwrap(), b"written");
        let ro = open_source(&spec(&share, true), &policy).unwrap();
        let e = std::fs::write(reach(&ro).join("other"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }
}
