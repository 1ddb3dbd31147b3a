//! [`ImageFs`]: the daemon's image file system, [`PuzzleFs`] with file reads served from a
//! [`FileChunkCache`]: a chunk is read, verified and decompressed once, then every read of it is
//! one copy from the store into guest memory.

use std::collections::HashSet;
use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    ZeroCopyWriter,
};

use super::{reader_errno, PuzzleFs};
use crate::format::Digest;
use crate::oci::OciError;
use crate::reader::{
    ChunkInfo, ChunkKey, Extent, FileChunkCache, Image, Lookup, NodeData, ReaderError,
};

/// Default size of the store of verified chunks (only what guests read is allocated).
pub const CHUNK_STORE_BYTES: u64 = 512 << 20;

/// [`PuzzleFs`] whose file reads go through a [`FileChunkCache`] (which several images may
/// share); everything else is PuzzleFs's.
pub struct ImageFs {
    fs: Arc<PuzzleFs>,
    store: Arc<FileChunkCache>,
    /// Blobs whose load failed, logged once each.
    reported: Mutex<HashSet<Digest>>,
    counts: ReadCounts,
}

/// What this image's reads did to the chunk store.
#[derive(Default)]
struct ReadCounts {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    bytes_loaded: AtomicU64,
    digest_failures: AtomicU64,
    verity_failures: AtomicU64,
    other_failures: AtomicU64,
}

/// Counters of an image's chunk reads (see [`ImageFs::read_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageReadStats {
    /// Chunk reads served from the store.
    pub hits: u64,
    /// Chunk reads that had to load the chunk.
    pub misses: u64,
    /// Chunks loaded, verified and decompressed.
    pub loads: u64,
    /// Bytes those loads produced.
    pub bytes_loaded: u64,
    /// Loads refused because a blob's sha256 did not match its name.
    pub digest_failures: u64,
    /// Loads refused because a blob's fs-verity state or measurement was wrong.
    pub verity_failures: u64,
    /// Other failed loads (missing blob, corrupt compression...).
    pub other_failures: u64,
}

impl ImageFs {
    /// Serves `fs` (which other `ImageFs` may serve too: it holds no per-client state),
    /// keeping verified chunks in `store`.
    pub fn new(fs: Arc<PuzzleFs>, store: Arc<FileChunkCache>) -> ImageFs {
        ImageFs {
            fs,
            store,
            reported: Mutex::new(HashSet::new()),
            counts: ReadCounts::default(),
        }
    }

    /// What this image's reads did so far.
    pub fn read_stats(&self) -> ImageReadStats {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ImageReadStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            loads: get(&c.loads),
            bytes_loaded: get(&c.bytes_loaded),
            digest_failures: get(&c.digest_failures),
            verity_failures: get(&c.verity_failures),
            other_failures: get(&c.other_failures),
        }
    }

    /// The chunk store's file (the seccomp filter lets the daemon write to it alone).
    pub fn store_fd(&self) -> std::os::unix::io::RawFd {
        self.store.fd()
    }

    fn image(&self) -> &Arc<Image> {
        self.fs.image()
    }

    /// Heap bytes the served image's inode table holds.
    pub fn metadata_bytes(&self) -> u64 {
        self.image().table().heap_bytes() as u64
    }

    /// The manifest of the image served.
    pub fn manifest_digest(&self) -> crate::format::Digest {
        self.image().manifest_digest()
    }

    /// A regular file's extents, or None for anything else (PuzzleFs answers those).
    fn extents(&self, inode: u64) -> Option<&[Extent]> {
        let id = inode.checked_sub(1)?;
        let table = self.image().table();
        match table.get(id)?.data {
            // get() found it, so it is a NodeId.
            NodeData::File(_) => Some(table.extents(id as crate::reader::NodeId)),
            _ => None,
        }
    }

    /// Whether every chunk a read of `size` bytes at `offset` of `inode` needs is stored, so
    /// that serving it cannot block on loading one.
    pub fn read_is_stored(&self, inode: u64, offset: u64, size: u32) -> bool {
        let Some(extents) = self.extents(inode) else {
            return true;
        };
        let blobs = self.image().table().chunks();
        pieces(extents, offset, u64::from(size)).all(|(e, _, _)| {
            self.store
                .contains(&ChunkKey::from(&blobs[e.chunk as usize]))
        })
    }

    /// Copies `[start, stop)` of `blob`'s contents into `w`, from the store or else by loading
    /// (and verifying) the chunk and storing it.
    fn copy(
        &self,
        blob: &ChunkInfo,
        start: u64,
        stop: u64,
        w: &mut dyn ZeroCopyWriter,
    ) -> io::Result<()> {
        let key = ChunkKey::from(blob);
        let claim = match self.store.pin_or_claim(&key) {
            Lookup::Load(claim) => claim,
            Lookup::Stored(pinned) => {
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                if stop > pinned.len() {
                    return Err(self.short_blob(blob, pinned.len(), stop));
                }
                // SAFETY: the store's memfd stays open while `pinned` borrows the store, and
                // ManuallyDrop keeps this File from closing it; positional reads (preadv) do not
                // touch the shared file offset, so other threads using the fd are unaffected.
                let mut file =
                    ManuallyDrop::new(unsafe { File::from_raw_fd(pinned.file().as_raw_fd()) });
                return w.write_all_from(
                    &mut *file,
                    (stop - start) as usize,
                    pinned.offset() + start,
                );
            }
        };
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        let data = self.image().blob_data(blob).map_err(|e| {
            let failures = match &e {
                ReaderError::Oci(OciError::DigestMismatch { .. }) => &self.counts.digest_failures,
                ReaderError::Oci(OciError::Verity { .. }) => &self.counts.verity_failures,
                _ => &self.counts.other_failures,
            };
            failures.fetch_add(1, Ordering::Relaxed);
            let first = self
                .reported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(blob.digest);
            if first {
                log::error!("{e}; reads that need this blob fail");
            }
            io::Error::from_raw_os_error(reader_errno(&e))
        })?;
        if stop > data.len() as u64 {
            return Err(self.short_blob(blob, data.len() as u64, stop));
        }
        self.counts.loads.fetch_add(1, Ordering::Relaxed);
        self.counts
            .bytes_loaded
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.store.insert(&key, &data);
        // Readers waiting for this chunk find it stored now.
        drop(claim);
        w.write_all(&data[start as usize..stop as usize])
    }

    fn short_blob(&self, blob: &ChunkInfo, size: u64, end: u64) -> io::Error {
        log::error!(
            "blob {} holds {size} bytes, a file extent ends at {end}",
            blob.digest
        );
        io::Error::from_raw_os_error(libc::EIO)
    }
}

/// The extents a read of `len` bytes at `offset` touches, each with the range it needs in
/// the extent's blob.
fn pieces(extents: &[Extent], offset: u64, len: u64) -> impl Iterator<Item = (&Extent, u64, u64)> {
    let end = offset.saturating_add(len);
    let first = extents.partition_point(|e| e.file_end() <= offset);
    extents[first..]
        .iter()
        .take_while(move |e| e.file_offset < end)
        .map(move |e| {
            let from = offset.saturating_sub(e.file_offset);
            let to = end.min(e.file_end()) - e.file_offset;
            let at = u64::from(e.chunk_offset);
            (e, at + from, at + to)
        })
}

#[allow(clippy::too_many_arguments)]
impl FileSystem for ImageFs {
    type Inode = u64;
    type Handle = u64;

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
        let Some(extents) = self.extents(inode) else {
            return self
                .fs
                .read(ctx, inode, handle, w, size, offset, lock_owner, flags);
        };
        let len = (size as usize).min(w.available_bytes()) as u64;
        let blobs = self.image().table().chunks();
        let mut done = 0;
        for (e, start, stop) in pieces(extents, offset, len) {
            self.copy(&blobs[e.chunk as usize], start, stop, w)?;
            done += (stop - start) as usize;
        }
        Ok(done)
    }

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        self.fs.init(capable)
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.fs.lookup(ctx, parent, name)
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        self.fs.forget(ctx, inode, count)
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        self.fs.batch_forget(ctx, requests)
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        self.fs.getattr(ctx, inode, handle)
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.fs.readlink(ctx, inode)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        self.fs.open(ctx, inode, flags, fuse_flags)
    }

    fn flush(&self, ctx: &Context, inode: u64, handle: u64, owner: u64) -> io::Result<()> {
        self.fs.flush(ctx, inode, handle, owner)
    }

    fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.fs.fsync(ctx, inode, datasync, handle)
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
        self.fs
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)
    }

    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<statvfs64> {
        self.fs.statfs(ctx, inode)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.fs.getxattr(ctx, inode, name, size)
    }

    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        self.fs.listxattr(ctx, inode, size)
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        self.fs.opendir(ctx, inode, flags)
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
        self.fs.readdir(ctx, inode, handle, size, offset, add_entry)
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
        self.fs
            .readdirplus(ctx, inode, handle, size, offset, add_entry)
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.fs.fsyncdir(ctx, inode, datasync, handle)
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        self.fs.releasedir(ctx, inode, flags, handle)
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        self.fs.access(ctx, inode, mask)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.fs.lseek(ctx, inode, handle, offset, whence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(file_offset: u64, len: u32, chunk: u32, chunk_offset: u32) -> Extent {
        Extent {
            file_offset,
            len,
            chunk,
            chunk_offset,
        }
    }

    #[test]
    fn pieces_clip_reads_to_extents() {
        let extents = [
            extent(0, 100, 0, 50),
            extent(100, 100, 1, 0),
            extent(200, 10, 2, 7),
        ];
        let got: Vec<(u32, u64, u64)> = pieces(&extents, 90, 115)
            .map(|(e, a, b)| (e.chunk, a, b))
            .collect();
        assert_eq!(got, vec![(0, 140, 150), (1, 0, 100), (2, 7, 12)]);
        assert_eq!(pieces(&extents, 210, 10).count(), 0, "past the end");
        assert_eq!(pieces(&extents, 0, 0).count(), 0, "empty read");
        assert_eq!(pieces(&extents, u64::MAX - 1, 10).count(), 0);
    }
}
