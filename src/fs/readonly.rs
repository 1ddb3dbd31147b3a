//! A thin `FileSystem` wrapper that makes any file system read-only: every call that would
//! change something answers EROFS before reaching the inner file system, opens for writing
//! included; everything else is passed through unchanged.

use std::ffi::CStr;
use std::io;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{
    stat64, statvfs64, CreateIn, FsOptions, OpenOptions, SetattrValid,
};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, GetxattrReply, ListxattrReply, ZeroCopyReader,
    ZeroCopyWriter,
};

use super::errno::OpError;

/// Read-only view of `F`.
pub struct ReadOnly<F> {
    inner: F,
    extra: FsOptions,
}

impl<F> ReadOnly<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        ReadOnly {
            inner,
            extra: FsOptions::empty(),
        }
    }

    /// Also asks for `extra` at FUSE_INIT (when the guest kernel offers them), for inner file
    /// systems that leave out options a read-only server wants, such as `MAX_PAGES`.
    pub fn with_init_options(mut self, extra: FsOptions) -> Self {
        self.extra = extra;
        self
    }

    /// The wrapped file system.
    pub fn inner(&self) -> &F {
        &self.inner
    }
}

fn erofs<T>() -> io::Result<T> {
    Err(OpError::ReadOnly.into())
}

/// Whether open(2) `flags` ask for any kind of write.
fn wants_write(flags: u32) -> bool {
    let flags = flags as i32;
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_TRUNC | libc::O_APPEND) != 0
}

#[allow(clippy::too_many_arguments)]
impl<F: FileSystem> FileSystem for ReadOnly<F> {
    type Inode = F::Inode;
    type Handle = F::Handle;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // No write-back cache (nothing is written) and no DAX (no BACKEND_REQ channel to map
        // file ranges into the guest).
        let opts = self.inner.init(capable)? | (self.extra & capable);
        Ok(opts - FsOptions::WRITEBACK_CACHE - FsOptions::PERFILE_DAX)
    }
    fn destroy(&self) {
        self.inner.destroy()
    }
    fn lookup(&self, ctx: &Context, parent: Self::Inode, name: &CStr) -> io::Result<Entry> {
        self.inner.lookup(ctx, parent, name)
    }
    fn forget(&self, ctx: &Context, inode: Self::Inode, count: u64) {
        self.inner.forget(ctx, inode, count)
    }
    fn batch_forget(&self, ctx: &Context, requests: Vec<(Self::Inode, u64)>) {
        self.inner.batch_forget(ctx, requests)
    }
    fn getattr(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Option<Self::Handle>,
    ) -> io::Result<(stat64, Duration)> {
        self.inner.getattr(ctx, inode, handle)
    }
    fn readlink(&self, ctx: &Context, inode: Self::Inode) -> io::Result<Vec<u8>> {
        self.inner.readlink(ctx, inode)
    }
    fn open(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<Self::Handle>, OpenOptions, Option<u32>)> {
        if wants_write(flags) {
            return erofs();
        }
        self.inner.open(ctx, inode, flags, fuse_flags)
    }
    fn read(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        self.inner
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }
    fn flush(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        lock_owner: u64,
    ) -> io::Result<()> {
        self.inner.flush(ctx, inode, handle, lock_owner)
    }
    fn fsync(&self, _: &Context, _: Self::Inode, _: bool, _: Self::Handle) -> io::Result<()> {
        Ok(())
    }
    fn fsyncdir(&self, _: &Context, _: Self::Inode, _: bool, _: Self::Handle) -> io::Result<()> {
        Ok(())
    }
    fn release(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        flags: u32,
        handle: Self::Handle,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.inner
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
    }
    fn statfs(&self, ctx: &Context, inode: Self::Inode) -> io::Result<statvfs64> {
        let mut st = self.inner.statfs(ctx, inode)?;
        st.f_flag |= libc::ST_RDONLY;
        Ok(st)
    }
    fn getxattr(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.inner.getxattr(ctx, inode, name, size)
    }
    fn listxattr(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        size: u32,
    ) -> io::Result<ListxattrReply> {
        self.inner.listxattr(ctx, inode, size)
    }
    fn opendir(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        flags: u32,
    ) -> io::Result<(Option<Self::Handle>, OpenOptions)> {
        self.inner.opendir(ctx, inode, flags)
    }
    fn readdir(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner
            .readdir(ctx, inode, handle, size, offset, add_entry)
    }
    fn readdirplus(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner
            .readdirplus(ctx, inode, handle, size, offset, add_entry)
    }
    fn releasedir(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        flags: u32,
        handle: Self::Handle,
    ) -> io::Result<()> {
        self.inner.releasedir(ctx, inode, flags, handle)
    }
    fn access(&self, ctx: &Context, inode: Self::Inode, mask: u32) -> io::Result<()> {
        if mask & libc::W_OK as u32 != 0 {
            return erofs();
        }
        self.inner.access(ctx, inode, mask)
    }
    fn lseek(
        &self,
        ctx: &Context,
        inode: Self::Inode,
        handle: Self::Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.inner.lseek(ctx, inode, handle, offset, whence)
    }
    fn id_remap(&self, ctx: &mut Context) -> io::Result<()> {
        self.inner.id_remap(ctx)
    }

    // Everything below would change the file system.
    fn setattr(
        &self,
        _: &Context,
        _: Self::Inode,
        _: stat64,
        _: Option<Self::Handle>,
        _: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        erofs()
    }
    fn symlink(&self, _: &Context, _: &CStr, _: Self::Inode, _: &CStr) -> io::Result<Entry> {
        erofs()
    }
    fn mknod(
        &self,
        _: &Context,
        _: Self::Inode,
        _: &CStr,
        _: u32,
        _: u32,
        _: u32,
    ) -> io::Result<Entry> {
        erofs()
    }
    fn mkdir(&self, _: &Context, _: Self::Inode, _: &CStr, _: u32, _: u32) -> io::Result<Entry> {
        erofs()
    }
    fn unlink(&self, _: &Context, _: Self::Inode, _: &CStr) -> io::Result<()> {
        erofs()
    }
    fn rmdir(&self, _: &Context, _: Self::Inode, _: &CStr) -> io::Result<()> {
        erofs()
    }
    fn rename(
        &self,
        _: &Context,
        _: Self::Inode,
        _: &CStr,
        _: Self::Inode,
        _: &CStr,
        _: u32,
    ) -> io::Result<()> {
        erofs()
    }
    fn link(&self, _: &Context, _: Self::Inode, _: Self::Inode, _: &CStr) -> io::Result<Entry> {
        erofs()
    }
    fn create(
        &self,
        _: &Context,
        _: Self::Inode,
        _: &CStr,
        _: CreateIn,
    ) -> io::Result<(Entry, Option<Self::Handle>, OpenOptions, Option<u32>)> {
        erofs()
    }
    fn write(
        &self,
        _: &Context,
        _: Self::Inode,
        _: Self::Handle,
        _: &mut dyn ZeroCopyReader,
        _: u32,
        _: u64,
        _: Option<u64>,
        _: bool,
        _: u32,
        _: u32,
    ) -> io::Result<usize> {
        erofs()
    }
    fn fallocate(
        &self,
        _: &Context,
        _: Self::Inode,
        _: Self::Handle,
        _: u32,
        _: u64,
        _: u64,
    ) -> io::Result<()> {
        erofs()
    }
    fn setxattr(&self, _: &Context, _: Self::Inode, _: &CStr, _: &[u8], _: u32) -> io::Result<()> {
        erofs()
    }
    fn removexattr(&self, _: &Context, _: Self::Inode, _: &CStr) -> io::Result<()> {
        erofs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_flags() {
        assert!(!wants_write(libc::O_RDONLY as u32));
        assert!(!wants_write((libc::O_RDONLY | libc::O_NOFOLLOW) as u32));
        assert!(wants_write(libc::O_WRONLY as u32));
        assert!(wants_write(libc::O_RDWR as u32));
        assert!(wants_write((libc::O_RDONLY | libc::O_TRUNC) as u32));
        assert!(wants_write((libc::O_WRONLY | libc::O_APPEND) as u32));
    }

    struct Inner;
    impl FileSystem for Inner {
        type Inode = u64;
        type Handle = u64;
        fn open(
            &self,
            _: &Context,
            _: u64,
            _: u32,
            _: u32,
        ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
            Ok((Some(7), OpenOptions::empty(), None))
        }
    }

    #[test]
    fn writes_are_refused_reads_pass() {
        let fs = ReadOnly::new(Inner);
        let ctx = Context::default();
        let errno = |r: io::Result<()>| r.unwrap_err().raw_os_error();
        assert_eq!(
            fs.open(&ctx, 1, libc::O_RDWR as u32, 0)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EROFS)
        );
        assert_eq!(fs.open(&ctx, 1, 0, 0).unwrap().0, Some(7));
        assert_eq!(errno(fs.unlink(&ctx, 1, c"x")), Some(libc::EROFS));
        assert_eq!(
            errno(fs.access(&ctx, 1, libc::W_OK as u32)),
            Some(libc::EROFS)
        );
        assert_eq!(
            fs.mkdir(&ctx, 1, c"d", 0o755, 0)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EROFS)
        );
        assert_eq!(
            errno(fs.setxattr(&ctx, 1, c"user.a", b"v", 0)),
            Some(libc::EROFS)
        );
    }
}
