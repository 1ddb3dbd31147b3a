//! A real debootstrap bookworm tree (merged /usr), plain and compressed: build, then extract
//! and mount, comparing every attribute with the source; and the image upstream PuzzleFS
//! builds of it, through our extract.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::{assert_same_tree, build_image, debian_tree, puzzlefs, upstream_build, Compare};

/// A background `puzzlefs mount`, unmounted on drop.
struct Mounted<'a>(&'a Path);

impl<'a> Mounted<'a> {
    fn new(image: &str, at: &'a Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        puzzlefs(&[OsStr::new("mount"), OsStr::new(image), at.as_os_str()]);
        Mounted(at)
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new(common::bin("puzzlefs"))
            .arg("umount")
            .arg(self.0)
            .status();
    }
}

#[test]
fn debian_tree_extracts_and_mounts_identically() {
    let tree = debian_tree();
    assert!(
        std::fs::symlink_metadata(tree.join("bin"))
            .unwrap()
            .is_symlink(),
        "merged /usr"
    );
    let tmp = tempfile::tempdir().unwrap();
    let oci = tmp.path().join("oci");
    for (tag, compress) in [("plain", false), ("zstd", true)] {
        let image = build_image(&tree, &oci, tag, compress);
        let dest = tmp.path().join(format!("x-{tag}"));
        puzzlefs(&[OsStr::new("extract"), OsStr::new(&image), dest.as_os_str()]);
        assert_same_tree(&tree, &dest, Compare::ALL);
        std::fs::remove_dir_all(&dest).unwrap();
        let mnt = tmp.path().join(format!("m-{tag}"));
        let m = Mounted::new(&image, &mnt);
        assert_same_tree(&tree, m.0, Compare::ALL);
    }
}

#[test]
fn upstream_image_of_debian_tree_extracts_identically() {
    let tree = debian_tree();
    let tmp = tempfile::tempdir().unwrap();
    let image = format!("{}:up", tmp.path().join("oci").display());
    upstream_build(&[OsStr::new("-c"), tree.as_os_str(), OsStr::new(&image)]);
    let dest = tmp.path().join("x");
    puzzlefs(&[OsStr::new("extract"), OsStr::new(&image), dest.as_os_str()]);
    // Upstream stores no timestamps.
    let cmp = Compare {
        mtime: false,
        dir_mtime: false,
        ..Compare::ALL
    };
    assert_same_tree(&tree, &dest, cmp);
}
