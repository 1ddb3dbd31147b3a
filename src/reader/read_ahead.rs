//! Read-ahead: a background thread that loads (reads, verifies, decompresses) the chunks
//! after the one a reader just used into the chunk cache, so sequential readers find them
//! ready instead of waiting for zstd.

use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;

use super::image::{load_blob, ChunkInfo};
use super::{ChunkKey, HeapChunkCache};
use crate::oci::OciDir;

/// Hands chunks to the read-ahead thread; the thread ends when this is dropped.
#[derive(Debug)]
pub(super) struct ReadAhead {
    queue: SyncSender<ChunkInfo>,
    depth: usize,
}

impl ReadAhead {
    /// Starts a thread loading up to `depth` chunks ahead of readers.
    pub fn start(
        oci: OciDir,
        cache: Arc<HeapChunkCache>,
        depth: usize,
        verity: bool,
    ) -> std::io::Result<Self> {
        let (queue, wanted) = mpsc::sync_channel::<ChunkInfo>(depth * 2);
        std::thread::Builder::new()
            .name("pfs-read-ahead".into())
            .spawn(move || {
                for blob in wanted {
                    // A failure here is reported when a reader needs the chunk itself.
                    let _ = cache.get_or_load(&(&blob).into(), || load_blob(&oci, &blob, verity));
                }
            })?;
        Ok(ReadAhead { queue, depth })
    }

    /// A reader used `blobs[used]`: queue the next chunks that are not loaded yet. Never
    /// blocks: when the thread is behind, the hint is dropped.
    pub fn used(&self, blobs: &[ChunkInfo], used: usize, cache: &HeapChunkCache) {
        let next = blobs.iter().skip(used + 1).take(self.depth);
        for blob in next.filter(|b| !cache.has(&ChunkKey::from(*b))) {
            if self.queue.try_send(*blob).is_err() {
                return;
            }
        }
    }
}
