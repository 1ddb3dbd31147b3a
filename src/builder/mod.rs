//! Building images: walk -> stream -> chunks -> blobs -> metadata -> manifest.

mod assemble;
mod catalog;
mod error;
mod group;
mod pack;
mod pipeline;
mod scan;
mod stream;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

pub use error::BuildError;

use crate::chunk::{fs_verity_digest, ChunkParams, DEFAULT_FRAME_SIZE};
use crate::format::{BlobRef, Digest, FileChunk};
use crate::oci::{validate_tag, OciDir, Staging};
use crate::reader::{Image, NodeData, OpenOptions};
use assemble::BlobFacts;
use catalog::Catalog;
use pack::Packer;

/// Default target size of a pack blob: big enough that a registry's cost per blob is small
/// against the bytes (see docs/performance.md, "Registries"), small enough to upload many at
/// once.
pub const DEFAULT_PACK_SIZE: u64 = 16 << 20;
use scan::ScanKind;
use stream::{FileStream, StreamFile};

/// Default zstd level: with 1 MiB frame groups, 4% smaller images than level 2 for 10% more
/// build CPU (docs/format.md, "Frame groups").
pub const DEFAULT_LEVEL: i32 = 3;

/// zstd settings for compressed images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdOptions {
    /// Uncompressed bytes per seekable frame.
    pub frame_size: u32,
    /// Compression level.
    pub level: i32,
}

impl Default for ZstdOptions {
    fn default() -> Self {
        ZstdOptions {
            frame_size: DEFAULT_FRAME_SIZE,
            level: DEFAULT_LEVEL,
        }
    }
}

/// Progress notifications, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// The tree has been walked.
    Scanned {
        /// Entries found.
        entries: u64,
        /// Regular file bytes found.
        bytes: u64,
    },
    /// File data processed so far.
    Data {
        /// Bytes chunked and stored.
        done: u64,
        /// Bytes to go through the chunker in all.
        total: u64,
    },
}

/// How to build.
#[derive(Clone, Copy)]
pub struct BuildOptions<'a> {
    /// Compress chunks (zstd seekable format).
    pub zstd: Option<ZstdOptions>,
    /// Chunk size bounds.
    pub params: ChunkParams,
    /// Target stored size of a pack blob; 0 stores every chunk as its own blob (the layout
    /// upstream PuzzleFS writes).
    pub pack_size: u64,
    /// Tag of an image in the same layout whose unchanged files are reused.
    pub base: Option<&'a str>,
    /// Worker threads for compression and hashing.
    pub threads: usize,
    /// Receives progress notifications.
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    /// Set to abandon the build.
    pub cancel: Option<&'a AtomicBool>,
}

impl Default for BuildOptions<'_> {
    fn default() -> Self {
        BuildOptions {
            zstd: None,
            params: ChunkParams::default(),
            pack_size: DEFAULT_PACK_SIZE,
            base: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            progress: None,
            cancel: None,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// The tag written.
    pub tag: String,
    /// Digest of the new image manifest.
    pub manifest_digest: String,
    /// fs-verity digest of the manifest (hex): the root hash of `enable-fs-verity` and
    /// `--fs-verity` (what upstream PuzzleFS prints as the manifest digest).
    pub manifest_fs_verity: String,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Other entries (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Bytes in regular files.
    pub file_bytes: u64,
    /// Files taken unchanged from the base image without chunking.
    pub reused_files: u64,
    /// Bytes that went through the chunker.
    pub chunked_bytes: u64,
    /// Distinct chunks the image's files use.
    pub chunks: u64,
    /// Chunks this build stored (the rest were already in the layout).
    pub new_chunks: u64,
    /// Data blobs (packs, and chunks stored on their own) the manifest lists.
    pub data_blobs: u64,
    /// Bytes written to the blob store (data and metadata).
    pub new_bytes: u64,
    /// Size of the metadata blob.
    pub metadata_bytes: u64,
    /// Whether chunks were compressed.
    pub compressed: bool,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Builds `rootfs` into `oci` as `tag`. On any error the layout is left as it was.
pub fn build(
    rootfs: &Path,
    oci: &OciDir,
    tag: &str,
    opts: &BuildOptions<'_>,
) -> Result<BuildReport, BuildError> {
    validate_tag(tag)?;
    opts.params.validate()?;
    let start = Instant::now();
    let cancelled = || opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let base = opts
        .base
        .map(|t| Image::open(oci, t, OpenOptions::default()))
        .transpose()?;
    let staging = Staging::new(oci)?;
    let catalog = Catalog::of_layout(oci)?;
    let mut facts: HashMap<Digest, BlobFacts> = HashMap::new();
    let mut file_chunks: HashMap<u64, Vec<FileChunk>> = HashMap::new();
    let mut file_digests: HashMap<u64, Digest> = HashMap::new();
    // Bytes of the files found so far that go through the chunker.
    let found = AtomicU64::new(0);
    let streamed = Arc::new(Mutex::new(Vec::new()));
    let scanned = |tree: &scan::Tree| {
        if let Some(p) = opts.progress {
            p(Progress::Scanned {
                entries: tree.nodes.len() as u64,
                bytes: tree.file_bytes(),
            });
        }
    };
    let mut reused_files = 0u64;
    let mut to_stream = None;
    let base_tree = match &base {
        Some(base) => {
            let tree = scan::scan(rootfs, &cancelled, &mut |_| {})?;
            scanned(&tree);
            let candidates = tree.stream_files();
            let reused = reuse_from_base(
                base,
                oci,
                &catalog,
                &tree,
                &candidates,
                opts.threads,
                &cancelled,
            )?;
            let mut rest = Vec::new();
            for f in candidates {
                match reused.get(&f.ino) {
                    Some((digest, chunks, blobs)) => {
                        file_digests.insert(f.ino, *digest);
                        file_chunks.insert(f.ino, chunks.clone());
                        facts.extend(blobs.iter().map(|(d, b)| (*d, *b)));
                    }
                    None => rest.push(f),
                }
            }
            found.store(rest.iter().map(|f| f.size).sum(), Ordering::Relaxed);
            reused_files = reused.len() as u64;
            to_stream = Some(rest);
            Some(tree)
        }
        None => None,
    };
    let mut packer = Packer::new(
        oci,
        &staging,
        opts.pack_size,
        opts.zstd,
        opts.threads,
        catalog,
    );
    let packed = packer.packs();
    let mut done = 0u64;
    let mut stream = |files: Box<dyn Iterator<Item = StreamFile> + Send>| {
        pipeline::run(
            FileStream::new(files, streamed.clone()),
            opts.params,
            opts.zstd,
            packed,
            opts.threads,
            &cancelled,
            &mut |c| {
                done += c.raw_len;
                if let Some(p) = opts.progress {
                    let total = found.load(Ordering::Relaxed);
                    p(Progress::Data { done, total });
                }
                packer.place(c)
            },
        )
    };
    let tree = match (base_tree, to_stream) {
        (Some(tree), Some(rest)) => {
            stream(Box::new(rest.into_iter()))?;
            tree
        }
        // The data stream starts with the first file the scan finds.
        _ => std::thread::scope(|s| {
            let (found_tx, found_rx) = mpsc::channel();
            let (found, cancelled, scanned) = (&found, &cancelled, &scanned);
            let scanner = s.spawn(move || {
                let tree = scan::scan(rootfs, cancelled, &mut |f| {
                    found.fetch_add(f.size, Ordering::Relaxed);
                    // The stream stops taking files only when the build failed.
                    let _ = found_tx.send(f);
                });
                if let Ok(tree) = &tree {
                    scanned(tree);
                }
                tree
            });
            let streamed = stream(Box::new(found_rx.into_iter()));
            let tree = scanner
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            // A failed scan ends the stream early: its error is the one to report.
            let tree = tree?;
            streamed?;
            Ok::<_, BuildError>(tree)
        })?,
    };
    let finished = packer.finish()?;
    let streamed = std::mem::take(&mut *streamed.lock().unwrap_or_else(|p| p.into_inner()));
    let order: Vec<(u64, u64)> = streamed.iter().map(|&(ino, size, _)| (ino, size)).collect();
    file_digests.extend(streamed.iter().map(|&(ino, _, digest)| (ino, digest)));
    let split = assemble::split_chunks(&order, &finished.order).map_err(BuildError::Internal)?;
    file_chunks.extend(split);
    let file_bytes = tree.file_bytes();
    facts.extend(finished.standalone);
    let packs = assemble::pack_table(oci, &file_chunks, &finished.catalog, &mut facts)?;
    let in_packs: HashSet<Digest> = packs.iter().map(|p| p.digest).collect();
    let chunks = packs.iter().map(|p| p.chunks.len() as u64).sum::<u64>()
        + facts.keys().filter(|d| !in_packs.contains(d)).count() as u64;
    let mut new_bytes = finished.written.bytes;

    let (mut files, mut directories, mut others) = (0u64, 0u64, 0u64);
    for n in &tree.nodes {
        match n.kind {
            ScanKind::File { .. } => files += 1,
            ScanKind::Dir(_) => directories += 1,
            _ => others += 1,
        }
    }
    let chunking = opts
        .params
        .record(opts.zstd.map(|z| (z.frame_size, z.level)));
    let rootfs_meta = assemble::rootfs(tree, file_chunks, &file_digests, &facts, chunking, packs);
    let (meta, manifest) = assemble::manifest(&rootfs_meta, &facts)?;
    if cancelled() {
        return Err(BuildError::Cancelled);
    }
    if staging.put(&Digest::of(&meta), &meta)? {
        new_bytes += meta.len() as u64;
    }
    let desc = staging.commit(&manifest, tag)?;
    Ok(BuildReport {
        tag: tag.to_string(),
        manifest_digest: desc.digest.oci(),
        manifest_fs_verity: hex::encode(fs_verity_digest(
            &oci.read_blob(&desc.digest, crate::oci::MAX_MANIFEST_BYTES)?,
        )),
        files,
        directories,
        others,
        file_bytes,
        reused_files,
        chunked_bytes: found.load(Ordering::Relaxed),
        chunks,
        new_chunks: finished.written.chunks,
        data_blobs: (manifest.layers.len() - 1) as u64,
        new_bytes,
        metadata_bytes: meta.len() as u64,
        compressed: opts.zstd.is_some(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

type Reused = (Digest, Vec<FileChunk>, Vec<(Digest, BlobFacts)>);

/// Files whose contents equal the file at the same path in `base` (same size, same sha256),
/// with the base's chunks. Hashing runs on every thread.
fn reuse_from_base(
    base: &Image,
    oci: &OciDir,
    catalog: &Catalog,
    tree: &scan::Tree,
    candidates: &[StreamFile],
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<HashMap<u64, Reused>, BuildError> {
    let table = base.table();
    let sizes: HashMap<Digest, u64> = base
        .manifest()
        .layers
        .iter()
        .map(|d| (d.digest, d.size))
        .collect();
    let mut work = Vec::new();
    for f in candidates {
        let rel = &tree.nodes[(f.ino - 1) as usize].rel;
        let Ok(id) = table.resolve(rel, false) else {
            continue;
        };
        let node = table.node(id);
        let (NodeData::File(_), Some(&digest)) = (&node.data, table.file_digest(id)) else {
            continue;
        };
        let extents = table.extents(id);
        if node.size != f.size {
            continue;
        }
        let mut chunks = Vec::with_capacity(extents.len());
        let mut blobs = Vec::with_capacity(extents.len());
        let mut usable = true;
        for e in extents.iter() {
            let info = table.chunks()[e.chunk as usize];
            let file = info.file();
            // A pack's facts come from the catalog, which must know it.
            let present =
                oci.has_blob(&file) && (info.pack.is_none() || catalog.packs.contains_key(&file));
            let Some(stored_len) = sizes.get(&file).copied().filter(|_| present) else {
                usable = false;
                break;
            };
            chunks.push(FileChunk {
                blob: BlobRef {
                    digest: file,
                    offset: info.pack.map_or(0, |p| p.offset) + u64::from(e.chunk_offset),
                    compressed: info.compressed,
                },
                len: u64::from(e.len),
            });
            if info.pack.is_none() {
                blobs.push((
                    file,
                    BlobFacts {
                        compressed: info.compressed,
                        stored_len,
                        verity: info.verity,
                    },
                ));
            }
        }
        if usable {
            work.push((f, digest, chunks, blobs));
        }
    }

    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((f, digest, _, _)) = work.get(i) else {
                    return;
                };
                if cancelled() {
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Err(BuildError::Cancelled));
                    return;
                }
                let r = stream::hash_file(&f.path).map(|d| (i, d == *digest));
                results.lock().unwrap_or_else(|p| p.into_inner()).push(r);
            });
        }
    });
    let mut out = HashMap::new();
    for r in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let (i, same) = r?;
        if same {
            let (f, digest, chunks, blobs) = &work[i];
            out.insert(f.ino, (*digest, chunks.clone(), blobs.clone()));
        }
    }
    Ok(out)
}
