//! Read-ahead across files for host mounts: once a client starts reading a file, the heads
//! of the files after it in the same directory are stored into the kernel's page cache with
//! FUSE_NOTIFY_STORE. A client that reads a directory's files in order (tar, cp -r, rsync)
//! then waits for one request per window of files instead of one per file.
//!
//! The kernel takes the pushed pages only for inodes it already knows (the READDIRPLUS of
//! the directory made them) and otherwise answers ENOENT, which is harmless. Pushed bytes
//! come through [`Image::read_with`], so they are verified like any other read. Only
//! `/dev/fuse` has this channel: virtio-fs guests do not take notifications.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use crate::reader::{Image, InodeTable, NodeData, NodeId};

/// Bytes of file heads pushed after one file starts being read.
const WINDOW_BYTES: u64 = 4 << 20;
/// Most files looked at after one file starts being read.
const WINDOW_FILES: usize = 256;
/// Largest head pushed per file; the kernel's own read-ahead fetches the rest.
const HEAD_BYTES: u64 = 256 << 10;

/// `FUSE_NOTIFY_STORE` from the FUSE protocol (`fuse_notify_code`).
const FUSE_NOTIFY_STORE: i32 = 4;
/// `fuse_out_header` (len, error, unique) then `fuse_notify_store_out` (nodeid, offset,
/// size, padding).
const STORE_HEADER: usize = 16 + 24;

const NO_FILE: NodeId = NodeId::MAX;

/// Hands "this file was opened for reading" events to the pushing thread; the thread ends
/// when this is dropped.
#[derive(Debug)]
pub(super) struct Pusher {
    started: SyncSender<NodeId>,
    /// Files pushed or already read by the client: nothing to push for them.
    done: Arc<[AtomicBool]>,
}

impl Pusher {
    /// Starts pushing through `fuse` (the mount's `/dev/fuse`) for `image`.
    pub fn start(image: Arc<Image>, fuse: File) -> std::io::Result<Self> {
        let next_file = next_files(image.table());
        let done: Arc<[AtomicBool]> = (0..next_file.len()).map(|_| false.into()).collect();
        let (started, events) = mpsc::sync_channel(64);
        let pushed = done.clone();
        std::thread::Builder::new()
            .name("pfs-push".into())
            .spawn(move || push_loop(&image, &fuse, &next_file, &pushed, events))?;
        Ok(Pusher { started, done })
    }

    /// A client read the start of file `node`. Never blocks; dropped when the thread is busy.
    pub fn file_started(&self, node: NodeId) {
        if let Some(done) = self.done.get(node as usize) {
            done.store(true, Ordering::Relaxed);
        }
        let _ = self.started.try_send(node);
    }
}

/// For each regular file, the next non-empty regular file in its directory (by name), for
/// the first directory entry naming it; [`NO_FILE`] otherwise.
pub(super) fn next_files(table: &InodeTable) -> Box<[NodeId]> {
    let mut next = vec![NO_FILE; table.len()];
    let mut named = vec![false; table.len()];
    for id in 0..table.len() {
        let mut prev: Option<NodeId> = None;
        for e in table.entries(id as NodeId) {
            let node = table.node(e.node);
            if !matches!(node.data, NodeData::File(_)) || named[e.node as usize] {
                continue;
            }
            named[e.node as usize] = true;
            if node.size == 0 {
                continue;
            }
            if let Some(p) = prev {
                next[p as usize] = e.node;
            }
            prev = Some(e.node);
        }
    }
    next.into()
}

/// Pushes the window after each file a client starts, always from the newest such file: a
/// client that got ahead of this thread has no use for the files it passed.
fn push_loop(
    image: &Image,
    mut fuse: &File,
    next_file: &[NodeId],
    done: &[AtomicBool],
    events: Receiver<NodeId>,
) {
    let mut buf = Vec::new();
    let mut newer = None;
    loop {
        let Some(mut node) = newer.take().or_else(|| events.recv().ok()) else {
            return;
        };
        let mut bytes = 0u64;
        for _ in 0..WINDOW_FILES {
            if let Ok(n) = events.try_recv() {
                newer = Some(n);
                break;
            }
            node = match next_file.get(node as usize) {
                Some(&n) if n != NO_FILE => n,
                _ => break,
            };
            if done[node as usize].swap(true, Ordering::Relaxed) {
                continue;
            }
            let len = image.table().node(node).size.min(HEAD_BYTES);
            buf.clear();
            if image
                .read_with(node, 0, len, |piece| {
                    buf.extend_from_slice(piece);
                    Ok::<(), crate::reader::ReaderError>(())
                })
                .is_err()
            {
                // The client's own read reports the error.
                continue;
            }
            let header = store_header(u64::from(node) + 1, buf.len());
            // ENOENT: the kernel has no inode for it (not listed yet, or forgotten).
            // Anything else (the mount going away): the client reads normally.
            if let Err(e) = fuse.write_vectored(&[IoSlice::new(&header), IoSlice::new(&buf)]) {
                log::debug!("FUSE_NOTIFY_STORE of node {node}: {e}");
            }
            bytes += len;
            if bytes >= WINDOW_BYTES {
                break;
            }
        }
    }
}

/// The headers of a FUSE_NOTIFY_STORE of `size` bytes at offset 0 of FUSE inode `nodeid`.
fn store_header(nodeid: u64, size: usize) -> [u8; STORE_HEADER] {
    let mut h = [0u8; STORE_HEADER];
    let total = (STORE_HEADER + size) as u32; // at most HEAD_BYTES + the headers
    h[0..4].copy_from_slice(&total.to_ne_bytes());
    h[4..8].copy_from_slice(&FUSE_NOTIFY_STORE.to_ne_bytes());
    // unique (8..16) stays 0: a notification, not a reply.
    h[16..24].copy_from_slice(&nodeid.to_ne_bytes());
    // offset (24..32) stays 0.
    h[32..36].copy_from_slice(&(size as u32).to_ne_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_header_layout() {
        let h = store_header(0x0102_0304_0506_0708, 5000);
        assert_eq!(u32::from_ne_bytes(h[0..4].try_into().unwrap()), 5040);
        assert_eq!(i32::from_ne_bytes(h[4..8].try_into().unwrap()), 4);
        assert_eq!(&h[8..16], &[0; 8]);
        assert_eq!(
            u64::from_ne_bytes(h[16..24].try_into().unwrap()),
            0x0102_0304_0506_0708
        );
        assert_eq!(u32::from_ne_bytes(h[32..36].try_into().unwrap()), 5000);
    }
}
