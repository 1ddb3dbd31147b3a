//! The guest's full listing of a mounted tree (`pfs-list`, from vmm-tests/guest/pfs-list.c in
//! the initramfs) turned into the same [`Facts`] the host takes with `common::snapshot`, and
//! the comparison of the two.

use std::collections::BTreeMap;

use crate::common::{diff, Compare, Facts};

/// Path (relative, the root is empty) -> facts, as `common::snapshot` keys them.
pub type Snapshot = BTreeMap<Vec<u8>, Facts>;

/// The guest command that prints the listing of the tree at `dir`.
pub fn pfs_list(dir: &str) -> String {
    format!("pfs-list {dir}\n")
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?} in the guest listing: {e}"))
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> T {
    s.parse()
        .unwrap_or_else(|_| panic!("bad {what} {s:?} in the guest listing"))
}

/// Parses what `pfs-list` printed. Panics on its problem lines (`X ...`): the guest could
/// not stat, read or list something.
pub fn parse(out: &str) -> Snapshot {
    let problems: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("X\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let path = String::from_utf8_lossy(&unhex(f[0])).into_owned();
            format!("{path:?}: {}", f[1..].join(" "))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "the guest hit {} problems:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
    let mut snap = Snapshot::new();
    let mut by_ino: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for line in out.lines().filter_map(|l| l.strip_prefix("E\t")) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 15, "bad listing line {line:?}");
        let path = unhex(f[0]);
        let kind = f[1].chars().next().unwrap();
        let ino: u64 = num(f[9], "ino");
        let xattrs = if f[14] == "-" {
            BTreeMap::new()
        } else {
            f[14]
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("xattr name=value");
                    (unhex(k), unhex(v))
                })
                .collect()
        };
        let link_group = (kind == 'f').then(|| {
            let g = by_ino.entry(ino).or_insert_with(|| path.clone());
            if path < *g {
                *g = path.clone();
            }
            ino.to_le_bytes().to_vec()
        });
        let facts = Facts {
            kind,
            mode: u32::from_str_radix(f[2], 8).expect("octal mode"),
            uid: num(f[3], "uid"),
            gid: num(f[4], "gid"),
            size: if kind == 'd' { 0 } else { num(f[5], "size") },
            mtime: (num(f[6], "mtime"), num(f[7], "mtime nsec")),
            nlink: num(f[8], "nlink"),
            rdev: if kind == 'c' || kind == 'b' {
                libc::makedev(num(f[10], "major"), num(f[11], "minor"))
            } else {
                0
            },
            sha256: (f[12] != "-").then(|| f[12].to_string()),
            link: (f[13] != "-").then(|| unhex(f[13])),
            xattrs,
            link_group,
        };
        assert!(
            snap.insert(path.clone(), facts).is_none(),
            "{:?} listed twice",
            String::from_utf8_lossy(&path)
        );
    }
    // Hard-link groups are named by their smallest member, as on the host.
    for facts in snap.values_mut() {
        if let Some(g) = &facts.link_group {
            let ino = u64::from_le_bytes(g[..8].try_into().unwrap());
            facts.link_group = Some(by_ino[&ino].clone());
        }
    }
    snap
}

/// Asserts the guest saw what the host has: every fact `cmp` names, plus the link count of
/// directories (2 + subdirectories, which `common::diff` leaves out).
pub fn assert_same(guest: &Snapshot, host: &Snapshot, cmp: Compare) {
    let mut d = diff(host, guest, cmp);
    if cmp.nlink {
        for (path, h) in host.iter().filter(|(_, h)| h.kind == 'd') {
            if let Some(g) = guest.get(path).filter(|g| g.nlink != h.nlink) {
                d.push(format!(
                    "{}: directory nlink host {} guest {}",
                    String::from_utf8_lossy(path),
                    h.nlink,
                    g.nlink
                ));
            }
        }
    }
    assert!(
        d.is_empty(),
        "host (left) and guest (right) differ in {} entries:\n{}",
        d.len(),
        d.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(host.len() > 1, "an empty tree proves nothing");
}
