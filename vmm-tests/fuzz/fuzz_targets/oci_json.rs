//! Fuzz target: index.json and image manifests from an untrusted OCI layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfs::oci::{ImageIndex, ImageManifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        for tag in index.tags() {
            assert!(index.find(&tag).is_some());
        }
    }
    if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(data) {
        let _ = manifest.rootfs();
        let _ = serde_json::to_vec(&manifest);
    }
});
