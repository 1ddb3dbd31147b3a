//! [`PuzzleFs`]: the read-only `FileSystem` over an image, for any FUSE transport.

use std::collections::HashSet;
use std::ffi::CStr;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    ZeroCopyWriter,
};

use super::attr::{check_access, stat, Totals};
use super::config::FsConfig;
use super::errno::OpError;
use super::push::Pusher;
use super::{seek, xattr};
use crate::format::Digest;
use crate::reader::{Image, NodeData};

/// A read-only FUSE file system serving one image. FUSE inode numbers are node ids plus
/// one, so the root is `FUSE_ROOT_ID`; `st_ino` is the inode number stored in the image.
/// Nodes never change or go away, so there is no lookup counting and no per-open state.
pub struct PuzzleFs {
    pub(super) image: Arc<Image>,
    pub(super) config: FsConfig,
    pub(super) totals: Totals,
    pub(super) reported: Mutex<HashSet<Digest>>,
    pub(super) push: Option<Pusher>,
}

impl std::fmt::Debug for PuzzleFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PuzzleFs")
            .field("manifest", &self.image.manifest_digest())
            .field("config", &self.config)
            .finish()
    }
}

impl PuzzleFs {
    /// A file system serving `image` with `config`.
    pub fn new(image: Arc<Image>, config: FsConfig) -> Self {
        let totals = Totals::of(image.table());
        PuzzleFs {
            image,
            config,
            totals,
            reported: Mutex::new(HashSet::new()),
            push: None,
        }
    }

    /// Also pushes the files after one a client starts reading into the kernel's page cache
    /// through `fuse`, the mount's `/dev/fuse` (see `push.rs`).
    pub(super) fn push_through(mut self, fuse: std::fs::File) -> io::Result<Self> {
        self.push = Some(Pusher::start(self.image.clone(), fuse)?);
        Ok(self)
    }

    /// The image served.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// The settings in use.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }
}

impl FileSystem for PuzzleFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // Never WRITEBACK_CACHE: nothing is ever written. MAX_PAGES allows 1 MiB requests.
        let mut want = FsOptions::ASYNC_READ | FsOptions::PARALLEL_DIROPS | FsOptions::MAX_PAGES;
        // Always READDIRPLUS, never the AUTO heuristic: attributes cost nothing to serve
        // here, and a plain READDIR past the first buffer would cost one LOOKUP per entry.
        if self.config.readdirplus {
            want |= FsOptions::DO_READDIRPLUS;
        }
        if self.config.cache.caches_data() {
            want |= FsOptions::CACHE_SYMLINKS;
        }
        if self.config.zero_message_open {
            want |= FsOptions::ZERO_MESSAGE_OPEN | FsOptions::ZERO_MESSAGE_OPENDIR;
        }
        Ok(capable & want)
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        Ok(self.do_lookup(parent, name)?)
    }

    fn forget(&self, _ctx: &Context, _inode: u64, _count: u64) {}

    fn batch_forget(&self, _ctx: &Context, _requests: Vec<(u64, u64)>) {}

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        let (_, node) = self.node(inode)?;
        Ok((stat(node), self.config.attr_timeout))
    }

    fn readlink(&self, _ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        match self.image.table().symlink_target(self.node(inode)?.1) {
            Some(target) => Ok(target.to_vec()),
            None => Err(OpError::Invalid.into()),
        }
    }

    fn open(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        // Opens for writing never get here: `ReadOnly` answers them.
        Ok((None, self.do_open(inode)?, None))
    }

    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        Ok(self.do_read(inode, w, size, offset)?)
    }

    /// Nothing is ever written, so there is nothing to flush: `ENOSYS` makes the kernel stop
    /// sending FLUSH on every close.
    fn flush(&self, _: &Context, _: u64, _: u64, _: u64) -> io::Result<()> {
        Err(OpError::NotSupported.into())
    }

    fn fsync(&self, _: &Context, inode: u64, _: bool, _: u64) -> io::Result<()> {
        self.node(inode)?;
        Ok(())
    }

    fn release(
        &self,
        _: &Context,
        _: u64,
        _: u32,
        _: u64,
        _: bool,
        _: bool,
        _: Option<u64>,
    ) -> io::Result<()> {
        Ok(())
    }

    fn statfs(&self, _ctx: &Context, inode: u64) -> io::Result<statvfs64> {
        self.node(inode)?;
        Ok(self.totals.statvfs())
    }

    fn getxattr(
        &self,
        _ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        Ok(xattr::get(self.xattrs(inode)?, name.to_bytes(), size)?)
    }

    fn listxattr(&self, _ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        Ok(xattr::list(self.xattrs(inode)?, size)?)
    }

    fn opendir(
        &self,
        _ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        Ok((None, self.do_opendir(inode, flags)?))
    }

    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        Ok(self.list(inode, offset, |d, _| add_entry(d))?)
    }

    fn readdirplus(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        Ok(self.list(inode, offset, |d, item| {
            // Node id 0 tells the kernel not to instantiate `.` and `..` from this reply.
            let e = if item.dot {
                Entry::default()
            } else {
                self.entry(item.node)
            };
            add_entry(d, e)
        })?)
    }

    fn fsyncdir(&self, _: &Context, inode: u64, _: bool, _: u64) -> io::Result<()> {
        self.node(inode)?;
        Ok(())
    }

    fn releasedir(&self, _: &Context, _: u64, _: u32, _: u64) -> io::Result<()> {
        Ok(())
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        let (_, node) = self.node(inode)?;
        Ok(check_access(node, ctx.uid, ctx.gid, mask)?)
    }

    fn lseek(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let (_, node) = self.node(inode)?;
        if !matches!(node.data, NodeData::File(_)) {
            return Err(OpError::Invalid.into());
        }
        Ok(seek::seek(node.size, offset, whence)?)
    }
}
