//! Moving one image between registries and layouts: only blobs the destination lacks move
//! (HEAD first; cross-repository mounts within one registry), a bounded number at a time;
//! the metadata is checked against the manifest before any data moves, and the manifest is
//! written last, so an interrupted transfer run again moves only what is still missing and a
//! destination never names an image it does not wholly hold.

use std::collections::BTreeSet;
use std::io::Read;

use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::api::{Mount, Repository};
use super::client::{Client, ClientOptions, Payload};
use super::history;
use super::{Location, Reference, RegistryError, Target};
use crate::format::{decode_rootfs, DecodeLimits, Digest, InodeKind};
use crate::oci::{
    Descriptor, ImageIndex, ImageManifest, OciDir, Platform, MAX_MANIFEST_BYTES,
    MEDIA_TYPE_FILEDATA, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, MEDIA_TYPE_ROOTFS,
};

/// Largest metadata blob read to check an image (the decoder's own bound).
const MAX_METADATA_BYTES: u64 = 1 << 30;
/// Bound on a chunk blob the manifest does not list (so has no size for): four times the
/// largest average chunk size, 4 MiB, plus room for compression's worst case.
const MAX_UNLISTED_BLOB: u64 = 64 << 20;
/// Blobs up to this size are uploaded from memory; larger ones stream from their file.
const IN_MEMORY_UPLOAD: u64 = 8 << 20;

/// How to transfer.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// How to reach registries.
    pub client: ClientOptions,
    /// Blobs moved at once.
    pub jobs: usize,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            client: ClientOptions::default(),
            jobs: 8,
        }
    }
}

/// What a transfer moved.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The manifest's digest (`sha256:...`).
    pub manifest_digest: String,
    /// Blobs (config, metadata, chunks) sent to the destination.
    pub blobs_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Blobs the destination already had.
    pub blobs_skipped: u64,
    /// Their bytes.
    pub bytes_skipped: u64,
    /// Blobs the registry linked from the source repository instead.
    pub blobs_mounted: u64,
    /// Their bytes.
    pub bytes_mounted: u64,
    /// Of all these, blobs the metadata uses that the manifest does not list (upstream
    /// PuzzleFS's `--base-layer` images leave the base's chunks out).
    pub blobs_unlisted: u64,
}

/// Told how a transfer advances (a progress bar).
pub trait Progress: Sync {
    /// The transfer will handle `blobs` blobs of `bytes` bytes in all.
    fn begin(&self, blobs: u64, bytes: u64);
    /// One more blob of `bytes` bytes is done (moved or not).
    fn advance(&self, bytes: u64);
}

/// No progress reports.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// What happened to one blob, with its bytes.
#[derive(Clone, Copy)]
enum Outcome {
    Sent(u64),
    Skipped(u64),
    Mounted(u64),
}

enum End<'c> {
    Layout {
        oci: OciDir,
        target: Target,
    },
    Registry {
        repo: Repository<'c>,
        reference: Reference,
    },
}

/// Copies the image at `src` to `dst` (`push`, `pull` and `copy` are this). A destination
/// layout this call created is removed again if the copy fails before storing anything in
/// it; one that holds blobs is kept, so running the copy again moves only what is missing.
pub async fn copy(
    src: &Location,
    dst: &Location,
    opts: &TransferOptions,
    progress: &dyn Progress,
) -> Result<Report, RegistryError> {
    let created = match dst {
        Location::Layout { dir, .. } if !dir.exists() => Some(dir.clone()),
        _ => None,
    };
    let result = copy_to(src, dst, opts, progress).await;
    if let (Err(_), Some(dir)) = (&result, created) {
        remove_if_unused(&dir);
    }
    result
}

/// Removes a layout that holds no blob and no tag (best effort: a failure here leaves an
/// empty layout, which any later copy or build reuses).
fn remove_if_unused(dir: &std::path::Path) {
    let no_blobs = std::fs::read_dir(dir.join("blobs/sha256"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    let no_tags = OciDir::open(dir)
        .and_then(|oci| oci.read_index())
        .map(|i| i.manifests.is_empty())
        .unwrap_or(false);
    if no_blobs && no_tags {
        let _ = std::fs::remove_dir_all(dir);
    }
}

async fn copy_to(
    src: &Location,
    dst: &Location,
    opts: &TransferOptions,
    progress: &dyn Progress,
) -> Result<Report, RegistryError> {
    // One client per registry, shared when both ends are on the same one.
    let client_for = |loc: &Location| match loc {
        Location::Registry(r) => Client::new(&r.registry, r.api_host(), &opts.client).map(Some),
        Location::Layout { .. } => Ok(None),
    };
    let src_client = client_for(src)?;
    let same_registry = matches!((src, dst), (Location::Registry(a), Location::Registry(b)) if a.registry == b.registry);
    let dst_client = if same_registry {
        None
    } else {
        client_for(dst)?
    };
    let src_end = open_end(src, src_client.as_ref(), false)?;
    let dst_end = open_end(dst, dst_client.as_ref().or(src_client.as_ref()), true)?;
    if let End::Layout {
        target: Target::Digest(_),
        ..
    } = &dst_end
    {
        return Err(RegistryError::BadLocation {
            location: dst.to_string(),
            reason: "a layout destination needs a tag".into(),
        });
    }
    let mount_from = match (src, dst) {
        (Location::Layout { .. }, Location::Registry(r)) => {
            history::latest_other(&r.registry, &r.repository)
        }
        _ => None,
    };
    let transfer = Transfer {
        src: src_end,
        dst: dst_end,
        same_registry,
        mount_from,
        scratch: Scratch::default(),
        jobs: opts.jobs.max(1),
    };
    transfer.run(src, progress).await
}

fn open_end<'c>(
    loc: &Location,
    client: Option<&'c Client>,
    destination: bool,
) -> Result<End<'c>, RegistryError> {
    Ok(match loc {
        Location::Layout { dir, target } => End::Layout {
            oci: if destination {
                OciDir::create(dir)?
            } else {
                OciDir::open(dir)?
            },
            target: target.clone(),
        },
        Location::Registry(r) => End::Registry {
            repo: Repository::new(client.expect("a client per registry end"), &r.repository),
            reference: r.clone(),
        },
    })
}

/// A layout in a temporary directory, for blobs that pass between two registries.
#[derive(Default)]
struct Scratch(tokio::sync::OnceCell<(tempfile::TempDir, OciDir)>);

impl Scratch {
    async fn get(&self) -> Result<&OciDir, RegistryError> {
        let (_, oci) = self
            .0
            .get_or_try_init(|| async {
                let dir = tempfile::Builder::new()
                    .prefix("puzzlefs-copy-")
                    .tempdir()
                    .map_err(|e| RegistryError::io(std::env::temp_dir(), e))?;
                let oci = OciDir::create(dir.path())?;
                Ok::<_, RegistryError>((dir, oci))
            })
            .await?;
        Ok(oci)
    }
}

struct Transfer<'c> {
    src: End<'c>,
    dst: End<'c>,
    same_registry: bool,
    /// For a push from a layout: the repository of the destination's registry pushed to
    /// last, to mount blobs from (see `history`).
    mount_from: Option<String>,
    scratch: Scratch,
    jobs: usize,
}

impl Transfer<'_> {
    async fn run(
        &self,
        src_loc: &Location,
        progress: &dyn Progress,
    ) -> Result<Report, RegistryError> {
        let (bytes, media_type) = self.source_manifest().await?;
        let image = src_loc.to_string();
        let bad = |reason: String| RegistryError::BadManifest {
            image: image.clone(),
            reason,
        };
        if media_type != MEDIA_TYPE_MANIFEST {
            return Err(bad(format!(
                "media type {media_type:?}: a PuzzleFS image has an OCI image manifest"
            )));
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if manifest.schema_version != 2 {
            return Err(bad(format!("schemaVersion {}", manifest.schema_version)));
        }
        let mut blobs: Vec<&Descriptor> = Vec::new();
        let mut seen = BTreeSet::new();
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if seen.insert(d.digest) {
                blobs.push(d);
            }
        }
        let metadata: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .filter(|d| d.media_type == MEDIA_TYPE_ROOTFS)
            .collect();
        if metadata.is_empty() {
            return Err(bad(
                "no PuzzleFS metadata layer: not a PuzzleFS image".into()
            ));
        }
        let total: u64 = blobs.iter().map(|d| d.size).sum();
        progress.begin(blobs.len() as u64, total);
        let mut report = Report {
            manifest_digest: Digest::of(&bytes).oci(),
            ..Report::default()
        };
        let mut count = |d: &Descriptor, outcome: Outcome| {
            let (n, b, size) = match outcome {
                Outcome::Sent(s) => (&mut report.blobs_sent, &mut report.bytes_sent, s),
                Outcome::Skipped(s) => (&mut report.blobs_skipped, &mut report.bytes_skipped, s),
                Outcome::Mounted(s) => (&mut report.blobs_mounted, &mut report.bytes_mounted, s),
            };
            *n += 1;
            *b += size;
            progress.advance(size.min(d.size));
        };
        // The metadata first: the chunks it uses are what must move. Upstream's
        // `--base-layer` images leave the base's chunks out of the manifest (a layout holds
        // them anyway); those move too, named by the metadata alone.
        let mut unlisted = BTreeSet::new();
        for desc in &metadata {
            let (outcome, meta) = self.metadata(desc).await?;
            count(desc, outcome);
            unlisted.extend(chunks_not_in(&meta, &seen).map_err(bad)?);
        }
        let unlisted: Vec<Descriptor> = unlisted
            .into_iter()
            .map(|(digest, compressed)| {
                let media_type = if compressed {
                    format!("{MEDIA_TYPE_FILEDATA}+zstd")
                } else {
                    MEDIA_TYPE_FILEDATA.into()
                };
                Descriptor::new(media_type, digest, MAX_UNLISTED_BLOB)
            })
            .collect();
        report.blobs_unlisted = unlisted.len() as u64;
        let rest: Vec<&Descriptor> = blobs
            .into_iter()
            .filter(|d| d.media_type != MEDIA_TYPE_ROOTFS)
            .chain(&unlisted)
            .collect();
        let outcomes: Vec<(&Descriptor, Outcome)> = stream::iter(rest)
            .map(|d| async move { self.move_blob(d).await.map(|o| (d, o)) })
            .buffer_unordered(self.jobs)
            .try_collect()
            .await?;
        for (d, o) in outcomes {
            count(d, o);
        }
        self.write_manifest(&bytes, &report.manifest_digest).await?;
        Ok(report)
    }

    /// The source's manifest bytes and media type; an index is resolved to the manifest for
    /// this machine's platform (or its only one).
    async fn source_manifest(&self) -> Result<(Vec<u8>, String), RegistryError> {
        match &self.src {
            End::Layout { oci, target } => {
                let (digest, media_type) = match target {
                    Target::Tag(t) => {
                        let desc = oci.resolve(t)?;
                        (desc.digest, Some(desc.media_type))
                    }
                    Target::Digest(d) => (*d, None),
                };
                let bytes = oci.read_blob(&digest, MAX_MANIFEST_BYTES)?;
                let media_type = media_type.unwrap_or_else(|| media_type_in(&bytes));
                Ok((bytes, media_type))
            }
            End::Registry { repo, reference } => {
                let (bytes, media_type) = repo.fetch_manifest(&reference.target_path()).await?;
                let media_type = if media_type.is_empty() {
                    media_type_in(&bytes)
                } else {
                    media_type
                };
                if media_type != MEDIA_TYPE_INDEX {
                    return Ok((bytes, media_type));
                }
                let index: ImageIndex =
                    serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadManifest {
                        image: reference.to_string(),
                        reason: format!("image index: {e}"),
                    })?;
                let host = Platform::host();
                let chosen = match index.manifests.as_slice() {
                    [only] => Some(only),
                    many => many.iter().find(|d| {
                        d.platform
                            .as_ref()
                            .is_some_and(|p| p.architecture == host.architecture && p.os == host.os)
                    }),
                }
                .ok_or_else(|| RegistryError::BadManifest {
                    image: reference.to_string(),
                    reason: format!(
                        "an image index with no manifest for {}/{}",
                        host.os, host.architecture
                    ),
                })?;
                repo.fetch_manifest(&chosen.digest.oci()).await
            }
        }
    }

    /// Moves one metadata blob and returns its bytes, read where they are local.
    async fn metadata(&self, desc: &Descriptor) -> Result<(Outcome, Vec<u8>), RegistryError> {
        let outcome = self.move_blob(desc).await?;
        let local = match (&self.src, &self.dst) {
            (End::Layout { oci, .. }, _) | (_, End::Layout { oci, .. }) => oci.clone(),
            (End::Registry { repo, .. }, End::Registry { .. }) => {
                let scratch = self.scratch.get().await?;
                if !scratch.has_blob(&desc.digest) {
                    repo.fetch_blob(&desc.digest, desc.size, scratch.blob_writer(&desc.digest)?)
                        .await?;
                }
                scratch.clone()
            }
        };
        let bytes = local.read_blob(&desc.digest, MAX_METADATA_BYTES)?;
        Ok((outcome, bytes))
    }

    async fn move_blob(&self, desc: &Descriptor) -> Result<Outcome, RegistryError> {
        let digest = &desc.digest;
        match &self.dst {
            End::Layout { oci, .. } => {
                // A blob is named only once its digest checked out (BlobWriter, Staging).
                if let Some(size) = oci.blob_size(digest) {
                    return Ok(Outcome::Skipped(size));
                }
                let writer = oci.blob_writer(digest)?;
                let size = match &self.src {
                    End::Registry { repo, .. } => {
                        repo.fetch_blob(digest, desc.size, writer).await?
                    }
                    End::Layout { oci: from, .. } => copy_local(from, desc, writer)?,
                };
                Ok(Outcome::Sent(size))
            }
            End::Registry { repo, .. } => {
                if let Some(size) = repo.blob_size(digest, true).await? {
                    return Ok(Outcome::Skipped(size));
                }
                match &self.src {
                    End::Layout { oci, .. } => {
                        let mut session = None;
                        if let Some(from) = &self.mount_from {
                            // Only a hint: whatever goes wrong, the blob is uploaded.
                            match repo.mount_blob(digest, from).await {
                                Ok(Mount::Mounted) => return Ok(Outcome::Mounted(desc.size)),
                                Ok(Mount::Session(url)) => session = Some(url),
                                Err(e) => log::debug!("mount from {from}: {e}"),
                            }
                        }
                        let (body, size) = payload(oci, desc)?;
                        repo.upload_blob(digest, body, session).await?;
                        Ok(Outcome::Sent(size))
                    }
                    End::Registry { repo: from, .. } => {
                        let session = if self.same_registry {
                            match repo.mount_blob(digest, from.name()).await? {
                                Mount::Mounted => return Ok(Outcome::Mounted(desc.size)),
                                Mount::Session(url) => Some(url),
                            }
                        } else {
                            None
                        };
                        let scratch = self.scratch.get().await?;
                        if !scratch.has_blob(digest) {
                            from.fetch_blob(digest, desc.size, scratch.blob_writer(digest)?)
                                .await?;
                        }
                        let (body, size) = payload(scratch, desc)?;
                        repo.upload_blob(digest, body, session).await?;
                        if desc.media_type != MEDIA_TYPE_ROOTFS {
                            let _ = std::fs::remove_file(scratch.blob_path(digest));
                        }
                        Ok(Outcome::Sent(size))
                    }
                }
            }
        }
    }

    async fn write_manifest(&self, bytes: &[u8], digest: &str) -> Result<(), RegistryError> {
        match &self.dst {
            End::Registry { repo, reference } => {
                if let Target::Digest(d) = &reference.target {
                    if d.oci() != digest {
                        return Err(RegistryError::BadLocation {
                            location: reference.to_string(),
                            reason: format!("the image's manifest is {digest}, not {d}"),
                        });
                    }
                }
                repo.put_manifest(&reference.target_path(), bytes, MEDIA_TYPE_MANIFEST)
                    .await?;
                history::record(&reference.registry, &reference.repository);
                Ok(())
            }
            End::Layout { oci, target } => {
                let Target::Tag(tag) = target else {
                    unreachable!("refused before the transfer started")
                };
                oci.tag_manifest_bytes(bytes, tag)?;
                Ok(())
            }
        }
    }
}

/// The `mediaType` a manifest or index names itself by (OCI manifest when absent).
fn media_type_in(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => MEDIA_TYPE_INDEX.into(),
        _ => MEDIA_TYPE_MANIFEST.into(),
    }
}

/// The blobs (with whether they are compressed) that the metadata uses and the manifest
/// does not list.
fn chunks_not_in(
    bytes: &[u8],
    listed: &BTreeSet<Digest>,
) -> Result<BTreeSet<(Digest, bool)>, String> {
    let rootfs = decode_rootfs(bytes, &DecodeLimits::default())
        .map_err(|e| format!("its metadata does not decode: {e}"))?;
    let mut out = BTreeSet::new();
    for inode in rootfs.layers.iter().flatten() {
        if let InodeKind::File { chunks } = &inode.kind {
            for c in chunks.iter().filter(|c| !listed.contains(&c.blob.digest)) {
                out.insert((c.blob.digest, c.blob.compressed));
            }
        }
    }
    Ok(out)
}

/// A local blob as an upload body, with its size. A descriptor's size bounds its blob; a
/// smaller blob with the right digest is accepted (upstream PuzzleFS 0.2 records a zstd
/// chunk's uncompressed size) and the registry checks the digest.
fn payload(oci: &OciDir, desc: &Descriptor) -> Result<(Payload, u64), RegistryError> {
    let path = oci.blob_path(&desc.digest);
    let len = oci
        .blob_size(&desc.digest)
        .ok_or(crate::oci::OciError::BlobMissing(desc.digest))?;
    if len > desc.size {
        return Err(RegistryError::BadBlob {
            from: oci.path().display().to_string(),
            digest: desc.digest,
            problem: format!(
                "{len} bytes, more than the {} its descriptor says",
                desc.size
            ),
        });
    }
    if len <= IN_MEMORY_UPLOAD {
        let bytes = std::fs::read(&path).map_err(|e| RegistryError::io(&path, e))?;
        Ok((Payload::Bytes(bytes.into()), len))
    } else {
        Ok((Payload::File { path, len }, len))
    }
}

/// Copies a blob between layouts through the writer, which checks its digest; returns its
/// size.
fn copy_local(
    from: &OciDir,
    desc: &Descriptor,
    mut into: crate::oci::BlobWriter,
) -> Result<u64, RegistryError> {
    let mut file = from.open_blob(&desc.digest)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| RegistryError::io(from.blob_path(&desc.digest), e))?;
        if n == 0 {
            break;
        }
        into.write(&buf[..n])?;
        if into.len() > desc.size {
            return Err(RegistryError::BadBlob {
                from: from.path().display().to_string(),
                digest: desc.digest,
                problem: format!("more than the {} bytes its descriptor says", desc.size),
            });
        }
    }
    into.commit()
        .map_err(|e| RegistryError::from_commit(e, from.path().display().to_string()))
}

/// [`copy`] on a runtime of its own, for callers that are not async.
pub fn copy_blocking(
    src: &Location,
    dst: &Location,
    opts: &TransferOptions,
    progress: &dyn Progress,
) -> Result<Report, RegistryError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RegistryError::io("tokio runtime", e))?;
    runtime.block_on(copy(src, dst, opts, progress))
}
