//! Requests in flight across a crash of the serving process (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD):
//! `region` is the shared memory the VMM keeps, where every chain taken from a ring is marked
//! until it is answered; `relay` answers the two messages that hand it over, which
//! vhost-user-backend does not implement; `ring` takes up, in a fresh process, the chains an
//! earlier one took but never answered.

mod region;
mod relay;
mod ring;

pub(crate) use region::{InflightRegion, QueueLog};
pub(crate) use relay::{InflightSlot, Relay};
pub(crate) use ring::take_up;

use std::sync::Arc;

/// One queue of a region, as a completion carries it.
#[derive(Clone)]
pub(crate) struct Tracked {
    region: Arc<InflightRegion>,
    queue: usize,
}

impl Tracked {
    /// Queue `queue` of `region`, if the region has it.
    pub(crate) fn new(region: Arc<InflightRegion>, queue: usize) -> Option<Tracked> {
        region.queue(queue)?;
        Some(Tracked { region, queue })
    }

    /// The queue's log.
    pub(crate) fn log(&self) -> Option<&QueueLog> {
        self.region.queue(self.queue)
    }
}
