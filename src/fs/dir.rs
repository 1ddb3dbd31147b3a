//! Directory listings with stable offsets, including `.` and `..`.
//!
//! Position 0 is the start; the item at index `i` (`.` is 0, `..` is 1, then the image's
//! entries in name order) carries offset `i + 1`, the position of the item after it. The
//! image never changes, so offsets stay valid for as long as the client likes.

use crate::reader::{InodeTable, NodeId};

/// One item of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item<'a> {
    /// The offset to resume after this item.
    pub next: u64,
    /// Its name.
    pub name: &'a [u8],
    /// The node it names.
    pub node: NodeId,
    /// `.` or `..`.
    pub dot: bool,
}

/// Items of directory `dir` from position `offset` on (none past the end).
pub(crate) fn items<'a>(
    table: &'a InodeTable,
    dir: NodeId,
    offset: u64,
) -> impl Iterator<Item = Item<'a>> + 'a {
    let dots = [(&b"."[..], dir), (&b".."[..], table.parent(dir))];
    let dots = dots.into_iter().map(|(name, node)| (name, node, true));
    let entries = table
        .entries(dir)
        .iter()
        .map(|e| (table.name(e), e.node, false));
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    dots.chain(entries)
        .enumerate()
        .skip(skip)
        .map(|(i, (name, node, dot))| Item {
            next: i as u64 + 1,
            name,
            node,
            dot,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{DirEntry, Inode, InodeKind, Rootfs, Timespec, MANIFEST_VERSION, ROOT_INO};
    use crate::reader::ROOT;

    fn inode(ino: u64, kind: InodeKind) -> Inode {
        Inode {
            ino,
            kind,
            uid: 0,
            gid: 0,
            permissions: 0o755,
            xattrs: Vec::new(),
            symlink_target: None,
            mtime: Timespec::default(),
            file_digest: None,
        }
    }

    fn dir(ino: u64, entries: &[(&str, u64)]) -> Inode {
        inode(
            ino,
            InodeKind::Dir {
                entries: entries
                    .iter()
                    .map(|(n, i)| DirEntry {
                        name: n.as_bytes().to_vec(),
                        ino: *i,
                    })
                    .collect(),
                look_below: false,
            },
        )
    }

    fn table() -> InodeTable {
        let file = inode(3, InodeKind::File { chunks: Vec::new() });
        let rootfs = Rootfs {
            layers: vec![vec![
                dir(ROOT_INO, &[("sub", 2), ("b", 3)]),
                dir(2, &[("a", 3), ("c", 4)]),
                file,
                dir(4, &[]),
            ]],
            verity: Default::default(),
            manifest_version: MANIFEST_VERSION,
            chunking: None,
            packs: Vec::new(),
        };
        InodeTable::build(&rootfs).unwrap()
    }

    #[test]
    fn offsets_resume_where_they_stopped() {
        let t = table();
        let all: Vec<_> = items(&t, ROOT, 0).collect();
        let names: Vec<_> = all.iter().map(|i| i.name).collect();
        assert_eq!(names, [&b"."[..], b"..", b"b", b"sub"]);
        assert_eq!(all.iter().map(|i| i.next).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(all[0].dot && all[1].dot && !all[2].dot);
        assert_eq!((all[0].node, all[1].node), (ROOT, ROOT));
        for (k, item) in all.iter().enumerate() {
            let rest: Vec<_> = items(&t, ROOT, item.next).collect();
            assert_eq!(rest, all[k + 1..]);
        }
        assert_eq!(items(&t, ROOT, 99).count(), 0);
        assert_eq!(items(&t, ROOT, u64::MAX).count(), 0);
        let sub = all[3].node;
        let inner: Vec<_> = items(&t, sub, 1).collect();
        assert_eq!(inner[0].name, b"..");
        assert_eq!(inner[0].node, ROOT);
        let c = inner[2].node;
        assert_eq!(inner[2].name, b"c");
        assert_eq!(items(&t, c, 1).next().unwrap().node, sub);
    }
}
