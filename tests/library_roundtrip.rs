//! Build, then read back through the library and compare every attribute with the source:
//! the corner-case tree and a real Debian root file system, plain and compressed.

mod common;

use std::path::Path;

use common::{build_image, corner_case_tree, debian_tree, diff, image_snapshot, snapshot, Compare};
use puzzlefs_virtiofsd::oci::OciDir;
use puzzlefs_virtiofsd::reader::{Image, OpenOptions};

fn roundtrip(src: &Path, work: &Path) {
    let expected = snapshot(src);
    for (tag, compress) in [("plain", false), ("zstd", true)] {
        let oci = work.join("oci");
        build_image(src, &oci, tag, compress);
        let image = Image::open(&OciDir::open(&oci).unwrap(), tag, OpenOptions::default()).unwrap();
        let d = diff(&expected, &image_snapshot(&image), Compare::ALL);
        assert!(
            d.is_empty(),
            "{tag}: {} differences:\n{}",
            d.len(),
            d[..d.len().min(20)].join("\n")
        );
    }
}

#[test]
fn corner_case_tree_reads_back_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    roundtrip(&src, tmp.path());
}

#[test]
fn debian_tree_reads_back_identically() {
    let tmp = tempfile::tempdir().unwrap();
    roundtrip(&debian_tree(), tmp.path());
}
