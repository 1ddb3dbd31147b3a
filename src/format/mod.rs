//! PuzzleFS metadata: Rust types and their Cap'n Proto encoding, with limits for untrusted input.

mod decode;
mod digest;
mod encode;
mod error;
mod human;
mod types;

#[allow(clippy::all, clippy::pedantic, missing_docs, unused_parens)]
#[rustfmt::skip]
#[path = "../../schema/metadata_capnp.rs"]
pub(crate) mod metadata_capnp;

pub use decode::{decode_rootfs, DecodeLimits};
pub use digest::{Digest, Sha256Writer};
pub use encode::encode_rootfs;
pub use error::FormatError;
pub use human::{human_bytes, parse_bytes};
pub use types::{
    BlobRef, ChunkPart, Chunking, DirEntry, FileChunk, Inode, InodeKind, Pack, PackedChunk, Rootfs,
    Timespec, Xattr, MANIFEST_VERSION, ROOT_INO,
};
