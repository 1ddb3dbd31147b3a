//! `puzzlefs check`: verify manifests, metadata, every blob's digest and decoding, and every
//! file's recorded sha256.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::verity::data_blob_verity;
use crate::chunk::fs_verity_digest;
use crate::format::{decode_rootfs, ChunkPart, DecodeLimits, Digest, Sha256Writer};
use crate::oci::{OciDir, OciError, MEDIA_TYPE_ROOTFS};
use crate::reader::{
    ChunkInfo, DataFile, Image, NodeData, OpenOptions, ReaderError, Walk, MAX_METADATA_BYTES,
    MAX_PACK_BYTES,
};

/// The outcome of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// `tag manifest-digest` of each image checked.
    pub images: Vec<String>,
    /// Distinct data blob files verified (packs, and chunks stored on their own).
    pub blobs: u64,
    /// Their stored bytes.
    pub blob_bytes: u64,
    /// Files whose whole-content digest was verified.
    pub files: u64,
    /// One line per problem, naming the blob, tag or file.
    pub problems: Vec<String>,
    /// Recorded fs-verity digests that do not match the blob they describe: harmless to
    /// readers, but `enable-fs-verity` refuses such an image. (Upstream PuzzleFS 0.2 records
    /// the digest of the compressed bytes for chunks it stores uncompressed.)
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Whether nothing was wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Text for humans.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for i in &self.images {
            let _ = writeln!(s, "image {i}");
        }
        for p in &self.problems {
            let _ = writeln!(s, "BAD {p}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "WARN {w}");
        }
        let _ = writeln!(
            s,
            "{}: {} blobs ({} bytes) and {} files verified, {} problem(s)",
            if self.ok() { "ok" } else { "FAILED" },
            self.blobs,
            self.blob_bytes,
            self.files,
            self.problems.len()
        );
        s
    }
}

pub(super) fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                let r = f(item);
                out.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
            });
        }
    });
    let mut v = out.into_inner().unwrap_or_else(|p| p.into_inner());
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

/// Checks `tag`, or every tag, of a layout. Problems are collected, not returned as errors;
/// an error means the layout itself could not be read.
pub fn check(oci: &OciDir, tag: Option<&str>) -> Result<CheckReport, ReaderError> {
    let tags = match tag {
        Some(t) => {
            oci.resolve(t)?;
            vec![t.to_string()]
        }
        None => oci.read_index()?.tags(),
    };
    let mut report = CheckReport::default();
    // Verified blobs: digest -> uncompressed size, or the problem.
    let mut verified: HashMap<Digest, Result<u64, String>> = HashMap::new();
    // Blob files checked whole.
    let mut files_seen: HashSet<Digest> = HashSet::new();
    for t in &tags {
        let image = match Image::open(oci, t, OpenOptions::default()) {
            Ok(i) => i,
            Err(e) => {
                report.problems.push(format!("tag {t}: {e}"));
                continue;
            }
        };
        report
            .images
            .push(format!("{t} {}", image.manifest_digest()));
        let listed: HashMap<Digest, u64> = image
            .manifest()
            .layers
            .iter()
            .filter(|d| d.media_type != MEDIA_TYPE_ROOTFS)
            .map(|d| (d.digest, d.size))
            .collect();
        let todo: Vec<ChunkInfo> = image
            .table()
            .chunks()
            .iter()
            .filter(|b| !verified.contains_key(&b.digest))
            .copied()
            .collect();
        let results = parallel(&todo, |b| {
            image
                .blob_data(b)
                .map(|d| d.len() as u64)
                .map_err(|e| e.to_string())
        });
        for (b, r) in todo.iter().zip(results) {
            verified.insert(b.digest, r);
        }
        // Each blob file whole: its size against the manifest, a pack's sha256 (its chunks
        // were checked one by one above), the fs-verity digest the image records.
        let files: Vec<DataFile> = image
            .table()
            .data_files()
            .into_iter()
            .filter(|f| files_seen.insert(f.digest))
            .collect();
        let compressed_alone: HashSet<Digest> = image
            .table()
            .chunks()
            .iter()
            .filter(|c| c.pack.is_none() && c.compressed)
            .map(|c| c.digest)
            .collect();
        let results = parallel(&files, |f| {
            let whole = match (f.pack, f.verity) {
                (_, Some(_)) => data_blob_verity(oci, f).map(|_| ()),
                (true, None) => oci
                    .read_blob(&f.digest, MAX_PACK_BYTES)
                    .map(|_| ())
                    .map_err(Into::into),
                (false, None) => Ok(()),
            };
            whole.map_err(|e| (matches!(e, ReaderError::Oci(OciError::Verity { .. })), e))
        });
        for (f, r) in files.iter().zip(results) {
            match r {
                Ok(()) => {}
                // A verity digest that does not match a sound blob only stops enable-fs-verity.
                Err((true, e)) => report.warnings.push(e.to_string()),
                Err((false, e)) if f.pack => report.problems.push(format!("tag {t}: {e}")),
                // A chunk stored alone was checked above, and its problem reported there.
                Err((false, _)) => {}
            }
            let stored = oci.blob_size(&f.digest);
            report.blobs += 1;
            report.blob_bytes += stored.unwrap_or(0);
            match listed.get(&f.digest) {
                None => report.problems.push(format!(
                    "tag {t}: blob {} is used by files but not listed in the manifest",
                    f.digest
                )),
                // Upstream PuzzleFS 0.2 lists compressed chunks with their decompressed size.
                Some(&size)
                    if compressed_alone.contains(&f.digest)
                        && matches!(verified.get(&f.digest), Some(Ok(n)) if *n == size) => {}
                Some(&size) if stored.is_some_and(|s| s != size) => report.problems.push(format!(
                    "tag {t}: blob {} is {} bytes, the manifest says {size}",
                    f.digest,
                    stored.unwrap_or(0)
                )),
                _ => {}
            }
        }
        for d in listed.keys() {
            if !oci.has_blob(d) {
                report
                    .problems
                    .push(format!("tag {t}: manifest lists missing blob {d}"));
            }
        }
        check_metadata_verity(oci, &image, t, &mut report);
        check_parts(oci, &image, t, &mut report);
        check_files(&image, t, &verified, &mut report);
    }
    let mut bad: BTreeMap<String, ()> = BTreeMap::new();
    for r in verified.values() {
        if let Err(e) = r {
            bad.insert(e.clone(), ());
        }
    }
    report.problems.extend(bad.into_keys());
    Ok(report)
}

/// The metadata blob's recorded fs-verity digest, when there is one, must be its contents'.
fn check_metadata_verity(oci: &OciDir, image: &Image, tag: &str, report: &mut CheckReport) {
    for layer in &image.manifest().layers {
        let Some(recorded) = layer.fs_verity() else {
            continue;
        };
        match oci.read_blob(&layer.digest, MAX_METADATA_BYTES) {
            Ok(bytes) if fs_verity_digest(&bytes) == recorded => {}
            Ok(_) => report.warnings.push(format!(
                "tag {tag}: metadata blob {}: the fs-verity digest recorded for it is wrong",
                layer.digest
            )),
            Err(e) => report.problems.push(format!("tag {tag}: {e}")),
        }
    }
}

/// The chunks an image records inside its frame groups (`Pack.parts`) must hold the contents
/// their digests name: later builds reuse chunks by them.
fn check_parts(oci: &OciDir, image: &Image, tag: &str, report: &mut CheckReport) {
    let by_place: HashMap<(Digest, u64), ChunkInfo> = image
        .table()
        .chunks()
        .iter()
        .filter_map(|c| c.pack.map(|p| ((p.pack, p.offset), *c)))
        .collect();
    let metadata = image
        .manifest()
        .layers
        .iter()
        .filter(|l| l.media_type == MEDIA_TYPE_ROOTFS);
    for layer in metadata {
        // The image opened, so its metadata reads and decodes.
        let Ok(bytes) = oci.read_blob(&layer.digest, MAX_METADATA_BYTES) else {
            continue;
        };
        let Ok(rootfs) = decode_rootfs(&bytes, &DecodeLimits::default()) else {
            continue;
        };
        for pack in rootfs.packs.iter().filter(|p| !p.parts.is_empty()) {
            let mut placed = 0;
            for c in &pack.chunks {
                let parts = ChunkPart::within(&pack.parts, c);
                if parts.is_empty() {
                    continue;
                }
                placed += parts.len();
                // One load of the packed chunk for all its parts.
                let contents = by_place
                    .get(&(pack.digest, c.offset))
                    .and_then(|info| image.blob_data(info).ok());
                for part in parts {
                    if !contents.as_ref().is_some_and(|d| part.holds(c, d)) {
                        report.problems.push(format!(
                            "tag {tag}: pack {}: the chunk recorded at {} ({} bytes) does not \
                             match its digest {}",
                            pack.digest, part.offset, part.len, part.digest
                        ));
                    }
                }
            }
            if placed < pack.parts.len() {
                report.problems.push(format!(
                    "tag {tag}: pack {}: {} recorded chunks lie in none of its packed chunks",
                    pack.digest,
                    pack.parts.len() - placed
                ));
            }
        }
    }
}

fn check_files(
    image: &Image,
    tag: &str,
    verified: &HashMap<Digest, Result<u64, String>>,
    report: &mut CheckReport,
) {
    let table = image.table();
    let mut seen = vec![false; table.len()];
    let mut files = Vec::new();
    for item in Walk::all(table) {
        let id = item.node as usize;
        if seen[id] {
            continue;
        }
        seen[id] = true;
        let NodeData::File(_) = table.node(item.node).data else {
            continue;
        };
        let mut ok = true;
        for e in table.extents(item.node) {
            let blob = &table.chunks()[e.chunk as usize];
            match verified.get(&blob.digest) {
                Some(Ok(size)) if e.chunk_end() <= *size => {}
                Some(Ok(size)) => {
                    report.problems.push(format!(
                        "tag {tag}: /{} needs bytes up to {} of blob {}, which has {size}",
                        String::from_utf8_lossy(&item.path),
                        e.chunk_end(),
                        blob.digest
                    ));
                    ok = false;
                }
                _ => ok = false,
            }
        }
        if ok && table.file_digest(item.node).is_some() {
            files.push(item);
        }
    }
    let results = parallel(&files, |item| {
        let node = table.node(item.node);
        let mut w = Sha256Writer::default();
        let r = image.read_with(item.node, 0, node.size, |piece| {
            std::io::Write::write_all(&mut w, piece)
                .map_err(|e| ReaderError::BadMetadata(e.to_string()))
        });
        match r {
            Ok(_) if table.file_digest(item.node) == Some(&w.finish()) => None,
            Ok(_) => Some(format!(
                "tag {tag}: /{}: contents do not match the recorded sha256",
                String::from_utf8_lossy(&item.path)
            )),
            Err(e) => Some(format!(
                "tag {tag}: /{}: {e}",
                String::from_utf8_lossy(&item.path)
            )),
        }
    });
    report.files += files.len() as u64;
    report.problems.extend(results.into_iter().flatten());
}
