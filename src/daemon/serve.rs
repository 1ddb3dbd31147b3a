//! The daemon's life: bind (or inherit) the socket, accept one front end, serve it until it
//! disconnects, then stop the queue threads and drain the workers. With `reconnect`, accept
//! the next front end on the same socket and go on serving the same FUSE session.

use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::FileSystem;
use vhost::vhost_user::{Error as VuError, Listener};
use vhost_user_backend::{Error as DaemonErr, VhostUserBackend, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::backend::{poke_event, FsBackend, Geometry};
use super::config::{default_thread_pool_size, SocketSpec};
use super::inflight::{InflightSlot, Relay};
use super::prime::Poker;
use super::request::FuseServer;
use super::restart::{Note, NoteSender};
use super::triage::Triage;
use super::DaemonError;

/// How the device is set up.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Request worker threads; 0 serves requests on the queue threads.
    pub thread_pool_size: usize,
    /// Request queues offered to the VMM (it may enable fewer). At most 63.
    pub request_queues: usize,
    /// Largest virtqueue size accepted (a power of two, at most 32768).
    pub queue_size: u16,
    /// Serve the next front end after a disconnect instead of returning.
    pub reconnect: bool,
}

/// What a generation started by a respawner carries on.
#[derive(Debug)]
pub(crate) struct Resumed {
    /// 1 for the first.
    pub generation: u32,
    /// The guest's INIT request an earlier generation answered, to replay.
    pub init: Option<Vec<u8>>,
    /// Where readiness and INIT requests are reported.
    pub notes: Arc<NoteSender>,
    /// Relays each front end's control socket, to answer INFLIGHT_SHMFD's messages (the
    /// region the VMM keeps is how a later generation answers what this one took).
    pub relay: Option<Relay>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            thread_pool_size: default_thread_pool_size(),
            request_queues: 16,
            queue_size: 1024,
            reconnect: false,
        }
    }
}

/// Creates the listening socket: binds `Path` (replacing a stale socket file), or takes over
/// the inherited listening socket `Fd` after checking that it is one.
pub fn listen(spec: &SocketSpec) -> Result<Listener, DaemonError> {
    match spec {
        SocketSpec::Path(path) => Listener::new(path, true).map_err(|e| {
            DaemonError::socket(format!("cannot listen on {}", path.display()), vu_io(e))
        }),
        SocketSpec::Fd(fd) => {
            check_listening_socket(*fd)
                .map_err(|e| DaemonError::socket(format!("--fd {fd}"), e))?;
            // SAFETY: `fd` is an open listening socket (checked above) that this process
            // inherited for the daemon; nothing else in the process uses it, so the Listener
            // becomes its only owner and closes it once.
            let listener = unsafe { Listener::from_raw_fd(*fd) };
            set_cloexec(listener.as_raw_fd())
                .map_err(|e| DaemonError::socket(format!("--fd {fd}"), e))?;
            Ok(listener)
        }
    }
}

fn check_listening_socket(fd: RawFd) -> io::Result<()> {
    check_socket(fd)?;
    if sockopt(fd, libc::SO_ACCEPTCONN)? == 0 {
        return Err(io::Error::other("not a listening socket"));
    }
    Ok(())
}

/// Checks that `fd` is a unix domain socket.
pub(crate) fn check_socket(fd: RawFd) -> io::Result<()> {
    if sockopt(fd, libc::SO_DOMAIN)? != libc::AF_UNIX {
        return Err(io::Error::other("not a unix domain socket"));
    }
    Ok(())
}

/// An integer SOL_SOCKET option of `fd`.
fn sockopt(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes passed, and every option
    // asked for here is an int; the kernel checks `fd` itself (EBADF / ENOTSOCK).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a file descriptor we own, with integer arguments only.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The next front end's connection on `listener`.
fn accept(listener: &mut Listener) -> io::Result<std::os::unix::net::UnixStream> {
    loop {
        if let Some(stream) = listener.accept().map_err(vu_io)? {
            return Ok(stream);
        }
    }
}

fn vu_io(e: VuError) -> io::Error {
    match e {
        VuError::SocketError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Serves `fs` to one vhost-user front end accepted on `listener`, until it disconnects; with
/// `opts.reconnect`, then to the next one, and so on.
///
/// `on_ready` runs once the socket listens and the device is set up, right before waiting
/// for the first front end (the binary prints `Waiting for vhost-user socket connection`
/// there). Returns `Ok(())` when the front end hangs up (without `reconnect`): that is how a
/// VM's life ends.
///
/// Across reconnects the FUSE session survives: the file system (its node ids and handles)
/// and the INIT state, both held by one [`FuseServer`], since a reconnecting VMM's guest does
/// not send INIT again. Each connection gets a fresh vhost-user daemon, back end and worker
/// pool; the previous connection's workers finish their requests before the next accept.
pub fn serve<F>(
    fs: F,
    listener: Listener,
    opts: &ServeOptions,
    on_ready: impl FnOnce(),
) -> Result<(), DaemonError>
where
    F: FileSystem + Triage + Send + Sync + 'static,
{
    serve_resumed(fs, listener, opts, None, on_ready)
}

/// [`serve`] in a generation a respawner started (`resume`): the guest's INIT is replayed
/// first, readiness and INIT requests are reported, and only generation 1 runs `on_ready`.
pub(crate) fn serve_resumed<F>(
    fs: F,
    mut listener: Listener,
    opts: &ServeOptions,
    mut resume: Option<Resumed>,
    on_ready: impl FnOnce(),
) -> Result<(), DaemonError>
where
    F: FileSystem + Triage + Send + Sync + 'static,
{
    if opts.request_queues == 0 || opts.request_queues > 63 {
        return Err(DaemonError::Usage(format!(
            "{} request queues: between 1 and 63 are supported",
            opts.request_queues
        )));
    }
    if !opts.queue_size.is_power_of_two() {
        return Err(DaemonError::Usage(format!(
            "queue size {} is not a power of two",
            opts.queue_size
        )));
    }
    let geometry = Geometry {
        request_queues: opts.request_queues,
        queue_size: opts.queue_size,
    };
    let mut server = FuseServer::new(fs);
    if let Some(resume) = &resume {
        server = server.with_notes(resume.notes.clone());
        if let Some(init) = &resume.init {
            server.replay_init(init)?;
        }
        log::info!(
            "serving process generation {}{}",
            resume.generation,
            if resume.init.is_some() {
                ", resuming the guest's FUSE session"
            } else {
                ""
            }
        );
    }
    let server = Arc::new(server);
    // A later generation resumes quietly: the line was printed for the first.
    let announce = resume.as_ref().is_none_or(|r| r.generation == 1);
    let mut relay = resume.as_mut().and_then(|r| r.relay.take());
    let mut on_ready = Some(on_ready);
    let mut connection = 0u64;
    loop {
        connection += 1;
        let slot = relay.as_ref().map(|_| Arc::new(InflightSlot::default()));
        let backend = Arc::new(
            FsBackend::with_server(
                server.clone(),
                geometry,
                opts.thread_pool_size,
                slot.clone(),
            )
            .map_err(DaemonError::Workers)?,
        );
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let daemon = VhostUserDaemon::new("vhost-user-fs".into(), backend.clone(), mem)
            .map_err(|e| DaemonError::VhostUser(e.to_string()))?;
        if let Some(ready) = on_ready.take() {
            // The supervisor hears first: whoever saw the line may kill a ready process.
            if let Some(resume) = &resume {
                resume.notes.send(&Note::Ready);
            }
            if announce {
                ready();
            }
        }
        let front_end = FrontEnd {
            listener: &mut listener,
            relay: relay.as_mut().zip(slot),
        };
        match serve_connection(daemon, &backend, front_end, connection) {
            Ok(()) if !opts.reconnect => return Ok(()),
            Ok(()) => log::info!("waiting for the front end to reconnect"),
            Err(Failure::Accept(e)) => return Err(e),
            Err(Failure::Session(e)) if !opts.reconnect => return Err(e),
            Err(Failure::Session(e)) => {
                log::warn!("{e}; waiting for the front end to reconnect")
            }
        }
    }
}

/// How serving one connection failed.
enum Failure {
    /// No front end could be accepted: the listener is broken.
    Accept(DaemonError),
    /// The connection ended on a protocol error.
    Session(DaemonError),
}

/// Where the next front end comes from.
struct FrontEnd<'a> {
    listener: &'a mut Listener,
    /// With a relay: the VMM's connection is accepted here and relayed to vhost-user-backend,
    /// and the inflight region it sets lands in the slot.
    relay: Option<(&'a mut Relay, Arc<InflightSlot>)>,
}

/// Accepts one front end and serves it until it disconnects; then stops the queue threads
/// (dropping the daemon joins them) and drains this connection's workers.
fn serve_connection<F>(
    mut daemon: VhostUserDaemon<Arc<FsBackend<F>>>,
    backend: &FsBackend<F>,
    front_end: FrontEnd<'_>,
    connection: u64,
) -> Result<(), Failure>
where
    F: FileSystem + Triage + Send + Sync + 'static,
{
    let accept_failed = |e: String| Failure::Accept(DaemonError::VhostUser(e));
    let relayed = match front_end.relay {
        Some((relay, slot)) => {
            let vmm = accept(front_end.listener).map_err(|e| accept_failed(e.to_string()))?;
            let relayed = relay
                .attach(vmm, slot)
                .map_err(|e| accept_failed(format!("cannot relay the front end: {e}")))?;
            daemon
                .start(relay.listener())
                .map_err(|e| accept_failed(e.to_string()))?;
            Some(relayed)
        }
        None => {
            daemon
                .start(front_end.listener)
                .map_err(|e| accept_failed(e.to_string()))?;
            None
        }
    };
    log::info!("front end connected (connection {connection})");
    let poker = if backend.resumes() {
        let handlers = daemon.get_epoll_handlers();
        let started = Poker::start(
            handlers.len(),
            poke_event(backend.num_queues()),
            backend.primed(),
            |thread, fd, events, data| {
                handlers[thread]
                    .register_listener(fd.as_raw_fd(), events, data)
                    .map_err(io::Error::other)
            },
        );
        match started {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("cannot prime the rings of the resumed session: {e}");
                None
            }
        }
    } else {
        None
    };
    let result = daemon.wait();
    drop(poker);
    if let Some(relayed) = relayed {
        relayed.finish();
    }

    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    drop(daemon);
    backend.shutdown();
    match result {
        Ok(()) => Ok(()),
        Err(DaemonErr::HandleRequest(
            VuError::Disconnected | VuError::PartialMessage | VuError::SocketBroken(_),
        )) => {
            log::info!("front end disconnected");
            Ok(())
        }
        Err(e) => Err(Failure::Session(DaemonError::VhostUser(e.to_string()))),
    }
}
