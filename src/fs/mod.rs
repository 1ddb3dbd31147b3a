//! The read-only FUSE file system over an image, shared by `puzzlefs mount` and the daemon.

use std::path::Path;
use std::sync::Arc;

use crate::reader::{Image, ReaderError};

/// Host mount settings.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Stay in the foreground.
    pub foreground: bool,
    /// Allow other users.
    pub allow_other: bool,
}

/// Mounts `image` at `mountpoint`.
pub fn mount(
    _image: Arc<Image>,
    _mountpoint: &Path,
    _opts: &MountOptions,
) -> Result<(), ReaderError> {
    Err(ReaderError::BadMetadata(
        "mount: not implemented yet".into(),
    ))
}

/// Unmounts a FUSE mount.
pub fn unmount(_mountpoint: &Path) -> Result<(), ReaderError> {
    Err(ReaderError::BadMetadata(
        "umount: not implemented yet".into(),
    ))
}
