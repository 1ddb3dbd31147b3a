//! Blobs written by a build that has not committed yet.
//!
//! New blobs go to a private directory inside the layout; only a commit moves them into
//! `blobs/sha256/` and then updates `index.json`. A build that fails or is cancelled drops the
//! staging directory, leaving the layout exactly as it was, and a concurrent build never
//! depends on blobs that might still be withdrawn.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Mutex;

use super::dir::public_file;
use super::{Descriptor, ImageManifest, OciDir, OciError};
use crate::format::Digest;

/// A build's uncommitted blobs.
pub struct Staging<'a> {
    oci: &'a OciDir,
    dir: tempfile::TempDir,
    staged: Mutex<HashSet<Digest>>,
}

impl<'a> Staging<'a> {
    /// Starts staging into `oci`.
    pub fn new(oci: &'a OciDir) -> Result<Self, OciError> {
        let dir = tempfile::Builder::new()
            .prefix(".puzzlefs-build-")
            .tempdir_in(oci.path())
            .map_err(|e| OciError::io(oci.path(), e))?;
        Ok(Staging {
            oci,
            dir,
            staged: Mutex::new(HashSet::new()),
        })
    }

    /// Stages a blob unless the layout or this staging area already has it.
    /// Returns whether it was new.
    pub fn put(&self, digest: &Digest, data: &[u8]) -> Result<bool, OciError> {
        if self.oci.blob_size(digest) == Some(data.len() as u64) {
            return Ok(false);
        }
        self.put_replacing(digest, data)
    }

    /// Stages a blob even if the layout has a file of that name (found damaged): committing
    /// replaces it. Returns whether it was new to this staging area.
    pub fn put_replacing(&self, digest: &Digest, data: &[u8]) -> Result<bool, OciError> {
        if !self
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*digest)
        {
            return Ok(false);
        }
        let path = self.dir.path().join(digest.hex());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(public_file().mode())
            .open(&path)
            .map_err(|e| OciError::io(&path, e))?;
        f.write_all(data).map_err(|e| OciError::io(&path, e))?;
        Ok(true)
    }

    /// Moves staged blobs into the layout, then writes the manifest and tags it.
    pub fn commit(self, manifest: &ImageManifest, tag: &str) -> Result<Descriptor, OciError> {
        super::validate_tag(tag)?;
        let staged = self.staged.into_inner().unwrap_or_else(|p| p.into_inner());
        // Renames relative to both directories: no path walk per blob.
        let open_dir = |p: &std::path::Path| fs::File::open(p).map_err(|e| OciError::io(p, e));
        let from_dir = open_dir(self.dir.path())?;
        let to_dir = open_dir(&self.oci.blobs_dir())?;
        for digest in &staged {
            let name = digest.hex();
            rustix::fs::renameat(&from_dir, &name, &to_dir, &name)
                .map_err(|e| OciError::io(self.oci.blob_path(digest), e.into()))?;
        }
        self.oci.commit_manifest(manifest, tag)
    }
}
