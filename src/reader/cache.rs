//! Verified, decompressed chunk contents, kept by blob digest under a byte budget.
//!
//! Keyed by digest rather than by image so one cache can serve every image a process opens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::format::Digest;

/// Default budget: enough for the working set of a guest booting from an image, small enough
/// to keep a daemon's footprint low.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

const SHARDS: usize = 16;

struct Shard {
    map: HashMap<Digest, (Arc<[u8]>, u64)>,
    bytes: usize,
    tick: u64,
}

/// A sharded LRU of chunk contents.
pub struct ChunkCache {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("budget", &(self.shard_budget * SHARDS))
            .field("hits", &self.hits.load(Ordering::Relaxed))
            .field("misses", &self.misses.load(Ordering::Relaxed))
            .finish()
    }
}

impl ChunkCache {
    /// A cache holding at most about `budget` bytes (0 disables caching).
    pub fn new(budget: usize) -> Self {
        ChunkCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        bytes: 0,
                        tick: 0,
                    })
                })
                .collect(),
            shard_budget: budget / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, d: &Digest) -> &Mutex<Shard> {
        &self.shards[d.0[0] as usize % SHARDS]
    }

    /// Cached contents, or what `load` produces (which is then cached).
    pub fn get_or_load<E>(
        &self,
        digest: &Digest,
        load: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<[u8]>, E> {
        {
            let mut shard = self.shard(digest).lock().unwrap_or_else(|p| p.into_inner());
            shard.tick += 1;
            let tick = shard.tick;
            if let Some((data, used)) = shard.map.get_mut(digest) {
                *used = tick;
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(data.clone());
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let data: Arc<[u8]> = load()?.into();
        if data.len() <= self.shard_budget {
            let mut shard = self.shard(digest).lock().unwrap_or_else(|p| p.into_inner());
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
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_budget_and_prefers_recent() {
        let cache = ChunkCache::new(SHARDS * 100);
        // Same shard: first byte equal.
        let key = |i: u8| {
            let mut d = [0u8; 32];
            d[1] = i;
            Digest(d)
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
    fn oversized_entries_are_returned_not_kept() {
        let cache = ChunkCache::new(0);
        let d = Digest::of(b"x");
        assert_eq!(
            cache
                .get_or_load(&d, || Ok::<_, ()>(vec![1; 10]))
                .unwrap()
                .len(),
            10
        );
        assert_eq!(cache.bytes(), 0);
    }
}
