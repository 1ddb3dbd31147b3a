//! Fuzz target: a fuzzed metadata blob served as an image, then a fuzzed sequence of the FUSE
//! operations a guest can send, through the same `ReadOnly<PuzzleFs>` the daemon serves.
//!
//! Input: a little-endian u16 length, that many bytes of metadata, then operations. Each
//! operation is an opcode byte followed by its argument bytes; inodes are picked from those the
//! file system has returned so far, names from what readdir returned, so the fuzzer reaches deep
//! into the tree. Chunk blobs come from a small real image built once per process.
#![no_main]

use std::ffi::CString;
use std::io;
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::{Context, DirEntry, FileSystem, ZeroCopyWriter, ROOT_ID};
use fuse_backend_rs::file_traits::FileReadWriteVolatile;
use libfuzzer_sys::fuzz_target;
use pfs::fs::{CachePolicy, FsConfig, PuzzleFs, ReadOnly};
use pfs::reader::{Image, OpenOptions};

#[path = "layout.rs"]
mod layout;
use layout::{layout, stage};

struct Sink {
    len: usize,
    cap: usize,
}

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.cap - self.len {
            return Err(io::Error::other("reply buffer overflow"));
        }
        self.len += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ZeroCopyWriter for Sink {
    fn write_from(
        &mut self,
        _f: &mut dyn FileReadWriteVolatile,
        _count: usize,
        _off: u64,
    ) -> io::Result<usize> {
        Err(io::Error::other("not used"))
    }

    fn available_bytes(&self) -> usize {
        self.cap - self.len
    }
}

/// Reads argument bytes off the operation stream (zeros once it runs out).
struct Args<'a>(&'a [u8]);

impl Args<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
}

fn run_ops<F: FileSystem<Inode = u64, Handle = u64>>(fs: &F, mut ops: Args<'_>) {
    let ctx = Context::new();
    let mut inodes = vec![ROOT_ID];
    let mut names: Vec<CString> = vec![CString::new("..").unwrap()];
    for _ in 0..256 {
        if ops.0.is_empty() {
            break;
        }
        let op = ops.byte();
        let inode = inodes[usize::from(ops.byte()) % inodes.len()];
        match op % 12 {
            0 => {
                let name = names[usize::from(ops.byte()) % names.len()].clone();
                if let Ok(e) = fs.lookup(&ctx, inode, &name) {
                    if e.inode != 0 {
                        inodes.push(e.inode);
                    }
                }
            }
            1 => {
                let _ = fs.getattr(&ctx, inode, None);
            }
            2 => {
                let offset = u64::from(ops.byte());
                let _ = fs.readdir(&ctx, inode, 0, 4096, offset, &mut |d: DirEntry| {
                    if let Ok(n) = CString::new(d.name) {
                        names.push(n);
                    }
                    Ok(1)
                });
            }
            3 => {
                let offset = u64::from(ops.byte());
                let _ = fs.readdirplus(&ctx, inode, 0, 4096, offset, &mut |d, e| {
                    if let Ok(n) = CString::new(d.name) {
                        names.push(n);
                    }
                    if e.inode != 0 {
                        inodes.push(e.inode);
                    }
                    Ok(1)
                });
            }
            4 => {
                let offset = ops.u64();
                let size = ops.u32() % (2 << 20);
                let cap = usize::from(ops.byte()) << 12;
                if let Ok((handle, _, _)) = fs.open(&ctx, inode, libc::O_RDONLY as u32, 0) {
                    let mut sink = Sink { len: 0, cap };
                    if let Ok(n) = fs.read(
                        &ctx,
                        inode,
                        handle.unwrap_or(0),
                        &mut sink,
                        size,
                        offset,
                        None,
                        0,
                    ) {
                        assert!(n <= size as usize && n == sink.len);
                    }
                    let _ = fs.release(&ctx, inode, 0, handle.unwrap_or(0), false, false, None);
                }
            }
            5 => {
                let _ = fs.readlink(&ctx, inode);
            }
            6 => {
                let name = names[usize::from(ops.byte()) % names.len()].clone();
                let _ = fs.getxattr(&ctx, inode, &name, ops.u32() % 70_000);
            }
            7 => {
                let _ = fs.listxattr(&ctx, inode, ops.u32() % 70_000);
            }
            8 => {
                let _ = fs.statfs(&ctx, inode);
                let _ = fs.access(&ctx, inode, u32::from(ops.byte()));
            }
            9 => {
                let _ = fs.lseek(&ctx, inode, 0, ops.u64(), u32::from(ops.byte()));
            }
            10 => fs.forget(&ctx, inode, ops.u64()),
            _ => {
                let name = names[usize::from(ops.byte()) % names.len()].clone();
                let err = fs.unlink(&ctx, inode, &name).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EROFS));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len));
    let (Some(meta), Some(ops)) = (rest.get(..len), rest.get(len..)) else {
        return;
    };
    let oci = &layout().1;
    let (desc, written) = stage(oci, meta);
    if let Ok(image) = Image::open_descriptor(oci, &desc, OpenOptions::default()) {
        let fs = ReadOnly::new(PuzzleFs::new(
            Arc::new(image),
            FsConfig::new(CachePolicy::Always),
        ));
        run_ops(&fs, Args(ops));
    }
    for d in written {
        let _ = std::fs::remove_file(oci.blob_path(&d));
    }
});
