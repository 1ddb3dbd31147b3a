//! [`Backend`]: what the table needs of a file system it mounts, beyond fuse-backend-rs's
//! `FileSystem`.

use fuse_backend_rs::api::filesystem::FileSystem;

use super::ImageMetrics;
use crate::format::Digest;

/// A file system the table can mount. Inode 1 (FUSE's root id) is its root.
pub trait Backend: FileSystem<Inode = u64, Handle = u64> + Send + Sync {
    /// Whether a request with `opcode` on `inode` is answered without waiting on I/O;
    /// `read` holds a READ's (offset, size). Callers use it to keep slow requests off threads
    /// that must stay responsive.
    fn is_quick(&self, opcode: u32, inode: u64, read: Option<(u64, u32)>) -> bool {
        let _ = (opcode, inode, read);
        false
    }

    /// Whether the guest's `trusted.*` extended attributes are stored as `user.virtiofs.*`
    /// ones (see `xattr_names.rs`): for host directories passed through.
    fn maps_trusted_xattrs(&self) -> bool {
        false
    }

    /// The manifest an image was opened from (images only): a restore opens it again by
    /// this digest.
    fn manifest(&self) -> Option<Digest> {
        None
    }

    /// Counters of an image's reads (images only).
    fn image_metrics(&self) -> Option<ImageMetrics> {
        None
    }
}
