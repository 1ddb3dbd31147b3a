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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::inflight::region::{create, InflightRegion};

    const DESC: u64 = 0x0;
    const AVAIL: u64 = 0x1000;
    const USED: u64 = 0x2000;

    /// A 16-entry ring in fresh memory; every head a single device-writable buffer.
    fn ring() -> (Arc<GuestMem>, Queue) {
        let mem = Arc::new(GuestMem::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(USED as u32), Some(0));
        q.set_ready(true);
        for h in 0..16u64 {
            let d = DESC + h * 16;
            mem.write_obj(0x4000u64 + h * 0x100, GuestAddress(d))
                .unwrap();
            mem.write_obj(0x100u32, GuestAddress(d + 8)).unwrap();
            mem.write_obj(2u16, GuestAddress(d + 12)).unwrap(); // VIRTQ_DESC_F_WRITE
        }
        (mem, q)
    }

    /// The driver publishes `heads` from avail position 0 and has seen `used` answers.
    fn publish(mem: &GuestMem, heads: &[u16], used: u16) {
        for (i, h) in heads.iter().enumerate() {
            mem.write_obj(*h, GuestAddress(AVAIL + 4 + 2 * i as u64))
                .unwrap();
        }
        mem.write_obj(heads.len() as u16, GuestAddress(AVAIL + 2))
            .unwrap();
        mem.write_obj(used, GuestAddress(USED + 2)).unwrap();
    }

    fn log_of(file: &std::fs::File) -> InflightRegion {
        let shape = super::super::region::Shape {
            mmap_size: file.metadata().unwrap().len(),
            mmap_offset: 0,
            num_queues: 1,
            queue_size: 16,
        };
        InflightRegion::map(file, shape).unwrap()
    }

    #[test]
    fn chains_taken_and_unanswered_are_served_again_and_the_ring_resumes_after_them() {
        let (mem, mut q) = ring();
        // Published 5..=9; the dead process took 5, 6, 7, 8 and answered 6 only.
        publish(&mem, &[5, 6, 7, 8, 9], 1);
        let (file, _) = create(1, 16).unwrap();
        let dead = log_of(&file);
        let log = dead.queue(0).unwrap();
        for h in [5, 6, 7, 8] {
            log.begin(h);
        }
        log.complete(6, || Some(1));
        drop(dead);
        // The VMM resumes the ring at its avail index, as cloud-hypervisor does.
        q.set_next_avail(5);
        let fresh = log_of(&file);
        let log = fresh.queue(0).unwrap();
        let heads: Vec<u16> = take_up(&mut q, &mem, log)
            .iter()
            .map(|c| c.head_index())
            .collect();
        assert_eq!(heads, [5, 7, 8]);
        let next: Vec<u16> = q
            .iter(mem.clone())
            .unwrap()
            .map(|c| c.head_index())
            .collect();
        assert_eq!(next, [9], "the chain published but never taken comes next");
        assert!(take_up(&mut q, &mem, log).is_empty(), "once per process");
    }

    #[test]
    fn a_region_that_contradicts_the_ring_is_ignored() {
        let (mem, mut q) = ring();
        publish(&mem, &[1, 2], 0);
        let (file, _) = create(1, 16).unwrap();
        let region = log_of(&file);
        let log = region.queue(0).unwrap();
        for h in 0..5 {
            log.begin(h);
        }
        q.set_next_avail(2);
        assert!(take_up(&mut q, &mem, log).is_empty());
        assert_eq!(q.next_avail(), 2, "the VMM's base stands");
        drop(region);
        let again = log_of(&file);
        assert!(again.queue(0).unwrap().recover(0).is_empty(), "cleared");
    }
}
