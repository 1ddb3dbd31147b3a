//! The inflight region of VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD for split rings: shared memory
//! that the VMM keeps across back-end restarts, where the back end marks every descriptor
//! chain it takes from a ring until it has put it on the used ring, so that a fresh process
//! can take up what a dead one left unanswered.
//!
//! Layout (the vhost-user spec's `QueueRegionSplit`, one per queue, each rounded up to 64
//! bytes): `features: u64, version: u16, desc_num: u16, last_batch_head: u16, used_idx: u16`,
//! then `desc_num` entries `DescStateSplit { inflight: u8, padding: [u8; 5], next: u16,
//! counter: u64 }`, one per descriptor head.
//!
//! Completion order, one chain at a time, so that a crash between any two steps is repaired
//! by [`QueueLog::recover`]: `last_batch_head = head`; the used ring entry and its index are
//! published; `inflight = 0`; `used_idx` = the used ring's index. If the process dies after
//! publishing but before `used_idx` caught up, the two indexes differ and the entry at
//! `last_batch_head` is the one to clear.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};

const HEADER: usize = 16;
const ENTRY: usize = 16;
const ALIGN: usize = 64;
const VERSION: u16 = 1;
/// The most queues a region may describe (vhost-user-fs: hiprio plus at most 63).
const MAX_QUEUES: u16 = 64;
/// The largest split ring.
const MAX_QUEUE_SIZE: u16 = 32768;

/// Bytes of one queue's part of the region.
pub(crate) fn queue_region_size(queue_size: u16) -> usize {
    (HEADER + ENTRY * usize::from(queue_size)).div_ceil(ALIGN) * ALIGN
}

/// What GET_INFLIGHT_FD and SET_INFLIGHT_FD describe (`VhostUserInflight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub mmap_size: u64,
    pub mmap_offset: u64,
    pub num_queues: u16,
    pub queue_size: u16,
}

impl Shape {
    fn check(&self) -> io::Result<usize> {
        let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        if self.num_queues == 0 || self.num_queues > MAX_QUEUES {
            return bad(format!("{} queues", self.num_queues));
        }
        if !self.queue_size.is_power_of_two() || self.queue_size > MAX_QUEUE_SIZE {
            return bad(format!("queue size {}", self.queue_size));
        }
        let needed = usize::from(self.num_queues) * queue_region_size(self.queue_size);
        if self.mmap_size < needed as u64 {
            return bad(format!(
                "{} bytes for {} queues of {} (needs {needed})",
                self.mmap_size, self.num_queues, self.queue_size
            ));
        }
        if !self.mmap_offset.is_multiple_of(4096) {
            return bad(format!("offset {} is not page-aligned", self.mmap_offset));
        }
        Ok(needed)
    }
}

/// A fresh region for GET_INFLIGHT_FD: a sealed-size memfd, every queue's header written
/// (version 1, `desc_num`), every descriptor idle. Returns the file and its shape.
pub(crate) fn create(num_queues: u16, queue_size: u16) -> io::Result<(File, Shape)> {
    let mut shape = Shape {
        mmap_size: 0,
        mmap_offset: 0,
        num_queues,
        queue_size,
    };
    shape.mmap_size = (usize::from(num_queues) * queue_region_size(queue_size)) as u64;
    shape.check()?;
    let fd = rustix::fs::memfd_create(
        "puzzlefs-virtiofsd-inflight",
        rustix::fs::MemfdFlags::CLOEXEC,
    )?;
    let file = File::from(fd);
    file.set_len(shape.mmap_size)?;
    // Mapping it initialises the headers; the mapping goes, the memory stays with the file.
    InflightRegion::map(&file, shape)?;
    Ok((file, shape))
}

/// A mapped inflight region: one [`QueueLog`] per queue.
pub(crate) struct InflightRegion {
    base: NonNull<u8>,
    len: usize,
    queues: Vec<QueueLog>,
}

// SAFETY: the mapping is shared memory that lives as long as the region; every access to it
// goes through atomics (see QueueLog), so any thread may hold and use the region.
unsafe impl Send for InflightRegion {}
// SAFETY: as above: no access through a shared reference is a plain (non-atomic) access.
unsafe impl Sync for InflightRegion {}

impl InflightRegion {
    /// Maps the region the VMM handed over (SET_INFLIGHT_FD) after checking its shape, and
    /// initialises the queues it has never seen (version 0). A queue whose header names
    /// another version or size is refused.
    pub(crate) fn map(file: &File, shape: Shape) -> io::Result<InflightRegion> {
        let len = shape.check()?;
        let file_len = file.metadata()?.len();
        if file_len < shape.mmap_offset.saturating_add(len as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the file holds {file_len} bytes, the region ends at {}",
                    shape.mmap_offset + len as u64
                ),
            ));
        }
        // SAFETY: a new shared mapping of `len` bytes of an open file, at an address the
        // kernel chooses; nothing else in this process refers to that range. The file was
        // checked to cover it (a VMM that shrinks it later can only hurt itself: the process
        // would fault, as it would on guest memory it withdrew).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                shape.mmap_offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        let mut region = InflightRegion {
            base,
            len,
            queues: Vec::with_capacity(usize::from(shape.num_queues)),
        };
        let per_queue = queue_region_size(shape.queue_size);
        for q in 0..usize::from(shape.num_queues) {
            // SAFETY: q * per_queue + per_queue <= len (checked by Shape::check), so the
            // queue's part lies inside the mapping, which outlives the QueueLog (both are
            // owned by the region; the logs are dropped before the mapping).
            let start = unsafe { base.add(q * per_queue) };
            let log = QueueLog {
                base: start,
                desc_num: shape.queue_size,
                counter: AtomicU64::new(0),
                recovered: AtomicBool::new(false),
            };
            log.check_or_init(q)?;
            region.queues.push(log);
        }
        Ok(region)
    }

    /// The log of queue `index`, if the region has that many.
    pub(crate) fn queue(&self, index: usize) -> Option<&QueueLog> {
        self.queues.get(index)
    }
}

impl Drop for InflightRegion {
    fn drop(&mut self) {
        self.queues.clear();
        // SAFETY: unmaps exactly the mapping made in `map`; no QueueLog (the only users of
        // the pointers) is left.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// One queue's part of the region.
pub(crate) struct QueueLog {
    base: NonNull<u8>,
    desc_num: u16,
    /// The next chain's order stamp.
    counter: AtomicU64,
    /// Whether this process took up what an earlier one left (see [`QueueLog::recover`]).
    recovered: AtomicBool,
}

impl QueueLog {
    fn at<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + std::mem::size_of::<T>() <= queue_region_size(self.desc_num));
        debug_assert_eq!(offset % std::mem::align_of::<T>(), 0);
        // SAFETY: every caller passes a field offset of the layout above for a head below
        // `desc_num`, so the atomic lies inside this queue's part of the mapping and is
        // naturally aligned (the mapping is page-aligned, parts are 64-byte multiples); the
        // memory is shared with the VMM, which is why it is only ever accessed atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<T>() }
    }

    fn version(&self) -> &AtomicU16 {
        self.at(8)
    }
    fn desc_count(&self) -> &AtomicU16 {
        self.at(10)
    }
    fn last_batch_head(&self) -> &AtomicU16 {
        self.at(12)
    }
    fn used_idx(&self) -> &AtomicU16 {
        self.at(14)
    }
    fn inflight(&self, head: u16) -> &AtomicU8 {
        self.at(HEADER + ENTRY * usize::from(head))
    }
    fn order(&self, head: u16) -> &AtomicU64 {
        self.at(HEADER + ENTRY * usize::from(head) + 8)
    }

    fn check_or_init(&self, queue: usize) -> io::Result<()> {
        match self.version().load(Ordering::Acquire) {
            0 => {
                self.desc_count().store(self.desc_num, Ordering::Relaxed);
                self.version().store(VERSION, Ordering::Release);
                Ok(())
            }
            VERSION if self.desc_count().load(Ordering::Relaxed) == self.desc_num => Ok(()),
            v => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "queue {queue}: version {v} with {} descriptors (expected version 1 with {})",
                    self.desc_count().load(Ordering::Relaxed),
                    self.desc_num
                ),
            )),
        }
    }

    /// Marks `head` taken from the avail ring. Heads are marked in the order they were
    /// taken.
    pub(crate) fn begin(&self, head: u16) {
        if head >= self.desc_num {
            return;
        }
        let stamp = self.counter.fetch_add(1, Ordering::Relaxed);
        self.order(head).store(stamp, Ordering::Relaxed);
        self.inflight(head).store(1, Ordering::Release);
    }

    /// Answers `head`: `publish` puts it on the used ring and returns the used ring's new
    /// index (None if it could not).
    pub(crate) fn complete(&self, head: u16, publish: impl FnOnce() -> Option<u16>) {
        if head >= self.desc_num {
            publish();
            return;
        }
        self.last_batch_head().store(head, Ordering::SeqCst);
        let used = publish();
        self.inflight(head).store(0, Ordering::SeqCst);
        if let Some(used) = used {
            self.used_idx().store(used, Ordering::SeqCst);
        }
    }

    /// Forgets `head` without answering it: its ring was stopped or reset, the driver that
    /// sent it is gone.
    pub(crate) fn drop_head(&self, head: u16) {
        if head < self.desc_num {
            self.inflight(head).store(0, Ordering::SeqCst);
        }
    }

    /// Whether [`QueueLog::recover`] already ran in this process.
    pub(crate) fn recovered(&self) -> bool {
        self.recovered.load(Ordering::Acquire)
    }

    /// Takes up what an earlier process left, once: repairs the last completion if the
    /// process died in it (`used_idx` is the used ring's index now), and returns the heads
    /// still in flight, oldest first. Later chains are stamped after all of them.
    pub(crate) fn recover(&self, used_idx: u16) -> Vec<u16> {
        if self.recovered.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        if self.used_idx().load(Ordering::SeqCst) != used_idx {
            let last = self.last_batch_head().load(Ordering::SeqCst);
            if last < self.desc_num {
                self.inflight(last).store(0, Ordering::SeqCst);
            }
            self.used_idx().store(used_idx, Ordering::SeqCst);
        }
        let mut left: Vec<(u64, u16)> = (0..self.desc_num)
            .filter(|&h| self.inflight(h).load(Ordering::Acquire) != 0)
            .map(|h| (self.order(h).load(Ordering::Relaxed), h))
            .collect();
        left.sort_unstable();
        let next = left.last().map_or(0, |&(c, _)| c.wrapping_add(1));
        self.counter.store(next, Ordering::Relaxed);
        left.into_iter().map(|(_, h)| h).collect()
    }

    /// Forgets every head (a region that contradicts the ring).
    pub(crate) fn clear(&self) {
        for h in 0..self.desc_num {
            self.inflight(h).store(0, Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(queues: u16, size: u16) -> (File, InflightRegion) {
        let (file, shape) = create(queues, size).unwrap();
        let region = InflightRegion::map(&file, shape).unwrap();
        (file, region)
    }

    fn shape_of(file: &File, num_queues: u16, queue_size: u16) -> Shape {
        Shape {
            mmap_size: file.metadata().unwrap().len(),
            mmap_offset: 0,
            num_queues,
            queue_size,
        }
    }

    #[test]
    fn sizes_follow_the_spec_layout() {
        assert_eq!(queue_region_size(1024), 16 * 1024 + 64);
        assert_eq!(queue_region_size(2), 64);
        assert_eq!(queue_region_size(4), 128);
        let (file, shape) = create(3, 256).unwrap();
        assert_eq!(shape.mmap_size, 3 * queue_region_size(256) as u64);
        assert_eq!(file.metadata().unwrap().len(), shape.mmap_size);
    }

    #[test]
    fn a_later_mapping_sees_what_an_earlier_one_marked() {
        let (file, first) = region(2, 16);
        let shape = shape_of(&file, 2, 16);
        let q = first.queue(1).unwrap();
        for head in [5, 3, 9, 7] {
            q.begin(head);
        }
        q.complete(3, || Some(1));
        drop(first);
        let second = InflightRegion::map(&file, shape).unwrap();
        assert_eq!(second.queue(0).unwrap().recover(0), Vec::<u16>::new());
        let q = second.queue(1).unwrap();
        assert_eq!(q.recover(1), vec![5, 9, 7]);
        assert!(q.recover(1).is_empty(), "recovery happens once");
        // New chains are stamped after the old ones.
        q.begin(3);
        drop(second);
        let third = InflightRegion::map(&file, shape).unwrap();
        assert_eq!(third.queue(1).unwrap().recover(1), vec![5, 9, 7, 3]);
    }

    #[test]
    fn a_completion_cut_short_after_publishing_is_not_answered_twice() {
        let (file, first) = region(1, 8);
        let shape = shape_of(&file, 1, 8);
        let q = first.queue(0).unwrap();
        q.begin(2);
        q.begin(4);
        // The process dies right after publishing head 4 (used index 1): simulate by
        // marking the batch head and leaving inflight set.
        q.last_batch_head().store(4, Ordering::SeqCst);
        drop(first);
        let again = InflightRegion::map(&file, shape).unwrap();
        assert_eq!(again.queue(0).unwrap().recover(1), vec![2]);
        // Died before publishing: the used index did not move, head 4 is still owed.
        drop(again);
        let (file, first) = region(1, 8);
        let q = first.queue(0).unwrap();
        q.begin(4);
        q.last_batch_head().store(4, Ordering::SeqCst);
        drop(first);
        let again = InflightRegion::map(&file, shape).unwrap();
        assert_eq!(again.queue(0).unwrap().recover(0), vec![4]);
    }

    #[test]
    fn shapes_that_do_not_fit_are_refused() {
        let (file, shape) = create(2, 64).unwrap();
        for bad in [
            Shape {
                mmap_size: shape.mmap_size - 1,
                ..shape
            },
            Shape {
                num_queues: 0,
                ..shape
            },
            Shape {
                queue_size: 100,
                ..shape
            },
            Shape {
                mmap_offset: 4096,
                ..shape
            },
            Shape {
                queue_size: 32,
                ..shape
            },
        ] {
            assert!(InflightRegion::map(&file, bad).is_err(), "{bad:?}");
        }
        assert!(create(0, 64).is_err());
        assert!(create(2, 0).is_err());
    }

    #[test]
    fn heads_out_of_range_are_ignored() {
        let (_file, region) = region(1, 8);
        let q = region.queue(0).unwrap();
        q.begin(8);
        q.begin(u16::MAX);
        let mut published = false;
        q.complete(9, || {
            published = true;
            None
        });
        assert!(published);
        q.drop_head(100);
        assert!(q.recover(0).is_empty());
        assert!(region.queue(1).is_none());
    }
}
