//! Target `seekable`: a chunk blob in the zstd seekable format from an untrusted image.

use puzzlefs_virtiofsd::chunk::{decompress_seekable, seekable_size};

/// Largest decompressed size the target accepts.
pub const LIMIT: u64 = 1 << 20;

/// The decompressed bytes; `None` when the blob is refused.
pub fn run(data: &[u8]) -> Option<Vec<u8>> {
    let declared = seekable_size(data);
    let out = decompress_seekable(data, LIMIT).ok()?;
    assert!(
        out.len() as u64 <= LIMIT,
        "{} bytes over the limit",
        out.len()
    );
    assert_eq!(
        declared.ok(),
        Some(out.len() as u64),
        "size from the seek table"
    );
    Some(out)
}
