//! Target `metadata`: a metadata blob from an untrusted image, decoded and turned into an inode
//! table, then every path resolved and every directory listed.

use puzzlefs_virtiofsd::format::{decode_rootfs, DecodeLimits};
use puzzlefs_virtiofsd::reader::{InodeTable, Walk};

/// The paths of the tree, in walk order; `None` when the blob is refused.
pub fn run(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let rootfs = decode_rootfs(data, &DecodeLimits::default()).ok()?;
    let table = InodeTable::build(&rootfs).ok()?;
    let mut paths = Vec::new();
    for item in Walk::all(&table) {
        let _ = table.resolve(&item.path, true);
        let _ = table.resolve(&item.path, false);
        paths.push(item.path);
    }
    Some(paths)
}
