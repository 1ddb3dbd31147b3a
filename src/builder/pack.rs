//! Placing chunks, in stream order: reused where the layout already holds them, else appended
//! to an open pack (raw chunks and compressed frame groups in separate packs) that is sealed
//! and staged once it reaches its target size; or, with no packs, each stored as its own blob.

use std::collections::HashMap;

use super::assemble::BlobFacts;
use super::catalog::Catalog;
use super::group::{Compressed, Grouper};
use super::{BuildError, ZstdOptions};
use crate::chunk::{append_seek_table, decompress_frames, fs_verity_digest, FrameSizes};
use crate::format::{ChunkPart, Digest, Pack, PackedChunk};
use crate::oci::{OciDir, OciError, Staging};

/// A chunk as the workers prepared it: the bytes to store and their digest. For packs these
/// are the raw bytes (frame groups compress them later); a chunk stored as its own blob is
/// raw or a seekable blob.
pub(super) struct Prepared {
    pub digest: Digest,
    pub compressed: bool,
    pub raw_len: u64,
    pub stored: Vec<u8>,
    /// fs-verity digest of `stored`, for a chunk stored as its own blob.
    pub verity: Option<[u8; 32]>,
}

/// The blob a chunk lies in: known, a pack of this build not sealed yet, or a frame group not
/// compressed yet (its offset counts from the group's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobId {
    Known(Digest),
    Open(usize),
    Group(usize),
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
    parts: Vec<ChunkPart>,
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
    /// A compressed build.
    compressing: bool,
    /// Compresses the new chunks of a compressed, packed build.
    grouper: Option<Grouper>,
    /// Where each compressed group went: pack id, offset there, compressed.
    groups: HashMap<usize, (usize, u64, bool)>,
    catalog: Catalog,
    /// Packs open now, raw and compressed.
    open: [Option<OpenPack>; 2],
    next_id: usize,
    /// Digest of each sealed pack of this build, by id.
    sealed: HashMap<usize, Digest>,
    /// Chunks of this build not in the catalog, by digest.
    placed: HashMap<Digest, Placed>,
    /// Catalog packed chunks (pack, offset) checked against their stored bytes and parts.
    checked: HashMap<(Digest, u64), bool>,
    /// Catalog packs checked against their digest.
    sound_packs: HashMap<Digest, bool>,
    order: Vec<Placed>,
    /// Facts about chunks stored as their own blobs.
    standalone: HashMap<Digest, BlobFacts>,
    written: Written,
}

impl<'s, 'o> Packer<'s, 'o> {
    /// Packs of about `target` stored bytes (0: no packs); compressed packs when `zstd` is
    /// set, their frame groups compressed on `threads` threads.
    pub fn new(
        oci: &'o OciDir,
        staging: &'s Staging<'o>,
        target: u64,
        zstd: Option<ZstdOptions>,
        threads: usize,
        catalog: Catalog,
    ) -> Self {
        Packer {
            oci,
            staging,
            target,
            compressing: zstd.is_some(),
            grouper: zstd
                .filter(|_| target > 0)
                .map(|z| Grouper::new(z, threads)),
            groups: HashMap::new(),
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

    /// Whether new chunks are compressed in frame groups: a compressed build into packs.
    fn groups_chunks(&self) -> bool {
        self.compressing && self.target > 0
    }

    /// Whether chunks go into packs (and so come raw from the workers, to be grouped here).
    pub fn packs(&self) -> bool {
        self.target > 0
    }

    /// Places the next chunk of the stream.
    pub fn place(&mut self, c: Prepared) -> Result<(), BuildError> {
        let placed = match self.find(&c)? {
            Some(p) => p,
            None if self.target == 0 => self.store_alone(c)?,
            None if self.grouper.is_some() => self.group(c)?,
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
        // The catalog knows chunks by the sha256 of their contents, which is the digest of a
        // raw chunk (as the workers prepare every chunk for packs).
        let by_contents = self.target > 0 || !c.compressed;
        let kind = usize::from(self.compressing);
        let known = self.catalog.chunks[kind]
            .get(&c.digest)
            .filter(|_| by_contents);
        if let Some(&(pack, found)) = known {
            let compressed = self.catalog.packs.get(&pack).map(|f| f.compressed);
            if found.len == c.raw_len && self.catalog_chunk_holds(pack, &found.within)? {
                return Ok(Some(Placed {
                    blob: BlobId::Known(pack),
                    offset: found.offset,
                    compressed: compressed.unwrap_or(false),
                    raw_len: c.raw_len,
                }));
            }
        }
        // A raw chunk is the same bytes whether it sits in a pack or alone (upstream's layout);
        // a compressed build into packs compresses it instead.
        let raw_alone = !c.compressed && !self.groups_chunks();
        if raw_alone && self.oci.blob_size(&c.digest) == Some(c.raw_len) {
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
    /// must match its digest (checked once per pack), the packed chunk's stored bytes theirs,
    /// and in a frame group every part its contents' digest. Another image's metadata and the
    /// layout's blobs are not trusted blindly.
    fn catalog_chunk_holds(&mut self, pack: Digest, at: &PackedChunk) -> Result<bool, BuildError> {
        if let Some(&ok) = self.checked.get(&(pack, at.offset)) {
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
                Ok(bytes) => Digest::of(&bytes) == at.digest && self.parts_hold(pack, at, &bytes),
                Err(e @ OciError::Io { .. }) => return Err(e.into()),
                Err(_) => false,
            };
        self.checked.insert((pack, at.offset), ok);
        Ok(ok)
    }

    /// Whether every part the catalog knows inside a compressed packed chunk has the digest
    /// it claims (`stored` already matched the packed chunk's).
    fn parts_hold(&self, pack: Digest, at: &PackedChunk, stored: &[u8]) -> bool {
        let Some(facts) = self.catalog.packs.get(&pack) else {
            return false;
        };
        let parts = facts.parts_in(at);
        if !facts.compressed || parts.is_empty() {
            return true;
        }
        let Ok(raw) = decompress_frames(stored, at.len) else {
            return false;
        };
        parts.iter().all(|p| p.holds(at, &raw))
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

    /// The open pack of one kind (0 raw, 1 compressed), opened if need be.
    fn open_pack(&mut self, slot: usize) -> &mut OpenPack {
        let next_id = &mut self.next_id;
        self.open[slot].get_or_insert_with(|| {
            let id = *next_id;
            *next_id += 1;
            OpenPack {
                id,
                ..OpenPack::default()
            }
        })
    }

    /// Appends a raw chunk to the open raw pack.
    fn append(&mut self, c: Prepared) -> Result<Placed, BuildError> {
        let pack = self.open_pack(0);
        let placed = Placed {
            blob: BlobId::Open(pack.id),
            offset: pack.logical,
            compressed: false,
            raw_len: c.raw_len,
        };
        append_raw(pack, c.digest, &c.stored);
        self.written.chunks += 1;
        self.placed.insert(c.digest, placed);
        self.seal_if_full(0).map(|()| placed)
    }

    /// Adds a chunk to the open frame group; stores the groups compressed meanwhile.
    fn group(&mut self, c: Prepared) -> Result<Placed, BuildError> {
        let grouper = self
            .grouper
            .as_mut()
            .expect("group() is called with a grouper");
        let ((id, offset), done) = grouper.add(c.digest, &c.stored)?;
        let placed = Placed {
            blob: BlobId::Group(id),
            offset,
            compressed: true,
            raw_len: c.raw_len,
        };
        self.written.chunks += 1;
        self.placed.insert(c.digest, placed);
        for g in done {
            self.store_group(g)?;
        }
        Ok(placed)
    }

    /// Appends a compressed group to the open compressed pack as one packed chunk whose parts
    /// are its chunks; a group that did not shrink goes to the raw pack chunk by chunk.
    fn store_group(&mut self, c: Compressed) -> Result<(), BuildError> {
        let group = c.group;
        let slot = usize::from(c.frames.is_some());
        let pack = self.open_pack(slot);
        let base = pack.logical;
        match c.frames {
            Some((bytes, frames)) => {
                let mut offset = base;
                for &(digest, len) in &group.parts {
                    pack.parts.push(ChunkPart {
                        digest,
                        offset,
                        len,
                    });
                    offset += len;
                }
                pack.chunks.push(PackedChunk {
                    digest: Digest::of(&bytes),
                    offset: base,
                    len: group.raw.len() as u64,
                    stored_offset: pack.bytes.len() as u64,
                    stored_len: bytes.len() as u64,
                });
                pack.bytes.extend_from_slice(&bytes);
                pack.frames.extend_from_slice(&frames);
                pack.logical += group.raw.len() as u64;
            }
            None => {
                let mut at = 0usize;
                for &(digest, len) in &group.parts {
                    append_raw(pack, digest, &group.raw[at..at + len as usize]);
                    at += len as usize;
                }
            }
        }
        let id = pack.id;
        self.groups.insert(group.id, (id, base, slot == 1));
        self.seal_if_full(slot)
    }

    fn seal_if_full(&mut self, slot: usize) -> Result<(), BuildError> {
        let full = self.open[slot]
            .as_ref()
            .is_some_and(|p| p.bytes.len() as u64 >= self.target);
        if full {
            self.seal(slot)?;
        }
        Ok(())
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
        // The same chunks packed again can make the very pack found damaged: replace it.
        let put = if self.sound_packs.get(&digest) == Some(&false) {
            Staging::put_replacing
        } else {
            Staging::put
        };
        if put(self.staging, &digest, &pack.bytes)? {
            self.written.bytes += pack.bytes.len() as u64;
        }
        self.sealed.insert(pack.id, digest);
        let stored_len = pack.bytes.len() as u64;
        let listed = Pack {
            digest,
            compressed,
            chunks: pack.chunks,
            parts: pack.parts,
        };
        self.catalog
            .add(listed, stored_len, Some(verity), self.compressing);
        Ok(())
    }

    /// Seals the open packs. Returns each chunk of the stream, placed; every pack known
    /// (the layout's and this build's); facts about chunks stored as their own blobs; and what
    /// was written.
    pub fn finish(mut self) -> Result<Finished, BuildError> {
        if let Some(mut grouper) = self.grouper.take() {
            for g in grouper.finish()? {
                self.store_group(g)?;
            }
        }
        self.seal(0)?;
        self.seal(1)?;
        let (sealed, groups) = (&self.sealed, &self.groups);
        let order = self
            .order
            .iter()
            .map(|p| {
                let (blob, offset, compressed) = match p.blob {
                    BlobId::Known(d) => (d, p.offset, p.compressed),
                    BlobId::Open(id) => (sealed[&id], p.offset, p.compressed),
                    BlobId::Group(g) => {
                        let (id, base, compressed) = groups[&g];
                        (sealed[&id], base + p.offset, compressed)
                    }
                };
                ChunkPlace {
                    blob,
                    offset,
                    compressed,
                    raw_len: p.raw_len,
                }
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

/// Appends raw bytes to a raw pack as one packed chunk (stored where its contents are).
fn append_raw(pack: &mut OpenPack, digest: Digest, bytes: &[u8]) {
    pack.chunks.push(PackedChunk {
        digest,
        offset: pack.logical,
        len: bytes.len() as u64,
        stored_offset: pack.bytes.len() as u64,
        stored_len: bytes.len() as u64,
    });
    pack.bytes.extend_from_slice(bytes);
    pack.logical += bytes.len() as u64;
}

/// What a finished [`Packer`] placed and wrote.
pub(super) struct Finished {
    pub order: Vec<ChunkPlace>,
    pub catalog: Catalog,
    pub standalone: HashMap<Digest, BlobFacts>,
    pub written: Written,
}
