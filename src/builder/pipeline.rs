//! Chunking and storing the data stream on every core: one thread cuts chunks, workers
//! compress, hash and stage them, results come back in stream order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;

use super::stream::{unwrap_io, FileStream};
use super::{BuildError, ZstdOptions};
use crate::chunk::{compress_seekable, fs_verity_digest, ChunkParams, Chunker};
use crate::format::Digest;
use crate::oci::Staging;

/// A chunk as stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct StoredChunk {
    pub digest: Digest,
    pub compressed: bool,
    pub raw_len: u64,
    pub stored_len: u64,
    pub verity: [u8; 32],
    pub new: bool,
}

fn store(
    data: Vec<u8>,
    zstd: Option<ZstdOptions>,
    staging: &Staging<'_>,
) -> Result<StoredChunk, BuildError> {
    let raw_len = data.len() as u64;
    let (stored, compressed) = match zstd {
        Some(z) => {
            let c = compress_seekable(&data, z.frame_size, z.level)?;
            if c.len() < data.len() {
                (c, true)
            } else {
                (data, false)
            }
        }
        None => (data, false),
    };
    let digest = Digest::of(&stored);
    let verity = fs_verity_digest(&stored);
    let new = staging.put(&digest, &stored)?;
    Ok(StoredChunk {
        digest,
        compressed,
        raw_len,
        stored_len: stored.len() as u64,
        verity,
        new,
    })
}

/// Runs the pipeline to the end of `stream`. `on_chunk` sees each chunk once, in order.
pub(super) fn run(
    stream: FileStream,
    params: ChunkParams,
    zstd: Option<ZstdOptions>,
    threads: usize,
    staging: &Staging<'_>,
    cancelled: &(dyn Fn() -> bool + Sync),
    on_chunk: &mut dyn FnMut(&StoredChunk),
) -> Result<Vec<StoredChunk>, BuildError> {
    let threads = threads.max(1);
    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(threads * 2);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Result<(usize, StoredChunk), BuildError>>();

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let chunk_done = done_tx.clone();
        let stop = &stop;
        s.spawn(move || {
            for (seq, chunk) in Chunker::new(Box::new(stream), params).enumerate() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if cancelled() {
                    let _ = chunk_done.send(Err(BuildError::Cancelled));
                    return;
                }
                let sent = match chunk {
                    Ok(data) => work_tx.send((seq, data)).is_ok(),
                    Err(e) => {
                        let _ = chunk_done.send(Err(unwrap_io(e)));
                        false
                    }
                };
                if !sent {
                    return;
                }
            }
        });
        for _ in 0..threads {
            let done = done_tx.clone();
            let work_rx = &work_rx;
            s.spawn(move || loop {
                let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((seq, data)) = next else { return };
                // After a failure, keep draining so the chunker never blocks on a full queue.
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                let result = store(data, zstd, staging).map(|c| (seq, c));
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                let _ = done.send(result);
            });
        }
        drop(done_tx);

        let mut slots: Vec<Option<StoredChunk>> = Vec::new();
        let mut next = 0;
        let mut first_error = None;
        for result in done_rx.iter() {
            match result {
                Ok((seq, chunk)) => {
                    if slots.len() <= seq {
                        slots.resize(seq + 1, None);
                    }
                    slots[seq] = Some(chunk);
                    while let Some(Some(c)) = slots.get(next) {
                        on_chunk(c);
                        next += 1;
                    }
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        slots
            .into_iter()
            .map(|c| c.ok_or(BuildError::Cancelled))
            .collect()
    })
}
