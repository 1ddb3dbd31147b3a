//! Reading images: manifest -> metadata -> a validated inode table -> verified file bytes.

mod cache;
mod chunk_store;
mod error;
mod image;
mod key;
mod read_ahead;
mod table;
mod walk;

pub use cache::{ChunkCache, ChunkData, DEFAULT_CACHE_BYTES};
pub use chunk_store::{ChunkStore, ChunkStoreStats};
pub use error::ReaderError;
pub use image::{BlobInfo, Image, OpenOptions, MAX_BLOB_BYTES, MAX_METADATA_BYTES};
pub use key::ChunkKey;
pub use table::{Entry, Extent, InodeTable, Node, NodeData, NodeId, NAME_MAX, ROOT};
pub use walk::{Walk, WalkItem};
