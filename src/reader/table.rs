//! The merged, validated view of an image's metadata layers: one node per reachable inode.
//!
//! Everything a hostile image could get wrong is checked here once, at open time: names,
//! dangling entries, directory cycles, duplicate inodes, offsets that overflow. After that,
//! lookups are plain indexing.

use std::collections::{HashMap, HashSet, VecDeque};

use super::image::BlobInfo;
use super::ReaderError;
use crate::format::{Digest, Inode, InodeKind, Rootfs, Timespec, Xattr, ROOT_INO};

/// Index of a node in the table; [`ROOT`] is the root directory.
pub type NodeId = u32;

/// The root directory's node.
pub const ROOT: NodeId = 0;

/// Longest entry name an image may hold, in bytes.
pub const NAME_MAX: usize = 255;
const SYMLINK_MAX: usize = 4095;
const XATTR_NAME_MAX: usize = 255;
const XATTR_VALUE_MAX: usize = 65536;

/// A file, directory or other object in the image.
#[derive(Debug, Clone)]
pub struct Node {
    /// Inode number as stored in the image (reported as `st_ino`).
    pub ino: u64,
    /// Full `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (also reported as change and access time).
    pub mtime: Timespec,
    /// Number of names referring to this node (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Device number for character and block devices.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// Extended attributes.
    pub xattrs: Box<[Xattr]>,
    /// sha256 of a regular file's contents, when the image records it (boxed: most
    /// readers never look at it, and the table is a large part of an opened image).
    pub file_digest: Option<Box<Digest>>,
    /// Type-specific contents.
    pub data: NodeData,
}

/// What a node holds.
#[derive(Debug, Clone)]
pub enum NodeData {
    /// Directory entries, sorted by name.
    Dir(Box<[Entry]>),
    /// File contents, in file order.
    File(Box<[Extent]>),
    /// Symlink target.
    Symlink(Box<[u8]>),
    /// Devices, fifos, sockets.
    Other,
}

/// A directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name (validated: 1..=255 bytes, no `/` or NUL, not `.` or `..`).
    pub name: Box<[u8]>,
    /// The node it names.
    pub node: NodeId,
}

/// A contiguous range of a file stored in one blob.
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    /// Offset in the file.
    pub file_offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Index into [`InodeTable::blobs`].
    pub blob: u32,
    /// Offset in the blob's uncompressed contents.
    pub blob_offset: u64,
}

/// All reachable nodes of an image plus the blobs their data lives in.
#[derive(Debug)]
pub struct InodeTable {
    nodes: Vec<Node>,
    blobs: Vec<BlobInfo>,
}

fn bad(msg: impl Into<String>) -> ReaderError {
    ReaderError::BadMetadata(msg.into())
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn check_name(name: &[u8]) -> Result<(), ReaderError> {
    if name.is_empty()
        || name.len() > NAME_MAX
        || name == b"."
        || name == b".."
        || name.iter().any(|&b| b == b'/' || b == 0)
    {
        return Err(bad(format!("invalid file name {:?}", show(name))));
    }
    Ok(())
}

struct Builder<'a> {
    /// Definitions of each inode number, topmost layer first.
    defs: HashMap<u64, Vec<&'a Inode>>,
    nodes: Vec<Node>,
    node_of: HashMap<u64, NodeId>,
    blobs: Vec<BlobInfo>,
    blob_of: HashMap<Digest, u32>,
    verity: &'a std::collections::BTreeMap<Digest, [u8; 32]>,
}

impl InodeTable {
    /// Drops every file's recorded sha256 (for readers that never check them).
    pub fn forget_file_digests(&mut self) {
        for node in &mut self.nodes {
            node.file_digest = None;
        }
    }

    /// Merges layers and validates the tree.
    pub fn build(rootfs: &Rootfs) -> Result<Self, ReaderError> {
        let mut defs: HashMap<u64, Vec<&Inode>> = HashMap::new();
        let mut last_layer: HashMap<u64, usize> = HashMap::new();
        for (depth, layer) in rootfs.layers.iter().enumerate() {
            for inode in layer {
                let v = defs.entry(inode.ino).or_default();
                if last_layer.insert(inode.ino, depth) == Some(depth) {
                    // Upstream's `--base-layer` writes a whiteout next to a hard-linked file
                    // that lost one of its names: the file, still linked, wins.
                    let prev = v.last_mut().expect("defined in this layer");
                    match (
                        prev.kind == InodeKind::Whiteout,
                        inode.kind == InodeKind::Whiteout,
                    ) {
                        (true, false) => *prev = inode,
                        (false, true) => {}
                        _ => {
                            return Err(bad(format!(
                                "inode {} defined twice in layer {depth}",
                                inode.ino
                            )))
                        }
                    }
                    continue;
                }
                v.push(inode);
            }
        }
        let mut b = Builder {
            defs,
            nodes: Vec::new(),
            node_of: HashMap::new(),
            blobs: Vec::new(),
            blob_of: HashMap::new(),
            verity: &rootfs.verity,
        };
        b.walk()?;
        Ok(InodeTable {
            nodes: b.nodes,
            blobs: b.blobs,
        })
    }

    /// A node by id. Ids come from this table, so an unknown id is a caller bug; callers that
    /// take ids from outside use [`InodeTable::get`].
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// A node by id, or `None` for an id this table never handed out.
    pub fn get(&self, id: u64) -> Option<&Node> {
        usize::try_from(id).ok().and_then(|i| self.nodes.get(i))
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the table is empty (never: the root always exists).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every blob referenced by a file.
    pub fn blobs(&self) -> &[BlobInfo] {
        &self.blobs
    }

    /// Looks a name up in a directory.
    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.node(dir).data {
            NodeData::Dir(entries) => entries
                .binary_search_by(|e| e.name.as_ref().cmp(name))
                .ok()
                .map(|i| entries[i].node),
            _ => None,
        }
    }

    /// Entries of a directory (empty for other nodes).
    pub fn entries(&self, dir: NodeId) -> &[Entry] {
        match &self.node(dir).data {
            NodeData::Dir(e) => e,
            _ => &[],
        }
    }

    /// Resolves an absolute or root-relative path, following symlinks as if the image were
    /// the root directory (`..` never leaves it). With `follow_last` false, a final symlink is
    /// returned itself.
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<NodeId, ReaderError> {
        let mut hops = 0;
        self.resolve_from(ROOT, Vec::new(), path, follow_last, &mut hops)
    }

    fn resolve_from(
        &self,
        start: NodeId,
        mut stack: Vec<NodeId>,
        path: &[u8],
        follow_last: bool,
        hops: &mut u32,
    ) -> Result<NodeId, ReaderError> {
        let shown = || show(path);
        let mut cur = if path.starts_with(b"/") {
            stack.clear();
            ROOT
        } else {
            start
        };
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .collect();
        for (i, part) in parts.iter().enumerate() {
            if *part == b".." {
                cur = stack.pop().unwrap_or(ROOT);
                continue;
            }
            if !matches!(self.node(cur).data, NodeData::Dir(_)) {
                return Err(ReaderError::NotADirectory(shown()));
            }
            let next = self
                .lookup(cur, part)
                .ok_or_else(|| ReaderError::NotFound(shown()))?;
            let last = i + 1 == parts.len();
            if let NodeData::Symlink(target) = &self.node(next).data {
                if !last || follow_last {
                    *hops += 1;
                    if *hops > 40 {
                        return Err(ReaderError::SymlinkLoop(shown()));
                    }
                    cur = self.resolve_from(cur, stack.clone(), target, true, hops)?;
                    // The directory stack after a symlink is not tracked; `..` past it goes to
                    // the root, which can only make resolution stricter.
                    stack.clear();
                    continue;
                }
            }
            stack.push(cur);
            cur = next;
        }
        Ok(cur)
    }
}

impl<'a> Builder<'a> {
    fn top(&self, ino: u64) -> Option<&'a Inode> {
        self.defs.get(&ino).and_then(|v| v.first().copied())
    }

    fn walk(&mut self) -> Result<(), ReaderError> {
        let root = self
            .top(ROOT_INO)
            .ok_or_else(|| bad("no root directory (inode 1)"))?;
        if !root.is_dir() {
            return Err(bad("inode 1 is not a directory"));
        }
        self.add_node(root)?;
        let mut queue = VecDeque::from([(ROOT, ROOT_INO)]);
        while let Some((dir_id, dir_ino)) = queue.pop_front() {
            let merged = self.merged_entries(dir_ino)?;
            let mut entries = Vec::with_capacity(merged.len());
            let mut subdirs: u32 = 0;
            for (name, target_ino) in merged {
                let Some(target) = self.top(target_ino) else {
                    return Err(bad(format!(
                        "entry {:?} refers to inode {target_ino}, which does not exist",
                        show(name)
                    )));
                };
                if target.kind == InodeKind::Whiteout {
                    continue;
                }
                let id = match self.node_of.get(&target_ino) {
                    Some(&id) => {
                        if target.is_dir() {
                            return Err(bad(format!(
                                "directory inode {target_ino} is linked more than once \
                                 (a cycle or a hard-linked directory)"
                            )));
                        }
                        let n = &mut self.nodes[id as usize];
                        n.nlink = n.nlink.saturating_add(1);
                        id
                    }
                    None => {
                        let id = self.add_node(target)?;
                        if target.is_dir() {
                            queue.push_back((id, target_ino));
                        }
                        id
                    }
                };
                if target.is_dir() {
                    subdirs += 1;
                }
                entries.push(Entry {
                    name: name.into(),
                    node: id,
                });
            }
            entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            let dir = &mut self.nodes[dir_id as usize];
            dir.nlink = 2u32.saturating_add(subdirs);
            dir.size = entries.len() as u64;
            dir.data = NodeData::Dir(entries.into());
        }
        Ok(())
    }

    /// The entries of directory `ino`: its topmost definition's, plus lower layers' while
    /// `lookBelow` is set, upper names shadowing lower ones.
    fn merged_entries(&self, ino: u64) -> Result<Vec<(&'a [u8], u64)>, ReaderError> {
        let mut out = Vec::new();
        let mut seen: HashSet<&'a [u8]> = HashSet::new();
        for def in self.defs.get(&ino).into_iter().flatten() {
            let InodeKind::Dir {
                entries,
                look_below,
            } = &def.kind
            else {
                break;
            };
            let mut here: HashSet<&[u8]> = HashSet::with_capacity(entries.len());
            for e in entries {
                check_name(&e.name)?;
                if !here.insert(&e.name) {
                    return Err(bad(format!(
                        "directory inode {ino} has two entries named {:?}",
                        show(&e.name)
                    )));
                }
                if seen.insert(&e.name) {
                    out.push((&e.name[..], e.ino));
                }
            }
            if !look_below {
                break;
            }
        }
        Ok(out)
    }

    fn add_node(&mut self, inode: &'a Inode) -> Result<NodeId, ReaderError> {
        let id = NodeId::try_from(self.nodes.len()).map_err(|_| bad("too many inodes"))?;
        for x in &inode.xattrs {
            if x.key.is_empty() || x.key.len() > XATTR_NAME_MAX || x.key.contains(&0) {
                return Err(bad(format!("inode {}: invalid xattr name", inode.ino)));
            }
            if x.value.len() > XATTR_VALUE_MAX {
                return Err(bad(format!("inode {}: xattr value over 64 KiB", inode.ino)));
            }
        }
        if inode.mtime.nsec >= 1_000_000_000 {
            return Err(bad(format!(
                "inode {}: mtime nanoseconds out of range",
                inode.ino
            )));
        }
        let dev = |major: u64, minor: u64| -> Result<u64, ReaderError> {
            let (Ok(ma), Ok(mi)) = (u32::try_from(major), u32::try_from(minor)) else {
                return Err(bad(format!(
                    "inode {}: device number out of range",
                    inode.ino
                )));
            };
            Ok(libc::makedev(ma, mi))
        };
        let (rdev, size, data) = match &inode.kind {
            InodeKind::Dir { .. } => (0, 0, NodeData::Dir(Box::new([]))),
            InodeKind::File { chunks } => {
                let mut extents = Vec::with_capacity(chunks.len());
                let mut offset: u64 = 0;
                for c in chunks {
                    if c.len == 0 {
                        continue;
                    }
                    c.blob.offset.checked_add(c.len).ok_or_else(|| {
                        bad(format!("inode {}: chunk range overflows", inode.ino))
                    })?;
                    let blob = self.intern_blob(c.blob.digest, c.blob.compressed)?;
                    extents.push(Extent {
                        file_offset: offset,
                        len: c.len,
                        blob,
                        blob_offset: c.blob.offset,
                    });
                    offset = offset
                        .checked_add(c.len)
                        .filter(|&o| o <= i64::MAX as u64)
                        .ok_or_else(|| bad(format!("inode {}: file size overflows", inode.ino)))?;
                }
                (0, offset, NodeData::File(extents.into()))
            }
            InodeKind::Symlink => {
                let target = inode
                    .symlink_target
                    .as_ref()
                    .ok_or_else(|| bad(format!("symlink inode {} has no target", inode.ino)))?;
                if target.is_empty() || target.len() > SYMLINK_MAX || target.contains(&0) {
                    return Err(bad(format!(
                        "symlink inode {} has an invalid target",
                        inode.ino
                    )));
                }
                (
                    0,
                    target.len() as u64,
                    NodeData::Symlink(target.clone().into()),
                )
            }
            InodeKind::Chr { major, minor } | InodeKind::Blk { major, minor } => {
                (dev(*major, *minor)?, 0, NodeData::Other)
            }
            InodeKind::Fifo | InodeKind::Socket => (0, 0, NodeData::Other),
            // Upstream writes "unknown" for types it cannot classify: an empty regular file.
            InodeKind::Unknown => (0, 0, NodeData::File(Box::new([]))),
            InodeKind::Whiteout => {
                return Err(bad(format!("whiteout inode {} in tree", inode.ino)))
            }
        };
        self.nodes.push(Node {
            ino: inode.ino,
            mode: inode.mode(),
            uid: inode.uid,
            gid: inode.gid,
            mtime: inode.mtime,
            nlink: 1,
            rdev,
            size,
            xattrs: inode.xattrs.clone().into(),
            file_digest: inode.file_digest.map(Box::new),
            data,
        });
        self.node_of.insert(inode.ino, id);
        Ok(id)
    }

    fn intern_blob(&mut self, digest: Digest, compressed: bool) -> Result<u32, ReaderError> {
        if let Some(&i) = self.blob_of.get(&digest) {
            if self.blobs[i as usize].compressed != compressed {
                return Err(bad(format!(
                    "blob {digest} is referenced both compressed and uncompressed"
                )));
            }
            return Ok(i);
        }
        let i = u32::try_from(self.blobs.len()).map_err(|_| bad("too many blobs"))?;
        self.blobs.push(BlobInfo {
            digest,
            compressed,
            verity: self.verity.get(&digest).copied(),
        });
        self.blob_of.insert(digest, i);
        Ok(i)
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
