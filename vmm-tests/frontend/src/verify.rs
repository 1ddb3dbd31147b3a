//! `--verify DIR`: the tree the back end served (names, types, sizes, modes, symlink
//! targets) and the sha256 of every file read, against the source tree on the host.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::workload::{source_path, Ctx};

/// Every path under `root`, relative ("" is the root itself).
fn source_paths(root: &Path) -> io::Result<BTreeSet<Vec<u8>>> {
    let mut out = BTreeSet::new();
    out.insert(Vec::new());
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(source_path(root, &rel))? {
            let e = e?;
            let name = e.file_name().as_bytes().to_vec();
            let child = if rel.is_empty() {
                name
            } else {
                [rel.as_slice(), b"/", &name].concat()
            };
            if e.file_type()?.is_dir() {
                stack.push(child.clone());
            }
            out.insert(child);
        }
    }
    Ok(out)
}

fn sha256_of(p: &Path) -> io::Result<String> {
    let mut h = Sha256::new();
    io::copy(&mut fs::File::open(p)?, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

fn show(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(p))
}

/// Appends to `ctx.differences` everything that differs from `root`. `tree` says whether a
/// walk ran (so names and attributes are checked), digests are checked for files read.
pub fn compare(ctx: &mut Ctx, root: &Path) {
    let mut diffs = Vec::new();
    if ctx.tree.len() > 1 {
        match source_paths(root) {
            Ok(src) => {
                for p in src.iter().filter(|p| !ctx.tree.contains_key(*p)) {
                    diffs.push(format!("{}: missing from the served tree", show(p)));
                }
                for p in ctx.tree.keys().filter(|p| !src.contains(*p)) {
                    diffs.push(format!("{}: served but not in the source", show(p)));
                }
            }
            Err(e) => diffs.push(format!("cannot list {}: {e}", root.display())),
        }
        for (path, node) in &ctx.tree {
            let Ok(md) = fs::symlink_metadata(source_path(root, path)) else {
                continue;
            };
            if md.mode() != node.mode {
                diffs.push(format!(
                    "{}: mode {:o}, source {:o}",
                    show(path),
                    node.mode,
                    md.mode()
                ));
            }
            if md.file_type().is_file() && md.size() != node.size {
                diffs.push(format!(
                    "{}: size {}, source {}",
                    show(path),
                    node.size,
                    md.size()
                ));
            }
            if md.file_type().is_symlink() {
                let want = fs::read_link(source_path(root, path))
                    .map(|t| t.as_os_str().as_bytes().to_vec())
                    .ok();
                if node.link != want {
                    diffs.push(format!(
                        "{}: symlink target {:?}, source {:?}",
                        show(path),
                        node.link.as_deref().map(String::from_utf8_lossy),
                        want.as_deref().map(String::from_utf8_lossy)
                    ));
                }
            }
        }
    }
    for (path, digest) in &ctx.digests {
        match sha256_of(&source_path(root, path)) {
            Ok(want) if &want == digest => {}
            Ok(want) => diffs.push(format!("{}: sha256 {digest}, source {want}", show(path))),
            Err(e) => diffs.push(format!("{}: cannot read the source: {e}", show(path))),
        }
    }
    ctx.differences.extend(diffs);
}
