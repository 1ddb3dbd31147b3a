//! The seccomp allow-list: every system call the daemon makes once it is confined, grouped by
//! who needs it. Found with `strace -f` over the QEMU guest tests (plain and compressed images,
//! shared directories read-only and read-write, both Kata launch styles, with and without
//! `--syslog`, `--xattr`): the calls after the `seccomp()` call; the write path's also by
//! reading fuse-backend-rs 0.14's `passthrough/sync_io.rs`, `passthrough/mod.rs` and
//! `common/file_traits.rs`. A few calls sit on paths those runs do not take (signal delivery,
//! statfs, the `--sandbox none` exit); each is marked. Anything missing here kills the
//! daemon under `--seccomp kill`: run with `--seccomp log` and read the audit log to find it.

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// Which optional groups the daemon needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Needs {
    /// Serving a shared directory through fuse-backend-rs's pass-through file system.
    pub passthrough: bool,
    /// Serving PuzzleFS images.
    pub images: bool,
    /// Serving the HTTP API in this process (no sandbox: tokio, hyper, and opening the
    /// sources of mount requests).
    pub api: bool,
    /// That shared directory is served read-write (no `--readonly`): the write path's calls.
    pub writable: bool,
    /// Logging through syslog(3), which reconnects to /dev/log when it has no socket.
    pub syslog: bool,
    /// Removing the socket file at exit (`--sandbox none` with `--socket-path`).
    pub unlink_socket: bool,
    /// The image's chunk store (a memfd): the only file the daemon may write, and it reads
    /// from it with preadv.
    pub chunk_store_fd: Option<i32>,
    /// `--fs-verity`: each blob's fs-verity measurement is read (ioctl) as it is opened.
    pub measure_verity: bool,
    /// Requests are tracked in an inflight region (a generation behind a respawner): its
    /// control-socket relay connects to a private socket per front end, and GET_INFLIGHT_FD
    /// makes a memfd.
    pub inflight: bool,
}

type Nr = libc::c_long;

/// Rust's std and glibc, on every thread.
const RUNTIME: &[Nr] = &[
    // Memory (allocator, thread stacks).
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap, // not seen: a large Vec growing in place
    libc::SYS_brk,    // not seen: the main thread's malloc arena
    // Threads: the worker pool and vhost-user-backend's queue threads start after the filter.
    libc::SYS_clone3,
    libc::SYS_clone, // not seen: glibc's fallback when clone3 is missing
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_futex,
    libc::SYS_sched_yield,   // not seen: std's lock back-off
    libc::SYS_getrandom,     // not seen: HashMap keys on a new thread
    libc::SYS_clock_gettime, // not seen: log timestamps without the vDSO
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Signals: the SIGTERM/SIGINT thread, the trap handler.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn, // not seen: returning from any signal handler
    libc::SYS_socketpair,   // signal-hook's self-pipe
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    // Logging to stderr; descriptors.
    libc::SYS_write,
    libc::SYS_read,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_statx,
];

/// vhost-user: the front end's socket, guest memory, eventfds and the queue threads' epoll.
const VHOST_USER: &[Nr] = &[
    libc::SYS_accept4,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait, // not seen on x86_64: what glibc uses elsewhere
];

/// A PuzzleFS image: blobs are opened by path (inside the new root) when first read; chunks
/// are copied out of the chunk store with preadv (pwrite64 is allowed on the store alone).
const IMAGE: &[Nr] = &[libc::SYS_openat, libc::SYS_preadv, libc::SYS_pread64];

/// fuse-backend-rs's pass-through file system over a shared directory.
const PASSTHROUGH: &[Nr] = &[
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_lseek,
    libc::SYS_preadv,
    libc::SYS_pread64,   // not seen: single-buffer reads
    libc::SYS_dup,       // FLUSH
    libc::SYS_umask,     // FUSE_INIT
    libc::SYS_fstatfs,   // not seen: STATFS (df in the guest)
    libc::SYS_getxattr,  // --xattr, by /proc/self/fd/N path
    libc::SYS_listxattr, // --xattr, by /proc/self/fd/N path
];

/// The write path of the pass-through file system (a shared directory served read-write), on
/// top of [`PASSTHROUGH`]; by FUSE request. `openat` (CREATE, and reopening an inode for
/// writing through /proc/self/fd) and `fcntl` (F_SETFL when a WRITE's flags differ from the
/// open's) are already allowed. setresuid and setresgid are allowed separately, with rules.
const WRITE: &[Nr] = &[
    libc::SYS_mkdirat,     // MKDIR
    libc::SYS_mknodat,     // MKNOD: fifos, sockets, device nodes
    libc::SYS_symlinkat,   // SYMLINK
    libc::SYS_linkat,      // LINK: linkat(fd, "", AT_EMPTY_PATH) on the inode's O_PATH fd
    libc::SYS_unlinkat,    // UNLINK, RMDIR (AT_REMOVEDIR)
    libc::SYS_renameat2,   // RENAME, RENAME2: a raw syscall, flags passed through
    libc::SYS_pwritev,     // WRITE: the guest's buffers, always as an iovec (never pwrite64)
    libc::SYS_fchmod,      // SETATTR mode with a handle (a user's ftruncate kills setuid)
    libc::SYS_fchmodat,    // SETATTR mode without a handle: fchmodat(/proc/self/fd, "N")
    libc::SYS_fchownat,    // SETATTR uid/gid: fchownat(fd, "", AT_EMPTY_PATH)
    libc::SYS_ftruncate,   // SETATTR size (truncate, O_TRUNC)
    libc::SYS_utimensat,   // SETATTR times (glibc's futimens is utimensat(fd, NULL))
    libc::SYS_fallocate,   // FALLOCATE
    libc::SYS_fsync,       // FSYNC, FSYNCDIR
    libc::SYS_fdatasync,   // FSYNC, FSYNCDIR with the datasync flag
    libc::SYS_setxattr,    // SETXATTR (--xattr only), by /proc/self/fd/N path
    libc::SYS_removexattr, // REMOVEXATTR (--xattr only), by /proc/self/fd/N path
];

/// The HTTP API served in-process (`--sandbox none`): hyper's replies and closing
/// connections, and opening each mount's source (resolving it, cloning a private mount of
/// it when the process may).
const API: &[Nr] = &[
    libc::SYS_writev,
    libc::SYS_shutdown,
    libc::SYS_openat,
    libc::SYS_readlinkat,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
];

/// syslog(3) (`--syslog`): sends, and retries connecting to /dev/log while it has no socket.
const SYSLOG: &[Nr] = &[libc::SYS_connect, libc::SYS_sendto, libc::SYS_getpid];

/// Removing the socket file on exit: std's remove_file.
const INFLIGHT: &[Nr] = &[
    libc::SYS_connect,      // the relay's private socket (socket(AF_UNIX) below)
    libc::SYS_shutdown,     // ending a relayed connection
    libc::SYS_memfd_create, // GET_INFLIGHT_FD: the region
    libc::SYS_ftruncate,    // its size
];

const UNLINK: &[Nr] = &[
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    libc::SYS_unlinkat,
];

/// Allowed system calls, each with the argument rules that allow it (none: any arguments).
pub(super) fn allow_list(needs: Needs) -> Result<Vec<(i64, Vec<SeccompRule>)>, BackendError> {
    let mut list: Vec<(i64, Vec<SeccompRule>)> = Vec::new();
    let mut any = |calls: &[Nr]| {
        for &nr in calls {
            if !list.iter().any(|(have, _)| *have == nr) {
                list.push((nr, Vec::new()));
            }
        }
    };
    any(RUNTIME);
    any(VHOST_USER);
    if needs.passthrough {
        any(PASSTHROUGH);
    }
    if needs.images {
        any(IMAGE);
    }
    if needs.api {
        any(API);
    }
    let writable = needs.passthrough && needs.writable;
    if writable {
        any(WRITE);
    }
    if needs.syslog {
        any(SYSLOG);
    }
    if needs.unlink_socket {
        any(UNLINK);
    }
    if needs.inflight {
        any(INFLIGHT);
    }
    // prctl only to name threads (std does it for every named thread).
    list.push((libc::SYS_prctl, vec![arg0_is(libc::PR_SET_NAME as u64)?]));
    if needs.syslog || needs.inflight {
        list.push((libc::SYS_socket, vec![arg0_is(libc::AF_UNIX as u64)?]));
    }
    if writable {
        // fuse-backend-rs's scoped_cred, around CREATE, MKDIR, MKNOD, SYMLINK (and opening an
        // existing file in CREATE) for a guest user other than root: set{res}uid(-1, id, -1)
        // on the calling thread only (a raw syscall, not glibc's process-wide wrapper), then
        // (-1, 0, -1) back. Only the effective id may change: real and saved stay root.
        for call in [libc::SYS_setresuid, libc::SYS_setresgid] {
            list.push((call, vec![effective_id_only()?]));
        }
    }
    if let Some(fd) = needs.chunk_store_fd {
        list.push((libc::SYS_pwrite64, vec![arg0_is(fd as u64)?]));
    }
    if needs.measure_verity {
        let request = SeccompCondition::new(
            1,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::Eq,
            crate::oci::FS_IOC_MEASURE_VERITY.into(),
        )?;
        list.push((libc::SYS_ioctl, vec![SeccompRule::new(vec![request])?]));
    }
    Ok(list)
}

fn arg0_is(value: u64) -> Result<SeccompRule, BackendError> {
    let cond = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?;
    SeccompRule::new(vec![cond])
}

/// set{res}uid/gid(-1, any, -1): the real (arg 0) and saved (arg 2) ids stay unchanged.
fn effective_id_only() -> Result<SeccompRule, BackendError> {
    let unchanged = |arg| {
        SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            u64::from(u32::MAX),
        )
    };
    SeccompRule::new(vec![unchanged(0)?, unchanged(2)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE_ONLY: Needs = Needs {
        passthrough: false,
        images: true,
        api: false,
        writable: false,
        syslog: false,
        unlink_socket: false,
        chunk_store_fd: None,
        measure_verity: false,
        inflight: false,
    };

    fn allowed(needs: Needs) -> Vec<i64> {
        allow_list(needs)
            .unwrap()
            .into_iter()
            .map(|(nr, _)| nr)
            .collect()
    }

    /// The rules of each time `call` is listed.
    fn rules(needs: Needs, call: i64) -> Vec<Vec<SeccompRule>> {
        allow_list(needs)
            .unwrap()
            .into_iter()
            .filter(|(nr, _)| *nr == call)
            .map(|(_, rules)| rules)
            .collect()
    }

    /// One rule: every `(arg, width, value)` compares equal.
    fn all_equal(conditions: Vec<(u8, SeccompCmpArgLen, u64)>) -> SeccompRule {
        let conditions = conditions
            .into_iter()
            .map(|(arg, len, value)| SeccompCondition::new(arg, len, SeccompCmpOp::Eq, value))
            .collect::<Result<_, _>>()
            .unwrap();
        SeccompRule::new(conditions).unwrap()
    }

    fn each_once(all: &[i64]) {
        let mut sorted = all.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "each call appears once");
    }

    #[test]
    fn groups_follow_the_needs() {
        let all = allowed(IMAGE_ONLY);
        assert!(all.contains(&libc::SYS_openat) && all.contains(&libc::SYS_accept4));
        for absent in [libc::SYS_getdents64, libc::SYS_socket, libc::SYS_unlinkat] {
            assert!(!all.contains(&absent), "{absent} allowed for an image");
        }
        each_once(&all);

        let every = allowed(Needs {
            passthrough: true,
            syslog: true,
            unlink_socket: true,
            ..IMAGE_ONLY
        });
        for present in [libc::SYS_getdents64, libc::SYS_socket, libc::SYS_unlinkat] {
            assert!(every.contains(&present), "{present} missing");
        }

        let tracked = Needs {
            inflight: true,
            syslog: true,
            ..IMAGE_ONLY
        };
        let all = allowed(tracked);
        for present in [
            libc::SYS_connect,
            libc::SYS_memfd_create,
            libc::SYS_ftruncate,
        ] {
            assert!(
                all.contains(&present),
                "{present} missing for an inflight region"
            );
        }
        assert!(!allowed(IMAGE_ONLY).contains(&libc::SYS_memfd_create));
        each_once(&all);
        assert_eq!(
            rules(tracked, libc::SYS_socket),
            [vec![all_equal(vec![(
                0,
                SeccompCmpArgLen::Dword,
                libc::AF_UNIX as u64
            )])]],
            "socket(AF_UNIX) only, listed once"
        );
    }

    /// The calls of the write path (one per kind of change a guest makes).
    const WRITES: [i64; 10] = [
        libc::SYS_mkdirat,
        libc::SYS_renameat2,
        libc::SYS_linkat,
        libc::SYS_pwritev,
        libc::SYS_fchownat,
        libc::SYS_ftruncate,
        libc::SYS_fsync,
        libc::SYS_setxattr,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
    ];

    #[test]
    fn write_calls_only_for_a_writable_shared_dir() {
        let read_only = Needs {
            passthrough: true,
            ..IMAGE_ONLY
        };
        let writable = Needs {
            writable: true,
            ..read_only
        };
        let image_asking = Needs {
            writable: true,
            ..IMAGE_ONLY
        };
        for (needs, what) in [(read_only, "--readonly"), (image_asking, "an image")] {
            let list = allowed(needs);
            for call in WRITES {
                assert!(!list.contains(&call), "{call} allowed for {what}");
            }
        }
        let list = allowed(writable);
        each_once(&list);
        for call in WRITES
            .iter()
            .chain(&[libc::SYS_mknodat, libc::SYS_fchmodat])
        {
            assert!(
                list.contains(call),
                "{call} missing for a writable shared dir"
            );
        }
        let unchanged = u64::from(u32::MAX);
        let effective_only = all_equal(vec![
            (0, SeccompCmpArgLen::Dword, unchanged),
            (2, SeccompCmpArgLen::Dword, unchanged),
        ]);
        for call in [libc::SYS_setresuid, libc::SYS_setresgid] {
            assert_eq!(
                rules(writable, call),
                [vec![effective_only.clone()]],
                "{call}: only the effective id may change"
            );
        }
        assert!(
            !list.contains(&libc::SYS_pwrite64),
            "fuse-backend-rs writes with pwritev only"
        );
    }

    #[test]
    fn only_the_chunk_store_may_be_written() {
        let needs = Needs {
            chunk_store_fd: Some(9),
            measure_verity: true,
            ..IMAGE_ONLY
        };
        assert_eq!(
            rules(needs, libc::SYS_pwrite64),
            [vec![all_equal(vec![(0, SeccompCmpArgLen::Dword, 9)])]],
            "pwrite64 allowed once, on the chunk store's descriptor only"
        );
        let measure = u64::from(crate::oci::FS_IOC_MEASURE_VERITY);
        assert_eq!(
            rules(needs, libc::SYS_ioctl),
            [vec![all_equal(vec![(1, SeccompCmpArgLen::Qword, measure)])]],
            "ioctl allowed once, for FS_IOC_MEASURE_VERITY only"
        );
        let no_store = Needs {
            chunk_store_fd: None,
            ..needs
        };
        assert!(rules(no_store, libc::SYS_pwrite64).is_empty());
        let list = allowed(needs);
        for absent in [libc::SYS_pwritev, libc::SYS_ftruncate] {
            assert!(!list.contains(&absent), "{absent} allowed");
        }
    }

    #[test]
    fn never_allowed() {
        let every = allowed(Needs {
            passthrough: true,
            writable: true,
            syslog: true,
            unlink_socket: true,
            ..IMAGE_ONLY
        });
        for forbidden in [
            libc::SYS_ioctl,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_chroot,
            libc::SYS_open_by_handle_at,
            libc::SYS_name_to_handle_at,
            libc::SYS_setuid,
            libc::SYS_setgid,
            libc::SYS_setreuid,
            libc::SYS_setgroups,
            libc::SYS_setfsuid,
            libc::SYS_capset,
            libc::SYS_init_module,
            libc::SYS_bpf,
        ] {
            assert!(!every.contains(&forbidden), "{forbidden} allowed");
        }
    }
}
