//! [`Rootfs`] -> Cap'n Proto bytes.

use capnp::message::Builder;
use capnp::serialize;

use super::metadata_capnp::{inode, rootfs};
use super::{FormatError, Inode, InodeKind, Rootfs};

fn len32(n: usize, what: &str) -> Result<u32, FormatError> {
    u32::try_from(n).map_err(|_| FormatError::TooLarge(format!("{n} {what}")))
}

/// Encodes metadata as a single-segment-friendly Cap'n Proto message.
pub fn encode_rootfs(rootfs: &Rootfs) -> Result<Vec<u8>, FormatError> {
    let mut message = Builder::new_default();
    let mut root: rootfs::Builder<'_> = message.init_root();
    root.set_manifest_version(rootfs.manifest_version);

    let mut layers = root
        .reborrow()
        .init_metadatas(len32(rootfs.layers.len(), "layers")?);
    for (i, layer) in rootfs.layers.iter().enumerate() {
        let mut inodes = layers
            .reborrow()
            .get(i as u32)
            .init_inodes(len32(layer.len(), "inodes")?);
        for (j, ino) in layer.iter().enumerate() {
            encode_inode(ino, inodes.reborrow().get(j as u32))?;
        }
    }

    let mut verity = root
        .reborrow()
        .init_fs_verity_data(len32(rootfs.verity.len(), "verity entries")?);
    for (i, (digest, value)) in rootfs.verity.iter().enumerate() {
        let mut v = verity.reborrow().get(i as u32);
        v.set_digest(&digest.0[..]);
        v.set_verity(&value[..]);
    }

    if let Some(c) = &rootfs.chunking {
        let mut b = root.reborrow().init_chunking();
        b.set_algorithm(c.algorithm.as_str());
        b.set_min_size(c.min_size);
        b.set_avg_size(c.avg_size);
        b.set_max_size(c.max_size);
        b.set_compression(c.compression.as_str());
        b.set_zstd_frame_size(c.zstd_frame_size);
        b.set_zstd_level(c.zstd_level);
    }

    if !rootfs.packs.is_empty() {
        let mut packs = root.init_packs(len32(rootfs.packs.len(), "packs")?);
        for (i, pack) in rootfs.packs.iter().enumerate() {
            let mut p = packs.reborrow().get(i as u32);
            p.set_digest(&pack.digest.0[..]);
            p.set_compressed(pack.compressed);
            let mut chunks = p
                .reborrow()
                .init_chunks(len32(pack.chunks.len(), "packed chunks")?);
            for (j, c) in pack.chunks.iter().enumerate() {
                let mut b = chunks.reborrow().get(j as u32);
                b.set_digest(&c.digest.0[..]);
                b.set_offset(c.offset);
                b.set_len(c.len);
                b.set_stored_offset(c.stored_offset);
                b.set_stored_len(c.stored_len);
            }
            if !pack.parts.is_empty() {
                let mut parts = p.init_parts(len32(pack.parts.len(), "chunk parts")?);
                for (j, c) in pack.parts.iter().enumerate() {
                    let mut b = parts.reborrow().get(j as u32);
                    b.set_digest(&c.digest.0[..]);
                    b.set_offset(c.offset);
                    b.set_len(c.len);
                }
            }
        }
    }

    let mut out = Vec::new();
    serialize::write_message(&mut out, &message)?;
    Ok(out)
}

fn encode_inode(ino: &Inode, mut b: inode::Builder<'_>) -> Result<(), FormatError> {
    b.set_ino(ino.ino);
    b.set_uid(ino.uid);
    b.set_gid(ino.gid);
    b.set_permissions(ino.permissions);
    b.set_mtime_sec(ino.mtime.sec);
    b.set_mtime_nsec(ino.mtime.nsec);
    if let Some(d) = &ino.file_digest {
        b.set_file_digest(&d.0[..]);
    }
    {
        let mut mode = b.reborrow().init_mode();
        match &ino.kind {
            InodeKind::Unknown => mode.set_unknown(()),
            InodeKind::Fifo => mode.set_fifo(()),
            InodeKind::Symlink => mode.set_lnk(()),
            InodeKind::Socket => mode.set_sock(()),
            InodeKind::Whiteout => mode.set_wht(()),
            InodeKind::Chr { major, minor } => {
                let mut c = mode.init_chr();
                c.set_major(*major);
                c.set_minor(*minor);
            }
            InodeKind::Blk { major, minor } => {
                let mut c = mode.init_blk();
                c.set_major(*major);
                c.set_minor(*minor);
            }
            InodeKind::Dir {
                entries,
                look_below,
            } => {
                let mut d = mode.init_dir();
                d.set_look_below(*look_below);
                let mut list = d.init_entries(len32(entries.len(), "entries")?);
                for (i, e) in entries.iter().enumerate() {
                    let mut eb = list.reborrow().get(i as u32);
                    eb.set_ino(e.ino);
                    eb.set_name(&e.name[..]);
                }
            }
            InodeKind::File { chunks } => {
                let mut list = mode.init_file(len32(chunks.len(), "chunks")?);
                for (i, c) in chunks.iter().enumerate() {
                    let mut cb = list.reborrow().get(i as u32);
                    cb.set_len(c.len);
                    let mut blob = cb.init_blob();
                    blob.set_digest(&c.blob.digest.0[..]);
                    blob.set_offset(c.blob.offset);
                    blob.set_compressed(c.blob.compressed);
                }
            }
        }
    }
    if !ino.xattrs.is_empty() || ino.symlink_target.is_some() {
        let mut a = b.init_additional();
        if !ino.xattrs.is_empty() {
            let mut list = a.reborrow().init_xattrs(len32(ino.xattrs.len(), "xattrs")?);
            for (i, x) in ino.xattrs.iter().enumerate() {
                let mut xb = list.reborrow().get(i as u32);
                xb.set_key(&x.key[..]);
                xb.set_val(&x.value[..]);
            }
        }
        if let Some(t) = &ino.symlink_target {
            a.set_symlink_target(&t[..]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        decode_rootfs, BlobRef, ChunkPart, Chunking, DecodeLimits, Digest, DirEntry, FileChunk,
        Pack, PackedChunk, Timespec, Xattr, MANIFEST_VERSION,
    };

    fn sample() -> Rootfs {
        let base = Inode {
            ino: 1,
            kind: InodeKind::Dir {
                entries: vec![
                    DirEntry {
                        ino: 2,
                        name: b"f".to_vec(),
                    },
                    DirEntry {
                        ino: 3,
                        name: b"dev".to_vec(),
                    },
                ],
                look_below: false,
            },
            uid: 0,
            gid: 0,
            permissions: 0o755,
            xattrs: vec![],
            symlink_target: None,
            mtime: Timespec {
                sec: 1_700_000_000,
                nsec: 123_456_789,
            },
            file_digest: None,
        };
        let file = Inode {
            ino: 2,
            kind: InodeKind::File {
                chunks: vec![FileChunk {
                    blob: BlobRef {
                        digest: Digest::of(b"x"),
                        offset: 7,
                        compressed: true,
                    },
                    len: 42,
                }],
            },
            uid: 1000,
            gid: 100,
            permissions: 0o4755,
            xattrs: vec![Xattr {
                key: b"user.a".to_vec(),
                value: vec![0, 1, 2],
            }],
            symlink_target: None,
            mtime: Timespec { sec: -5, nsec: 1 },
            file_digest: Some(Digest::of(b"contents")),
        };
        let dev = Inode {
            ino: 3,
            kind: InodeKind::Chr { major: 1, minor: 3 },
            symlink_target: None,
            xattrs: vec![],
            file_digest: None,
            ..file.clone()
        };
        let link = Inode {
            ino: 4,
            kind: InodeKind::Symlink,
            symlink_target: Some(b"../x".to_vec()),
            ..dev.clone()
        };
        Rootfs {
            layers: vec![vec![base, file, dev, link]],
            verity: [(Digest::of(b"x"), [9u8; 32])].into_iter().collect(),
            manifest_version: MANIFEST_VERSION,
            chunking: Some(Chunking {
                algorithm: "fastcdc-v2020".into(),
                min_size: 1,
                avg_size: 2,
                max_size: 3,
                compression: "zstd-seekable".into(),
                zstd_frame_size: 4,
                zstd_level: 5,
            }),
            packs: vec![Pack {
                digest: Digest::of(b"x"),
                compressed: true,
                chunks: vec![PackedChunk {
                    digest: Digest::of(b"chunk"),
                    offset: 0,
                    len: 100,
                    stored_offset: 0,
                    stored_len: 60,
                }],
                parts: vec![
                    ChunkPart {
                        digest: Digest::of(b"part 1"),
                        offset: 0,
                        len: 30,
                    },
                    ChunkPart {
                        digest: Digest::of(b"part 2"),
                        offset: 30,
                        len: 70,
                    },
                ],
            }],
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let r = sample();
        let bytes = encode_rootfs(&r).unwrap();
        let back = decode_rootfs(&bytes, &DecodeLimits::default()).unwrap();
        assert_eq!(r, back);
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error() {
        let bytes = encode_rootfs(&sample()).unwrap();
        for cut in [0, 1, 7, 8, 16, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                decode_rootfs(&bytes[..cut], &DecodeLimits::default()).is_err(),
                "cut {cut}"
            );
        }
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        assert!(decode_rootfs(&junk, &DecodeLimits::default()).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let bytes = encode_rootfs(&sample()).unwrap();
        let tight = DecodeLimits {
            max_inodes: 3,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_rootfs(&bytes, &tight),
            Err(FormatError::TooLarge(_))
        ));
        let tiny = DecodeLimits {
            max_bytes: 16,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_rootfs(&bytes, &tiny),
            Err(FormatError::TooLarge(_))
        ));
    }
}
