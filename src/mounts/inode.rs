//! How the table numbers inodes: `slot (8 bits) | generation (16 bits) | the mounted file
//! system's own inode (40 bits)`. Slot 0 holds the table's own directories. A slot's
//! generation grows each time the slot is reused, so an inode number the guest kept from an
//! unmounted file system never names a file of the next one.

use serde::{Deserialize, Serialize};

const SLOT_SHIFT: u32 = 56;
const GENERATION_SHIFT: u32 = 40;

/// Largest inode number a mounted file system may use.
pub const MAX_INNER_INODE: u64 = (1 << GENERATION_SHIFT) - 1;

/// Slots for mounted file systems (1 to 255; 0 is the table's own directories).
pub const MAX_MOUNTS: usize = 255;

/// One use of a slot: which slot, and how many times it had been used before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotId {
    /// 1 to 255.
    pub index: u8,
    /// Never 0.
    pub generation: u16,
}

impl SlotId {
    /// The generation after `generation` (skipping 0, which no mount has).
    pub fn next_generation(generation: u16) -> u16 {
        match generation.wrapping_add(1) {
            0 => 1,
            g => g,
        }
    }
}

/// What an inode number the guest sends refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// One of the table's own directories.
    Pseudo(u64),
    /// Inode `inode` of the file system mounted in `slot`.
    Mounted { slot: SlotId, inode: u64 },
    /// Nothing the table ever handed out.
    Invalid,
}

/// The table's inode number for `inode` of the file system in `slot`; None when that file
/// system uses numbers beyond [`MAX_INNER_INODE`]. 0 (a negative entry) stays 0.
pub fn encode(slot: SlotId, inode: u64) -> Option<u64> {
    if inode == 0 {
        return Some(0);
    }
    if inode > MAX_INNER_INODE {
        return None;
    }
    Some(
        (u64::from(slot.index) << SLOT_SHIFT)
            | (u64::from(slot.generation) << GENERATION_SHIFT)
            | inode,
    )
}

/// Splits an inode number the guest sent.
pub fn decode(ino: u64) -> Decoded {
    let index = (ino >> SLOT_SHIFT) as u8;
    let generation = ((ino >> GENERATION_SHIFT) & 0xffff) as u16;
    let inode = ino & MAX_INNER_INODE;
    match (index, generation) {
        (0, 0) if inode != 0 => Decoded::Pseudo(inode),
        (0, _) => Decoded::Invalid,
        (_, 0) => Decoded::Invalid,
        _ if inode == 0 => Decoded::Invalid,
        _ => Decoded::Mounted {
            slot: SlotId { index, generation },
            inode,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_never_made() {
        let slot = SlotId {
            index: 255,
            generation: 65535,
        };
        for inode in [1, 2, 12345, MAX_INNER_INODE] {
            let ino = encode(slot, inode).unwrap();
            assert_eq!(decode(ino), Decoded::Mounted { slot, inode });
        }
        assert_eq!(encode(slot, MAX_INNER_INODE + 1), None);
        assert_eq!(encode(slot, 0), Some(0), "negative entries stay negative");
        assert_eq!(decode(1), Decoded::Pseudo(1));
        assert_eq!(decode(0), Decoded::Invalid);
        assert_eq!(
            decode(1 << GENERATION_SHIFT),
            Decoded::Invalid,
            "slot 0, gen 1"
        );
        assert_eq!(
            decode(1 << SLOT_SHIFT | 5),
            Decoded::Invalid,
            "generation 0"
        );
        let s1 = SlotId {
            index: 1,
            generation: 1,
        };
        assert_eq!(
            decode(encode(s1, 1).unwrap() & !MAX_INNER_INODE),
            Decoded::Invalid
        );
    }

    #[test]
    fn generations_skip_zero() {
        assert_eq!(SlotId::next_generation(0), 1);
        assert_eq!(SlotId::next_generation(7), 8);
        assert_eq!(SlotId::next_generation(u16::MAX), 1);
    }
}
