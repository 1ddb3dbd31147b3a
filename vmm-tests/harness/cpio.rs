//! A minimal newc cpio writer: enough to append a test script to the guest initramfs.

/// One regular file for the archive.
pub struct CpioFile<'a> {
    pub name: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, size: usize, name: &str) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        1, // nlink
        0, // mtime
        size as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// An uncompressed newc archive holding `files`.
pub fn archive(files: &[CpioFile<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        header(
            &mut out,
            i as u32 + 1,
            0o100000 | f.mode,
            f.data.len(),
            f.name,
        );
        out.extend_from_slice(f.data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 0, "TRAILER!!!");
    out
}
