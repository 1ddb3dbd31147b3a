//! Taking up a ring after a crash: where the ring resumes, and the chains to serve again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::region::QueueLog;
use crate::daemon::request::{Chain, GuestMem};

/// Repairs `log` against the ring and returns the chains an earlier process took but never
/// answered, oldest first, for the caller to serve (and mark) again.
///
/// The ring resumes right after the last chain taken: the used index plus the chains still in
/// flight (completions are published in any order, but chains are taken in ring order), not
/// at the base the VMM sent (cloud-hypervisor sends the avail index, which would skip every
/// chain published but not yet taken). Each chain is found again through an avail ring slot
/// that still names its head: a chain in flight keeps its slot, since the driver cannot
/// publish a whole ring's worth of chains past it.
/// Does nothing once the log was taken up in this process.
pub(crate) fn take_up(q: &mut Queue, mem: &Arc<GuestMem>, log: &QueueLog) -> Vec<Chain> {
    if log.recovered() {
        return Vec::new();
    }
    let (used, avail) = match (
        q.used_idx(mem.as_ref(), Ordering::Acquire),
        q.avail_idx(mem.as_ref(), Ordering::Acquire),
    ) {
        (Ok(u), Ok(a)) => (u.0, a.0),
        _ => {
            log::warn!("cannot read the ring's indexes: in-flight requests not taken up");
            return Vec::new();
        }
    };
    let heads = log.recover(used);
    let size = q.size();
    let next = used.wrapping_add(heads.len() as u16);
    // Chains published but not taken yet.
    let waiting = avail.wrapping_sub(next);
    if heads.len() > usize::from(size) || waiting > size {
        log::error!(
            "inflight region contradicts the ring (used {used}, avail {avail}, {} in flight): \
             ignored",
            heads.len()
        );
        log.clear();
        return Vec::new();
    }
    q.set_next_avail(next);
    if heads.is_empty() {
        return Vec::new();
    }
    // Slots still holding chains taken before `next`: positions next-1 back to avail-size.
    let reach = size - waiting;
    let mut chains = Vec::with_capacity(heads.len());
    for head in heads {
        match find(q, mem, next, reach, head) {
            Some(chain) => chains.push(chain),
            None => {
                log::error!("in-flight descriptor {head} is not on the avail ring: dropped");
                log.drop_head(head);
            }
        }
    }
    q.set_next_avail(next);
    log::info!(
        "took up {} request(s) left in flight; ring resumes at {next}",
        chains.len()
    );
    chains
}

/// The chain of `head` through the newest avail slot that names it.
fn find(q: &mut Queue, mem: &Arc<GuestMem>, next: u16, reach: u16, head: u16) -> Option<Chain> {
    let size = q.size();
    let ring = GuestAddress(q.avail_ring());
    for back in 1..=reach {
        let position = next.wrapping_sub(back);
        let slot = ring.checked_add(4 + 2 * u64::from(position % size))?;
        let named: u16 = mem.read_obj(slot).ok().map(u16::from_le)?;
        if named != head {
            continue;
        }
        q.set_next_avail(position);
        let chain = q.iter(mem.clone()).ok()?.next()?;
        if chain.head_index() == head {
            return Some(chain);
        }
    }
    None
}
