//! Turns the scanned tree and stored chunks into metadata and an image manifest.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::catalog::Catalog;
use super::pack::ChunkPlace;
use super::scan::{ScanKind, Tree};
use super::BuildError;
use crate::chunk::fs_verity_digest;
use crate::format::{
    encode_rootfs, BlobRef, Chunking, Digest, FileChunk, Inode, InodeKind, Pack, PackedChunk,
    Rootfs, MANIFEST_VERSION,
};
use crate::oci::{
    empty_config, Descriptor, ImageManifest, OciDir, ANNOTATION_VERITY_ROOT, MEDIA_TYPE_FILEDATA,
    MEDIA_TYPE_MANIFEST, MEDIA_TYPE_ROOTFS,
};

/// What is known about a blob an image refers to.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlobFacts {
    pub compressed: bool,
    pub stored_len: u64,
    pub verity: Option<[u8; 32]>,
}

/// Splits the placed chunks among the streamed files (in stream order, empty files skipped).
pub(super) fn split_chunks(
    files: &[(u64, u64)],
    chunks: &[ChunkPlace],
) -> Result<HashMap<u64, Vec<FileChunk>>, String> {
    let mut out = HashMap::with_capacity(files.len());
    let (mut ci, mut used) = (0usize, 0u64);
    for &(ino, size) in files {
        let mut need = size;
        let mut list = Vec::new();
        while need > 0 {
            let c = chunks
                .get(ci)
                .ok_or_else(|| format!("data stream ended early at inode {ino}"))?;
            let take = (c.raw_len - used).min(need);
            list.push(FileChunk {
                blob: BlobRef {
                    digest: c.blob,
                    offset: c.offset + used,
                    compressed: c.compressed,
                },
                len: take,
            });
            used += take;
            need -= take;
            if used == c.raw_len {
                ci += 1;
                used = 0;
            }
        }
        out.insert(ino, list);
    }
    if ci != chunks.len() || used != 0 {
        return Err("data stream longer than the files".into());
    }
    Ok(out)
}

/// Builds the single-layer metadata for `tree`, with each file's chunks from `file_chunks`.
pub(super) fn rootfs(
    tree: Tree,
    mut file_chunks: HashMap<u64, Vec<FileChunk>>,
    file_digests: &HashMap<u64, Digest>,
    blobs: &HashMap<Digest, BlobFacts>,
    chunking: Chunking,
    packs: Vec<Pack>,
) -> Rootfs {
    let mut inodes = Vec::with_capacity(tree.nodes.len());
    let mut verity = BTreeMap::new();
    for node in tree.nodes {
        let mut symlink_target = None;
        let kind = match node.kind {
            ScanKind::Dir(entries) => InodeKind::Dir {
                entries,
                look_below: false,
            },
            ScanKind::File { .. } => {
                let chunks = file_chunks.remove(&node.ino).unwrap_or_default();
                for c in &chunks {
                    if let Some(v) = blobs.get(&c.blob.digest).and_then(|b| b.verity) {
                        verity.insert(c.blob.digest, v);
                    }
                }
                InodeKind::File { chunks }
            }
            ScanKind::Symlink(target) => {
                symlink_target = Some(target);
                InodeKind::Symlink
            }
            ScanKind::Chr { major, minor } => InodeKind::Chr { major, minor },
            ScanKind::Blk { major, minor } => InodeKind::Blk { major, minor },
            ScanKind::Fifo => InodeKind::Fifo,
            ScanKind::Socket => InodeKind::Socket,
        };
        let file_digest = file_digests.get(&node.ino).copied();
        inodes.push(Inode {
            file_digest,
            ino: node.ino,
            kind,
            uid: node.uid,
            gid: node.gid,
            permissions: node.permissions,
            xattrs: node.xattrs,
            symlink_target,
            mtime: node.mtime,
        });
    }
    Rootfs {
        layers: vec![inodes],
        verity,
        manifest_version: MANIFEST_VERSION,
        chunking: Some(chunking),
        packs,
    }
}

/// The pack table of an image whose files are `file_chunks`: every pack a file chunk lies in,
/// with the chunks of it the image uses. Adds each pack's facts to `blobs`.
pub(super) fn pack_table(
    oci: &OciDir,
    file_chunks: &HashMap<u64, Vec<FileChunk>>,
    catalog: &Catalog,
    blobs: &mut HashMap<Digest, BlobFacts>,
) -> Result<Vec<Pack>, BuildError> {
    let mut used: BTreeMap<Digest, BTreeMap<u64, PackedChunk>> = BTreeMap::new();
    for c in file_chunks.values().flatten() {
        let Some(facts) = catalog.packs.get(&c.blob.digest) else {
            continue;
        };
        let chunk = facts.chunk_at(c.blob.offset, c.len).ok_or_else(|| {
            BuildError::Internal(format!(
                "bytes at {} of pack {} are in none of its chunks",
                c.blob.offset, c.blob.digest
            ))
        })?;
        used.entry(c.blob.digest)
            .or_default()
            .insert(chunk.offset, *chunk);
    }
    let mut packs = Vec::with_capacity(used.len());
    for (digest, chunks) in used {
        let facts = &catalog.packs[&digest];
        let verity = match facts.verity {
            Some(v) => v,
            None => fs_verity_digest(&oci.read_blob(&digest, u64::MAX)?),
        };
        blobs.insert(
            digest,
            BlobFacts {
                compressed: facts.compressed,
                stored_len: facts.stored_len,
                verity: Some(verity),
            },
        );
        let parts = chunks
            .values()
            .flat_map(|c| facts.parts_in(c).iter().copied())
            .collect();
        packs.push(Pack {
            digest,
            compressed: facts.compressed,
            chunks: chunks.into_values().collect(),
            parts,
        });
    }
    Ok(packs)
}

/// The encoded metadata blob and the manifest listing it and every data blob, in the order
/// files first use them.
pub(super) fn manifest(
    rootfs: &Rootfs,
    blobs: &HashMap<Digest, BlobFacts>,
) -> Result<(Vec<u8>, ImageManifest), crate::format::FormatError> {
    let meta = encode_rootfs(rootfs)?;
    let meta_desc = Descriptor {
        media_type: MEDIA_TYPE_ROOTFS.into(),
        digest: Digest::of(&meta),
        size: meta.len() as u64,
        annotations: Some(
            [(
                ANNOTATION_VERITY_ROOT.to_string(),
                hex::encode(fs_verity_digest(&meta)),
            )]
            .into(),
        ),
        data: None,
        platform: None,
        extra: Default::default(),
    };
    let mut layers = vec![meta_desc];
    let mut seen = HashSet::new();
    for inode in rootfs.layers.iter().flatten() {
        if let InodeKind::File { chunks } = &inode.kind {
            for c in chunks {
                if seen.insert(c.blob.digest) {
                    let facts = blobs.get(&c.blob.digest);
                    let compressed = facts.map_or(c.blob.compressed, |f| f.compressed);
                    layers.push(Descriptor {
                        media_type: if compressed {
                            format!("{MEDIA_TYPE_FILEDATA}+zstd")
                        } else {
                            MEDIA_TYPE_FILEDATA.into()
                        },
                        digest: c.blob.digest,
                        size: facts.map_or(0, |f| f.stored_len),
                        annotations: None,
                        data: None,
                        platform: None,
                        extra: Default::default(),
                    });
                }
            }
        }
    }
    Ok((
        meta,
        ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_MANIFEST.into()),
            config: empty_config().0,
            layers,
            annotations: None,
            extra: Default::default(),
        },
    ))
}
