//! The read-only FUSE file system over an image, shared by `puzzlefs mount` and the daemon.
//!
//! [`PuzzleFs`] implements the reading side of fuse-backend-rs's `FileSystem` and knows
//! nothing about the transport; [`ReadOnly`] answers every write with `EROFS` (for it and for
//! the daemon's pass-through). The vhost-user-fs daemon serves `ReadOnly<PuzzleFs>` to guests,
//! and [`mount`] serves it on the host through `/dev/fuse`, where it also pushes the files a
//! reader is about to want into the page cache (`push.rs`). Every failure becomes an errno
//! in one place ([`reader_errno`] for reader errors): corrupt data is `EIO`, missing names
//! `ENOENT`, missing xattrs `ENODATA`, and anything that would write `EROFS`.

mod attr;
mod config;
mod dir;
mod errno;
mod error;
mod filesystem;
mod handlers;
mod host_mount;
mod image_fs;
mod push;
mod readonly;
mod seek;
#[cfg(test)]
mod tests;
mod xattr;

pub use config::{CachePolicy, FsConfig, LONG_TIMEOUT, READ_AHEAD_CHUNKS};
pub use errno::reader_errno;
pub use error::FsError;
pub use filesystem::PuzzleFs;
pub use host_mount::{mount, unmount, MountOptions};
pub use image_fs::{ImageFs, ImageReadStats, CHUNK_STORE_BYTES};
pub use readonly::ReadOnly;
