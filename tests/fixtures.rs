//! The fixture images upstream PuzzleFS 0.2 built, committed in `images/upstream` (see
//! images/README.md): the layout is intact, and our reader, our FUSE file system, `puzzlefs
//! check` and `puzzlefs extract` reproduce exactly the tree the recipe's manifest describes.
//! Corrupted copies are refused (corrupt.rs). Needs no upstream binary; only the extraction of
//! device nodes, owners and privileged xattrs needs root, and without it they are left out.

mod common;
#[path = "fixtures/corrupt.rs"]
mod corrupt;
#[path = "fixtures/layout.rs"]
mod layout;
#[path = "fixtures/served.rs"]
mod served;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use common::fixture::{as_manifest, assert_matches, manifest, upstream_layout, Manifest};
use common::{image_snapshot, puzzlefs, snapshot};
use puzzlefs_virtiofsd::oci::OciDir;
use puzzlefs_virtiofsd::reader::{Image, NodeData, OpenOptions};

/// Each tag and the tree version it was built from.
const TAGS: [(&str, &str); 3] = [("plain", "v1"), ("zstd", "v1"), ("v2", "v2")];

fn open(tag: &str) -> Image {
    let oci = OciDir::open(&upstream_layout()).unwrap();
    Image::open(&oci, tag, OpenOptions::default()).unwrap()
}

#[test]
fn committed_layout_is_intact() {
    let problems = layout::problems(&upstream_layout());
    assert!(
        problems.is_empty(),
        "images/upstream was modified; regenerate it with images/build-fixtures.sh:\n{}",
        problems.join("\n")
    );
}

#[test]
fn reader_sees_the_recipe_tree() {
    for (tag, version) in TAGS {
        let image = open(tag);
        assert_matches(
            tag,
            &manifest(version),
            &as_manifest(&image_snapshot(&image)),
        );
    }
}

#[test]
fn images_are_what_their_tags_say() {
    for (tag, _) in TAGS {
        let image = open(tag);
        let table = image.table();
        let compressed: Vec<bool> = table.chunks().iter().map(|b| b.compressed).collect();
        assert!(!compressed.is_empty());
        let want = tag != "plain";
        assert!(
            compressed.iter().all(|c| *c == want),
            "{tag}: {compressed:?}"
        );
        let layers = if tag == "v2" { 2 } else { 1 };
        assert_eq!(image.layer_count(), layers, "{tag}");
        // The tree exercises chunking: a file spans chunks, and a chunk holds several files.
        let mut files_per_blob: BTreeMap<u32, usize> = BTreeMap::new();
        let mut most_extents = 0;
        for id in 0..table.len() as u32 {
            if let NodeData::File(_) = table.node(id).data {
                let extents = table.extents(id);
                most_extents = most_extents.max(extents.len());
                let mut blobs: Vec<u32> = extents.iter().map(|e| e.chunk).collect();
                blobs.dedup();
                for b in blobs {
                    *files_per_blob.entry(b).or_default() += 1;
                }
            }
        }
        assert!(most_extents > 1, "{tag}: no file spans two chunks");
        assert!(
            files_per_blob.values().any(|n| *n > 10),
            "{tag}: no chunk is shared by many files: {files_per_blob:?}"
        );
    }
}

#[test]
fn served_tree_matches_the_recipe() {
    for (tag, version) in TAGS {
        let got = served::snapshot(open(tag));
        assert_matches(tag, &manifest(version), &as_manifest(&got));
    }
}

#[test]
fn check_passes_on_every_tag() {
    let dir = upstream_layout();
    let out = puzzlefs(&[OsStr::new("check"), dir.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("image ")).count(), 3);
    assert!(text.contains("ok: ") && !text.contains("BAD"), "{text}");
    for (tag, _) in TAGS {
        let target = format!("{}:{tag}", dir.display());
        puzzlefs(&[OsStr::new("check"), OsStr::new(&target)]);
    }
}

/// What an extraction without root can restore: no devices, no owners (the extracting user
/// owns everything), only `user.*` xattrs; and what [`readable`] changes.
fn unprivileged(m: &Manifest) -> Manifest {
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    m.iter()
        .filter_map(|(path, line)| {
            let mut f: Vec<String> = line.split('\t').map(str::to_string).collect();
            if f[0] == "c" || f[0] == "b" {
                return None;
            }
            (f[2], f[3]) = (uid.to_string(), gid.to_string());
            if let Some(bits) = owner_access(&f[0]) {
                let mode = u32::from_str_radix(&f[1], 8).unwrap() | bits;
                f[1] = format!("{mode:o}");
            }
            let user: Vec<&str> = f[8].split(',').filter(|x| x.starts_with("user.")).collect();
            f[8] = if user.is_empty() {
                "-".into()
            } else {
                user.join(",")
            };
            Some((path.clone(), f.join("\t")))
        })
        .collect()
}

/// The owner bits a user needs to snapshot an entry of this type.
fn owner_access(kind: &str) -> Option<u32> {
    match kind {
        "f" => Some(0o400),
        "d" => Some(0o500),
        _ => None,
    }
}

/// Without root, lets the owner read what the image made unreadable (`bin/noperm` is 0000).
fn readable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::symlink_metadata(p).unwrap();
    let kind = match md.file_type() {
        t if t.is_dir() => "d",
        t if t.is_file() => "f",
        _ => return,
    };
    let mode = md.permissions().mode() | owner_access(kind).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    if md.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            readable(&e.unwrap().path());
        }
    }
}

#[test]
fn extract_reproduces_the_recipe_tree() {
    let root = rustix::process::geteuid().is_root();
    let tmp = tempfile::tempdir().unwrap();
    for (tag, version) in TAGS {
        let target = format!("{}:{tag}", upstream_layout().display());
        let dest = tmp.path().join(tag);
        let mut args = vec![OsStr::new("extract"), OsStr::new(&target), dest.as_os_str()];
        if !root {
            args.insert(1, OsStr::new("--skip-devices"));
        }
        puzzlefs(&args);
        let mut expected = manifest(version);
        if !root {
            readable(&dest);
            expected = unprivileged(&expected);
        }
        assert_matches(tag, &expected, &as_manifest(&snapshot(&dest)));
    }
}
