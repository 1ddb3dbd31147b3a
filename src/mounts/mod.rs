//! The mount table: PuzzleFS images and pass-through directories mounted at run time under
//! one tree the guest sees, each in a numbered slot that makes its inode numbers a pure
//! function of (slot, generation, the file system's own inode). Knows nothing of vhost-user:
//! the API drives it, the daemon serves it.

mod metrics;

pub use metrics::{
    ChunkStoreMetrics, Histogram, ImageMetrics, MetricsSnapshot, MountCounters, MountMetrics, Op,
    OpMetrics, LATENCY_BOUNDS_SECONDS,
};
