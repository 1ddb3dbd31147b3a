//! Fuzz target: a metadata blob from an untrusted image, decoded and turned into an inode table,
//! then every path resolved and every directory listed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfs::format::{decode_rootfs, DecodeLimits};
use pfs::reader::{InodeTable, Walk};

fuzz_target!(|data: &[u8]| {
    let Ok(rootfs) = decode_rootfs(data, &DecodeLimits::default()) else {
        return;
    };
    let Ok(table) = InodeTable::build(&rootfs) else {
        return;
    };
    for item in Walk::all(&table) {
        let _ = table.resolve(&item.path, true);
        let _ = table.resolve(&item.path, false);
    }
});
