//! skopeo (Debian's, installed by scripts/setup.sh) copies PuzzleFS images between OCI layouts
//! as they are: the copy has the same manifest digest and blobs, `puzzlefs check` passes on it,
//! and our reader sees the same tree. Both our images and the upstream-built fixtures in
//! `images/`. A missing skopeo fails these tests.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::fixture::{as_manifest, assert_matches, manifest, upstream_layout};
use common::{build_image, diff, image_snapshot, pseudo_random, puzzlefs, snapshot, Compare};
use puzzlefs_virtiofsd::oci::OciDir;
use puzzlefs_virtiofsd::reader::{Image, OpenOptions};

/// `skopeo copy oci:FROM:TAG oci:TO:TAG`.
fn skopeo_copy(from: &Path, to: &Path, tag: &str) {
    let src = format!("oci:{}:{tag}", from.display());
    let dst = format!("oci:{}:{tag}", to.display());
    // No signature policy is involved between two local layouts; do not depend on
    // /etc/containers/policy.json being there.
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", &src, &dst])
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo ({e}): install it (scripts/setup.sh)"));
    assert!(
        out.status.success(),
        "skopeo copy {src} {dst}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn open(dir: &Path, tag: &str) -> Image {
    Image::open(&OciDir::open(dir).unwrap(), tag, OpenOptions::default()).unwrap()
}

fn blobs(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The copy is the same image: same manifest, same blobs, and `puzzlefs check` passes.
fn assert_copied_as_is(from: &Path, to: &Path, tag: &str) -> Image {
    let (a, b) = (open(from, tag), open(to, tag));
    assert_eq!(
        a.manifest_digest(),
        b.manifest_digest(),
        "{tag}: manifest rewritten"
    );
    let reached = |i: &Image| {
        let mut s: BTreeSet<String> = i
            .manifest()
            .layers
            .iter()
            .map(|l| l.digest.to_string())
            .collect();
        s.insert(i.manifest().config.digest.to_string());
        s
    };
    assert_eq!(reached(&a), reached(&b), "{tag}");
    let target = format!("{}:{tag}", to.display());
    let out = puzzlefs(&[OsStr::new("check"), OsStr::new(&target)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: "));
    b
}

/// A tree with what an unprivileged user can make: a file over several chunks, small files,
/// an empty one, a hard link, symlinks, a user xattr, odd modes.
fn tree(root: &Path) {
    fs::create_dir_all(root.join("d/sub")).unwrap();
    fs::write(root.join("d/big"), pseudo_random(700_000, 3)).unwrap();
    for i in 0..10 {
        fs::write(
            root.join(format!("d/sub/{i}")),
            pseudo_random(100 + i * 900, i as u64),
        )
        .unwrap();
    }
    fs::write(root.join("empty"), b"").unwrap();
    fs::hard_link(root.join("d/sub/3"), root.join("hard")).unwrap();
    symlink("d/big", root.join("link")).unwrap();
    symlink("/nowhere", root.join("dangling")).unwrap();
    xattr::set(root.join("d/big"), "user.note", b"copied").unwrap();
    fs::set_permissions(root.join("d/sub"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn skopeo_copies_our_images_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let (oci, copy) = (tmp.path().join("oci"), tmp.path().join("copy"));
    for (tag, compress) in [("plain", false), ("zstd", true)] {
        build_image(&src, &oci, tag, compress);
        skopeo_copy(&oci, &copy, tag);
        let image = assert_copied_as_is(&oci, &copy, tag);
        let d = diff(&snapshot(&src), &image_snapshot(&image), Compare::ALL);
        assert!(d.is_empty(), "{tag}:\n{}", d.join("\n"));
    }
    // Both tags landed in one layout with nothing else in it.
    assert_eq!(blobs(&oci), blobs(&copy));
}

#[test]
fn skopeo_copies_upstream_fixtures_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("copy");
    for (tag, version) in [("plain", "v1"), ("zstd", "v1"), ("v2", "v2")] {
        skopeo_copy(&upstream_layout(), &copy, tag);
        let image = assert_copied_as_is(&upstream_layout(), &copy, tag);
        assert_matches(
            tag,
            &manifest(version),
            &as_manifest(&image_snapshot(&image)),
        );
    }
    assert_eq!(blobs(&upstream_layout()), blobs(&copy));
}
