//! Writing a file's bytes while leaving holes where whole 4 KiB blocks are zero, so sparse
//! inputs stay sparse (and all-zero files cost no disk space).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Granularity of holes: the page and common file system block size.
pub const BLOCK: usize = 4096;
/// Bytes gathered before writing (a multiple of [`BLOCK`]).
const BUFFER: usize = 64 * BLOCK;

/// Writes sequential pieces of a file, skipping all-zero aligned blocks.
pub struct SparseWriter<'f> {
    file: &'f File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`; always a multiple of [`BLOCK`].
    at: u64,
    /// Bytes that went to disk (the rest became holes).
    pub written: u64,
}

impl<'f> SparseWriter<'f> {
    /// Starts writing `file` at offset 0.
    pub fn new(file: &'f File) -> Self {
        SparseWriter {
            file,
            buf: Vec::new(),
            at: 0,
            written: 0,
        }
    }

    /// Appends `piece`.
    pub fn push(&mut self, mut piece: &[u8]) -> io::Result<()> {
        // Large pieces bypass the buffer when it is empty (the common case for big chunks).
        if self.buf.is_empty() && piece.len() >= BUFFER {
            let whole = piece.len() - piece.len() % BLOCK;
            self.write_blocks_at(&piece[..whole], self.at)?;
            self.at += whole as u64;
            piece = &piece[whole..];
        }
        while !piece.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(BUFFER);
            }
            let take = (BUFFER - self.buf.len()).min(piece.len());
            self.buf.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if self.buf.len() == BUFFER {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        self.write_blocks_at(&buf, self.at)?;
        self.at += buf.len() as u64;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and sets the file's length to everything pushed.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush()?;
        self.file.set_len(self.at)?;
        Ok(self.at)
    }

    /// Writes the non-zero blocks of `data`, coalescing runs into single writes.
    fn write_blocks_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut run_start: Option<usize> = None;
        let mut pos = 0;
        while pos < data.len() {
            let end = (pos + BLOCK).min(data.len());
            let zero = is_zero(&data[pos..end]);
            match (zero, run_start) {
                (false, None) => run_start = Some(pos),
                (true, Some(start)) => {
                    self.file
                        .write_all_at(&data[start..pos], offset + start as u64)?;
                    self.written += (pos - start) as u64;
                    run_start = None;
                }
                _ => {}
            }
            pos = end;
        }
        if let Some(start) = run_start {
            self.file
                .write_all_at(&data[start..], offset + start as u64)?;
            self.written += (data.len() - start) as u64;
        }
        Ok(())
    }
}

/// Whether every byte is zero (OR-folded in small blocks, which the compiler vectorizes).
fn is_zero(data: &[u8]) -> bool {
    data.chunks(256)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn write_in_pieces(data: &[u8], piece: usize) -> (Vec<u8>, u64, u64) {
        let tmp = tempfile::tempfile().unwrap();
        let mut w = SparseWriter::new(&tmp);
        for p in data.chunks(piece.max(1)) {
            w.push(p).unwrap();
        }
        let written = w.written;
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        let mut back = vec![0u8; data.len()];
        tmp.read_exact_at(&mut back, 0).unwrap();
        (back, written, tmp.metadata().unwrap().blocks())
    }

    #[test]
    fn contents_survive_any_piece_size() {
        let mut data = vec![0u8; 3 * BUFFER + 1234];
        for (i, b) in data.iter_mut().enumerate() {
            if (i / BLOCK) % 3 == 1 || i > 3 * BUFFER {
                *b = (i % 251) as u8 | 1;
            }
        }
        for piece in [1, 100, BLOCK, BLOCK + 1, BUFFER, 2 * BUFFER + 7, data.len()] {
            let (back, written, _) = write_in_pieces(&data, piece);
            assert!(back == data, "piece size {piece}");
            assert!(written < data.len() as u64, "holes left for zero blocks");
        }
    }

    #[test]
    fn zero_files_and_tails_become_holes() {
        let data = vec![0u8; 5 * BUFFER + 10];
        let (back, written, blocks) = write_in_pieces(&data, 70_000);
        assert_eq!(back, data);
        assert_eq!(written, 0);
        assert_eq!(blocks, 0, "an all-zero file occupies no blocks");
        let (back, written, _) = write_in_pieces(b"", 10);
        assert!(back.is_empty() && written == 0);
    }

    #[test]
    fn zero_check_sees_every_byte() {
        for i in 0..BLOCK {
            let mut b = vec![0u8; BLOCK];
            assert!(is_zero(&b));
            b[i] = 1;
            assert!(!is_zero(&b), "{i}");
        }
    }
}
