//! The merged, validated view of an image's metadata layers: one node per reachable inode.
//!
//! Everything a hostile image could get wrong is checked here once, at open time: names,
//! dangling entries, directory cycles, duplicate inodes, offsets that overflow. After that,
//! lookups are plain indexing.

use std::collections::{HashMap, HashSet, VecDeque};

use super::defs::{DefIndex, Defs};

use super::image::ChunkInfo;
use super::image::{PackSlice, MAX_BLOB_BYTES};
use super::ReaderError;
use crate::format::{Digest, FileChunk, InodeKind, Pack, Rootfs, Xattr, ROOT_INO};

/// Index of a node in the table; [`ROOT`] is the root directory.
pub type NodeId = u32;

/// The root directory's node.
pub const ROOT: NodeId = 0;

/// Longest entry name an image may hold, in bytes.
pub const NAME_MAX: usize = 255;
const _: () = assert!(
    NAME_MAX <= u8::MAX as usize,
    "names are stored after a length byte"
);
const SYMLINK_MAX: usize = 4095;
const XATTR_NAME_MAX: usize = 255;
const XATTR_VALUE_MAX: usize = 65536;

/// A file, directory or other object in the image.
///
/// 64 bytes: the node table is most of an opened image's memory (one per inode, for as long
/// as the image is mounted), so rare and bulky things live beside it in the table (xattrs,
/// symlink targets, the files' recorded sha256).
#[derive(Debug, Clone)]
pub struct Node {
    /// Inode number as stored in the image (reported as `st_ino`).
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds (also reported as change and access time).
    pub mtime_sec: i64,
    /// Modification time, nanoseconds (below 10^9).
    pub mtime_nsec: u32,
    /// Full `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of names referring to this node (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Extended attributes ([`InodeTable::xattrs`]).
    pub xattrs: XattrSet,
    /// Type-specific contents.
    pub data: NodeData,
}

/// Which of the table's xattr lists a node has ([`XattrSet::default`]: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XattrSet(u32);

/// What a node holds.
#[derive(Debug, Clone)]
pub enum NodeData {
    /// A directory: its entries, sorted by name ([`InodeTable::entries`]), and the directory
    /// holding it (the root is its own parent).
    Dir {
        /// Entries.
        entries: Span,
        /// Parent directory.
        parent: NodeId,
    },
    /// File contents, in file order ([`InodeTable::extents`]).
    File(Span),
    /// Symlink target ([`InodeTable::symlink_target`]).
    Symlink(Span),
    /// Devices (with their device number), fifos and sockets (0).
    Other(u64),
}

impl Node {
    /// Device number (character and block devices; 0 for anything else).
    pub fn rdev(&self) -> u64 {
        match self.data {
            NodeData::Other(rdev) => rdev,
            _ => 0,
        }
    }
}

/// A run of one of the table's shared arrays (entries, extents, xattrs, names): one allocation per
/// table instead of one per node keeps an opened image small and quick to build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn get<T>(self, items: &[T]) -> &[T] {
        let start = self.start as usize;
        &items[start..start + self.len as usize]
    }

    /// Number of items.
    pub fn len(self) -> usize {
        self.len as usize
    }

    /// Whether there are none.
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// The items of an array from `start` to its `end`, as a [`Span`].
fn span_since(start: usize, end: usize) -> Result<Span, ReaderError> {
    let fit = |n: usize| u32::try_from(n).map_err(|_| bad("metadata too large"));
    Ok(Span {
        start: fit(start)?,
        len: fit(end - start)?,
    })
}

/// A directory entry; its name is [`InodeTable::name`].
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Where its name lies in the table's `names`: one length byte, then the name (8-byte
    /// entries instead of 12, for one byte more per name).
    name_at: u32,
    /// The node it names.
    pub node: NodeId,
}

/// A contiguous range of a file stored in one chunk.
///
/// 20 bytes (packed to 4-byte alignment: there is one per chunk of every file). A chunk's
/// contents are at most [`MAX_BLOB_BYTES`], so lengths and offsets inside it fit 32 bits.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
pub struct Extent {
    /// Offset in the file.
    pub file_offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// Index into [`InodeTable::chunks`].
    pub chunk: u32,
    /// Offset in the chunk's contents.
    pub chunk_offset: u32,
}

impl Extent {
    /// Offset just past its last byte in the file.
    pub fn file_end(&self) -> u64 {
        self.file_offset + u64::from(self.len)
    }

    /// Offset just past its last byte in the chunk's contents.
    pub fn chunk_end(&self) -> u64 {
        u64::from(self.chunk_offset) + u64::from(self.len)
    }
}

/// A data blob file of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFile {
    /// Its digest (and file name).
    pub digest: Digest,
    /// Its fs-verity digest, when the image records one.
    pub verity: Option<[u8; 32]>,
    /// Whether it is a pack (else it is one chunk).
    pub pack: bool,
}

/// All reachable nodes of an image plus the chunks their data lives in.
#[derive(Debug)]
pub struct InodeTable {
    nodes: Vec<Node>,
    chunks: Vec<ChunkInfo>,
    entries: Vec<Entry>,
    extents: Vec<Extent>,
    xattrs: Vec<Xattr>,
    /// The runs of `xattrs` nodes have, by [`XattrSet`]; the first is empty.
    xattr_sets: Vec<Span>,
    /// Every entry name (after its length byte) and symlink target, back to back.
    names: Vec<u8>,
    /// Regular files' recorded sha256, by node id (ascending), when kept.
    file_digests: Vec<(NodeId, Digest)>,
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
    defs: Defs<'a>,
    nodes: Vec<Node>,
    entries: Vec<Entry>,
    extents: Vec<Extent>,
    xattrs: Vec<Xattr>,
    xattr_sets: Vec<Span>,
    names: Vec<u8>,
    /// `None`: not kept.
    file_digests: Option<Vec<(NodeId, Digest)>>,
    /// The node made of each definition's inode, by [`DefIndex`] ([`NO_NODE`]: none yet).
    node_of: Vec<NodeId>,
    chunks: Vec<ChunkInfo>,
    chunk_of: HashMap<Digest, u32>,
    /// Blobs that are packs, checked.
    packs: HashMap<Digest, &'a Pack>,
    /// The last chunk interned: consecutive file chunks often share one (small files).
    last_chunk: Option<(Digest, u32)>,
    verity: &'a std::collections::BTreeMap<Digest, [u8; 32]>,
}

const NO_NODE: NodeId = NodeId::MAX;

/// Whether a table keeps the sha256 an image records for each file (only `check` and
/// `build --base` look at them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDigests {
    /// Keep them ([`InodeTable::file_digest`]).
    Keep,
    /// Leave them out.
    Drop,
}

impl InodeTable {
    /// Merges layers and validates the tree, keeping the files' recorded sha256.
    pub fn build(rootfs: &Rootfs) -> Result<Self, ReaderError> {
        Self::build_with(rootfs, FileDigests::Keep)
    }

    /// Merges layers and validates the tree.
    pub fn build_with(rootfs: &Rootfs, digests: FileDigests) -> Result<Self, ReaderError> {
        let defs = Defs::new(rootfs)?;
        let mut b = Builder {
            node_of: vec![NO_NODE; defs.len()],
            // Every reachable inode is one definition: an upper bound, and usually exact.
            nodes: Vec::with_capacity(defs.len()),
            defs,
            entries: Vec::new(),
            extents: Vec::new(),
            xattrs: Vec::new(),
            xattr_sets: vec![Span::default()],
            names: Vec::new(),
            file_digests: (digests == FileDigests::Keep).then(Vec::new),
            chunks: Vec::new(),
            chunk_of: HashMap::new(),
            packs: check_packs(&rootfs.packs)?,
            last_chunk: None,
            verity: &rootfs.verity,
        };
        b.walk()?;
        // Growth by doubling leaves up to half of each array unused; tables live long.
        b.nodes.shrink_to_fit();
        b.chunks.shrink_to_fit();
        b.entries.shrink_to_fit();
        b.extents.shrink_to_fit();
        b.xattrs.shrink_to_fit();
        b.xattr_sets.shrink_to_fit();
        b.names.shrink_to_fit();
        let mut file_digests = b.file_digests.unwrap_or_default();
        file_digests.shrink_to_fit();
        Ok(InodeTable {
            nodes: b.nodes,
            chunks: b.chunks,
            entries: b.entries,
            extents: b.extents,
            xattrs: b.xattrs,
            xattr_sets: b.xattr_sets,
            names: b.names,
            file_digests,
        })
    }

    /// A node's extended attributes.
    pub fn xattrs(&self, node: &Node) -> &[Xattr] {
        self.xattr_sets[node.xattrs.0 as usize].get(&self.xattrs)
    }

    /// The sha256 the image records for a regular file's contents, if it records one and the
    /// table kept it ([`FileDigests`]).
    pub fn file_digest(&self, id: NodeId) -> Option<&Digest> {
        self.file_digests
            .binary_search_by_key(&id, |&(n, _)| n)
            .ok()
            .map(|i| &self.file_digests[i].1)
    }

    /// Bytes of heap the table holds (what an opened image costs, mostly).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of_val;
        size_of_val(&self.nodes[..])
            + size_of_val(&self.chunks[..])
            + size_of_val(&self.entries[..])
            + size_of_val(&self.extents[..])
            + size_of_val(&self.xattrs[..])
            + self
                .xattrs
                .iter()
                .map(|x| x.key.len() + x.value.len())
                .sum::<usize>()
            + size_of_val(&self.xattr_sets[..])
            + self.names.len()
            + size_of_val(&self.file_digests[..])
    }

    /// A symlink's target; `None` for anything else.
    pub fn symlink_target(&self, node: &Node) -> Option<&[u8]> {
        match node.data {
            NodeData::Symlink(span) => Some(span.get(&self.names)),
            _ => None,
        }
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

    /// Every chunk a file uses, in the order files first use them.
    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.chunks
    }

    /// Every data blob file the chunks lie in (packs, and chunks stored on their own), in
    /// the order files first use them.
    pub fn data_files(&self) -> Vec<DataFile> {
        let mut seen = HashSet::new();
        self.chunks
            .iter()
            .filter(|c| seen.insert(c.file()))
            .map(|c| DataFile {
                digest: c.file(),
                verity: c.verity,
                pack: c.pack.is_some(),
            })
            .collect()
    }

    /// Looks a name up in a directory.
    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let entries = self.entries(dir);
        entries
            .binary_search_by(|e| self.name(e).cmp(name))
            .ok()
            .map(|i| entries[i].node)
    }

    /// The directory holding directory `dir` (the root for the root, and for anything that is
    /// not a directory).
    pub fn parent(&self, dir: NodeId) -> NodeId {
        match self.node(dir).data {
            NodeData::Dir { parent, .. } => parent,
            _ => ROOT,
        }
    }

    /// Entries of a directory, sorted by name (empty for other nodes).
    pub fn entries(&self, dir: NodeId) -> &[Entry] {
        match self.node(dir).data {
            NodeData::Dir { entries, .. } => entries.get(&self.entries),
            _ => &[],
        }
    }

    /// An entry's name (validated: 1..=255 bytes, no `/` or NUL, not `.` or `..`).
    pub fn name(&self, e: &Entry) -> &[u8] {
        let at = e.name_at as usize;
        let len = usize::from(self.names[at]);
        &self.names[at + 1..at + 1 + len]
    }

    /// A regular file's extents, in file order (empty for other nodes).
    pub fn extents(&self, node: NodeId) -> &[Extent] {
        match self.node(node).data {
            NodeData::File(span) => span.get(&self.extents),
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
            if !matches!(self.node(cur).data, NodeData::Dir { .. }) {
                return Err(ReaderError::NotADirectory(shown()));
            }
            let next = self
                .lookup(cur, part)
                .ok_or_else(|| ReaderError::NotFound(shown()))?;
            let last = i + 1 == parts.len();
            if let Some(target) = self.symlink_target(self.node(next)) {
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
    fn walk(&mut self) -> Result<(), ReaderError> {
        let root_at = self
            .defs
            .find(ROOT_INO)
            .ok_or_else(|| bad("no root directory (inode 1)"))?;
        let root = self.defs.top(root_at);
        if !root.is_dir() {
            return Err(bad("inode 1 is not a directory"));
        }
        self.add_node(root_at, ROOT)?;
        let mut queue = VecDeque::from([(ROOT, root_at)]);
        while let Some((dir_id, dir_at)) = queue.pop_front() {
            let merged = self.merged_entries(dir_at)?;
            let mut entries = Vec::with_capacity(merged.len());
            let mut subdirs: u32 = 0;
            for (name, target_ino) in merged {
                let Some(target_at) = self.defs.find(target_ino) else {
                    return Err(bad(format!(
                        "entry {:?} refers to inode {target_ino}, which does not exist",
                        show(name)
                    )));
                };
                let target = self.defs.top(target_at);
                if target.kind == InodeKind::Whiteout {
                    continue;
                }
                let id = match self.node_of[target_at] {
                    NO_NODE => {
                        let id = self.add_node(target_at, dir_id)?;
                        if target.is_dir() {
                            queue.push_back((id, target_at));
                        }
                        id
                    }
                    id => {
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
                };
                if target.is_dir() {
                    subdirs += 1;
                }
                entries.push((name, id));
            }
            if !entries.is_sorted_by(|a, b| a.0 < b.0) {
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            let start = self.entries.len();
            for (name, node) in entries {
                let name_at =
                    u32::try_from(self.names.len()).map_err(|_| bad("metadata too large"))?;
                // check_name bounds names to NAME_MAX, which fits the length byte.
                self.names.push(name.len() as u8);
                self.names.extend_from_slice(name);
                self.entries.push(Entry { name_at, node });
            }
            let span = span_since(start, self.entries.len())?;
            let dir = &mut self.nodes[dir_id as usize];
            dir.nlink = 2u32.saturating_add(subdirs);
            dir.size = span.len() as u64;
            if let NodeData::Dir { entries, .. } = &mut dir.data {
                *entries = span;
            }
        }
        Ok(())
    }

    /// The entries of the directory defined at `at`: its topmost definition's, plus lower
    /// layers' while `lookBelow` is set, upper names shadowing lower ones.
    fn merged_entries(&self, at: DefIndex) -> Result<Vec<(&'a [u8], u64)>, ReaderError> {
        let top = self.defs.top(at);
        let InodeKind::Dir {
            entries,
            look_below,
        } = &top.kind
        else {
            return Ok(Vec::new());
        };
        if !look_below || !self.defs.layered(at) {
            return single_entries(top.ino, entries);
        }
        let mut out = Vec::new();
        let mut seen: HashSet<&'a [u8]> = HashSet::new();
        for def in self.defs.all(at) {
            let InodeKind::Dir {
                entries,
                look_below,
            } = &def.kind
            else {
                break;
            };
            for (name, ino) in single_entries(def.ino, entries)? {
                if seen.insert(name) {
                    out.push((name, ino));
                }
            }
            if !look_below {
                break;
            }
        }
        Ok(out)
    }

    /// Adds the node defined at `at`; `parent` is the directory it is first found in (kept
    /// for directories).
    fn add_node(&mut self, at: DefIndex, parent: NodeId) -> Result<NodeId, ReaderError> {
        let inode = self.defs.top(at);
        let id = NodeId::try_from(self.nodes.len())
            .ok()
            .filter(|&id| id != NO_NODE)
            .ok_or_else(|| bad("too many inodes"))?;
        for x in &inode.xattrs {
            if x.key.is_empty() || x.key.len() > XATTR_NAME_MAX || x.key.contains(&0) {
                return Err(bad(format!("inode {}: invalid xattr name", inode.ino)));
            }
            if x.value.len() > XATTR_VALUE_MAX {
                return Err(bad(format!("inode {}: xattr value over 64 KiB", inode.ino)));
            }
        }
        let xattrs = if inode.xattrs.is_empty() {
            XattrSet::default()
        } else {
            let start = self.xattrs.len();
            self.xattrs.extend(inode.xattrs.iter().cloned());
            let set = u32::try_from(self.xattr_sets.len()).map_err(|_| bad("too many xattrs"))?;
            self.xattr_sets.push(span_since(start, self.xattrs.len())?);
            XattrSet(set)
        };
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
        let (size, data) = match &inode.kind {
            // The walk sets the entries once it reaches the directory.
            InodeKind::Dir { .. } => (
                0,
                NodeData::Dir {
                    entries: Span::default(),
                    parent,
                },
            ),
            InodeKind::File { chunks } => {
                let start = self.extents.len();
                let mut offset: u64 = 0;
                for c in chunks {
                    if c.len == 0 {
                        continue;
                    }
                    c.blob.offset.checked_add(c.len).ok_or_else(|| {
                        bad(format!("inode {}: chunk range overflows", inode.ino))
                    })?;
                    let (chunk, chunk_offset) = self.locate(inode.ino, c)?;
                    self.extents.push(Extent {
                        file_offset: offset,
                        // Both within one chunk of at most MAX_BLOB_BYTES (locate checks).
                        len: c.len as u32,
                        chunk,
                        chunk_offset: chunk_offset as u32,
                    });
                    offset = offset
                        .checked_add(c.len)
                        .filter(|&o| o <= i64::MAX as u64)
                        .ok_or_else(|| bad(format!("inode {}: file size overflows", inode.ino)))?;
                }
                let span = span_since(start, self.extents.len())?;
                (offset, NodeData::File(span))
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
                let start = self.names.len();
                self.names.extend_from_slice(target);
                let span = span_since(start, self.names.len())?;
                (target.len() as u64, NodeData::Symlink(span))
            }
            InodeKind::Chr { major, minor } | InodeKind::Blk { major, minor } => {
                (0, NodeData::Other(dev(*major, *minor)?))
            }
            InodeKind::Fifo | InodeKind::Socket => (0, NodeData::Other(0)),
            // Upstream writes "unknown" for types it cannot classify: an empty regular file.
            InodeKind::Unknown => (0, NodeData::File(Span::default())),
            InodeKind::Whiteout => {
                return Err(bad(format!("whiteout inode {} in tree", inode.ino)))
            }
        };
        if let (Some(digests), Some(d)) = (&mut self.file_digests, inode.file_digest) {
            if matches!(data, NodeData::File(_)) {
                digests.push((id, d));
            }
        }
        self.nodes.push(Node {
            ino: inode.ino,
            mode: inode.mode(),
            uid: inode.uid,
            gid: inode.gid,
            mtime_sec: inode.mtime.sec,
            mtime_nsec: inode.mtime.nsec,
            nlink: 1,
            size,
            xattrs,
            data,
        });
        self.node_of[at] = id;
        Ok(id)
    }

    /// The chunk holding a file chunk's bytes, and where they start in it.
    fn locate(&mut self, ino: u64, c: &FileChunk) -> Result<(u32, u64), ReaderError> {
        let Some(pack) = self.packs.get(&c.blob.digest).copied() else {
            // No chunk holds more than MAX_BLOB_BYTES (check_packs bounds a pack's chunks),
            // which keeps the extent's fields in 32 bits. The caller checked for overflow.
            if c.blob.offset + c.len > MAX_BLOB_BYTES {
                return Err(bad(format!(
                    "inode {ino}: chunk range beyond the {} MiB chunk limit",
                    MAX_BLOB_BYTES >> 20
                )));
            }
            let info = ChunkInfo {
                digest: c.blob.digest,
                compressed: c.blob.compressed,
                verity: self.verity.get(&c.blob.digest).copied(),
                pack: None,
            };
            return Ok((self.intern_chunk(info)?, c.blob.offset));
        };
        if pack.compressed != c.blob.compressed {
            return Err(bad(format!(
                "inode {ino}: pack {} is referenced both compressed and uncompressed",
                pack.digest
            )));
        }
        let at = pack.chunks.partition_point(|p| p.offset <= c.blob.offset);
        let inside = at
            .checked_sub(1)
            .map(|i| &pack.chunks[i])
            .filter(|p| c.blob.offset + c.len <= p.offset + p.len);
        let Some(p) = inside else {
            return Err(bad(format!(
                "inode {ino}: bytes {}..{} of pack {} are not inside one of its chunks",
                c.blob.offset,
                c.blob.offset + c.len,
                pack.digest
            )));
        };
        let info = ChunkInfo {
            digest: p.digest,
            compressed: pack.compressed,
            verity: self.verity.get(&pack.digest).copied(),
            pack: Some(PackSlice {
                pack: pack.digest,
                offset: p.offset,
                len: p.len,
                stored_offset: p.stored_offset,
                stored_len: p.stored_len,
            }),
        };
        Ok((self.intern_chunk(info)?, c.blob.offset - p.offset))
    }

    fn intern_chunk(&mut self, info: ChunkInfo) -> Result<u32, ReaderError> {
        let digest = info.digest;
        let known = match self.last_chunk {
            Some((d, i)) if d == digest => Some(i),
            _ => self.chunk_of.get(&digest).copied(),
        };
        if let Some(i) = known {
            self.last_chunk = Some((digest, i));
            if self.chunks[i as usize].compressed != info.compressed {
                return Err(bad(format!(
                    "chunk {digest} is referenced both compressed and uncompressed"
                )));
            }
            return Ok(i);
        }
        let i = u32::try_from(self.chunks.len()).map_err(|_| bad("too many chunks"))?;
        self.chunks.push(info);
        self.chunk_of.insert(digest, i);
        self.last_chunk = Some((digest, i));
        Ok(i)
    }
}

/// Checks every pack's chunk list (sorted, not overlapping, sizes within bounds, raw chunks
/// stored where upstream readers look for them) and indexes the packs by digest.
fn check_packs(packs: &[Pack]) -> Result<HashMap<Digest, &Pack>, ReaderError> {
    let mut out = HashMap::with_capacity(packs.len());
    for pack in packs {
        let mut end = 0u64;
        let mut stored_end = 0u64;
        for c in &pack.chunks {
            let what = || format!("pack {}: chunk {} at {}", pack.digest, c.digest, c.offset);
            let ok_len = (1..=MAX_BLOB_BYTES).contains(&c.len)
                && (1..=MAX_BLOB_BYTES).contains(&c.stored_len)
                && (pack.compressed || (c.stored_len == c.len && c.stored_offset == c.offset));
            if !ok_len {
                return Err(bad(format!("{}: impossible sizes", what())));
            }
            if c.offset < end || c.stored_offset < stored_end {
                return Err(bad(format!("{}: chunks unsorted or overlapping", what())));
            }
            end = c.offset.checked_add(c.len).ok_or_else(|| bad(what()))?;
            stored_end = c
                .stored_offset
                .checked_add(c.stored_len)
                .ok_or_else(|| bad(what()))?;
        }
        if out.insert(pack.digest, pack).is_some() {
            return Err(bad(format!("pack {} is listed twice", pack.digest)));
        }
    }
    Ok(out)
}

/// One definition's entries, names checked, duplicates refused.
fn single_entries(
    ino: u64,
    entries: &[crate::format::DirEntry],
) -> Result<Vec<(&[u8], u64)>, ReaderError> {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        check_name(&e.name)?;
        out.push((&e.name[..], e.ino));
    }
    // Writers store entries sorted, so this usually only checks that they are.
    if !out.is_sorted_by(|a, b| a.0 < b.0) {
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(bad(format!(
                "directory inode {ino} has two entries named {:?}",
                show(w[0].0)
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
