//! Hostile images crafted by hand. Each must be refused with a clear one-line error (or, for
//! symlinks, extracted as inert symlinks), leave no DEST and no temporary directory behind,
//! and change nothing outside DEST.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use puzzlefs_virtiofsd::format::{Inode, Xattr};

use crate::common::craft::{
    chr, chunk, corrupt_blob, dir, dir_below, file, lying_seekable, symlink, Crafter,
};
use crate::common::{bin, diff, puzzlefs, puzzlefs_fails, snapshot, Compare, Facts};

type Snap = BTreeMap<Vec<u8>, Facts>;

struct Sandbox {
    tmp: tempfile::TempDir,
    /// A directory outside the sandbox that hostile symlinks aim at.
    outside: tempfile::TempDir,
    craft: Crafter,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::Builder::new()
            .prefix("pfs-outside-")
            .tempdir_in("/tmp")
            .unwrap();
        fs::write(outside.path().join("canary"), b"untouched").unwrap();
        fs::create_dir(tmp.path().join("out")).unwrap();
        let craft = Crafter::new(&tmp.path().join("oci"));
        Sandbox {
            tmp,
            outside,
            craft,
        }
    }

    fn commit(&self, layers: Vec<Vec<Inode>>, tag: &str) -> String {
        self.craft.commit(layers, tag);
        format!("{}:{tag}", self.craft.oci.path().display())
    }

    fn dest(&self) -> PathBuf {
        self.tmp.path().join("out/dest")
    }

    fn state(&self) -> (Snap, Snap) {
        (snapshot(self.tmp.path()), snapshot(self.outside.path()))
    }

    /// Nothing changed in the sandbox (but DEST, if `dest_ok`) nor outside it.
    fn assert_unchanged(&self, before: &(Snap, Snap), dest_ok: bool) {
        let mut now = snapshot(self.tmp.path());
        if dest_ok {
            now.retain(|k, _| !k.starts_with(b"out/dest"));
        }
        let lenient = Compare {
            dir_mtime: false,
            ..Compare::ALL
        };
        let d = diff(&before.0, &now, lenient);
        assert!(d.is_empty(), "sandbox changed: {d:#?}");
        let d = diff(&before.1, &snapshot(self.outside.path()), Compare::ALL);
        assert!(d.is_empty(), "outside directory changed: {d:#?}");
    }

    /// Extraction fails with one line containing every `want`, and changes nothing.
    fn refused(&self, target: &str, want: &[&str]) -> String {
        let before = self.state();
        let err = puzzlefs_fails(&[
            OsStr::new("extract"),
            OsStr::new(target),
            self.dest().as_os_str(),
        ]);
        assert_eq!(err.lines().count(), 1, "{err}");
        for w in want {
            assert!(err.contains(w), "expected {w:?} in: {err}");
        }
        self.assert_unchanged(&before, false);
        eprintln!("refused as expected: {}", err.trim_end());
        err
    }

    /// Extraction succeeds and changes nothing but DEST.
    fn extracts(&self, target: &str) {
        let before = self.state();
        puzzlefs(&[
            OsStr::new("extract"),
            OsStr::new(target),
            self.dest().as_os_str(),
        ]);
        self.assert_unchanged(&before, true);
    }
}

fn empty_file(ino: u64) -> Inode {
    file(ino, Vec::new())
}

#[test]
fn bad_names_are_refused() {
    let sb = Sandbox::new();
    let long = vec![b'n'; 256];
    for (i, name) in [&b".."[..], b".", b"a/b", b"/abs", b"nul\0x", b"", &long]
        .into_iter()
        .enumerate()
    {
        let t = sb.commit(
            vec![vec![dir(1, &[(name, 2)]), empty_file(2)]],
            &format!("n{i}"),
        );
        sb.refused(&t, &["invalid file name"]);
    }
}

#[test]
fn duplicate_names_are_refused_even_to_swap_a_symlink_for_a_directory() {
    let sb = Sandbox::new();
    let out = sb.outside.path().as_os_str().as_encoded_bytes().to_vec();
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"escape", 2), (b"escape", 3)]),
            symlink(2, &out),
            dir(3, &[(b"pwn", 4)]),
            empty_file(4),
        ]],
        "dup",
    );
    sb.refused(&t, &["two entries named \"escape\""]);
}

#[test]
fn cycles_hard_linked_directories_and_missing_inodes_are_refused() {
    let sb = Sandbox::new();
    let cases: Vec<(Vec<Inode>, &str)> = vec![
        (
            vec![dir(1, &[(b"d", 2)]), dir(2, &[(b"up", 1)])],
            "directory inode 1 is linked more than once",
        ),
        (
            vec![dir(1, &[(b"a", 2), (b"b", 2)]), dir(2, &[])],
            "a cycle or a hard-linked directory",
        ),
        (
            vec![dir(1, &[(b"a", 99)])],
            "refers to inode 99, which does not exist",
        ),
        (
            vec![dir(1, &[(b"a", u64::MAX)])],
            "refers to inode 18446744073709551615",
        ),
    ];
    for (i, (inodes, want)) in cases.into_iter().enumerate() {
        let t = sb.commit(vec![inodes], &format!("c{i}"));
        sb.refused(&t, &["invalid image metadata", want]);
    }
}

#[test]
fn inode_numbers_at_u64_max_extract_fine() {
    let mut sb = Sandbox::new();
    let data = sb.craft.blob(b"the last inode");
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"d", u64::MAX - 1), (b"f", u64::MAX)]),
            dir(u64::MAX - 1, &[(b"g", u64::MAX)]),
            file(u64::MAX, vec![chunk(data, 0, 14, false)]),
        ]],
        "max",
    );
    sb.extracts(&t);
    assert_eq!(fs::read(sb.dest().join("d/g")).unwrap(), b"the last inode");
    assert_eq!(fs::metadata(sb.dest().join("f")).unwrap().nlink(), 2);
}

#[test]
fn escaping_symlinks_are_created_never_followed() {
    let mut sb = Sandbox::new();
    let out = sb.outside.path().as_os_str().as_encoded_bytes().to_vec();
    let mut ups = b"../".repeat(40);
    ups.extend_from_slice(&out[1..]);
    let data = sb.craft.blob(b"payload");
    let lower = vec![
        dir(1, &[(b"shadowed", 7)]),
        symlink(7, &[&out[..], b"/canary"].concat()),
    ];
    let mut upper = vec![
        dir_below(
            1,
            &[
                (b"escape", 2),
                (b"escape-again", 2),
                (b"shadowed", 8),
                (b"up", 3),
                (b"z", 4),
                (b"d", 5),
            ],
        ),
        symlink(2, &out),
        symlink(3, &ups),
        file(4, vec![chunk(data, 0, 7, false)]),
        dir(5, &[(b"up2", 6), (b"canary", 4)]),
        symlink(6, b"../../.."),
        dir(8, &[(b"canary", 4)]),
    ];
    // Attributes of the escaping symlink: following it would change the outside directory.
    let esc = &mut upper[1];
    (esc.uid, esc.gid) = (4242, 4243);
    esc.mtime.sec = 86_400;
    esc.xattrs.push(Xattr {
        key: b"trusted.onlink".to_vec(),
        value: b"v".to_vec(),
    });
    // Distinct owners, so one followed symlink cannot mask another by restoring the owner.
    (upper[2].uid, upper[5].uid) = (4343, 4444);
    let t = sb.commit(vec![upper, lower], "escape");
    sb.extracts(&t);
    let dest = sb.dest();
    assert_eq!(
        fs::read_link(dest.join("escape")).unwrap(),
        sb.outside.path()
    );
    let a = fs::symlink_metadata(dest.join("escape")).unwrap();
    let b = fs::symlink_metadata(dest.join("escape-again")).unwrap();
    assert!(
        b.file_type().is_symlink() && a.ino() == b.ino(),
        "a hard link to the symlink itself"
    );
    assert_eq!(
        fs::read_link(dest.join("up")).unwrap().as_os_str().len(),
        ups.len()
    );
    assert!(fs::symlink_metadata(dest.join("shadowed"))
        .unwrap()
        .is_dir());
    assert_eq!(fs::read(dest.join("shadowed/canary")).unwrap(), b"payload");
    assert_eq!(fs::read(dest.join("d/canary")).unwrap(), b"payload");
    assert_eq!(
        fs::read(sb.outside.path().join("canary")).unwrap(),
        b"untouched"
    );
    assert_eq!(
        (a.uid(), a.mtime()),
        (4242, 86_400),
        "attributes went to the symlink"
    );
    let up2 = fs::symlink_metadata(dest.join("d/up2")).unwrap();
    assert_eq!(up2.uid(), 4444);
}

#[test]
fn a_corrupt_chunk_fails_and_leaves_no_partial_tree() {
    let mut sb = Sandbox::new();
    let good = sb.craft.blob(b"good data");
    let bad = sb.craft.blob(b"bad data, to be corrupted");
    let zbad = sb.craft.zstd_blob(&[5u8; 50_000], 8192);
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"a", 2), (b"b", 3), (b"c", 4), (b"z", 5)]),
            file(2, vec![chunk(good, 0, 9, false)]),
            file(3, vec![chunk(bad, 0, 25, false)]),
            file(4, vec![chunk(good, 0, 9, false)]),
            file(5, vec![chunk(zbad, 0, 50_000, true)]),
        ]],
        "corrupt",
    );
    corrupt_blob(&sb.craft.oci, &bad);
    let err = sb.refused(&t, &["/b: blob", &bad.hex(), "is corrupt"]);
    assert_eq!(err.matches(&bad.hex()).count(), 1, "said once: {err}");
    fs::write(sb.craft.oci.blob_path(&bad), b"bad data, to be corrupted").unwrap();
    corrupt_blob(&sb.craft.oci, &zbad);
    sb.refused(&t, &["/z: blob", &zbad.hex(), "is corrupt"]);
}

#[test]
fn chunk_ranges_and_seek_tables_that_lie_are_refused() {
    let mut sb = Sandbox::new();
    let small = sb.craft.blob(b"ten bytes!");
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"f", 2)]),
            file(2, vec![chunk(small, 5, 100, false)]),
        ]],
        "past",
    );
    sb.refused(
        &t,
        &["/f: blob", "is 10 bytes but a file needs bytes up to 105"],
    );

    let data = vec![42u8; 10_000];
    let lies = sb.craft.stored(&lying_seekable(&data, 20_000), true);
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"f", 2)]),
            file(2, vec![chunk(lies, 0, 10_000, true)]),
        ]],
        "lies",
    );
    sb.refused(
        &t,
        &["/f: blob", "holds 10000 bytes, seek table says 20000"],
    );

    // A bomb: 65 MiB of zeros in a tiny blob, above what a reader accepts.
    let bomb = sb.craft.zstd_blob(&vec![0u8; 65 << 20], 1 << 20);
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"f", 2)]),
            file(2, vec![chunk(bomb, 0, 1, true)]),
        ]],
        "bomb",
    );
    sb.refused(&t, &["/f: blob", &bomb.hex(), "exceeds the limit"]);
}

#[test]
fn chunk_lengths_that_overflow_are_refused() {
    let mut sb = Sandbox::new();
    let b = sb.craft.blob(b"x");
    let half = u64::MAX / 2 + 1;
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"f", 2)]),
            file(2, vec![chunk(b, 0, half, false), chunk(b, 0, half, false)]),
        ]],
        "sum",
    );
    // No chunk holds more than 64 MiB, so lengths that would overflow the file's size are
    // refused before they are summed.
    sb.refused(&t, &["inode 2: chunk range beyond the 64 MiB chunk limit"]);
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"f", 2)]),
            file(2, vec![chunk(b, u64::MAX, 2, false)]),
        ]],
        "range",
    );
    sb.refused(&t, &["inode 2: chunk range overflows"]);
}

/// Makes the sandbox usable by an unprivileged user.
fn open_up(p: &Path) {
    let md = fs::symlink_metadata(p).unwrap();
    if md.is_dir() {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        for e in fs::read_dir(p).unwrap() {
            open_up(&e.unwrap().path());
        }
    } else if md.is_file() {
        fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[test]
fn device_nodes_need_root_unless_skipped() {
    let mut sb = Sandbox::new();
    let data = sb.craft.blob(b"data");
    let mut f = file(3, vec![chunk(data, 0, 4, false)]);
    f.xattrs.push(Xattr {
        key: b"trusted.secret".to_vec(),
        value: b"v".to_vec(),
    });
    let t = sb.commit(
        vec![vec![
            dir(1, &[(b"d", 4), (b"f", 3)]),
            dir(4, &[(b"null", 2)]),
            chr(2, 1, 3),
            f,
        ]],
        "dev",
    );
    // A missing setpriv must fail the test: skipping would leave the refusal untested.
    match Command::new("setpriv").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "setpriv (util-linux) is needed to extract as an unprivileged user: {other:?}; \
             apt-get install util-linux"
        ),
    }
    open_up(sb.tmp.path());
    std::os::unix::fs::chown(sb.tmp.path().join("out"), Some(65534), Some(65534)).unwrap();
    let nobody = |extra: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin("puzzlefs"))
            .arg("extract")
            .args(extra)
            .arg(&t)
            .arg(sb.dest())
            .output()
            .unwrap()
    };
    let before = sb.state();
    let out = nobody(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("/d/null: device nodes can only be created by root"),
        "{err}"
    );
    sb.assert_unchanged(&before, false);

    let out = nobody(&["--skip-devices"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("skipped 1 device nodes") && err.contains("skipped 1 trusted"),
        "{err}"
    );
    assert!(!sb.dest().join("d/null").exists());
    assert_eq!(fs::read(sb.dest().join("f")).unwrap(), b"data");
    assert_eq!(fs::metadata(sb.dest().join("f")).unwrap().uid(), 65534);
    sb.assert_unchanged(&before, true);
}
