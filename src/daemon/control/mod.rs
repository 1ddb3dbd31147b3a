//! The control plane: mount, unmount and metrics requests, carried out on the mount table the
//! daemon serves. In a sandboxed daemon the API runs in the supervisor, outside the sandbox:
//! it opens each source on the host ([`source`]) and sends the request with the descriptor
//! over a socket pair ([`channel`]) to the serving process, whose [`Executor`] mounts it.
//! Without a sandbox the API calls the executor in-process.

mod api_control;
mod channel;
mod source;

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

pub use api_control::{ApiControl, Link, MountRecord, Serving};
pub use source::{open_source, SourcePolicy};

use crate::format::Digest;
use crate::mounts::{
    ErrorClass, ImageRef, Journal, MetricsSnapshot, MountError, MountSpec, MountTable, Mounter,
    Reopened, SlotId,
};
use crate::reader::FileChunkCacheStats;

/// A request to the serving process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Mount; the source's directory descriptor travels with the message.
    Mount {
        mountpoint: String,
        fs_type: String,
        source: String,
        config: String,
    },
    /// Unmount.
    Umount { mountpoint: String },
    /// Keep the descriptor that travels with the message for the next [`Request::Restore`]
    /// (one per mount it brings back, in the journal's order).
    Hold,
    /// Rebuild the table `journal` recorded, in a serving process that has mounted nothing
    /// yet, reaching the mounts through the descriptors held.
    Restore { journal: Journal },
    /// Everything counted.
    Metrics,
    /// The live mounts.
    Mounts,
}

/// One live mount, as the serving process reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    /// Where.
    pub mountpoint: String,
    /// `passthrough_fs` or `puzzlefs`.
    pub fs_type: String,
    /// As the request named it.
    pub source: String,
    /// Seconds since the epoch when it was mounted.
    pub since: u64,
}

/// Whose fault a failed request is, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The request is wrong.
    BadRequest,
    /// It conflicts with what is mounted.
    Conflict,
    /// Nothing is mounted there.
    NotFound,
    /// The daemon failed.
    Internal,
}

/// The serving process's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// Sent once, unasked, when the serving process is ready for its front end.
    Ready,
    /// The unmount happened, or the descriptor is held.
    Done,
    /// The mount happened, in `slot`; an image was opened from `manifest`.
    Mounted {
        slot: SlotId,
        manifest: Option<String>,
    },
    /// The table is rebuilt but for the mounts `lost` (mount point, why), now unmounted;
    /// those `renumbered` came back in a new generation of their slot.
    Restored {
        lost: Vec<(String, String)>,
        renumbered: Vec<(String, SlotId)>,
    },
    /// It did not; nothing changed.
    Failed { fault: Fault, message: String },
    /// The metrics.
    Metrics { snapshot: Box<MetricsSnapshot> },
    /// The live mounts.
    Mounts { mounts: Vec<MountEntry> },
}

impl Fault {
    /// Whose fault `e` is.
    pub fn of(e: &MountError) -> Fault {
        match e.class() {
            ErrorClass::BadRequest => Fault::BadRequest,
            ErrorClass::Conflict => Fault::Conflict,
            ErrorClass::NotFound => Fault::NotFound,
            ErrorClass::Internal => Fault::Internal,
        }
    }
}

impl Reply {
    fn failed(e: &MountError) -> Reply {
        Reply::Failed {
            fault: Fault::of(e),
            message: e.to_string(),
        }
    }
}

/// Carries out requests on the table the daemon serves.
pub struct Executor {
    table: Arc<MountTable>,
    mounter: Mounter,
    /// Descriptors for the next restore.
    held: Mutex<Vec<OwnedFd>>,
}

impl Executor {
    /// Requests will change `table`; `mounter` opens what they name.
    pub fn new(table: Arc<MountTable>, mounter: Mounter) -> Self {
        Executor {
            table,
            mounter,
            held: Mutex::new(Vec::new()),
        }
    }

    /// The table served.
    pub fn table(&self) -> &Arc<MountTable> {
        &self.table
    }

    /// Carries out `request`. A mount reaches its source through `dir`, a descriptor of the
    /// directory (the table keeps it open while mounted).
    pub fn handle(&self, request: Request, dir: Option<OwnedFd>) -> Reply {
        let changes_table = matches!(
            request,
            Request::Mount { .. } | Request::Umount { .. } | Request::Restore { .. }
        );
        let reply = self.carry_out(request, dir);
        if changes_table {
            crate::daemon::heap::release_free_pages();
        }
        reply
    }

    fn carry_out(&self, request: Request, dir: Option<OwnedFd>) -> Reply {
        match request {
            Request::Mount {
                mountpoint,
                fs_type,
                source,
                config,
            } => match self.mount(&mountpoint, &fs_type, &source, &config, dir) {
                Ok((slot, manifest)) => {
                    log::info!("mounted {fs_type} {source} at {mountpoint}");
                    Reply::Mounted {
                        slot,
                        manifest: manifest.map(|m| m.to_string()),
                    }
                }
                Err(e) => {
                    log::warn!("mount at {mountpoint} refused: {e}");
                    Reply::failed(&e)
                }
            },
            Request::Umount { mountpoint } => match self.table.umount(&mountpoint) {
                Ok(()) => {
                    log::info!("unmounted {mountpoint}");
                    Reply::Done
                }
                Err(e) => Reply::failed(&e),
            },
            Request::Hold => match dir {
                Some(dir) => {
                    self.held_fds().push(dir);
                    Reply::Done
                }
                None => Reply::failed(&MountError::Internal("nothing to hold".into())),
            },
            Request::Restore { journal } => match self.restore(&journal) {
                Ok(reply) => reply,
                Err(e) => {
                    log::error!("cannot rebuild the mount table: {e}");
                    Reply::failed(&e)
                }
            },
            Request::Metrics => Reply::Metrics {
                snapshot: Box::new(
                    self.table
                        .metrics(store_metrics(self.mounter.store().stats())),
                ),
            },
            Request::Mounts => Reply::Mounts {
                mounts: self
                    .table
                    .mounts()
                    .into_iter()
                    .map(|m| MountEntry {
                        mountpoint: m.mountpoint,
                        fs_type: m.label.fs_type,
                        source: m.label.source,
                        since: m
                            .since
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                    })
                    .collect(),
            },
        }
    }

    fn mount(
        &self,
        mountpoint: &str,
        fs_type: &str,
        source: &str,
        config: &str,
        dir: Option<OwnedFd>,
    ) -> Result<(SlotId, Option<Digest>), MountError> {
        let spec = MountSpec::parse(fs_type, source, config)?;
        let dir = dir.ok_or_else(|| {
            MountError::Internal("mount request without its source's descriptor".into())
        })?;
        let fs = self.mounter.open(&spec, &source::reach(&dir))?;
        let manifest = fs.manifest();
        let slot = self.table.mount(mountpoint, spec.label(), fs, vec![dir])?;
        Ok((slot, manifest))
    }

    fn held_fds(&self) -> std::sync::MutexGuard<'_, Vec<OwnedFd>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds the table from `journal`, each mount still in place reached through the
    /// next descriptor held; an image by the manifest it was opened from.
    fn restore(&self, journal: &Journal) -> Result<Reply, MountError> {
        let held = std::mem::take(&mut *self.held_fds());
        let wanted = journal.live_mounts().len();
        if held.len() != wanted {
            return Err(MountError::Internal(format!(
                "{} descriptors for {wanted} mounts",
                held.len()
            )));
        }
        let mut held = held.into_iter();
        let restored = self
            .table
            .restore(journal, |[fs_type, source, config], manifest| {
                let dir = held
                    .next()
                    .ok_or_else(|| MountError::Internal("a descriptor short".into()))?;
                let mut spec = MountSpec::parse(fs_type, source, config)?;
                let label = spec.label();
                if let (MountSpec::Image(image), Some(m)) = (&mut spec, manifest) {
                    image.image = ImageRef::Digest(m);
                }
                let fs = self.mounter.open(&spec, &source::reach(&dir))?;
                Ok(Reopened {
                    label,
                    fs,
                    keep: vec![dir],
                    stable_inodes: matches!(spec, MountSpec::Image(_)),
                })
            })?;
        let lost: Vec<(String, String)> = restored
            .lost
            .into_iter()
            .map(|(at, e)| {
                log::error!("{at} could not be mounted again: {e}");
                (at, e.to_string())
            })
            .collect();
        let back = wanted - lost.len();
        log::info!("mount table rebuilt: {back} mounts back in their slots");
        Ok(Reply::Restored {
            lost,
            renumbered: restored.renumbered,
        })
    }
}

fn store_metrics(s: FileChunkCacheStats) -> crate::mounts::ChunkStoreMetrics {
    crate::mounts::ChunkStoreMetrics {
        capacity_bytes: s.capacity,
        used_bytes: s.used,
        chunks: s.chunks,
        hits: s.hits,
        misses: s.misses,
        inserts: s.inserts,
        evictions: s.evictions,
    }
}

/// The serving process's side, before it serves the VMM: tells the supervisor it is ready,
/// then carries out requests up to the [`Request::Restore`] that rebuilds its table (the
/// supervisor always sends one, with an empty journal to a first process).
pub fn await_restore(sock: &UnixStream, executor: &Executor) -> io::Result<()> {
    channel::send(sock, &Reply::Ready, &[])?;
    loop {
        let Some((request, mut fds)) = channel::recv::<Request>(sock)? else {
            return Err(io::Error::other(
                "the supervisor hung up before the restore",
            ));
        };
        let restore = matches!(request, Request::Restore { .. });
        let reply = executor.handle(request, fds.pop());
        channel::send(sock, &reply, &[])?;
        match (restore, reply) {
            (true, Reply::Failed { message, .. }) => return Err(io::Error::other(message)),
            (true, _) => return Ok(()),
            _ => {}
        }
    }
}

/// The serving process's side, while it serves: answers requests until the supervisor hangs
/// up.
pub fn answer_requests(sock: &UnixStream, executor: &Executor) -> io::Result<()> {
    while let Some((request, mut fds)) = channel::recv::<Request>(sock)? {
        let dir = fds.pop();
        let reply = executor.handle(request, dir);
        channel::send(sock, &reply, &[])?;
    }
    Ok(())
}

/// The supervisor's side of the channel to the serving process.
pub struct Client {
    sock: Mutex<UnixStream>,
}

impl Client {
    /// Waits for the serving process to say it is ready.
    pub fn connect(sock: UnixStream) -> io::Result<Client> {
        match channel::recv::<Reply>(&sock)? {
            Some((Reply::Ready, _)) => Ok(Client {
                sock: Mutex::new(sock),
            }),
            Some((other, _)) => Err(io::Error::other(format!(
                "serving process said {other:?} before it was ready"
            ))),
            None => Err(io::Error::other(
                "serving process exited before it was ready",
            )),
        }
    }

    /// Sends `request` (with the descriptor of a mount's source) and waits for the reply.
    /// Requests are answered one at a time, in order.
    pub fn call(&self, request: &Request, dir: Option<&OwnedFd>) -> io::Result<Reply> {
        let sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        match dir {
            Some(fd) => channel::send(&sock, request, &channel::one(fd))?,
            None => channel::send(&sock, request, &[])?,
        }
        match channel::recv::<Reply>(&sock)? {
            Some((reply, _)) => Ok(reply),
            None => Err(io::Error::other("its end closed")),
        }
    }

    /// Has the serving process rebuild the table `journal` recorded, reaching the mounts
    /// still in place through `dirs` (in [`Journal::live_mounts`] order).
    pub fn restore(&self, journal: &Journal, dirs: &[&OwnedFd]) -> io::Result<Reply> {
        for dir in dirs {
            match self.call(&Request::Hold, Some(dir))? {
                Reply::Done => {}
                other => return Err(io::Error::other(format!("held: {other:?}"))),
            }
        }
        self.call(
            &Request::Restore {
                journal: journal.clone(),
            },
            None,
        )
    }
}

#[cfg(test)]
mod tests;
