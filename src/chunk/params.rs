//! FastCDC chunking with pinned parameters: chunk boundaries are part of the format.

use std::io::Read;

use fastcdc::v2020::FastCDC;

use super::ChunkError;
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
    /// Smallest average chunk size accepted.
    pub const MIN_AVERAGE: u32 = 4 << 10;
    /// Largest average chunk size accepted (FastCDC's limit).
    pub const MAX_AVERAGE: u32 = 4 << 20;

    /// Parameters scaled from an average size as upstream's are: min = avg / 4, max = avg * 4.
    /// The average must be a power of two within [`Self::MIN_AVERAGE`, `Self::MAX_AVERAGE`].
    pub fn with_average(avg: u32) -> Result<Self, ChunkError> {
        if !avg.is_power_of_two() || !(Self::MIN_AVERAGE..=Self::MAX_AVERAGE).contains(&avg) {
            return Err(ChunkError::BadParams(format!(
                "average chunk size {avg} is not a power of two from {} to {} bytes",
                Self::MIN_AVERAGE,
                Self::MAX_AVERAGE
            )));
        }
        let params = ChunkParams {
            min: avg / 4,
            avg,
            max: avg * 4,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks the bounds FastCDC accepts (it panics outside them) and min <= avg <= max.
    pub fn validate(&self) -> Result<(), ChunkError> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(ChunkError::BadParams(format!(
                "chunk sizes {}/{}/{} are outside FastCDC's bounds",
                self.min, self.avg, self.max
            )))
        }
    }

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

/// Bytes read from the source at a time. Every cut point is computed over at least
/// `max` bytes (or up to the end of the stream), exactly as `fastcdc`'s `StreamCDC` does, so
/// the chunks are the same; a large buffer just avoids its per-chunk copying and shifting.
const READ_BUFFER: usize = 4 << 20;

/// Splits a byte stream into content-defined chunks.
pub struct Chunker {
    source: Box<dyn Read>,
    params: ChunkParams,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Chunker {
    /// Chunks everything `source` yields.
    pub fn new(source: Box<dyn Read>, params: ChunkParams) -> Self {
        Chunker {
            source,
            params,
            buf: vec![0; READ_BUFFER.max(params.max as usize)],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Makes at least `max` bytes available past `start`, unless the stream ends first.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.eof || self.end - self.start >= self.params.max as usize {
            return Ok(());
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.buf.len() {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Iterator for Chunker {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        let window = &self.buf[self.start..self.end];
        if window.is_empty() {
            return None;
        }
        let p = self.params;
        let (_, cut) = FastCDC::new(window, p.min, p.avg, p.max).cut(0, window.len());
        let chunk = window[..cut].to_vec();
        self.start += cut;
        Some(Ok(chunk))
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

    #[test]
    fn average_scales_the_bounds_and_rejects_bad_sizes() {
        assert_eq!(
            ChunkParams::with_average(64 << 10).unwrap(),
            ChunkParams::default()
        );
        let big = ChunkParams::with_average(ChunkParams::MAX_AVERAGE).unwrap();
        assert_eq!((big.min, big.max), (1 << 20, 16 << 20));
        for bad in [0, 1000, 2 << 10, 8 << 20, (64 << 10) + 1] {
            assert!(ChunkParams::with_average(bad).is_err(), "{bad} accepted");
        }
        let inverted = ChunkParams {
            min: 256 << 10,
            avg: 64 << 10,
            max: 16 << 10,
        };
        assert!(inverted.validate().is_err());
    }

    /// Chunk boundaries are part of the format: they must stay those of `fastcdc`'s own
    /// streaming chunker, whatever sizes the source's reads return.
    #[test]
    fn cuts_where_fastcdc_streamcdc_cuts() {
        /// Returns at most 7919 bytes per read, to exercise refills mid-chunk.
        struct Trickle(std::io::Cursor<Vec<u8>>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(7919);
                self.0.read(&mut buf[..n])
            }
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut data: Vec<u8> = (0..9_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        // Long runs of zeros force maximum-size chunks.
        data[1_000_000..2_500_000].fill(0);
        let p = ChunkParams::default();
        let ours: Vec<Vec<u8>> =
            Chunker::new(Box::new(Trickle(std::io::Cursor::new(data.clone()))), p)
                .collect::<Result<_, _>>()
                .unwrap();
        let reference: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::new(
            Box::new(std::io::Cursor::new(data)),
            p.min,
            p.avg,
            p.max,
        )
        .map(|c| c.unwrap().data)
        .collect();
        assert!(reference.len() > 100);
        assert_eq!(ours, reference);
    }
}
