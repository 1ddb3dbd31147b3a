//! Walks the source tree: every entry's metadata, in the order that fixes inode numbers and
//! the file data stream.
//!
//! Directories are visited depth-first in pre-order, and each directory's children, sorted by
//! name bytewise, get consecutive inode numbers. Regular files join the data stream in the
//! order they get their numbers. This is the order upstream PuzzleFS uses, so identical trees
//! give identical chunks in both tools.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::stream::StreamFile;
use super::BuildError;
use crate::format::{DirEntry, Timespec, Xattr, ROOT_INO};

/// What kind of entry, with its type-specific data.
#[derive(Debug)]
pub(super) enum ScanKind {
    Dir(Vec<DirEntry>),
    File { size: u64 },
    Symlink(Vec<u8>),
    Chr { major: u64, minor: u64 },
    Blk { major: u64, minor: u64 },
    Fifo,
    Socket,
}

/// One inode of the source tree.
#[derive(Debug)]
pub(super) struct ScanNode {
    pub ino: u64,
    /// Path inside the image, without a leading `/`; empty for the root.
    pub rel: Vec<u8>,
    pub kind: ScanKind,
    pub uid: u32,
    pub gid: u32,
    pub permissions: u16,
    pub mtime: Timespec,
    pub xattrs: Vec<Xattr>,
}

/// The scanned tree: nodes indexed by `ino - 1`.
#[derive(Debug)]
pub(super) struct Tree {
    pub root: PathBuf,
    pub nodes: Vec<ScanNode>,
    /// Regular files in data-stream order.
    pub files: Vec<u64>,
}

impl Tree {
    /// Bytes in regular files.
    pub fn file_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|&ino| match self.nodes[(ino - 1) as usize].kind {
                ScanKind::File { size } => size,
                _ => 0,
            })
            .sum()
    }

    /// The regular files, in data-stream order.
    pub fn stream_files(&self) -> Vec<StreamFile> {
        self.files
            .iter()
            .map(|&ino| {
                let node = &self.nodes[(ino - 1) as usize];
                let size = match node.kind {
                    ScanKind::File { size } => size,
                    _ => 0,
                };
                let path = self.host_path(node);
                StreamFile { ino, path, size }
            })
            .collect()
    }

    pub fn host_path(&self, node: &ScanNode) -> PathBuf {
        if node.rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(&node.rel))
        }
    }
}

fn src_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Source {
        path: path.to_path_buf(),
        source,
    }
}

fn read_xattrs(path: &Path) -> Result<Vec<Xattr>, BuildError> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(src_err(path)(e)),
    };
    let mut out = Vec::new();
    for name in names {
        // A value can vanish between list and get; skip it then.
        if let Some(value) = xattr::get(path, &name).map_err(src_err(path))? {
            out.push(Xattr {
                key: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn node_from(
    ino: u64,
    rel: Vec<u8>,
    path: &Path,
    md: &fs::Metadata,
) -> Result<ScanNode, BuildError> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        ScanKind::Dir(Vec::new())
    } else if ft.is_file() {
        ScanKind::File { size: md.len() }
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(src_err(path))?;
        ScanKind::Symlink(target.into_os_string().into_encoded_bytes())
    } else if ft.is_char_device() {
        ScanKind::Chr {
            major: libc::major(md.rdev()).into(),
            minor: libc::minor(md.rdev()).into(),
        }
    } else if ft.is_block_device() {
        ScanKind::Blk {
            major: libc::major(md.rdev()).into(),
            minor: libc::minor(md.rdev()).into(),
        }
    } else if ft.is_fifo() {
        ScanKind::Fifo
    } else {
        ScanKind::Socket
    };
    Ok(ScanNode {
        ino,
        rel,
        kind,
        uid: md.uid(),
        gid: md.gid(),
        permissions: (md.mode() & 0o7777) as u16,
        mtime: Timespec {
            sec: md.mtime(),
            nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
        xattrs: read_xattrs(path)?,
    })
}

/// Scans `root`. Directories on other file systems are recorded but not entered.
/// `on_file` sees each regular file as soon as it is found, in data-stream order.
pub(super) fn scan(
    root: &Path,
    cancelled: &dyn Fn() -> bool,
    on_file: &mut dyn FnMut(StreamFile),
) -> Result<Tree, BuildError> {
    let root_md = fs::symlink_metadata(root).map_err(src_err(root))?;
    if !root_md.is_dir() {
        return Err(BuildError::NotADirectory(root.to_path_buf()));
    }
    let root_dev = root_md.dev();
    let mut tree = Tree {
        root: root.to_path_buf(),
        nodes: vec![node_from(ROOT_INO, Vec::new(), root, &root_md)?],
        files: Vec::new(),
    };
    let mut dev_of_dir: HashMap<u64, u64> = HashMap::from([(ROOT_INO, root_dev)]);
    let mut hard_links: HashMap<(u64, u64), u64> = HashMap::new();
    let mut stack = vec![ROOT_INO];
    while let Some(dir_ino) = stack.pop() {
        if cancelled() {
            return Err(BuildError::Cancelled);
        }
        if dev_of_dir.get(&dir_ino) != Some(&root_dev) {
            continue;
        }
        let dir_rel = tree.nodes[(dir_ino - 1) as usize].rel.clone();
        let dir_path = tree.host_path(&tree.nodes[(dir_ino - 1) as usize]);
        let mut names: Vec<Vec<u8>> = fs::read_dir(&dir_path)
            .map_err(src_err(&dir_path))?
            .map(|e| e.map(|e| e.file_name().into_encoded_bytes()))
            .collect::<Result<_, _>>()
            .map_err(src_err(&dir_path))?;
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        let mut subdirs = Vec::new();
        for name in names {
            let path = dir_path.join(OsStr::from_bytes(&name));
            let md = fs::symlink_metadata(&path).map_err(src_err(&path))?;
            if !md.is_dir() && md.nlink() > 1 {
                if let Some(&ino) = hard_links.get(&(md.dev(), md.ino())) {
                    entries.push(DirEntry { ino, name });
                    continue;
                }
            }
            let ino = tree.nodes.len() as u64 + 1;
            let mut rel = dir_rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            let node = node_from(ino, rel, &path, &md)?;
            match node.kind {
                ScanKind::Dir(_) => {
                    dev_of_dir.insert(ino, md.dev());
                    subdirs.push(ino);
                }
                ScanKind::File { size } => {
                    tree.files.push(ino);
                    on_file(StreamFile { ino, path, size });
                }
                _ => {}
            }
            if !md.is_dir() && md.nlink() > 1 {
                hard_links.insert((md.dev(), md.ino()), ino);
            }
            tree.nodes.push(node);
            entries.push(DirEntry { ino, name });
        }
        tree.nodes[(dir_ino - 1) as usize].kind = ScanKind::Dir(entries);
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
}
