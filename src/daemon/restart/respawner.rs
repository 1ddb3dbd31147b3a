//! The respawner: the supervisor of crash recovery. It starts each generation as a fresh exec
//! of this binary (so it may run threads of its own, and each generation builds its
//! namespaces from nothing), forwards SIGTERM and SIGINT to it, collects its notes, and when
//! it dies of anything but a clean exit starts the next one. A generation that dies before it
//! was ready is not replaced: that failure would only repeat.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use vhost::vhost_user::Listener;

use super::notes::{note_channel, Note, NoteReceiver};
use super::resume::{Resume, RESUME_ENV};
use crate::daemon::sandbox::stop_signals;
use crate::daemon::DaemonError;
use crate::format::Digest;

/// How often the notes are read while a generation runs.
const DRAIN_EVERY: Duration = Duration::from_millis(200);

/// The supervisor that keeps a serving process alive.
pub struct Respawner {
    listener: Listener,
    serves: Serves,
    /// The guest's INIT request, once a generation reported it.
    init: Option<Vec<u8>>,
    generation: u32,
}

/// What each generation serves.
enum Serves {
    /// The image with this manifest.
    Image(Digest),
    /// A mount table: each generation's control channel goes to the API here.
    Table(Sender<UnixStream>),
}

/// What watching one generation found.
struct Ended {
    status: ExitStatus,
    ready: bool,
    stopping: bool,
}

impl Respawner {
    /// Keeps `listener` for every generation, each serving the image whose manifest is
    /// `manifest`. The stop signals must be blocked in this thread.
    pub(crate) fn for_image(listener: Listener, manifest: Digest) -> Respawner {
        Respawner::new(listener, Serves::Image(manifest))
    }

    /// Keeps `listener` for every generation, each serving a mount table it gets from the
    /// API through its control channel, whose other end is sent to `api`.
    pub(crate) fn for_table(listener: Listener, api: Sender<UnixStream>) -> Respawner {
        Respawner::new(listener, Serves::Table(api))
    }

    fn new(listener: Listener, serves: Serves) -> Respawner {
        Respawner {
            listener,
            serves,
            init: None,
            generation: 0,
        }
    }

    /// Runs generation after generation until one exits cleanly, is stopped by SIGTERM or
    /// SIGINT, or fails before it was ready; returns how that one ended.
    pub fn wait(mut self) -> Result<ExitStatus, DaemonError> {
        loop {
            self.generation += 1;
            let started = Instant::now();
            let ended = self.run_generation()?;
            if ended.stopping || ended.status.success() {
                return Ok(ended.status);
            }
            if !ended.ready {
                log::error!(
                    "the serving process (generation {}) failed before it was ready ({}): \
                     not starting another",
                    self.generation,
                    describe(ended.status)
                );
                return Ok(ended.status);
            }
            log::warn!(
                "the serving process (generation {}) died after {:.1} s ({}): starting \
                 generation {}",
                self.generation,
                started.elapsed().as_secs_f64(),
                describe(ended.status),
                self.generation + 1
            );
        }
    }

    fn run_generation(&mut self) -> Result<Ended, DaemonError> {
        let (notes, theirs) = note_channel().map_err(|e| DaemonError::socket("note channel", e))?;
        let mut child = self.spawn(&theirs).map_err(DaemonError::Workers)?;
        drop(theirs);
        let mut ready = false;
        let mut stopping = false;
        let status = loop {
            match next_signal(DRAIN_EVERY).map_err(DaemonError::Workers)? {
                Some(sig) if sig != libc::SIGCHLD => {
                    stopping = true;
                    // SAFETY: a signal to our own child, which is not reaped yet (try_wait
                    // below reaps it), so its pid cannot have been reused.
                    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
                }
                _ => {}
            }
            self.take_notes(&notes, &mut ready);
            if let Some(status) = child.try_wait().map_err(DaemonError::Workers)? {
                break status;
            }
        };
        self.take_notes(&notes, &mut ready);
        Ok(Ended {
            status,
            ready,
            stopping,
        })
    }

    fn take_notes(&mut self, notes: &NoteReceiver, ready: &mut bool) {
        for note in notes.drain() {
            match note {
                Note::Ready => *ready = true,
                Note::Init(request) => self.init = Some(request),
            }
        }
    }

    /// Starts the next generation: this binary again, with the same arguments, inheriting
    /// the listener, `notes` and for a table its control channel, killed if this process
    /// dies.
    fn spawn(&self, notes: &OwnedFd) -> io::Result<Child> {
        let control = match &self.serves {
            Serves::Table(_) => Some(UnixStream::pair()?),
            Serves::Image(_) => None,
        };
        let resume = Resume {
            generation: self.generation,
            listener: self.listener.as_raw_fd(),
            notes: notes.as_raw_fd(),
            manifest: match &self.serves {
                Serves::Image(digest) => Some(digest.to_string()),
                Serves::Table(_) => None,
            },
            control: control.as_ref().map(|(_, theirs)| theirs.as_raw_fd()),
            init: self.init.as_deref().map(Resume::hex),
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "puzzlefs-virtiofsd".into());
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0(arg0)
            .args(args)
            .env(RESUME_ENV, resume.to_env());
        let inherit: Vec<RawFd> = [Some(resume.listener), Some(resume.notes), resume.control]
            .into_iter()
            .flatten()
            .collect();
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (fcntl, prctl, getppid) on integers it owns.
        unsafe {
            command.pre_exec(move || {
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // This process may have died before the line above: then no signal comes.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::other("the supervisor is gone"));
                }
                Ok(())
            })
        };
        let child = command.spawn()?;
        if let (Serves::Table(api), Some((ours, _))) = (&self.serves, control) {
            // The API outlives every generation; if it is gone, so is this process's purpose.
            let _ = api.send(ours);
        }
        log::info!(
            "serving process generation {} started (pid {})",
            self.generation,
            child.id()
        );
        Ok(child)
    }
}

/// Waits up to `timeout` for SIGTERM, SIGINT or SIGCHLD (blocked in this thread); `None` when
/// none came.
fn next_signal(timeout: Duration) -> io::Result<Option<i32>> {
    let set = stop_signals();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is an initialised signal set and `ts` a valid timespec, both read only;
    // no siginfo is asked for (null).
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if sig >= 0 {
        return Ok(Some(sig));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(e),
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}
