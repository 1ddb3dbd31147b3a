//! Placing chunks, in stream order: reused where the layout already holds them, else appended
//! to an open pack (raw chunks and compressed chunks in separate packs) that is sealed and
//! staged once it reaches its target size; or, with no packs, each stored as its own blob.

use std::collections::HashMap;

use super::assemble::BlobFacts;
use super::catalog::Catalog;
use super::BuildError;
use crate::chunk::{append_seek_table, fs_verity_digest, FrameSizes};
use crate::format::{Digest, PackedChunk};
use crate::oci::{OciDir, OciError, Staging};

/// A chunk as the workers prepared it: stored bytes and their digest.
pub(super) struct Prepared {
    pub digest: Digest,
    pub compressed: bool,
    pub raw_len: u64,
    /// What is stored: raw bytes, zstd frames (in a pack) or a seekable blob (on its own).
    pub stored: Vec<u8>,
    /// The zstd frames of `stored`, for a compressed chunk going into a pack.
    pub frames: Vec<FrameSizes>,
    /// fs-verity digest of `stored`, for a chunk stored as its own blob.
    pub verity: Option<[u8; 32]>,
}

/// The blob a chunk lies in: known, or a pack of this build not sealed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobId {
    Known(Digest),
    Open(usize),
}

/// Where a chunk of the stream went.
#[derive(Debug, Clone, Copy)]
struct Placed {
    blob: BlobId,
    /// Offset of the chunk's contents in the blob's uncompressed view.
    offset: u64,
    compressed: bool,
    raw_len: u64,
}

/// A chunk of the stream, placed: `raw_len` bytes at `offset` of blob `blob`.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkPlace {
    pub blob: Digest,
    pub offset: u64,
    pub compressed: bool,
    pub raw_len: u64,
}

#[derive(Default)]
struct OpenPack {
    id: usize,
    bytes: Vec<u8>,
    logical: u64,
    frames: Vec<FrameSizes>,
    chunks: Vec<PackedChunk>,
}

/// What placing the stream wrote.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Written {
    pub chunks: u64,
    pub bytes: u64,
}

pub(super) struct Packer<'s, 'o> {
    oci: &'o OciDir,
    staging: &'s Staging<'o>,
    /// Target stored size of a pack; 0: every chunk its own blob.
    target: u64,
    catalog: Catalog,
    /// Packs open now, raw and compressed.
    open: [Option<OpenPack>; 2],
    next_id: usize,
    /// Digest of each sealed pack of this build, by id.
    sealed: HashMap<usize, Digest>,
    /// Chunks of this build not in the catalog, by digest.
    placed: HashMap<Digest, Placed>,
    /// Catalog chunks checked against their stored bytes.
    checked: HashMap<Digest, bool>,
    /// Catalog packs checked against their digest.
    sound_packs: HashMap<Digest, bool>,
    order: Vec<Placed>,
    /// Facts about chunks stored as their own blobs.
    standalone: HashMap<Digest, BlobFacts>,
    written: Written,
}

impl<'s, 'o> Packer<'s, 'o> {
    pub fn new(oci: &'o OciDir, staging: &'s Staging<'o>, target: u64, catalog: Catalog) -> Self {
        Packer {
            oci,
            staging,
            target,
            catalog,
            open: [None, None],
            next_id: 0,
            sealed: HashMap::new(),
            placed: HashMap::new(),
            checked: HashMap::new(),
            sound_packs: HashMap::new(),
            order: Vec::new(),
            standalone: HashMap::new(),
            written: Written::default(),
        }
    }

    /// Whether chunks go into packs (and so need frames without a seek table).
    pub fn packs(&self) -> bool {
        self.target > 0
    }

    /// Places the next chunk of the stream.
    pub fn place(&mut self, c: Prepared) -> Result<(), BuildError> {
        let placed = match self.find(&c)? {
            Some(p) => p,
            None if self.target == 0 => self.store_alone(c)?,
            None => self.append(c)?,
        };
        self.order.push(placed);
        Ok(())
    }

    /// Where an identical chunk already is: placed by this build, in a catalog pack (checked
    /// once against its stored bytes), or a blob of its own in the layout.
    fn find(&mut self, c: &Prepared) -> Result<Option<Placed>, BuildError> {
        if let Some(p) = self.placed.get(&c.digest) {
            return Ok(Some(*p));
        }
        if let Some(&(pack, at)) = self.catalog.chunks.get(&c.digest) {
            let fits = self.catalog.packs.get(&pack).is_some_and(|f| {
                f.compressed == c.compressed
                    && at.len == c.raw_len
                    && at.stored_len == c.stored.len() as u64
            });
            if fits && self.catalog_chunk_holds(pack, &at)? {
                return Ok(Some(Placed {
                    blob: BlobId::Known(pack),
                    offset: at.offset,
                    compressed: c.compressed,
                    raw_len: c.raw_len,
                }));
            }
        }
        // A raw chunk is the same bytes whether it sits in a pack or alone (upstream's layout).
        if !c.compressed && self.oci.blob_size(&c.digest) == Some(c.raw_len) {
            let placed = Placed {
                blob: BlobId::Known(c.digest),
                offset: 0,
                compressed: false,
                raw_len: c.raw_len,
            };
            self.standalone.insert(
                c.digest,
                BlobFacts {
                    compressed: false,
                    stored_len: c.raw_len,
                    verity: Some(fs_verity_digest(&c.stored)),
                },
            );
            self.placed.insert(c.digest, placed);
            return Ok(Some(placed));
        }
        Ok(None)
    }

    /// Whether a catalog pack really holds the chunk where its metadata says: the whole pack
    /// must match its digest (checked once per pack) and the chunk's stored bytes theirs.
    /// Another image's metadata and the layout's blobs are not trusted blindly.
    fn catalog_chunk_holds(&mut self, pack: Digest, at: &PackedChunk) -> Result<bool, BuildError> {
        if let Some(&ok) = self.checked.get(&at.digest) {
            return Ok(ok);
        }
        let sound = match self.sound_packs.get(&pack) {
            Some(&ok) => ok,
            None => {
                let ok = match self.oci.verify_blob(&pack) {
                    Ok(ok) => ok,
                    Err(e @ OciError::Io { .. }) => return Err(e.into()),
                    Err(_) => false,
                };
                self.sound_packs.insert(pack, ok);
                ok
            }
        };
        let read = self
            .oci
            .read_blob_range(&pack, at.stored_offset, at.stored_len, None);
        let ok = sound
            && match read {
                Ok(bytes) => Digest::of(&bytes) == at.digest,
                Err(e @ OciError::Io { .. }) => return Err(e.into()),
                Err(_) => false,
            };
        self.checked.insert(at.digest, ok);
        Ok(ok)
    }

    fn store_alone(&mut self, c: Prepared) -> Result<Placed, BuildError> {
        if self.staging.put(&c.digest, &c.stored)? {
            self.written.chunks += 1;
            self.written.bytes += c.stored.len() as u64;
        }
        let verity = c.verity.unwrap_or_else(|| fs_verity_digest(&c.stored));
        self.standalone.insert(
            c.digest,
            BlobFacts {
                compressed: c.compressed,
                stored_len: c.stored.len() as u64,
                verity: Some(verity),
            },
        );
        let placed = Placed {
            blob: BlobId::Known(c.digest),
            offset: 0,
            compressed: c.compressed,
            raw_len: c.raw_len,
        };
        self.placed.insert(c.digest, placed);
        Ok(placed)
    }

    fn append(&mut self, c: Prepared) -> Result<Placed, BuildError> {
        let slot = usize::from(c.compressed);
        let pack = match &mut self.open[slot] {
            Some(p) => p,
            none => {
                let id = self.next_id;
                self.next_id += 1;
                none.insert(OpenPack {
                    id,
                    ..OpenPack::default()
                })
            }
        };
        let placed = Placed {
            blob: BlobId::Open(pack.id),
            offset: pack.logical,
            compressed: c.compressed,
            raw_len: c.raw_len,
        };
        pack.chunks.push(PackedChunk {
            digest: c.digest,
            offset: pack.logical,
            len: c.raw_len,
            stored_offset: pack.bytes.len() as u64,
            stored_len: c.stored.len() as u64,
        });
        pack.bytes.extend_from_slice(&c.stored);
        pack.frames.extend_from_slice(&c.frames);
        pack.logical += c.raw_len;
        self.written.chunks += 1;
        self.placed.insert(c.digest, placed);
        if pack.bytes.len() as u64 >= self.target {
            self.seal(slot)?;
        }
        Ok(placed)
    }

    fn seal(&mut self, slot: usize) -> Result<(), BuildError> {
        let Some(mut pack) = self.open[slot].take() else {
            return Ok(());
        };
        let compressed = slot == 1;
        if compressed {
            append_seek_table(&mut pack.bytes, &pack.frames);
        }
        let digest = Digest::of(&pack.bytes);
        let verity = fs_verity_digest(&pack.bytes);
        if self.staging.put(&digest, &pack.bytes)? {
            self.written.bytes += pack.bytes.len() as u64;
        }
        self.sealed.insert(pack.id, digest);
        self.catalog.add(
            digest,
            compressed,
            pack.bytes.len() as u64,
            Some(verity),
            pack.chunks,
        );
        Ok(())
    }

    /// Seals the open packs. Returns each chunk of the stream, placed; every pack known
    /// (the layout's and this build's); facts about chunks stored as their own blobs; and what
    /// was written.
    pub fn finish(mut self) -> Result<Finished, BuildError> {
        self.seal(0)?;
        self.seal(1)?;
        let sealed = &self.sealed;
        let order = self
            .order
            .iter()
            .map(|p| ChunkPlace {
                blob: match p.blob {
                    BlobId::Known(d) => d,
                    BlobId::Open(id) => sealed[&id],
                },
                offset: p.offset,
                compressed: p.compressed,
                raw_len: p.raw_len,
            })
            .collect();
        Ok(Finished {
            order,
            catalog: self.catalog,
            standalone: self.standalone,
            written: self.written,
        })
    }
}

/// What a finished [`Packer`] placed and wrote.
pub(super) struct Finished {
    pub order: Vec<ChunkPlace>,
    pub catalog: Catalog,
    pub standalone: HashMap<Digest, BlobFacts>,
    pub written: Written,
}
