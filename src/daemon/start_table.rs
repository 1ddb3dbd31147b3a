//! Starting a mount table driven through the API, as Kata's nydus mode runs nydusd: the API
//! socket and the chunk store the images share are made first; then, in the namespace
//! sandbox, the process forks: the supervisor serves the API on the host side (it opens each
//! mount's source there) and the confined child serves the table to the VMM, carrying out
//! the requests it is sent. Without a sandbox one process does both. With `--reconnect` the
//! supervisor is a [`Respawner`]: each serving process is a fresh generation that gets the
//! whole table back from the API (journal and sources) before it serves the VMM.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use super::config::{Config, Sandbox, TableSource};
use super::control::SourcePolicy;
use super::control::{answer_requests, await_restore, ApiControl, Executor, Serving};
use super::inflight::Relay;
use super::restart::{Respawner, Resume, RESUME_ENV};
use super::sandbox::{self, Isolated, Needs};
use super::serve::{check_socket, Resumed};
use super::start::{inherited_notes, log_ignored, open_file_cache, respawns, resumed};
use super::start::{vhost_user_socket, Parent, Served};
use super::{Daemon, DaemonError, Started, Supervising};
use crate::api::Control;
use crate::mounts::{MountDefaults, MountTable, Mounter};

/// The control plane a confined table daemon runs beside the table.
pub(crate) enum Plane {
    /// Requests come from the supervisor over this socket.
    Child(UnixStream, Arc<Executor>),
    /// The API is served here.
    InProcess(UnixListener, Arc<ApiControl>),
}

/// The API a supervisor serves for its serving processes.
pub(crate) struct ApiHost {
    listener: UnixListener,
    /// The control channel of each serving process, as it starts.
    generations: Receiver<UnixStream>,
    policy: SourcePolicy,
    id: Option<String>,
}

impl ApiHost {
    /// Starts serving the API; requests are carried out once a serving process is attached.
    pub(crate) fn start(self) -> Result<(), DaemonError> {
        let control = Arc::new(ApiControl::new(Serving::child(), self.policy, self.id));
        let attaching = control.clone();
        let generations = self.generations;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for channel in generations {
                    if let Err(e) = attaching.attach(channel) {
                        log::error!("control channel to the serving process: {e}");
                    }
                }
            })
            .map_err(DaemonError::Workers)?;
        spawn_api(self.listener, control)
    }
}

/// Serves the API on `listener` on a thread of its own (a single-threaded tokio runtime;
/// the [`Control`] calls run on its blocking pool).
pub(crate) fn spawn_api(
    listener: UnixListener,
    control: Arc<dyn Control>,
) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    log::error!("API: cannot start its runtime: {e}");
                    return;
                }
            };
            let served = runtime.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener)?;
                crate::api::serve(listener, control, std::future::pending()).await
            });
            if let Err(e) = served {
                log::error!("API: {e}");
            }
        })
        .map(|_| ())
        .map_err(DaemonError::Workers)
}

/// [`super::start`] for a table: see the module doc.
pub(crate) fn start(config: &Config, table: &TableSource) -> Result<Started, DaemonError> {
    if let Some(resume) = Resume::from_env()? {
        return start_generation(&resumed(config, &resume)?, &resume);
    }
    log_ignored(config);
    if config.sandbox == Sandbox::Chroot {
        return Err(DaemonError::Usage(
            "--apisock needs --sandbox namespace or none: a chroot cannot reach what is \
             mounted later"
                .into(),
        ));
    }
    let api = crate::api::bind(&table.apisock).map_err(|e| {
        DaemonError::socket(format!("cannot listen on {}", table.apisock.display()), e)
    })?;
    let sandboxed = config.sandbox != Sandbox::None;
    let policy = SourcePolicy::resolved(&table.allow_mount_from, sandboxed)
        .map_err(|e| DaemonError::Usage(format!("--allow-mount-from {e}")))?;
    if respawns(config) {
        let (_, listener, mut socket_files) = vhost_user_socket(config)?;
        socket_files.push(table.apisock.clone());
        sandbox::block_stop_signals()?;
        let (to_api, generations) = mpsc::channel();
        return Ok(Started::Supervisor(Supervising {
            parent: Parent::Respawner(Respawner::for_table(listener, to_api)),
            socket_files,
            api: Some(ApiHost {
                listener: api,
                generations,
                policy,
                id: table.id.clone(),
            }),
        }));
    }
    let store = open_file_cache(config)?;
    let (opts, listener, mut socket_files) = vhost_user_socket(config)?;
    socket_files.push(table.apisock.clone());
    let (supervisor_end, child_end) =
        UnixStream::pair().map_err(|e| DaemonError::socket("control socket pair", e))?;

    sandbox::block_stop_signals()?;
    let jail = match sandbox::isolate_keeping_threads(config.sandbox)? {
        Isolated::Supervisor(supervisor) => {
            let (to_api, generations) = mpsc::channel();
            let _ = to_api.send(supervisor_end);
            return Ok(Started::Supervisor(Supervising {
                parent: Parent::Sandbox(supervisor),
                socket_files,
                api: Some(ApiHost {
                    listener: api,
                    generations,
                    policy,
                    id: table.id.clone(),
                }),
            }));
        }
        Isolated::Daemon(jail) => jail,
    };
    drop(supervisor_end);
    jail.confine_table()?;
    let (executor, chunk_store_fd) = executor(config, store);
    let table_served = executor.table().clone();
    let plane = if sandboxed {
        drop(api);
        Plane::Child(child_end, executor)
    } else {
        let control = ApiControl::new(Serving::Here(executor), policy, table.id.clone());
        Plane::InProcess(api, Arc::new(control))
    };
    let needs = Needs {
        api: !sandboxed,
        unlink_socket: !sandboxed,
        ..table_needs(config, chunk_store_fd)
    };
    sandbox::load_seccomp(config.seccomp, needs)?;
    Ok(Started::Daemon(Box::new(Daemon {
        fs: Served::Table(table_served),
        listener,
        opts,
        socket_files: if sandboxed { Vec::new() } else { socket_files },
        plane: Some(plane),
        resume: None,
    })))
}

/// A generation a [`Respawner`] started: it serves on the listener it inherited and gets its
/// table through the control channel it inherited, before it serves the VMM.
fn start_generation(config: &Config, resume: &Resume) -> Result<Started, DaemonError> {
    let store = open_file_cache(config)?;
    let (opts, listener, _) = vhost_user_socket(config)?;
    let channel = inherited_control(resume.control)?;
    let notes = Arc::new(inherited_notes(resume.notes)?);
    sandbox::block_stop_signals()?;
    let jail = match sandbox::isolate(config.sandbox)? {
        Isolated::Supervisor(supervisor) => {
            return Ok(Started::Supervisor(Supervising {
                parent: Parent::Sandbox(supervisor),
                socket_files: Vec::new(),
                api: None,
            }));
        }
        Isolated::Daemon(jail) => jail,
    };
    // In the sandbox's own network namespace: nothing else can reach its address.
    let relay = Relay::new().map_err(|e| DaemonError::socket("inflight relay", e))?;
    jail.confine_table()?;
    let (executor, chunk_store_fd) = executor(config, store);
    let table = executor.table().clone();
    let needs = Needs {
        inflight: true,
        ..table_needs(config, chunk_store_fd)
    };
    sandbox::load_seccomp(config.seccomp, needs)?;
    Ok(Started::Daemon(Box::new(Daemon {
        fs: Served::Table(table),
        listener,
        opts,
        socket_files: Vec::new(),
        plane: Some(Plane::Child(channel, executor)),
        resume: Some(Resumed {
            generation: resume.generation,
            init: resume.init()?,
            notes,
            relay: Some(relay),
        }),
    })))
}

/// What serving a table needs of the seccomp filter: everything a pass-through or an image
/// may, for whatever is mounted later (nor the API, nor socket unlinking, nor the relay).
fn table_needs(config: &Config, chunk_store_fd: RawFd) -> Needs {
    Needs {
        passthrough: true,
        images: true,
        api: false,
        writable: true,
        syslog: config.syslog,
        unlink_socket: false,
        chunk_store_fd: Some(chunk_store_fd),
        measure_verity: true,
        inflight: false,
    }
}

/// The table's executor over the shared chunk store, and the store's descriptor.
fn executor(config: &Config, store: crate::reader::FileChunkCache) -> (Arc<Executor>, RawFd) {
    let store = Arc::new(store);
    let chunk_store_fd = store.fd();
    let defaults = MountDefaults {
        cache: config.cache,
        // Kata's agent builds each container's root as an overlay whose upper directory is
        // in the pass-through mount: overlayfs needs its extended attributes.
        xattr: true,
        allow_direct_io: config.allow_direct_io,
    };
    let mounts = Arc::new(MountTable::new());
    let executor = Arc::new(Executor::new(mounts, Mounter::new(store, defaults)));
    (executor, chunk_store_fd)
}

/// Takes over the control channel's end a generation inherited.
fn inherited_control(fd: Option<RawFd>) -> Result<UnixStream, DaemonError> {
    let fd = fd.ok_or_else(|| DaemonError::Usage(format!("{RESUME_ENV}: no control channel")))?;
    check_socket(fd).map_err(|e| DaemonError::socket(format!("{RESUME_ENV} control {fd}"), e))?;
    // SAFETY: `fd` is an open socket (checked above) that the respawner left open for this
    // process alone; the stream becomes its only owner and closes it once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| DaemonError::socket("control channel", e.into()))?;
    Ok(UnixStream::from(fd))
}

/// Starts the control plane's threads of a confined table daemon.
pub(crate) fn run_plane(plane: Plane) -> Result<(), DaemonError> {
    match plane {
        Plane::Child(channel, executor) => {
            // The table must be back before the VMM's first request.
            await_restore(&channel, &executor).map_err(|e| {
                DaemonError::socket("getting the mount table from the supervisor", e)
            })?;
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || {
                    if let Err(e) = answer_requests(&channel, &executor) {
                        log::error!("control channel: {e}");
                    }
                })
                .map(|_| ())
                .map_err(DaemonError::Workers)
        }
        Plane::InProcess(listener, control) => spawn_api(listener, control),
    }
}
