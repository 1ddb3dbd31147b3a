//! The history of a table's mounts and unmounts, for rebuilding the table in a fresh process
//! with every inode number it handed out meaning what it meant: the same slots and
//! generations for the mounts still there, and the same numbers for the table's own
//! directories (given in creation order and kept after unmounts, so the whole history
//! decides them, not only what is mounted now).

use serde::{Deserialize, Serialize};

use super::inode::SlotId;

/// One change to a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Something was mounted at `mountpoint` in `slot`; `spec` says what (for the caller to
    /// open again: the request's `fs_type`, `source`, `config`).
    Mounted {
        mountpoint: String,
        slot: SlotId,
        spec: [String; 3],
    },
    /// What was mounted at `mountpoint` went.
    Unmounted { mountpoint: String },
}

/// Every change to a table, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    events: Vec<Event>,
}

impl Journal {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a mount that succeeded.
    pub fn mounted(&mut self, mountpoint: &str, slot: SlotId, spec: [String; 3]) {
        self.events.push(Event::Mounted {
            mountpoint: mountpoint.to_string(),
            slot,
            spec,
        });
    }

    /// Records an unmount that succeeded.
    pub fn unmounted(&mut self, mountpoint: &str) {
        self.events.push(Event::Unmounted {
            mountpoint: mountpoint.to_string(),
        });
    }

    /// Records that the mount in place at `mountpoint` now numbers its inodes with `slot`
    /// (a new generation after a restore, see `MountTable::restore`).
    pub fn renumber(&mut self, mountpoint: &str, slot: SlotId) {
        let last = self.events.iter_mut().rev().find_map(|e| match e {
            Event::Mounted {
                mountpoint: m,
                slot: s,
                ..
            } if m == mountpoint => Some(s),
            _ => None,
        });
        if let Some(s) = last {
            *s = slot;
        }
    }

    /// The changes, oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// For each event, whether it is a mount still in place at the end.
    pub(super) fn live(&self) -> Vec<bool> {
        let mut live = vec![false; self.events.len()];
        let mut seen_unmount: Vec<&str> = Vec::new();
        for (i, e) in self.events.iter().enumerate().rev() {
            match e {
                Event::Unmounted { mountpoint } => seen_unmount.push(mountpoint),
                Event::Mounted { mountpoint, .. } => {
                    if let Some(at) = seen_unmount.iter().position(|m| m == mountpoint) {
                        // That unmount ended this mount; an earlier mount there needs another.
                        seen_unmount.swap_remove(at);
                    } else {
                        live[i] = true;
                    }
                }
            }
        }
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(index: u8) -> SlotId {
        SlotId {
            index,
            generation: 1,
        }
    }

    fn spec() -> [String; 3] {
        ["rafs".into(), "/oci:a".into(), String::new()]
    }

    #[test]
    fn only_mounts_nothing_undid_are_live() {
        let mut j = Journal::new();
        j.mounted("/containers", slot(1), spec());
        j.mounted("/rafs/c1/lowerdir", slot(2), spec());
        j.unmounted("/rafs/c1/lowerdir");
        j.mounted("/rafs/c1/lowerdir", slot(2), spec());
        j.mounted("/rafs/c2/lowerdir", slot(3), spec());
        j.unmounted("/rafs/c2/lowerdir");
        assert_eq!(j.live(), [true, false, false, true, false, false]);
        let back: Journal = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }
}
