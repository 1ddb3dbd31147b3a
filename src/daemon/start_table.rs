//! Starting a mount table driven through the API, as Kata's nydus mode runs nydusd: the API
//! socket and the chunk store the images share are made first; then, in the namespace
//! sandbox, the process forks: the supervisor serves the API on the host side (it opens each
//! mount's source there) and the confined child serves the table to the VMM, carrying out
//! the requests it is sent. Without a sandbox one process does both.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, OnceLock};

use super::config::{Config, Sandbox, TableSource};
use super::control::{answer_requests, ApiControl, Client, Executor, Serving, SourcePolicy};
use super::sandbox::{self, Isolated, Needs};
use super::start::{log_ignored, open_file_cache, vhost_user_socket};
use super::start::{Parent, Served};
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

/// The API a supervisor serves for its child.
pub(crate) struct ApiHost {
    listener: UnixListener,
    channel: UnixStream,
    policy: SourcePolicy,
    id: Option<String>,
}

impl ApiHost {
    /// Starts serving the API; requests are carried out once the child says it is ready.
    pub(crate) fn start(self) -> Result<(), DaemonError> {
        let client = Arc::new(OnceLock::new());
        let control = Arc::new(ApiControl::new(
            Serving::Child(client.clone()),
            self.policy,
            self.id,
        ));
        let channel = self.channel;
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || match Client::connect(channel) {
                Ok(c) => {
                    let _ = client.set(c);
                }
                Err(e) => log::error!("control channel: {e}"),
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
    log_ignored(config);
    if config.sandbox == Sandbox::Chroot {
        return Err(DaemonError::Usage(
            "--apisock needs --sandbox namespace or none: a chroot cannot reach what is \
             mounted later"
                .into(),
        ));
    }
    let store = open_file_cache(config)?;
    let api = crate::api::bind(&table.apisock).map_err(|e| {
        DaemonError::socket(format!("cannot listen on {}", table.apisock.display()), e)
    })?;
    let sandboxed = config.sandbox != Sandbox::None;
    let (opts, listener, mut socket_files) = vhost_user_socket(config)?;
    socket_files.push(table.apisock.clone());
    let policy = SourcePolicy::resolved(&table.allow_mount_from, sandboxed)
        .map_err(|e| DaemonError::Usage(format!("--allow-mount-from {e}")))?;
    let (supervisor_end, child_end) =
        UnixStream::pair().map_err(|e| DaemonError::socket("control socket pair", e))?;

    sandbox::block_stop_signals()?;
    let jail = match sandbox::isolate_keeping_threads(config.sandbox)? {
        Isolated::Supervisor(supervisor) => {
            return Ok(Started::Supervisor(Supervising {
                parent: Parent::Sandbox(supervisor),
                socket_files,
                api: Some(ApiHost {
                    listener: api,
                    channel: supervisor_end,
                    policy,
                    id: table.id.clone(),
                }),
            }));
        }
        Isolated::Daemon(jail) => jail,
    };
    drop(supervisor_end);
    jail.confine_table()?;

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
    let executor = Arc::new(Executor::new(mounts.clone(), Mounter::new(store, defaults)));
    let plane = if sandboxed {
        drop(api);
        Plane::Child(child_end, executor)
    } else {
        let control = ApiControl::new(Serving::Here(executor), policy, table.id.clone());
        Plane::InProcess(api, Arc::new(control))
    };
    let needs = Needs {
        passthrough: true,
        images: true,
        api: !sandboxed,
        writable: true,
        syslog: config.syslog,
        unlink_socket: !sandboxed,
        chunk_store_fd: Some(chunk_store_fd),
        measure_verity: true,
        inflight: false,
    };
    sandbox::load_seccomp(config.seccomp, needs)?;
    Ok(Started::Daemon(Box::new(Daemon {
        fs: Served::Table(mounts),
        listener,
        opts,
        socket_files: if sandboxed { Vec::new() } else { socket_files },
        plane: Some(plane),
        resume: None,
    })))
}

/// Starts the control plane's threads of a confined table daemon.
pub(crate) fn run_plane(plane: Plane) -> Result<(), DaemonError> {
    match plane {
        Plane::Child(channel, executor) => std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                if let Err(e) = answer_requests(&channel, &executor) {
                    log::error!("control channel: {e}");
                }
            })
            .map(|_| ())
            .map_err(DaemonError::Workers),
        Plane::InProcess(listener, control) => spawn_api(listener, control),
    }
}
