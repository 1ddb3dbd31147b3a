//! `PuzzleFs` driven directly, as a transport would: every operation on a small real image.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::CreateIn;
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, OpenOptions,
    SetattrValid, ZeroCopyReader, ZeroCopyWriter, ROOT_ID,
};
use fuse_backend_rs::file_traits::FileReadWriteVolatile;

use super::{CachePolicy, FsConfig, PuzzleFs, ReadOnly};
use crate::builder::{build, BuildOptions};
use crate::oci::OciDir;
use crate::reader::{Image, NodeData, OpenOptions as ImageOpen};

/// A reply buffer of limited size, like a transport's.
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

/// A reader that must never be used: writes are refused before reading their data.
struct NoData;

impl io::Read for NoData {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        panic!("write data read")
    }
}

impl ZeroCopyReader for NoData {
    fn read_to(
        &mut self,
        _f: &mut dyn FileReadWriteVolatile,
        _count: usize,
        _off: u64,
    ) -> io::Result<usize> {
        panic!("write data read")
    }
}

fn big() -> Vec<u8> {
    (0..600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    oci: OciDir,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::write(src.join("dir/big"), big()).unwrap();
    fs::write(src.join("small"), b"small file\n").unwrap();
    fs::set_permissions(src.join("small"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("dir/big", src.join("link")).unwrap();
    xattr::set(src.join("small"), "user.k", b"value").unwrap();
    let oci = OciDir::create(&tmp.path().join("oci")).unwrap();
    build(&src, &oci, "t", &BuildOptions::default()).unwrap();
    Fixture { _tmp: tmp, oci }
}

fn puzzlefs(f: &Fixture, cache: CachePolicy) -> PuzzleFs {
    puzzlefs_with(f, FsConfig::new(cache))
}

fn puzzlefs_with(f: &Fixture, config: FsConfig) -> PuzzleFs {
    let image = Image::open(&f.oci, "t", ImageOpen::default()).unwrap();
    PuzzleFs::new(Arc::new(image), config)
}

fn ctx() -> Context {
    Context::new()
}

fn name(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn errno<T>(r: io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

fn lookup(fs: &PuzzleFs, path: &str) -> Entry {
    let mut e = Entry {
        inode: ROOT_ID,
        ..Entry::default()
    };
    for part in path.split('/').filter(|p| !p.is_empty()) {
        e = fs.lookup(&ctx(), e.inode, &name(part)).unwrap();
        assert_ne!(e.inode, 0, "{path}: {part} not found");
    }
    e
}

fn read(fs: &PuzzleFs, inode: u64, offset: u64, size: u32, cap: usize) -> io::Result<Vec<u8>> {
    let mut w = Sink {
        data: Vec::new(),
        cap,
    };
    let n = fs.read(&ctx(), inode, 0, &mut w, size, offset, None, 0)?;
    assert_eq!(n, w.data.len());
    Ok(w.data)
}

#[test]
fn shareable_between_request_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<PuzzleFs>();
}

#[test]
fn lookup_getattr_and_unknown_inodes() {
    let f = fixture();
    let fs = puzzlefs(&f, CachePolicy::Always);
    let small = lookup(&fs, "small");
    assert_eq!(small.attr.st_mode, libc::S_IFREG | 0o640);
    assert_eq!(small.attr.st_size, 11);
    assert_eq!(small.attr.st_nlink, 1);
    assert_eq!(small.entry_timeout, super::LONG_TIMEOUT);
    let (st, _) = fs.getattr(&ctx(), small.inode, None).unwrap();
    assert_eq!(st.st_ino, small.attr.st_ino);
    let root = fs.getattr(&ctx(), ROOT_ID, None).unwrap().0;
    assert_eq!(root.st_mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(root.st_nlink, 3);
    // `.` and `..` resolve; the root is its own parent.
    let dir = lookup(&fs, "dir");
    assert_eq!(
        fs.lookup(&ctx(), dir.inode, &name("..")).unwrap().inode,
        ROOT_ID
    );
    assert_eq!(
        fs.lookup(&ctx(), dir.inode, &name(".")).unwrap().inode,
        dir.inode
    );
    assert_eq!(
        fs.lookup(&ctx(), ROOT_ID, &name("..")).unwrap().inode,
        ROOT_ID
    );
    // Names no image can hold are refused rather than looked up.
    let long = "x".repeat(256);
    assert_eq!(
        errno(fs.lookup(&ctx(), ROOT_ID, &name(&long))),
        libc::ENAMETOOLONG
    );
    // Missing names: a cacheable negative entry, or ENOENT without caching.
    let neg = fs.lookup(&ctx(), ROOT_ID, &name("missing")).unwrap();
    assert_eq!((neg.inode, neg.entry_timeout), (0, super::LONG_TIMEOUT));
    let never = puzzlefs(&f, CachePolicy::Never);
    assert_eq!(
        errno(never.lookup(&ctx(), ROOT_ID, &name("missing"))),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs.lookup(&ctx(), small.inode, &name("x"))),
        libc::ENOTDIR
    );
    for bad in [0, 1000, u64::MAX] {
        assert_eq!(errno(fs.getattr(&ctx(), bad, None)), libc::EBADF);
        assert_eq!(errno(fs.lookup(&ctx(), bad, &name("x"))), libc::EBADF);
        assert_eq!(
            errno(fs.read(
                &ctx(),
                bad,
                0,
                &mut Sink {
                    data: vec![],
                    cap: 9
                },
                9,
                0,
                None,
                0
            )),
            libc::EBADF
        );
        assert_eq!(errno(fs.opendir(&ctx(), bad, 0)), libc::EBADF);
        assert_eq!(errno(fs.listxattr(&ctx(), bad, 0)), libc::EBADF);
    }
    fs.forget(&ctx(), 12345, 1);
    fs.batch_forget(&ctx(), vec![(0, 1), (u64::MAX, 2)]);
}

#[test]
fn reads_stream_file_bytes() {
    let f = fixture();
    let fs = puzzlefs(&f, CachePolicy::Always);
    let e = lookup(&fs, "dir/big");
    let want = big();
    assert_eq!(e.attr.st_size as usize, want.len());
    let mut got = Vec::new();
    while got.len() < want.len() {
        let piece = read(&fs, e.inode, got.len() as u64, 131_072, 1 << 20).unwrap();
        assert!(!piece.is_empty());
        got.extend(piece);
    }
    assert_eq!(got, want);
    assert_eq!(
        read(&fs, e.inode, 1000, 50, 1 << 20).unwrap(),
        want[1000..1050]
    );
    // Clipped to the reply buffer, and to the end of the file.
    assert_eq!(read(&fs, e.inode, 7, 4096, 100).unwrap(), want[7..107]);
    let tail = read(&fs, e.inode, want.len() as u64 - 3, 4096, 1 << 20).unwrap();
    assert_eq!(tail, want[want.len() - 3..]);
    assert!(read(&fs, e.inode, want.len() as u64 + 10, 10, 100)
        .unwrap()
        .is_empty());
    assert!(read(&fs, e.inode, u64::MAX, 10, 100).unwrap().is_empty());
    let dir = lookup(&fs, "dir");
    assert_eq!(errno(read(&fs, dir.inode, 0, 10, 100)), libc::EISDIR);
    let link = lookup(&fs, "link");
    assert_eq!(errno(read(&fs, link.inode, 0, 10, 100)), libc::EINVAL);
    assert_eq!(fs.readlink(&ctx(), link.inode).unwrap(), b"dir/big");
    assert_eq!(errno(fs.readlink(&ctx(), e.inode)), libc::EINVAL);
}

#[test]
fn corrupt_blob_reads_fail_with_eio() {
    let f = fixture();
    let fs = puzzlefs(&f, CachePolicy::Always);
    let e = lookup(&fs, "dir/big");
    let table = fs.image().table();
    let id = table.resolve(b"/dir/big", false).unwrap();
    let NodeData::File(_) = table.node(id).data else {
        panic!("file expected")
    };
    let extents = table.extents(id);
    // The file's last chunk: it holds no other file's bytes (this file comes last).
    let last = extents.last().unwrap();
    let chunk = table.chunks()[last.chunk as usize];
    let path = f.oci.blob_path(&chunk.file());
    let mut bytes = fs::read(&path).unwrap();
    bytes[chunk.pack.map_or(0, |p| p.stored_offset) as usize] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    for _ in 0..2 {
        assert_eq!(
            errno(read(&fs, e.inode, last.file_offset, 4096, 1 << 20)),
            libc::EIO
        );
    }
    assert_eq!(read(&fs, e.inode, 0, 10, 10).unwrap(), big()[..10]);
    assert_eq!(fs.reported.lock().unwrap().len(), 1);
    let small = lookup(&fs, "small");
    assert_eq!(
        read(&fs, small.inode, 0, 100, 100).unwrap(),
        b"small file\n"
    );
}

#[test]
fn every_write_is_erofs() {
    let f = fixture();
    let fs = ReadOnly::new(puzzlefs(&f, CachePolicy::Always));
    let c = ctx();
    let file = lookup(fs.inner(), "small").inode;
    let n = name("new");
    let st = fs.getattr(&c, file, None).unwrap().0;
    let args = CreateIn {
        flags: libc::O_WRONLY as u32,
        mode: 0o644,
        umask: 0,
        fuse_flags: 0,
    };
    let rofs = [
        errno(fs.setattr(&c, file, st, None, SetattrValid::MODE)),
        errno(fs.mknod(&c, ROOT_ID, &n, libc::S_IFREG | 0o644, 0, 0)),
        errno(fs.mkdir(&c, ROOT_ID, &n, 0o755, 0)),
        errno(fs.unlink(&c, ROOT_ID, &name("small"))),
        errno(fs.rmdir(&c, ROOT_ID, &name("dir"))),
        errno(fs.symlink(&c, &name("t"), ROOT_ID, &n)),
        errno(fs.rename(&c, ROOT_ID, &name("small"), ROOT_ID, &n, 0)),
        errno(fs.link(&c, file, ROOT_ID, &n)),
        errno(fs.create(&c, ROOT_ID, &n, args)),
        errno(fs.write(&c, file, 0, &mut NoData, 1, 0, None, false, 0, 0)),
        errno(fs.fallocate(&c, file, 0, 0, 0, 10)),
        errno(fs.setxattr(&c, file, &name("user.k"), b"v", 0)),
        errno(fs.removexattr(&c, file, &name("user.k"))),
        errno(fs.open(&c, file, libc::O_WRONLY as u32, 0)),
        errno(fs.open(&c, file, libc::O_RDWR as u32, 0)),
        errno(fs.open(&c, file, (libc::O_RDONLY | libc::O_TRUNC) as u32, 0)),
        errno(fs.access(&c, file, libc::W_OK as u32)),
    ];
    assert!(rofs.iter().all(|&e| e == libc::EROFS), "{rofs:?}");
    // Harmless no-ops succeed; FLUSH is declined so the kernel stops sending it.
    assert_eq!(errno(fs.flush(&c, file, 0, 0)), libc::ENOSYS);
    fs.fsync(&c, file, true, 0).unwrap();
    fs.release(&c, file, 0, 0, false, false, None).unwrap();
}

#[test]
fn open_and_init_follow_the_cache_policy() {
    let f = fixture();
    for (policy, file_opts, dir_opts) in [
        (
            CachePolicy::Never,
            OpenOptions::DIRECT_IO,
            OpenOptions::empty(),
        ),
        (
            CachePolicy::Metadata,
            OpenOptions::DIRECT_IO,
            OpenOptions::CACHE_DIR | OpenOptions::KEEP_CACHE,
        ),
        (
            CachePolicy::Auto,
            OpenOptions::KEEP_CACHE,
            OpenOptions::CACHE_DIR | OpenOptions::KEEP_CACHE,
        ),
        (
            CachePolicy::Always,
            OpenOptions::KEEP_CACHE,
            OpenOptions::CACHE_DIR | OpenOptions::KEEP_CACHE,
        ),
    ] {
        let fs = puzzlefs(&f, policy);
        let file = lookup(&fs, "small").inode;
        let (h, opts, _) = fs.open(&ctx(), file, libc::O_RDONLY as u32, 0).unwrap();
        assert_eq!((h, opts), (None, file_opts), "{policy}");
        let (h, opts) = fs.opendir(&ctx(), ROOT_ID, libc::O_RDONLY as u32).unwrap();
        assert_eq!((h, opts), (None, dir_opts), "{policy}");
        assert_eq!(errno(fs.opendir(&ctx(), file, 0)), libc::ENOTDIR);
        assert_eq!(errno(fs.open(&ctx(), ROOT_ID, 0, 0)), libc::EISDIR);
        let got = fs.init(FsOptions::all()).unwrap();
        assert!(got.contains(FsOptions::ASYNC_READ | FsOptions::PARALLEL_DIROPS));
        assert!(got.contains(FsOptions::MAX_PAGES));
        assert!(!got.contains(FsOptions::WRITEBACK_CACHE));
        assert_eq!(
            got.contains(FsOptions::DO_READDIRPLUS),
            policy != CachePolicy::Never
        );
        assert!(!got.contains(FsOptions::READDIRPLUS_AUTO));
        // Nothing the kernel did not offer.
        assert_eq!(
            fs.init(FsOptions::ASYNC_READ).unwrap(),
            FsOptions::ASYNC_READ
        );
    }
}

#[test]
fn read_only_mounts_decline_opens_so_the_kernel_stops_sending_them() {
    let f = fixture();
    for policy in [CachePolicy::Always, CachePolicy::Auto] {
        let fs = puzzlefs_with(&f, FsConfig::read_only_mount(policy));
        let file = lookup(&fs, "small").inode;
        assert_eq!(errno(fs.open(&ctx(), file, 0, 0)), libc::ENOSYS);
        assert_eq!(errno(fs.opendir(&ctx(), ROOT_ID, 0)), libc::ENOSYS);
        let got = fs.init(FsOptions::all()).unwrap();
        assert!(got.contains(FsOptions::ZERO_MESSAGE_OPEN | FsOptions::ZERO_MESSAGE_OPENDIR));
    }
    // Without a data cache the kernel must still ask, to get DIRECT_IO.
    for policy in [CachePolicy::Never, CachePolicy::Metadata] {
        let fs = puzzlefs_with(&f, FsConfig::read_only_mount(policy));
        let file = lookup(&fs, "small").inode;
        assert!(fs.open(&ctx(), file, 0, 0).is_ok());
        assert!(!fs
            .init(FsOptions::all())
            .unwrap()
            .contains(FsOptions::ZERO_MESSAGE_OPEN));
    }
}

fn list(fs: &PuzzleFs, inode: u64, offset: u64, room: usize) -> Vec<(Vec<u8>, u64, u64, u32)> {
    let mut out = Vec::new();
    fs.readdir(&ctx(), inode, 0, 4096, offset, &mut |d: DirEntry| {
        if out.len() == room {
            return Ok(0);
        }
        out.push((d.name.to_vec(), d.ino, d.offset, d.type_));
        Ok(1)
    })
    .unwrap();
    out
}

#[test]
fn readdir_and_readdirplus() {
    let f = fixture();
    let fs = puzzlefs(&f, CachePolicy::Always);
    let all = list(&fs, ROOT_ID, 0, usize::MAX);
    let names: Vec<_> = all.iter().map(|e| e.0.as_slice()).collect();
    assert_eq!(names, [&b"."[..], b"..", b"dir", b"link", b"small"]);
    let root_ino = fs.getattr(&ctx(), ROOT_ID, None).unwrap().0.st_ino;
    assert_eq!((all[0].1, all[1].1), (root_ino, root_ino));
    assert_eq!(all[2].3, u32::from(libc::DT_DIR));
    assert_eq!(all[3].3, u32::from(libc::DT_LNK));
    assert_eq!(all[4].1, lookup(&fs, "small").attr.st_ino);
    // A full buffer stops the listing; its last offset resumes it.
    let first = list(&fs, ROOT_ID, 0, 3);
    let rest = list(&fs, ROOT_ID, first[2].2, usize::MAX);
    assert_eq!([first, rest].concat(), all);
    assert!(list(&fs, ROOT_ID, 5, 10).is_empty());
    let file = lookup(&fs, "small").inode;
    assert_eq!(
        errno(fs.readdir(&ctx(), file, 0, 4096, 0, &mut |_| Ok(1))),
        libc::ENOTDIR
    );
    let mut plus = Vec::new();
    fs.readdirplus(&ctx(), ROOT_ID, 0, 4096, 0, &mut |d, e| {
        plus.push((d.name.to_vec(), e.inode, e.attr.st_ino, d.ino));
        Ok(1)
    })
    .unwrap();
    assert_eq!((plus[0].1, plus[1].1), (0, 0));
    for (n, inode, st_ino, d_ino) in &plus[2..] {
        let e = lookup(&fs, std::str::from_utf8(n).unwrap());
        assert_eq!(
            (*inode, *st_ino, *d_ino),
            (e.inode, e.attr.st_ino, e.attr.st_ino)
        );
    }
}

#[test]
fn xattrs_statfs_access_lseek() {
    let f = fixture();
    let fs = puzzlefs(&f, CachePolicy::Always);
    let c = ctx();
    let small = lookup(&fs, "small").inode;
    assert!(matches!(
        fs.getxattr(&c, small, &name("user.k"), 0),
        Ok(GetxattrReply::Count(5))
    ));
    assert_eq!(
        errno(fs.getxattr(&c, small, &name("user.k"), 2)),
        libc::ERANGE
    );
    assert_eq!(
        errno(fs.getxattr(&c, small, &name("user.no"), 0)),
        libc::ENODATA
    );
    assert!(matches!(
        fs.listxattr(&c, small, 100),
        Ok(ListxattrReply::Names(n)) if n == b"user.k\0"
    ));
    let off = FsConfig {
        xattr: false,
        ..FsConfig::default()
    };
    let no_xattr = PuzzleFs::new(fs.image().clone(), off);
    assert_eq!(
        errno(no_xattr.getxattr(&c, small, &name("user.k"), 0)),
        libc::ENOSYS
    );

    let st = fs.statfs(&c, ROOT_ID).unwrap();
    assert_eq!(st.f_files, fs.image().table().len() as u64);
    assert_eq!(st.f_blocks, 1 + 600_000u64.div_ceil(4096));
    assert_eq!((st.f_namemax, st.f_bfree), (255, 0));

    let user = Context {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };
    assert_eq!(
        errno(fs.access(&user, small, libc::R_OK as u32)),
        libc::EACCES
    );
    fs.access(&c, small, libc::R_OK as u32).unwrap();
    fs.access(&user, ROOT_ID, (libc::R_OK | libc::X_OK) as u32)
        .unwrap();

    let big = lookup(&fs, "dir/big").inode;
    let data = libc::SEEK_DATA as u32;
    assert_eq!(fs.lseek(&c, big, 0, 10, data).unwrap(), 10);
    assert_eq!(
        fs.lseek(&c, big, 0, 10, libc::SEEK_HOLE as u32).unwrap(),
        600_000
    );
    assert_eq!(errno(fs.lseek(&c, big, 0, 600_000, data)), libc::ENXIO);
    assert_eq!(errno(fs.lseek(&c, ROOT_ID, 0, 0, data)), libc::EINVAL);
}

#[test]
fn pushes_follow_the_non_empty_files_of_each_directory_in_name_order() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    for (path, data) in [
        ("d/a", &b"a"[..]),
        ("d/b", b""),
        ("d/c", b"c"),
        ("d/sub/x", b"x"),
        ("d/z", b"z"),
        ("top", b"t"),
    ] {
        fs::write(src.join(path), data).unwrap();
    }
    std::os::unix::fs::symlink("a", src.join("d/l")).unwrap();
    // A second name for `d/a`, listed before it: the first name places the file.
    fs::hard_link(src.join("d/a"), src.join("0")).unwrap();
    let oci = OciDir::create(&tmp.path().join("oci")).unwrap();
    build(&src, &oci, "t", &BuildOptions::default()).unwrap();
    let image = Image::open(&oci, "t", ImageOpen::default()).unwrap();
    let fs = PuzzleFs::new(Arc::new(image), FsConfig::default());
    let id = |p: &str| (lookup(&fs, p).inode - 1) as crate::reader::NodeId;
    let next = super::push::next_files(fs.image().table());
    let after = |p: &str| next[id(p) as usize];
    assert_eq!(after("0"), id("top"));
    assert_eq!(after("d/c"), id("d/z"));
    assert_eq!(after("d/sub/x"), crate::reader::NodeId::MAX);
    assert_eq!(after("d/z"), crate::reader::NodeId::MAX);
    // `d/a` is placed in the root (as `0`); `d/b` is empty and never pushed.
    assert_eq!(after("d/b"), crate::reader::NodeId::MAX);
    assert!(!next.contains(&id("d/b")));
}
