//! `puzzlefs build`, `ls`, `cat`, `check`, `inspect` on the corner-case tree.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use common::{corner_case_tree, puzzlefs, puzzlefs_fails};

fn s(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// Every file of a layout gets the mode a plain new file gets here (0644 under umask 022),
/// so other users and tools (skopeo, a registry) can read what was published.
fn assert_layout_files_are_public(oci: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let probe = oci.with_extension("probe");
    fs::write(&probe, b"").unwrap();
    let expected = fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    fs::remove_file(&probe).unwrap();
    let mut files = vec![oci.join("index.json"), oci.join("oci-layout")];
    for e in fs::read_dir(oci.join("blobs/sha256")).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in files {
        let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, expected, "{} has mode {mode:o}", f.display());
    }
}

#[test]
fn builds_are_reproducible_and_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    for compress in [false, true] {
        let mut digests = Vec::new();
        for run in 0..2 {
            let oci = tmp.path().join(format!("oci-{compress}-{run}"));
            let target = format!("{}:t", oci.display());
            let mut args = vec![OsStr::new("build"), s(&src), OsStr::new(&target)];
            if compress {
                args.push(OsStr::new("-c"));
            }
            let out = puzzlefs(&args);
            digests.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
            puzzlefs(&[OsStr::new("check"), s(&oci)]);
            assert_layout_files_are_public(&oci);
        }
        assert_eq!(
            digests[0], digests[1],
            "same tree, same manifest (compress={compress})"
        );
        assert!(digests[0].starts_with("sha256:") && digests[0].len() == 71);
    }
}

#[test]
fn cat_returns_every_file_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let target = format!("{}:t", oci.display());
    puzzlefs(&[
        OsStr::new("build"),
        OsStr::new("-c"),
        s(&src),
        OsStr::new(&target),
    ]);
    for rel in [
        "data/big.bin",
        "data/zeros.bin",
        "sparse",
        "links/second",
        "data/small/007.txt",
        "empty",
    ] {
        let out = puzzlefs(&[OsStr::new("cat"), OsStr::new(&target), OsStr::new(rel)]);
        assert_eq!(out.stdout, fs::read(src.join(rel)).unwrap(), "{rel}");
    }
    // Through a symlink to a directory.
    let out = puzzlefs(&[
        OsStr::new("cat"),
        OsStr::new(&target),
        OsStr::new("/links/dir/big.bin"),
    ]);
    assert_eq!(out.stdout, fs::read(src.join("data/big.bin")).unwrap());
    let err = puzzlefs_fails(&[OsStr::new("cat"), OsStr::new(&target), OsStr::new("/nope")]);
    assert!(err.contains("no such file"), "{err}");
    let err = puzzlefs_fails(&[OsStr::new("cat"), OsStr::new(&target), OsStr::new("/data")]);
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn ls_shows_types_links_and_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let target = format!("{}:t", oci.display());
    puzzlefs(&[OsStr::new("build"), s(&src), OsStr::new(&target)]);
    let out = String::from_utf8(puzzlefs(&[OsStr::new("ls"), OsStr::new(&target)]).stdout).unwrap();
    assert!(out.contains("crw-rw-rw-"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" 1,3 ") && l.ends_with("dev-null")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" tmp")),
        "{out}"
    );
    let out = String::from_utf8(
        puzzlefs(&[OsStr::new("ls"), OsStr::new(&target), OsStr::new("/links")]).stdout,
    )
    .unwrap();
    assert!(
        out.lines().any(|l| l.ends_with("abs -> /etc/passwd")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("-rw-r--r--   3") && l.contains("original")),
        "{out}"
    );
    let all = puzzlefs(&[OsStr::new("ls"), OsStr::new("-R"), OsStr::new(&target)]).stdout;
    assert!(String::from_utf8_lossy(&all).lines().count() > 2000);
}

#[test]
fn images_share_chunks_and_base_reuses_unchanged_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let v1 = format!("{}:v1", oci.display());
    let v2 = format!("{}:v2", oci.display());
    let v2b = format!("{}:v2b", oci.display());
    puzzlefs(&[
        OsStr::new("build"),
        OsStr::new("-c"),
        s(&src),
        OsStr::new(&v1),
    ]);
    // Change one file and add one.
    fs::write(src.join("data/small/003.txt"), b"changed").unwrap();
    fs::write(src.join("added"), vec![7u8; 100_000]).unwrap();
    let json = |args: &[&OsStr]| -> serde_json::Value {
        serde_json::from_slice(&puzzlefs(args).stdout).unwrap()
    };
    let plain = json(&[
        OsStr::new("build"),
        OsStr::new("-c"),
        OsStr::new("--json"),
        s(&src),
        OsStr::new(&v2),
    ]);
    let based = json(&[
        OsStr::new("build"),
        OsStr::new("-c"),
        OsStr::new("--json"),
        OsStr::new("--base"),
        OsStr::new("v1"),
        s(&src),
        OsStr::new(&v2b),
    ]);
    let files = based["files"].as_u64().unwrap();
    assert_eq!(plain["reused_files"], 0);
    // Everything but the changed and the added file comes from the base.
    assert_eq!(
        based["reused_files"].as_u64().unwrap(),
        files - 2 - 1 /* empty */ + 1
    );
    assert!(based["chunked_bytes"].as_u64().unwrap() < 200_000);
    assert!(plain["new_chunks"].as_u64().unwrap() < plain["chunks"].as_u64().unwrap() / 2);
    puzzlefs(&[OsStr::new("check"), s(&oci)]);
    for rel in [
        "data/small/003.txt",
        "added",
        "data/big.bin",
        "links/original",
    ] {
        let a = puzzlefs(&[OsStr::new("cat"), OsStr::new(&v2), OsStr::new(rel)]).stdout;
        let b = puzzlefs(&[OsStr::new("cat"), OsStr::new(&v2b), OsStr::new(rel)]).stdout;
        assert_eq!(a, fs::read(src.join(rel)).unwrap());
        assert_eq!(b, a, "{rel}");
    }
    let report: serde_json::Value = serde_json::from_slice(
        &puzzlefs(&[OsStr::new("inspect"), OsStr::new("--json"), s(&oci)]).stdout,
    )
    .unwrap();
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    assert!(images
        .iter()
        .all(|i| i["shared_chunks"].as_u64().unwrap() > 0));
}

#[test]
fn bad_input_is_one_clear_line_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/f"), b"x").unwrap();
    let oci = tmp.path().join("oci");
    let t = |tag: &str| format!("{}:{tag}", oci.display());
    puzzlefs(&[OsStr::new("build"), s(&src), OsStr::new(&t("good"))]);
    let before = common::snapshot(&oci);

    let err = puzzlefs_fails(&[
        OsStr::new("build"),
        s(&tmp.path().join("missing")),
        OsStr::new(&t("x")),
    ]);
    assert!(err.contains("missing") && err.lines().count() == 1, "{err}");
    let err = puzzlefs_fails(&[OsStr::new("build"), s(&src), OsStr::new(&t("bad/tag"))]);
    assert!(err.contains("invalid tag"), "{err}");
    let err = puzzlefs_fails(&[OsStr::new("build"), s(&src), OsStr::new("no-tag-given")]);
    assert!(err.contains("OCI_DIR:TAG"), "{err}");
    let err = puzzlefs_fails(&[
        OsStr::new("build"),
        OsStr::new("--base"),
        OsStr::new("nope"),
        s(&src),
        OsStr::new(&t("y")),
    ]);
    assert!(err.contains("no image tagged \"nope\""), "{err}");
    let err = puzzlefs_fails(&[OsStr::new("ls"), OsStr::new(&t("nope"))]);
    assert!(
        err.contains("no image tagged") && err.contains("good"),
        "{err}"
    );
    for (flag, value) in [
        ("--chunk-size", "1000"),
        ("--chunk-size", "8M"),
        ("--chunk-size", "x"),
        ("--level", "23"),
        ("--frame-size", "0"),
    ] {
        let err = puzzlefs_fails(&[
            OsStr::new("build"),
            OsStr::new("-c"),
            OsStr::new(flag),
            OsStr::new(value),
            s(&src),
            OsStr::new(&t("z")),
        ]);
        assert!(err.contains(flag) && err.contains(value), "{err}");
    }
    let err = puzzlefs_fails(&[OsStr::new("inspect"), s(&src)]);
    assert!(err.contains("not an OCI image layout"), "{err}");
    assert!(common::diff(&before, &common::snapshot(&oci), common::Compare::ALL).is_empty());

    // A corrupt blob is named by check and makes cat fail.
    let manifest = fs::read_dir(oci.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::read(p).unwrap() == b"x")
        .expect("the one-byte chunk");
    fs::write(&manifest, b"y").unwrap();
    let out = std::process::Command::new(common::bin("puzzlefs"))
        .args([OsStr::new("check"), s(&oci)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let name = manifest.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(name) && text.contains("corrupt"), "{text}");
    let err = puzzlefs_fails(&[
        OsStr::new("cat"),
        OsStr::new(&t("good")),
        OsStr::new("/d/f"),
    ]);
    assert!(err.contains(name), "{err}");
}

#[test]
fn chunk_size_and_compression_choices_are_recorded_and_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let chunk_layers = |oci: &Path, extra: &[&str]| {
        let target = format!("{}:t", oci.display());
        // One blob per chunk, so the manifest lists the chunks' sizes.
        let mut args: Vec<&OsStr> = vec![OsStr::new("build"), OsStr::new("--pack-size=0")];
        args.extend(extra.iter().map(OsStr::new));
        args.extend([s(&src), OsStr::new(&target)]);
        puzzlefs(&args);
        let dir = puzzlefs_virtiofsd::oci::OciDir::open(oci).unwrap();
        let image = puzzlefs_virtiofsd::reader::Image::open(&dir, "t", Default::default()).unwrap();
        let layers: Vec<u64> = image
            .manifest()
            .layers
            .iter()
            .filter(|d| d.media_type == puzzlefs_virtiofsd::oci::MEDIA_TYPE_FILEDATA)
            .map(|d| d.size)
            .collect();
        (image.chunking().cloned().unwrap(), layers)
    };
    let (default, default_layers) = chunk_layers(&tmp.path().join("default"), &[]);
    assert_eq!(
        (default.min_size, default.avg_size, default.max_size),
        (16 << 10, 64 << 10, 256 << 10)
    );
    let (small, small_layers) = chunk_layers(&tmp.path().join("small"), &["--chunk-size", "4K"]);
    assert_eq!(
        (small.min_size, small.avg_size, small.max_size),
        (1 << 10, 4 << 10, 16 << 10)
    );
    assert!(
        small_layers.iter().all(|&n| n <= 16 << 10),
        "{small_layers:?}"
    );
    assert!(small_layers.len() > 4 * default_layers.len());

    let (zstd, _) = chunk_layers(
        &tmp.path().join("zstd"),
        &[
            "-c",
            "--level",
            "9",
            "--frame-size",
            "64K",
            "--chunk-size",
            "1M",
        ],
    );
    assert_eq!(zstd.avg_size, 1 << 20);
    assert_eq!((zstd.zstd_level, zstd.zstd_frame_size), (9, 64 << 10));
    puzzlefs(&[OsStr::new("check"), s(&tmp.path().join("zstd"))]);
}

/// The data blobs (packs) a tag's manifest lists, with their sizes.
fn data_blobs(oci: &Path, tag: &str) -> std::collections::BTreeMap<String, u64> {
    let dir = puzzlefs_virtiofsd::oci::OciDir::open(oci).unwrap();
    let m = dir.read_manifest(&dir.resolve(tag).unwrap()).unwrap();
    m.layers
        .iter()
        .filter(|d| d.media_type != puzzlefs_virtiofsd::oci::MEDIA_TYPE_ROOTFS)
        .map(|d| (d.digest.hex(), d.size))
        .collect()
}

#[test]
fn packs_hold_only_new_chunks_and_the_layout_is_not_trusted_blindly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let t = |tag: &str| format!("{}:{tag}", oci.display());
    let build = |tag: &str| build_compressed(&src, &t(tag), &["--pack-size", "256K"]);
    let v1 = build("v1");
    let packs1 = data_blobs(&oci, "v1");
    assert!(packs1.len() >= 3, "{packs1:?}");
    // Sealed once past the target: at most one frame group (1 MiB by default) more.
    assert!(
        packs1.values().all(|&size| size < (256 + 1024 + 1) << 10),
        "{packs1:?}"
    );
    assert!(
        n(&v1, "chunks") > 2 * packs1.len() as u64,
        "{v1} {packs1:?}"
    );

    // The same tree again stores nothing and gives the same image.
    let again = build("again");
    assert_eq!(n(&again, "new_chunks"), 0);
    assert_eq!(again["manifest_digest"], v1["manifest_digest"]);

    // A new version stores only its new chunks, in new packs; the rest stay in v1's packs.
    fs::write(src.join("data/small/003.txt"), b"changed").unwrap();
    fs::write(src.join("added"), common::pseudo_random(300_000, 9)).unwrap();
    let v2 = build("v2");
    let packs2 = data_blobs(&oci, "v2");
    let new: Vec<u64> = packs2
        .iter()
        .filter(|(d, _)| !packs1.contains_key(*d))
        .map(|(_, size)| *size)
        .collect();
    assert!(!new.is_empty() && new.len() < packs2.len(), "{packs2:?}");
    assert!(n(&v2, "new_chunks") <= 8, "{v2}");
    assert_eq!(
        n(&v2, "new_bytes"),
        new.iter().sum::<u64>() + n(&v2, "metadata_bytes")
    );
    puzzlefs(&[OsStr::new("check"), s(&oci)]);
    // A damaged pack is not built upon: its chunks are stored again, in new packs.
    let damaged = packs1.keys().next().unwrap();
    let path = oci.join("blobs/sha256").join(damaged);
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    // (Packed the same way again, they can make the damaged pack anew: it is then replaced.)
    let v3 = build("v3");
    assert!(n(&v3, "new_chunks") > 0, "{v3}");
    if data_blobs(&oci, "v3").contains_key(damaged) {
        let repaired = fs::read(&path).unwrap();
        assert_eq!(&hex::encode(Sha256::digest(&repaired)), damaged);
    }
    puzzlefs(&[OsStr::new("check"), OsStr::new(&t("v3"))]);
}

/// Text-like contents: lines drawn from a vocabulary of a thousand, so there is more to share
/// across chunks than inside one, varied enough for content-defined chunking.
fn text(lines: usize, seed: u64) -> Vec<u8> {
    let vocabulary: Vec<String> = (0..1000u64)
        .map(|v| {
            let h = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            format!(
                "{:016x} {} {:x}\n",
                h,
                "word ".repeat((v % 7) as usize + 1),
                h >> 20
            )
        })
        .collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::new();
    for _ in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend(vocabulary[(x % 1000) as usize].bytes());
    }
    out
}

/// `docs/NAME.txt` files of [`text`] under `src`: `(name, lines, seed)` each.
fn text_files(src: &Path, files: impl IntoIterator<Item = (String, usize, u64)>) {
    fs::create_dir_all(src.join("docs")).unwrap();
    for (name, lines, seed) in files {
        fs::write(src.join(format!("docs/{name}.txt")), text(lines, seed)).unwrap();
    }
}

/// The report of `puzzlefs build -c --json FLAGS SRC TARGET`.
fn build_compressed(src: &Path, target: &str, flags: &[&str]) -> serde_json::Value {
    let mut args: Vec<&OsStr> = ["build", "-c", "--json"].map(OsStr::new).to_vec();
    args.extend(flags.iter().map(OsStr::new));
    args.extend([s(src), OsStr::new(target)]);
    serde_json::from_slice(&puzzlefs(&args).stdout).unwrap()
}

#[test]
fn frame_groups_compress_chunks_together_and_later_builds_reuse_chunks_inside_them() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    text_files(
        &src,
        (0..12).map(|i| (format!("{i:02}"), 20_000 + 1000 * i, i as u64)),
    );
    let oci = tmp.path().join("oci");
    // Chunks are found by their contents in any pack of a layout: keep "alone" apart.
    let dir = |tag: &str| {
        if tag == "alone" {
            tmp.path().join("alone")
        } else {
            oci.clone()
        }
    };
    let build = |tag: &str, frame: &str| {
        let target = format!("{}:{tag}", dir(tag).display());
        build_compressed(&src, &target, &["--frame-size", frame])
    };
    let stored = |tag: &str| data_blobs(&dir(tag), tag).values().sum::<u64>();

    // Chunks compressed together are smaller than chunks compressed alone (16 KiB frames
    // hold one chunk or less here).
    let v1 = build("v1", "1M");
    build("alone", "16K");
    assert!(
        stored("v1") * 10 < stored("alone") * 9,
        "{} vs {}",
        stored("v1"),
        stored("alone")
    );
    let ls = |tag: &str| {
        let target = format!("{}:{tag}", oci.display());
        puzzlefs(&[OsStr::new("inspect"), OsStr::new(&target)]).stdout
    };
    assert!(String::from_utf8_lossy(&ls("v1")).contains("1024 KiB frames"));

    // A new version: one file changed, one added. Its other chunks are found inside v1's
    // groups (by their contents) and reused where they lie.
    fs::write(src.join("docs/05.txt"), text(25_000, 99)).unwrap();
    fs::write(src.join("docs/new.txt"), text(3_000, 7)).unwrap();
    let v2 = build("v2", "1M");
    assert!(n(&v2, "new_chunks") * 3 < n(&v1, "new_chunks"), "{v1} {v2}");
    let packs1 = data_blobs(&oci, "v1");
    let packs2 = data_blobs(&oci, "v2");
    let shared: u64 = packs2
        .iter()
        .filter(|(d, _)| packs1.contains_key(*d))
        .map(|(_, size)| size)
        .sum();
    assert!(shared > 0, "{packs1:?} {packs2:?}");
    assert!(
        n(&v2, "new_bytes") < stored("v1") / 2,
        "{v2} {}",
        stored("v1")
    );
    puzzlefs(&[OsStr::new("check"), s(&oci)]);
    for (tag, file) in [
        ("v2", "docs/05.txt"),
        ("v2", "docs/new.txt"),
        ("v2", "docs/11.txt"),
    ] {
        let target = format!("{}:{tag}", oci.display());
        let out = puzzlefs(&[OsStr::new("cat"), OsStr::new(&target), OsStr::new(file)]);
        assert_eq!(out.stdout, fs::read(src.join(file)).unwrap(), "{file}");
    }
}

#[test]
fn a_forged_chunk_digest_in_a_frame_group_is_caught_by_check_and_not_reused() {
    use puzzlefs_virtiofsd::format::{decode_rootfs, encode_rootfs, DecodeLimits, Digest};
    use puzzlefs_virtiofsd::oci::{OciDir, MEDIA_TYPE_ROOTFS};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    text_files(&src, (0..6).map(|i| (i.to_string(), 30_000, i as u64)));
    let oci = tmp.path().join("oci");
    let target = |tag: &str| format!("{}:{tag}", oci.display());
    let build = |tag: &str| build_compressed(&src, &target(tag), &[]);
    let v1 = build("v1");

    // The same image, but its metadata names one chunk inside a group by a wrong digest.
    let dir = OciDir::open(&oci).unwrap();
    let mut manifest = dir.read_manifest(&dir.resolve("v1").unwrap()).unwrap();
    let meta = manifest
        .layers
        .iter_mut()
        .find(|l| l.media_type == MEDIA_TYPE_ROOTFS)
        .unwrap();
    let mut rootfs = decode_rootfs(
        &dir.read_blob(&meta.digest, 1 << 30).unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    let pack = rootfs
        .packs
        .iter_mut()
        .find(|p| !p.parts.is_empty())
        .unwrap();
    pack.parts[0].digest = Digest::of(b"not these bytes");
    let forged = encode_rootfs(&rootfs).unwrap();
    let digest = Digest::of(&forged);
    dir.write_blob(&digest, &forged).unwrap();
    (meta.digest, meta.size, meta.annotations) = (digest, forged.len() as u64, None);
    dir.commit_manifest(&manifest, "forged").unwrap();
    dir.remove_tag("v1").unwrap();

    let err = puzzlefs_fails(&[OsStr::new("check"), OsStr::new(&target("forged"))]);
    assert!(err.contains("1 problem"), "{err}");
    let out = std::process::Command::new(common::bin("puzzlefs"))
        .args([OsStr::new("check"), OsStr::new(&target("forged"))])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("does not match its digest"), "{report}");

    // A build of the same tree takes nothing from the forged group: it stores it again.
    let v2 = build("v2");
    assert!(n(&v2, "new_chunks") > 0, "{v1} {v2}");
    puzzlefs(&[OsStr::new("check"), OsStr::new(&target("v2"))]);
    let out = puzzlefs(&[
        OsStr::new("cat"),
        OsStr::new(&target("v2")),
        OsStr::new("docs/0.txt"),
    ]);
    assert_eq!(out.stdout, fs::read(src.join("docs/0.txt")).unwrap());
}

/// A number in a `--json` report.
fn n(r: &serde_json::Value, k: &str) -> u64 {
    r[k].as_u64().unwrap()
}
