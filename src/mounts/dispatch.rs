//! The table as a FUSE file system: each request goes to the file system that owns its
//! inode, in that file system's own numbering, and its answer comes back in the table's;
//! requests on the table's own directories are answered here (they are read-only).

use std::ffi::CStr;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, CreateIn, FsOptions, SetattrValid};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileLock, FileSystem, GetxattrReply, ListxattrReply, OpenOptions,
    ZeroCopyReader, ZeroCopyWriter,
};

use super::metrics::Op;
use super::pseudo::Child;
use super::table::{MountTable, Mounted, Target, PSEUDO_TIMEOUT};
use super::xattr_names;

/// What the table asks for at FUSE_INIT (of what the guest offers), the same whatever is
/// mounted later: no write-back cache, no zero-message opens (pass-through needs its opens),
/// no DAX; READDIRPLUS always.
const WANTED: FsOptions = FsOptions::ASYNC_READ
    .union(FsOptions::PARALLEL_DIROPS)
    .union(FsOptions::BIG_WRITES)
    .union(FsOptions::ASYNC_DIO)
    .union(FsOptions::ATOMIC_O_TRUNC)
    .union(FsOptions::MAX_PAGES)
    .union(FsOptions::DO_READDIRPLUS)
    .union(FsOptions::CACHE_SYMLINKS);

/// FUSE's root inode, in every mounted file system too.
const FS_ROOT: u64 = 1;

/// The most bytes a list of extended attribute names takes (the kernel's XATTR_LIST_MAX).
const XATTR_LIST_MAX: u32 = 65536;

/// The name to pass to a mount for the guest's extended attribute `name`.
fn host_name<'a>(m: &Mounted, name: &'a CStr) -> std::borrow::Cow<'a, CStr> {
    if m.fs.maps_trusted_xattrs() {
        xattr_names::to_host(name)
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// (inode, lookup count) pairs to forget.
type Forgets = Vec<(u64, u64)>;

/// Who answers a request.
enum To<'a> {
    Pseudo(u64),
    Mount(&'a Mounted, u64),
}

fn err<T>(errno: i32) -> io::Result<T> {
    Err(io::Error::from_raw_os_error(errno))
}

/// The kernel takes ENOSYS as "never ask again" for the whole connection: one mount must not
/// switch an operation off for every other (an image without xattrs, for a pass-through
/// directory with them). Only locks keep it: ENOSYS there makes the guest lock locally, which
/// is what every mount wants.
fn per_call(op: Op, e: io::Error) -> io::Error {
    match (op, e.raw_os_error()) {
        (Op::Other, _) => e,
        (_, Some(libc::ENOSYS)) => io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        _ => e,
    }
}

/// For requests that may do nothing: ENOSYS (nothing to do) is success.
fn nothing_to_do(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Ok(()),
        other => other,
    }
}

impl MountTable {
    /// Routes a request on `ino`, counts it as `op` for whoever answers it, and answers it
    /// with `pseudo` (one of the table's directories) or `mounted` (a mount and the inode in
    /// its own numbering).
    fn dispatch<T>(
        &self,
        ino: u64,
        op: Op,
        pseudo: impl FnOnce(u64) -> io::Result<T>,
        mounted: impl FnOnce(&Mounted, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        self.dispatch_to(ino, op, |to| match to {
            To::Pseudo(dir) => pseudo(dir),
            To::Mount(m, inner) => mounted(m, inner),
        })
    }

    /// [`MountTable::dispatch`] with one closure, for requests whose arguments both answers
    /// would borrow.
    fn dispatch_to<T>(
        &self,
        ino: u64,
        op: Op,
        f: impl FnOnce(To<'_>) -> io::Result<T>,
    ) -> io::Result<T> {
        let start = Instant::now();
        let out = match self.route(ino) {
            Ok(Target::Mount(m, inner)) => {
                let out = f(To::Mount(&m, inner)).map_err(|e| per_call(op, e));
                m.counters.record(op, start.elapsed(), out.is_err());
                return out;
            }
            Ok(Target::Pseudo(dir)) => f(To::Pseudo(dir)),
            Err(e) => Err(e),
        };
        self.pseudo_counters
            .record(op, start.elapsed(), out.is_err());
        out
    }

    /// Like [`MountTable::dispatch`] for requests naming two inodes (rename, link): both
    /// must be in one mount (`EXDEV` otherwise); the table's directories change for nobody.
    fn dispatch2<T>(
        &self,
        a: u64,
        b: u64,
        op: Op,
        mounted: impl FnOnce(&Mounted, u64, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let start = Instant::now();
        let out = match (self.route(a), self.route(b)) {
            (Ok(Target::Mount(m, x)), Ok(Target::Mount(n, y))) if std::ptr::eq(&*m, &*n) => {
                let out = mounted(&m, x, y).map_err(|e| per_call(op, e));
                m.counters.record(op, start.elapsed(), out.is_err());
                return out;
            }
            (Ok(Target::Mount(..)), Ok(Target::Mount(..))) => err(libc::EXDEV),
            (Err(e), _) | (_, Err(e)) => Err(e),
            _ => err(libc::EROFS),
        };
        self.pseudo_counters
            .record(op, start.elapsed(), out.is_err());
        out
    }

    fn pseudo_lookup(&self, ctx: &Context, dir: u64, name: &CStr) -> io::Result<Entry> {
        let child = match name.to_bytes() {
            b"." => Child::Dir(dir),
            b".." => Child::Dir(self.tree().parent(dir).unwrap_or(dir)),
            n => match self.tree().lookup(dir, n) {
                Some(child) => child,
                None => return err(libc::ENOENT),
            },
        };
        self.child_entry(ctx, child)
    }

    /// Lists table directory `dir` from `offset`: `.`, `..`, then its names in order; each
    /// item's offset is its position plus one.
    fn pseudo_list(
        &self,
        ctx: &Context,
        dir: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let (parent, entries) = {
            let tree = self.tree();
            (
                tree.parent(dir).unwrap_or(dir),
                tree.entries(dir).unwrap_or_default(),
            )
        };
        let dots = [
            (b".".to_vec(), Child::Dir(dir)),
            (b"..".to_vec(), Child::Dir(parent)),
        ];
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, child)) in dots.into_iter().chain(entries).enumerate().skip(skip) {
            let dot = i < 2;
            let entry = match self.child_entry(ctx, child) {
                Ok(e) => e,
                // A mount that went away in between: leave it out.
                Err(_) => continue,
            };
            let d = DirEntry {
                ino: entry.inode,
                offset: i as u64 + 1,
                type_: libc::DT_DIR as u32,
                name: &name,
            };
            // Node id 0 tells the kernel not to instantiate `.` and `..` from this reply.
            let e = if dot { Entry::default() } else { entry };
            if add(d, e)? == 0 {
                break;
            }
        }
        Ok(())
    }
}

/// `.` and `..` of a mounted directory get the table's numbers too: `.` its own, `..` at a
/// mount's root the table directory holding it.
fn dot_ino(m: &Mounted, dir: u64, d: &DirEntry) -> io::Result<Option<u64>> {
    match d.name {
        b"." => m.ino_out(dir).map(Some),
        b".." if dir == FS_ROOT => Ok(Some(m.parent)),
        _ => Ok(None),
    }
}

fn pseudo_statfs() -> statvfs64 {
    // SAFETY: statvfs64 is a plain C struct for which all-zero bytes are a valid value.
    let mut st: statvfs64 = unsafe { std::mem::zeroed() };
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_namemax = 255;
    st.f_flag = libc::ST_RDONLY;
    st
}

#[allow(clippy::too_many_arguments)]
impl FileSystem for MountTable {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        let opts = capable & WANTED;
        self.initialised(opts);
        Ok(opts)
    }

    fn destroy(&self) {
        self.destroyed()
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.dispatch(
            parent,
            Op::Lookup,
            |dir| self.pseudo_lookup(ctx, dir, name),
            |m, ino| {
                if ino == FS_ROOT && name.to_bytes() == b".." {
                    // Never above a mount's root: its parent is the table's directory.
                    return Ok(self.pseudo_entry(m.parent));
                }
                m.entry_out(m.fs.lookup(ctx, ino, name)?)
            },
        )
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        if let Ok(Target::Mount(m, ino)) = self.route(inode) {
            m.fs.forget(ctx, ino, count);
        }
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        let mut by_mount: Vec<(Arc<Mounted>, Forgets)> = Vec::new();
        for (inode, count) in requests {
            let Ok(Target::Mount(m, ino)) = self.route(inode) else {
                continue;
            };
            match by_mount.iter_mut().find(|(n, _)| std::ptr::eq(&**n, &*m)) {
                Some((_, list)) => list.push((ino, count)),
                None => by_mount.push((m.into_arc(), vec![(ino, count)])),
            }
        }
        for (m, list) in by_mount {
            m.fs.batch_forget(ctx, list);
        }
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        self.dispatch(
            inode,
            Op::Getattr,
            |dir| Ok((self.pseudo_attr(dir), PSEUDO_TIMEOUT)),
            |m, ino| {
                let (mut st, timeout) = m.fs.getattr(ctx, ino, handle)?;
                st.st_ino = inode;
                Ok((st, timeout))
            },
        )
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        self.dispatch(
            inode,
            Op::Setattr,
            |_| err(libc::EROFS),
            |m, ino| {
                let (mut st, timeout) = m.fs.setattr(ctx, ino, attr, handle, valid)?;
                st.st_ino = inode;
                Ok((st, timeout))
            },
        )
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.dispatch(
            inode,
            Op::Readlink,
            |_| err(libc::EINVAL),
            |m, ino| m.fs.readlink(ctx, ino),
        )
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.dispatch(
            parent,
            Op::Symlink,
            |_| err(libc::EROFS),
            |m, ino| m.entry_out(m.fs.symlink(ctx, linkname, ino, name)?),
        )
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.dispatch(
            parent,
            Op::Mknod,
            |_| err(libc::EROFS),
            |m, ino| m.entry_out(m.fs.mknod(ctx, ino, name, mode, rdev, umask)?),
        )
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.dispatch(
            parent,
            Op::Mkdir,
            |_| err(libc::EROFS),
            |m, ino| m.entry_out(m.fs.mkdir(ctx, ino, name, mode, umask)?),
        )
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.dispatch(
            parent,
            Op::Unlink,
            |_| err(libc::EROFS),
            |m, ino| m.fs.unlink(ctx, ino, name),
        )
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.dispatch(
            parent,
            Op::Rmdir,
            |_| err(libc::EROFS),
            |m, ino| m.fs.rmdir(ctx, ino, name),
        )
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.dispatch2(olddir, newdir, Op::Rename, |m, from, to| {
            m.fs.rename(ctx, from, oldname, to, newname, flags)
        })
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.dispatch2(inode, newparent, Op::Link, |m, ino, parent| {
            m.entry_out(m.fs.link(ctx, ino, parent, newname)?)
        })
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        self.dispatch(
            inode,
            Op::Open,
            |_| err(libc::EISDIR),
            |m, ino| m.fs.open(ctx, ino, flags, fuse_flags),
        )
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.dispatch(
            parent,
            Op::Create,
            |_| err(libc::EROFS),
            |m, ino| {
                let (entry, handle, opts, passthrough) = m.fs.create(ctx, ino, name, args)?;
                Ok((m.entry_out(entry)?, handle, opts, passthrough))
            },
        )
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
        self.dispatch(
            inode,
            Op::Read,
            |_| err(libc::EISDIR),
            |m, ino| {
                let n =
                    m.fs.read(ctx, ino, handle, w, size, offset, lock_owner, flags)?;
                m.counters.add_read(n as u64);
                Ok(n)
            },
        )
    }

    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.dispatch(
            inode,
            Op::Write,
            |_| err(libc::EISDIR),
            |m, ino| {
                let n = m.fs.write(
                    ctx,
                    ino,
                    handle,
                    r,
                    size,
                    offset,
                    lock_owner,
                    delayed_write,
                    flags,
                    fuse_flags,
                )?;
                m.counters.add_written(n as u64);
                Ok(n)
            },
        )
    }

    fn flush(&self, ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Flush,
            |_| Ok(()),
            |m, ino| nothing_to_do(m.fs.flush(ctx, ino, handle, lock_owner)),
        )
    }

    fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Fsync,
            |_| Ok(()),
            |m, ino| nothing_to_do(m.fs.fsync(ctx, ino, datasync, handle)),
        )
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Fallocate,
            |_| err(libc::EROFS),
            |m, ino| m.fs.fallocate(ctx, ino, handle, mode, offset, length),
        )
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
        self.dispatch(
            inode,
            Op::Release,
            |_| Ok(()),
            |m, ino| {
                m.fs.release(ctx, ino, flags, handle, flush, flock_release, lock_owner)
            },
        )
    }

    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<statvfs64> {
        self.dispatch(
            inode,
            Op::Statfs,
            |_| Ok(pseudo_statfs()),
            |m, ino| m.fs.statfs(ctx, ino),
        )
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Setxattr,
            |_| err(libc::EROFS),
            |m, ino| m.fs.setxattr(ctx, ino, &host_name(m, name), value, flags),
        )
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.dispatch(
            inode,
            Op::Getxattr,
            |_| err(libc::ENODATA),
            |m, ino| m.fs.getxattr(ctx, ino, &host_name(m, name), size),
        )
    }

    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        self.dispatch(
            inode,
            Op::Listxattr,
            |_| {
                Ok(if size == 0 {
                    ListxattrReply::Count(0)
                } else {
                    ListxattrReply::Names(Vec::new())
                })
            },
            |m, ino| {
                if !m.fs.maps_trusted_xattrs() {
                    return m.fs.listxattr(ctx, ino, size);
                }
                // The guest's names differ in length from the host's: list them all, then
                // answer the size asked about.
                let names = match m.fs.listxattr(ctx, ino, XATTR_LIST_MAX)? {
                    ListxattrReply::Names(names) => xattr_names::list_to_guest(&names),
                    count => return Ok(count),
                };
                match size {
                    0 => Ok(ListxattrReply::Count(names.len() as u32)),
                    s if names.len() > s as usize => err(libc::ERANGE),
                    _ => Ok(ListxattrReply::Names(names)),
                }
            },
        )
    }

    fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Removexattr,
            |_| err(libc::EROFS),
            |m, ino| m.fs.removexattr(ctx, ino, &host_name(m, name)),
        )
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        self.dispatch(
            inode,
            Op::Opendir,
            |_| Ok((Some(0), OpenOptions::empty())),
            |m, ino| m.fs.opendir(ctx, ino, flags),
        )
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.dispatch_to(inode, Op::Readdir, |to| match to {
            To::Pseudo(dir) => self.pseudo_list(ctx, dir, offset, |d, _| add_entry(d)),
            // Through READDIRPLUS, so that each name's d_ino is the table's inode number (the
            // mounted file system's own readdir knows only its own); the lookups it counts
            // for the names added are given back at once (it gives back the others itself).
            To::Mount(m, dir) => {
                m.fs.readdirplus(ctx, dir, handle, size, offset, &mut |d, e| {
                    let ino = match dot_ino(m, dir, &d)? {
                        Some(ino) => ino,
                        None if e.inode != 0 => m.ino_out(e.inode)?,
                        None => d.ino,
                    };
                    let added = add_entry(DirEntry { ino, ..d })?;
                    if added > 0 && e.inode != 0 {
                        m.fs.forget(ctx, e.inode, 1);
                    }
                    Ok(added)
                })
            }
        })
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.dispatch_to(inode, Op::Readdirplus, |to| match to {
            To::Pseudo(dir) => self.pseudo_list(ctx, dir, offset, &mut *add_entry),
            To::Mount(m, dir) => {
                m.fs.readdirplus(ctx, dir, handle, size, offset, &mut |d, e| {
                    let e = m.entry_out(e)?;
                    let ino = match dot_ino(m, dir, &d)? {
                        Some(ino) => ino,
                        None if e.inode != 0 => e.inode,
                        None => d.ino,
                    };
                    add_entry(DirEntry { ino, ..d }, e)
                })
            }
        })
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Fsyncdir,
            |_| Ok(()),
            |m, ino| nothing_to_do(m.fs.fsyncdir(ctx, ino, datasync, handle)),
        )
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Releasedir,
            |_| Ok(()),
            |m, ino| m.fs.releasedir(ctx, ino, flags, handle),
        )
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Access,
            |_| {
                if mask & libc::W_OK as u32 != 0 {
                    err(libc::EROFS)
                } else {
                    Ok(())
                }
            },
            |m, ino| m.fs.access(ctx, ino, mask),
        )
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.dispatch(
            inode,
            Op::Lseek,
            |_| err(libc::EINVAL),
            |m, ino| m.fs.lseek(ctx, ino, handle, offset, whence),
        )
    }

    fn getlk(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<FileLock> {
        self.dispatch(
            inode,
            Op::Other,
            |_| err(libc::ENOSYS),
            |m, ino| m.fs.getlk(ctx, ino, handle, owner, lock, flags),
        )
    }

    fn setlk(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Other,
            |_| err(libc::ENOSYS),
            |m, ino| m.fs.setlk(ctx, ino, handle, owner, lock, flags),
        )
    }

    fn setlkw(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        self.dispatch(
            inode,
            Op::Other,
            |_| err(libc::ENOSYS),
            |m, ino| m.fs.setlkw(ctx, ino, handle, owner, lock, flags),
        )
    }
}
