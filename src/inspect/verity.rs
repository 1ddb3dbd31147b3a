//! fs-verity bookkeeping: check the fs-verity digests an image records against its stored
//! blobs, and turn the kernel's fs-verity on for every file of an image
//! (`puzzlefs enable-fs-verity`).

use serde::Serialize;

use super::check::parallel;
use crate::chunk::fs_verity_digest;
use crate::format::Digest;
use crate::oci::{OciDir, OciError, VerityProblem, MAX_MANIFEST_BYTES, MEDIA_TYPE_ROOTFS};
use crate::reader::{
    DataFile, Image, OpenOptions, ReaderError, MAX_BLOB_BYTES, MAX_METADATA_BYTES, MAX_PACK_BYTES,
};

/// What `enable-fs-verity` did.
#[derive(Debug, Clone, Serialize)]
pub struct VerityReport {
    /// The tag.
    pub tag: String,
    /// fs-verity digest of the image manifest, hex: what `--fs-verity` pins.
    pub root_hash: String,
    /// Files (manifest, config, metadata, data blobs) that now have fs-verity on.
    pub files: u64,
    /// Of those, how many this run turned on (the rest already were).
    pub newly_enabled: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Turns fs-verity on for every file image `tag` reads, after checking, before changing
/// anything, that each file's contents give the fs-verity digest the image records (and the
/// manifest gives `root`, when given). Data blobs come first and the manifest last, so a
/// manifest with fs-verity on means its whole image has it.
pub fn enable_fs_verity(
    oci: &OciDir,
    tag: &str,
    root: Option<&[u8; 32]>,
) -> Result<VerityReport, ReaderError> {
    let plan = plan(oci, tag, root)?;
    let mut report = VerityReport {
        tag: tag.to_string(),
        root_hash: hex::encode(
            plan.last()
                .map(|(_, v)| v)
                .expect("plan ends with the manifest"),
        ),
        files: 0,
        newly_enabled: 0,
        bytes: 0,
    };
    for (digest, verity) in &plan {
        if oci.enable_blob_verity(digest, verity)? {
            report.newly_enabled += 1;
        }
        report.files += 1;
        report.bytes += oci.blob_size(digest).unwrap_or(0);
    }
    Ok(report)
}

/// Every file of the image with the fs-verity digest it must measure to, each one checked
/// against the stored bytes: data blobs, metadata, config, then the manifest.
fn plan(
    oci: &OciDir,
    tag: &str,
    root: Option<&[u8; 32]>,
) -> Result<Vec<(Digest, [u8; 32])>, ReaderError> {
    let desc = oci.resolve(tag)?;
    let manifest_verity = fs_verity_digest(&oci.read_blob(&desc.digest, MAX_MANIFEST_BYTES)?);
    if let Some(root) = root {
        if *root != manifest_verity {
            return Err(mismatch(desc.digest, root, &manifest_verity).into());
        }
    }
    let image = Image::open_descriptor(oci, &desc, OpenOptions::default())?;
    let mut plan = Vec::new();
    let files = image.table().data_files();
    for (file, result) in files
        .iter()
        .zip(parallel(&files, |f| data_blob_verity(oci, f)))
    {
        plan.push((file.digest, result?));
    }
    for layer in &image.manifest().layers {
        if layer.media_type == MEDIA_TYPE_ROOTFS {
            let recorded = layer.fs_verity().ok_or_else(|| {
                ReaderError::NoVerityDigest(format!("the metadata blob {}", layer.digest))
            })?;
            let bytes = oci.read_blob(&layer.digest, MAX_METADATA_BYTES)?;
            let actual = fs_verity_digest(&bytes);
            if actual != recorded {
                return Err(mismatch(layer.digest, &recorded, &actual).into());
            }
            plan.push((layer.digest, recorded));
        }
    }
    let config = &image.manifest().config;
    let config_bytes = oci.read_blob(&config.digest, MAX_MANIFEST_BYTES)?;
    plan.push((config.digest, fs_verity_digest(&config_bytes)));
    plan.push((desc.digest, manifest_verity));
    Ok(plan)
}

/// The fs-verity digest a data blob records, checked against its stored bytes (whose sha256
/// is checked too).
pub(super) fn data_blob_verity(oci: &OciDir, blob: &DataFile) -> Result<[u8; 32], ReaderError> {
    let recorded = blob
        .verity
        .ok_or_else(|| ReaderError::NoVerityDigest(format!("blob {}", blob.digest)))?;
    let limit = if blob.pack {
        MAX_PACK_BYTES
    } else {
        MAX_BLOB_BYTES
    };
    let actual = fs_verity_digest(&oci.read_blob(&blob.digest, limit)?);
    if actual != recorded {
        return Err(mismatch(blob.digest, &recorded, &actual).into());
    }
    Ok(recorded)
}

fn mismatch(digest: Digest, expected: &[u8; 32], actual: &[u8; 32]) -> OciError {
    OciError::Verity {
        digest,
        problem: VerityProblem::Mismatch {
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        },
    }
}
