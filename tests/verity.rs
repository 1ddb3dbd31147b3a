//! fs-verity bookkeeping on the host (whose kernel has no fs-verity; the kernel side runs in
//! a guest, vmm-tests/fs_verity.rs): the digests `build` records and prints agree with
//! fsverity-utils and with upstream PuzzleFS, wrong records are caught by `check` and stop
//! `enable-fs-verity` before it touches anything, and readers asked for `--fs-verity` where
//! the kernel cannot give it refuse with a clear error.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::{corner_case_tree, puzzlefs, puzzlefs_fails, upstream_build};
use puzzlefs_virtiofsd::chunk::fs_verity_digest;
use puzzlefs_virtiofsd::format::{decode_rootfs, encode_rootfs, DecodeLimits, Digest};
use puzzlefs_virtiofsd::oci::{OciDir, ANNOTATION_VERITY_ROOT, MEDIA_TYPE_ROOTFS};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `puzzlefs build --json -c SRC OCI:TAG`, parsed.
fn build_json(src: &Path, target: &str) -> serde_json::Value {
    let out = puzzlefs(&[
        os("build"),
        os("--json"),
        os("-c"),
        src.as_os_str(),
        os(target),
    ]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fsverity_utils_digest(path: &Path) -> String {
    let out = Command::new("fsverity")
        .args(["digest", "--compact"])
        .arg(path)
        .output()
        .expect("fsverity (apt-get install fsverity) must be installed");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn recorded_digests_match_fsverity_utils() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let report = build_json(&src, &format!("{}:t", oci.display()));
    let manifest = Digest::parse(report["manifest_digest"].as_str().unwrap()).unwrap();
    let dir = OciDir::open(&oci).unwrap();
    assert_eq!(
        report["manifest_fs_verity"].as_str().unwrap(),
        fsverity_utils_digest(&dir.blob_path(&manifest))
    );
    let m = dir.read_manifest(&dir.resolve("t").unwrap()).unwrap();
    let meta = m
        .layers
        .iter()
        .find(|l| l.media_type == MEDIA_TYPE_ROOTFS)
        .unwrap();
    assert_eq!(
        hex::encode(meta.fs_verity().unwrap()),
        fsverity_utils_digest(&dir.blob_path(&meta.digest))
    );
    let rootfs = decode_rootfs(
        &dir.read_blob(&meta.digest, 1 << 30).unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    let data: std::collections::BTreeSet<Digest> = m
        .layers
        .iter()
        .filter(|l| l.media_type != MEDIA_TYPE_ROOTFS)
        .map(|l| l.digest)
        .collect();
    assert!(!data.is_empty());
    assert_eq!(
        rootfs
            .verity
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        data,
        "every data blob has a record"
    );
    for (blob, verity) in &rootfs.verity {
        assert_eq!(
            hex::encode(verity),
            fsverity_utils_digest(&dir.blob_path(blob))
        );
    }
}

/// Rewrites image `tag`'s metadata with `edit`, keeping the manifest consistent (digests,
/// sizes, and the metadata's own fs-verity annotation).
fn rewrite_metadata(
    oci: &OciDir,
    tag: &str,
    edit: impl FnOnce(&mut puzzlefs_virtiofsd::format::Rootfs),
) {
    let mut manifest = oci.read_manifest(&oci.resolve(tag).unwrap()).unwrap();
    let layer = manifest
        .layers
        .iter_mut()
        .find(|l| l.media_type == MEDIA_TYPE_ROOTFS)
        .unwrap();
    let mut rootfs = decode_rootfs(
        &oci.read_blob(&layer.digest, 1 << 30).unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    edit(&mut rootfs);
    let meta = encode_rootfs(&rootfs).unwrap();
    layer.digest = Digest::of(&meta);
    layer.size = meta.len() as u64;
    layer.annotations = Some(
        [(
            ANNOTATION_VERITY_ROOT.to_string(),
            hex::encode(fs_verity_digest(&meta)),
        )]
        .into(),
    );
    oci.write_blob(&layer.digest, &meta).unwrap();
    oci.commit_manifest(&manifest, tag).unwrap();
}

#[test]
fn wrong_records_are_reported_by_check_and_stop_enable_before_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let path = tmp.path().join("oci");
    build_json(&src, &format!("{}:good", path.display()));
    build_json(&src, &format!("{}:blob", path.display()));
    build_json(&src, &format!("{}:meta", path.display()));
    let oci = OciDir::open(&path).unwrap();

    // A data blob's record is wrong.
    let mut victim = None;
    rewrite_metadata(&oci, "blob", |r| {
        let (blob, v) = r.verity.iter_mut().next().unwrap();
        v[0] ^= 1;
        victim = Some(*blob);
    });
    let victim = victim.unwrap();
    let target = format!("{}:blob", path.display());
    // A warning, not a failure: readers that do not require fs-verity are unaffected.
    let report = String::from_utf8(puzzlefs(&[os("check"), os(&target)]).stdout).unwrap();
    assert!(
        report.contains(&format!("WARN blob {victim}: its fs-verity digest is")),
        "{report}"
    );
    let enable = puzzlefs_fails(&[os("enable-fs-verity"), os(&target)]);
    assert!(
        enable.contains(&victim.to_string()) && enable.contains("but the image requires"),
        "refused before asking the kernel: {enable}"
    );

    // The metadata's own record (its descriptor's annotation) is wrong.
    let mut manifest = oci.read_manifest(&oci.resolve("meta").unwrap()).unwrap();
    let layer = manifest
        .layers
        .iter_mut()
        .find(|l| l.media_type == MEDIA_TYPE_ROOTFS)
        .unwrap();
    let meta_digest = layer.digest;
    layer.annotations = Some([(ANNOTATION_VERITY_ROOT.to_string(), "ab".repeat(32))].into());
    oci.commit_manifest(&manifest, "meta").unwrap();
    let target = format!("{}:meta", path.display());
    let report = String::from_utf8(puzzlefs(&[os("check"), os(&target)]).stdout).unwrap();
    assert!(
        report.contains(&format!(
            "WARN tag meta: metadata blob {meta_digest}: the fs-verity digest recorded for it is wrong"
        )),
        "{report}"
    );
    let enable = puzzlefs_fails(&[os("enable-fs-verity"), os(&target)]);
    assert!(
        enable.contains(&meta_digest.to_string()) && enable.contains("but the image requires"),
        "{enable}"
    );

    // The untouched image checks clean.
    let report = puzzlefs(&[os("check"), os(&format!("{}:good", path.display()))]).stdout;
    assert!(!String::from_utf8(report).unwrap().contains("WARN"));
}

#[test]
fn readers_asked_for_fs_verity_refuse_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let target = format!("{}:t", tmp.path().join("oci").display());
    let report = build_json(&src, &target);
    let root = report["manifest_fs_verity"].as_str().unwrap();

    // This kernel (or file system) has no fs-verity, or the blobs do not have it on.
    let enable = puzzlefs_fails(&[os("enable-fs-verity"), os(&target), os(root)]);
    assert!(
        enable.contains("no fs-verity here") || enable.contains("fs-verity is not enabled"),
        "{enable}"
    );
    let cat = puzzlefs_fails(&[os("cat"), os("--fs-verity"), os(root), os(&target), os("/")]);
    assert!(cat.contains("fs-verity"), "{cat}");
    let dest = tmp.path().join("x");
    let extract = puzzlefs_fails(&[
        os("extract"),
        os("--fs-verity"),
        os(root),
        os(&target),
        dest.as_os_str(),
    ]);
    assert!(extract.contains("fs-verity"), "{extract}");
    assert!(!dest.exists(), "nothing extracted");
    let bad = puzzlefs_fails(&[os("cat"), os("--fs-verity"), os("12"), os(&target), os("/")]);
    assert!(bad.contains("not an fs-verity digest"), "{bad}");

    let sock = tmp.path().join("vfs.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_puzzlefs-virtiofsd"))
        .args(["--socket-path", sock.to_str().unwrap(), "--image", &target])
        .args(["--fs-verity", root, "--sandbox", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open image") && err.contains("fs-verity"),
        "{err}"
    );
    assert!(!sock.exists(), "no socket left behind");
}

/// Upstream prints the fs-verity digest of the manifest as its root hash; ours is the same
/// number, and upstream's recorded blob digests pass our bookkeeping check. (Only for
/// compressible data: for a chunk that zstd cannot shrink, upstream 0.2 stores it plain but
/// records the fs-verity digest of the compressed bytes; neither tool can seal such an image,
/// and `check` warns about it.)
#[test]
fn upstream_images_have_the_root_hash_upstream_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    for i in 0..20 {
        let text = format!("line {i} of a compressible file\n").repeat(4000 + i * 300);
        std::fs::write(src.join("etc").join(format!("f{i}")), text).unwrap();
    }
    let target = format!("{}:t", tmp.path().join("up").display());
    let printed = upstream_build(&[os("-c"), src.as_os_str(), os(&target)]);
    let upstream_root = printed
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_else(|| panic!("upstream printed {printed:?}"));
    assert_eq!(upstream_root.len(), 64, "{printed}");

    let wrong = "0".repeat(64);
    let err = puzzlefs_fails(&[os("enable-fs-verity"), os(&target), os(&wrong)]);
    assert!(
        err.contains(&format!("its fs-verity digest is {upstream_root}")),
        "{err}"
    );
    let err = puzzlefs_fails(&[os("enable-fs-verity"), os(&target), os(upstream_root)]);
    assert!(
        !err.contains("but the image requires"),
        "upstream's records pass our check: {err}"
    );
    let report = puzzlefs(&[os("check"), os(&target)]).stdout;
    assert!(!String::from_utf8(report).unwrap().contains("WARN"));

    // Incompressible data: upstream's record is wrong, and we say which blob.
    std::fs::write(src.join("random"), common::pseudo_random(300_000, 7)).unwrap();
    let target = format!("{}:t", tmp.path().join("up2").display());
    upstream_build(&[os("-c"), src.as_os_str(), os(&target)]);
    let report = String::from_utf8(puzzlefs(&[os("check"), os(&target)]).stdout).unwrap();
    assert!(report.contains("WARN blob sha256:"), "{report}");
    let err = puzzlefs_fails(&[os("enable-fs-verity"), os(&target)]);
    assert!(err.contains("but the image requires"), "{err}");
}
