//! An image too big for a manifest that lists every chunk: 2.5 GiB of incompressible data at
//! the default chunking is over 30 thousand chunks (random data averages ~79 KiB per chunk),
//! and the registry refuses the manifest that would list them one by one. In packs it
//! pushes, pulls and mounts.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};

use super::registry_harness::{Auth, Registry};
use super::{manifest_blobs, manifest_hex, n, s, transfer};
use crate::common::{bin, puzzlefs};
use puzzlefs_virtiofsd::format::Digest;
use puzzlefs_virtiofsd::oci::{
    Descriptor, ImageManifest, MEDIA_TYPE_FILEDATA, MEDIA_TYPE_MANIFEST,
};
use puzzlefs_virtiofsd::registry::{Client, ClientOptions, Repository};

const PARTS: u64 = 5;
const PART_BYTES: u64 = 512 << 20;

/// Writes `len` pseudo-random bytes (xorshift, incompressible) and returns their sha256.
fn write_random(path: &Path, len: u64, seed: u64) -> [u8; 32] {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut hash = Sha256::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..len / buf.len() as u64 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        hash.update(&buf);
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
    hash.finalize().into()
}

fn sha256_file(path: &Path) -> [u8; 32] {
    let mut f = fs::File::open(path).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let got = f.read(&mut buf).unwrap();
        if got == 0 {
            return hash.finalize().into();
        }
        hash.update(&buf[..got]);
    }
}

/// A background `puzzlefs mount`, taken down on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn gigabytes_of_incompressible_data_push_pull_and_mount_in_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(tree.join("data")).unwrap();
    let mut want = BTreeMap::new();
    for i in 0..PARTS {
        let rel = format!("data/part{i}");
        want.insert(
            rel.clone(),
            write_random(&tree.join(&rel), PART_BYTES, i + 1),
        );
    }
    let ours = tmp.path().join("ours");
    let image = format!("{}:big", s(&ours));
    let out = puzzlefs(&[
        "build".as_ref(),
        "--json".as_ref(),
        tree.as_os_str(),
        image.as_ref(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let chunks = n(&report, "chunks");
    assert!(chunks > 30_000, "{chunks} chunks");
    let blobs = manifest_blobs(&ours, "big");
    assert_eq!(n(&report, "data_blobs") + 2, blobs.len() as u64);
    assert!(blobs.len() < 200, "{} blobs", blobs.len());
    fs::remove_dir_all(&tree).unwrap();

    let registry = Registry::start(Auth::None);
    // The manifest one blob per chunk needs, written with our own types, is refused.
    let per_chunk = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_MANIFEST.into()),
        config: puzzlefs_virtiofsd::oci::empty_config().0,
        layers: (0..chunks)
            .map(|i| Descriptor::new(MEDIA_TYPE_FILEDATA, Digest::of(&i.to_le_bytes()), 64 << 10))
            .collect(),
        annotations: None,
        extra: Default::default(),
    };
    let body = serde_json::to_vec(&per_chunk).unwrap();
    assert!(body.len() > 4 << 20, "{} bytes", body.len());
    let opts = ClientOptions {
        tls_verify: false,
        ..ClientOptions::default()
    };
    let client = Client::new(&registry.addr(), &registry.addr(), &opts).unwrap();
    let repo = Repository::new(&client, "big/per-chunk");
    let refused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(repo.put_manifest("t", &body, MEDIA_TYPE_MANIFEST))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("MANIFEST_INVALID"), "{refused}");

    // In packs: pushed, pulled into an empty layout, mounted, every byte as written.
    let dst = format!("docker://{}/big/img:t", registry.addr());
    let r = transfer("push", &[&image, &dst]);
    assert_eq!(n(&r, "blobs_sent"), blobs.len() as u64);
    let manifest = manifest_hex(&ours, "big");
    fs::remove_dir_all(&ours).unwrap();
    let pulled = tmp.path().join("pulled");
    let target = format!("{}:t", s(&pulled));
    transfer("pull", &[&dst, &target]);
    assert_eq!(manifest_blobs(&pulled, "t"), blobs);
    assert_eq!(manifest_hex(&pulled, "t"), manifest);
    let mp = tmp.path().join("mp");
    fs::create_dir_all(&mp).unwrap();
    let status = Command::new(bin("puzzlefs"))
        .args(["mount".as_ref(), target.as_ref(), mp.as_os_str()])
        .status()
        .unwrap();
    assert!(status.success());
    let _mounted = Mounted(mp.clone());
    for (rel, digest) in &want {
        assert_eq!(fs::metadata(mp.join(rel)).unwrap().len(), PART_BYTES);
        assert!(sha256_file(&mp.join(rel)) == *digest, "{rel} differs");
    }
}
