//! Target `oci_json`: index.json and image manifests from an untrusted OCI layout.

use puzzlefs_virtiofsd::oci::{ImageIndex, ImageManifest};

/// What the input parsed as.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The index's tags, when the input is an index.
    pub tags: Option<Vec<String>>,
    /// Whether the input is a manifest naming a PuzzleFS metadata layer.
    pub rootfs_manifest: bool,
}

/// Parses the input as an index and as a manifest.
pub fn run(data: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        let tags = index.tags();
        for tag in &tags {
            assert!(
                index.find(tag).is_some(),
                "tag {tag:?} listed but not found"
            );
        }
        parsed.tags = Some(tags);
    }
    if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(data) {
        parsed.rootfs_manifest = manifest.rootfs().is_some();
        let _ = serde_json::to_vec(&manifest);
    }
    parsed
}
