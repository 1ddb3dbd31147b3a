//! Depth-first, pre-order traversal of an image's tree (parents before children, names sorted).

use super::table::{InodeTable, NodeId, ROOT};

/// A node reached by a walk, with its path from the root.
#[derive(Debug, Clone)]
pub struct WalkItem {
    /// Path relative to the root, components joined by `/`; empty for the root.
    pub path: Vec<u8>,
    /// The node.
    pub node: NodeId,
    /// Depth: 0 for the root.
    pub depth: usize,
}

/// Iterator over every name in the tree (a hard-linked node appears once per name).
pub struct Walk<'a> {
    table: &'a InodeTable,
    stack: Vec<WalkItem>,
}

impl<'a> Walk<'a> {
    /// Walks the subtree at `start`, whose path is `path`.
    pub fn new(table: &'a InodeTable, start: NodeId, path: Vec<u8>) -> Self {
        Walk {
            table,
            stack: vec![WalkItem {
                path,
                node: start,
                depth: 0,
            }],
        }
    }

    /// Walks the whole tree.
    pub fn all(table: &'a InodeTable) -> Self {
        Self::new(table, ROOT, Vec::new())
    }
}

impl Iterator for Walk<'_> {
    type Item = WalkItem;

    fn next(&mut self) -> Option<WalkItem> {
        let item = self.stack.pop()?;
        for e in self.table.entries(item.node).iter().rev() {
            let mut path = item.path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(self.table.name(e));
            self.stack.push(WalkItem {
                path,
                node: e.node,
                depth: item.depth + 1,
            });
        }
        Some(item)
    }
}
