//! `puzzlefs mount` / `umount`: host FUSE mounts of images we and upstream PuzzleFS build,
//! compared attribute by attribute with their source trees. Needs root and /dev/fuse.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{assert_same_tree, corner_case_tree, puzzlefs, puzzlefs_fails, Compare};

fn s(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// Whether a PuzzleFS FUSE mount sits at `mp`.
fn is_mounted(mp: &Path) -> bool {
    let mp = mp.canonicalize().unwrap_or_else(|_| mp.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4).map(Path::new) == Some(mp.as_path()) && l.contains(" - fuse.puzzlefs ")
        })
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount that is always taken down, even when the test fails.
struct Mount {
    mp: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Mount {
    /// `puzzlefs mount -f TARGET MP` as a child process, once the mount is live.
    fn foreground(target: &str, mp: &Path) -> Mount {
        fs::create_dir_all(mp).unwrap();
        let log = mp.with_extension("log");
        let child = Command::new(common::bin("puzzlefs"))
            .args([
                OsStr::new("mount"),
                OsStr::new("-f"),
                OsStr::new(target),
                s(mp),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = Mount {
            mp: mp.to_path_buf(),
            child: Some(child),
            log,
        };
        wait_until("the mount", Duration::from_secs(30), || {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mount exited with {status}: {}",
                    fs::read_to_string(&m.log).unwrap_or_default()
                );
            }
            is_mounted(mp)
        });
        m
    }

    /// A background mount made by `puzzlefs mount TARGET MP` (which must have returned).
    fn background(target: &str, mp: &Path) -> Mount {
        fs::create_dir_all(mp).unwrap();
        let m = Mount {
            mp: mp.to_path_buf(),
            child: None,
            log: PathBuf::new(),
        };
        puzzlefs(&[OsStr::new("mount"), OsStr::new(target), s(mp)]);
        m
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mp) {
            let _ = rustix::mount::unmount(&self.mp, rustix::mount::UnmountFlags::DETACH);
        }
        if let Some(child) = &mut self.child {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The corner-case tree and our plain and compressed images of it, built once.
struct Fixture {
    src: PathBuf,
    plain: String,
    compressed: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // One directory per test process; those of finished runs are removed.
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for e in fs::read_dir(base).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("mount-fixture-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("mount-fixture-{}", std::process::id()));
        let src = dir.join("src");
        corner_case_tree(&src);
        let oci = dir.join("oci");
        let plain = format!("{}:plain", oci.display());
        let compressed = format!("{}:zstd", oci.display());
        puzzlefs(&[OsStr::new("build"), s(&src), OsStr::new(&plain)]);
        puzzlefs(&[
            OsStr::new("build"),
            OsStr::new("-c"),
            s(&src),
            OsStr::new(&compressed),
        ]);
        Fixture {
            src,
            plain,
            compressed,
        }
    })
}

#[test]
fn mounts_show_every_attribute_of_the_source() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    for target in [&fx.plain, &fx.compressed] {
        let mut m = Mount::foreground(target, &tmp.path().join(target.replace(['/', ':'], "_")));
        assert_same_tree(&fx.src, &m.mp, Compare::ALL);
        // SIGTERM unmounts and exits cleanly.
        let child = m.child.as_mut().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{status}");
        assert!(!is_mounted(&m.mp));
    }
}

#[test]
fn every_kind_of_write_fails_with_erofs() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let m = Mount::foreground(&fx.plain, &tmp.path().join("mp"));
    let file = m.path("links/original");
    let erofs = |what: &str, r: io::Result<()>| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    erofs("create", fs::File::create(m.path("new")).map(drop));
    erofs("mkdir", fs::create_dir(m.path("newdir")));
    erofs("unlink", fs::remove_file(&file));
    erofs("rmdir", fs::remove_dir(m.path("data/small")));
    erofs("rename", fs::rename(&file, m.path("renamed")));
    erofs("link", fs::hard_link(&file, m.path("hard")));
    erofs("symlink", std::os::unix::fs::symlink("x", m.path("sym")));
    erofs(
        "chmod",
        fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
    );
    erofs("chown", std::os::unix::fs::chown(&file, Some(1), Some(1)));
    erofs(
        "utimes",
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &file,
            &rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec::default(),
                last_modification: rustix::fs::Timespec::default(),
            },
            rustix::fs::AtFlags::empty(),
        )
        .map_err(io::Error::from),
    );
    erofs("setxattr", xattr::set(&file, "user.x", b"y"));
    erofs(
        "removexattr",
        xattr::remove(m.path("owned/by-1234"), "user.comment"),
    );
    for (what, opts) in [
        ("open O_WRONLY", fs::OpenOptions::new().write(true).clone()),
        (
            "open O_RDWR",
            fs::OpenOptions::new().read(true).write(true).clone(),
        ),
        ("open O_APPEND", fs::OpenOptions::new().append(true).clone()),
    ] {
        erofs(what, opts.open(&file).map(drop));
    }
    erofs(
        "open O_TRUNC",
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file)
            .map(drop),
    );
    let out = Command::new("truncate")
        .args([OsStr::new("-s0"), s(&file)])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "truncate: {out:?}"
    );
    // Nothing changed, and reading still works.
    assert_eq!(fs::read(&file).unwrap(), b"linked contents\n");
}

#[test]
fn statfs_and_the_big_directory() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let m = Mount::foreground(&fx.compressed, &tmp.path().join("mp"));
    let st = rustix::fs::statvfs(&m.mp).unwrap();
    assert_eq!(st.f_namemax, 255);
    assert!(st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY));
    assert_eq!(st.f_bfree, 0);
    // One per inode: hard links are one file.
    let inodes = common::snapshot(&fx.src)
        .iter()
        .filter(|(path, f)| f.link_group.as_ref().is_none_or(|g| g == *path))
        .count();
    assert_eq!(st.f_files, inodes as u64);
    // 3 MiB + 1 MiB + 8 MiB sparse + small files, in 4 KiB blocks.
    assert!(st.f_blocks * st.f_frsize > 12 << 20, "{}", st.f_blocks);
    let mut names: Vec<_> = fs::read_dir(m.path("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let want: Vec<_> = (0..2000)
        .map(|i| std::ffi::OsString::from(format!("entry-{i:05}")))
        .collect();
    assert_eq!(names, want);
    assert_eq!(fs::read(m.path("many/entry-01999")).unwrap(), b"1999\n");
}

#[test]
fn eight_threads_read_big_files_concurrently() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let m = Mount::foreground(&fx.compressed, &tmp.path().join("mp"));
    let files = ["data/big.bin", "sparse", "data/zeros.bin", "links/original"];
    let want: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(fx.src.join(f)).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for t in 0..8usize {
            let (m, want) = (&m, &want);
            scope.spawn(move || {
                for k in 0..files.len() {
                    let i = (t + k) % files.len();
                    let f = fs::File::open(m.path(files[i])).unwrap();
                    // Odd-sized reads at scattered offsets, then the whole file.
                    let len = want[i].len() as u64;
                    let mut buf = vec![0u8; 70_001];
                    for j in 0..16u64 {
                        let off = (j * 7_919 * 1_024 + t as u64 * 4_099) % len.max(1);
                        let n = f.read_at(&mut buf, off).unwrap();
                        let end = (off as usize + n).min(want[i].len());
                        assert_eq!(&buf[..n], &want[i][off as usize..end], "{}", files[i]);
                    }
                    let mut all = Vec::new();
                    (&f).seek(SeekFrom::Start(0)).unwrap();
                    (&f).read_to_end(&mut all).unwrap();
                    assert!(all == want[i], "{} differs", files[i]);
                }
            });
        }
    });
}

#[test]
fn a_corrupt_blob_fails_only_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    fs::write(src.join("a-small"), b"before\n").unwrap();
    fs::write(src.join("b-big"), &big).unwrap();
    fs::write(src.join("c-small"), b"after\n").unwrap();
    let oci = tmp.path().join("oci");
    let target = format!("{}:t", oci.display());
    puzzlefs(&[OsStr::new("build"), s(&src), OsStr::new(&target)]);
    // Damage a chunk in the middle of b-big, which holds nothing of the other files.
    let dir = puzzlefs_virtiofsd::oci::OciDir::open(&oci).unwrap();
    let image = puzzlefs_virtiofsd::reader::Image::open(&dir, "t", Default::default()).unwrap();
    let table = image.table();
    let id = table.resolve(b"/b-big", false).unwrap();
    let puzzlefs_virtiofsd::reader::NodeData::File(_) = table.node(id).data else {
        panic!("b-big is a file")
    };
    let extents = table.extents(id);
    assert!(extents.len() >= 3, "b-big spans {} chunks", extents.len());
    let middle = extents[extents.len() / 2];
    let chunk = table.chunks()[middle.chunk as usize];
    let path = dir.blob_path(&chunk.file());
    let mut bytes = fs::read(&path).unwrap();
    bytes[chunk.pack.map_or(0, |p| p.stored_offset) as usize + 10] ^= 1;
    fs::write(&path, bytes).unwrap();

    let m = Mount::foreground(&target, &tmp.path().join("mp"));
    for _ in 0..2 {
        let e = fs::read(m.path("b-big")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    }
    let f = fs::File::open(m.path("b-big")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, big[..4096]);
    assert_eq!(fs::read(m.path("a-small")).unwrap(), b"before\n");
    assert_eq!(fs::read(m.path("c-small")).unwrap(), b"after\n");
    let log = fs::read_to_string(&m.log).unwrap();
    assert_eq!(log.matches("corrupt").count(), 1, "logged once: {log}");
}

/// Whether any process has `needle` as an argument.
fn process_with_arg(needle: &Path) -> bool {
    fs::read_dir("/proc").unwrap().any(|e| {
        let cmdline = fs::read(e.unwrap().path().join("cmdline")).unwrap_or_default();
        cmdline
            .split(|&b| b == 0)
            .any(|a| a == needle.as_os_str().as_encoded_bytes())
    })
}

#[test]
fn background_mount_and_umount() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("mp");
    let m = Mount::background(&fx.compressed, &mp);
    // Live as soon as the command returns.
    assert!(is_mounted(&mp));
    assert_eq!(
        fs::read(m.path("data/big.bin")).unwrap(),
        fs::read(fx.src.join("data/big.bin")).unwrap()
    );
    assert!(process_with_arg(&mp));
    puzzlefs(&[OsStr::new("umount"), s(&mp)]);
    assert!(!is_mounted(&mp));
    wait_until("the server to exit", Duration::from_secs(10), || {
        !process_with_arg(&mp)
    });
    let err = puzzlefs_fails(&[OsStr::new("umount"), s(&mp)]);
    assert!(
        err.contains("not mounted") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn bad_images_fail_with_one_line_and_mount_nothing() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let mp = tmp.path().join("mp");
    fs::create_dir_all(&mp).unwrap();
    let not_image = format!("{}:t", fx.src.display());
    let wrong_digest = format!("sha256:{}", "0".repeat(64));
    let missing = tmp.path().join("missing");
    let file = fx.src.join("empty");
    let cases: [(Vec<&OsStr>, &str); 4] = [
        (
            vec![OsStr::new(&not_image), s(&mp)],
            "not an OCI image layout",
        ),
        (
            vec![
                OsStr::new("--digest"),
                OsStr::new(&wrong_digest),
                OsStr::new(&fx.plain),
                s(&mp),
            ],
            "was required",
        ),
        (vec![OsStr::new(&fx.plain), s(&missing)], "cannot mount on"),
        (vec![OsStr::new(&fx.plain), s(&file)], "not a directory"),
    ];
    for (args, expect) in cases {
        for fg in [false, true] {
            let mut all = vec![OsStr::new("mount")];
            if fg {
                all.push(OsStr::new("-f"));
            }
            all.extend(&args);
            let err = puzzlefs_fails(&all);
            assert!(
                err.contains(expect) && err.lines().count() == 1,
                "{all:?}: {err}"
            );
            assert!(!is_mounted(&mp));
        }
    }
}

#[test]
fn upstream_images_mount_with_what_upstream_stores() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let oci = tmp.path().join("oci");
    for (tag, flags) in [("plain", &[][..]), ("zstd", &["-c"][..])] {
        let target = format!("{}:{tag}", oci.display());
        let mut args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
        args.extend([s(&fx.src), OsStr::new(&target)]);
        common::upstream_build(&args);
        let m = Mount::foreground(&target, &tmp.path().join(tag));
        // Upstream records no mtimes; everything else it keeps must read back unchanged.
        let cmp = Compare {
            mtime: false,
            dir_mtime: false,
            ..Compare::ALL
        };
        assert_same_tree(&fx.src, &m.mp, cmp);
    }
}

#[test]
fn upstream_layered_images_mount_the_upper_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let build = |extra: &[&str], tag: &str| {
        let target = format!("{}:{tag}", oci.display());
        let mut args: Vec<&OsStr> = extra.iter().map(OsStr::new).collect();
        args.extend([s(&src), OsStr::new(&target)]);
        common::upstream_build(&args);
    };
    build(&[], "v1");
    // Deletions (whiteouts), a replaced file, a new directory: the upper layer has to win.
    fs::remove_file(src.join("links/rel")).unwrap();
    fs::remove_dir_all(src.join("data/small")).unwrap();
    fs::write(src.join("data/big.bin"), b"replaced").unwrap();
    fs::create_dir_all(src.join("new/dir")).unwrap();
    fs::write(src.join("new/dir/file"), b"new").unwrap();
    build(&["--base-layer", "v1"], "v2");
    let m = Mount::foreground(&format!("{}:v2", oci.display()), &tmp.path().join("mp"));
    let cmp = Compare {
        mtime: false,
        dir_mtime: false,
        ..Compare::ALL
    };
    assert_same_tree(&src, &m.mp, cmp);
}

#[test]
fn mount_options_are_read_only_and_named() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let m = Mount::foreground(&fx.plain, &tmp.path().join("mp"));
    let mp = m.mp.canonicalize().unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == mp.to_str())
        .unwrap();
    assert!(line.contains(" ro,"), "{line}");
    assert!(line.contains(" - fuse.puzzlefs puzzlefs "), "{line}");
    assert!(line.contains("default_permissions"), "{line}");
    // Opening for reading with O_NOATIME still works on a read-only mount.
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(m.path("empty"))
        .unwrap();
}
