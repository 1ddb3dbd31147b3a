//! Host mounts: serve a [`PuzzleFs`] through `/dev/fuse` (fuse-backend-rs's fusedev
//! transport), in the foreground or from a detached background process.

use std::ffi::OsString;
use std::io::{self, Read, Seek};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseChannel, FuseSession};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{CachePolicy, FsConfig, FsError, PuzzleFs, ReadOnly};
use crate::reader::Image;

/// File system name and subtype shown in `/proc/self/mountinfo` (`fuse.puzzlefs`).
const FSNAME: &str = "puzzlefs";
const FSTYPE: &str = "fuse.puzzlefs";

/// Kernel read-ahead for the mount, in KiB: the largest FUSE read (`max_pages` 256), so
/// sequential reads of big files take a quarter as many requests as with the default 128 KiB.
const READ_AHEAD_KB: u32 = 1024;

/// How long a background mount may take to appear before it is given up.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// Host mount settings.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Serve from this process until unmounted. Otherwise [`mount`] re-runs the current
    /// program with its own arguments plus `--foreground`, detached, and returns once the
    /// mount is live (so the program must accept that flag, as `puzzlefs mount` does).
    pub foreground: bool,
    /// Let users other than the one mounting access the mount.
    pub allow_other: bool,
}

/// Mounts `image` read-only at `mountpoint`. In the foreground this returns when the mount
/// goes away: unmounted by someone else, or on SIGINT, SIGTERM or SIGHUP, which unmount it.
pub fn mount(image: Arc<Image>, mountpoint: &Path, opts: &MountOptions) -> Result<(), FsError> {
    let target = mountpoint
        .canonicalize()
        .map_err(|e| bad_mountpoint(mountpoint, e.to_string()))?;
    if !target.is_dir() {
        return Err(bad_mountpoint(mountpoint, "not a directory".into()));
    }
    if opts.foreground {
        serve(image, &target, opts)
    } else {
        background(&target)
    }
}

fn bad_mountpoint(path: &Path, reason: String) -> FsError {
    FsError::BadMountpoint {
        path: path.to_path_buf(),
        reason,
    }
}

fn serve(image: Arc<Image>, target: &Path, opts: &MountOptions) -> Result<(), FsError> {
    let mount_err = |e: fuse_backend_rs::transport::Error| FsError::Mount {
        path: target.to_path_buf(),
        reason: e.to_string(),
    };
    let serve_err = |error: io::Error| FsError::Serve {
        path: target.to_path_buf(),
        error,
    };
    // Catch signals from before the mount exists; they are handled once every channel is up.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(serve_err)?;
    let mut session = FuseSession::new(target, FSNAME, FSNAME, true).map_err(mount_err)?;
    session.set_allow_other(opts.allow_other);
    session.mount().map_err(mount_err)?;
    let fuse = session
        .clone_fuse_file()
        .map_err(|e| serve_err(io::Error::other(e.to_string())))?;
    // The session mounts read-only, so the kernel refuses write opens itself.
    let fs = PuzzleFs::new(image, FsConfig::read_only_mount(CachePolicy::Always))
        .push_through(fuse)
        .map_err(serve_err)?;
    let server = Arc::new(Server::new(ReadOnly::new(fs)));
    let session = Arc::new(session);

    let mut workers = Vec::new();
    let mut started = Ok(());
    for i in 0..worker_count() {
        let spawned = session
            .new_channel()
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|channel| {
                let server = server.clone();
                thread::Builder::new()
                    .name(format!("fuse-{i}"))
                    .spawn(move || serve_channel(&server, channel))
            });
        match spawned {
            Ok(w) => workers.push(w),
            Err(e) => {
                started = Err(serve_err(e));
                let _ = session.wake();
                break;
            }
        }
    }

    if started.is_ok() {
        if let Err(e) = raise_read_ahead(target) {
            log::debug!("keeping the default read-ahead: {e}");
        }
    }

    let signal_handle = signals.handle();
    let waker = session.clone();
    let signal_thread = thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("signal {sig}: unmounting");
            if let Err(e) = waker.wake() {
                log::error!("stopping service threads: {e}");
            }
        }
    });
    for w in workers {
        let _ = w.join();
    }
    signal_handle.close();
    let _ = signal_thread.join();
    // Every other reference is gone with the threads; unmount (a no-op if already gone).
    if let Ok(mut session) = Arc::try_unwrap(session) {
        session.umount().map_err(mount_err)?;
    }
    started
}

fn worker_count() -> usize {
    let cpus = thread::available_parallelism().map_or(2, |n| n.get());
    // Requests are served from memory or the chunk cache, so one thread per core suffices;
    // more threads only add hand-offs (measured: a whole-tree tar read took 1.3 s with 2
    // threads, 1.5 s with 4, 1.9 s with 8 on 2 cores).
    cpus.clamp(2, 8)
}

/// Answers requests on one channel until the mount goes away or the session is woken.
fn serve_channel(server: &Server<ReadOnly<PuzzleFs>>, mut channel: FuseChannel) {
    loop {
        match channel.get_request() {
            Ok(Some((reader, writer))) => {
                if let Err(e) = server.handle_message(reader, writer.into(), None, None) {
                    match e {
                        fuse_backend_rs::Error::EncodeMessage(ref io)
                            if io.raw_os_error() == Some(libc::EBADF)
                                || io.raw_os_error() == Some(libc::ENODEV) =>
                        {
                            break
                        }
                        // ENOENT: the request was interrupted before the reply.
                        e => log::debug!("handling a FUSE request: {e}"),
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                // An unmount from outside surfaces here as an epoll or device error on every
                // service thread; the session is over either way.
                log::debug!("FUSE session ended: {e}");
                break;
            }
        }
    }
}

/// Re-runs this program with `--foreground`, detached, and waits for the mount to appear
/// or the process to die (then its last error line is the error).
fn background(target: &Path) -> Result<(), FsError> {
    let fail = |what: &str, e: io::Error| FsError::Background(format!("{what}: {e}"));
    let exe = std::env::current_exe().map_err(|e| fail("finding this program", e))?;
    let before = puzzlefs_mounts(target).map_err(|e| fail("reading mountinfo", e))?;
    let mut log = tempfile::tempfile().map_err(|e| fail("creating a log file", e))?;
    let stderr = log
        .try_clone()
        .map_err(|e| fail("creating a log file", e))?;
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .arg("--foreground")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: the closure runs in the forked child before exec and only makes the setsid
    // system call, which is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(&format!("starting {}", exe.display()), e))?;
    let deadline = Instant::now() + BACKGROUND_TIMEOUT;
    loop {
        let now = puzzlefs_mounts(target).map_err(|e| fail("reading mountinfo", e))?;
        if now.iter().any(|id| !before.contains(id)) {
            return Ok(());
        }
        if let Some(status) = child.try_wait().map_err(|e| fail("waiting", e))? {
            let mut text = String::new();
            let _ = log.rewind();
            let _ = log.read_to_string(&mut text);
            let line = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            let name = exe.file_name().map(|n| n.to_string_lossy().into_owned());
            let line = name
                .and_then(|n| line.strip_prefix(&format!("{n}: ")))
                .unwrap_or(line);
            return Err(FsError::Background(if line.is_empty() {
                format!("background mount process exited with {status}")
            } else {
                line.to_string()
            }));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(FsError::Background(format!(
                "{} did not appear within {}s",
                target.display(),
                BACKGROUND_TIMEOUT.as_secs()
            )));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sets the read-ahead of the live mount at `target` (needs root). The kernel lowers it to
/// what FUSE_INIT agreed, so this must come after INIT: the stat here waits for it.
fn raise_read_ahead(target: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(target)?.dev();
    std::fs::write(
        format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            rustix::fs::major(dev),
            rustix::fs::minor(dev)
        ),
        READ_AHEAD_KB.to_string(),
    )
}

/// Mount ids of PuzzleFS FUSE mounts at `target`, from `/proc/self/mountinfo`.
fn puzzlefs_mounts(target: &Path) -> io::Result<Vec<u64>> {
    Ok(mounts_at(target)?
        .into_iter()
        .filter(|m| m.fstype == FSTYPE)
        .map(|m| m.id)
        .collect())
}

/// A line of `/proc/self/mountinfo`.
struct MountLine {
    id: u64,
    fstype: String,
}

/// Everything mounted at `target`, oldest first.
fn mounts_at(target: &Path) -> io::Result<Vec<MountLine>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let fstype = right.split(' ').next()?;
            let point = unescape_mountinfo(fields.get(4)?);
            (point == target).then(|| {
                Some(MountLine {
                    id: fields[0].parse().ok()?,
                    fstype: fstype.to_string(),
                })
            })?
        })
        .collect())
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0')));
        match code.and_then(|c| u8::try_from(c).ok()) {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Unmounts the FUSE mount at `mountpoint` (through `fusermount3 -u` when not privileged).
pub fn unmount(mountpoint: &Path) -> Result<(), FsError> {
    // A mount whose server died cannot be resolved (ENOTCONN) but can still be unmounted.
    let target = mountpoint
        .canonicalize()
        .or_else(|_| std::path::absolute(mountpoint))
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let refused = |reason: String| FsError::Unmount {
        path: target.clone(),
        reason,
    };
    // Only ever unmount our own mounts (the topmost one at that place).
    match mounts_at(&target)
        .map_err(|e| refused(format!("reading mountinfo: {e}")))?
        .last()
    {
        None => return Err(FsError::NotMounted(target.clone())),
        Some(m) if m.fstype != FSTYPE => {
            return Err(refused(format!("not a PuzzleFS mount ({})", m.fstype)))
        }
        Some(_) => {}
    }
    match rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) => Err(FsError::NotMounted(target.clone())),
        Err(rustix::io::Errno::NOENT) => Err(refused("no such directory".into())),
        Err(rustix::io::Errno::PERM) => {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg("--")
                .arg(&target)
                .output()
                .map_err(|e| refused(format!("running fusermount3: {e}")))?;
            if out.status.success() {
                Ok(())
            } else {
                let msg = String::from_utf8_lossy(&out.stderr);
                Err(refused(
                    msg.lines().next().unwrap_or("fusermount3 failed").into(),
                ))
            }
        }
        Err(e) => Err(refused(io::Error::from(e).to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mountinfo(r"/tmp/a\040b\011c\134d\012"),
            PathBuf::from("/tmp/a b\tc\\d\n")
        );
        assert_eq!(unescape_mountinfo(r"/x\04"), PathBuf::from(r"/x\04"));
        assert_eq!(unescape_mountinfo(r"/x\999"), PathBuf::from(r"/x\999"));
        assert_eq!(unescape_mountinfo("/plain"), PathBuf::from("/plain"));
    }
}
