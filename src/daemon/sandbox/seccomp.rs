//! Loading the seccomp allow-list ([`syscalls`](super::syscalls)) with the action
//! `--seccomp` names for everything else; for `trap`, a SIGSYS handler that reports the
//! forbidden system call and ends the daemon.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use super::syscalls::{allow_list, Needs};
use super::SandboxError;
use crate::daemon::config::Seccomp;

/// Exit status after a trapped system call (128 + SIGSYS, as a shell reports a signal).
pub const TRAPPED_EXIT_STATUS: i32 = 128 + libc::SIGSYS;

/// Loads the filter on every thread of the process; threads started later inherit it.
pub(super) fn load(action: Seccomp, needs: Needs) -> Result<(), SandboxError> {
    let Some(mismatch) = mismatch_action(action) else {
        return Ok(());
    };
    let program = compile(mismatch, needs)?;
    if action == Seccomp::Trap {
        install_sigsys_handler()?;
    }
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| SandboxError::Seccomp(e.to_string()))
}

fn mismatch_action(action: Seccomp) -> Option<SeccompAction> {
    match action {
        Seccomp::None => None,
        Seccomp::Kill => Some(SeccompAction::KillProcess),
        Seccomp::Log => Some(SeccompAction::Log),
        Seccomp::Trap => Some(SeccompAction::Trap),
    }
}

fn compile(mismatch: SeccompAction, needs: Needs) -> Result<BpfProgram, SandboxError> {
    let err = |e: seccompiler::BackendError| SandboxError::Seccomp(e.to_string());
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
    let rules: BTreeMap<_, _> = allow_list(needs).map_err(err)?.into_iter().collect();
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch).map_err(err)?;
    filter.try_into().map_err(err)
}

/// The kernel's `siginfo_t` for SIGSYS on 64-bit Linux (`_sigsys` of the union): libc exposes
/// no accessor for the system call number.
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler, and for SIGSYS from
    // seccomp it is laid out as SigsysInfo.
    let nr = unsafe { (*info.cast::<SigsysInfo>()).syscall };
    // Only async-signal-safe work from here on: format into a stack buffer, write, _exit.
    let mut buf = [0u8; 96];
    let head = b"puzzlefs-virtiofsd: seccomp: forbidden system call ";
    buf[..head.len()].copy_from_slice(head);
    let mut len = head.len() + write_decimal(nr, &mut buf[head.len()..]);
    buf[len] = b'\n';
    len += 1;
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `buf` holds `len` valid bytes.
    unsafe {
        libc::write(libc::STDERR_FILENO, buf.as_ptr().cast(), len);
        libc::_exit(TRAPPED_EXIT_STATUS);
    }
}

/// Writes `n` in decimal at the start of `out` (which holds at least 11 bytes); returns the
/// byte count. No allocation: it runs in a signal handler.
fn write_decimal(n: i32, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 10];
    let mut v = n.unsigned_abs();
    let mut count = 0;
    loop {
        digits[count] = b'0' + (v % 10) as u8;
        count += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut at = 0;
    if n < 0 {
        out[0] = b'-';
        at = 1;
    }
    for d in digits[..count].iter().rev() {
        out[at] = *d;
        at += 1;
    }
    at
}

fn install_sigsys_handler() -> Result<(), SandboxError> {
    // SAFETY: the handler only does async-signal-safe work (see on_sigsys); the sigaction
    // struct is zeroed (empty mask), then filled with a valid handler and flags.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(SandboxError::setup("install the SIGSYS handler")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicI32, Ordering};

    #[test]
    fn decimal_without_allocation() {
        for n in [0, 7, 42, 435, i32::MAX, -1, i32::MIN] {
            let mut out = [0u8; 11];
            let len = write_decimal(n, &mut out);
            assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), n.to_string());
        }
    }

    const IMAGE: Needs = Needs {
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

    /// Forks a child that loads the filter for `needs` with `action`, then runs `body` and
    /// exits with what it returns; returns the child's wait status and what it wrote on
    /// stderr. `body` may only make async-signal-safe calls.
    fn under_filter(
        action: Seccomp,
        needs: Needs,
        body: fn() -> i32,
    ) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        use std::os::unix::process::ExitStatusExt;
        let program = compile(mismatch_action(action).unwrap(), needs).unwrap();
        let (mut out, err) = std::io::pipe().unwrap();
        // SAFETY: the child only calls async-signal-safe functions (dup2, sigaction, prctl,
        // seccomp, what `body` calls, write in the handler, _exit) on memory prepared before
        // the fork, so the other threads of the test process, absent in the child, hold
        // nothing it needs.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: as above; `err` is open in the child.
            unsafe {
                libc::dup2(err.as_raw_fd(), libc::STDERR_FILENO);
                if action == Seccomp::Trap && install_sigsys_handler().is_err() {
                    libc::_exit(2);
                }
                if seccompiler::apply_filter(&program).is_err() {
                    libc::_exit(3);
                }
                libc::_exit(body());
            }
        }
        drop(err);
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is valid for writes.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        (std::process::ExitStatus::from_raw(status), text)
    }

    /// The image-mode filter with `action`, and a call to chroot(2), which the list never
    /// allows.
    fn forbidden_call_under(action: Seccomp) -> (std::process::ExitStatus, String) {
        under_filter(action, IMAGE, || {
            // SAFETY: chroot(2) on a valid C string; it only fails (no such directory).
            let rc = unsafe { libc::chroot(c"/nonexistent-pfs-seccomp-test".as_ptr()) };
            if rc == -1 {
                0
            } else {
                4
            }
        })
    }

    #[test]
    fn the_write_filter_lets_only_the_effective_id_change() {
        let writable = Needs {
            passthrough: true,
            writable: true,
            ..IMAGE
        };
        let (status, text) = under_filter(Seccomp::Trap, writable, || {
            let keep = u32::MAX as libc::c_long;
            // SAFETY: raw set{res}uid/gid calls to root's ids (no change when run as root, and
            // EPERM otherwise: either way the filter let them through) or refused by the
            // filter; write(2) of a static string.
            unsafe {
                libc::syscall(libc::SYS_setresgid, keep, 0, keep);
                libc::syscall(libc::SYS_setresuid, keep, 0, keep);
                libc::write(libc::STDERR_FILENO, c"allowed\n".as_ptr().cast(), 8);
                // The real uid may not be named: trapped.
                libc::syscall(libc::SYS_setresuid, 0, keep, keep);
            }
            5
        });
        assert_eq!(
            status.code(),
            Some(TRAPPED_EXIT_STATUS),
            "{status}: {text:?}"
        );
        let want = format!("forbidden system call {}\n", libc::SYS_setresuid);
        assert!(
            text.starts_with("allowed\n") && text.ends_with(&want),
            "{text:?}"
        );

        // Without a writable shared dir even the effective-id switch is refused.
        let read_only = Needs {
            writable: false,
            ..writable
        };
        let (status, text) = under_filter(Seccomp::Trap, read_only, || {
            let keep = u32::MAX as libc::c_long;
            // SAFETY: a raw setresuid that the filter refuses.
            unsafe { libc::syscall(libc::SYS_setresuid, keep, 0, keep) };
            5
        });
        assert_eq!(
            status.code(),
            Some(TRAPPED_EXIT_STATUS),
            "{status}: {text:?}"
        );
    }

    /// The chunk store's descriptor and another writable one, for the child of
    /// `pwrite64_only_on_the_chunk_store` (its body cannot capture).
    static STORE_FD: AtomicI32 = AtomicI32::new(-1);
    static OTHER_FD: AtomicI32 = AtomicI32::new(-1);

    #[test]
    fn pwrite64_only_on_the_chunk_store() {
        use std::os::fd::AsRawFd;
        let store = crate::reader::FileChunkCache::new(1 << 20, None).unwrap();
        let other = tempfile::tempfile().unwrap();
        STORE_FD.store(store.fd(), Ordering::SeqCst);
        OTHER_FD.store(other.as_raw_fd(), Ordering::SeqCst);
        let needs = Needs {
            chunk_store_fd: Some(store.fd()),
            ..IMAGE
        };
        let (status, text) = under_filter(Seccomp::Trap, needs, || {
            let pwrite = |fd: &AtomicI32| {
                // SAFETY: pwrite64(2) of one static byte to a descriptor open in the child.
                unsafe { libc::pwrite64(fd.load(Ordering::SeqCst), c"x".as_ptr().cast(), 1, 0) }
            };
            if pwrite(&STORE_FD) != 1 {
                return 6;
            }
            // SAFETY: write(2) of a static string.
            unsafe { libc::write(libc::STDERR_FILENO, c"allowed\n".as_ptr().cast(), 8) };
            pwrite(&OTHER_FD);
            7
        });
        assert_eq!(
            status.code(),
            Some(TRAPPED_EXIT_STATUS),
            "{status}: {text:?}"
        );
        let want = format!("forbidden system call {}\n", libc::SYS_pwrite64);
        assert!(
            text.starts_with("allowed\n") && text.ends_with(&want),
            "{text:?}"
        );
    }

    #[test]
    fn kill_trap_and_log_act_on_a_forbidden_call() {
        let (status, _) = forbidden_call_under(Seccomp::Kill);
        assert_eq!(status.signal(), Some(libc::SIGSYS), "kill: {status}");

        let (status, text) = forbidden_call_under(Seccomp::Trap);
        assert_eq!(status.code(), Some(TRAPPED_EXIT_STATUS), "trap: {status}");
        let want = format!("forbidden system call {}\n", libc::SYS_chroot);
        assert!(text.ends_with(&want), "trap message: {text:?}");

        // Logged, then run: chroot fails on the missing directory and the child exits 0.
        let (status, _) = forbidden_call_under(Seccomp::Log);
        assert_eq!(status.code(), Some(0), "log: {status}");
    }

    #[test]
    fn every_mode_compiles_to_a_filter() {
        for passthrough in [false, true] {
            for syslog in [false, true] {
                let needs = Needs {
                    passthrough,
                    images: !passthrough,
                    api: syslog,
                    writable: passthrough && syslog,
                    syslog,
                    unlink_socket: syslog,
                    chunk_store_fd: (!passthrough).then_some(7),
                    measure_verity: !passthrough,
                    inflight: syslog,
                };
                let program = compile(SeccompAction::KillProcess, needs).unwrap();
                assert!(!program.is_empty());
            }
        }
    }
}
