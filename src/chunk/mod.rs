//! Cutting the file data stream into chunks, and the byte formats of chunk blobs:
//! FastCDC parameters, the zstd seekable format, fs-verity digests.

mod error;
mod params;
mod seekable;
mod verity;

pub use error::ChunkError;
pub use params::{ChunkParams, Chunker, CHUNKER_NAME};
pub use seekable::{
    append_seek_table, compress_frames, compress_seekable, decompress_frames, decompress_seekable,
    seekable_size, FrameSizes, DEFAULT_FRAME_SIZE,
};
pub use verity::fs_verity_digest;
