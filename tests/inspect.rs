//! `puzzlefs inspect` on crafted images whose files claim more bytes than any chunk can hold
//! (sizes that would add up past `u64::MAX`): the library refuses the image with a clear
//! error, the tool prints it on one line and exits non-zero, and neither panics.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::craft::{chunk, dir, file, Crafter};
use common::puzzlefs_fails;
use puzzlefs_virtiofsd::inspect::inspect;
use puzzlefs_virtiofsd::oci::OciDir;

/// The largest size the reader accepts for one file.
const HUGE: u64 = i64::MAX as u64;

/// An image of `count` files under the root, each claiming `HUGE` bytes of one small blob.
fn huge_files(oci: &Path, count: u64) {
    let mut craft = Crafter::new(oci);
    let blob = craft.blob(b"data");
    let names: Vec<Vec<u8>> = (0..count).map(|i| format!("f{i}").into_bytes()).collect();
    let entries: Vec<(&[u8], u64)> = names
        .iter()
        .zip(2..)
        .map(|(n, ino)| (n.as_slice(), ino))
        .collect();
    let mut inodes = vec![dir(1, &entries)];
    inodes.extend((2..2 + count).map(|ino| file(ino, vec![chunk(blob, 0, HUGE, false)])));
    craft.commit(vec![inodes], "huge");
}

#[test]
fn files_claiming_more_than_a_chunk_holds_are_refused_by_the_library_and_the_tool() {
    for count in [1, 3] {
        let tmp = tempfile::tempdir().unwrap();
        huge_files(tmp.path(), count);
        let e = inspect(&OciDir::open(tmp.path()).unwrap(), None)
            .expect_err("a file larger than its chunk must be refused");
        let e = e.to_string();
        assert!(
            e.contains("inode 2: chunk range beyond the 64 MiB chunk limit"),
            "{e}"
        );
        for args in [vec![], vec![OsStr::new("--json")]] {
            let mut args = args;
            args.insert(0, OsStr::new("inspect"));
            args.push(tmp.path().as_os_str());
            let err = puzzlefs_fails(&args);
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("64 MiB chunk limit"), "{err}");
        }
    }
}
