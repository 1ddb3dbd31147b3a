//! What the mount table counts while it serves: per mount and per FUSE operation, requests,
//! errors and a latency histogram; bytes read; for images, chunk loads and verification
//! failures. Counting is lock-free (atomics); a [`MetricsSnapshot`] is a plain, serializable
//! copy that the API renders as JSON or Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in seconds (the last bucket is unbounded).
pub const LATENCY_BOUNDS_SECONDS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1,
    1.0,
];

const BUCKETS: usize = LATENCY_BOUNDS_SECONDS.len() + 1;

/// The FUSE operations the table counts, by the name metrics give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Symlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Statfs,
    Release,
    Fsync,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Flush,
    Opendir,
    Readdir,
    Releasedir,
    Fsyncdir,
    Access,
    Create,
    Readdirplus,
    Fallocate,
    Lseek,
    /// Anything else (locks, ioctl, copy_file_range...).
    Other,
}

impl Op {
    /// Every operation, in the order metrics list them.
    pub const ALL: [Op; 33] = [
        Op::Lookup,
        Op::Forget,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Symlink,
        Op::Mknod,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Rename,
        Op::Link,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Statfs,
        Op::Release,
        Op::Fsync,
        Op::Setxattr,
        Op::Getxattr,
        Op::Listxattr,
        Op::Removexattr,
        Op::Flush,
        Op::Opendir,
        Op::Readdir,
        Op::Releasedir,
        Op::Fsyncdir,
        Op::Access,
        Op::Create,
        Op::Readdirplus,
        Op::Fallocate,
        Op::Lseek,
        Op::Other,
    ];

    /// The label value (`lookup`, `read`...).
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Forget => "forget",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Symlink => "symlink",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Statfs => "statfs",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Setxattr => "setxattr",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Removexattr => "removexattr",
            Op::Flush => "flush",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Releasedir => "releasedir",
            Op::Fsyncdir => "fsyncdir",
            Op::Access => "access",
            Op::Create => "create",
            Op::Readdirplus => "readdirplus",
            Op::Fallocate => "fallocate",
            Op::Lseek => "lseek",
            Op::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one operation.
#[derive(Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

/// Live counters of one mount (or of the table's own directories).
pub struct MountCounters {
    ops: [OpCounters; Op::ALL.len()],
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
}

impl Default for MountCounters {
    fn default() -> Self {
        MountCounters {
            ops: std::array::from_fn(|_| OpCounters::default()),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }
}

impl MountCounters {
    /// Records one request of `op` that took `elapsed` and failed or not.
    pub fn record(&self, op: Op, elapsed: Duration, failed: bool) {
        let c = &self.ops[op.index()];
        c.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS_SECONDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS - 1);
        c.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        c.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Adds `n` bytes served by READ.
    pub fn add_read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` bytes taken by WRITE.
    pub fn add_written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Ordering::Relaxed);
    }

    /// A copy of the counters: operations never requested are left out.
    pub fn snapshot(&self) -> (Vec<OpMetrics>, u64, u64) {
        let ops = Op::ALL
            .iter()
            .filter_map(|&op| {
                let c = &self.ops[op.index()];
                let requests = c.requests.load(Ordering::Relaxed);
                (requests > 0).then(|| OpMetrics {
                    op,
                    requests,
                    errors: c.errors.load(Ordering::Relaxed),
                    latency: Histogram {
                        counts: c
                            .buckets
                            .iter()
                            .map(|b| b.load(Ordering::Relaxed))
                            .collect(),
                        sum_seconds: c.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                    },
                })
            })
            .collect();
        (
            ops,
            self.bytes_read.load(Ordering::Relaxed),
            self.bytes_written.load(Ordering::Relaxed),
        )
    }
}

/// Everything counted, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Seconds since the table was created.
    pub uptime_seconds: f64,
    /// Mounts that succeeded, ever.
    pub mounts_total: u64,
    /// Unmounts that succeeded, ever.
    pub umounts_total: u64,
    /// Mount requests refused or failed.
    pub mount_failures_total: u64,
    /// The chunk store every image of the daemon shares.
    pub chunk_store: ChunkStoreMetrics,
    /// Requests to the table's own directories (the paths leading to mount points).
    pub pseudo: MountMetrics,
    /// One entry per live mount, by mount point.
    pub mounts: Vec<MountMetrics>,
}

/// Counters of one mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountMetrics {
    /// Where it is mounted (`/` for the table's own directories).
    pub mountpoint: String,
    /// `passthrough_fs` or `puzzlefs` (or `pseudo`).
    pub fs_type: String,
    /// What was mounted, as the request named it.
    pub source: String,
    /// The slot that numbers its inodes.
    pub slot: u8,
    /// The slot's generation when it was mounted.
    pub generation: u16,
    /// Per operation, those requested at least once.
    pub ops: Vec<OpMetrics>,
    /// Bytes returned by READ.
    pub bytes_read: u64,
    /// Bytes taken by WRITE.
    pub bytes_written: u64,
    /// Image counters (images only).
    pub image: Option<ImageMetrics>,
}

/// Counters of one FUSE operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpMetrics {
    /// Which operation.
    pub op: Op,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// How long the file system took to answer.
    pub latency: Histogram,
}

/// A latency histogram over [`LATENCY_BOUNDS_SECONDS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Requests per bucket (not cumulative): `counts[i]` took at most
    /// `LATENCY_BOUNDS_SECONDS[i]` and more than the bound before; the last one, longer.
    pub counts: Vec<u64>,
    /// Total time of every request counted, in seconds.
    pub sum_seconds: f64,
}

/// Counters of an image mount's reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageMetrics {
    /// Chunk reads served from the chunk store.
    pub chunk_hits: u64,
    /// Chunk reads that had to load the chunk.
    pub chunk_misses: u64,
    /// Chunks read from their blob, verified and decompressed.
    pub chunk_loads: u64,
    /// Bytes those loads produced (decompressed).
    pub chunk_bytes_loaded: u64,
    /// Blobs whose sha256 did not match their digest.
    pub digest_failures: u64,
    /// Blobs whose fs-verity measurement did not match the image's record.
    pub fs_verity_failures: u64,
    /// Other load failures (missing blob, corrupt compression...).
    pub load_failures: u64,
    /// Heap bytes the opened image's inode table holds (most of what a mount costs in
    /// memory; mounts of one image share it).
    #[serde(default)]
    pub metadata_bytes: u64,
}

/// Counters of the shared chunk store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkStoreMetrics {
    /// Bytes it may hold.
    pub capacity_bytes: u64,
    /// Bytes it holds.
    pub used_bytes: u64,
    /// Chunks it holds.
    pub chunks: u64,
    /// Lookups that found their chunk.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Chunks stored.
    pub inserts: u64,
    /// Chunks dropped to make room.
    pub evictions: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_the_right_bucket() {
        let c = MountCounters::default();
        c.record(Op::Read, Duration::from_nanos(4_000), false);
        c.record(Op::Read, Duration::from_micros(10), true);
        c.record(Op::Read, Duration::from_secs(3), false);
        c.record(Op::Lookup, Duration::from_micros(200), false);
        c.add_read(4096);
        let (ops, read, written) = c.snapshot();
        assert_eq!((read, written), (4096, 0));
        assert_eq!(ops.len(), 2, "only the operations requested");
        let r = ops.iter().find(|o| o.op == Op::Read).unwrap();
        assert_eq!((r.requests, r.errors), (3, 1));
        assert_eq!(r.latency.counts.len(), LATENCY_BOUNDS_SECONDS.len() + 1);
        assert_eq!(r.latency.counts[0], 1, "4 us <= 5 us");
        assert_eq!(r.latency.counts[1], 1, "10 us <= 10 us");
        assert_eq!(
            *r.latency.counts.last().unwrap(),
            1,
            "3 s: unbounded bucket"
        );
        assert!((r.latency.sum_seconds - 3.000_014).abs() < 1e-9);
        let l = ops.iter().find(|o| o.op == Op::Lookup).unwrap();
        assert_eq!(l.latency.counts[5], 1, "200 us <= 250 us");
    }

    #[test]
    fn op_list_matches_the_enum() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
        let json = serde_json::to_string(&Op::Readdirplus).unwrap();
        assert_eq!(json, "\"readdirplus\"");
        assert_eq!(Op::Readdirplus.name(), "readdirplus");
    }
}
