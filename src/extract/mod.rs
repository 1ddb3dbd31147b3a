//! Recreating an image's tree in a directory, safely against hostile images.
//!
//! How it stays safe by construction:
//! - the tree is built in a fresh private directory (mode 0700) next to DEST and renamed to
//!   DEST only once complete; on any error it is removed, so DEST never holds a partial tree;
//! - every entry is created relative to an open descriptor of its directory, opened with
//!   `O_DIRECTORY | O_NOFOLLOW`; no path is resolved through anything the image created, so
//!   symlinks in the image (absolute, `..` chains, merged-usr `bin -> usr/bin`) are created
//!   and never followed;
//! - names are checked again right before use (no `/`, NUL, `.`, `..`, empty or over 255);
//! - hard links are made with `linkat` between two names inside the staged tree;
//! - file bytes come only from [`Image::read_with`], which hands out verified blob data.
//!
//! Directories get their owner, xattrs, mode and mtime after their contents (post-order), so
//! their mtimes survive. Without root, owners are not restored, `trusted.*`/`security.*`
//! xattrs are skipped (and counted), and device nodes are refused unless
//! [`ExtractOptions::skip_devices`] is set.

mod dest;
mod error;
mod node;
mod sparse;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::FileType;

pub use error::ExtractError;
pub use tree::MAX_DEPTH;

use crate::format::human_bytes;
use crate::reader::{Image, Walk};

/// Extraction settings.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Leave device nodes out instead of failing when not running as root.
    pub skip_devices: bool,
}

/// What an extraction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    /// Regular files created (each hard-linked file once).
    pub files: u64,
    /// Directories created, the root included.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Extra names made with `link` for nodes that have several.
    pub hard_links: u64,
    /// Character and block devices created.
    pub devices: u64,
    /// Fifos and sockets created.
    pub specials: u64,
    /// Bytes of file contents.
    pub bytes: u64,
    /// Bytes actually written (the rest are holes).
    pub bytes_written: u64,
    /// Device names left out because of [`ExtractOptions::skip_devices`].
    pub skipped_devices: u64,
    /// `trusted.*` / `security.*` attributes that could not be set without root.
    pub skipped_xattrs: u64,
    /// Whether owners were restored (only root can).
    pub owners: bool,
}

impl ExtractReport {
    /// One line for humans.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "extracted {} files ({}), {} directories, {} symlinks, {} hard links, \
             {} devices, {} fifos/sockets",
            self.files,
            human_bytes(self.bytes),
            self.dirs,
            self.symlinks,
            self.hard_links,
            self.devices,
            self.specials
        );
        if self.skipped_devices > 0 {
            let _ = write!(s, "; skipped {} device nodes", self.skipped_devices);
        }
        if self.skipped_xattrs > 0 {
            let _ = write!(
                s,
                "; skipped {} trusted/security xattrs (need root)",
                self.skipped_xattrs
            );
        }
        if !self.owners {
            s.push_str("; owners not restored (not root)");
        }
        s
    }
}

/// Extracts `image` into `dest`, which must not exist or be an empty directory (its parent
/// must exist). On error nothing is left at `dest` and nothing was written outside it.
pub fn extract(
    image: &Image,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractReport, ExtractError> {
    let privileged = rustix::process::geteuid().is_root();
    if !privileged && !opts.skip_devices {
        refuse_devices(image)?;
    }
    let staged = dest::Staged::prepare(dest)?;
    let mut ex = tree::Extractor {
        image,
        opts,
        privileged,
        root: staged.root.as_fd(),
        links: HashMap::new(),
        report: ExtractReport {
            owners: privileged,
            ..Default::default()
        },
    };
    let result = ex.run();
    let report = std::mem::take(&mut ex.report);
    drop(ex);
    match result {
        Ok(()) => staged.commit().map(|()| report),
        Err(e) => Err(staged.discard(e)),
    }
}

/// Fails, naming the first device node, before anything is created.
fn refuse_devices(image: &Image) -> Result<(), ExtractError> {
    let table = image.table();
    let is_device = |mode| {
        matches!(
            FileType::from_raw_mode(mode),
            FileType::CharacterDevice | FileType::BlockDevice
        )
    };
    let any = (0..table.len() as u64).any(|id| table.get(id).is_some_and(|n| is_device(n.mode)));
    if !any {
        return Ok(());
    }
    let first = Walk::all(table)
        .find(|item| is_device(table.node(item.node).mode))
        .map(|item| error::show(&item.path))
        .unwrap_or_default();
    Err(ExtractError::DeviceNeedsRoot { path: first })
}
