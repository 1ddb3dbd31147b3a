//! A file system wrapper for proving that one stuck request does not hold up the others:
//! reads of the file named `slow` wait until the guest looks up `release`; until a slow read
//! has started, lookups of `slow-started` answer ENOENT. Everything else is passed through.
//! Its `Triage` sends reads to the workers and serves the rest on the queue threads.

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{stat64, FsOptions, OpenOptions};
use fuse_backend_rs::api::filesystem::{Context, Entry, FileSystem, ZeroCopyWriter};

/// The wrapper; see the module doc.
pub struct Gate<F> {
    inner: F,
    slow_inode: AtomicU64,
    started: AtomicBool,
    released: Mutex<bool>,
    cond: Condvar,
    /// Set when a slow read gave up waiting (the test then fails).
    pub gave_up: AtomicBool,
}

/// Longest a slow read waits for the guest's release (only to end a broken run).
const GATE_DEADLINE: Duration = Duration::from_secs(300);

impl<F> Gate<F> {
    pub fn new(inner: F) -> Self {
        Gate {
            inner,
            slow_inode: AtomicU64::new(0),
            started: AtomicBool::new(false),
            released: Mutex::new(false),
            cond: Condvar::new(),
            gave_up: AtomicBool::new(false),
        }
    }

    fn wait_for_release(&self) {
        self.started.store(true, Ordering::SeqCst);
        let end = Instant::now() + GATE_DEADLINE;
        let mut released = self.released.lock().unwrap();
        while !*released {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.gave_up.store(true, Ordering::SeqCst);
                return;
            }
            released = self.cond.wait_timeout(released, left).unwrap().0;
        }
    }
}

/// Reads go to the daemon's workers (a slow one must not hold up the rest); everything else
/// is served on the queue thread, so the test also covers requests served there while a read
/// is stuck in a worker.
impl<F> puzzlefs_virtiofsd::daemon::Triage for Gate<F> {
    fn is_quick(&self, opcode: u32, _: u64, _: Option<(u64, u32)>) -> bool {
        opcode != fuse_backend_rs::abi::fuse_abi::Opcode::Read as u32
    }
}

#[allow(clippy::too_many_arguments)]
impl<F: FileSystem<Inode = u64, Handle = u64>> FileSystem for Gate<F> {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        self.inner.init(capable)
    }
    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        match name.to_bytes() {
            b"release" => {
                *self.released.lock().unwrap() = true;
                self.cond.notify_all();
            }
            b"slow-started" if !self.started.load(Ordering::SeqCst) => {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            _ => {}
        }
        let entry = self.inner.lookup(ctx, parent, name)?;
        if name.to_bytes() == b"slow" {
            self.slow_inode.store(entry.inode, Ordering::SeqCst);
        }
        Ok(entry)
    }
    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        self.inner.forget(ctx, inode, count)
    }
    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        self.inner.batch_forget(ctx, requests)
    }
    fn getattr(&self, ctx: &Context, inode: u64, h: Option<u64>) -> io::Result<(stat64, Duration)> {
        self.inner.getattr(ctx, inode, h)
    }
    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        self.inner.open(ctx, inode, flags, fuse_flags)
    }
    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        if inode == self.slow_inode.load(Ordering::SeqCst) && offset == 0 {
            self.wait_for_release();
        }
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }
    fn flush(&self, ctx: &Context, inode: u64, handle: u64, owner: u64) -> io::Result<()> {
        self.inner.flush(ctx, inode, handle, owner)
    }
    fn release(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        handle: u64,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
    }
    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        self.inner.access(ctx, inode, mask)
    }
}
