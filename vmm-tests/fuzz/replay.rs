//! Replays every committed fuzz input (`corpus/`, crash reproducers in `artifacts/` and
//! `regressions/`) through the same target bodies libFuzzer runs, and checks that the seeds,
//! real images, are read correctly while damaged copies of them are refused.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "targets/mod.rs"]
mod targets;

use targets::{accepts, fs_ops, layout, metadata, oci_json, seeds, seekable, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vmm-tests/fuzz")
}

/// Every committed input of `target`: its corpus, and reproducers where libFuzzer and we put them.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for folder in ["corpus", "artifacts", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(folder).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `target` on every committed input; fails naming each input that panicked.
/// Returns how many inputs the target accepted.
fn replay(target: &str) -> usize {
    let files = inputs(target);
    assert!(!files.is_empty(), "no committed inputs for {target}");
    let mut accepted = 0;
    let mut panicked = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        match catch_unwind(AssertUnwindSafe(|| accepts(target, &data))) {
            Ok(Some(true)) => accepted += 1,
            Ok(Some(false)) => {}
            Ok(None) => panic!("no target {target}"),
            Err(_) => panicked.push(file.display().to_string()),
        }
    }
    assert!(panicked.is_empty(), "{target} panicked on {panicked:#?}");
    accepted
}

#[test]
fn every_target_has_a_binary_and_accepts_its_seeds() {
    for target in TARGETS {
        assert!(
            fuzz_dir()
                .join(format!("fuzz_targets/{target}.rs"))
                .is_file(),
            "fuzz_targets/{target}.rs"
        );
    }
    for (target, seed) in seeds::all() {
        assert_eq!(accepts(target, &seed), Some(true), "a {target} seed");
    }
    assert_eq!(accepts("nonesuch", b""), None);
}

// Each replay also asserts that some input is accepted: a corpus the target refuses whole
// (a changed input format, a broken target) exercises only its first checks.
#[test]
fn fs_ops_corpus_replays() {
    assert!(replay("fs_ops") > 0, "no fs_ops input opens as an image");
}

#[test]
fn metadata_corpus_replays() {
    assert!(replay("metadata") > 0, "no metadata input decodes");
}

#[test]
fn oci_json_corpus_replays() {
    assert!(replay("oci_json") > 0, "no oci_json input parses");
}

#[test]
fn seekable_corpus_replays() {
    assert!(replay("seekable") > 0, "no seekable input decompresses");
}

/// Every path of the source tree, relative, as the metadata walk lists them (root first, empty).
fn source_paths(root: &Path) -> BTreeSet<Vec<u8>> {
    let mut paths = BTreeSet::from([Vec::new()]);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let child = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push(child.clone());
            }
            paths.insert(child.into_os_string().into_encoded_bytes());
        }
    }
    paths
}

#[test]
fn metadata_seeds_list_the_source_tree_and_damage_is_refused() {
    let expected = source_paths(&layout::source_tree());
    for meta in seeds::metadata() {
        let paths = metadata::run(&meta).expect("seed metadata refused");
        assert_eq!(paths.len(), expected.len(), "walk lists a path twice");
        assert_eq!(paths.into_iter().collect::<BTreeSet<_>>(), expected);
        assert_eq!(metadata::run(&meta[..meta.len() / 2]), None, "half a blob");
        assert_eq!(metadata::run(b"not capnp"), None);
    }
}

#[test]
fn seekable_seeds_decompress_to_their_data_and_damage_is_refused() {
    for (data, blob) in seeds::seekable() {
        assert_eq!(seekable::run(&blob).as_deref(), Some(&data[..]));
        assert_eq!(seekable::run(&blob[..blob.len() - 1]), None, "truncated");
        if !data.is_empty() {
            let mut corrupt = blob.clone();
            corrupt[blob.len() / 2] ^= 0x55;
            assert_ne!(seekable::run(&corrupt).as_deref(), Some(&data[..]));
        }
    }
    let mut over = seeds::seekable().pop().unwrap().0;
    over.resize(seekable::LIMIT as usize + 1, 7);
    let blob = puzzlefs_virtiofsd::chunk::compress_seekable(&over, 65_536, 3).unwrap();
    assert_eq!(seekable::run(&blob), None, "over the size limit");
}

#[test]
fn oci_json_seeds_parse_and_garbage_is_refused() {
    let docs = seeds::oci_json();
    let index = oci_json::run(&docs[0]);
    assert_eq!(index.tags, Some(seeds::TAGS.map(String::from).to_vec()));
    for manifest in &docs[1..] {
        assert!(oci_json::run(manifest).rootfs_manifest);
    }
    for garbage in [
        &b"{"[..],
        b"[]",
        b"{\"manifests\": 7}",
        &docs[0][..docs[0].len() - 2],
    ] {
        assert_eq!(oci_json::run(garbage), oci_json::Parsed::default());
    }
}

/// Checks everything `report` saw against the source tree: each entry's name, type, mode,
/// size, owner and mtime, each READ's bytes, each READLINK's target; and that it saw the whole
/// tree: every path, every symbolic link's target, every regular file read whole.
fn matches_source_tree(report: &fs_ops::Report, root: &Path) {
    use fs_ops::{Attr, Seen};
    use std::collections::BTreeMap;
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::fs::MetadataExt;

    let mut paths: BTreeMap<u64, PathBuf> = BTreeMap::from([(1, PathBuf::new())]);
    let source_attr = |rel: &Path, what: &str| {
        let md = std::fs::symlink_metadata(root.join(rel))
            .unwrap_or_else(|e| panic!("{what} {}: not in the source: {e}", rel.display()));
        Attr {
            mode: md.mode(),
            // Directory sizes are the file system's business, not the image's.
            size: if md.is_dir() { 0 } else { md.size() as i64 },
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
        }
    };
    let served = |attr: &Attr| Attr {
        size: if attr.mode & libc::S_IFMT == libc::S_IFDIR {
            0
        } else {
            attr.size
        },
        ..*attr
    };
    let mut whole_reads = BTreeSet::new();
    let mut links = BTreeSet::new();
    for s in &report.seen {
        match s {
            Seen::Entry {
                parent,
                name,
                ino,
                attr,
            } => {
                let dir = &paths[parent];
                let rel = match &name[..] {
                    b"." => dir.clone(),
                    b".." => dir.parent().map(Path::to_path_buf).unwrap_or_default(),
                    n => dir.join(OsStr::from_bytes(n)),
                };
                if let Some(known) = paths.insert(*ino, rel.clone()) {
                    assert_eq!(known, rel, "inode {ino} at two paths (no hard links here)");
                }
                assert_eq!(
                    served(attr),
                    source_attr(&rel, "entry"),
                    "{}",
                    rel.display()
                );
            }
            Seen::Attr { ino, attr } => {
                let rel = &paths[ino];
                assert_eq!(
                    served(attr),
                    source_attr(rel, "getattr"),
                    "{}",
                    rel.display()
                );
            }
            Seen::Read {
                ino,
                offset,
                len,
                digest,
            } => {
                let rel = &paths[ino];
                let data = std::fs::read(root.join(rel)).unwrap();
                let start = (*offset as usize).min(data.len());
                let expected = &data[start..];
                assert_eq!(*len as usize, expected.len(), "READ of {}", rel.display());
                assert_eq!(
                    *digest,
                    puzzlefs_virtiofsd::format::Digest::of(expected),
                    "bytes of {} from {offset}",
                    rel.display()
                );
                if *offset == 0 {
                    whole_reads.insert(rel.clone());
                }
            }
            Seen::Link { ino, target } => {
                let rel = &paths[ino];
                let source = std::fs::read_link(root.join(rel)).unwrap();
                assert_eq!(
                    target[..],
                    *source.as_os_str().as_bytes(),
                    "{}",
                    rel.display()
                );
                links.insert(rel.clone());
            }
        }
    }
    let reached: BTreeSet<Vec<u8>> = paths
        .values()
        .map(|p| p.clone().into_os_string().into_encoded_bytes())
        .collect();
    assert_eq!(reached, source_paths(root), "paths the seed reached");
    for rel in source_paths(root) {
        let rel = PathBuf::from(OsString::from_vec(rel));
        let kind = std::fs::symlink_metadata(root.join(&rel))
            .unwrap()
            .file_type();
        if kind.is_file() {
            assert!(whole_reads.contains(&rel), "{} never read", rel.display());
        } else if kind.is_symlink() {
            assert!(
                links.contains(&rel),
                "{} never read as a link",
                rel.display()
            );
        }
    }
}

#[test]
fn fs_ops_seeds_read_the_source_tree_and_damage_is_refused() {
    let reports: Vec<_> = seeds::fs_ops()
        .iter()
        .map(|seed| fs_ops::run(seed).expect("seed image refused"))
        .collect();
    let [plain, zstd] = &reports[..] else {
        panic!("one seed per image expected: {reports:?}");
    };
    for (tag, report) in seeds::TAGS.iter().zip(&reports) {
        eprintln!("{tag}: {} operations, {} failed", report.ops, report.failed);
        matches_source_tree(report, &layout::source_tree());
    }
    assert_eq!(plain, zstd, "plain and zstd images serve different trees");

    let seed = &seeds::fs_ops()[0];
    let meta_len = usize::from(u16::from_le_bytes([seed[0], seed[1]]));
    let mut damaged = seed.clone();
    damaged[2..2 + meta_len].fill(0xa5);
    assert_eq!(fs_ops::run(&damaged), None, "garbage metadata");
    assert_eq!(
        fs_ops::run(&seed[..2 + meta_len / 2]),
        None,
        "input shorter than its length"
    );
}
