//! The packs already in a layout, found through its tagged images' metadata: where each
//! stored chunk lies, so a build stores only chunks the layout does not hold yet.

use std::collections::HashMap;

use super::BuildError;
use crate::format::{decode_rootfs, DecodeLimits, Digest, PackedChunk};
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
}

impl PackFacts {
    /// The chunk whose contents hold `[offset, offset + len)`.
    pub fn chunk_at(&self, offset: u64, len: u64) -> Option<&PackedChunk> {
        let at = self.chunks.partition_point(|c| c.offset <= offset);
        at.checked_sub(1)
            .map(|i| &self.chunks[i])
            .filter(|c| offset.saturating_add(len) <= c.offset + c.len)
    }
}

/// Packs of a layout and the chunks in them.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    pub packs: HashMap<Digest, PackFacts>,
    /// Chunk digest -> the pack holding it. With several, the smallest pack digest, so the
    /// choice does not depend on the order tags are listed in.
    pub chunks: HashMap<Digest, (Digest, PackedChunk)>,
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
            for pack in rootfs.packs {
                let Some(stored_len) = oci.blob_size(&pack.digest) else {
                    continue;
                };
                let verity = rootfs.verity.get(&pack.digest).copied();
                catalog.add(
                    pack.digest,
                    pack.compressed,
                    stored_len,
                    verity,
                    pack.chunks,
                );
            }
        }
        Ok(catalog)
    }

    /// Records a pack and the chunks known to lie in it.
    pub fn add(
        &mut self,
        digest: Digest,
        compressed: bool,
        stored_len: u64,
        verity: Option<[u8; 32]>,
        chunks: Vec<PackedChunk>,
    ) {
        for c in &chunks {
            self.chunks
                .entry(c.digest)
                .and_modify(|(p, at)| {
                    if digest < *p {
                        (*p, *at) = (digest, *c);
                    }
                })
                .or_insert((digest, *c));
        }
        let facts = self.packs.entry(digest).or_insert(PackFacts {
            compressed,
            stored_len,
            verity,
            chunks: Vec::new(),
        });
        facts.verity = facts.verity.or(verity);
        facts.chunks.extend(chunks);
        facts.chunks.sort_by_key(|c| c.offset);
        facts.chunks.dedup_by_key(|c| c.offset);
    }
}
