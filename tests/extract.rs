//! `puzzlefs extract`: exact round trips of real trees, sparse files, merged-usr trees, the
//! destination rules; images built by upstream PuzzleFS (upstream.rs); hostile images crafted
//! by hand (hostile.rs).

mod common;
#[path = "extract/hostile.rs"]
mod hostile;
#[path = "extract/upstream.rs"]
mod upstream;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use common::{
    assert_same_tree, build_image as build, corner_case_tree, puzzlefs, puzzlefs_fails, Compare,
};

fn s(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// Runs `puzzlefs extract`; returns its stderr (the summary).
fn extract(target: &str, dest: &Path) -> String {
    let out = puzzlefs(&[OsStr::new("extract"), OsStr::new(target), s(dest)]);
    String::from_utf8(out.stderr).unwrap()
}

fn blocks(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().blocks()
}

#[test]
fn corner_case_tree_round_trips_exactly_plain_and_compressed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    for compress in [false, true] {
        let oci = tmp.path().join(format!("oci-{compress}"));
        let target = build(&src, &oci, "t", compress);
        let dest = tmp.path().join(format!("out-{compress}"));
        let summary = extract(&target, &dest);
        assert_same_tree(&src, &dest, Compare::ALL);
        assert!(
            summary.starts_with("extracted ")
                && summary.contains(" hard links")
                && summary.lines().count() == 1,
            "{summary}"
        );
        // Sparse stays sparse; all-zero data takes no space at all.
        let (a, b) = (blocks(&src.join("sparse")), blocks(&dest.join("sparse")));
        assert!(b <= a && b < 64, "sparse: {b} blocks, source {a}");
        assert_eq!(blocks(&dest.join("data/zeros.bin")), 0);
        assert!(blocks(&dest.join("data/big.bin")) >= blocks(&src.join("data/big.bin")));
        // Hard links are one inode.
        let ino = |p: &str| fs::metadata(dest.join(p)).unwrap().ino();
        assert_eq!(ino("links/original"), ino("other/third"));
        // Nothing but DEST appeared next to it.
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(names.is_empty(), "leftovers: {names:?}");
    }
}

#[test]
fn library_report_counts_what_was_made() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("d/e/f"), vec![1u8; 10_000]).unwrap();
    fs::hard_link(src.join("d/e/f"), src.join("g")).unwrap();
    symlink("d/e", src.join("l")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let oci = tmp.path().join("oci");
    build(&src, &oci, "t", true);
    let img = puzzlefs_virtiofsd::reader::Image::open(
        &puzzlefs_virtiofsd::oci::OciDir::open(&oci).unwrap(),
        "t",
        Default::default(),
    )
    .unwrap();
    let opts = puzzlefs_virtiofsd::extract::ExtractOptions::default();
    let r = puzzlefs_virtiofsd::extract::extract(&img, &tmp.path().join("out"), &opts).unwrap();
    assert_eq!(
        (
            r.files,
            r.dirs,
            r.symlinks,
            r.hard_links,
            r.devices,
            r.bytes
        ),
        (1, 3, 1, 1, 1, 10_000),
        "{r:?}"
    );
    assert!(r.owners && r.skipped_devices == 0);
    assert_same_tree(&src, &tmp.path().join("out"), Compare::ALL);
    // Devices can be left out on request.
    let opts = puzzlefs_virtiofsd::extract::ExtractOptions { skip_devices: true };
    let r = puzzlefs_virtiofsd::extract::extract(&img, &tmp.path().join("out2"), &opts).unwrap();
    assert_eq!((r.devices, r.skipped_devices), (0, 1));
    assert!(
        r.summary().contains("skipped 1 device nodes"),
        "{}",
        r.summary()
    );
    assert!(!tmp.path().join("out2/null").exists());
}

/// Debian's merged /usr: top-level directories are symlinks into /usr. Upstream's extract
/// fails on this; ours must not.
pub fn merged_usr_tree(root: &Path) {
    for d in [
        "usr/bin",
        "usr/sbin",
        "usr/lib/x86_64-linux-gnu",
        "etc/alternatives",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("usr/bin/bash"), b"#!bash\n").unwrap();
    fs::write(root.join("usr/bin/ls"), vec![7u8; 70_000]).unwrap();
    fs::write(root.join("usr/sbin/init"), b"init").unwrap();
    fs::write(
        root.join("usr/lib/x86_64-linux-gnu/libc.so.6"),
        vec![9u8; 5000],
    )
    .unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("usr/sbin", root.join("sbin")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    symlink("usr/lib64", root.join("lib64")).unwrap();
    symlink("bash", root.join("usr/bin/sh")).unwrap();
    symlink("/usr/bin/ls", root.join("etc/alternatives/dir")).unwrap();
    symlink("/etc/alternatives/dir", root.join("usr/bin/dir")).unwrap();
}

#[test]
fn merged_usr_tree_extracts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    merged_usr_tree(&src);
    let oci = tmp.path().join("oci");
    let target = build(&src, &oci, "t", false);
    let dest = tmp.path().join("out");
    extract(&target, &dest);
    assert_same_tree(&src, &dest, Compare::ALL);
    assert_eq!(
        fs::read_link(dest.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(fs::symlink_metadata(dest.join("usr/bin")).unwrap().is_dir());
}

#[test]
fn destination_must_be_absent_or_empty_and_is_never_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"contents").unwrap();
    let oci = tmp.path().join("oci");
    let target = build(&src, &oci, "t", false);
    // An existing empty directory is replaced.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    extract(&target, &empty);
    assert_same_tree(&src, &empty, Compare::ALL);
    // A non-empty one, a file, or a missing parent are refused and left alone.
    let err = puzzlefs_fails(&[OsStr::new("extract"), OsStr::new(&target), s(&empty)]);
    assert!(
        err.contains("not empty") && err.lines().count() == 1,
        "{err}"
    );
    let file = tmp.path().join("file");
    fs::write(&file, b"keep").unwrap();
    let err = puzzlefs_fails(&[OsStr::new("extract"), OsStr::new(&target), s(&file)]);
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"keep");
    let err = puzzlefs_fails(&[
        OsStr::new("extract"),
        OsStr::new(&target),
        s(&tmp.path().join("no/such/parent")),
    ]);
    assert!(err.contains("No such file"), "{err}");
    // Pinning: a wrong digest is refused before anything is created.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let dest = tmp.path().join("pinned");
    let err = puzzlefs_fails(&[
        OsStr::new("extract"),
        OsStr::new("--digest"),
        OsStr::new(&wrong),
        OsStr::new(&target),
        s(&dest),
    ]);
    assert!(err.contains("was required"), "{err}");
    assert!(!dest.exists());
}
