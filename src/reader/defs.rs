//! Every layer's definition of each inode number, found without hashing: one sorted list.
//!
//! Opening an image looks inode numbers up once per directory entry; a hash map of
//! per-inode vectors made that the largest cost of a mount. Here the definitions are one
//! vector sorted by (inode number, layer), and when the numbers are dense (one definition
//! each, numbered consecutively, as both our builder and upstream's write them) a lookup is
//! a subtraction.

use super::ReaderError;
use crate::format::{Inode, InodeKind, Rootfs};

/// Position of an inode number's first (topmost) definition in [`Defs`].
pub(super) type DefIndex = usize;

pub(super) struct Defs<'a> {
    /// (ino, layer depth, definition), sorted by ino then depth (topmost layer first).
    list: Vec<(u64, u32, &'a Inode)>,
    /// `Some(first)` when `list[i]` defines inode `first + i`, for every `i`.
    dense_from: Option<u64>,
}

impl<'a> Defs<'a> {
    /// Indexes every layer. An inode defined twice in one layer is an error, except that a
    /// whiteout beside a live definition loses (upstream's `--base-layer` writes one next to
    /// a hard-linked file that lost one of its names).
    pub fn new(rootfs: &'a Rootfs) -> Result<Self, ReaderError> {
        let total = rootfs.layers.iter().map(Vec::len).sum();
        let mut list = Vec::with_capacity(total);
        for (depth, layer) in rootfs.layers.iter().enumerate() {
            let depth = u32::try_from(depth).map_err(|_| bad("too many layers"))?;
            list.extend(layer.iter().map(|inode| (inode.ino, depth, inode)));
        }
        // Stable and linear on the sorted runs layers already are.
        list.sort_by_key(|&(ino, depth, _)| (ino, depth));
        let mut kept: Vec<(u64, u32, &Inode)> = Vec::with_capacity(list.len());
        for def in list {
            match kept.last_mut() {
                Some(prev) if prev.0 == def.0 && prev.1 == def.1 => {
                    let whiteout = |i: &Inode| i.kind == InodeKind::Whiteout;
                    match (whiteout(prev.2), whiteout(def.2)) {
                        (true, false) => *prev = def,
                        (false, true) => {}
                        _ => {
                            return Err(bad(format!(
                                "inode {} defined twice in layer {}",
                                def.0, def.1
                            )))
                        }
                    }
                }
                _ => kept.push(def),
            }
        }
        let dense_from = kept.first().map(|d| d.0).filter(|&first| {
            kept.iter()
                .enumerate()
                .all(|(i, d)| Some(d.0) == first.checked_add(i as u64))
        });
        Ok(Defs {
            list: kept,
            dense_from,
        })
    }

    /// Where inode `ino`'s definitions start, if it has any.
    pub fn find(&self, ino: u64) -> Option<DefIndex> {
        match self.dense_from {
            Some(first) => {
                let i = usize::try_from(ino.checked_sub(first)?).ok()?;
                (i < self.list.len()).then_some(i)
            }
            None => {
                let i = self.list.partition_point(|d| d.0 < ino);
                (self.list.get(i)?.0 == ino).then_some(i)
            }
        }
    }

    /// The topmost definition at `at`.
    pub fn top(&self, at: DefIndex) -> &'a Inode {
        self.list[at].2
    }

    /// Every definition of the inode whose first is at `at`, topmost layer first.
    pub fn all(&self, at: DefIndex) -> impl Iterator<Item = &'a Inode> + '_ {
        let ino = self.list[at].0;
        self.list[at..]
            .iter()
            .take_while(move |d| d.0 == ino)
            .map(|d| d.2)
    }

    /// Whether the inode at `at` has a definition in more than one layer.
    pub fn layered(&self, at: DefIndex) -> bool {
        self.list
            .get(at + 1)
            .is_some_and(|d| d.0 == self.list[at].0)
    }

    /// Number of indexed positions (an upper bound on [`DefIndex`]).
    pub fn len(&self) -> usize {
        self.list.len()
    }
}

fn bad(msg: impl Into<String>) -> ReaderError {
    ReaderError::BadMetadata(msg.into())
}
