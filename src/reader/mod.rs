//! Reading images: manifest -> metadata -> a validated inode table -> verified file bytes.

mod defs;
mod error;
mod file_cache;
mod heap_cache;
mod image;
mod key;
mod read_ahead;
mod table;
mod walk;

pub use error::{CorruptChunk, ReaderError};
pub(crate) use file_cache::Lookup;
pub use file_cache::{FileChunkCache, FileChunkCacheStats};
pub use heap_cache::{ChunkData, HeapChunkCache, DEFAULT_CACHE_BYTES};
pub use image::{
    ChunkInfo, Image, OpenOptions, PackSlice, MAX_BLOB_BYTES, MAX_METADATA_BYTES, MAX_PACK_BYTES,
};
pub use key::ChunkKey;
pub use table::{
    DataFile, Entry, Extent, FileDigests, InodeTable, Node, NodeData, NodeId, Span, XattrSet,
    NAME_MAX, ROOT,
};
pub use walk::{Walk, WalkItem};
