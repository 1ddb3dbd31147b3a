//! Seed inputs of every target, from real artefacts of the builder: metadata and manifests of
//! the layout's images, seekable blobs of known data, operation walks over the images.

use puzzlefs_virtiofsd::chunk::compress_seekable;
use puzzlefs_virtiofsd::reader::{Image, OpenOptions};

use super::layout::layout;

/// The tags of the layout's images: one stored plain, one zstd-compressed.
pub const TAGS: [&str; 2] = ["plain", "zstd"];

/// The metadata blob of each image, in `TAGS` order.
pub fn metadata() -> Vec<Vec<u8>> {
    let oci = &layout().1;
    TAGS.iter()
        .map(|tag| {
            let image = Image::open(oci, tag, OpenOptions::default()).unwrap();
            let rootfs = image.manifest().rootfs().unwrap();
            std::fs::read(oci.blob_path(&rootfs.digest)).unwrap()
        })
        .collect()
}

/// index.json, then the manifest of each image.
pub fn oci_json() -> Vec<Vec<u8>> {
    let oci = &layout().1;
    let mut docs = vec![std::fs::read(oci.path().join("index.json")).unwrap()];
    for tag in TAGS {
        let image = Image::open(oci, tag, OpenOptions::default()).unwrap();
        docs.push(serde_json::to_vec(image.manifest()).unwrap());
    }
    docs
}

/// For each image's metadata: readdirplus of the first inodes found (the root, then its
/// entries, so the whole small tree), then on each inode a GETATTR, a READ of the whole file,
/// one from an offset, a READLINK and a LISTXATTR. Operations pick inodes modulo how many are
/// known, so going round more often than there are inodes is harmless.
pub fn fs_ops() -> Vec<Vec<u8>> {
    const WHOLE: u32 = 1 << 20;
    const FROM: u64 = 70_000;
    metadata()
        .into_iter()
        .map(|meta| {
            let mut seed = (meta.len() as u16).to_le_bytes().to_vec();
            seed.extend_from_slice(&meta);
            for i in 0..6u8 {
                seed.extend_from_slice(&[3, i, 0]);
            }
            for i in 0..40u8 {
                seed.extend_from_slice(&[1, i]);
                for offset in [0, FROM] {
                    seed.extend_from_slice(&[4, i]);
                    seed.extend_from_slice(&offset.to_le_bytes());
                    seed.extend_from_slice(&WHOLE.to_le_bytes());
                    // Room for 255 pages: more than the largest file.
                    seed.push(255);
                }
                seed.extend_from_slice(&[5, i, 7, i, 0, 1, 0, 0]);
            }
            seed
        })
        .collect()
}

/// (data, its seekable blob) for an empty input, several small frames and a large frame.
pub fn seekable() -> Vec<(Vec<u8>, Vec<u8>)> {
    [(0usize, 4096u32), (10_000, 4096), (300_000, 65_536)]
        .into_iter()
        .map(|(len, frame)| {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ (i >> 9) as u8).collect();
            let blob = compress_seekable(&data, frame, 3).unwrap();
            (data, blob)
        })
        .collect()
}

/// Every seed, by target name.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    seeds.extend(metadata().into_iter().map(|s| ("metadata", s)));
    seeds.extend(oci_json().into_iter().map(|s| ("oci_json", s)));
    seeds.extend(fs_ops().into_iter().map(|s| ("fs_ops", s)));
    seeds.extend(seekable().into_iter().map(|(_, s)| ("seekable", s)));
    seeds
}
