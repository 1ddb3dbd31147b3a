//! Frame groups: the new chunks of a compressed, packed build, gathered in stream order until
//! the next would overflow a zstd frame, compressed together on threads of their own, and
//! handed back in the order they were gathered.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::{BuildError, ZstdOptions};
use crate::chunk::{compress_frames, FrameSizes};
use crate::format::Digest;

/// Consecutive chunks to be stored together.
pub(super) struct Group {
    pub id: usize,
    pub raw: Vec<u8>,
    /// Each chunk's sha256 and length, back to back in `raw`.
    pub parts: Vec<(Digest, u64)>,
}

/// A group after compression: its zstd frames, or `None` when they would not be smaller than
/// the raw bytes (the group is then stored raw).
pub(super) struct Compressed {
    pub group: Group,
    pub frames: Option<(Vec<u8>, Vec<FrameSizes>)>,
}

type Done = (usize, Result<Compressed, BuildError>);

pub(super) struct Grouper {
    frame_size: u64,
    open: Option<Group>,
    next_id: usize,
    jobs: Option<mpsc::Sender<Group>>,
    done: mpsc::Receiver<Done>,
    /// Groups sent and not received yet, and the most allowed.
    inflight: usize,
    max_inflight: usize,
    /// Groups compressed out of order, waiting for those before them.
    waiting: BTreeMap<usize, Result<Compressed, BuildError>>,
    next_out: usize,
}

impl Grouper {
    /// Gathers groups of at most `zstd.frame_size` bytes (a chunk larger than that is a group
    /// alone, cut into frames of that size), compressing on `threads` threads.
    pub fn new(zstd: ZstdOptions, threads: usize) -> Self {
        let threads = threads.max(1);
        let (jobs, job_rx) = mpsc::channel::<Group>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            // The threads end when `jobs` is dropped (with the grouper).
            std::thread::spawn(move || loop {
                let next = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(group) = next else { return };
                let id = group.id;
                let result = compress_frames(&group.raw, zstd.frame_size, zstd.level)
                    .map(|(bytes, frames)| Compressed {
                        frames: (bytes.len() < group.raw.len()).then_some((bytes, frames)),
                        group,
                    })
                    .map_err(BuildError::from);
                if done_tx.send((id, result)).is_err() {
                    return;
                }
            });
        }
        Grouper {
            frame_size: u64::from(zstd.frame_size.max(1)),
            open: None,
            next_id: 0,
            jobs: Some(jobs),
            done,
            inflight: 0,
            max_inflight: threads * 2,
            waiting: BTreeMap::new(),
            next_out: 0,
        }
    }

    /// Adds the next new chunk. Returns its group and offset in it, and the groups whose
    /// compression finished, in order.
    pub fn add(
        &mut self,
        digest: Digest,
        data: &[u8],
    ) -> Result<((usize, u64), Vec<Compressed>), BuildError> {
        let len = data.len() as u64;
        let mut out = Vec::new();
        let full = self
            .open
            .as_ref()
            .is_some_and(|g| !g.raw.is_empty() && g.raw.len() as u64 + len > self.frame_size);
        if full {
            self.send_open(&mut out)?;
        }
        let group = self.open.get_or_insert_with(|| {
            let id = self.next_id;
            self.next_id += 1;
            Group {
                id,
                raw: Vec::new(),
                parts: Vec::new(),
            }
        });
        let at = (group.id, group.raw.len() as u64);
        group.raw.extend_from_slice(data);
        group.parts.push((digest, len));
        Ok((at, out))
    }

    /// Compresses what is still open and returns every group not handed back yet, in order.
    pub fn finish(&mut self) -> Result<Vec<Compressed>, BuildError> {
        let mut out = Vec::new();
        self.send_open(&mut out)?;
        while self.inflight > 0 {
            self.receive(&mut out)?;
        }
        Ok(out)
    }

    fn send_open(&mut self, out: &mut Vec<Compressed>) -> Result<(), BuildError> {
        let Some(group) = self.open.take() else {
            return Ok(());
        };
        while self.inflight >= self.max_inflight {
            self.receive(out)?;
        }
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(group).is_ok());
        if !sent {
            return Err(BuildError::Internal("compression threads are gone".into()));
        }
        self.inflight += 1;
        Ok(())
    }

    /// Waits for one group, then hands back every group now in order.
    fn receive(&mut self, out: &mut Vec<Compressed>) -> Result<(), BuildError> {
        let (id, result) = self
            .done
            .recv()
            .map_err(|_| BuildError::Internal("a compression thread died".into()))?;
        self.inflight -= 1;
        self.waiting.insert(id, result);
        while let Some(result) = self.waiting.remove(&self.next_out) {
            self.next_out += 1;
            out.push(result?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn groups_fill_frames_in_order_and_incompressible_ones_stay_raw() {
        let zstd = ZstdOptions {
            frame_size: 100_000,
            level: 3,
        };
        let mut g = Grouper::new(zstd, 2);
        let mut got = Vec::new();
        let mut places = Vec::new();
        let chunks: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                if i % 10 < 5 {
                    vec![i as u8; 30_000]
                } else {
                    noise(30_000, 2 * i + 1)
                }
            })
            .collect();
        for c in &chunks {
            let (at, done) = g.add(Digest::of(c), c).unwrap();
            places.push(at);
            got.extend(done);
        }
        got.extend(g.finish().unwrap());
        // Three 30 KB chunks fit 100 KB; a fourth would not.
        assert_eq!(places[0], (0, 0));
        assert_eq!(places[2], (0, 60_000));
        assert_eq!(places[3], (1, 0));
        let ids: Vec<usize> = got.iter().map(|c| c.group.id).collect();
        assert_eq!(ids, (0..ids.len()).collect::<Vec<_>>());
        let all: Vec<u8> = got.iter().flat_map(|c| c.group.raw.clone()).collect();
        assert_eq!(all, chunks.concat());
        for c in &got {
            // Noise does not compress; a group with any run of one byte does.
            let compressible = (0..chunks.len()).any(|i| places[i].0 == c.group.id && i % 10 < 5);
            assert_eq!(c.frames.is_some(), compressible, "group {}", c.group.id);
            if let Some((bytes, _)) = &c.frames {
                let back =
                    crate::chunk::decompress_frames(bytes, c.group.raw.len() as u64).unwrap();
                assert_eq!(back, c.group.raw);
            }
        }
    }
}
