//! Verified chunk contents kept outside the heap, in a private file, so that a warm read is one
//! `preadv` from the file straight into guest memory.
//!
//! The file is a memfd, or with `--cache-dir` an unnamed O_TMPFILE in that directory (page
//! cache the kernel can write back and reclaim). Only chunks whose digest the reader verified
//! (and that it decompressed) are stored, and nothing but this process can reach the file (it
//! has no path, mode 0600, close-on-exec), so what is read back is what was verified. The
//! file is a ring of `budget` bytes: chunks are
//! written at a moving head and the oldest ones are evicted when it wraps (first in, first
//! out). A reader pins the chunk it copies from; a pinned chunk is never overwritten (a chunk
//! that would need its space is then served without being stored).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::ChunkKey;

struct Slot {
    offset: u64,
    len: u64,
    /// Readers copying from the slot right now.
    pins: u32,
    /// The contents are written (a slot being filled is neither read nor evicted).
    ready: bool,
}

#[derive(Default)]
struct Index {
    slots: HashMap<ChunkKey, Slot>,
    /// Chunks a reader is loading (see [`FileChunkCache::pin_or_claim`]).
    loading: HashSet<ChunkKey>,
    /// Slot offsets to keys, to find what a new chunk's range overlaps.
    by_offset: BTreeMap<u64, ChunkKey>,
    head: u64,
    /// Bytes in ready slots.
    used: u64,
}

/// A bounded, file-backed store of verified chunks, keyed by [`ChunkKey`].
pub struct FileChunkCache {
    file: File,
    budget: u64,
    index: Mutex<Index>,
    /// Signalled when a claimed load ends.
    loaded: Condvar,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
}

/// What a [`FileChunkCache`] holds and has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileChunkCacheStats {
    /// Bytes it may hold.
    pub capacity: u64,
    /// Bytes of chunks it holds.
    pub used: u64,
    /// Chunks it holds.
    pub chunks: u64,
    /// Lookups that found their chunk stored.
    pub hits: u64,
    /// Lookups that did not (and loaded it).
    pub misses: u64,
    /// Chunks stored.
    pub inserts: u64,
    /// Chunks dropped to make room.
    pub evictions: u64,
}

/// A stored chunk that stays in place until dropped.
pub(crate) struct Pinned<'a> {
    store: &'a FileChunkCache,
    key: ChunkKey,
    offset: u64,
    len: u64,
}

impl Pinned<'_> {
    /// The file holding the chunk.
    pub(crate) fn file(&self) -> &File {
        &self.store.file
    }

    /// Where the chunk starts in [`Self::file`].
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The chunk's length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// What [`FileChunkCache::pin_or_claim`] found.
pub(crate) enum Lookup<'a> {
    /// The chunk, stored and pinned.
    Stored(Pinned<'a>),
    /// Not stored: this reader loads it (and inserts it) while others wait.
    Load(Claim<'a>),
}

/// The right to load a chunk; readers of the same chunk wait until it is dropped.
pub(crate) struct Claim<'a> {
    store: &'a FileChunkCache,
    key: ChunkKey,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store.lock().loading.remove(&self.key);
        self.store.loaded.notify_all();
    }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.store.lock().slots.get_mut(&self.key) {
            slot.pins -= 1;
        }
    }
}

impl FileChunkCache {
    /// The store file's descriptor.
    pub(crate) fn fd(&self) -> std::os::unix::io::RawFd {
        use std::os::unix::io::AsRawFd;
        self.file.as_raw_fd()
    }

    /// A store of at most `budget` bytes in a memfd, or in an unnamed file in `dir`. Its
    /// pages are only allocated as chunks arrive.
    pub fn new(budget: u64, dir: Option<&Path>) -> io::Result<FileChunkCache> {
        let file = match dir {
            None => File::from(rustix::fs::memfd_create(
                "pfs-chunks",
                rustix::fs::MemfdFlags::CLOEXEC,
            )?),
            Some(dir) => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
                .open(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?,
        };
        file.set_len(budget)?;
        Ok(FileChunkCache {
            file,
            budget,
            index: Mutex::new(Index::default()),
            loaded: Condvar::new(),
            counts: Counts::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every update leaves the index consistent before anything can panic.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` is stored and readable.
    pub(crate) fn contains(&self, key: &ChunkKey) -> bool {
        self.lock().slots.get(key).is_some_and(|s| s.ready)
    }

    /// The stored chunk `key`, pinned; or, if it is not stored, the claim to load it. While
    /// one reader holds the claim, others asking for the same chunk wait for it to end, then
    /// find the chunk stored: concurrent reads of a chunk not stored yet (the requests for
    /// the consecutive ranges of one file, at depth) load and verify it once, not once each.
    pub(crate) fn pin_or_claim(&self, key: &ChunkKey) -> Lookup<'_> {
        let mut index = self.lock();
        loop {
            if let Some(slot) = index.slots.get_mut(key).filter(|s| s.ready) {
                slot.pins += 1;
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                return Lookup::Stored(Pinned {
                    store: self,
                    key: *key,
                    offset: slot.offset,
                    len: slot.len,
                });
            }
            if index.loading.insert(*key) {
                self.counts.misses.fetch_add(1, Ordering::Relaxed);
                return Lookup::Load(Claim {
                    store: self,
                    key: *key,
                });
            }
            index = self.loaded.wait(index).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Stores `data` (the verified contents of chunk `key`). Returns false when it was not
    /// stored: too big, empty, or its space is in use by readers.
    pub(crate) fn insert(&self, key: &ChunkKey, data: &[u8]) -> bool {
        let len = data.len() as u64;
        let offset = {
            let mut index = self.lock();
            if index.slots.contains_key(key) {
                return true;
            }
            if len == 0 || len > self.budget {
                return false;
            }
            let mut start = index.head;
            if start + len > self.budget {
                start = 0;
            }
            let Some(evicted) = index.evict(start, start + len) else {
                return false;
            };
            self.counts.evictions.fetch_add(evicted, Ordering::Relaxed);
            index.slots.insert(
                *key,
                Slot {
                    offset: start,
                    len,
                    pins: 0,
                    ready: false,
                },
            );
            index.by_offset.insert(start, *key);
            index.head = start + len;
            start
        };
        let written = self.file.write_all_at(data, offset);
        let mut index = self.lock();
        match written {
            Ok(()) => {
                if let Some(slot) = index.slots.get_mut(key) {
                    slot.ready = true;
                }
                index.used += len;
                self.counts.inserts.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                log::warn!("chunk store: cannot write {len} bytes: {e}");
                index.slots.remove(key);
                index.by_offset.remove(&offset);
                false
            }
        }
    }

    /// What the store holds and has done.
    pub fn stats(&self) -> FileChunkCacheStats {
        let (used, chunks) = {
            let index = self.lock();
            (
                index.used,
                index.slots.values().filter(|s| s.ready).count() as u64,
            )
        };
        let c = &self.counts;
        FileChunkCacheStats {
            capacity: self.budget,
            used,
            chunks,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
        }
    }
}

impl Index {
    /// Removes every slot overlapping `[start, end)` and returns how many, unless one of them
    /// is pinned or being filled: then nothing is removed and the answer is None.
    fn evict(&mut self, start: u64, end: u64) -> Option<u64> {
        let overlapping: Vec<(u64, ChunkKey)> = self
            .by_offset
            .range(..end)
            .rev()
            .map(|(o, d)| (*o, *d))
            .take_while(|(_, d)| {
                let s = &self.slots[d];
                s.offset + s.len > start
            })
            .collect();
        if overlapping.iter().any(|(_, d)| {
            let s = &self.slots[d];
            s.pins > 0 || !s.ready
        }) {
            return None;
        }
        let count = overlapping.len() as u64;
        for (offset, key) in overlapping {
            self.by_offset.remove(&offset);
            if let Some(slot) = self.slots.remove(&key) {
                self.used -= slot.len;
            }
        }
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored chunk, pinned, or None (the claim to load it dropped at once).
    fn pinned<'a>(store: &'a FileChunkCache, key: &ChunkKey) -> Option<Pinned<'a>> {
        match store.pin_or_claim(key) {
            Lookup::Stored(p) => Some(p),
            Lookup::Load(_) => None,
        }
    }
    use crate::format::Digest;

    fn key(data: &[u8]) -> ChunkKey {
        ChunkKey::new(Digest::of(data), false)
    }

    fn read(p: &Pinned<'_>) -> Vec<u8> {
        let mut buf = vec![0; p.len() as usize];
        p.file().read_exact_at(&mut buf, p.offset()).unwrap();
        buf
    }

    #[test]
    fn a_cache_dir_holds_an_unnamed_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FileChunkCache::new(1 << 20, Some(dir.path())).unwrap();
        let d = key(b"x");
        assert!(store.insert(&d, &[9; 4096]));
        assert_eq!(read(&pinned(&store, &d).unwrap()), vec![9; 4096]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no name");
        let mode = store.file.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let missing = dir.path().join("missing");
        let e = FileChunkCache::new(1 << 20, Some(&missing)).err().unwrap();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn stores_and_reads_back() {
        let store = FileChunkCache::new(1000, None).unwrap();
        let d = key(b"a");
        assert!(!store.contains(&d));
        assert!(pinned(&store, &d).is_none());
        assert!(store.insert(&d, &[7; 300]));
        assert!(store.contains(&d));
        let p = pinned(&store, &d).unwrap();
        assert_eq!(read(&p), vec![7; 300]);
        assert!(!store.insert(&key(b"big"), &[1; 1001]), "over budget");
        assert!(!store.insert(&key(b"empty"), &[]));
    }

    #[test]
    fn wraps_around_evicting_the_oldest() {
        let store = FileChunkCache::new(1000, None).unwrap();
        let keys: Vec<ChunkKey> = (0..5u8).map(|i| key(&[i])).collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(store.insert(k, &[i as u8; 400]));
        }
        // 0 and 1 filled [0, 800); 2 wrapped to 0 and evicted 0; 3 took [400, 800) evicting
        // 1; 4 wrapped again and evicted 2.
        assert!(!store.contains(&keys[0]));
        assert!(!store.contains(&keys[1]));
        assert!(!store.contains(&keys[2]));
        assert_eq!(read(&pinned(&store, &keys[3]).unwrap()), vec![3; 400]);
        assert_eq!(read(&pinned(&store, &keys[4]).unwrap()), vec![4; 400]);
        let stats = store.stats();
        assert_eq!((stats.chunks, stats.used), (2, 800));
        assert_eq!((stats.inserts, stats.evictions), (5, 3));
    }

    #[test]
    fn pinned_chunks_are_never_overwritten() {
        let store = FileChunkCache::new(1000, None).unwrap();
        let a = key(b"a");
        let b = key(b"b");
        let c = key(b"c");
        assert!(store.insert(&a, &[1; 600]));
        let held = pinned(&store, &a).unwrap();
        assert!(store.insert(&b, &[2; 300]));
        // c must wrap to 0, over the pinned a: refused, a intact.
        assert!(!store.insert(&c, &[3; 500]));
        assert_eq!(read(&held), vec![1; 600]);
        drop(held);
        assert!(store.insert(&c, &[3; 500]));
        assert!(!store.contains(&a));
        assert_eq!(read(&pinned(&store, &c).unwrap()), vec![3; 500]);
        assert_eq!(read(&pinned(&store, &b).unwrap()), vec![2; 300]);
    }

    #[test]
    fn compressed_and_plain_contents_of_one_digest_are_kept_apart() {
        let store = FileChunkCache::new(1000, None).unwrap();
        let digest = Digest::of(b"stored bytes");
        let plain = ChunkKey::new(digest, false);
        let compressed = ChunkKey::new(digest, true);
        assert!(store.insert(&plain, &[1; 100]));
        assert!(!store.contains(&compressed), "another key");
        assert!(pinned(&store, &compressed).is_none());
        assert!(store.insert(&compressed, &[2; 300]));
        assert_eq!(read(&pinned(&store, &plain).unwrap()), vec![1; 100]);
        assert_eq!(read(&pinned(&store, &compressed).unwrap()), vec![2; 300]);
        let stats = store.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.chunks, stats.used),
            (2, 1, 2, 400)
        );
        assert_eq!(stats.capacity, 1000);
    }

    /// Readers of a chunk nobody stored yet: one loads it, the others wait and then find it
    /// stored, so it is loaded once however many ask at once.
    #[test]
    fn concurrent_readers_of_a_missing_chunk_load_it_once() {
        use std::sync::atomic::AtomicUsize;
        let store = FileChunkCache::new(1 << 20, None).unwrap();
        let k = key(b"shared");
        let loads = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| match store.pin_or_claim(&k) {
                    Lookup::Stored(p) => assert_eq!(read(&p), vec![5; 4096]),
                    Lookup::Load(claim) => {
                        loads.fetch_add(1, Ordering::Relaxed);
                        // A slow load: the other readers arrive meanwhile.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        assert!(store.insert(&k, &[5; 4096]));
                        drop(claim);
                    }
                });
            }
        });
        assert_eq!(loads.load(Ordering::Relaxed), 1);
        // A claim dropped without storing lets the next reader load.
        let other = key(b"failed");
        match store.pin_or_claim(&other) {
            Lookup::Load(claim) => drop(claim),
            Lookup::Stored(_) => panic!("never stored"),
        }
        assert!(matches!(store.pin_or_claim(&other), Lookup::Load(_)));
    }
}
