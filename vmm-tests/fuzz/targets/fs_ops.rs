//! Target `fs_ops`: a fuzzed metadata blob served as an image, then a fuzzed sequence of the
//! FUSE operations a guest can send, through the same `ReadOnly<PuzzleFs>` the daemon serves.
//!
//! Input: a little-endian u16 length, that many bytes of metadata, then operations. Each
//! operation is an opcode byte followed by its argument bytes; inodes are picked from those the
//! file system has returned so far, names from what readdir returned, so the fuzzer reaches deep
//! into the tree. Chunk blobs come from a small real image built once per process.

use std::ffi::CString;
use std::io;
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::{Context, DirEntry, FileSystem, ZeroCopyWriter, ROOT_ID};
use fuse_backend_rs::file_traits::FileReadWriteVolatile;
use puzzlefs_virtiofsd::format::Digest;
use puzzlefs_virtiofsd::fs::{CachePolicy, FsConfig, PuzzleFs, ReadOnly};
use puzzlefs_virtiofsd::reader::{Image, OpenOptions};

use super::layout::{layout, stage};

/// Operations run per input, at most.
const MAX_OPS: usize = 256;

/// What the operations did on an image the reader opened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Operations run.
    pub ops: usize,
    /// Operations that failed.
    pub failed: usize,
    /// Bytes returned by READ.
    pub read_bytes: u64,
    /// What the successful operations showed, in order.
    pub seen: Vec<Seen>,
}

/// What one successful operation showed of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// LOOKUP or READDIRPLUS found `name` in directory `parent`.
    Entry {
        parent: u64,
        name: Vec<u8>,
        ino: u64,
        attr: Attr,
    },
    /// GETATTR.
    Attr { ino: u64, attr: Attr },
    /// READ returned `len` bytes at `offset`, with this digest.
    Read {
        ino: u64,
        offset: u64,
        len: u64,
        digest: Digest,
    },
    /// READLINK.
    Link { ino: u64, target: Vec<u8> },
}

/// The attributes an operation returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub mode: u32,
    pub size: i64,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
}

impl From<&libc::stat64> for Attr {
    fn from(st: &libc::stat64) -> Attr {
        Attr {
            mode: st.st_mode,
            size: st.st_size,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: (st.st_mtime, st.st_mtime_nsec),
        }
    }
}

/// Splits the input, serves its metadata and runs its operations; `None` when the reader
/// refuses the metadata (or the input is too short to hold it).
pub fn run(data: &[u8]) -> Option<Report> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    let (meta, ops) = (rest.get(..len)?, rest.get(len..)?);
    let oci = &layout().1;
    let staged = stage(oci, meta);
    let image = Image::open_descriptor(oci, &staged.descriptor, OpenOptions::default()).ok()?;
    let fs = ReadOnly::new(PuzzleFs::new(
        Arc::new(image),
        FsConfig::new(CachePolicy::Always),
    ));
    Some(run_ops(&fs, Args(ops)))
}

/// A reply buffer of `cap` bytes.
struct Sink {
    data: Vec<u8>,
    cap: usize,
}

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.cap - self.data.len() {
            return Err(io::Error::other("reply buffer overflow"));
        }
        self.data.extend_from_slice(buf);
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
        self.cap - self.data.len()
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

fn run_ops<F: FileSystem<Inode = u64, Handle = u64>>(fs: &F, mut ops: Args<'_>) -> Report {
    let ctx = Context::new();
    let mut report = Report::default();
    let seen = &mut report.seen;
    let mut inodes = vec![ROOT_ID];
    let mut names: Vec<CString> = vec![c"..".to_owned()];
    while report.ops < MAX_OPS && !ops.0.is_empty() {
        report.ops += 1;
        let op = ops.byte();
        let inode = inodes[usize::from(ops.byte()) % inodes.len()];
        let ok = match op % 12 {
            0 => {
                let name = names[usize::from(ops.byte()) % names.len()].clone();
                fs.lookup(&ctx, inode, &name)
                    .map(|e| {
                        if e.inode != 0 {
                            inodes.push(e.inode);
                            seen.push(Seen::Entry {
                                parent: inode,
                                name: name.into_bytes(),
                                ino: e.inode,
                                attr: Attr::from(&e.attr),
                            });
                        }
                    })
                    .is_ok()
            }
            1 => fs
                .getattr(&ctx, inode, None)
                .map(|(st, _)| {
                    seen.push(Seen::Attr {
                        ino: inode,
                        attr: Attr::from(&st),
                    })
                })
                .is_ok(),
            2 => {
                let offset = u64::from(ops.byte());
                fs.readdir(&ctx, inode, 0, 4096, offset, &mut |d: DirEntry| {
                    if let Ok(n) = CString::new(d.name) {
                        names.push(n);
                    }
                    Ok(1)
                })
                .is_ok()
            }
            3 => {
                let offset = u64::from(ops.byte());
                fs.readdirplus(&ctx, inode, 0, 4096, offset, &mut |d, e| {
                    if let Ok(n) = CString::new(d.name) {
                        names.push(n);
                    }
                    if e.inode != 0 {
                        inodes.push(e.inode);
                        seen.push(Seen::Entry {
                            parent: inode,
                            name: d.name.to_vec(),
                            ino: e.inode,
                            attr: Attr::from(&e.attr),
                        });
                    }
                    Ok(1)
                })
                .is_ok()
            }
            4 => {
                let offset = ops.u64();
                let size = ops.u32() % (2 << 20);
                let cap = usize::from(ops.byte()) << 12;
                match fs.open(&ctx, inode, libc::O_RDONLY as u32, 0) {
                    Ok((handle, _, _)) => {
                        let handle = handle.unwrap_or(0);
                        let mut sink = Sink {
                            data: Vec::new(),
                            cap,
                        };
                        let read = fs.read(&ctx, inode, handle, &mut sink, size, offset, None, 0);
                        let _ = fs.release(&ctx, inode, 0, handle, false, false, None);
                        match read {
                            Ok(n) => {
                                assert!(n <= size as usize, "READ of {size} returned {n}");
                                assert_eq!(n, sink.data.len(), "READ count and bytes written");
                                report.read_bytes += n as u64;
                                seen.push(Seen::Read {
                                    ino: inode,
                                    offset,
                                    len: n as u64,
                                    digest: Digest::of(&sink.data),
                                });
                                true
                            }
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                }
            }
            5 => fs
                .readlink(&ctx, inode)
                .map(|target| seen.push(Seen::Link { ino: inode, target }))
                .is_ok(),
            6 => {
                let name = names[usize::from(ops.byte()) % names.len()].clone();
                fs.getxattr(&ctx, inode, &name, ops.u32() % 70_000).is_ok()
            }
            7 => fs.listxattr(&ctx, inode, ops.u32() % 70_000).is_ok(),
            8 => {
                let statfs = fs.statfs(&ctx, inode).is_ok();
                fs.access(&ctx, inode, u32::from(ops.byte())).is_ok() && statfs
            }
            9 => fs
                .lseek(&ctx, inode, 0, ops.u64(), u32::from(ops.byte()))
                .is_ok(),
            10 => {
                fs.forget(&ctx, inode, ops.u64());
                true
            }
            _ => {
                let name = names[usize::from(ops.byte()) % names.len()].clone();
                let err = fs
                    .unlink(&ctx, inode, &name)
                    .expect_err("UNLINK on a read-only file system");
                assert_eq!(err.raw_os_error(), Some(libc::EROFS), "UNLINK: {err}");
                false
            }
        };
        if !ok {
            report.failed += 1;
        }
    }
    report
}
