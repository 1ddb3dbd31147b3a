//! Cap'n Proto bytes -> [`Rootfs`], bounded for untrusted input.

use capnp::message::ReaderOptions;
use capnp::serialize;

use super::metadata_capnp::{inode, rootfs};
use super::{
    BlobRef, ChunkPart, Chunking, Digest, DirEntry, FileChunk, FormatError, Inode, InodeKind, Pack,
    PackedChunk, Rootfs, Timespec, Xattr,
};

/// Bounds applied while decoding metadata from an image.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest accepted metadata blob in bytes.
    pub max_bytes: usize,
    /// Most inodes over all layers.
    pub max_inodes: usize,
    /// Most layers.
    pub max_layers: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 1 << 30,
            max_inodes: 50_000_000,
            max_layers: 1024,
        }
    }
}

/// Decodes a metadata blob.
///
/// The traversal limit is a small multiple of the message size, so pointer tricks that make a
/// small message look huge fail fast; nesting is bounded by the schema's depth.
pub fn decode_rootfs(bytes: &[u8], limits: &DecodeLimits) -> Result<Rootfs, FormatError> {
    if bytes.len() > limits.max_bytes {
        return Err(FormatError::TooLarge(format!(
            "{} bytes, limit {}",
            bytes.len(),
            limits.max_bytes
        )));
    }
    let options = ReaderOptions {
        traversal_limit_in_words: Some(bytes.len() / 8 * 4 + 1024),
        nesting_limit: 16,
    };
    let mut slice = bytes;
    let message = serialize::read_message_from_flat_slice(&mut slice, options)?;
    let root: rootfs::Reader<'_> = message.get_root()?;

    let metadatas = root.get_metadatas()?;
    if metadatas.len() as usize > limits.max_layers {
        return Err(FormatError::TooLarge(format!("{} layers", metadatas.len())));
    }
    let mut layers = Vec::with_capacity(metadatas.len() as usize);
    let mut total = 0usize;
    for layer in metadatas.iter() {
        let inodes = layer.get_inodes()?;
        total = total.saturating_add(inodes.len() as usize);
        if total > limits.max_inodes {
            return Err(FormatError::TooLarge(format!(
                "more than {} inodes",
                limits.max_inodes
            )));
        }
        let decoded = inodes
            .iter()
            .map(decode_inode)
            .collect::<Result<Vec<_>, _>>()?;
        layers.push(decoded);
    }

    let mut verity = std::collections::BTreeMap::new();
    for entry in root.get_fs_verity_data()?.iter() {
        let digest = Digest::from_slice(entry.get_digest()?)?;
        let value: [u8; 32] = entry
            .get_verity()?
            .try_into()
            .map_err(|_| FormatError::Invalid("fs-verity digest is not 32 bytes".into()))?;
        verity.insert(digest, value);
    }

    let chunking = if root.has_chunking() {
        let c = root.get_chunking()?;
        Some(Chunking {
            algorithm: text(c.get_algorithm()?)?,
            min_size: c.get_min_size(),
            avg_size: c.get_avg_size(),
            max_size: c.get_max_size(),
            compression: text(c.get_compression()?)?,
            zstd_frame_size: c.get_zstd_frame_size(),
            zstd_level: c.get_zstd_level(),
        })
    } else {
        None
    };

    let mut packs = Vec::new();
    if root.has_packs() {
        for p in root.get_packs()?.iter() {
            let chunks = p
                .get_chunks()?
                .iter()
                .map(|c| {
                    Ok(PackedChunk {
                        digest: Digest::from_slice(c.get_digest()?)?,
                        offset: c.get_offset(),
                        len: c.get_len(),
                        stored_offset: c.get_stored_offset(),
                        stored_len: c.get_stored_len(),
                    })
                })
                .collect::<Result<Vec<_>, FormatError>>()?;
            let mut parts = Vec::new();
            if p.has_parts() {
                for c in p.get_parts()?.iter() {
                    parts.push(ChunkPart {
                        digest: Digest::from_slice(c.get_digest()?)?,
                        offset: c.get_offset(),
                        len: c.get_len(),
                    });
                }
            }
            packs.push(Pack {
                digest: Digest::from_slice(p.get_digest()?)?,
                compressed: p.get_compressed(),
                chunks,
                parts,
            });
        }
    }

    Ok(Rootfs {
        layers,
        verity,
        manifest_version: root.get_manifest_version(),
        chunking,
        packs,
    })
}

fn text(t: capnp::text::Reader<'_>) -> Result<String, FormatError> {
    t.to_string()
        .map_err(|_| FormatError::Invalid("text field is not UTF-8".into()))
}

fn decode_inode(r: inode::Reader<'_>) -> Result<Inode, FormatError> {
    use inode::mode::Which;
    let kind = match r.get_mode().which() {
        Ok(Which::Unknown(())) => InodeKind::Unknown,
        Ok(Which::Fifo(())) => InodeKind::Fifo,
        Ok(Which::Lnk(())) => InodeKind::Symlink,
        Ok(Which::Sock(())) => InodeKind::Socket,
        Ok(Which::Wht(())) => InodeKind::Whiteout,
        Ok(Which::Chr(c)) => {
            let c = c?;
            InodeKind::Chr {
                major: c.get_major(),
                minor: c.get_minor(),
            }
        }
        Ok(Which::Blk(b)) => {
            let b = b?;
            InodeKind::Blk {
                major: b.get_major(),
                minor: b.get_minor(),
            }
        }
        Ok(Which::Dir(d)) => {
            let d = d?;
            let entries = d
                .get_entries()?
                .iter()
                .map(|e| {
                    Ok(DirEntry {
                        ino: e.get_ino(),
                        name: e.get_name()?.to_vec(),
                    })
                })
                .collect::<Result<Vec<_>, FormatError>>()?;
            InodeKind::Dir {
                entries,
                look_below: d.get_look_below(),
            }
        }
        Ok(Which::File(list)) => {
            let chunks = list?
                .iter()
                .map(|c| {
                    let b = c.get_blob()?;
                    Ok(FileChunk {
                        blob: BlobRef {
                            digest: Digest::from_slice(b.get_digest()?)?,
                            offset: b.get_offset(),
                            compressed: b.get_compressed(),
                        },
                        len: c.get_len(),
                    })
                })
                .collect::<Result<Vec<_>, FormatError>>()?;
            InodeKind::File { chunks }
        }
        Err(capnp::NotInSchema(n)) => return Err(FormatError::UnknownInodeType(n)),
    };

    let (xattrs, symlink_target) = if r.has_additional() {
        let a = r.get_additional()?;
        let xattrs = if a.has_xattrs() {
            a.get_xattrs()?
                .iter()
                .map(|x| {
                    Ok(Xattr {
                        key: x.get_key()?.to_vec(),
                        value: x.get_val()?.to_vec(),
                    })
                })
                .collect::<Result<Vec<_>, FormatError>>()?
        } else {
            Vec::new()
        };
        let target = if a.has_symlink_target() {
            Some(a.get_symlink_target()?.to_vec())
        } else {
            None
        };
        (xattrs, target)
    } else {
        (Vec::new(), None)
    };

    Ok(Inode {
        ino: r.get_ino(),
        kind,
        uid: r.get_uid(),
        gid: r.get_gid(),
        permissions: r.get_permissions(),
        xattrs,
        symlink_target,
        mtime: Timespec {
            sec: r.get_mtime_sec(),
            nsec: r.get_mtime_nsec(),
        },
        file_digest: if r.has_file_digest() {
            Some(Digest::from_slice(r.get_file_digest()?)?)
        } else {
            None
        },
    })
}
