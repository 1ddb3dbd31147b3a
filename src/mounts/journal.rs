//! The history of a table's mounts and unmounts, for rebuilding the table in a fresh process
//! with every inode number it handed out meaning what it meant: the same slots and
//! generations for the mounts still there, and the same numbers for the table's own
//! directories (given in creation order and kept after unmounts, so the whole history
//! decides them, not only what is mounted now).

use serde::{Deserialize, Serialize};

use super::inode::SlotId;
use crate::format::Digest;

/// One change to a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Something was mounted at `mountpoint` in `slot`; `spec` says what (for the caller to
    /// open again: the request's `fs_type`, `source`, `config`).
    Mounted {
        mountpoint: String,
        slot: SlotId,
        spec: [String; 3],
        /// For an image, the manifest it was opened from: opened again by this digest,
        /// never by its tag (a moved tag must not change the files behind the guest's
        /// inode numbers).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest: Option<String>,
    },
    /// What was mounted at `mountpoint` went.
    Unmounted { mountpoint: String },
    /// The table was rebuilt in a new serving process. Every slot free at that point moves
    /// on a generation: the process that died may have used it for a mount nobody heard of
    /// (its answer lost with it), so those inode numbers must never come back.
    Restored,
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
    pub fn mounted(
        &mut self,
        mountpoint: &str,
        slot: SlotId,
        spec: [String; 3],
        manifest: Option<Digest>,
    ) {
        self.events.push(Event::Mounted {
            mountpoint: mountpoint.to_string(),
            slot,
            spec,
            manifest: manifest.map(|d| d.to_string()),
        });
    }

    /// Records an unmount that succeeded.
    pub fn unmounted(&mut self, mountpoint: &str) {
        self.events.push(Event::Unmounted {
            mountpoint: mountpoint.to_string(),
        });
    }

    /// Records that the table was rebuilt (see [`Event::Restored`]).
    pub fn restored(&mut self) {
        self.events.push(Event::Restored);
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

    /// The mount points of the mounts still in place, in the order a restore opens them.
    pub fn live_mounts(&self) -> Vec<&str> {
        self.events
            .iter()
            .zip(self.live())
            .filter_map(|(e, live)| match e {
                Event::Mounted { mountpoint, .. } if live => Some(mountpoint.as_str()),
                _ => None,
            })
            .collect()
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
                Event::Restored => {}
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
        let manifest = Some(Digest([7; 32]));
        j.mounted("/containers", slot(1), spec(), None);
        j.mounted("/rafs/c1/lowerdir", slot(2), spec(), manifest);
        j.unmounted("/rafs/c1/lowerdir");
        j.restored();
        j.mounted("/rafs/c1/lowerdir", slot(2), spec(), manifest);
        j.mounted("/rafs/c2/lowerdir", slot(3), spec(), manifest);
        j.unmounted("/rafs/c2/lowerdir");
        assert_eq!(j.live(), [true, false, false, false, true, false, false]);
        assert_eq!(j.live_mounts(), ["/containers", "/rafs/c1/lowerdir"]);
        let back: Journal = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }
}
