//! FastCDC chunking with pinned parameters: chunk boundaries are part of the format.

use std::io::Read;

use fastcdc::v2020::StreamCDC;

use crate::format::Chunking;

/// Name recorded in images for the chunker (FastCDC 2020 as implemented by `fastcdc` 3.0.0).
pub const CHUNKER_NAME: &str = "fastcdc-v2020";

/// Minimum, average and maximum chunk sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// Minimum chunk size.
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

impl Default for ChunkParams {
    /// Upstream PuzzleFS's parameters (16/64/256 KiB), so both tools cut the same stream alike.
    fn default() -> Self {
        ChunkParams {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        }
    }
}

impl ChunkParams {
    /// The record stored in image metadata.
    pub fn record(&self, compression: Option<(u32, i32)>) -> Chunking {
        let (frame, level) = compression.unwrap_or((0, 0));
        Chunking {
            algorithm: CHUNKER_NAME.into(),
            min_size: self.min,
            avg_size: self.avg,
            max_size: self.max,
            compression: if compression.is_some() {
                "zstd-seekable".into()
            } else {
                "none".into()
            },
            zstd_frame_size: frame,
            zstd_level: level,
        }
    }
}

/// Splits a byte stream into content-defined chunks.
pub struct Chunker {
    inner: StreamCDC,
}

impl Chunker {
    /// Chunks everything `source` yields.
    pub fn new(source: Box<dyn Read>, params: ChunkParams) -> Self {
        Chunker {
            inner: StreamCDC::new(source, params.min, params.avg, params.max),
        }
    }
}

impl Iterator for Chunker {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => io,
                other => std::io::Error::other(other.to_string()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_stream_within_bounds() {
        let data: Vec<u8> = (0..3_000_000u64)
            .map(|i| (i.wrapping_mul(0x9E3779B97F4A7C15) >> 56) as u8)
            .collect();
        let p = ChunkParams::default();
        let chunks: Vec<Vec<u8>> = Chunker::new(Box::new(std::io::Cursor::new(data.clone())), p)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chunks.concat(), data);
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.len() >= p.min as usize && c.len() <= p.max as usize);
        }
        assert!(chunks.len() > 5);
    }
}
