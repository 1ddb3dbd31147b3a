//! fs-verity file digests (SHA-256, 4 KiB blocks, no salt), as the kernel measures them.

use sha2::{Digest as _, Sha256};

const BLOCK: usize = 4096;
const HASH: usize = 32;

/// The fs-verity digest the kernel reports for a file with these contents.
pub fn fs_verity_digest(data: &[u8]) -> [u8; 32] {
    let root = merkle_root(data);
    let mut desc = [0u8; 256];
    desc[0] = 1; // version
    desc[1] = 1; // FS_VERITY_HASH_ALG_SHA256
    desc[2] = 12; // log2(block size)
    desc[3] = 0; // salt size
    desc[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
    desc[16..16 + HASH].copy_from_slice(&root);
    Sha256::digest(desc).into()
}

fn hash_block(block: &[u8]) -> [u8; 32] {
    if block.len() == BLOCK {
        return Sha256::digest(block).into();
    }
    let mut padded = [0u8; BLOCK];
    padded[..block.len()].copy_from_slice(block);
    Sha256::digest(padded).into()
}

fn merkle_root(data: &[u8]) -> [u8; 32] {
    if data.is_empty() {
        return [0; 32];
    }
    // Hash the data blocks in place; only the (128 times smaller) upper levels are stored.
    let mut level: Vec<u8>;
    let mut current = data;
    loop {
        if current.len() <= BLOCK {
            return hash_block(current);
        }
        level = current.chunks(BLOCK).flat_map(hash_block).collect();
        current = &level;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares with `fsverity digest` from fsverity-utils on several sizes around block and
    /// tree-level boundaries.
    #[test]
    fn matches_fsverity_utils() {
        let tmp = tempfile::tempdir().unwrap();
        for size in [
            0usize,
            1,
            4095,
            4096,
            4097,
            128 * 4096,
            128 * 4096 + 1,
            300_000,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
            let path = tmp.path().join(format!("f{size}"));
            std::fs::write(&path, &data).unwrap();
            let out = std::process::Command::new("fsverity")
                .arg("digest")
                .arg("--compact")
                .arg(&path)
                .output()
                .expect("fsverity (fsverity-utils) must be installed");
            assert!(out.status.success());
            let expected = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                hex::encode(fs_verity_digest(&data)),
                expected.trim(),
                "size {size}"
            );
        }
    }
}
