//! Depth-first creation of the image's tree inside the staged directory.
//!
//! Every entry is created relative to the descriptor of its directory, which was itself
//! created by us a moment before and opened with `O_DIRECTORY | O_NOFOLLOW`. No path string is
//! ever resolved through anything the image made, so a symlink in the image is only ever
//! created, never followed. One directory descriptor is held at a time: going down opens the
//! new child, going up opens `..` and checks it is the directory we came from.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, FileType, Mode};

use super::dest::DIR_FLAGS;
use super::error::{on, show};
use super::{ExtractError, ExtractOptions, ExtractReport};
use crate::reader::{Image, NodeId, ROOT};

/// Deepest directory nesting extracted (paths that deep are already far past `PATH_MAX`).
pub const MAX_DEPTH: usize = 2048;

const NAME_MAX: usize = 255;

/// Checks a name about to be created in a directory. The reader validated it already; this
/// is the last line of defence right where a bad name would do harm.
pub fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty name")
    } else if name == b"." || name == b".." {
        Err("names the directory itself or its parent")
    } else if name.contains(&b'/') {
        Err("contains '/'")
    } else if name.contains(&0) {
        Err("contains a NUL byte")
    } else if name.len() > NAME_MAX {
        Err("longer than 255 bytes")
    } else {
        Ok(())
    }
}

/// `dir/name` as an image path (no leading `/`).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A directory being filled.
struct Frame {
    node: NodeId,
    /// Index of the next entry to create.
    next: usize,
    /// Length of the parent's path, to restore when leaving.
    parent_len: usize,
    /// (st_dev, st_ino) of the directory, to recognise it when climbing back through `..`.
    id: (u64, u64),
}

/// State of one extraction.
pub struct Extractor<'a> {
    pub(super) image: &'a Image,
    pub(super) opts: &'a ExtractOptions,
    /// Running as root: restore owners, and every failure to set an attribute is an error.
    pub(super) privileged: bool,
    /// The staged root directory.
    pub(super) root: BorrowedFd<'a>,
    /// Where the first name of each multiply-linked node was created: (directory path, name).
    pub(super) links: HashMap<NodeId, (Vec<u8>, Box<[u8]>)>,
    pub(super) report: ExtractReport,
}

fn ident(fd: &OwnedFd) -> rustix::io::Result<(u64, u64)> {
    let st = rfs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

impl<'a> Extractor<'a> {
    /// Creates the whole tree; directories get their attributes after their contents.
    pub fn run(&mut self) -> Result<(), ExtractError> {
        let table = self.image.table();
        let mut cur = rfs::openat(self.root, c".", DIR_FLAGS, Mode::empty())
            .map_err(|e| ExtractError::io(b"", "open directory", e))?;
        let mut path: Vec<u8> = Vec::new();
        let mut stack = vec![Frame {
            node: ROOT,
            next: 0,
            parent_len: 0,
            id: ident(&cur).map_err(|e| ExtractError::io(b"", "stat directory", e))?,
        }];
        self.report.dirs += 1;
        while let Some(top) = stack.last_mut() {
            let entries = table.entries(top.node);
            if let Some(entry) = entries.get(top.next) {
                let entry_name = table.name(entry);
                top.next += 1;
                check_name(entry_name).map_err(|why| ExtractError::UnsafeName {
                    dir: show(&path),
                    name: String::from_utf8_lossy(entry_name).into_owned(),
                    why,
                })?;
                let node = table.node(entry.node);
                if FileType::from_raw_mode(node.mode) != FileType::Directory {
                    self.leaf(&cur, &path, entry_name, entry.node)?;
                    continue;
                }
                let child_path = join(&path, entry_name);
                if stack.len() > MAX_DEPTH {
                    return Err(ExtractError::TooDeep {
                        path: show(&child_path),
                        limit: MAX_DEPTH,
                    });
                }
                rfs::mkdirat(&cur, entry_name, Mode::from_raw_mode(0o700))
                    .map_err(on(&child_path, "create directory"))?;
                let child = rfs::openat(&cur, entry_name, DIR_FLAGS, Mode::empty())
                    .map_err(on(&child_path, "open directory"))?;
                let id = ident(&child).map_err(on(&child_path, "stat directory"))?;
                stack.push(Frame {
                    node: entry.node,
                    next: 0,
                    parent_len: path.len(),
                    id,
                });
                path = child_path;
                cur = child;
                self.report.dirs += 1;
            } else {
                let done = stack.pop().expect("stack is not empty here");
                // Open the parent before the directory's final mode might forbid searching it.
                let parent = match stack.last() {
                    Some(up) => Some(self.climb(&cur, &path, up.id)?),
                    None => None,
                };
                self.apply_attrs(super::node::Target::Fd(cur.as_fd()), &path, done.node)?;
                path.truncate(done.parent_len);
                match parent {
                    Some(p) => cur = p,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Opens the parent of `cur` through `..` and checks it is the directory `expected`.
    fn climb(
        &self,
        cur: &OwnedFd,
        path: &[u8],
        expected: (u64, u64),
    ) -> Result<OwnedFd, ExtractError> {
        let up =
            rfs::openat(cur, c"..", DIR_FLAGS, Mode::empty()).map_err(on(path, "open parent"))?;
        if ident(&up).map_err(on(path, "stat parent"))? != expected {
            return Err(ExtractError::io(
                path,
                "return to parent",
                std::io::Error::other("the directory was moved during extraction"),
            ));
        }
        Ok(up)
    }

    /// Creates a non-directory entry, or a hard link to an earlier name of the same node.
    fn leaf(
        &mut self,
        dir: &OwnedFd,
        dir_path: &[u8],
        name: &[u8],
        id: NodeId,
    ) -> Result<(), ExtractError> {
        let node = self.image.table().node(id);
        if node.nlink > 1 {
            if let Some((src_dir, src_name)) = self.links.get(&id) {
                let path = join(dir_path, name);
                let opened;
                let src = if src_dir[..] == *dir_path {
                    dir.as_fd()
                } else {
                    opened = self.open_path(src_dir)?;
                    opened.as_fd()
                };
                // Flags 0: a hard link to a symlink links the symlink itself.
                rfs::linkat(src, &src_name[..], dir, name, rfs::AtFlags::empty())
                    .map_err(|e| ExtractError::io(&path, "create hard link", e))?;
                self.report.hard_links += 1;
                return Ok(());
            }
        }
        if self.create(dir, dir_path, name, id)? && node.nlink > 1 {
            self.links.insert(id, (dir_path.to_vec(), name.into()));
        }
        Ok(())
    }

    /// Opens a directory created earlier in this extraction, one component at a time, each
    /// with `O_NOFOLLOW`.
    fn open_path(&self, path: &[u8]) -> Result<OwnedFd, ExtractError> {
        let mut cur = rfs::openat(self.root, c".", DIR_FLAGS, Mode::empty())
            .map_err(|e| ExtractError::io(b"", "open directory", e))?;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            cur = rfs::openat(&cur, part, DIR_FLAGS, Mode::empty())
                .map_err(|e| ExtractError::io(path, "open directory", e))?;
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_clobber_are_refused() {
        let long = vec![b'x'; 256];
        for (name, why) in [
            (&b""[..], "empty"),
            (b".", "itself"),
            (b"..", "parent"),
            (b"a/b", "'/'"),
            (b"/abs", "'/'"),
            (b"nul\0byte", "NUL"),
            (&long[..], "255"),
        ] {
            let got = check_name(name).expect_err("refused");
            assert!(got.contains(why), "{name:?}: {got}");
        }
        for ok in [&b"a"[..], b"...", b".hidden", b"\xff\xfe", &[b'y'; 255][..]] {
            check_name(ok).unwrap();
        }
    }

    #[test]
    fn join_builds_image_paths() {
        assert_eq!(join(b"", b"a"), b"a");
        assert_eq!(join(b"a/b", b"c"), b"a/b/c");
        assert_eq!(show(&join(b"a", b"c")), "/a/c");
    }
}
