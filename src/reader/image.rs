//! An opened image: its manifest, validated inode table, and verified file data.

use std::sync::Arc;

use super::heap_cache::ChunkData;
use super::read_ahead::ReadAhead;
use super::table::{Extent, FileDigests, InodeTable, NodeId};
use super::{CorruptChunk, HeapChunkCache, ReaderError, DEFAULT_CACHE_BYTES};
use crate::chunk::{decompress_frames, decompress_seekable};
use crate::format::{decode_rootfs, Chunking, DecodeLimits, Digest, MANIFEST_VERSION};
use crate::oci::{Descriptor, ImageManifest, OciDir};

/// Largest data blob (stored or decompressed) a reader accepts.
pub const MAX_BLOB_BYTES: u64 = 64 << 20;
/// Largest pack blob tools read whole (to check its digest or fs-verity digest); readers of
/// files read only the chunks they need.
pub const MAX_PACK_BYTES: u64 = 1 << 30;
/// Largest metadata blob a reader accepts.
pub const MAX_METADATA_BYTES: u64 = 512 << 20;

/// A chunk the image's files use: a whole data blob, or a slice of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// sha256 of its stored bytes (for a whole blob, the blob's digest and file name).
    pub digest: Digest,
    /// Stored compressed: a seekable blob, or whole zstd frames in a compressed pack.
    pub compressed: bool,
    /// fs-verity digest of the file holding it, when the image records one.
    pub verity: Option<[u8; 32]>,
    /// Where it lies when it is inside a pack.
    pub pack: Option<PackSlice>,
}

/// Where a chunk lies in a pack blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackSlice {
    /// The pack blob's digest (its file name).
    pub pack: Digest,
    /// Offset of the chunk's contents in the pack's uncompressed view.
    pub offset: u64,
    /// Length of its contents.
    pub len: u64,
    /// Offset of its stored bytes in the pack blob.
    pub stored_offset: u64,
    /// Length of its stored bytes.
    pub stored_len: u64,
}

impl ChunkInfo {
    /// Digest of the blob file holding the chunk: its pack, or itself.
    pub fn file(&self) -> Digest {
        self.pack.map_or(self.digest, |p| p.pack)
    }
}

/// How to open an image.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Refuse the image unless its manifest has this digest.
    pub pin: Option<Digest>,
    /// Chunk cache to use (shared between images); a private one by default.
    pub cache: Option<Arc<HeapChunkCache>>,
    /// Bounds on the metadata.
    pub limits: Option<DecodeLimits>,
    /// Chunks to load ahead of readers, in the background (0: none). For servers whose
    /// clients read files sequentially; one-shot tools leave it off.
    pub read_ahead: usize,
    /// Require fs-verity: the manifest file must measure to this fs-verity digest, and the
    /// metadata and every data blob to the digests the image records for them.
    pub fs_verity: Option<[u8; 32]>,
    /// Keep only what serving the image's files needs: the manifest's layer list (one
    /// descriptor per chunk, a fifth of an opened image's memory) and the files' recorded
    /// sha256 are dropped once checked, so [`Image::manifest`] has no layers. For daemons
    /// that keep many images open.
    pub lean: bool,
}

/// A PuzzleFS image, ready to be read.
#[derive(Debug)]
pub struct Image {
    oci: OciDir,
    manifest_digest: Digest,
    manifest: ImageManifest,
    metadata_size: u64,
    layers: usize,
    chunking: Option<Chunking>,
    table: InodeTable,
    cache: Arc<HeapChunkCache>,
    read_ahead: Option<ReadAhead>,
    verity_required: bool,
}

impl Image {
    /// Opens the image tagged `tag`.
    pub fn open(oci: &OciDir, tag: &str, options: OpenOptions) -> Result<Image, ReaderError> {
        let desc = oci.resolve(tag)?;
        Self::open_descriptor(oci, &desc, options)
    }

    /// Opens the image whose manifest `desc` describes.
    pub fn open_descriptor(
        oci: &OciDir,
        desc: &Descriptor,
        options: OpenOptions,
    ) -> Result<Image, ReaderError> {
        if let Some(pin) = options.pin {
            if pin != desc.digest {
                return Err(ReaderError::PinMismatch {
                    expected: pin,
                    actual: desc.digest,
                });
            }
        }
        let manifest = if options.lean {
            oci.read_manifest_metadata_layers(desc, options.fs_verity.as_ref())?
        } else {
            oci.read_manifest_verity(desc, options.fs_verity.as_ref())?
        };
        let rootfs_descs: Vec<_> = manifest
            .layers
            .iter()
            .filter(|d| d.media_type == crate::oci::MEDIA_TYPE_ROOTFS)
            .collect();
        let [rootfs_desc] = rootfs_descs[..] else {
            return Err(ReaderError::BadMetadata(format!(
                "manifest has {} PuzzleFS metadata layers, expected one",
                rootfs_descs.len()
            )));
        };
        let metadata_verity = match options.fs_verity {
            Some(_) => Some(rootfs_desc.fs_verity().ok_or_else(|| {
                ReaderError::NoVerityDigest(format!("the metadata blob {}", rootfs_desc.digest))
            })?),
            None => None,
        };
        let bytes = oci.read_blob_verity(
            &rootfs_desc.digest,
            MAX_METADATA_BYTES,
            metadata_verity.as_ref(),
        )?;
        let limits = options.limits.unwrap_or_default();
        let rootfs = decode_rootfs(&bytes, &limits)?;
        if rootfs.manifest_version != MANIFEST_VERSION {
            return Err(ReaderError::UnsupportedVersion(rootfs.manifest_version));
        }
        let digests = if options.lean {
            FileDigests::Drop
        } else {
            FileDigests::Keep
        };
        let table = InodeTable::build_with(&rootfs, digests)?;
        let verity_required = options.fs_verity.is_some();
        if verity_required {
            if let Some(b) = table.chunks().iter().find(|b| b.verity.is_none()) {
                return Err(ReaderError::NoVerityDigest(format!("blob {}", b.digest)));
            }
        }
        let cache = options
            .cache
            .unwrap_or_else(|| Arc::new(HeapChunkCache::new(DEFAULT_CACHE_BYTES)));
        let read_ahead = match options.read_ahead {
            0 => None,
            depth => Some(
                ReadAhead::start(oci.clone(), cache.clone(), depth, verity_required)
                    .map_err(ReaderError::ReadAhead)?,
            ),
        };
        let mut manifest = manifest;
        if options.lean {
            manifest.layers = Vec::new();
        }
        Ok(Image {
            oci: oci.clone(),
            manifest_digest: desc.digest,
            manifest,
            metadata_size: bytes.len() as u64,
            layers: rootfs.layers.len(),
            chunking: rootfs.chunking,
            table,
            cache,
            read_ahead,
            verity_required,
        })
    }

    /// The inode table.
    pub fn table(&self) -> &InodeTable {
        &self.table
    }

    /// Digest of the image manifest.
    pub fn manifest_digest(&self) -> Digest {
        self.manifest_digest
    }

    /// The image manifest (without its layers if opened [`OpenOptions::lean`]).
    pub fn manifest(&self) -> &ImageManifest {
        &self.manifest
    }

    /// Size of the metadata blob.
    pub fn metadata_size(&self) -> u64 {
        self.metadata_size
    }

    /// Number of metadata layers.
    pub fn layer_count(&self) -> usize {
        self.layers
    }

    /// Chunking parameters, when the image records them.
    pub fn chunking(&self) -> Option<&Chunking> {
        self.chunking.as_ref()
    }

    /// The OCI directory the image lives in.
    pub fn oci(&self) -> &OciDir {
        &self.oci
    }

    /// Reads blobs from `root` from now on: the same OCI directory, reached by another path
    /// (the daemon's sandbox makes it the root directory).
    pub fn relocate(&mut self, root: &std::path::Path) -> Result<(), ReaderError> {
        self.oci = OciDir::open(root)?;
        Ok(())
    }

    /// The chunk cache.
    pub fn cache(&self) -> &Arc<HeapChunkCache> {
        &self.cache
    }

    /// Contents of a blob: read, checked against its digest, decompressed. Cached.
    pub fn blob_data(&self, blob: &ChunkInfo) -> Result<ChunkData, ReaderError> {
        self.cache.get_or_load(&blob.into(), || {
            load_blob(&self.oci, blob, self.verity_required)
        })
    }

    /// Calls `sink` with consecutive pieces of a file's bytes in `[offset, offset + len)`,
    /// clipped to the file's end. Returns the number of bytes passed to `sink`.
    /// Every piece comes from a blob whose digest was verified.
    pub fn read_with<E: From<ReaderError>>(
        &self,
        node: NodeId,
        offset: u64,
        len: u64,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let extents = self.table.extents(node);
        let end = offset.saturating_add(len);
        let first = extents.partition_point(|e| e.file_end() <= offset);
        let mut done = 0u64;
        for e in &extents[first..] {
            if e.file_offset >= end {
                break;
            }
            let blobs = self.table.chunks();
            let blob = &blobs[e.chunk as usize];
            let data = self.blob_data(blob)?;
            if let Some(ahead) = &self.read_ahead {
                ahead.used(blobs, e.chunk as usize, &self.cache);
            }
            let piece = extent_slice(e, &data, blob.digest)?;
            let from = offset.saturating_sub(e.file_offset) as usize;
            let to = (end.min(e.file_end()) - e.file_offset) as usize;
            sink(&piece[from..to])?;
            done += (to - from) as u64;
        }
        Ok(done)
    }

    /// Reads into `buf` from `offset`; returns the byte count (short only at end of file).
    pub fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, ReaderError> {
        let mut at = 0;
        self.read_with(node, offset, buf.len() as u64, |piece| {
            buf[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
            Ok::<(), ReaderError>(())
        })?;
        Ok(at)
    }
}

/// Reads a blob (checking its fs-verity measurement first when `verity` is required), checks
/// it against its digest and decompresses it.
pub(super) fn load_blob(
    oci: &OciDir,
    blob: &ChunkInfo,
    verity: bool,
) -> Result<Vec<u8>, ReaderError> {
    let expected = match (verity, &blob.verity) {
        (false, _) => None,
        (true, Some(v)) => Some(v),
        (true, None) => return Err(ReaderError::NoVerityDigest(format!("blob {}", blob.digest))),
    };
    if let Some(p) = &blob.pack {
        let stored = oci.read_blob_range(&p.pack, p.stored_offset, p.stored_len, expected)?;
        let actual = Digest::of(&stored);
        if actual != blob.digest {
            return Err(ReaderError::ChunkCorrupt(Box::new(CorruptChunk {
                pack: p.pack,
                offset: p.stored_offset,
                expected: blob.digest,
                actual,
            })));
        }
        if !blob.compressed {
            return Ok(stored);
        }
        return decompress_frames(&stored, p.len).map_err(|source| ReaderError::Chunk {
            digest: blob.digest,
            source,
        });
    }
    let raw = oci.read_blob_verity(&blob.digest, MAX_BLOB_BYTES, expected)?;
    if blob.compressed {
        decompress_seekable(&raw, MAX_BLOB_BYTES).map_err(|source| ReaderError::Chunk {
            digest: blob.digest,
            source,
        })
    } else {
        Ok(raw)
    }
}

fn extent_slice<'a>(e: &Extent, data: &'a [u8], digest: Digest) -> Result<&'a [u8], ReaderError> {
    let (start, end) = (u64::from(e.chunk_offset), e.chunk_end()); // cannot overflow: checked when the table was built
    if end > data.len() as u64 {
        return Err(ReaderError::ShortBlob {
            digest,
            size: data.len() as u64,
            end,
        });
    }
    Ok(&data[start as usize..end as usize])
}
