//! Shared helpers for integration tests: corner-case fixture trees, full-attribute tree
//! snapshots and their comparison, and running the built binaries.
#![allow(dead_code)]

pub mod craft;
pub mod fixture;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Everything we promise to preserve about one directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: Option<String>,
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub mtime: (i64, i64),
    pub nlink: u64,
    /// Smallest path of the hard-link group this entry belongs to (files only).
    pub link_group: Option<Vec<u8>>,
}

/// What to compare.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    pub mtime: bool,
    pub nlink: bool,
    pub xattrs: bool,
    pub owner: bool,
    /// Compare directory mtimes too (extraction may legitimately touch them otherwise).
    pub dir_mtime: bool,
    /// Compare device numbers.
    pub rdev: bool,
}

impl Compare {
    pub const ALL: Compare = Compare {
        mtime: true,
        nlink: true,
        xattrs: true,
        owner: true,
        dir_mtime: true,
        rdev: true,
    };

    /// What upstream PuzzleFS's mount reports faithfully: no timestamps, no link counts,
    /// no device numbers.
    pub const UPSTREAM_MOUNT: Compare = Compare {
        mtime: false,
        nlink: false,
        xattrs: true,
        owner: true,
        dir_mtime: false,
        rdev: false,
    };
}

fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Snapshots every entry under `root` (paths relative, root is "").
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Facts> {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(names) = xattr::list(&p) {
            for n in names {
                if let Ok(Some(v)) = xattr::get(&p, &n) {
                    xattrs.insert(n.as_bytes().to_vec(), v);
                }
            }
        }
        let key = rel.as_os_str().as_bytes().to_vec();
        let link_group = if kind == 'f' {
            Some(
                groups
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| key.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            key,
            Facts {
                kind,
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == 'd' { 0 } else { md.size() },
                sha256: (kind == 'f').then(|| sha256_file(&p)),
                link: (kind == 'l')
                    .then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
                rdev: if kind == 'c' || kind == 'b' {
                    md.rdev()
                } else {
                    0
                },
                xattrs,
                mtime: (md.mtime(), md.mtime_nsec()),
                nlink: md.nlink(),
                link_group,
            },
        );
        if kind == 'd' {
            let mut names: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        }
    }
    // Hard-link groups are named by their smallest member so traversal order does not matter.
    let mut smallest: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (k, f) in &out {
        if let Some(g) = &f.link_group {
            let e = smallest.entry(g.clone()).or_insert_with(|| k.clone());
            if k < e {
                *e = k.clone();
            }
        }
    }
    for f in out.values_mut() {
        if let Some(g) = &f.link_group {
            f.link_group = Some(smallest[g].clone());
        }
    }
    out
}

/// Differences between two snapshots, one line each (empty when equal).
pub fn diff(
    a: &BTreeMap<Vec<u8>, Facts>,
    b: &BTreeMap<Vec<u8>, Facts>,
    cmp: Compare,
) -> Vec<String> {
    let mut out = Vec::new();
    for (k, fa) in a {
        let name = String::from_utf8_lossy(k).into_owned();
        let Some(fb) = b.get(k) else {
            out.push(format!("{name}: missing on the right"));
            continue;
        };
        let mut x = fa.clone();
        let mut y = fb.clone();
        if !cmp.mtime || (x.kind == 'd' && !cmp.dir_mtime) || x.kind == 'l' && !cmp.dir_mtime {
            x.mtime = (0, 0);
            y.mtime = (0, 0);
        }
        if !cmp.nlink || x.kind == 'd' {
            x.nlink = 0;
            y.nlink = 0;
        }
        if !cmp.xattrs {
            x.xattrs.clear();
            y.xattrs.clear();
        }
        if !cmp.rdev {
            x.rdev = 0;
            y.rdev = 0;
        }
        if !cmp.owner {
            (x.uid, x.gid, y.uid, y.gid) = (0, 0, 0, 0);
        }
        if x != y {
            out.push(format!("{name}:\n  left  {x:?}\n  right {y:?}"));
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!(
                "{}: missing on the left",
                String::from_utf8_lossy(k)
            ));
        }
    }
    out
}

/// Panics with a readable report if the trees differ.
pub fn assert_same_tree(left: &Path, right: &Path, cmp: Compare) {
    let d = diff(&snapshot(left), &snapshot(right), cmp);
    assert!(
        d.is_empty(),
        "{} and {} differ in {} entries:\n{}",
        left.display(),
        right.display(),
        d.len(),
        d.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
}

/// Deterministic pseudo-random bytes (xorshift), distinct for every seed.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Builds the corner-case tree: every file type, hard links, xattrs in the user, trusted and
/// security namespaces, setuid/setgid/sticky, a sparse file, long and non-ASCII names, 2000
/// files in one directory, files spanning chunks and chunks spanning files, odd owners, and
/// nanosecond mtimes. Needs root (devices, trusted xattrs, chown).
pub fn corner_case_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        p
    };
    // Files spanning several chunks, and small files sharing chunks.
    w("data/big.bin", &pseudo_random(3 << 20, 1));
    w("data/zeros.bin", &vec![0u8; 1 << 20]);
    for i in 0..40 {
        w(
            &format!("data/small/{i:03}.txt"),
            &pseudo_random(5000 + i * 37, i as u64 + 7),
        );
    }
    w("empty", b"");
    // Hard links, including across directories.
    let h = w("links/original", b"linked contents\n");
    fs::hard_link(&h, root.join("links/second")).unwrap();
    fs::create_dir_all(root.join("other")).unwrap();
    fs::hard_link(&h, root.join("other/third")).unwrap();
    // Symlinks: relative, absolute, dangling, to a directory.
    symlink("original", root.join("links/rel")).unwrap();
    symlink("/etc/passwd", root.join("links/abs")).unwrap();
    symlink("does/not/exist", root.join("links/dangling")).unwrap();
    symlink("../data", root.join("links/dir")).unwrap();
    // Special files.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev-null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev-loop"),
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o660),
        rustix::fs::makedev(7, 200),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    // mknod honours the umask; set the modes explicitly.
    for (name, mode) in [("dev-null", 0o666), ("dev-loop", 0o660), ("fifo", 0o640)] {
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    // Permission bits.
    let suid = w("bin/suid", b"#!/bin/sh\n");
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let sgid = w("bin/sgid", b"#!/bin/sh\n");
    fs::set_permissions(&sgid, fs::Permissions::from_mode(0o2711)).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let none = w("bin/noperm", b"x");
    fs::set_permissions(&none, fs::Permissions::from_mode(0o000)).unwrap();
    // Owners.
    let owned = w("owned/by-1234", b"owned");
    std::os::unix::fs::lchown(&owned, Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(root.join("links/abs"), Some(42), Some(43)).unwrap();
    // Extended attributes in several namespaces, on files, directories and symlinks.
    xattr::set(&owned, "user.comment", b"hello").unwrap();
    xattr::set(&owned, "user.binary", &[0, 1, 2, 255]).unwrap();
    xattr::set(&owned, "trusted.secret", b"t").unwrap();
    // security.capability: cap_net_bind_service+ep, VFS_CAP_REVISION_2.
    let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    xattr::set(&suid, "security.capability", &cap).unwrap();
    xattr::set(root.join("data"), "user.dir", b"on a directory").unwrap();
    xattr::set(root.join("links/abs"), "trusted.onlink", b"on a symlink").unwrap();
    // Sparse file: 8 MiB with data at both ends.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(root.join("sparse")).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
    }
    // Names: long, non-ASCII, odd bytes.
    w(&"l".repeat(255), b"long name");
    w("unicode/ünïcødé-名前-🙂", b"utf8");
    let odd = root
        .join("unicode")
        .join(OsStr::from_bytes(b"latin1-\xe9\xff"));
    fs::write(odd, b"not utf8").unwrap();
    w("unicode/with space and 'quotes' \"double\"", b"q");
    w("unicode/newline\nin name", b"n");
    // A big directory.
    for i in 0..2000 {
        w(&format!("many/entry-{i:05}"), format!("{i}\n").as_bytes());
    }
    // Nanosecond mtimes, some before the epoch; directories last so writes do not bump them.
    let mut n = 0i64;
    let mut all: Vec<PathBuf> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        all.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        n += 1;
        let sec = if n % 50 == 0 {
            -86_400 * n
        } else {
            1_600_000_000 + n * 1000
        };
        set_mtime(&p, sec, (n * 7_654_321) % 1_000_000_000);
    }
}

/// Path of a binary built by this package.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "puzzlefs" => PathBuf::from(env!("CARGO_BIN_EXE_puzzlefs")),
        other => panic!("unknown binary {other}"),
    }
}

/// Runs `puzzlefs` with `args`; panics with its stderr if it fails.
pub fn puzzlefs(args: &[&OsStr]) -> Output {
    let out = Command::new(bin("puzzlefs")).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "puzzlefs {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `puzzlefs` expecting failure; returns stderr.
pub fn puzzlefs_fails(args: &[&OsStr]) -> String {
    let out = Command::new(bin("puzzlefs")).args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "puzzlefs {:?} should have failed; stdout: {}",
        args,
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `puzzlefs build [-c] SRC OCI:TAG`; returns `OCI:TAG`.
pub fn build_image(src: &Path, oci: &Path, tag: &str, compress: bool) -> String {
    let target = format!("{}:{tag}", oci.display());
    let mut args = vec![OsStr::new("build"), src.as_os_str(), OsStr::new(&target)];
    if compress {
        args.push(OsStr::new("-c"));
    }
    puzzlefs(&args);
    target
}

/// Runs upstream `puzzlefs build ARGS...` and returns what it printed; panics with its stderr
/// if it fails.
pub fn upstream_build(args: &[&OsStr]) -> String {
    let out = Command::new(upstream())
        .arg("build")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "upstream build {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Upstream PuzzleFS binary: $UPSTREAM_PUZZLEFS or the CI install location.
pub fn upstream() -> PathBuf {
    let p = std::env::var_os("UPSTREAM_PUZZLEFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/upstream-puzzlefs/bin/puzzlefs"));
    assert!(
        p.is_file(),
        "upstream puzzlefs not found at {} (run scripts/install-upstream.sh)",
        p.display()
    );
    p
}

/// Snapshot of an image read through the library (no mount, no extraction), comparable with
/// [`snapshot`] of the source tree.
pub fn image_snapshot(image: &puzzlefs_virtiofsd::reader::Image) -> BTreeMap<Vec<u8>, Facts> {
    use puzzlefs_virtiofsd::reader::{NodeData, Walk};
    use sha2::{Digest, Sha256};
    let table = image.table();
    let mut out = BTreeMap::new();
    let mut group: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for item in Walk::all(table) {
        let n = table.node(item.node);
        let kind = kind_char(n.mode);
        let sha256 = matches!(n.data, NodeData::File(_)).then(|| {
            let mut h = Sha256::new();
            image
                .read_with(item.node, 0, n.size, |p| {
                    h.update(p);
                    Ok::<(), puzzlefs_virtiofsd::reader::ReaderError>(())
                })
                .unwrap();
            hex::encode(h.finalize())
        });
        let link_group = (kind == 'f').then(|| {
            group
                .entry(item.node)
                .or_insert_with(|| item.path.clone())
                .clone()
        });
        out.insert(
            item.path.clone(),
            Facts {
                kind,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                size: if kind == 'd' { 0 } else { n.size },
                sha256,
                link: table.symlink_target(n).map(<[u8]>::to_vec),
                rdev: n.rdev(),
                xattrs: table
                    .xattrs(n)
                    .iter()
                    .map(|x| (x.key.clone(), x.value.clone()))
                    .collect(),
                mtime: (n.mtime_sec, i64::from(n.mtime_nsec)),
                nlink: u64::from(n.nlink),
                link_group,
            },
        );
    }
    out
}

/// A real Debian bookworm minbase tree (created once by scripts/debootstrap-tree.sh).
pub fn debian_tree() -> PathBuf {
    if let Some(p) = std::env::var_os("PFS_DEBIAN_TREE") {
        return PathBuf::from(p);
    }
    debian_tree_with(&[])
}

/// The bookworm minbase tree with `packages` installed by apt (a newer version of it), made
/// once by scripts/debootstrap-tree.sh.
pub fn debian_tree_with(packages: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debootstrap-tree.sh");
    let out = Command::new(script)
        .arg("bookworm")
        .args(packages)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debootstrap-tree.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// One letter for a file type, as the fixture manifests write it (`f`, `d`, `l`, `c`, `b`,
/// `p`, `s`).
pub fn kind_char(mode: u32) -> char {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFREG => 'f',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        _ => 's',
    }
}
