//! The zstd seekable format: independent zstd frames followed by a seek table in a skippable
//! frame. Blobs are written and read whole; the seek table lets a reader bound the output
//! before decompressing anything, so a zstd bomb is refused up front.

use std::cell::RefCell;

use super::ChunkError;

/// Uncompressed bytes per frame we write; readers accept any frame size. In packs, chunks are
/// grouped to fill a frame (docs/format.md, "Frame groups", has the measurement behind it).
pub const DEFAULT_FRAME_SIZE: u32 = 1 << 20;

const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const FOOTER: usize = 9;
const CHECKSUM_FLAG: u8 = 0x80;
const RESERVED_BITS: u8 = 0x7C;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Compresses `data` into the seekable format with frames of `frame_size` uncompressed bytes.
pub fn compress_seekable(data: &[u8], frame_size: u32, level: i32) -> Result<Vec<u8>, ChunkError> {
    let (mut out, table) = compress_frames(data, frame_size, level)?;
    append_seek_table(&mut out, &table);
    Ok(out)
}

/// One zstd frame: its compressed and uncompressed sizes, as a seek table lists them.
pub type FrameSizes = (u32, u32);

/// Compresses `data` into back-to-back zstd frames of `frame_size` uncompressed bytes, without
/// a seek table (what a chunk in a pack is); returns the frames and their sizes.
pub fn compress_frames(
    data: &[u8],
    frame_size: u32,
    level: i32,
) -> Result<(Vec<u8>, Vec<FrameSizes>), ChunkError> {
    let frame_size = frame_size.max(1) as usize;
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            let c = zstd::bulk::Compressor::new(level).map_err(ChunkError::Zstd)?;
            *slot = Some((level, c));
        }
        let (_, comp) = slot.as_mut().expect("compressor was just set");
        let mut table: Vec<FrameSizes> = Vec::new();
        let out = if data.len() <= frame_size {
            // One frame (what chunks get by default): compressed straight into the output.
            let mut out =
                Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()) + 8 + 8 + FOOTER);
            if !data.is_empty() {
                let n = comp
                    .compress_to_buffer(data, &mut out)
                    .map_err(ChunkError::Zstd)?;
                table.push((n as u32, data.len() as u32));
            }
            out
        } else {
            let mut out = Vec::with_capacity(data.len() / 2 + 64);
            let mut scratch = Vec::new();
            for frame in data.chunks(frame_size) {
                scratch.clear();
                scratch.reserve(zstd::zstd_safe::compress_bound(frame.len()));
                let n = comp
                    .compress_to_buffer(frame, &mut scratch)
                    .map_err(ChunkError::Zstd)?;
                out.extend_from_slice(&scratch[..n]);
                table.push((n as u32, frame.len() as u32));
            }
            out
        };
        Ok((out, table))
    })
}

/// Appends the seek table of `frames` (which must be what precedes it in `out`), making `out`
/// a seekable blob.
pub fn append_seek_table(out: &mut Vec<u8>, frames: &[FrameSizes]) {
    let content = frames.len() * 8 + FOOTER;
    out.reserve(content + 8);
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(content as u32).to_le_bytes());
    for (c, d) in frames {
        out.extend_from_slice(&c.to_le_bytes());
        out.extend_from_slice(&d.to_le_bytes());
    }
    out.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
}

/// Decompresses back-to-back zstd frames that must hold exactly `len` bytes (a chunk read
/// from a pack); more output than `len` is refused before it is produced.
pub fn decompress_frames(frames: &[u8], len: u64) -> Result<Vec<u8>, ChunkError> {
    let len = usize::try_from(len).map_err(|_| bad("chunk length overflows"))?;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(ChunkError::Zstd)?);
        }
        let dec = slot.as_mut().expect("decompressor was just set");
        let mut out = Vec::with_capacity(len);
        let n = dec
            .decompress_to_buffer(frames, &mut out)
            .map_err(|e| bad(format!("zstd frames: {e}")))?;
        if n != len {
            return Err(bad(format!("frames hold {n} bytes, the pack says {len}")));
        }
        Ok(out)
    })
}

struct Frame {
    compressed: usize,
    decompressed: usize,
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn bad(msg: impl Into<String>) -> ChunkError {
    ChunkError::BadSeekable(msg.into())
}

/// Parses the seek table and checks it tiles the blob exactly.
fn seek_table(blob: &[u8]) -> Result<(Vec<Frame>, usize), ChunkError> {
    if blob.len() < FOOTER + 8 {
        return Err(bad("too short for a seek table"));
    }
    let footer = blob.len() - FOOTER;
    if read_u32(blob, footer + 5) != SEEKABLE_MAGIC {
        return Err(bad("no seekable footer magic"));
    }
    let descriptor = blob[footer + 4];
    if descriptor & RESERVED_BITS != 0 {
        return Err(bad("reserved seek table bits set"));
    }
    let entry = if descriptor & CHECKSUM_FLAG != 0 {
        12
    } else {
        8
    };
    let frames = read_u32(blob, footer) as usize;
    let table_len = frames
        .checked_mul(entry)
        .and_then(|t| t.checked_add(FOOTER))
        .ok_or_else(|| bad("frame count overflows"))?;
    let skippable_start = blob
        .len()
        .checked_sub(table_len + 8)
        .ok_or_else(|| bad("seek table larger than blob"))?;
    if read_u32(blob, skippable_start) != SKIPPABLE_MAGIC
        || read_u32(blob, skippable_start + 4) as usize != table_len
    {
        return Err(bad("seek table frame header mismatch"));
    }
    let mut out = Vec::with_capacity(frames);
    let mut compressed_total = 0usize;
    let mut total = 0usize;
    for i in 0..frames {
        let at = skippable_start + 8 + i * entry;
        let c = read_u32(blob, at) as usize;
        let d = read_u32(blob, at + 4) as usize;
        compressed_total = compressed_total
            .checked_add(c)
            .ok_or_else(|| bad("sizes overflow"))?;
        total = total.checked_add(d).ok_or_else(|| bad("sizes overflow"))?;
        out.push(Frame {
            compressed: c,
            decompressed: d,
        });
    }
    if compressed_total != skippable_start {
        return Err(bad(format!(
            "frames cover {compressed_total} bytes but {skippable_start} precede the seek table"
        )));
    }
    Ok((out, total))
}

/// Decompressed size a seekable blob declares.
pub fn seekable_size(blob: &[u8]) -> Result<u64, ChunkError> {
    seek_table(blob).map(|(_, total)| total as u64)
}

/// Decompresses a whole seekable blob, refusing more than `limit` output bytes and any frame
/// whose actual size differs from its seek table entry.
pub fn decompress_seekable(blob: &[u8], limit: u64) -> Result<Vec<u8>, ChunkError> {
    let (frames, total) = seek_table(blob)?;
    if total as u64 > limit {
        return Err(ChunkError::TooLarge {
            size: total as u64,
            limit,
        });
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(ChunkError::Zstd)?);
        }
        let dec = slot.as_mut().expect("decompressor was just set");
        // zstd writes into the spare capacity, so the output is never zeroed first. One frame
        // (what we write) goes straight into the result; several go through `frame`.
        let mut out = Vec::with_capacity(total);
        let mut frame = Vec::new();
        let mut src = 0usize;
        for f in &frames {
            let input = &blob[src..src + f.compressed];
            let target = if frames.len() == 1 {
                &mut out
            } else {
                frame.clear();
                frame.reserve(f.decompressed);
                &mut frame
            };
            let n = dec
                .decompress_to_buffer(input, target)
                .map_err(|e| bad(format!("frame at {src}: {e}")))?;
            if n != f.decompressed {
                return Err(bad(format!(
                    "frame at {src} holds {n} bytes, seek table says {}",
                    f.decompressed
                )));
            }
            if frames.len() > 1 {
                out.extend_from_slice(&frame);
            }
            src += f.compressed;
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i / 7) % 251) as u8 ^ (i % 3) as u8)
            .collect()
    }

    #[test]
    fn round_trips_with_any_frame_size() {
        for (n, frame) in [
            (0, 4096),
            (1, 4096),
            (100_000, 4096),
            (100_000, 256 << 10),
            (70_000, 1000),
        ] {
            let data = sample(n);
            let blob = compress_seekable(&data, frame, 3).unwrap();
            assert_eq!(seekable_size(&blob).unwrap(), n as u64);
            assert_eq!(decompress_seekable(&blob, n as u64).unwrap(), data);
        }
    }

    #[test]
    fn bare_frames_decode_to_exactly_their_length() {
        let data = sample(300_000);
        let (frames, table) = compress_frames(&data, 100_000, 3).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(decompress_frames(&frames, data.len() as u64).unwrap(), data);
        assert!(decompress_frames(&frames, data.len() as u64 - 1).is_err());
        assert!(decompress_frames(&frames, data.len() as u64 + 1).is_err());
        assert!(decompress_frames(&frames[..frames.len() - 3], data.len() as u64).is_err());
        let mut blob = frames.clone();
        append_seek_table(&mut blob, &table);
        assert_eq!(decompress_seekable(&blob, 1 << 20).unwrap(), data);
    }

    #[test]
    fn bombs_and_lies_are_refused() {
        let data = vec![0u8; 1 << 20];
        let blob = compress_seekable(&data, 1 << 20, 3).unwrap();
        assert!(blob.len() < 1000);
        assert!(matches!(
            decompress_seekable(&blob, 1 << 19),
            Err(ChunkError::TooLarge { .. })
        ));
        // Seek table claims fewer bytes than the frame really holds.
        let mut lying = blob.clone();
        let entry = lying.len() - FOOTER - 8 + 4;
        lying[entry..entry + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decompress_seekable(&lying, 1 << 20).is_err());
        // Claims more.
        let mut more = blob.clone();
        more[entry..entry + 4].copy_from_slice(&(2u32 << 20).to_le_bytes());
        assert!(decompress_seekable(&more, 4 << 20).is_err());
    }

    #[test]
    fn corrupt_blobs_are_errors_not_panics() {
        let data = sample(50_000);
        let blob = compress_seekable(&data, 8192, 3).unwrap();
        for i in (0..blob.len()).step_by(97) {
            let mut b = blob.clone();
            b[i] ^= 0x5A;
            if let Ok(out) = decompress_seekable(&b, 1 << 20) {
                assert_eq!(out.len(), data.len());
            }
        }
        for cut in [0, 5, 16, blob.len() - 1] {
            assert!(decompress_seekable(&blob[..cut], 1 << 20).is_err());
        }
        assert!(decompress_seekable(&data, 1 << 20).is_err());
    }

    /// Blobs written by upstream PuzzleFS come from the zstd project's C implementation
    /// (via zstd-seekable); this frame layout with checksums must decode too.
    #[test]
    fn accepts_seek_tables_with_checksums() {
        let data = sample(10_000);
        let frame = zstd::bulk::compress(&data, 3).unwrap();
        let mut blob = frame.clone();
        blob.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        blob.extend_from_slice(&(12u32 + FOOTER as u32).to_le_bytes());
        blob.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        blob.extend_from_slice(&(data.len() as u32).to_le_bytes());
        blob.extend_from_slice(&0xdeadbeefu32.to_le_bytes());
        blob.extend_from_slice(&1u32.to_le_bytes());
        blob.push(CHECKSUM_FLAG);
        blob.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        assert_eq!(decompress_seekable(&blob, 1 << 20).unwrap(), data);
    }
}
