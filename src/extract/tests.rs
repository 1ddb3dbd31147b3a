//! The creation primitives never follow a symlink: entries planted in the way (as a racing
//! attacker or a buggy merge might) make extraction fail instead of writing through them.

use std::collections::HashMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::path::Path;

use rustix::fs::{Mode, CWD};

use super::dest::DIR_FLAGS;
use super::tree::Extractor;
use super::{ExtractOptions, ExtractReport};
use crate::builder::{build, BuildOptions};
use crate::oci::OciDir;
use crate::reader::{Image, OpenOptions};

fn image(tmp: &Path) -> Image {
    let src = tmp.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"inner").unwrap();
    fs::write(src.join("f"), b"outer").unwrap();
    fs::hard_link(src.join("f"), src.join("h")).unwrap();
    symlink("target", src.join("l")).unwrap();
    let oci = OciDir::create(&tmp.join("oci")).unwrap();
    build(&src, &oci, "t", &BuildOptions::default()).unwrap();
    Image::open(&oci, "t", OpenOptions::default()).unwrap()
}

fn run(image: &Image, root: &Path) -> Result<ExtractReport, super::ExtractError> {
    let fd = rustix::fs::openat(CWD, root, DIR_FLAGS, Mode::empty()).unwrap();
    let opts = ExtractOptions::default();
    let mut ex = Extractor {
        image,
        opts: &opts,
        privileged: false,
        root: fd.as_fd(),
        links: HashMap::new(),
        report: ExtractReport::default(),
    };
    ex.run().map(|()| ex.report.clone())
}

#[test]
fn extracts_into_a_clean_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    let r = run(&img, &root).unwrap();
    assert_eq!((r.files, r.dirs, r.symlinks, r.hard_links), (2, 2, 1, 1));
    assert_eq!(fs::read(root.join("d/f")).unwrap(), b"inner");
    assert_eq!(fs::read(root.join("h")).unwrap(), b"outer");
}

#[test]
fn planted_symlinks_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    // Each name the image creates, pre-planted as a symlink pointing outside.
    for (name, aim) in [
        ("d", outside.clone()),
        ("f", outside.join("f")),
        ("h", outside.join("h")),
        ("l", outside.join("l")),
    ] {
        let root = tmp.path().join(format!("root-{name}"));
        fs::create_dir(&root).unwrap();
        symlink(&aim, root.join(name)).unwrap();
        let err = run(&img, &root).expect_err("planted symlink must stop extraction");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("/{name}: cannot create")) && text.contains("exists"),
            "{text}"
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written through root-{name}/{name}"
        );
    }
}
