//! Which requests a queue thread serves itself (those that cannot wait on I/O) and which it
//! hands to the workers, so that a slow read never holds up the requests behind it.

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, ReadIn};
use vm_memory::{Bytes, GuestMemory};

use super::passthrough::{ReadOnlySharedDirFs, SharedDirFs};
use super::request::{peek_header, Chain, GuestMem};
use crate::fs::{ImageFs, ReadOnly};

/// Tells the queue threads which requests are quick for a file system.
pub trait Triage {
    /// Whether a request with `opcode` on `inode` is answered without waiting on I/O;
    /// `read` holds a READ's (offset, size).
    fn is_quick(&self, opcode: u32, inode: u64, read: Option<(u64, u32)>) -> bool;
}

impl<T: Triage> Triage for std::sync::Arc<T> {
    fn is_quick(&self, opcode: u32, inode: u64, read: Option<(u64, u32)>) -> bool {
        (**self).is_quick(opcode, inode, read)
    }
}

/// Any request may wait on the shared directory's disk.
impl Triage for SharedDirFs {
    fn is_quick(&self, _: u32, _: u64, _: Option<(u64, u32)>) -> bool {
        false
    }
}

/// The same, read-only.
impl Triage for ReadOnlySharedDirFs {
    fn is_quick(&self, _: u32, _: u64, _: Option<(u64, u32)>) -> bool {
        false
    }
}

/// Each mount of the table decides for its own inodes.
impl Triage for crate::mounts::MountTable {
    fn is_quick(&self, opcode: u32, inode: u64, read: Option<(u64, u32)>) -> bool {
        crate::mounts::MountTable::is_quick(self, opcode, inode, read)
    }
}

/// Metadata is in memory; a read is quick when every chunk it needs is stored.
impl Triage for ReadOnly<ImageFs> {
    fn is_quick(&self, _: u32, inode: u64, read: Option<(u64, u32)>) -> bool {
        match read {
            Some((offset, size)) => self.inner().read_is_stored(inode, offset, size),
            None => true,
        }
    }
}

/// Whether `chain` is quick for `fs`. Looks only at the first descriptor: a request whose
/// header (or READ arguments) is split across descriptors goes to the workers, which decode
/// anything.
pub(crate) fn is_quick(fs: &impl Triage, mem: &GuestMem, chain: &Chain) -> bool {
    let Some(header) = peek_header(mem, chain) else {
        return false;
    };
    if header.opcode != Opcode::Read as u32 {
        return fs.is_quick(header.opcode, header.nodeid, None);
    }
    let Some(desc) = chain.clone().next() else {
        return false;
    };
    let header_len = std::mem::size_of::<InHeader>();
    if (desc.len() as usize) < header_len + std::mem::size_of::<ReadIn>() {
        return false;
    }
    let Some(args_at) = mem.checked_offset(desc.addr(), header_len) else {
        return false;
    };
    match mem.read_obj::<ReadIn>(args_at) {
        Ok(args) => fs.is_quick(header.opcode, header.nodeid, Some((args.offset, args.size))),
        Err(_) => false,
    }
}
