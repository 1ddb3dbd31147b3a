//! Verified, decompressed chunk contents, kept by [`ChunkKey`] under a byte budget.
//!
//! Keyed by what the contents are a function of (the blob's digest and whether it is stored
//! compressed), not by image, so one cache can serve every image a process opens and no image
//! can make another read contents decoded differently.
//! A chunk being loaded is loaded once: other threads asking for it wait for that load
//! instead of decompressing it again (reads and read-ahead often want the same chunk).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::ChunkKey;

/// Default budget: enough for the working set of a guest booting from an image, small enough
/// to keep a daemon's footprint low.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

const SHARDS: usize = 16;

/// A chunk's verified contents, shared without copying.
pub type ChunkData = Arc<Vec<u8>>;

#[derive(Default)]
struct Shard {
    map: HashMap<ChunkKey, (ChunkData, u64)>,
    loading: HashSet<ChunkKey>,
    bytes: usize,
    tick: u64,
}

#[derive(Default)]
struct Slot {
    shard: Mutex<Shard>,
    loaded: Condvar,
}

/// A sharded LRU of chunk contents.
pub struct HeapChunkCache {
    slots: Box<[Slot]>,
    shard_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for HeapChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapChunkCache")
            .field("budget", &(self.shard_budget * SHARDS))
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish()
    }
}

/// Ends a load, successful or not (even by panic), and wakes the threads waiting for it.
struct LoadingGuard<'a> {
    slot: &'a Slot,
    digest: ChunkKey,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.slot.shard).loading.remove(&self.digest);
        self.slot.loaded.notify_all();
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HeapChunkCache {
    /// A cache holding at most about `budget` bytes (0 disables caching).
    pub fn new(budget: usize) -> Self {
        HeapChunkCache {
            slots: (0..SHARDS).map(|_| Slot::default()).collect(),
            shard_budget: budget / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn slot(&self, d: &ChunkKey) -> &Slot {
        &self.slots[d.digest.0[0] as usize % SHARDS]
    }

    /// Whether `key` is cached or being loaded.
    pub fn has(&self, digest: &ChunkKey) -> bool {
        let shard = lock(&self.slot(digest).shard);
        shard.map.contains_key(digest) || shard.loading.contains(digest)
    }

    /// Cached contents, or what `load` produces (which is then cached). While one thread
    /// loads a digest, others asking for it wait for the result instead of loading it too.
    pub fn get_or_load<E>(
        &self,
        digest: &ChunkKey,
        load: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<ChunkData, E> {
        let slot = self.slot(digest);
        {
            let mut shard = lock(&slot.shard);
            loop {
                shard.tick += 1;
                let tick = shard.tick;
                if let Some((data, used)) = shard.map.get_mut(digest) {
                    *used = tick;
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(data.clone());
                }
                if !shard.loading.contains(digest) {
                    break;
                }
                // Another thread is loading it; if that load fails, this thread tries.
                shard = slot.loaded.wait(shard).unwrap_or_else(|p| p.into_inner());
            }
            shard.loading.insert(*digest);
        }
        let _loading = LoadingGuard {
            slot,
            digest: *digest,
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        let data = Arc::new(load()?);
        if data.len() <= self.shard_budget {
            let mut shard = lock(&slot.shard);
            shard.tick += 1;
            let tick = shard.tick;
            if let Some((old, _)) = shard.map.insert(*digest, (data.clone(), tick)) {
                shard.bytes -= old.len();
            }
            shard.bytes += data.len();
            while shard.bytes > self.shard_budget {
                let Some(victim) = shard
                    .map
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(d, _)| *d)
                else {
                    break;
                };
                if let Some((old, _)) = shard.map.remove(&victim) {
                    shard.bytes -= old.len();
                }
            }
        }
        Ok(data)
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.slots.iter().map(|s| lock(&s.shard).bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_budget_and_prefers_recent() {
        let cache = HeapChunkCache::new(SHARDS * 100);
        // Same shard: first byte equal.
        let key = |i: u8| {
            let mut d = [0u8; 32];
            d[1] = i;
            ChunkKey::new(crate::format::Digest(d), false)
        };
        for i in 0..5 {
            let v = cache
                .get_or_load(&key(i), || Ok::<_, ()>(vec![i; 40]))
                .unwrap();
            assert_eq!(&v[..], &[i; 40][..]);
            // Touch key 0 so it stays.
            cache.get_or_load(&key(0), || Err(())).unwrap();
        }
        assert!(cache.bytes() <= 100);
        assert!(
            cache.get_or_load(&key(0), || Err(())).is_ok(),
            "recently used entry kept"
        );
        assert!(
            cache.get_or_load(&key(1), || Err(())).is_err(),
            "old entry evicted"
        );
        let (hits, misses) = cache.stats();
        assert!(hits >= 6 && misses >= 5);
    }

    #[test]
    fn a_chunk_being_loaded_is_not_loaded_again() {
        let cache = HeapChunkCache::new(1 << 20);
        let d = ChunkKey::new(crate::format::Digest::of(b"shared"), true);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let cache = &cache;
            let first = s.spawn(move || {
                cache.get_or_load(&d, || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    Ok::<_, ()>(vec![7; 10])
                })
            });
            started_rx.recv().unwrap();
            let second = s.spawn(move || cache.get_or_load(&d, || Ok::<_, ()>(vec![9; 10])));
            go_tx.send(()).unwrap();
            assert_eq!(&first.join().unwrap().unwrap()[..], &[7; 10][..]);
            assert_eq!(&second.join().unwrap().unwrap()[..], &[7; 10][..]);
        });
        assert_eq!(cache.stats().1, 1, "loaded once");
    }

    #[test]
    fn a_failed_load_is_retried_by_the_next_caller() {
        let cache = HeapChunkCache::new(1 << 20);
        let d = ChunkKey::new(crate::format::Digest::of(b"flaky"), false);
        assert!(cache.get_or_load(&d, || Err::<Vec<u8>, _>("bad")).is_err());
        assert!(!cache.has(&d));
        assert_eq!(
            cache.get_or_load(&d, || Ok::<_, ()>(vec![1])).unwrap()[..],
            [1]
        );
        assert!(cache.has(&d));
    }

    #[test]
    fn oversized_entries_are_returned_not_kept() {
        let cache = HeapChunkCache::new(0);
        let d = ChunkKey::new(crate::format::Digest::of(b"x"), false);
        assert_eq!(
            cache
                .get_or_load(&d, || Ok::<_, ()>(vec![1; 10]))
                .unwrap()
                .len(),
            10
        );
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn compressed_and_plain_contents_of_one_digest_are_kept_apart() {
        let cache = HeapChunkCache::new(1 << 20);
        let digest = crate::format::Digest::of(b"stored bytes");
        let plain = ChunkKey::new(digest, false);
        let compressed = ChunkKey::new(digest, true);
        cache.get_or_load(&plain, || Ok::<_, ()>(vec![1])).unwrap();
        assert!(!cache.has(&compressed));
        let got = cache
            .get_or_load(&compressed, || Ok::<_, ()>(vec![2]))
            .unwrap();
        assert_eq!(got[..], [2], "not the plain contents");
        assert_eq!(cache.get_or_load(&plain, || Err(())).unwrap()[..], [1]);
    }
}
