//! The unix socket: [`bind`] it (before any runtime exists), then [`serve`] HTTP/1.1 on it,
//! one task per connection, until told to stop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::routes::{self, Ctx, Limits};
use super::Control;

/// hyper refuses a smaller read buffer.
const MIN_HEADER_BYTES: usize = 8192;

/// Limits and timeouts of the server. The defaults suit Kata (one small request per
/// connection, bodies of a few hundred bytes).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body taken (413 past it). Default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest request line plus headers (hyper answers 431 past it; at least 8 KiB).
    /// Default 16 KiB.
    pub max_header_bytes: usize,
    /// How long a connection may take to send a request's headers, and how long it may sit
    /// idle between requests, before it is closed. Default 30 s (Kata's Go client drops
    /// idle connections after 10 s, so it closes first).
    pub header_read_timeout: Duration,
    /// How long a request's body may take (408 past it). Default 30 s.
    pub body_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog. Default 64.
    pub max_connections: usize,
    /// After shutdown is asked for, how long requests in progress get to finish before
    /// their connections are dropped. Default 2 s (Kata sends SIGKILL 5 s after SIGTERM).
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 64,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Creates the API socket at `path`, mode 0600, listening and non-blocking (ready for
/// `tokio::net::UnixListener::from_std`). Needs no runtime, so the daemon can bind before
/// it confines itself. A socket file left by a dead daemon is replaced; a live daemon's
/// socket (one that accepts connections) is not (`AddrInUse`), nor is a file that is not a
/// socket (`AlreadyExists`).
pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let addr = SockAddr::unix(path)?;
    remove_stale(path, &addr)?;
    // socket2 sets close-on-exec.
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    // Linux creates the socket file with the socket inode's mode less the umask: 0600 set
    // before bind leaves no moment where others could connect. The chmod after bind makes
    // sure of the mode wherever that does not hold.
    rustix::fs::fchmod(&socket, rustix::fs::Mode::from_raw_mode(0o600))?;
    socket.bind(&addr)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Removes `path` if it is a socket nobody listens on.
fn remove_stale(path: &Path, addr: &SockAddr) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    // A non-blocking connect: a live daemon with a full backlog must not hang us.
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(addr) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{}: another daemon is listening there", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{}: another daemon is listening there (busy)",
                path.display()
            ),
        )),
        Err(e) => Err(e),
    }
}

/// Serves the API on `listener` with the default [`ServerConfig`] until `shutdown`
/// completes. See [`serve_with`].
pub async fn serve(
    listener: UnixListener,
    control: Arc<dyn Control>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, control, ServerConfig::default(), shutdown).await
}

/// Serves the API on `listener` until `shutdown` completes: then it stops accepting, lets
/// requests in progress finish for up to `config.shutdown_grace`, drops the connections
/// left and returns `Ok`. Connection errors (garbage, hang-ups, timeouts) end only their
/// connection; transient accept failures (out of descriptors...) are retried after a
/// pause; any other accept failure ends the server with that error. A [`Control`] call
/// still running on the blocking pool when this returns is not interrupted.
pub async fn serve_with(
    listener: UnixListener,
    control: Arc<dyn Control>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let ctx = Arc::new(Ctx {
        control,
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            body_read_timeout: config.body_read_timeout,
        },
    });
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    let result = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(done) = connections.join_next() => {
                if let Err(e) = done {
                    log::warn!("api: a connection task failed: {e}");
                }
            }
            accepted = accept(&listener, &permits) => match accepted {
                Ok((stream, permit)) => {
                    let conn = connection(stream, ctx.clone(), config.clone(), stopped.clone(), permit);
                    connections.spawn(conn);
                }
                Err(e) if is_transient(&e) => {
                    log::warn!("api: accept failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => break Err(e),
            },
        }
    };

    let _ = stop.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        log::warn!(
            "api: dropping {} connections at shutdown",
            connections.len()
        );
    }
    connections.shutdown().await;
    result
}

/// The next connection, once there is room for it.
async fn accept(
    listener: &UnixListener,
    permits: &Arc<Semaphore>,
) -> io::Result<(UnixStream, OwnedSemaphorePermit)> {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("connection limiter closed"))?;
    let (stream, _) = listener.accept().await?;
    Ok((stream, permit))
}

/// Accept failures that say nothing about the listener itself.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
        )
    ) || matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    )
}

/// Serves one connection until the client leaves, a timeout or protocol error ends it, or
/// shutdown is asked for (then it finishes the request in progress).
async fn connection(
    stream: UnixStream,
    ctx: Arc<Ctx>,
    config: Arc<ServerConfig>,
    mut stopped: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(routes::handle(req, &ctx).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BYTES))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { stopped.wait_for(|s| *s).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        log::debug!("api: connection ended: {e}");
    }
}
