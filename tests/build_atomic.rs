//! A build that fails or is interrupted leaves the OCI directory as it was; concurrent builds
//! into one directory keep every tag.

mod common;

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, corner_case_tree, debian_tree, diff, puzzlefs, snapshot, Compare};

#[test]
fn interrupted_build_leaves_the_layout_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("f"), b"first image").unwrap();
    let oci = tmp.path().join("oci");
    puzzlefs(&[
        OsStr::new("build"),
        small.as_os_str(),
        OsStr::new(&format!("{}:first", oci.display())),
    ]);
    let before = snapshot(&oci);
    let tree = debian_tree();
    for signal in ["INT", "TERM"] {
        let target = format!("{}:second", oci.display());
        let child = Command::new(bin("puzzlefs"))
            .args([
                OsStr::new("build"),
                OsStr::new("-c"),
                tree.as_os_str(),
                OsStr::new(&target),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the build has staged some blobs, then interrupt it.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let staged = std::fs::read_dir(&oci)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".puzzlefs-build-")
                })
                .any(|e| {
                    std::fs::read_dir(e.path())
                        .map(|mut d| d.next().is_some())
                        .unwrap_or(false)
                });
            if staged || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "interrupted build must fail");
        assert!(err.contains("cancelled"), "{err}");
        // Only the layout directory's own mtime may change (the staging area came and went).
        let cmp = Compare {
            dir_mtime: false,
            ..Compare::ALL
        };
        let d = diff(&before, &snapshot(&oci), cmp);
        assert!(
            d.is_empty(),
            "layout changed after SIG{signal}: {}",
            d.join("\n")
        );
    }
}

#[test]
fn concurrent_builds_into_one_layout_keep_every_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut args = vec![OsStr::new("build").to_owned(), src.as_os_str().to_owned()];
            if i % 2 == 1 {
                args.push("-c".into());
            }
            args.push(format!("{}:t{i}", oci.display()).into());
            Command::new(bin("puzzlefs"))
                .args(&args)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let digests: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .collect();
    assert_eq!(digests[0], digests[2]);
    assert_eq!(digests[1], digests[3]);
    let out = puzzlefs(&[OsStr::new("check"), oci.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    for i in 0..4 {
        assert!(text.contains(&format!("image t{i} ")), "{text}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&oci)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
