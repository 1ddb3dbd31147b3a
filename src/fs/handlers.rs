//! The work behind [`PuzzleFs`]'s `FileSystem` methods, in terms of nodes and [`OpError`]s.

use std::ffi::CStr;
use std::io;

use fuse_backend_rs::api::filesystem::{DirEntry, Entry, OpenOptions, ZeroCopyWriter};

use super::attr::{dtype, stat};
use super::config::CachePolicy;
use super::errno::{corrupt_blob, OpError};
use super::{dir, PuzzleFs};
use crate::reader::{Node, NodeData, NodeId, NAME_MAX};

pub(super) type Res<T> = Result<T, OpError>;

impl PuzzleFs {
    /// The node behind a FUSE inode number, or an error for numbers never handed out.
    pub(super) fn node(&self, inode: u64) -> Res<(NodeId, &Node)> {
        let id = inode.checked_sub(1).ok_or(OpError::UnknownInode)?;
        let node = self.image.table().get(id).ok_or(OpError::UnknownInode)?;
        // `get` succeeded, so the id is below the table length, which fits a NodeId.
        Ok((id as NodeId, node))
    }

    pub(super) fn entry(&self, id: NodeId) -> Entry {
        Entry {
            inode: u64::from(id) + 1,
            generation: 0,
            attr: stat(self.image.table().node(id)),
            attr_flags: 0,
            attr_timeout: self.config.attr_timeout,
            entry_timeout: self.config.entry_timeout,
        }
    }

    pub(super) fn do_lookup(&self, parent: u64, name: &CStr) -> Res<Entry> {
        let (dir, node) = self.node(parent)?;
        if !matches!(node.data, NodeData::Dir { .. }) {
            return Err(OpError::NotADirectory);
        }
        if name.to_bytes().len() > NAME_MAX {
            return Err(OpError::NameTooLong);
        }
        let found = match name.to_bytes() {
            b"." => Some(dir),
            b".." => Some(self.image.table().parent(dir)),
            name => self.image.table().lookup(dir, name),
        };
        match found {
            Some(id) => Ok(self.entry(id)),
            // A negative entry the client may cache: the image never gains names.
            None if !self.config.entry_timeout.is_zero() => Ok(Entry {
                entry_timeout: self.config.entry_timeout,
                ..Entry::default()
            }),
            None => Err(OpError::NotFound),
        }
    }

    pub(super) fn do_read(
        &self,
        inode: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
    ) -> Res<usize> {
        let (id, node) = self.node(inode)?;
        match node.data {
            NodeData::File(_) => {}
            NodeData::Dir { .. } => return Err(OpError::IsADirectory),
            NodeData::Symlink(_) | NodeData::Other(_) => return Err(OpError::Invalid),
        }
        if let (0, Some(push)) = (offset, &self.push) {
            push.file_started(id);
        }
        let len = (size as usize).min(w.available_bytes()) as u64;
        let done = self
            .image
            .read_with(id, offset, len, |piece| {
                w.write_all(piece).map_err(OpError::Reply)
            })
            .inspect_err(|e| self.report(e))?;
        Ok(done as usize)
    }

    /// Logs a failed read, a corrupt blob only the first time.
    pub(super) fn report(&self, e: &OpError) {
        let OpError::Reader(e) = e else { return };
        match corrupt_blob(e) {
            Some(digest) => {
                let mut seen = self.reported.lock().unwrap_or_else(|p| p.into_inner());
                if seen.insert(digest) {
                    log::error!("{e}; reads that need this blob fail with EIO");
                }
            }
            None => log::warn!("read failed: {e}"),
        }
    }

    pub(super) fn do_open(&self, inode: u64) -> Res<OpenOptions> {
        if self.config.zero_message_open {
            return Err(OpError::NotSupported);
        }
        let (_, node) = self.node(inode)?;
        match node.data {
            NodeData::File(_) => {}
            NodeData::Dir { .. } => return Err(OpError::IsADirectory),
            NodeData::Symlink(_) | NodeData::Other(_) => return Err(OpError::Invalid),
        }
        Ok(match self.config.cache {
            CachePolicy::Never | CachePolicy::Metadata => OpenOptions::DIRECT_IO,
            CachePolicy::Auto | CachePolicy::Always => OpenOptions::KEEP_CACHE,
        })
    }

    pub(super) fn do_opendir(&self, inode: u64, flags: u32) -> Res<OpenOptions> {
        if self.config.zero_message_open {
            return Err(OpError::NotSupported);
        }
        let (_, node) = self.node(inode)?;
        if flags as i32 & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(OpError::ReadOnly);
        }
        if !matches!(node.data, NodeData::Dir { .. }) {
            return Err(OpError::NotADirectory);
        }
        Ok(match self.config.cache {
            CachePolicy::Never => OpenOptions::empty(),
            _ => OpenOptions::CACHE_DIR | OpenOptions::KEEP_CACHE,
        })
    }

    /// Feeds directory items from `offset` to `add` until it reports a full buffer.
    pub(super) fn list(
        &self,
        inode: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry, &dir::Item) -> io::Result<usize>,
    ) -> Res<()> {
        let (id, node) = self.node(inode)?;
        if !matches!(node.data, NodeData::Dir { .. }) {
            return Err(OpError::NotADirectory);
        }
        let table = self.image.table();
        for item in dir::items(table, id, offset) {
            let n = table.node(item.node);
            let d = DirEntry {
                ino: n.ino,
                offset: item.next,
                type_: dtype(n.mode),
                name: item.name,
            };
            if add(d, &item).map_err(OpError::Reply)? == 0 {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn xattrs(&self, inode: u64) -> Res<&[crate::format::Xattr]> {
        if !self.config.xattr {
            return Err(OpError::NotSupported);
        }
        Ok(self.image.table().xattrs(self.node(inode)?.1))
    }
}
