//! `puzzlefs inspect` on crafted images whose sizes add up past `u64::MAX`: the library and
//! the tool report a saturated total, never a wrapped one, and never panic (a debug build of
//! this test panics on an unchecked sum, a release build would print the wrapped number).

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::craft::{chunk, dir, file, Crafter};
use common::puzzlefs;
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
fn two_huge_files_add_up_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    huge_files(tmp.path(), 2);
    let report = inspect(&OciDir::open(tmp.path()).unwrap(), None).unwrap();
    assert_eq!(report.images[0].files, 2);
    assert_eq!(report.images[0].file_bytes, 2 * HUGE);
}

#[test]
fn three_huge_files_saturate_in_the_library_and_the_tool() {
    let tmp = tempfile::tempdir().unwrap();
    huge_files(tmp.path(), 3);
    let report = inspect(&OciDir::open(tmp.path()).unwrap(), None).unwrap();
    assert_eq!(report.images[0].files, 3);
    assert_eq!(report.images[0].file_bytes, u64::MAX, "{report:?}");
    assert_eq!(report.unique_chunk_bytes, 4, "one 4-byte blob");
    let text = report.to_text();
    assert!(
        text.contains("16 EiB or more (the image's sizes overflow) of file data"),
        "{text}"
    );

    let json = puzzlefs(&[
        OsStr::new("inspect"),
        OsStr::new("--json"),
        tmp.path().as_os_str(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["images"][0]["file_bytes"].as_u64(), Some(u64::MAX));
    let out = puzzlefs(&[OsStr::new("inspect"), tmp.path().as_os_str()]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
}
