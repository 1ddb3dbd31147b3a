//! Chunking the data stream on every core: one thread cuts chunks, workers compress and hash
//! them, and the caller gets them back in stream order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;

use std::collections::HashMap;

use super::pack::Prepared;
use super::stream::{unwrap_io, FileStream};
use super::{BuildError, ZstdOptions};
use crate::chunk::{append_seek_table, compress_frames, fs_verity_digest, ChunkParams, Chunker};
use crate::format::Digest;

/// Hashes a chunk in the form it is stored in: for packs its raw bytes (frame groups compress
/// them once placed); else a seekable blob of its own when compression is asked for and pays,
/// or the raw bytes.
fn prepare(data: Vec<u8>, zstd: Option<ZstdOptions>, packed: bool) -> Result<Prepared, BuildError> {
    let raw_len = data.len() as u64;
    let (stored, compressed) = match zstd.filter(|_| !packed) {
        Some(z) => {
            let (mut c, frames) = compress_frames(&data, z.frame_size, z.level)?;
            append_seek_table(&mut c, &frames);
            if c.len() < data.len() {
                (c, true)
            } else {
                (data, false)
            }
        }
        None => (data, false),
    };
    Ok(Prepared {
        digest: Digest::of(&stored),
        compressed,
        raw_len,
        verity: (!packed).then(|| fs_verity_digest(&stored)),
        stored,
    })
}

/// Runs the pipeline to the end of `stream`. `on_chunk` sees each chunk once, in order.
pub(super) fn run(
    stream: FileStream,
    params: ChunkParams,
    zstd: Option<ZstdOptions>,
    packed: bool,
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
    on_chunk: &mut dyn FnMut(Prepared) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let threads = threads.max(1);
    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(threads * 2);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Result<(usize, Prepared), BuildError>>();

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
                let result = prepare(data, zstd, packed).map(|c| (seq, c));
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                let _ = done.send(result);
            });
        }
        drop(done_tx);

        // Chunks that came back early wait here until every chunk before them is placed.
        let mut waiting: HashMap<usize, Prepared> = HashMap::new();
        let mut next = 0;
        let mut first_error = None;
        for result in done_rx.iter() {
            let placed = result.and_then(|(seq, chunk)| {
                waiting.insert(seq, chunk);
                while let Some(c) = waiting.remove(&next) {
                    next += 1;
                    on_chunk(c)?;
                }
                Ok(())
            });
            if let Err(e) = placed {
                stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None if waiting.is_empty() => Ok(()),
            None => Err(BuildError::Cancelled),
        }
    })
}
