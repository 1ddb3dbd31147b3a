//! An OCI image layout directory on the local file system.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::error::VerityProblem;
use super::kernel_verity::{self as verity, Measurement};
use super::temp_blob::TempBlob;
use super::types::{empty_config, validate_tag, Descriptor, ImageIndex, ImageManifest, Platform};
use super::{OciError, ANNOTATION_REF_NAME, MEDIA_TYPE_MANIFEST};
use crate::format::Digest;

/// Mode of the files a layout holds: readable by all (less the umask), like any published
/// content; temporary files would otherwise keep their private 0600.
pub(super) fn public_file() -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(0o644)
}

/// Largest manifest or index accepted (registries use the same bound).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
const MAX_INDEX_BYTES: u64 = 64 << 20;
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/`.
#[derive(Debug, Clone)]
pub struct OciDir {
    root: PathBuf,
    /// The directory descriptor `root` reaches the layout through, if it was opened so.
    _held: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl OciDir {
    /// Opens an existing layout, checking that it is one.
    pub fn open(path: &Path) -> Result<Self, OciError> {
        let not = |reason: &str| OciError::NotOciLayout {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        let md = fs::metadata(path).map_err(|e| OciError::io(path, e))?;
        if !md.is_dir() {
            return Err(not("not a directory"));
        }
        let layout = match fs::read(path.join(LAYOUT_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not("no oci-layout file"))
            }
            Err(e) => return Err(OciError::io(path.join(LAYOUT_FILE), e)),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&layout).map_err(|_| not("oci-layout is not JSON"))?;
        if v.get("imageLayoutVersion")
            .and_then(|x| x.as_str())
            .is_none()
        {
            return Err(not("oci-layout has no imageLayoutVersion"));
        }
        if !path.join("blobs/sha256").is_dir() {
            return Err(not("no blobs/sha256 directory"));
        }
        Ok(OciDir {
            root: path.to_path_buf(),
            _held: None,
        })
    }

    /// Opens the layout that the directory descriptor `dir` refers to, reaching it through
    /// `/proc/self/fd/N` for as long as this value (or a clone) lives: for a process that
    /// cannot reach the layout by its path, or must keep reaching the same directory whatever
    /// happens to the path.
    pub fn open_held(dir: std::os::fd::OwnedFd) -> Result<Self, OciError> {
        use std::os::fd::AsRawFd;
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let mut oci = Self::open(&path)?;
        oci._held = Some(std::sync::Arc::new(dir));
        Ok(oci)
    }

    /// Opens a layout, creating it if `path` does not exist or holds nothing but a layout
    /// being created (safe when several processes create the same layout at once).
    pub fn create(path: &Path) -> Result<Self, OciError> {
        let layout_names = |n: &str| {
            matches!(n, "blobs" | LAYOUT_FILE | "index.json")
                || n.starts_with(".tmp-")
                || n.starts_with(".puzzlefs-build-")
        };
        match fs::read_dir(path) {
            Ok(entries) => {
                for e in entries {
                    let e = e.map_err(|e| OciError::io(path, e))?;
                    if !e.file_name().to_str().is_some_and(layout_names) {
                        return Self::open(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(OciError::io(path, e)),
        }
        let blobs = path.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|e| OciError::io(&blobs, e))?;
        let dir = OciDir {
            root: path.to_path_buf(),
            _held: None,
        };
        if !path.join(LAYOUT_FILE).exists() {
            dir.atomic_write(LAYOUT_FILE, LAYOUT_JSON)?;
        }
        Self::open(path)
    }

    /// The layout's root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// The directory holding the blobs (`blobs/sha256`).
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// Whether a blob of this digest is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size of a stored blob, if present.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        fs::symlink_metadata(self.blob_path(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Stores `data` under its digest, unless a blob of that name and size is already present.
    /// Returns whether bytes were written.
    pub fn write_blob(&self, digest: &Digest, data: &[u8]) -> Result<bool, OciError> {
        if self.blob_size(digest) == Some(data.len() as u64) {
            return Ok(false);
        }
        let blobs = self.root.join("blobs/sha256");
        let mut tmp = TempBlob::new_in(&blobs).map_err(|e| OciError::io(&blobs, e))?;
        if let Err(e) = tmp.file().write_all(data) {
            return Err(OciError::io(tmp.path(), e));
        }
        let dest = self.blob_path(digest);
        tmp.persist(&dest).map_err(|e| OciError::io(&dest, e))?;
        Ok(true)
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, OciError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OciError::BlobMissing(*digest),
            _ => OciError::io(path, e),
        })
    }

    /// Reads a whole blob of at most `limit` bytes and checks its digest.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, OciError> {
        self.read_blob_verity(digest, limit, None)
    }

    /// Like [`OciDir::read_blob`], and with `verity` the blob file must also have fs-verity
    /// on with that measurement, checked on the open file before anything is read.
    pub fn read_blob_verity(
        &self,
        digest: &Digest,
        limit: u64,
        verity: Option<&[u8; 32]>,
    ) -> Result<Vec<u8>, OciError> {
        let file = self.open_blob(digest)?;
        if let Some(expected) = verity {
            check_measurement(&file, digest, expected)?;
        }
        let size = file
            .metadata()
            .map_err(|e| OciError::io(self.blob_path(digest), e))?
            .len();
        if size > limit {
            return Err(OciError::TooLarge {
                digest: *digest,
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        file.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| OciError::io(self.blob_path(digest), e))?;
        if buf.len() as u64 > limit {
            return Err(OciError::TooLarge {
                digest: *digest,
                size: buf.len() as u64,
                limit,
            });
        }
        let actual = Digest::of(&buf);
        if actual != *digest {
            return Err(OciError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(buf)
    }

    /// Whether a blob's contents hash to its name, read as a stream (blobs of any size).
    pub fn verify_blob(&self, digest: &Digest) -> Result<bool, OciError> {
        let mut file = self.open_blob(digest)?;
        let mut hash = crate::format::Sha256Writer::default();
        std::io::copy(&mut file, &mut hash).map_err(|e| OciError::io(self.blob_path(digest), e))?;
        Ok(hash.finish() == *digest)
    }

    /// Reads `len` bytes at `offset` of a blob (a chunk of a pack), without checking the whole
    /// blob's digest: the caller checks the range's own. With `verity` the file must have
    /// fs-verity on with that measurement, checked before anything is read.
    pub fn read_blob_range(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
        verity: Option<&[u8; 32]>,
    ) -> Result<Vec<u8>, OciError> {
        use std::os::unix::fs::FileExt;
        let file = self.open_blob(digest)?;
        if let Some(expected) = verity {
            check_measurement(&file, digest, expected)?;
        }
        let end = offset.saturating_add(len);
        let len = usize::try_from(len).map_err(|_| OciError::Truncated {
            digest: *digest,
            size: 0,
            end,
        })?;
        let mut buf = vec![0u8; len];
        let mut done = 0usize;
        while done < len {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(OciError::Truncated {
                        digest: *digest,
                        size: offset + done as u64,
                        end,
                    })
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(OciError::io(self.blob_path(digest), e)),
            }
        }
        Ok(buf)
    }

    /// Turns fs-verity on for a blob (if it is not on already) and checks that the kernel's
    /// measurement is `expected`. Returns whether this call turned it on.
    pub fn enable_blob_verity(
        &self,
        digest: &Digest,
        expected: &[u8; 32],
    ) -> Result<bool, OciError> {
        let file = self.open_blob(digest)?;
        let enabled = verity::enable(&file).map_err(|e| OciError::Verity {
            digest: *digest,
            problem: VerityProblem::Unsupported(e),
        })?;
        check_measurement(&file, digest, expected)?;
        Ok(enabled)
    }

    /// Reads `index.json`; a layout without one has no tags.
    pub fn read_index(&self) -> Result<ImageIndex, OciError> {
        let path = self.root.join("index.json");
        let bytes = match fs::File::open(&path) {
            Ok(f) => {
                let mut buf = Vec::new();
                f.take(MAX_INDEX_BYTES + 1)
                    .read_to_end(&mut buf)
                    .map_err(|e| OciError::io(&path, e))?;
                buf
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ImageIndex::default()),
            Err(e) => return Err(OciError::io(&path, e)),
        };
        if bytes.len() as u64 > MAX_INDEX_BYTES {
            return Err(bad_doc("index.json", "larger than 64 MiB"));
        }
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| bad_doc("index.json", e))?;
        if index.schema_version != 2 {
            return Err(bad_doc(
                "index.json",
                format!("schemaVersion {}", index.schema_version),
            ));
        }
        Ok(index)
    }

    /// A descriptor of the image manifest stored as blob `digest`, whether or not a tag names
    /// it (its contents are checked when it is read).
    pub fn manifest_by_digest(&self, digest: &Digest) -> Result<Descriptor, OciError> {
        let size = self
            .blob_size(digest)
            .ok_or(OciError::BlobMissing(*digest))?;
        Ok(Descriptor {
            media_type: MEDIA_TYPE_MANIFEST.into(),
            digest: *digest,
            size,
            annotations: None,
            data: None,
            platform: None,
            extra: Default::default(),
        })
    }

    /// The manifest descriptor tagged `tag`.
    pub fn resolve(&self, tag: &str) -> Result<Descriptor, OciError> {
        let index = self.read_index()?;
        index
            .find(tag)
            .cloned()
            .ok_or_else(|| OciError::UnknownTag {
                tag: tag.into(),
                available: {
                    let tags = index.tags();
                    if tags.is_empty() {
                        "none".into()
                    } else {
                        tags.join(", ")
                    }
                },
            })
    }

    /// Reads and checks the manifest a descriptor points to.
    pub fn read_manifest(&self, desc: &Descriptor) -> Result<ImageManifest, OciError> {
        self.read_manifest_verity(desc, None)
    }

    /// Like [`OciDir::read_manifest`], and with `verity` the manifest file must have fs-verity
    /// on with that measurement.
    pub fn read_manifest_verity(
        &self,
        desc: &Descriptor,
        verity: Option<&[u8; 32]>,
    ) -> Result<ImageManifest, OciError> {
        self.read_manifest_with(desc, verity, |b| serde_json::from_slice(b))
    }

    /// Like [`OciDir::read_manifest_verity`], keeping only the metadata layers
    /// ([`ImageManifest::parse_metadata_layers`]).
    pub fn read_manifest_metadata_layers(
        &self,
        desc: &Descriptor,
        verity: Option<&[u8; 32]>,
    ) -> Result<ImageManifest, OciError> {
        self.read_manifest_with(desc, verity, ImageManifest::parse_metadata_layers)
    }

    fn read_manifest_with(
        &self,
        desc: &Descriptor,
        verity: Option<&[u8; 32]>,
        parse: impl FnOnce(&[u8]) -> serde_json::Result<ImageManifest>,
    ) -> Result<ImageManifest, OciError> {
        let what = format!("manifest {}", desc.digest);
        if desc.media_type != MEDIA_TYPE_MANIFEST {
            return Err(bad_doc(&what, format!("media type {:?}", desc.media_type)));
        }
        let bytes = self.read_blob_verity(&desc.digest, MAX_MANIFEST_BYTES, verity)?;
        let manifest = parse(&bytes).map_err(|e| bad_doc(&what, e))?;
        if manifest.schema_version != 2 {
            return Err(bad_doc(
                &what,
                format!("schemaVersion {}", manifest.schema_version),
            ));
        }
        Ok(manifest)
    }

    /// Writes a manifest blob (and the empty config it uses) and points `tag` at it, replacing
    /// `index.json` atomically under a lock so concurrent writers do not lose each other's tags.
    pub fn commit_manifest(
        &self,
        manifest: &ImageManifest,
        tag: &str,
    ) -> Result<Descriptor, OciError> {
        validate_tag(tag)?;
        let (config, config_bytes) = empty_config();
        self.write_blob(&config.digest, config_bytes)?;
        let bytes = serde_json::to_vec(manifest).map_err(|e| bad_doc("manifest", e))?;
        self.tag_manifest_bytes(&bytes, tag)
    }

    /// Stores a manifest exactly as `bytes` (so its digest is theirs, as a registry or another
    /// layout has it) and points `tag` at it; the blobs it names must already be stored.
    pub fn tag_manifest_bytes(&self, bytes: &[u8], tag: &str) -> Result<Descriptor, OciError> {
        validate_tag(tag)?;
        let digest = Digest::of(bytes);
        self.write_blob(&digest, bytes)?;
        let desc = Descriptor {
            media_type: MEDIA_TYPE_MANIFEST.into(),
            digest,
            size: bytes.len() as u64,
            annotations: Some([(ANNOTATION_REF_NAME.to_string(), tag.to_string())].into()),
            data: None,
            platform: Some(Platform::host()),
            extra: Default::default(),
        };
        // Blobs must be durable before the index names them.
        self.sync_filesystem()?;
        self.update_index(|index| {
            index
                .manifests
                .retain(|d| ImageIndex::tag_of(d) != Some(tag));
            index.manifests.push(desc.clone());
        })?;
        Ok(desc)
    }

    /// Removes a tag from the index; returns whether it was present.
    pub fn remove_tag(&self, tag: &str) -> Result<bool, OciError> {
        let mut found = false;
        self.update_index(|index| {
            let before = index.manifests.len();
            index
                .manifests
                .retain(|d| ImageIndex::tag_of(d) != Some(tag));
            found = index.manifests.len() != before;
        })?;
        Ok(found)
    }

    fn update_index(&self, change: impl FnOnce(&mut ImageIndex)) -> Result<(), OciError> {
        let lock_path = self.root.join(LAYOUT_FILE);
        let lock = File::open(&lock_path).map_err(|e| OciError::io(&lock_path, e))?;
        lock.lock().map_err(|e| OciError::io(&lock_path, e))?;
        let mut index = self.read_index()?;
        change(&mut index);
        let bytes = serde_json::to_vec(&index).map_err(|e| bad_doc("index.json", e))?;
        self.atomic_write("index.json", &bytes)
        // `lock` is released when dropped.
    }

    fn atomic_write(&self, name: &str, data: &[u8]) -> Result<(), OciError> {
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{name}-"))
            .permissions(public_file())
            .tempfile_in(&self.root)
            .map_err(|e| OciError::io(&self.root, e))?;
        tmp.write_all(data)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| OciError::io(tmp.path(), e))?;
        let dest = self.root.join(name);
        tmp.persist(&dest)
            .map_err(|e| OciError::io(&dest, e.error))?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(|e| OciError::io(&self.root, e))
    }

    fn sync_filesystem(&self) -> Result<(), OciError> {
        let dir = File::open(&self.root).map_err(|e| OciError::io(&self.root, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| OciError::io(&self.root, e.into()))
    }

    /// Digests of every file under `blobs/sha256/` whose name is a digest.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, OciError> {
        let blobs = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&blobs).map_err(|e| OciError::io(&blobs, e))? {
            let entry = entry.map_err(|e| OciError::io(&blobs, e))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::parse(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

fn bad_doc(what: &str, reason: impl std::fmt::Display) -> OciError {
    OciError::BadDocument {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Checks that an open blob file has fs-verity on with the `expected` measurement.
fn check_measurement(file: &File, digest: &Digest, expected: &[u8; 32]) -> Result<(), OciError> {
    let problem = match verity::measure(file) {
        Ok(Measurement::Sha256(actual)) if actual == *expected => return Ok(()),
        Ok(Measurement::Sha256(actual)) => VerityProblem::Mismatch {
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        },
        Ok(Measurement::OtherAlgorithm) => VerityProblem::OtherAlgorithm,
        Ok(Measurement::NotEnabled) => VerityProblem::NotEnabled,
        Err(e) => VerityProblem::Unsupported(e),
    };
    Err(OciError::Verity {
        digest: *digest,
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::MEDIA_TYPE_INDEX;
    use crate::oci::{MEDIA_TYPE_FILEDATA, MEDIA_TYPE_ROOTFS};

    fn manifest_for(dir: &OciDir, payload: &[u8]) -> ImageManifest {
        let d = Digest::of(payload);
        dir.write_blob(&d, payload).unwrap();
        ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_MANIFEST.into()),
            config: empty_config().0,
            layers: vec![Descriptor::new(MEDIA_TYPE_ROOTFS, d, payload.len() as u64)],
            annotations: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn create_open_tag_and_retag() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OciDir::create(&tmp.path().join("oci")).unwrap();
        OciDir::open(dir.path()).unwrap();
        let m1 = manifest_for(&dir, b"one");
        let m2 = manifest_for(&dir, b"two");
        let d1 = dir.commit_manifest(&m1, "a").unwrap();
        dir.commit_manifest(&m2, "b").unwrap();
        assert_eq!(dir.resolve("a").unwrap(), d1);
        assert_eq!(dir.read_manifest(&d1).unwrap(), m1);
        let d3 = dir.commit_manifest(&m2, "a").unwrap();
        assert_eq!(dir.read_index().unwrap().tags(), vec!["b", "a"]);
        assert_eq!(dir.resolve("a").unwrap(), d3);
        assert!(matches!(
            dir.resolve("zz"),
            Err(OciError::UnknownTag { .. })
        ));
        assert!(dir.remove_tag("b").unwrap());
        assert!(!dir.remove_tag("b").unwrap());
        assert!(dir.commit_manifest(&m1, "bad/tag").is_err());
    }

    #[test]
    fn retagging_keeps_what_another_tool_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OciDir::create(&tmp.path().join("oci")).unwrap();
        let (config, _) = empty_config();
        let foreign = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "artifactType": "application/x.example",
            "manifests": [{
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": config.digest.oci(),
                "size": 2,
                "urls": ["https://example.com/m"],
                "artifactType": "application/x.thing",
                "platform": {"architecture": "arm", "os": "linux", "variant": "v7",
                             "os.features": ["f"]},
                "annotations": {ANNOTATION_REF_NAME: "theirs"}
            }]
        });
        fs::write(dir.path().join("index.json"), foreign.to_string()).unwrap();
        dir.commit_manifest(&manifest_for(&dir, b"ours"), "ours")
            .unwrap();
        let after: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(after["artifactType"], foreign["artifactType"]);
        assert_eq!(after["manifests"][0], foreign["manifests"][0]);
        assert_eq!(
            after["manifests"][1]["annotations"][ANNOTATION_REF_NAME],
            "ours"
        );
    }

    #[test]
    fn not_a_layout_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("x"), b"").unwrap();
        assert!(matches!(
            OciDir::open(tmp.path()),
            Err(OciError::NotOciLayout { .. })
        ));
        assert!(matches!(
            OciDir::create(tmp.path()),
            Err(OciError::NotOciLayout { .. })
        ));
        assert!(OciDir::open(&tmp.path().join("x")).is_err());
    }

    #[test]
    fn corrupt_blob_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OciDir::create(tmp.path()).unwrap();
        let d = Digest::of(b"hello");
        dir.write_blob(&d, b"hello").unwrap();
        assert!(
            !dir.write_blob(&d, b"hello").unwrap(),
            "present blobs are not rewritten"
        );
        assert_eq!(dir.read_blob(&d, 100).unwrap(), b"hello");
        fs::write(dir.blob_path(&d), b"jello").unwrap();
        assert!(matches!(
            dir.read_blob(&d, 100),
            Err(OciError::DigestMismatch { .. })
        ));
        assert!(matches!(
            dir.read_blob(&d, 2),
            Err(OciError::TooLarge { .. })
        ));
        let missing = Digest::of(b"nope");
        assert!(matches!(
            dir.read_blob(&missing, 9),
            Err(OciError::BlobMissing(_))
        ));
        assert_eq!(dir.list_blobs().unwrap(), vec![d]);
    }

    #[test]
    fn concurrent_commits_keep_every_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = OciDir::create(tmp.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let dir = dir.clone();
                s.spawn(move || {
                    for i in 0..10 {
                        let m = manifest_for(&dir, format!("{t}-{i}").as_bytes());
                        dir.commit_manifest(&m, &format!("t{t}-{i}")).unwrap();
                    }
                });
            }
        });
        assert_eq!(dir.read_index().unwrap().tags().len(), 80);
        let _ = MEDIA_TYPE_FILEDATA;
    }
}
