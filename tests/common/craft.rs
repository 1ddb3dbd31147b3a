//! Crafting images by hand (including hostile ones) for tests: inodes, blobs, a manifest and a
//! tag, written with the crate's own format and OCI layers so anything the builder would never
//! produce can be expressed.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use puzzlefs_virtiofsd::chunk::compress_seekable;
use puzzlefs_virtiofsd::format::{
    encode_rootfs, BlobRef, Digest, DirEntry, FileChunk, Inode, InodeKind, Rootfs, Timespec,
    MANIFEST_VERSION,
};
use puzzlefs_virtiofsd::oci::{
    empty_config, Descriptor, ImageManifest, OciDir, MEDIA_TYPE_FILEDATA, MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_ROOTFS,
};

/// An inode with ordinary attributes.
pub fn inode(ino: u64, kind: InodeKind) -> Inode {
    let permissions = if matches!(kind, InodeKind::Dir { .. }) {
        0o755
    } else {
        0o644
    };
    Inode {
        ino,
        kind,
        uid: 0,
        gid: 0,
        permissions,
        xattrs: Vec::new(),
        symlink_target: None,
        mtime: Timespec {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        },
        file_digest: None,
    }
}

/// A directory with these (name, inode) entries.
pub fn dir(ino: u64, entries: &[(&[u8], u64)]) -> Inode {
    let entries = entries
        .iter()
        .map(|(name, ino)| DirEntry {
            ino: *ino,
            name: name.to_vec(),
        })
        .collect();
    inode(
        ino,
        InodeKind::Dir {
            entries,
            look_below: false,
        },
    )
}

/// A directory whose entries are merged with the same inode's in lower layers.
pub fn dir_below(ino: u64, entries: &[(&[u8], u64)]) -> Inode {
    let mut d = dir(ino, entries);
    if let InodeKind::Dir { look_below, .. } = &mut d.kind {
        *look_below = true;
    }
    d
}

/// A regular file made of these chunks.
pub fn file(ino: u64, chunks: Vec<FileChunk>) -> Inode {
    inode(ino, InodeKind::File { chunks })
}

/// A symbolic link.
pub fn symlink(ino: u64, target: &[u8]) -> Inode {
    let mut i = inode(ino, InodeKind::Symlink);
    i.permissions = 0o777;
    i.symlink_target = Some(target.to_vec());
    i
}

/// A character device.
pub fn chr(ino: u64, major: u64, minor: u64) -> Inode {
    inode(ino, InodeKind::Chr { major, minor })
}

/// A whiteout: hides the same inode number in lower layers.
pub fn whiteout(ino: u64) -> Inode {
    inode(ino, InodeKind::Whiteout)
}

/// `len` bytes at `offset` of a blob.
pub fn chunk(blob: Digest, offset: u64, len: u64, compressed: bool) -> FileChunk {
    FileChunk {
        blob: BlobRef {
            digest: blob,
            offset,
            compressed,
        },
        len,
    }
}

/// An OCI layout being filled with one crafted image.
pub struct Crafter {
    pub oci: OciDir,
    blobs: Vec<(Digest, u64, bool)>,
}

impl Crafter {
    /// Creates (or opens) the layout at `path`.
    pub fn new(path: &Path) -> Self {
        Crafter {
            oci: OciDir::create(path).unwrap(),
            blobs: Vec::new(),
        }
    }

    /// Stores `bytes` as a data blob named by their digest.
    pub fn blob(&mut self, bytes: &[u8]) -> Digest {
        self.stored(bytes, false)
    }

    /// Stores `data` compressed in the zstd seekable format; returns the blob's digest.
    pub fn zstd_blob(&mut self, data: &[u8], frame_size: u32) -> Digest {
        let stored = compress_seekable(data, frame_size, 3).unwrap();
        self.stored(&stored, true)
    }

    /// Stores already-encoded bytes, listed in the manifest as compressed or not.
    pub fn stored(&mut self, bytes: &[u8], compressed: bool) -> Digest {
        let d = Digest::of(bytes);
        self.oci.write_blob(&d, bytes).unwrap();
        self.blobs.push((d, bytes.len() as u64, compressed));
        d
    }

    /// Writes metadata with these layers (topmost first) and tags a manifest listing it and
    /// every stored blob.
    pub fn commit(&self, mut layers: Vec<Vec<Inode>>, tag: &str) -> Descriptor {
        for layer in &mut layers {
            layer.sort_by_key(|i| i.ino);
        }
        let rootfs = Rootfs {
            layers,
            verity: Default::default(),
            manifest_version: MANIFEST_VERSION,
            chunking: None,
            packs: Vec::new(),
        };
        let meta = encode_rootfs(&rootfs).unwrap();
        let meta_digest = Digest::of(&meta);
        self.oci.write_blob(&meta_digest, &meta).unwrap();
        let desc = |media_type: String, digest: Digest, size: u64| Descriptor {
            media_type,
            digest,
            size,
            annotations: None,
            data: None,
            platform: None,
            extra: Default::default(),
        };
        let mut list = vec![desc(
            MEDIA_TYPE_ROOTFS.into(),
            meta_digest,
            meta.len() as u64,
        )];
        for &(d, size, compressed) in &self.blobs {
            let media = if compressed {
                format!("{MEDIA_TYPE_FILEDATA}+zstd")
            } else {
                MEDIA_TYPE_FILEDATA.to_string()
            };
            list.push(desc(media, d, size));
        }
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_MANIFEST.into()),
            config: empty_config().0,
            layers: list,
            annotations: None,
            extra: Default::default(),
        };
        self.oci.commit_manifest(&manifest, tag).unwrap()
    }
}

/// Flips one byte in the middle of a stored blob, so its contents no longer match its name.
pub fn corrupt_blob(oci: &OciDir, digest: &Digest) {
    let path = oci.blob_path(digest);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&path, bytes).unwrap();
}

/// A zstd seekable blob of `data` in one frame whose seek table claims `claimed` decompressed
/// bytes instead of the real size.
pub fn lying_seekable(data: &[u8], claimed: u32) -> Vec<u8> {
    let mut blob = compress_seekable(data, u32::MAX, 3).unwrap();
    // Layout: frame, skippable header (8), entry {compressed u32, decompressed u32}, footer (9).
    let entry = blob.len() - 9 - 8;
    blob[entry + 4..entry + 8].copy_from_slice(&claimed.to_le_bytes());
    blob
}
