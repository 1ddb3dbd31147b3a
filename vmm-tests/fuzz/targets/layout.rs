//! The image layout the fs_ops target serves its fuzzed metadata from: chunk blobs of a small
//! real tree, built once per process (also the source of the seed corpora).

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use puzzlefs_virtiofsd::builder::{build, BuildOptions, ZstdOptions};
use puzzlefs_virtiofsd::format::Digest;
use puzzlefs_virtiofsd::oci::{
    empty_config, Descriptor, ImageManifest, OciDir, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_ROOTFS,
};

/// The layout every iteration adds its metadata to: chunk blobs of a small real tree.
pub fn layout() -> &'static (tempfile::TempDir, OciDir) {
    static LAYOUT: OnceLock<(tempfile::TempDir, OciDir)> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        std::fs::write(src.join("d/big"), &data).unwrap();
        std::fs::write(src.join("small"), b"small\n").unwrap();
        std::os::unix::fs::symlink("d/big", src.join("link")).unwrap();
        let oci = OciDir::create(&tmp.path().join("oci")).unwrap();
        let plain = BuildOptions::default();
        build(&src, &oci, "plain", &plain).unwrap();
        let zstd = BuildOptions {
            zstd: Some(ZstdOptions::default()),
            ..BuildOptions::default()
        };
        build(&src, &oci, "zstd", &zstd).unwrap();
        (tmp, oci)
    })
}

/// The tree the layout's images were built from.
pub fn source_tree() -> PathBuf {
    layout().0.path().join("src")
}

/// A metadata blob and its manifest added to the layout, removed again on drop.
pub struct Staged {
    /// The manifest naming the metadata.
    pub descriptor: Descriptor,
    oci: OciDir,
    written: Vec<Digest>,
    // Staging is serialized: two threads staging the same blob would remove it under each other.
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        for digest in &self.written {
            let _ = std::fs::remove_file(self.oci.blob_path(digest));
        }
    }
}

/// Stores `meta` and a manifest naming it, until the returned value is dropped.
pub fn stage(oci: &OciDir, meta: &[u8]) -> Staged {
    static TURN: Mutex<()> = Mutex::new(());
    let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut written = Vec::new();
    let digest = Digest::of(meta);
    if oci.write_blob(&digest, meta).unwrap() {
        written.push(digest);
    }
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_MANIFEST.into()),
        config: empty_config().0,
        layers: vec![Descriptor::new(
            MEDIA_TYPE_ROOTFS,
            digest,
            meta.len() as u64,
        )],
        annotations: None,
        extra: Default::default(),
    };
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let md = Digest::of(&bytes);
    if oci.write_blob(&md, &bytes).unwrap() {
        written.push(md);
    }
    let desc = Descriptor {
        media_type: MEDIA_TYPE_MANIFEST.into(),
        digest: md,
        size: bytes.len() as u64,
        annotations: None,
        data: None,
        platform: None,
        extra: Default::default(),
    };
    Staged {
        descriptor: desc,
        oci: oci.clone(),
        written,
        _turn: turn,
    }
}
