//! [`ApiControl`]: the API's [`Control`] as the daemon provides it. Each mount request's
//! source is opened here, on the host side ([`open_source`]), then the request goes to the
//! serving process: over the control channel to a sandboxed one ([`Client`]), or straight to
//! the [`Executor`] of this process. The mounts that succeeded are kept here too, so the
//! daemon's info never waits for a mount in progress (and a supervisor could replay them).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};

use super::{open_source, Client, Executor, Fault, Reply, Request, SourcePolicy};
use crate::api::{
    ApiError, BackendInfo, BuildInfo, Control, DaemonInfo, DaemonState, MountRequest,
};
use crate::mounts::{MetricsSnapshot, MountError, MountSpec};

/// Where requests are carried out.
pub enum Serving {
    /// In this process.
    Here(Arc<Executor>),
    /// In the sandboxed child, once it said it is ready.
    Child(Arc<OnceLock<Client>>),
}

impl Serving {
    fn call(&self, request: &Request, dir: Option<OwnedFd>) -> Result<Reply, ApiError> {
        match self {
            Serving::Here(executor) => Ok(executor.handle(request.clone(), dir)),
            Serving::Child(client) => client
                .get()
                .ok_or_else(|| ApiError::Unavailable("the daemon is still starting".into()))?
                .call(request, dir.as_ref())
                .map_err(gone),
        }
    }

    fn ready(&self) -> bool {
        match self {
            Serving::Here(_) => true,
            Serving::Child(client) => client.get().is_some(),
        }
    }
}

fn gone(e: io::Error) -> ApiError {
    ApiError::Internal(format!("the serving process is gone: {e}"))
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

/// The daemon's side of the API.
pub struct ApiControl {
    serving: Serving,
    policy: SourcePolicy,
    id: Option<String>,
    /// Serializes mounts and unmounts, so that the record matches the table.
    records: Mutex<BTreeMap<String, MountRecord>>,
}

impl ApiControl {
    /// Requests go to `serving`; sources must pass `policy`; `id` is reported as nydusd's.
    pub fn new(serving: Serving, policy: SourcePolicy, id: Option<String>) -> Self {
        ApiControl {
            serving,
            policy,
            id,
            records: Mutex::new(BTreeMap::new()),
        }
    }

    /// The mounts that succeeded and are still in place, by mount point.
    pub fn records(&self) -> BTreeMap<String, MountRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        Reply::Done => Ok(()),
        Reply::Failed { fault, message } => Err(failed(fault, message)),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
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
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.contains_key(mountpoint) {
            return Err(ApiError::Conflict(format!(
                "{mountpoint} is already a mount point"
            )));
        }
        let dir = open_source(&spec, &self.policy).map_err(refused)?;
        let wire = Request::Mount {
            mountpoint: mountpoint.to_string(),
            fs_type: request.fs_type.clone(),
            source: request.source.clone(),
            config: request.config.clone(),
        };
        done(self.serving.call(&wire, Some(dir))?)?;
        records.insert(
            mountpoint.to_string(),
            MountRecord {
                fs_type: request.fs_type,
                source: request.source,
                config: request.config,
            },
        );
        Ok(())
    }

    fn umount(&self, mountpoint: &str) -> Result<(), ApiError> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let wire = Request::Umount {
            mountpoint: mountpoint.to_string(),
        };
        done(self.serving.call(&wire, None)?)?;
        records.remove(mountpoint);
        Ok(())
    }

    fn metrics(&self) -> Result<MetricsSnapshot, ApiError> {
        match self.serving.call(&Request::Metrics, None)? {
            Reply::Metrics { snapshot } => Ok(*snapshot),
            Reply::Failed { fault, message } => Err(failed(fault, message)),
            other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
        }
    }
}
