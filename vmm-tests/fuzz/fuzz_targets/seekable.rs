//! Fuzz target: a chunk blob in the zstd seekable format from an untrusted image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfs::chunk::{decompress_seekable, seekable_size};

const LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let declared = seekable_size(data);
    if let Ok(out) = decompress_seekable(data, LIMIT) {
        assert!(out.len() as u64 <= LIMIT);
        assert_eq!(declared.ok(), Some(out.len() as u64));
    }
});
