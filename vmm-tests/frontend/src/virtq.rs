//! The driver side of a split virtqueue, as a guest kernel runs it: descriptor table, avail
//! ring and used ring in guest RAM, chains written and published, used entries reaped.
//! No EVENT_IDX: the device is kicked unless it set VRING_USED_F_NO_NOTIFY.

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};

use vhost::VringConfigData;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{FrontendError, Result};
use crate::memory::GuestRam;

/// Descriptor continues in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor is device-writable.
pub const DESC_F_WRITE: u16 = 2;
/// Set by the device in the used ring's flags: it does not need kicks right now.
const USED_F_NO_NOTIFY: u16 = 1;

/// One buffer of a chain.
#[derive(Debug, Clone, Copy)]
pub struct Buf {
    pub addr: GuestAddress,
    pub len: u32,
    pub writable: bool,
}

/// One used-ring entry.
#[derive(Debug, Clone, Copy)]
pub struct Used {
    /// Head of the returned chain.
    pub id: u32,
    /// Bytes the device says it wrote.
    pub len: u32,
    /// Whether `id` was the head of a chain this queue had published and not yet seen back.
    pub known: bool,
}

/// A split virtqueue driven from the guest side, with its kick and call eventfds.
pub struct SplitQueue {
    pub size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    next_avail: u16,
    last_used: u16,
    pub kick: EventFd,
    pub call: EventFd,
    /// Kicks sent (the device asked not to be kicked for the others).
    pub kicks: u64,
}

fn mem_err(e: impl std::fmt::Display) -> FrontendError {
    FrontendError::Memory(e.to_string())
}

fn eventfd() -> Result<EventFd> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| FrontendError::io("eventfd", e))
}

impl SplitQueue {
    /// Lays out a queue of `size` entries (a power of two) in `ram`.
    pub fn new(ram: &mut GuestRam, size: u16) -> Result<SplitQueue> {
        if !size.is_power_of_two() {
            return Err(FrontendError::Usage(format!(
                "queue size {size} is not a power of two"
            )));
        }
        let n = u64::from(size);
        let desc = ram.alloc(16 * n, 4096)?;
        let avail = ram.alloc(6 + 2 * n, 4096)?;
        let used = ram.alloc(6 + 8 * n, 4096)?;
        Ok(SplitQueue {
            size,
            desc,
            avail,
            used,
            free: (0..size).rev().collect(),
            chains: HashMap::new(),
            next_avail: 0,
            last_used: 0,
            kick: eventfd()?,
            call: eventfd()?,
            kicks: 0,
        })
    }

    /// What SET_VRING_ADDR tells the back end: ring addresses in the front end's own address
    /// space (the back end translates them through the memory table).
    pub fn config(&self, ram: &GuestRam) -> VringConfigData {
        VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags: 0,
            desc_table_addr: ram.host_addr(self.desc),
            used_ring_addr: ram.host_addr(self.used),
            avail_ring_addr: ram.host_addr(self.avail),
            log_addr: None,
        }
    }

    /// The avail index the device starts from (SET_VRING_BASE).
    pub fn base(&self) -> u16 {
        self.next_avail
    }

    /// Free descriptors.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Chains published and not yet returned.
    pub fn outstanding(&self) -> usize {
        self.chains.len()
    }

    /// Writes `bufs` as one chain and publishes it; returns its head.
    pub fn push(&mut self, mem: &GuestMemoryMmap<()>, bufs: &[Buf]) -> Result<u16> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return Err(FrontendError::Memory(format!(
                "{} descriptors wanted, {} free",
                bufs.len(),
                self.free.len()
            )));
        }
        let ids: Vec<u16> = (0..bufs.len()).map(|_| self.free.pop().unwrap()).collect();
        for (i, b) in bufs.iter().enumerate() {
            let mut flags = if b.writable { DESC_F_WRITE } else { 0 };
            let next = ids.get(i + 1).copied().unwrap_or(0);
            if i + 1 < ids.len() {
                flags |= DESC_F_NEXT;
            }
            self.write_desc(
                mem,
                ids[i],
                Descriptor::new(b.addr.raw_value(), b.len, flags, next),
            )?;
        }
        let head = ids[0];
        self.chains.insert(head, ids);
        self.publish(mem, head)?;
        Ok(head)
    }

    /// Takes `n` free descriptors for hand-made (possibly malformed) chains; give them back
    /// with [`SplitQueue::track`] once published, or they stay reserved.
    pub fn reserve(&mut self, n: usize) -> Result<Vec<u16>> {
        if n > self.free.len() {
            return Err(FrontendError::Memory(format!("{n} descriptors wanted")));
        }
        Ok((0..n).map(|_| self.free.pop().unwrap()).collect())
    }

    /// Records that the chain at `head` uses `ids`, freed when `head` comes back used.
    pub fn track(&mut self, head: u16, ids: Vec<u16>) {
        self.chains.insert(head, ids);
    }

    /// Writes one raw descriptor.
    pub fn write_desc(&self, mem: &GuestMemoryMmap<()>, id: u16, d: Descriptor) -> Result<()> {
        let addr = self.desc.unchecked_add(16 * u64::from(id));
        mem.write_obj(d, addr).map_err(mem_err)
    }

    /// Puts `head` (any value, even an invalid one) on the avail ring.
    pub fn publish(&mut self, mem: &GuestMemoryMmap<()>, head: u16) -> Result<()> {
        let slot = u64::from(self.next_avail % self.size);
        mem.write_obj(head, self.avail.unchecked_add(4 + 2 * slot))
            .map_err(mem_err)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        // The entry must be visible before the index that publishes it.
        mem.store(
            self.next_avail,
            self.avail.unchecked_add(2),
            Ordering::Release,
        )
        .map_err(mem_err)
    }

    /// Kicks the device unless it said it does not need it.
    pub fn notify(&mut self, mem: &GuestMemoryMmap<()>) -> Result<()> {
        // Order the avail index store before reading the device's flags (the other half of
        // the device's re-enable-then-recheck), so that no kick is lost.
        fence(Ordering::SeqCst);
        let flags: u16 = mem.load(self.used, Ordering::Acquire).map_err(mem_err)?;
        if flags & USED_F_NO_NOTIFY == 0 {
            self.kicks += 1;
            self.kick
                .write(1)
                .map_err(|e| FrontendError::io("kick", e))?;
        }
        Ok(())
    }

    /// Takes the next used entry. Frees the chain's descriptors.
    pub fn pop_used(&mut self, mem: &GuestMemoryMmap<()>) -> Result<Option<Used>> {
        let used_idx: u16 = mem
            .load(self.used.unchecked_add(2), Ordering::Acquire)
            .map_err(mem_err)?;
        if used_idx == self.last_used {
            return Ok(None);
        }
        let slot = u64::from(self.last_used % self.size);
        let elem = self.used.unchecked_add(4 + 8 * slot);
        let id: u32 = mem.read_obj(elem).map_err(mem_err)?;
        let len: u32 = mem.read_obj(elem.unchecked_add(4)).map_err(mem_err)?;
        self.last_used = self.last_used.wrapping_add(1);
        let ids = u16::try_from(id).ok().and_then(|h| self.chains.remove(&h));
        let known = ids.is_some();
        self.free.extend(ids.into_iter().flatten());
        Ok(Some(Used { id, len, known }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (GuestRam, SplitQueue) {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let q = SplitQueue::new(&mut ram, 8).unwrap();
        (ram, q)
    }

    #[test]
    fn push_links_the_chain_and_pop_frees_it() {
        let (mut ram, mut q) = setup();
        let a = ram.alloc(64, 8).unwrap();
        let b = ram.alloc(64, 8).unwrap();
        let mem = ram.mem().clone();
        let bufs = [
            Buf {
                addr: a,
                len: 40,
                writable: false,
            },
            Buf {
                addr: b,
                len: 64,
                writable: true,
            },
        ];
        let head = q.push(&mem, &bufs).unwrap();
        assert_eq!(q.free(), 6);
        let avail_idx: u16 = mem
            .load(q.avail.unchecked_add(2), Ordering::Acquire)
            .unwrap();
        assert_eq!(avail_idx, 1);
        let ring0: u16 = mem.read_obj(q.avail.unchecked_add(4)).unwrap();
        assert_eq!(ring0, head);
        let d0: Descriptor = mem
            .read_obj(q.desc.unchecked_add(16 * u64::from(head)))
            .unwrap();
        assert_eq!(d0.addr(), a);
        assert!(d0.has_next() && !d0.is_write_only());
        let d1: Descriptor = mem
            .read_obj(q.desc.unchecked_add(16 * u64::from(d0.next())))
            .unwrap();
        assert_eq!(d1.addr(), b);
        assert!(!d1.has_next() && d1.is_write_only());

        assert!(q.pop_used(&mem).unwrap().is_none());
        // Play the device: one used entry for `head`, 24 bytes written.
        mem.write_obj(u32::from(head), q.used.unchecked_add(4))
            .unwrap();
        mem.write_obj(24u32, q.used.unchecked_add(8)).unwrap();
        mem.store(1u16, q.used.unchecked_add(2), Ordering::Release)
            .unwrap();
        let used = q.pop_used(&mem).unwrap().unwrap();
        assert_eq!((used.id, used.len, used.known), (u32::from(head), 24, true));
        assert_eq!(q.free(), 8);
        assert_eq!(q.outstanding(), 0);
    }

    #[test]
    fn kicks_only_when_the_device_wants_them() {
        let (ram, mut q) = setup();
        let mem = ram.mem().clone();
        q.notify(&mem).unwrap();
        assert_eq!(q.kick.read().unwrap(), 1);
        mem.store(USED_F_NO_NOTIFY, q.used, Ordering::Release)
            .unwrap();
        q.notify(&mem).unwrap();
        assert!(q.kick.read().is_err(), "no kick expected");
        assert_eq!(q.kicks, 1);
    }

    #[test]
    fn refuses_chains_longer_than_the_free_descriptors() {
        let (mut ram, mut q) = setup();
        let a = ram.alloc(64, 8).unwrap();
        let mem = ram.mem().clone();
        let buf = Buf {
            addr: a,
            len: 8,
            writable: false,
        };
        assert!(q.push(&mem, &[buf; 9]).is_err());
        assert!(q.push(&mem, &[]).is_err());
        assert_eq!(q.free(), 8);
    }
}
