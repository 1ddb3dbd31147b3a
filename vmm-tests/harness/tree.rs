//! Host fixture trees, and the listing a guest prints of a mounted tree (type, mode, owner,
//! size, mtime, sha256, link target) compared with the same facts read on the host.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::common::pseudo_random;

/// The guest shell snippet that prints the listing of the tree at `dir`.
pub fn listing_script(dir: &str) -> String {
    format!(
        r#"cd {dir} || exit 1
find . -print0 | xargs -0 stat -c 'S|%n|%f|%u|%g|%s|%Y'
find . -type f -print0 | xargs -0 sha256sum | sed 's/^/H|/'
find . -type l | while read -r p; do echo "L|$p|$(readlink "$p")"; done
"#
    )
}

/// What we compare about one entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Not compared for directories (their size is file-system specific).
    pub size: Option<u64>,
    pub mtime: i64,
    pub sha256: Option<String>,
    pub link: Option<String>,
}

/// Path (as `./a/b`) -> facts.
pub type Listing = BTreeMap<String, Facts>;

/// Parses the output of [`listing_script`].
pub fn parse_listing(out: &str) -> Listing {
    let mut l = Listing::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("S|") {
            let f: Vec<&str> = rest.rsplitn(6, '|').collect();
            assert_eq!(f.len(), 6, "bad stat line {line:?}");
            let mode = u32::from_str_radix(f[4], 16).unwrap();
            let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
            let e = l.entry(f[5].to_string()).or_default();
            e.mode = mode;
            e.uid = f[3].parse().unwrap();
            e.gid = f[2].parse().unwrap();
            e.size = (!is_dir).then(|| f[1].parse().unwrap());
            e.mtime = f[0].parse().unwrap();
        } else if let Some(rest) = line.strip_prefix("H|") {
            let (hash, path) = rest.split_once("  ").expect("sha256sum line");
            l.entry(path.to_string()).or_default().sha256 = Some(hash.to_string());
        } else if let Some(rest) = line.strip_prefix("L|") {
            let (path, target) = rest.split_once('|').expect("link line");
            l.entry(path.to_string()).or_default().link = Some(target.to_string());
        }
    }
    l
}

/// The same facts, read on the host.
pub fn host_listing(root: &Path) -> Listing {
    let mut l = Listing::new();
    walk(root, ".", &mut l);
    l
}

fn walk(path: &Path, rel: &str, l: &mut Listing) {
    let m = fs::symlink_metadata(path).unwrap();
    let ft = m.file_type();
    let facts = Facts {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: (!ft.is_dir()).then_some(m.size()),
        mtime: m.mtime(),
        sha256: ft
            .is_file()
            .then(|| hex::encode(Sha256::digest(fs::read(path).unwrap()))),
        link: ft
            .is_symlink()
            .then(|| fs::read_link(path).unwrap().to_str().unwrap().to_string()),
    };
    l.insert(rel.to_string(), facts);
    if ft.is_dir() {
        for e in fs::read_dir(path).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            walk(&e.path(), &format!("{rel}/{name}"), l);
        }
    }
}

/// Asserts two listings are identical, naming the first differences.
pub fn assert_same(guest: &Listing, host: &Listing) {
    let mut diffs = Vec::new();
    for (p, h) in host {
        match guest.get(p) {
            None => diffs.push(format!("missing in guest: {p}")),
            Some(g) if g != h => diffs.push(format!("{p}: guest {g:?} host {h:?}")),
            _ => {}
        }
    }
    for p in guest.keys().filter(|p| !host.contains_key(*p)) {
        diffs.push(format!("only in guest: {p}"));
    }
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs[..diffs.len().min(20)].join("\n")
    );
}

/// A small tree with the usual corner cases: sizes around page boundaries, empty files and
/// directories, symlinks (relative, absolute, dangling), a hard link, odd modes and owners,
/// names with spaces and non-ASCII letters.
pub fn make_fixture(root: &Path) {
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    };
    for (i, size) in [0usize, 1, 100, 4095, 4096, 4097, 65543, 131072, 1048589]
        .iter()
        .enumerate()
    {
        w(&format!("sizes/f{size}"), &pseudo_random(*size, i as u64));
    }
    for d in 0..3 {
        for f in 0..12 {
            w(
                &format!("deep/d{d}/sub/file{f}.txt"),
                format!("dir {d} file {f}\n").as_bytes(),
            );
        }
    }
    w("name with spaces.txt", b"spaces\n");
    w("unicodé/naïve.txt", b"accents\n");
    fs::create_dir_all(root.join("empty/dir")).unwrap();
    symlink("sizes/f100", root.join("rel-link")).unwrap();
    symlink("/etc/hostname", root.join("abs-link")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    fs::hard_link(root.join("sizes/f4096"), root.join("hardlink")).unwrap();
    let modes = [
        ("private", 0o600),
        ("script.sh", 0o755),
        ("setuid", 0o4755),
        ("ro", 0o444),
    ];
    for (name, mode) in modes {
        w(&format!("modes/{name}"), name.as_bytes());
        fs::set_permissions(
            root.join("modes").join(name),
            fs::Permissions::from_mode(mode),
        )
        .unwrap();
    }
    w("owned/by-1000", b"user\n");
    chown(root.join("owned/by-1000"), Some(1000), Some(1000)).unwrap();
    chown(root.join("owned"), Some(1000), Some(100)).unwrap();
}

/// `count` files of `size` bytes under `root/big/`, returning their sha256s by name.
pub fn make_big_files(root: &Path, count: usize, size: usize) -> BTreeMap<String, String> {
    fs::create_dir_all(root.join("big")).unwrap();
    (0..count)
        .map(|i| {
            let data = pseudo_random(size, 1000 + i as u64);
            let name = format!("f{i}");
            fs::write(root.join("big").join(&name), &data).unwrap();
            (name, hex::encode(Sha256::digest(&data)))
        })
        .collect()
}

/// The tree the native front end's tests read: [`make_fixture`] plus two files of 3 MiB and a
/// bit (for random and multi-request reads), made once per test binary.
pub fn frontend_tree() -> &'static Path {
    static TREE: OnceLock<tempfile::TempDir> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        make_fixture(dir.path());
        make_big_files(dir.path(), 2, (3 << 20) + 123);
        dir
    })
    .path()
}
