//! The table driven directly, as a transport would: real images and a real pass-through
//! directory mounted, unmounted and remounted under one tree.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, FsOptions, GetxattrReply, ListxattrReply, ZeroCopyWriter,
};
use fuse_backend_rs::file_buf::FileVolatileSlice;
use fuse_backend_rs::file_traits::FileReadWriteVolatile;

use super::*;
use crate::builder::{build, BuildOptions};
use crate::fs::CachePolicy;
use crate::oci::OciDir;
use crate::reader::FileChunkCache;

/// A reply buffer, like a transport's.
#[derive(Default)]
struct Sink(Vec<u8>);

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ZeroCopyWriter for Sink {
    fn write_from(
        &mut self,
        f: &mut dyn FileReadWriteVolatile,
        count: usize,
        off: u64,
    ) -> io::Result<usize> {
        let mut buf = vec![0; count];
        // SAFETY: `buf` outlives the slice and nothing else refers to it meanwhile.
        let slice = unsafe { FileVolatileSlice::from_mut_slice(&mut buf) };
        let n = f.read_at_volatile(slice, off)?;
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn available_bytes(&self) -> usize {
        usize::MAX
    }
}

struct Setup {
    tmp: tempfile::TempDir,
    table: MountTable,
    mounter: Mounter,
}

impl Setup {
    fn oci(&self) -> std::path::PathBuf {
        self.tmp.path().join("oci")
    }

    fn share(&self) -> std::path::PathBuf {
        self.tmp.path().join("share")
    }

    fn mount(&self, at: &str, fs_type: &str, source: &str) -> Result<SlotId, MountError> {
        let spec = MountSpec::parse(fs_type, source, "")?;
        let fs = self.mounter.open(&spec, spec.host_dir())?;
        self.table.mount(at, spec.label(), fs, Vec::new())
    }

    fn image_source(&self, tag: &str) -> String {
        format!("{}:{tag}", self.oci().display())
    }
}

fn content(i: u32) -> Vec<u8> {
    (0..300_000u32)
        .map(|n| (n.wrapping_mul(2_654_435_761).wrapping_add(i) >> 11) as u8)
        .collect()
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let oci = OciDir::create(&tmp.path().join("oci")).unwrap();
    for (tag, n) in [("a", 1u32), ("b", 2)] {
        let src = tmp.path().join(format!("src-{tag}"));
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/name"), tag).unwrap();
        fs::write(src.join("data"), content(n)).unwrap();
        build(&src, &oci, tag, &BuildOptions::default()).unwrap();
    }
    fs::create_dir_all(tmp.path().join("share/sub")).unwrap();
    fs::write(tmp.path().join("share/sub/host-file"), b"from the host").unwrap();
    let store = Arc::new(FileChunkCache::new(8 << 20, None).unwrap());
    let defaults = MountDefaults {
        cache: CachePolicy::Auto,
        xattr: false,
        allow_direct_io: false,
    };
    Setup {
        table: MountTable::new(),
        mounter: Mounter::new(store, defaults),
        tmp,
    }
}

fn ctx() -> Context {
    Context::new()
}

fn name(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("succeeded"),
        Err(e) => e.raw_os_error().unwrap(),
    }
}

fn walk(t: &MountTable, path: &str) -> io::Result<Entry> {
    let mut e = Entry {
        inode: 1,
        ..Entry::default()
    };
    for part in path.split('/').filter(|p| !p.is_empty()) {
        e = t.lookup(&ctx(), e.inode, &name(part))?;
    }
    Ok(e)
}

fn read_all(t: &MountTable, ino: u64, size: u64) -> Vec<u8> {
    let (handle, _, _) = t.open(&ctx(), ino, libc::O_RDONLY as u32, 0).unwrap();
    let handle = handle.unwrap_or(0);
    let mut out = Sink::default();
    let mut offset = 0;
    while offset < size {
        let n = t
            .read(&ctx(), ino, handle, &mut out, 128 << 10, offset, None, 0)
            .unwrap();
        assert!(n > 0);
        offset += n as u64;
    }
    t.release(&ctx(), ino, 0, handle, false, false, None)
        .unwrap();
    out.0
}

fn opendir(t: &MountTable, dir: u64) -> u64 {
    t.opendir(&ctx(), dir, 0).unwrap().0.unwrap_or(0)
}

fn names(t: &MountTable, dir: u64) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let handle = opendir(t, dir);
    t.readdirplus(
        &ctx(),
        dir,
        handle,
        4096,
        0,
        &mut |d: DirEntry, e: Entry| {
            assert!(
                d.name == b"." || d.name == b".." || d.ino == e.inode,
                "d_ino is the inode"
            );
            out.push((String::from_utf8_lossy(d.name).into_owned(), e.inode));
            Ok(1)
        },
    )
    .unwrap();
    out
}

#[test]
fn images_and_a_directory_under_one_tree() {
    let s = setup();
    let opts = s.table.init(FsOptions::all()).unwrap();
    assert!(
        !opts.contains(FsOptions::WRITEBACK_CACHE) && !opts.contains(FsOptions::ZERO_MESSAGE_OPEN)
    );
    assert!(opts.contains(FsOptions::DO_READDIRPLUS));
    let share = s.share();
    let slot_c = s
        .mount("/containers", "passthrough_fs", share.to_str().unwrap())
        .unwrap();
    let slot_a = s
        .mount("/rafs/c1/lowerdir", "rafs", &s.image_source("a"))
        .unwrap();
    let slot_b = s
        .mount("/rafs/c2/lowerdir", "puzzlefs", &s.image_source("b"))
        .unwrap();
    assert_eq!((slot_c.index, slot_a.index, slot_b.index), (1, 2, 3));

    let root = names(&s.table, 1);
    let root_names: Vec<&str> = root.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(root_names, [".", "..", "containers", "rafs"]);

    for (tag, n) in [("c1", 1), ("c2", 2)] {
        let lower = walk(&s.table, &format!("rafs/{tag}/lowerdir")).unwrap();
        assert_eq!(lower.attr.st_mode & libc::S_IFMT, libc::S_IFDIR);
        assert_eq!(lower.entry_timeout, PSEUDO_TIMEOUT);
        let data = walk(&s.table, &format!("rafs/{tag}/lowerdir/data")).unwrap();
        assert_eq!(data.attr.st_ino, data.inode, "st_ino is the table's number");
        assert_eq!(
            read_all(&s.table, data.inode, data.attr.st_size as u64),
            content(n)
        );
        let (st, _) = s.table.getattr(&ctx(), data.inode, None).unwrap();
        assert_eq!(st.st_ino, data.inode);
        // `..` of a mount's root is the table directory holding it.
        let up = s.table.lookup(&ctx(), lower.inode, &name("..")).unwrap();
        assert_eq!(
            up.inode,
            walk(&s.table, &format!("rafs/{tag}")).unwrap().inode
        );
    }
    let a = walk(&s.table, "rafs/c1/lowerdir/data").unwrap();
    let b = walk(&s.table, "rafs/c2/lowerdir/data").unwrap();
    assert_ne!(a.inode, b.inode, "two images never share inode numbers");
    assert_eq!(a.inode >> 56, 2);
    assert_eq!(b.inode >> 56, 3);

    // The pass-through is writable and reaches the host.
    let sub = walk(&s.table, "containers/sub").unwrap();
    let made = s
        .table
        .mkdir(&ctx(), sub.inode, &name("made-by-guest"), 0o755, 0)
        .unwrap();
    assert_eq!(made.inode >> 56, 1);
    assert!(share.join("sub/made-by-guest").is_dir());
    let host = walk(&s.table, "containers/sub/host-file").unwrap();
    assert_eq!(read_all(&s.table, host.inode, 13), b"from the host");

    // Images and the table's directories refuse writes; nothing crosses mounts.
    let etc = walk(&s.table, "rafs/c1/lowerdir/etc").unwrap();
    assert_eq!(
        errno(s.table.mkdir(&ctx(), etc.inode, &name("x"), 0o755, 0)),
        libc::EROFS
    );
    assert_eq!(
        errno(s.table.mkdir(&ctx(), 1, &name("x"), 0o755, 0)),
        libc::EROFS
    );
    assert_eq!(
        errno(s.table.rename(
            &ctx(),
            sub.inode,
            &name("host-file"),
            etc.inode,
            &name("y"),
            0
        )),
        libc::EXDEV
    );
    assert_eq!(
        errno(s.table.link(&ctx(), host.inode, 1, &name("y"))),
        libc::EROFS
    );

    let m = s.table.metrics(Default::default());
    assert_eq!((m.mounts_total, m.umounts_total, m.mounts.len()), (3, 0, 3));
    let c1 = m
        .mounts
        .iter()
        .find(|x| x.mountpoint == "/rafs/c1/lowerdir")
        .unwrap();
    assert_eq!(c1.bytes_read, content(1).len() as u64);
    let image = c1.image.as_ref().unwrap();
    assert!(image.chunk_loads > 0 && image.digest_failures == 0);
    assert!(c1.ops.iter().any(|o| o.op == Op::Read && o.requests > 0));
    assert!(m.pseudo.ops.iter().any(|o| o.op == Op::Lookup));
}

#[test]
fn unmounted_inodes_go_stale_and_never_reach_the_next_mount() {
    let s = setup();
    s.table.init(FsOptions::all()).unwrap();
    let first = s
        .mount("/rafs/c1/lowerdir", "rafs", &s.image_source("a"))
        .unwrap();
    let old = walk(&s.table, "rafs/c1/lowerdir/data").unwrap();
    let old_root = walk(&s.table, "rafs/c1/lowerdir").unwrap();
    s.table.umount("/rafs/c1/lowerdir").unwrap();
    assert_eq!(
        errno(s.table.getattr(&ctx(), old.inode, None)),
        libc::ESTALE
    );
    assert_eq!(errno(walk(&s.table, "rafs/c1/lowerdir")), libc::ENOENT);
    // The same slot, the next generation: the old numbers stay stale.
    let second = s
        .mount("/rafs/c1/lowerdir", "rafs", &s.image_source("b"))
        .unwrap();
    assert_eq!(second.index, first.index);
    assert_eq!(second.generation, first.generation + 1);
    assert_eq!(
        errno(s.table.getattr(&ctx(), old.inode, None)),
        libc::ESTALE
    );
    assert_eq!(
        errno(s.table.lookup(&ctx(), old_root.inode, &name("data"))),
        libc::ESTALE
    );
    let mut out = Sink::default();
    let r = s
        .table
        .read(&ctx(), old.inode, 0, &mut out, 4096, 0, None, 0);
    assert_eq!(errno(r), libc::ESTALE);
    let new = walk(&s.table, "rafs/c1/lowerdir/data").unwrap();
    assert_eq!(
        read_all(&s.table, new.inode, new.attr.st_size as u64),
        content(2)
    );
    // Numbers never handed out.
    assert_eq!(errno(s.table.getattr(&ctx(), 99, None)), libc::ESTALE);
    assert_eq!(errno(s.table.getattr(&ctx(), 0, None)), libc::ENOENT);
    assert_eq!(
        errno(s.table.getattr(&ctx(), 7u64 << 56 | 1 << 40 | 1, None)),
        libc::ESTALE
    );
    s.table.forget(&ctx(), old.inode, 1);
    s.table
        .batch_forget(&ctx(), vec![(old.inode, 1), (new.inode, 1), (12345, 1)]);
}

#[test]
fn bad_and_conflicting_requests_change_nothing() {
    let s = setup();
    s.mount("/rafs/c1/lowerdir", "rafs", &s.image_source("a"))
        .unwrap();
    let before = s.table.mounts();
    let share = s.share();
    let share = share.to_str().unwrap();
    for (at, fs_type, source, class) in [
        (
            "/rafs/c1/lowerdir",
            "rafs",
            s.image_source("b"),
            ErrorClass::Conflict,
        ),
        (
            "/rafs/c1/lowerdir/x",
            "passthrough_fs",
            share.to_string(),
            ErrorClass::Conflict,
        ),
        (
            "/rafs",
            "passthrough_fs",
            share.to_string(),
            ErrorClass::Conflict,
        ),
        (
            "relative",
            "passthrough_fs",
            share.to_string(),
            ErrorClass::BadRequest,
        ),
        (
            "/a/../b",
            "passthrough_fs",
            share.to_string(),
            ErrorClass::BadRequest,
        ),
        ("/x", "ext4", share.to_string(), ErrorClass::BadRequest),
        (
            "/x",
            "rafs",
            s.image_source("nosuchtag"),
            ErrorClass::BadRequest,
        ),
        ("/x", "rafs", format!("{share}:a"), ErrorClass::BadRequest),
        (
            "/x",
            "passthrough_fs",
            "/nonexistent/dir".to_string(),
            ErrorClass::BadRequest,
        ),
    ] {
        let e = s.mount(at, fs_type, &source).unwrap_err();
        assert_eq!(e.class(), class, "{at} {fs_type} {source}: {e}");
    }
    assert!(matches!(
        s.table.umount("/nothing"),
        Err(MountError::NotMounted(_))
    ));
    assert!(matches!(
        s.table.umount("/rafs/c1"),
        Err(MountError::NotMounted(_))
    ));
    assert_eq!(s.table.mounts(), before);
    let m = s.table.metrics(Default::default());
    assert_eq!(m.mounts_total, 1);
    assert!(m.mount_failures_total >= 4, "{}", m.mount_failures_total);
}

#[test]
fn an_image_refused_by_its_pin_is_a_bad_request() {
    let s = setup();
    let spec = MountSpec::parse(
        "rafs",
        &s.image_source("a"),
        &format!(r#"{{"digest":"sha256:{}"}}"#, "0".repeat(64)),
    )
    .unwrap();
    let e = s.mounter.open(&spec, spec.host_dir()).err().unwrap();
    assert_eq!(e.class(), ErrorClass::BadRequest);
    assert!(e.to_string().contains("manifest digest"), "{e}");
}

/// A sandboxed daemon reaches each source through `/proc/self/fd/N`: its refusals still
/// name the directory the request named (the message goes to Kata's log).
#[test]
fn image_errors_name_the_source_not_the_path_it_was_reached_by() {
    let s = setup();
    let via = s.tmp.path().join("via-oci");
    std::os::unix::fs::symlink(s.oci(), &via).unwrap();
    let missing = format!("{}@sha256:{}", s.oci().display(), "0".repeat(64));
    let spec = MountSpec::parse("rafs", &missing, "").unwrap();
    let e = s.mounter.open(&spec, &via).err().unwrap().to_string();
    assert!(e.contains(&s.oci().display().to_string()), "{e}");
    assert!(!e.contains("via-oci"), "{e}");

    let via = s.tmp.path().join("via-share");
    std::os::unix::fs::symlink(s.share(), &via).unwrap();
    let spec = MountSpec::parse("rafs", &format!("{}:t", s.share().display()), "").unwrap();
    let e = s.mounter.open(&spec, &via).err().unwrap();
    assert_eq!(e.class(), ErrorClass::BadRequest);
    let e = e.to_string();
    assert!(e.contains(&s.share().display().to_string()), "{e}");
    assert!(!e.contains("via-share"), "{e}");
}

#[test]
fn every_slot_can_be_used_and_the_next_mount_is_refused() {
    let s = setup();
    let source = s.image_source("a");
    for i in 0..MAX_MOUNTS {
        s.mount(&format!("/m/{i}"), "rafs", &source).unwrap();
    }
    let e = s.mount("/m/last", "rafs", &source).unwrap_err();
    assert!(matches!(e, MountError::NoFreeSlot(255)), "{e}");
    let last = walk(&s.table, &format!("m/{}/data", MAX_MOUNTS - 1)).unwrap();
    assert_eq!(last.inode >> 56, 255);
    assert_eq!(
        read_all(&s.table, last.inode, last.attr.st_size as u64),
        content(1)
    );
    s.table.umount("/m/7").unwrap();
    assert_eq!(s.mount("/m/again", "rafs", &source).unwrap().index, 8);
}

#[test]
fn readdir_numbers_names_as_lookups_do() {
    let s = setup();
    let share = s.share();
    s.mount("/containers", "passthrough_fs", share.to_str().unwrap())
        .unwrap();
    s.mount("/img", "rafs", &s.image_source("a")).unwrap();
    for dir in ["containers", "img"] {
        let d = walk(&s.table, dir).unwrap();
        let mut seen = Vec::new();
        let handle = opendir(&s.table, d.inode);
        s.table
            .readdir(&ctx(), d.inode, handle, 4096, 0, &mut |e: DirEntry| {
                seen.push((String::from_utf8_lossy(e.name).into_owned(), e.ino));
                Ok(1)
            })
            .unwrap();
        let real: Vec<_> = seen.iter().filter(|(n, _)| n != "." && n != "..").collect();
        assert!(!real.is_empty(), "{dir}");
        for (n, ino) in real {
            let e = walk(&s.table, &format!("{dir}/{n}")).unwrap();
            assert_eq!(*ino, e.attr.st_ino, "{dir}/{n}");
        }
    }
}

#[test]
fn a_pass_through_root_has_no_parent_on_the_host() {
    let s = setup();
    let share = s.share();
    s.mount("/containers", "passthrough_fs", share.to_str().unwrap())
        .unwrap();
    let root = walk(&s.table, "containers").unwrap();
    let up = s.table.lookup(&ctx(), root.inode, &name("..")).unwrap();
    assert_eq!(
        up.inode, 1,
        "the table's root, not the host's parent directory"
    );
    assert!(Path::new(&s.tmp.path().join("oci")).exists());
}

#[test]
fn a_pass_through_keeps_the_guests_trusted_xattrs_in_the_user_namespace() {
    let s = setup();
    let share = s.share();
    let mounter = Mounter::new(
        Arc::new(FileChunkCache::new(1 << 20, None).unwrap()),
        MountDefaults {
            cache: CachePolicy::Auto,
            xattr: true,
            allow_direct_io: false,
        },
    );
    let spec = MountSpec::parse("passthrough_fs", share.to_str().unwrap(), "").unwrap();
    let fs = mounter.open(&spec, spec.host_dir()).unwrap();
    s.table
        .mount("/containers", spec.label(), fs, Vec::new())
        .unwrap();
    let sub = walk(&s.table, "containers/sub").unwrap();
    s.table
        .setxattr(&ctx(), sub.inode, c"trusted.overlay.opaque", b"y", 0)
        .unwrap();
    xattr::set(share.join("sub"), "user.virtiofs.stray", b"z").unwrap();
    xattr::set(share.join("sub"), "user.plain", b"p").unwrap();
    let host = xattr::get(share.join("sub"), "user.virtiofs.trusted.overlay.opaque").unwrap();
    assert_eq!(host.as_deref(), Some(&b"y"[..]));
    let listed = match s.table.listxattr(&ctx(), sub.inode, 4096).unwrap() {
        ListxattrReply::Names(n) => n,
        ListxattrReply::Count(_) => panic!("asked for names"),
    };
    let mut names: Vec<&[u8]> = listed
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    assert_eq!(names, [&b"trusted.overlay.opaque"[..], b"user.plain"]);
    match s.table.listxattr(&ctx(), sub.inode, 0).unwrap() {
        ListxattrReply::Count(n) => assert_eq!(n as usize, listed.len()),
        ListxattrReply::Names(_) => panic!("asked for the size"),
    }
    assert_eq!(errno(s.table.listxattr(&ctx(), sub.inode, 5)), libc::ERANGE);
    match s
        .table
        .getxattr(&ctx(), sub.inode, c"trusted.overlay.opaque", 16)
        .unwrap()
    {
        GetxattrReply::Value(v) => assert_eq!(v, b"y"),
        GetxattrReply::Count(_) => panic!("asked for the value"),
    }
    s.table
        .removexattr(&ctx(), sub.inode, c"trusted.overlay.opaque")
        .unwrap();
    assert_eq!(
        xattr::get(share.join("sub"), "user.virtiofs.trusted.overlay.opaque").unwrap(),
        None
    );
}

#[test]
fn mounts_of_one_image_share_it_and_outlive_each_other() {
    use std::os::fd::{AsRawFd, OwnedFd};
    let s = setup();
    let source = s.image_source("a");
    let spec = MountSpec::parse("rafs", &source, "").unwrap();
    // Each mount reaches the layout through a descriptor of its own, as in the sandbox.
    let mount = |at: &str| {
        let fd: OwnedFd = std::fs::File::open(s.oci()).unwrap().into();
        let via = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let fs = s.mounter.open(&spec, &via).unwrap();
        s.table.mount(at, spec.label(), fs, vec![fd]).unwrap();
    };
    mount("/x");
    mount("/y");
    assert_eq!(s.mounter.images_open(), 1, "one inode table for both");
    let x = walk(&s.table, "x/data").unwrap();
    assert_eq!(
        read_all(&s.table, x.inode, x.attr.st_size as u64),
        content(1)
    );
    // The first mount goes, and its descriptor with it: the second still reads.
    s.table.umount("/x").unwrap();
    let y = walk(&s.table, "y/data").unwrap();
    assert_ne!(x.inode, y.inode, "each mount numbers its own inodes");
    assert_eq!(
        read_all(&s.table, y.inode, y.attr.st_size as u64),
        content(1)
    );
    s.table.umount("/y").unwrap();
    assert_eq!(s.mounter.images_open(), 0, "gone with its last mount");
    // Another manifest, a pin, a cache mode: not the same opened image.
    mount("/x");
    let pinned = MountSpec::parse("rafs", &s.image_source("b"), "").unwrap();
    let fs = s.mounter.open(&pinned, pinned.host_dir()).unwrap();
    s.table.mount("/z", pinned.label(), fs, Vec::new()).unwrap();
    let never = MountSpec::parse("rafs", &source, r#"{"cache":"never"}"#).unwrap();
    let fs = s.mounter.open(&never, never.host_dir()).unwrap();
    s.table.mount("/w", never.label(), fs, Vec::new()).unwrap();
    assert_eq!(s.mounter.images_open(), 3);
}

/// `spec` opened again for a restore, as a serving process would.
fn reopen(
    s: &Setup,
    [fs_type, source, config]: &[String; 3],
    manifest: Option<crate::format::Digest>,
) -> Result<Reopened, MountError> {
    let mut spec = MountSpec::parse(fs_type, source, config)?;
    if let (MountSpec::Image(image), Some(m)) = (&mut spec, manifest) {
        image.image = ImageRef::Digest(m);
    }
    Ok(Reopened {
        label: spec.label(),
        fs: s.mounter.open(&spec, spec.host_dir())?,
        keep: Vec::new(),
        stable_inodes: !matches!(spec, MountSpec::Passthrough(_)),
    })
}

/// A table rebuilt from its journal (as a fresh serving process does after a crash) answers
/// for every inode number the old one handed out: the table's directories and the images'
/// files are the same numbers with the same bytes; a pass-through comes back in a new
/// generation (its numbers depend on lookup order), so its old numbers are stale, never
/// another file; what was unmounted stays stale. An image whose tag moved meanwhile comes
/// back as it was mounted (by its manifest); a slot free when a table was rebuilt never
/// hands out its old numbers again (a dead process may have used them unheard).
#[test]
fn a_table_rebuilt_from_its_journal_keeps_every_image_inode() {
    let s = setup();
    s.table.init(FsOptions::all()).unwrap();
    let mut journal = Journal::new();
    let share = s.share();
    let mount = |journal: &mut Journal, at: &str, fs_type: &str, source: &str| {
        let spec = MountSpec::parse(fs_type, source, "").unwrap();
        let fs = s.mounter.open(&spec, spec.host_dir()).unwrap();
        let manifest = fs.manifest();
        let slot = s.table.mount(at, spec.label(), fs, Vec::new()).unwrap();
        let recorded = [fs_type.into(), source.into(), String::new()];
        journal.mounted(at, slot, recorded, manifest);
    };
    mount(
        &mut journal,
        "/containers",
        "passthrough_fs",
        share.to_str().unwrap(),
    );
    mount(
        &mut journal,
        "/rafs/c1/lowerdir",
        "rafs",
        &s.image_source("a"),
    );
    mount(
        &mut journal,
        "/rafs/c2/lowerdir",
        "puzzlefs",
        &s.image_source("b"),
    );
    let gone = walk(&s.table, "/rafs/c1/lowerdir/etc/name").unwrap().inode;
    s.table.umount("/rafs/c1/lowerdir").unwrap();
    journal.unmounted("/rafs/c1/lowerdir");
    mount(
        &mut journal,
        "/rafs/c3/lowerdir",
        "rafs",
        &s.image_source("a"),
    );
    let kept = [
        "/rafs",
        "/rafs/c1",
        "/rafs/c3",
        "/rafs/c2/lowerdir",
        "/rafs/c2/lowerdir/etc/name",
        "/rafs/c3/lowerdir/data",
    ];
    let before: Vec<u64> = kept
        .iter()
        .map(|p| walk(&s.table, p).unwrap().inode)
        .collect();
    let host_file = walk(&s.table, "/containers/sub/host-file").unwrap().inode;
    // The tag c3's image was mounted by now names another image.
    let moved = s.tmp.path().join("src-moved");
    fs::create_dir_all(&moved).unwrap();
    fs::write(moved.join("data"), content(9)).unwrap();
    build(
        &moved,
        &OciDir::open(&s.oci()).unwrap(),
        "a",
        &BuildOptions::default(),
    )
    .unwrap();

    let again = MountTable::new();
    again.init(FsOptions::all()).unwrap();
    let restored = again
        .restore(&journal, |spec, m| reopen(&s, spec, m))
        .unwrap();
    assert!(restored.lost.is_empty(), "{:?}", restored.lost);
    assert_eq!(restored.renumbered.len(), 1, "{:?}", restored.renumbered);
    let after: Vec<u64> = kept
        .iter()
        .map(|p| walk(&again, p).unwrap().inode)
        .collect();
    assert_eq!(before, after);
    let data = walk(&again, "/rafs/c3/lowerdir/data").unwrap();
    assert_eq!(
        read_all(&again, data.inode, data.attr.st_size as u64),
        content(1)
    );
    // The guest's old numbers: an image file answers as before, the unmounted one and the
    // pass-through's are stale.
    assert!(again.getattr(&ctx(), before[4], None).is_ok());
    assert_eq!(errno(again.getattr(&ctx(), gone, None)), libc::ESTALE);
    assert_eq!(errno(again.getattr(&ctx(), host_file, None)), libc::ESTALE);
    // Looked up again, the pass-through serves its files.
    let fresh = walk(&again, "/containers/sub/host-file").unwrap();
    assert_ne!(fresh.inode, host_file);
    // A second restore from the renumbered journal moves the pass-through on again, past
    // the numbers the first restore handed out.
    for (at, slot) in &restored.renumbered {
        journal.renumber(at, *slot);
    }
    let third = MountTable::new();
    journal.restored();
    let again_again = third
        .restore(&journal, |spec, m| reopen(&s, spec, m))
        .unwrap();
    assert_eq!(
        again_again.renumbered[0].1.generation,
        restored.renumbered[0].1.generation + 1
    );
    assert_eq!(
        errno(third.getattr(&ctx(), fresh.inode, None)),
        libc::ESTALE
    );
    assert_eq!(
        walk(&third, "/rafs/c3/lowerdir/data").unwrap().inode,
        data.inode
    );
    // Slot 4 was free at the rebuild: a mount there skips the generation a fresh table would
    // give, which the process that died may have handed out unheard.
    let b = MountSpec::parse("rafs", &s.image_source("b"), "").unwrap();
    let fs = s.mounter.open(&b, b.host_dir()).unwrap();
    let slot = third
        .mount("/rafs/c4/lowerdir", b.label(), fs, Vec::new())
        .unwrap();
    assert_eq!((slot.index, slot.generation), (4, 2));
    // Restoring into a table in use is refused.
    assert!(again.restore(&journal, |_, _| unreachable!()).is_err());
}
