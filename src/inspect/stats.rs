//! Per-image statistics and how much data images in one layout share.
//!
//! Sizes come from the image (each file's size is capped at `i64::MAX`, descriptors claim what
//! they like), so their sums saturate at `u64::MAX` instead of wrapping or panicking: a report
//! on a hostile image is still a report, and a saturated total reads as "16 EiB or more"
//! (JSON keeps `u64::MAX`) rather than as a small, wrong number.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use serde::Serialize;

use crate::format::{human_bytes, Digest};
use crate::oci::{OciDir, MEDIA_TYPE_ROOTFS};
use crate::reader::{Image, NodeData, OpenOptions, ReaderError};

/// Statistics of one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStats {
    /// Its tag.
    pub tag: String,
    /// Manifest digest.
    pub manifest_digest: String,
    /// Metadata layers.
    pub layers: usize,
    /// Metadata blob size.
    pub metadata_bytes: u64,
    /// Regular files (hard links counted once).
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Everything else.
    pub others: u64,
    /// Bytes in regular files (saturating).
    pub file_bytes: u64,
    /// Data blobs the manifest lists (packs, and chunks stored on their own).
    pub blobs: u64,
    /// Distinct chunks the files use.
    pub chunks: u64,
    /// Bytes of those chunks as stored (saturating).
    pub chunk_bytes: u64,
    /// Chunks also used by another tag in this layout.
    pub shared_chunks: u64,
    /// Bytes of those (saturating).
    pub shared_bytes: u64,
    /// Chunker and compression recorded in the image, if any.
    pub chunking: Option<String>,
}

/// What `puzzlefs inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// Images examined.
    pub images: Vec<ImageStats>,
    /// Distinct chunks over all tags of the layout.
    pub unique_chunks: u64,
    /// Their stored bytes: what the layout needs for all its tags' data (saturating).
    pub unique_chunk_bytes: u64,
    /// Bytes of every file under blobs/sha256 (includes metadata, manifests, unreferenced;
    /// saturating).
    pub store_bytes: u64,
}

impl InspectReport {
    /// Text for humans.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for i in &self.images {
            let _ = writeln!(s, "{}  {}", i.tag, i.manifest_digest);
            let _ = writeln!(
                s,
                "  {} files, {} directories, {} others; {} of file data",
                i.files,
                i.directories,
                i.others,
                total(i.file_bytes)
            );
            let _ = writeln!(
                s,
                "  {} chunks, {} stored in {} blobs; metadata {} in {} layer(s)",
                i.chunks,
                total(i.chunk_bytes),
                i.blobs,
                human_bytes(i.metadata_bytes),
                i.layers
            );
            let _ = writeln!(
                s,
                "  shared with other tags: {} chunks, {}",
                i.shared_chunks,
                total(i.shared_bytes)
            );
            if let Some(c) = &i.chunking {
                let _ = writeln!(s, "  chunking: {c}");
            }
        }
        let _ = writeln!(
            s,
            "all tags: {} distinct chunks, {}; blob store {}",
            self.unique_chunks,
            total(self.unique_chunk_bytes),
            total(self.store_bytes)
        );
        s
    }
}

/// A sum of sizes for humans; a saturated one says so.
fn total(bytes: u64) -> String {
    if bytes == u64::MAX {
        "16 EiB or more (the image's sizes overflow)".to_string()
    } else {
        human_bytes(bytes)
    }
}

/// Adds sizes without overflow (see the module comment).
fn sum(sizes: impl IntoIterator<Item = u64>) -> u64 {
    sizes.into_iter().fold(0, u64::saturating_add)
}

/// Statistics for `tag`, or every tag, of a layout; sharing is counted against all tags.
pub fn inspect(oci: &OciDir, tag: Option<&str>) -> Result<InspectReport, ReaderError> {
    let index = oci.read_index()?;
    let all_tags = index.tags();
    if let Some(t) = tag {
        oci.resolve(t)?;
    }
    // Chunk sets of every tag, to count sharing: chunk digest -> stored size.
    let mut sets: HashMap<String, HashMap<Digest, u64>> = HashMap::new();
    let mut opened = HashMap::new();
    for t in &all_tags {
        let image = Image::open(oci, t, OpenOptions::default())?;
        let chunks = image
            .table()
            .chunks()
            .iter()
            // Stored size, not the descriptor's: upstream writes uncompressed sizes there.
            .map(|c| {
                let stored = c.pack.map(|p| p.stored_len);
                (
                    c.digest,
                    stored.or_else(|| oci.blob_size(&c.digest)).unwrap_or(0),
                )
            })
            .collect();
        sets.insert(t.clone(), chunks);
        opened.insert(t.clone(), image);
    }
    let mut images = Vec::new();
    for t in all_tags
        .iter()
        .filter(|t| tag.is_none_or(|x| x == t.as_str()))
    {
        let image = &opened[t];
        let table = image.table();
        let (mut files, mut directories, mut others, mut file_bytes) = (0, 0, 0, 0);
        for id in 0..table.len() as u32 {
            let n = table.node(id);
            match n.data {
                NodeData::File(_) => {
                    files += 1;
                    file_bytes = u64::saturating_add(file_bytes, n.size);
                }
                NodeData::Dir { .. } => directories += 1,
                _ => others += 1,
            }
        }
        let mine = &sets[t];
        let others_union: HashSet<&Digest> = sets
            .iter()
            .filter(|(k, _)| *k != t)
            .flat_map(|(_, v)| v.keys())
            .collect();
        let shared: Vec<(&Digest, &u64)> = mine
            .iter()
            .filter(|(d, _)| others_union.contains(d))
            .collect();
        images.push(ImageStats {
            tag: t.clone(),
            manifest_digest: image.manifest_digest().oci(),
            layers: image.layer_count(),
            metadata_bytes: image.metadata_size(),
            files,
            directories,
            others,
            file_bytes,
            blobs: image
                .manifest()
                .layers
                .iter()
                .filter(|d| d.media_type != MEDIA_TYPE_ROOTFS)
                .count() as u64,
            chunks: mine.len() as u64,
            chunk_bytes: sum(mine.values().copied()),
            shared_chunks: shared.len() as u64,
            shared_bytes: sum(shared.iter().map(|(_, s)| **s)),
            chunking: image.chunking().map(|c| {
                format!(
                    "{} {}/{}/{} KiB, {}{}",
                    c.algorithm,
                    c.min_size >> 10,
                    c.avg_size >> 10,
                    c.max_size >> 10,
                    c.compression,
                    if c.zstd_frame_size > 0 {
                        format!(
                            " (level {}, {} KiB frames)",
                            c.zstd_level,
                            c.zstd_frame_size >> 10
                        )
                    } else {
                        String::new()
                    }
                )
            }),
        });
    }
    let mut unique: HashMap<Digest, u64> = HashMap::new();
    for v in sets.values() {
        unique.extend(v.iter().map(|(d, s)| (*d, *s)));
    }
    let store_bytes = sum(oci.list_blobs()?.iter().filter_map(|d| oci.blob_size(d)));
    Ok(InspectReport {
        images,
        unique_chunks: unique.len() as u64,
        unique_chunk_bytes: sum(unique.values().copied()),
        store_bytes,
    })
}
