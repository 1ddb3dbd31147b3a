//! The packs already in a layout, found through its tagged images' metadata: where each
//! chunk lies, by the sha256 of its contents, so a build stores only chunks the layout does
//! not hold yet.

use std::collections::HashMap;

use super::BuildError;
use crate::format::{decode_rootfs, ChunkPart, DecodeLimits, Digest, Pack, PackedChunk};
use crate::oci::{OciDir, MEDIA_TYPE_ROOTFS};
use crate::reader::MAX_METADATA_BYTES;

/// What is known about a pack blob.
#[derive(Debug, Clone)]
pub(super) struct PackFacts {
    pub compressed: bool,
    pub stored_len: u64,
    pub verity: Option<[u8; 32]>,
    /// Every chunk known to lie in it, sorted by offset.
    pub chunks: Vec<PackedChunk>,
    /// Every part known inside its frame groups, sorted by offset.
    pub parts: Vec<ChunkPart>,
}

impl PackFacts {
    /// The chunk whose contents hold `[offset, offset + len)`.
    pub fn chunk_at(&self, offset: u64, len: u64) -> Option<&PackedChunk> {
        let at = self.chunks.partition_point(|c| c.offset <= offset);
        at.checked_sub(1)
            .map(|i| &self.chunks[i])
            .filter(|c| offset.saturating_add(len) <= c.offset + c.len)
    }

    /// The parts inside packed chunk `c`.
    pub fn parts_in(&self, c: &PackedChunk) -> &[ChunkPart] {
        ChunkPart::within(&self.parts, c)
    }
}

/// Where a chunk's contents lie: `len` bytes at `offset` of a pack, inside packed chunk
/// `within` (the chunk itself, unless it is a part of a frame group).
#[derive(Debug, Clone, Copy)]
pub(super) struct Found {
    pub within: PackedChunk,
    pub offset: u64,
    pub len: u64,
}

/// Packs of a layout and the chunks in them.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    pub packs: HashMap<Digest, PackFacts>,
    /// sha256 of a chunk's contents -> the pack holding it, for uncompressed builds (raw
    /// packs) and for compressed builds (compressed packs, and the raw packs of compressed
    /// builds, which hold what zstd could not shrink): an uncompressed build stays
    /// uncompressed, and a compressed build does not take chunks an uncompressed one stored.
    /// With several, the smallest pack digest, so the choice does not depend on the order
    /// tags are listed in. Raw packed chunks are their own contents; compressed ones are known
    /// through their parts (a compressed packed chunk without parts, as the first packed
    /// images had, is not found).
    pub chunks: [HashMap<Digest, (Digest, Found)>; 2],
}

impl Catalog {
    /// Reads the metadata of every image tagged in `oci`. Images that cannot be read are
    /// skipped: their chunks are simply stored again. Packs missing from the layout are left out.
    pub fn of_layout(oci: &OciDir) -> Result<Catalog, BuildError> {
        let mut catalog = Catalog::default();
        let index = oci.read_index()?;
        let mut metadata = Vec::new();
        for desc in &index.manifests {
            let Ok(manifest) = oci.read_manifest(desc) else {
                continue;
            };
            metadata.extend(
                manifest
                    .layers
                    .iter()
                    .filter(|l| l.media_type == MEDIA_TYPE_ROOTFS)
                    .map(|l| l.digest),
            );
        }
        metadata.sort();
        metadata.dedup();
        for digest in metadata {
            let Ok(bytes) = oci.read_blob(&digest, MAX_METADATA_BYTES) else {
                continue;
            };
            let Ok(rootfs) = decode_rootfs(&bytes, &DecodeLimits::default()) else {
                continue;
            };
            let compressed_build = rootfs
                .chunking
                .as_ref()
                .is_some_and(|c| c.compression != "none");
            for pack in rootfs.packs {
                let Some(stored_len) = oci.blob_size(&pack.digest) else {
                    continue;
                };
                let verity = rootfs.verity.get(&pack.digest).copied();
                catalog.add(pack, stored_len, verity, compressed_build);
            }
        }
        Ok(catalog)
    }

    /// Records a pack with the chunks and parts an image lists in it, its stored size and
    /// fs-verity digest, and whether that image was built compressed.
    pub fn add(
        &mut self,
        pack: Pack,
        stored_len: u64,
        verity: Option<[u8; 32]>,
        compressed_build: bool,
    ) {
        let Pack {
            digest,
            compressed,
            chunks,
            parts,
        } = pack;
        let facts = self.packs.entry(digest).or_insert(PackFacts {
            compressed,
            stored_len,
            verity,
            chunks: Vec::new(),
            parts: Vec::new(),
        });
        if facts.compressed != compressed {
            return;
        }
        facts.verity = facts.verity.or(verity);
        facts.chunks.extend(chunks);
        facts.chunks.sort_by_key(|c| c.offset);
        facts.chunks.dedup_by_key(|c| c.offset);
        facts.parts.extend(parts);
        facts.parts.sort_by_key(|p| p.offset);
        facts.parts.dedup_by_key(|p| p.offset);
        // Which builds may take its chunks: 0 uncompressed, 1 compressed.
        let kinds: &[usize] = match (compressed, compressed_build) {
            (true, _) => &[1],
            (false, false) => &[0],
            (false, true) => &[0, 1],
        };
        let mut found = Vec::new();
        for c in &facts.chunks {
            if !compressed {
                found.push((
                    c.digest,
                    Found {
                        within: *c,
                        offset: c.offset,
                        len: c.len,
                    },
                ));
            }
            for p in facts.parts_in(c) {
                found.push((
                    p.digest,
                    Found {
                        within: *c,
                        offset: p.offset,
                        len: p.len,
                    },
                ));
            }
        }
        for (contents, at) in found {
            for &kind in kinds {
                Self::offer(&mut self.chunks[kind], contents, digest, at);
            }
        }
    }

    fn offer(
        map: &mut HashMap<Digest, (Digest, Found)>,
        contents: Digest,
        digest: Digest,
        at: Found,
    ) {
        map.entry(contents)
            .and_modify(|(p, old)| {
                if digest < *p {
                    (*p, *old) = (digest, at);
                }
            })
            .or_insert((digest, at));
    }
}
