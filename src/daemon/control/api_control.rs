//! [`ApiControl`]: the API's [`Control`] as the daemon provides it. Each mount request's
//! source is opened here, on the host side ([`open_source`]), then the request goes to the
//! serving process: over the control channel to a sandboxed one ([`Client`]), or straight to
//! the [`Executor`] of this process. The mounts that succeeded are kept here too, with the
//! journal of every change and a descriptor of each live mount's source, so that the daemon's
//! info never waits for a mount in progress and a serving process started after one died
//! gets the whole table back ([`ApiControl::attach`]).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{open_source, Client, Executor, Fault, Reply, Request, SourcePolicy};
use crate::api::{
    ApiError, BackendInfo, BuildInfo, Control, DaemonInfo, DaemonState, MountRequest,
};
use crate::format::Digest;
use crate::mounts::{Journal, MetricsSnapshot, MountError, MountSpec};

/// How long a request waits for a serving process to be attached (a new one after a crash
/// is back within milliseconds) before it gets 503.
const ATTACH_WAIT: Duration = Duration::from_secs(5);

/// Where requests are carried out.
pub enum Serving {
    /// In this process.
    Here(Arc<Executor>),
    /// In a sandboxed serving process, while one is attached (one after another under a
    /// respawner).
    Child(Link),
}

/// The serving process attached, if one is.
pub struct Link {
    client: Mutex<Option<Arc<Client>>>,
    attached: Condvar,
    /// How long a request waits for one.
    wait: Duration,
}

impl Link {
    /// The client, waiting up to `wait` for one to be attached.
    fn get(&self, wait: Duration) -> Option<Arc<Client>> {
        let guard = lock(&self.client);
        let (guard, _) = self
            .attached
            .wait_timeout_while(guard, wait, |c| c.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.clone()
    }

    fn set(&self, client: Client) {
        *lock(&self.client) = Some(Arc::new(client));
        self.attached.notify_all();
    }

    /// Forgets `client` (its process is gone), unless another was attached since.
    fn drop_if(&self, client: &Arc<Client>) {
        let mut attached = lock(&self.client);
        if attached.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
            *attached = None;
        }
    }
}

impl Serving {
    /// Requests for sandboxed serving processes, none attached yet.
    pub fn child() -> Serving {
        Serving::child_waiting(ATTACH_WAIT)
    }

    /// [`Serving::child`], a request waiting up to `wait` for a process to be attached.
    pub fn child_waiting(wait: Duration) -> Serving {
        Serving::Child(Link {
            client: Mutex::new(None),
            attached: Condvar::new(),
            wait,
        })
    }

    fn call(&self, request: &Request, dir: Option<&OwnedFd>) -> Result<Reply, ApiError> {
        match self {
            Serving::Here(executor) => {
                let dir = dir
                    .map(OwnedFd::try_clone)
                    .transpose()
                    .map_err(|e| ApiError::Internal(format!("descriptor: {e}")))?;
                Ok(executor.handle(request.clone(), dir))
            }
            Serving::Child(link) => {
                let client = link.get(Duration::ZERO).ok_or_else(|| {
                    ApiError::Unavailable("no serving process is up: try again".into())
                })?;
                client.call(request, dir).map_err(|e| {
                    link.drop_if(&client);
                    ApiError::Unavailable(format!(
                        "the serving process is gone ({e}); a new one is starting: try again"
                    ))
                })
            }
        }
    }

    /// Waits (up to the link's wait, 5 s unless set) for a serving process to be attached. Call it before
    /// taking the state lock, which attaching takes.
    fn wait_attached(&self) {
        if let Serving::Child(link) = self {
            link.get(link.wait);
        }
    }

    fn ready(&self) -> bool {
        match self {
            Serving::Here(_) => true,
            Serving::Child(link) => lock(&link.client).is_some(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A mount that succeeded, as it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    /// The request's fs_type.
    pub fs_type: String,
    /// Its source.
    pub source: String,
    /// Its config.
    pub config: String,
}

/// What the API knows of the table, changed under one lock so that it matches the table.
#[derive(Default)]
struct State {
    records: BTreeMap<String, MountRecord>,
    /// The source of each live mount, for the next serving process.
    dirs: BTreeMap<String, OwnedFd>,
    journal: Journal,
    /// Whether a serving process was attached before.
    attached: bool,
}

/// The daemon's side of the API.
pub struct ApiControl {
    serving: Serving,
    policy: SourcePolicy,
    id: Option<String>,
    state: Mutex<State>,
}

impl ApiControl {
    /// Requests go to `serving`; sources must pass `policy`; `id` is reported as nydusd's.
    pub fn new(serving: Serving, policy: SourcePolicy, id: Option<String>) -> Self {
        ApiControl {
            serving,
            policy,
            id,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Runs `f` under the state lock once a serving process is attached, and once more if
    /// that process died under it. Asking again is safe: what the dead process did on the
    /// first request is in no journal, and the next process starts from the journal.
    fn with_serving<T>(
        &self,
        mut f: impl FnMut(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut retried = false;
        loop {
            self.serving.wait_attached();
            let mut state = self.state();
            match f(&mut state) {
                Err(ApiError::Unavailable(why)) if !retried => {
                    log::warn!("{why} (asking the next one)");
                    retried = true;
                }
                result => return result,
            }
        }
    }

    /// The mounts that succeeded and are still in place, by mount point.
    pub fn records(&self) -> BTreeMap<String, MountRecord> {
        self.state().records.clone()
    }

    /// Takes on the serving process at the other end of `sock` (a new one, which has mounted
    /// nothing): waits until it is ready, has it rebuild the table, then sends it requests.
    /// Until then requests wait for it (up to 5 s, then 503). A mount it cannot bring back is forgotten (the guest
    /// gets `ESTALE` for its inodes) and logged.
    pub fn attach(&self, sock: UnixStream) -> io::Result<()> {
        let Serving::Child(link) = &self.serving else {
            return Err(io::Error::other("requests are carried out in this process"));
        };
        // A new process means the one before is gone.
        *lock(&link.client) = None;
        let client = Client::connect(sock)?;
        let mut state = self.state();
        let state = &mut *state;
        if state.attached {
            state.journal.restored();
        }
        state.attached = true;
        let dirs = state
            .journal
            .live_mounts()
            .into_iter()
            .map(|at| state.dirs.get(at))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| io::Error::other("a live mount without its source"))?;
        let (lost, renumbered) = match client.restore(&state.journal, &dirs)? {
            Reply::Restored { lost, renumbered } => (lost, renumbered),
            other => return Err(io::Error::other(format!("restore: {other:?}"))),
        };
        for (at, why) in lost {
            log::error!("{at} is no longer mounted: {why}");
            state.journal.unmounted(&at);
            state.records.remove(&at);
            state.dirs.remove(&at);
        }
        for (at, slot) in renumbered {
            log::info!("{at}: inode numbers the guest held are stale (a pass-through)");
            state.journal.renumber(&at, slot);
        }
        link.set(client);
        Ok(())
    }
}

fn refused(e: MountError) -> ApiError {
    failed(Fault::of(&e), e.to_string())
}

fn failed(fault: Fault, message: String) -> ApiError {
    match fault {
        Fault::BadRequest => ApiError::BadRequest(message),
        Fault::Conflict => ApiError::Conflict(message),
        Fault::NotFound => ApiError::NotFound(message),
        Fault::Internal => ApiError::Internal(message),
    }
}

fn done(reply: Reply) -> Result<(), ApiError> {
    match reply {
        Reply::Done | Reply::Mounted { .. } => Ok(()),
        Reply::Failed { fault, message } => Err(failed(fault, message)),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

fn unexpected(to: &str) -> ApiError {
    ApiError::Internal(format!("unexpected reply to {to}"))
}

impl Control for ApiControl {
    fn info(&self) -> DaemonInfo {
        let backends = self
            .records()
            .into_iter()
            .map(|(at, r)| {
                let info = BackendInfo {
                    fs_type: r.fs_type,
                    source: r.source,
                    mountpoint: at.clone(),
                };
                (at, info)
            })
            .collect();
        DaemonInfo {
            version: BuildInfo::of_this_build(),
            id: self.id.clone(),
            supervisor: None,
            state: if self.serving.ready() {
                DaemonState::Running
            } else {
                DaemonState::Init
            },
            backend_collection: Some(backends),
        }
    }

    fn mount(&self, mountpoint: &str, request: MountRequest) -> Result<(), ApiError> {
        if request.overlay.is_some() {
            return Err(ApiError::BadRequest(
                "a writable overlay in the daemon is not supported: the guest builds it".into(),
            ));
        }
        let spec = MountSpec::parse(&request.fs_type, &request.source, &request.config)
            .map_err(refused)?;
        let wire = Request::Mount {
            mountpoint: mountpoint.to_string(),
            fs_type: request.fs_type.clone(),
            source: request.source.clone(),
            config: request.config.clone(),
        };
        self.with_serving(|state| {
            if state.records.contains_key(mountpoint) {
                return Err(ApiError::Conflict(format!(
                    "{mountpoint} is already a mount point"
                )));
            }
            let dir = open_source(&spec, &self.policy).map_err(refused)?;
            let (slot, manifest) = match self.serving.call(&wire, Some(&dir))? {
                Reply::Mounted { slot, manifest } => (slot, manifest),
                other => {
                    done(other)?;
                    return Err(unexpected("a mount"));
                }
            };
            let manifest = manifest
                .as_deref()
                .map(Digest::parse)
                .transpose()
                .map_err(|e| ApiError::Internal(format!("mounted from manifest: {e}")))?;
            let recorded = [
                request.fs_type.clone(),
                request.source.clone(),
                request.config.clone(),
            ];
            state.journal.mounted(mountpoint, slot, recorded, manifest);
            state.dirs.insert(mountpoint.to_string(), dir);
            let record = MountRecord {
                fs_type: request.fs_type.clone(),
                source: request.source.clone(),
                config: request.config.clone(),
            };
            state.records.insert(mountpoint.to_string(), record);
            Ok(())
        })
    }

    fn umount(&self, mountpoint: &str) -> Result<(), ApiError> {
        let wire = Request::Umount {
            mountpoint: mountpoint.to_string(),
        };
        self.with_serving(|state| {
            done(self.serving.call(&wire, None)?)?;
            if state.records.remove(mountpoint).is_some() {
                state.journal.unmounted(mountpoint);
            }
            state.dirs.remove(mountpoint);
            Ok(())
        })
    }

    fn metrics(&self) -> Result<MetricsSnapshot, ApiError> {
        self.with_serving(|_| match self.serving.call(&Request::Metrics, None)? {
            Reply::Metrics { snapshot } => Ok(*snapshot),
            Reply::Failed { fault, message } => Err(failed(fault, message)),
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        })
    }
}
