//! Images built by upstream PuzzleFS 0.2 (plain, compressed, and two layers with whiteouts)
//! extract to the same tree, except for mtimes, which upstream does not store.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use crate::common::{assert_same_tree, corner_case_tree, upstream_build, Compare};
use crate::{extract, merged_usr_tree, s};

/// Upstream keeps everything we compare except timestamps.
const UPSTREAM: Compare = Compare {
    mtime: false,
    nlink: true,
    xattrs: true,
    owner: true,
    dir_mtime: false,
    rdev: true,
};

#[test]
fn upstream_images_plain_and_compressed_extract_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    for compress in [false, true] {
        let target = format!("{}:t", tmp.path().join(format!("oci-{compress}")).display());
        let mut args = vec![s(&src), OsStr::new(&target)];
        if compress {
            args.insert(0, OsStr::new("-c"));
        }
        upstream_build(&args);
        let dest = tmp.path().join(format!("out-{compress}"));
        extract(&target, &dest);
        assert_same_tree(&src, &dest, UPSTREAM);
    }
}

#[test]
fn upstream_merged_usr_image_extracts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    merged_usr_tree(&src);
    let target = format!("{}:t", tmp.path().join("oci").display());
    upstream_build(&[s(&src), OsStr::new(&target)]);
    let dest = tmp.path().join("out");
    extract(&target, &dest);
    assert_same_tree(&src, &dest, UPSTREAM);
}

fn change_tree(src: &Path) {
    fs::write(src.join("data/small/003.txt"), b"changed contents").unwrap();
    fs::remove_file(src.join("data/small/004.txt")).unwrap();
    // Not a hard-linked name: upstream then writes the inode twice in one layer (a whiteout
    // and the file), which its own extract cannot read either; see the report.
    fs::remove_file(src.join("links/dangling")).unwrap();
    fs::remove_dir_all(src.join("unicode")).unwrap();
    fs::write(src.join("added"), vec![3u8; 300_000]).unwrap();
    fs::create_dir(src.join("newdir")).unwrap();
    fs::write(src.join("newdir/file"), b"new").unwrap();
}

#[test]
fn upstream_two_layer_image_with_whiteouts_extracts_the_top() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let v1 = format!("{}:v1", oci.display());
    let v2 = format!("{}:v2", oci.display());
    upstream_build(&[OsStr::new("-c"), s(&src), OsStr::new(&v1)]);
    change_tree(&src);
    upstream_build(&[
        OsStr::new("-c"),
        OsStr::new("--base-layer"),
        OsStr::new("v1"),
        s(&src),
        OsStr::new(&v2),
    ]);
    let img = puzzlefs_virtiofsd::reader::Image::open(
        &puzzlefs_virtiofsd::oci::OciDir::open(&oci).unwrap(),
        "v2",
        Default::default(),
    )
    .unwrap();
    assert_eq!(img.layer_count(), 2, "upstream --base-layer stacks layers");
    let dest = tmp.path().join("out");
    extract(&v2, &dest);
    assert_same_tree(&src, &dest, UPSTREAM);
    assert!(!dest.join("data/small/004.txt").exists());
    assert!(!dest.join("unicode").exists());
}
