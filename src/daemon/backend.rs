//! The vhost-user-fs device: queue 0 (hiprio) plus N request queues, each watched by its own
//! vhost-user-backend epoll thread that pops descriptor chains, serves the quick ones itself
//! and hands the others to the workers.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fuse_backend_rs::api::filesystem::FileSystem;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::inflight::{self, InflightSlot, Tracked};
use super::pool::WorkerPool;
use super::prime::{self, Primed};
use super::request::{self, Chain, FuseServer, GuestMem, RingId, Vring};
use super::triage::{self, Triage};

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Most requests served on a queue thread before their completions are published.
const BATCH: usize = 16;

/// Index of the high-priority queue (FORGET, INTERRUPT), per the virtio-fs spec.
const HIPRIO_QUEUE: usize = 0;

/// Device geometry and worker count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    /// Request queues offered (the VMM may use fewer).
    pub request_queues: usize,
    /// Largest queue size accepted.
    pub queue_size: u16,
}

/// The vhost-user-fs back end, generic over the file system it serves.
pub(crate) struct FsBackend<F: FileSystem + Triage + Send + Sync + 'static> {
    server: Arc<FuseServer<F>>,
    pool: WorkerPool,
    geometry: Geometry,
    event_idx: AtomicBool,
    mem: Mutex<Option<GuestMemoryAtomic<GuestMem>>>,
    /// Which queues were drained on this connection (see `prime`).
    primed: Arc<Primed>,
    /// With INFLIGHT_SHMFD offered: where the front end's inflight region lands.
    inflight: Option<Arc<InflightSlot>>,
}

/// The event a queue thread gets from the [`super::prime::Poker`] (past the queue events and
/// the exit event, which is `num_queues`).
pub(crate) const fn poke_event(num_queues: usize) -> u64 {
    num_queues as u64 + 1
}

impl<F: FileSystem + Triage + Send + Sync + 'static> FsBackend<F> {
    #[cfg(test)]
    pub(crate) fn new(fs: F, geometry: Geometry, workers: usize) -> io::Result<Self> {
        Self::with_server(Arc::new(FuseServer::new(fs)), geometry, workers, None)
    }

    /// A back end for one front-end connection, serving `server`: the FUSE session (file
    /// system and INIT state), which outlives the connection when the daemon reconnects.
    /// The workers, guest memory and ring state are this connection's own. With `inflight`,
    /// INFLIGHT_SHMFD is offered and requests are tracked in the region set there.
    pub(crate) fn with_server(
        server: Arc<FuseServer<F>>,
        geometry: Geometry,
        workers: usize,
        inflight: Option<Arc<InflightSlot>>,
    ) -> io::Result<Self> {
        Ok(FsBackend {
            server,
            pool: WorkerPool::new(workers)?,
            geometry,
            event_idx: AtomicBool::new(false),
            mem: Mutex::new(None),
            primed: Arc::new(Primed::new(1 + geometry.request_queues)),
            inflight,
        })
    }

    /// The queues drained on this connection so far.
    pub(crate) fn primed(&self) -> Arc<Primed> {
        self.primed.clone()
    }

    /// Whether this connection resumes a FUSE session (INIT was answered before it).
    pub(crate) fn resumes(&self) -> bool {
        self.server.initialized()
    }

    /// Finishes the requests already handed to workers and stops them.
    pub(crate) fn shutdown(&self) {
        self.pool.shutdown();
    }

    fn memory(&self) -> io::Result<Arc<GuestMem>> {
        let mem = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        match mem.as_ref() {
            Some(m) => Ok(m.memory().into_inner()),
            None => Err(io::Error::other("queue kicked before SET_MEM_TABLE")),
        }
    }

    /// Pops every available chain, re-arming notifications until the ring is really empty.
    ///
    /// Notifications are disabled while draining and re-enabled afterwards;
    /// `enable_notification` then re-reads the avail index (publishing `avail_event` first
    /// with EVENT_IDX), so a request added while draining is either popped by the next round
    /// or kicks again. Nothing is lost between the last pop and the re-arm.
    ///
    /// Quick requests (see [`Triage`]) are served right here and completed in batches of up
    /// to [`BATCH`], one guest notification per batch; the others go to the workers.
    ///
    /// With an inflight region, every chain is marked there as it is taken, and the first
    /// drain of a queue first takes up what an earlier process left in flight.
    fn drain(&self, queue: usize, vring: &Vring) -> io::Result<()> {
        let mem = self.memory()?;
        self.primed.set(queue);
        let tracked = self
            .inflight
            .as_ref()
            .and_then(|slot| slot.get())
            .and_then(|region| Tracked::new(region, queue));
        let log = tracked.as_ref().and_then(Tracked::log);
        let mut done = Vec::with_capacity(BATCH);
        loop {
            let (ring, chains): (RingId, Vec<Chain>) = {
                let mut state = vring.get_mut();
                state.disable_notification().map_err(io::Error::other)?;
                let q = state.get_queue_mut();
                let ring = request::ring_id(q);
                let mut chains = match log {
                    Some(log) => inflight::take_up(q, &mem, log),
                    None => Vec::new(),
                };
                chains.extend(q.iter(mem.clone()).map_err(io::Error::other)?);
                if let Some(log) = log {
                    for chain in &chains {
                        log.begin(chain.head_index());
                    }
                }
                (ring, chains)
            };
            for chain in chains {
                if self.serves_here(queue, &mem, &chain) {
                    done.push(request::serve_here(&self.server, &mem, chain));
                    if done.len() == BATCH {
                        request::complete_all(vring, ring, tracked.as_ref(), &done);
                        done.clear();
                    }
                } else {
                    let server = self.server.clone();
                    let vring = vring.clone();
                    let mem = mem.clone();
                    let tracked = tracked.clone();
                    self.pool.submit(Box::new(move || {
                        request::serve(&server, vring, ring, tracked, mem, chain);
                    }));
                }
            }
            request::complete_all(vring, ring, tracked.as_ref(), &done);
            done.clear();
            if !vring.enable_notification().map_err(io::Error::other)? {
                return Ok(());
            }
        }
    }

    /// Whether the queue thread serves `chain` itself: hiprio requests (FORGET and friends,
    /// cheap and answered in order), everything when there are no workers, and requests that
    /// cannot wait on I/O.
    fn serves_here(&self, queue: usize, mem: &GuestMem, chain: &Chain) -> bool {
        queue == HIPRIO_QUEUE
            || self.pool.is_inline()
            || triage::is_quick(self.server.fs(), mem, chain)
    }
}

impl<F: FileSystem + Triage + Send + Sync + 'static> VhostUserBackend for FsBackend<F> {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        1 + self.geometry.request_queues
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.geometry.queue_size)
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_RING_F_EVENT_IDX
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // Only what is implemented: no CONFIG (QEMU 7.1-8.0 crash on it, and virtio-fs config
        // comes from the VMM), no BACKEND_REQ (no DAX window), no LOG_SHMFD; INFLIGHT_SHMFD
        // only where the serving process can be replaced (its messages go through the relay).
        let base = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
        match self.inflight {
            Some(_) => base | VhostUserProtocolFeatures::INFLIGHT_SHMFD,
            None => base,
        }
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
        log::debug!("EVENT_IDX {}", if enabled { "on" } else { "off" });
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMem>) -> io::Result<()> {
        *self.mem.lock().unwrap_or_else(|e| e.into_inner()) = Some(mem);
        Ok(())
    }

    /// One epoll thread per queue: thread `i` watches queue `i` only.
    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.num_queues()).map(|i| 1u64 << i).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK) {
            Ok(pair) => Some(pair),
            Err(e) => {
                log::error!("cannot create exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        // An error returned here ends the queue's epoll thread for good, and the guest would
        // wait forever: log instead, and serve what can be served.
        if evset != EventSet::IN {
            log::warn!("queue {thread_id}: unexpected event set {evset:?}");
        }
        // Each thread owns exactly one queue, so its only event is 0 and its queue index is the
        // thread index.
        match (device_event, vrings) {
            (0, [vring]) => {
                if let Err(e) = self.drain(thread_id, vring) {
                    log::error!("queue {thread_id}: {e}");
                }
            }
            (event, [vring]) if u64::from(event) == poke_event(self.num_queues()) => {
                // The kick handler then checks that the front end enabled the ring.
                let state = vring.get_ref();
                if state.get_queue().ready() {
                    if let Some(kick) = state.get_kick() {
                        prime::kick(kick);
                    }
                }
            }
            _ => log::warn!("queue thread {thread_id}: unknown event {device_event}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoFs;
    impl FileSystem for NoFs {
        type Inode = u64;
        type Handle = u64;
    }
    impl Triage for NoFs {
        fn is_quick(&self, _: u32, _: u64, _: Option<(u64, u32)>) -> bool {
            true
        }
    }

    #[test]
    fn offers_only_implemented_features() {
        let geometry = Geometry {
            request_queues: 4,
            queue_size: 1024,
        };
        let b = FsBackend::new(NoFs, geometry, 0).unwrap();
        let p = b.protocol_features();
        assert!(p.contains(VhostUserProtocolFeatures::MQ));
        assert!(p.contains(VhostUserProtocolFeatures::REPLY_ACK));
        assert!(p.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS));
        assert!(!p.contains(VhostUserProtocolFeatures::CONFIG));
        assert!(!p.contains(VhostUserProtocolFeatures::BACKEND_REQ));
        assert!(!p.contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD));
        assert!(!p.contains(VhostUserProtocolFeatures::LOG_SHMFD));
        assert_eq!(b.num_queues(), 5);
        assert_eq!(b.max_queue_size(), 1024);
        assert_eq!(b.queues_per_thread(), vec![1, 2, 4, 8, 16]);
        assert_ne!(b.features() & VIRTIO_F_VERSION_1, 0);
        let server = Arc::new(FuseServer::new(NoFs));
        let tracking = FsBackend::with_server(server, geometry, 0, Some(Arc::default())).unwrap();
        assert!(tracking
            .protocol_features()
            .contains(VhostUserProtocolFeatures::INFLIGHT_SHMFD));
    }
}
