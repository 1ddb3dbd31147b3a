//! The mount table: PuzzleFS images and pass-through directories mounted at run time under
//! one tree the guest sees, each in a numbered slot that makes its inode numbers a pure
//! function of (slot, generation, the file system's own inode). Knows nothing of vhost-user:
//! the API drives it, the daemon serves it.
//!
//! [`MountTable`] is a fuse-backend-rs `FileSystem`: its root is a tree of its own read-only
//! directories (`pseudo`), leading to mount points; each mount is a [`Backend`] in a slot
//! (`inode`), and `dispatch` routes every request to the file system owning its inode.

mod backend;
mod dispatch;
mod error;
mod inode;
mod journal;
mod metrics;
mod open;
mod path;
mod pseudo;
mod spec;
mod table;
mod xattr_names;

pub use backend::Backend;
pub use error::{ErrorClass, MountError};
pub use inode::{SlotId, MAX_INNER_INODE, MAX_MOUNTS};
pub use journal::{Event, Journal};
pub use metrics::{
    ChunkStoreMetrics, Histogram, ImageMetrics, MetricsSnapshot, MountCounters, MountMetrics, Op,
    OpMetrics, LATENCY_BOUNDS_SECONDS,
};
pub use open::{cache_timeout, passthrough_config, MountDefaults, Mounter};
pub use path::Mountpoint;
pub use spec::{ImageRef, ImageSpec, MountSpec, PassthroughSpec};
pub use table::{MountInfo, MountLabel, MountTable, Reopened, Restored, PSEUDO_TIMEOUT};

#[cfg(test)]
mod tests;
