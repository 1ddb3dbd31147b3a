//! From a [`Config`] to a confined daemon ready to serve: open what is served (so a bad image
//! or directory fails before the socket exists), create the socket, enter the sandbox, load
//! the seccomp filter. A mount table driven through the API starts in `start_table`.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;

use vhost::vhost_user::Listener;

use super::config::{Config, ImageSource, Sandbox, SocketSpec, Source};
use super::inflight::Relay;
use super::passthrough::{check_shared_dir, import, new_passthrough, SharedDir};
use super::restart::{NoteSender, Respawner, Resume, RESUME_ENV};
use super::sandbox::{self, Isolated, Needs, Supervisor};
use super::serve::{check_socket, listen, serve_resumed, Resumed, ServeOptions};
use super::start_table::{self, ApiHost, Plane};
use super::DaemonError;
use crate::format::Digest;
use crate::fs::{FsConfig, ImageFs, PuzzleFs, ReadOnly};
use crate::mounts::MountTable;
use crate::oci::OciDir;
use crate::reader::{FileChunkCache, HeapChunkCache, Image, OpenOptions};

/// What [`start`] made of this process.
pub enum Started {
    /// The parent of a daemon sandboxed in new namespaces: call [`Supervising::wait`].
    Supervisor(Supervising),
    /// The daemon, confined: call [`Daemon::serve`].
    Daemon(Box<Daemon>),
}

/// Opens what `config` names, creates the socket and enters the sandbox.
///
/// Must run before the process starts any thread. The stop signals (SIGTERM, SIGINT) are
/// blocked from here until [`Daemon::serve`] begins, so install their handlers in between.
pub fn start(config: &Config) -> Result<Started, DaemonError> {
    if let Source::Table(table) = &config.source {
        return start_table::start(config, table);
    }
    let resume = Resume::from_env()?;
    let config = &match &resume {
        Some(resume) => resumed(config, resume)?,
        None => config.clone(),
    };
    if resume.is_none() {
        log_ignored(config);
    }
    if config.xattr && config.sandbox == Sandbox::Chroot {
        if let Source::SharedDir(_) = config.source {
            // fuse-backend-rs reads xattrs through /proc/self/fd/N paths; a chroot has none.
            return Err(DaemonError::Usage(
                "--xattr of a shared directory needs /proc: use --sandbox namespace or none".into(),
            ));
        }
    }
    let opened = match &config.source {
        Source::SharedDir(dir) => check_shared_dir(dir).map(|()| Opened::SharedDir(dir.clone())),
        Source::Image(source) => {
            let manifest = resume.as_ref().map(Resume::manifest).transpose()?;
            let image = open_image_at(source, manifest)?;
            Ok(Opened::Image(Box::new(image), open_file_cache(config)?))
        }
        Source::Table(_) => unreachable!("started above"),
    }?;
    let sandboxed = config.sandbox != Sandbox::None;
    let (opts, listener, socket_files) = vhost_user_socket(config)?;
    sandbox::block_stop_signals()?;
    if let (None, Opened::Image(image, _)) = (&resume, &opened) {
        if respawns(config) {
            let respawner = Respawner::for_image(listener, image.manifest_digest());
            return Ok(Started::Supervisor(Supervising {
                parent: Parent::Respawner(respawner),
                socket_files,
                api: None,
            }));
        }
    }
    let mut resume = match resume {
        Some(r) => Some(Resumed {
            generation: r.generation,
            init: r.init()?,
            notes: Arc::new(inherited_notes(r.notes)?),
            relay: None,
        }),
        None => None,
    };
    let jail = match sandbox::isolate(config.sandbox)? {
        Isolated::Supervisor(supervisor) => {
            return Ok(Started::Supervisor(Supervising {
                parent: Parent::Sandbox(supervisor),
                socket_files,
                api: None,
            }));
        }
        Isolated::Daemon(jail) => jail,
    };
    if let Some(resumed) = resume.as_mut() {
        // In the sandbox's own network namespace: nothing else can reach its address.
        let relay = Relay::new().map_err(|e| DaemonError::socket("inflight relay", e))?;
        resumed.relay = Some(relay);
    }

    let mut chunk_store_fd = None;
    let mut measure_verity = false;
    let fs = match opened {
        Opened::SharedDir(dir) => {
            // A chroot leaves no /proc: open /proc/self/fd before. The namespace sandbox
            // mounts its own /proc.
            let early = match config.sandbox {
                Sandbox::Chroot => Some(new_passthrough(&dir, Path::new("/"), config)?),
                Sandbox::None | Sandbox::Namespace => None,
            };
            let kept = if config.read_only {
                sandbox::Confined::ReadOnlyDir
            } else {
                sandbox::Confined::WritableDir
            };
            let root = jail.confine(&dir, kept)?;
            let fs = match early {
                Some(fs) => fs,
                None => new_passthrough(&dir, &root, config)?,
            };
            let how = if config.read_only {
                "read-only"
            } else {
                "read-write"
            };
            log::info!("serving {} {how}", dir.display());
            Served::SharedDir(import(fs, &dir, config.read_only)?)
        }
        Opened::Image(mut image, store) => {
            let root = jail.confine(image.oci().path(), sandbox::Confined::Image)?;
            image
                .relocate(&root)
                .map_err(|e| DaemonError::Image(e.to_string()))?;
            log::info!("serving image {} read-only", image.manifest_digest());
            measure_verity = matches!(&config.source, Source::Image(s) if s.fs_verity.is_some());
            let fs = PuzzleFs::new(Arc::new(*image), FsConfig::new(config.cache));
            let fs = ImageFs::new(Arc::new(fs), Arc::new(store));
            chunk_store_fd = Some(fs.store_fd());
            Served::Image(Box::new(ReadOnly::new(fs)))
        }
    };
    let socket_files = if sandboxed { Vec::new() } else { socket_files };
    let needs = Needs {
        passthrough: matches!(fs, Served::SharedDir(_)),
        writable: matches!(fs, Served::SharedDir(SharedDir::ReadWrite(_))),
        syslog: config.syslog,
        images: matches!(fs, Served::Image(_)),
        api: false,
        unlink_socket: !socket_files.is_empty(),
        chunk_store_fd,
        measure_verity,
        inflight: resume.is_some(),
    };
    sandbox::load_seccomp(config.seccomp, needs)?;
    Ok(Started::Daemon(Box::new(Daemon {
        fs,
        listener,
        opts,
        socket_files,
        plane: None,
        resume,
    })))
}

/// Whether this daemon runs behind a [`Respawner`]: an image or a mount table, in the
/// namespace sandbox (whose supervisor the VMM holds), with a front end that reconnects.
pub(super) fn respawns(config: &Config) -> bool {
    config.reconnect
        && config.sandbox == Sandbox::Namespace
        && matches!(config.source, Source::Image(_) | Source::Table(_))
}

/// `config` as a generation started by a [`Respawner`] serves it: on the inherited listener.
pub(super) fn resumed(config: &Config, resume: &Resume) -> Result<Config, DaemonError> {
    let fits = match config.source {
        Source::Image(_) => resume.manifest.is_some(),
        Source::Table(_) => resume.control.is_some(),
        Source::SharedDir(_) => false,
    };
    if !respawns(config) || !fits {
        return Err(DaemonError::Usage(format!(
            "{RESUME_ENV} is only for images or mount tables served with --sandbox namespace \
             --reconnect, from their respawner"
        )));
    }
    Ok(Config {
        socket: SocketSpec::Fd(resume.listener),
        ..config.clone()
    })
}

/// Takes over the note channel's end a generation inherited.
pub(super) fn inherited_notes(fd: RawFd) -> Result<NoteSender, DaemonError> {
    check_socket(fd).map_err(|e| DaemonError::socket(format!("{RESUME_ENV} notes {fd}"), e))?;
    // SAFETY: `fd` is an open socket (checked above) that the respawner left open for this
    // process alone; the NoteSender becomes its only owner and closes it once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| DaemonError::socket("notes", e.into()))?;
    Ok(NoteSender::new(fd))
}

/// How the device will be served (made before the seccomp filter: the default pool size
/// reads /proc/self/cgroup), its listening socket, and the socket file made for it, if any.
pub(super) fn vhost_user_socket(
    config: &Config,
) -> Result<(ServeOptions, Listener, Vec<PathBuf>), DaemonError> {
    let opts = ServeOptions {
        thread_pool_size: config.thread_pool_size,
        reconnect: config.reconnect,
        ..ServeOptions::default()
    };
    let listener = if config.sandbox != Sandbox::None {
        // Unlinking it at exit is the supervisor's job: the daemon cannot reach the path.
        listen_keeping_the_file(&config.socket)?
    } else {
        listen(&config.socket)?
    };
    let files = match &config.socket {
        SocketSpec::Path(p) => vec![p.clone()],
        SocketSpec::Fd(_) => Vec::new(),
    };
    Ok((opts, listener, files))
}

/// The chunk store images share, made before the sandbox (a `--cache-dir` is out of its
/// reach afterwards).
pub(super) fn open_file_cache(config: &Config) -> Result<FileChunkCache, DaemonError> {
    let bytes = config.chunk_store_bytes;
    match FileChunkCache::new(bytes, config.chunk_store_dir.as_deref()) {
        Err(e) if config.chunk_store_fallback => {
            log::info!("chunk store: {e}; keeping it in a memfd");
            FileChunkCache::new(bytes, None)
        }
        other => other,
    }
    .map_err(|e| DaemonError::Usage(format!("chunk store: {e}")))
}

/// Opens (and, with `--digest`, pins) the image to serve.
pub fn open_image(source: &ImageSource) -> Result<Image, DaemonError> {
    open_image_at(source, None)
}

/// [`open_image`]; with `manifest`, that manifest instead of the one the tag names now.
fn open_image_at(source: &ImageSource, manifest: Option<Digest>) -> Result<Image, DaemonError> {
    let image = |e: &dyn std::fmt::Display| DaemonError::Image(e.to_string());
    let oci = OciDir::open(&source.oci_dir).map_err(|e| image(&e))?;
    let desc = match manifest {
        Some(digest) => oci.manifest_by_digest(&digest),
        None => oci.resolve(&source.tag),
    }
    .map_err(|e| image(&e))?;
    let options = OpenOptions {
        pin: source.digest,
        fs_verity: source.fs_verity,
        // Verified chunks live in ImageFs's chunk store, outside the heap.
        cache: Some(Arc::new(HeapChunkCache::new(0))),
        lean: true,
        ..OpenOptions::default()
    };
    Image::open_descriptor(&oci, &desc, options).map_err(|e| image(&e))
}

enum Opened {
    SharedDir(PathBuf),
    Image(Box<Image>, FileChunkCache),
}

pub(super) enum Served {
    SharedDir(SharedDir),
    Image(Box<ReadOnly<ImageFs>>),
    Table(Arc<MountTable>),
}

/// The parent of a sandboxed daemon.
pub struct Supervising {
    pub(super) parent: Parent,
    pub(super) socket_files: Vec<PathBuf>,
    /// For a mount table: the API it serves for the daemon.
    pub(super) api: Option<ApiHost>,
}

/// Which kind of parent.
pub(super) enum Parent {
    /// Of one daemon in the namespace sandbox.
    Sandbox(Supervisor),
    /// Of generation after generation (crash recovery).
    Respawner(Respawner),
}

impl Supervising {
    /// Serves the API of a mount table, if the daemon has one, and waits for the daemon,
    /// forwarding SIGTERM and SIGINT to it; then removes the socket files and returns how
    /// the daemon ended.
    pub fn wait(self) -> Result<ExitStatus, DaemonError> {
        if let Some(api) = self.api {
            api.start()?;
        }
        let status = match self.parent {
            Parent::Sandbox(supervisor) => supervisor.wait()?,
            Parent::Respawner(respawner) => respawner.wait()?,
        };
        for path in &self.socket_files {
            let _ = std::fs::remove_file(path);
        }
        Ok(status)
    }
}

/// A confined daemon, ready to serve.
pub struct Daemon {
    pub(super) fs: Served,
    pub(super) listener: Listener,
    pub(super) opts: ServeOptions,
    pub(super) socket_files: Vec<PathBuf>,
    /// For a mount table: where its requests come from.
    pub(super) plane: Option<Plane>,
    /// In a generation a respawner started: what it carries on.
    pub(super) resume: Option<Resumed>,
}

impl Daemon {
    /// The socket files to remove if the process is stopped by a signal: none when the
    /// daemon is sandboxed (it cannot reach the paths; the supervisor removes them) or
    /// inherited its socket.
    pub fn socket_files(&self) -> &[PathBuf] {
        &self.socket_files
    }

    /// Unblocks the stop signals, then serves one front end until it disconnects, or one
    /// after another with `--reconnect` (see [`serve`]); `on_ready` runs when the daemon
    /// waits for the first connection.
    /// The socket files it created are removed when it ends.
    pub fn serve(self, on_ready: impl FnOnce()) -> Result<(), DaemonError> {
        sandbox::unblock_stop_signals()?;
        let Daemon {
            fs,
            listener,
            opts,
            socket_files,
            plane,
            resume,
        } = self;
        if let Some(plane) = plane {
            start_table::run_plane(plane)?;
        }
        let served = match fs {
            Served::SharedDir(SharedDir::ReadWrite(fs)) => {
                serve_resumed(*fs, listener, &opts, resume, on_ready)
            }
            Served::SharedDir(SharedDir::ReadOnly(fs)) => {
                serve_resumed(*fs, listener, &opts, resume, on_ready)
            }
            Served::Image(fs) => serve_resumed(*fs, listener, &opts, resume, on_ready),
            Served::Table(table) => serve_resumed(table, listener, &opts, resume, on_ready),
        };
        for path in &socket_files {
            let _ = std::fs::remove_file(path);
        }
        served
    }
}

/// Like [`listen`], but the socket file is not removed when the listener is dropped.
fn listen_keeping_the_file(spec: &SocketSpec) -> Result<Listener, DaemonError> {
    let SocketSpec::Path(path) = spec else {
        return listen(spec);
    };
    // A stale socket file from an earlier run would make bind fail.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DaemonError::socket(
                format!("cannot replace {}", path.display()),
                e,
            ))
        }
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| DaemonError::socket(format!("cannot listen on {}", path.display()), e))?;
    Ok(Listener::from(listener))
}

pub(super) fn log_ignored(config: &Config) {
    for opt in &config.ignored {
        log::info!("accepted for compatibility, no effect: {opt}");
    }
}
