//! The committed fixtures in `images/`: where they are, and their manifests (written by
//! `images/manifest.sh` from the real tree) as one comparable line per path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Facts;

/// The `images/` folder.
pub fn images() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images")
}

/// The OCI layout upstream PuzzleFS built (tags `plain`, `zstd`, `v2`).
pub fn upstream_layout() -> PathBuf {
    images().join("upstream")
}

/// Path -> the rest of its manifest line.
pub type Manifest = BTreeMap<String, String>;

/// Reads `images/tree-VERSION.manifest`.
pub fn manifest(version: &str) -> Manifest {
    let p = images().join(format!("tree-{version}.manifest"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let m: Manifest = text
        .lines()
        .map(|l| {
            let (path, rest) = l.split_once('\t').expect("a tab after the path");
            (path.to_string(), rest.to_string())
        })
        .collect();
    assert!(m.len() > 40 && m.contains_key("/"), "{}", p.display());
    m
}

/// One snapshot entry as `images/manifest.sh` writes it (without the path).
pub fn line(f: &Facts) -> String {
    let group = |p: &Vec<u8>| format!("/{}", String::from_utf8_lossy(p));
    let link_group = match &f.link_group {
        Some(g) if f.nlink > 1 => group(g),
        _ => "-".into(),
    };
    let detail = match f.kind {
        'f' => f.sha256.clone().unwrap_or_default(),
        'l' => String::from_utf8_lossy(f.link.as_deref().unwrap_or_default()).into_owned(),
        'c' | 'b' => {
            let dev = f.rdev as libc::dev_t;
            format!("{}:{}", libc::major(dev), libc::minor(dev))
        }
        _ => "-".into(),
    };
    let mut xattrs: Vec<String> = f
        .xattrs
        .iter()
        .map(|(k, v)| format!("{}=0x{}", String::from_utf8_lossy(k), hex::encode(v)))
        .collect();
    xattrs.sort();
    let xattrs = if xattrs.is_empty() {
        "-".into()
    } else {
        xattrs.join(",")
    };
    let size = if matches!(f.kind, 'f' | 'l') {
        f.size
    } else {
        0
    };
    format!(
        "{}\t{:o}\t{}\t{}\t{}\t{}\t{link_group}\t{detail}\t{xattrs}",
        f.kind,
        f.mode & 0o7777,
        f.uid,
        f.gid,
        size,
        f.nlink,
    )
}

/// A snapshot (as [`super::snapshot`] or [`super::image_snapshot`] make) as a manifest.
/// Hard-link groups are renamed after their smallest path, whichever member named them.
pub fn as_manifest(snap: &BTreeMap<Vec<u8>, Facts>) -> Manifest {
    let mut smallest: BTreeMap<&Vec<u8>, &Vec<u8>> = BTreeMap::new();
    for (k, f) in snap {
        if let Some(g) = &f.link_group {
            smallest.entry(g).or_insert(k);
        }
    }
    snap.iter()
        .map(|(k, f)| {
            let mut f = f.clone();
            f.link_group = f.link_group.map(|g| smallest[&g].clone());
            (format!("/{}", String::from_utf8_lossy(k)), line(&f))
        })
        .collect()
}

/// Differences, one readable line pair each (empty when equal).
pub fn differences(expected: &Manifest, got: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in expected {
        match got.get(p) {
            None => out.push(format!("{p}: missing")),
            Some(g) if g != e => out.push(format!("{p}:\n  expected {e}\n  got      {g}")),
            Some(_) => {}
        }
    }
    out.extend(
        got.keys()
            .filter(|p| !expected.contains_key(*p))
            .map(|p| format!("{p}: unexpected")),
    );
    out
}

/// Panics with the differences, if any.
pub fn assert_matches(what: &str, expected: &Manifest, got: &Manifest) {
    let d = differences(expected, got);
    assert!(
        d.is_empty(),
        "{what}: {} entries differ from the manifest:\n{}",
        d.len(),
        d.join("\n")
    );
}
