//! Writes the seed corpora of every fuzz target: `cargo run --release --bin seeds -- corpus`.
//! Seeds are real artefacts of the builder (metadata, chunk blobs, index and manifests) and
//! operation sequences over the fs_ops layout, so the fuzzers start from valid inputs.

use std::fs;
use std::path::Path;

use pfs::chunk::compress_seekable;
use pfs::format::Digest;
use pfs::reader::{Image, OpenOptions};

#[path = "fuzz_targets/layout.rs"]
mod layout;

fn put(dir: &Path, data: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(Digest::of(data).hex()), data).unwrap();
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: seeds CORPUS_DIR");
    let out = Path::new(&out);
    let oci = &layout::layout().1;
    put(
        &out.join("oci_json"),
        &fs::read(oci.path().join("index.json")).unwrap(),
    );
    for tag in ["plain", "zstd"] {
        let image = Image::open(oci, tag, OpenOptions::default()).unwrap();
        let manifest = serde_json::to_vec(image.manifest()).unwrap();
        put(&out.join("oci_json"), &manifest);
        let rootfs = image.manifest().rootfs().unwrap();
        let meta = fs::read(oci.blob_path(&rootfs.digest)).unwrap();
        put(&out.join("metadata"), &meta);
        // fs_ops: the metadata, then op sequences (opcode, inode pick, arguments).
        let mut seed = (meta.len() as u16).to_le_bytes().to_vec();
        seed.extend_from_slice(&meta);
        let mut walk = seed.clone();
        // readdirplus root, lookup names 1..4 from the root, read each, readlink, xattrs.
        walk.extend_from_slice(&[3, 0, 0]);
        for i in 1..5u8 {
            walk.extend_from_slice(&[0, 0, i]);
        }
        for i in 1..6u8 {
            walk.extend_from_slice(&[4, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 64]);
            walk.extend_from_slice(&[5, i, 7, i, 0, 1, 0, 0, 8, i]);
        }
        put(&out.join("fs_ops"), &walk);
    }
    for (len, frame) in [(0usize, 4096u32), (10_000, 4096), (300_000, 65_536)] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ (i >> 9) as u8).collect();
        put(
            &out.join("seekable"),
            &compress_seekable(&data, frame, 3).unwrap(),
        );
    }
}
