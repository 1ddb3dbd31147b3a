//! Unmount under the guest's feet: the guest keeps node ids (and open handles) of a mount,
//! the runtime unmounts it, and every request on them gets ESTALE; once the same slot serves
//! a different image or directory (its next generation), the old node ids still fail and
//! never reach the new file system's files, though they have the same inode numbers there;
//! the new files are served under the same path. The daemon serves on and exits cleanly.

use virtiofs_frontend::{Answer, Attr, Guest, RunOptions};

use super::{fixtures, mount_metrics, TableDaemon};

const SLOT_SHIFT: u32 = 56;
const GENERATION_SHIFT: u32 = 40;
const INNER: u64 = (1 << GENERATION_SHIFT) - 1;

fn slot(nodeid: u64) -> u64 {
    nodeid >> SLOT_SHIFT
}

fn generation(nodeid: u64) -> u64 {
    (nodeid >> GENERATION_SHIFT) & 0xffff
}

fn ok<T: std::fmt::Debug>(what: &str, a: virtiofs_frontend::Result<Answer<T>>) -> T {
    match a {
        Ok(Ok(v)) => v,
        Ok(Err(errno)) => panic!("{what}: errno {errno}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

fn errno<T: std::fmt::Debug>(what: &str, a: virtiofs_frontend::Result<Answer<T>>) -> i32 {
    match a {
        Ok(Err(errno)) => errno,
        Ok(Ok(v)) => panic!("{what}: succeeded ({v:?}), expected an error"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// What the guest held of the mount before it went.
struct Held {
    file: Attr,
    fh: u64,
    dir: Attr,
    root: Attr,
}

/// Every request on what `held` names gets ESTALE.
fn all_stale(g: &mut Guest, held: &Held, child: &str, when: &str) {
    let e = |what: &str| format!("{when}: {what}");
    assert_eq!(
        errno(&e("GETATTR"), g.getattr(held.file.nodeid)),
        libc::ESTALE
    );
    assert_eq!(
        errno(&e("READ"), g.read(held.file.nodeid, held.fh, 0, 4096)),
        libc::ESTALE
    );
    assert_eq!(
        errno(&e("OPEN"), g.open(held.file.nodeid, false)),
        libc::ESTALE
    );
    assert_eq!(
        errno(&e("LOOKUP"), g.lookup(held.dir.nodeid, child)),
        libc::ESTALE
    );
    assert_eq!(
        errno(&e("GETATTR dir"), g.getattr(held.dir.nodeid)),
        libc::ESTALE
    );
    assert_eq!(errno(&e("OPENDIR"), g.list(held.dir.nodeid)), libc::ESTALE);
    assert_eq!(
        errno(&e("LOOKUP root"), g.lookup(held.root.nodeid, "x")),
        libc::ESTALE
    );
    assert_eq!(
        errno(&e("GETATTR root"), g.getattr(held.root.nodeid)),
        libc::ESTALE
    );
}

/// One round: `at` serves `old` (its `file` and a directory `dir` holding `child`), the
/// guest holds them, `at` is unmounted, then mounted again with `new`.
struct Round<'a> {
    at: &'a str,
    file: &'a str,
    dir: &'a str,
    child: &'a str,
    old_bytes: Vec<u8>,
    new_bytes: Vec<u8>,
    remount: &'a dyn Fn(),
}

fn unmount_under_the_guest(d: &TableDaemon, g: &mut Guest, r: Round<'_>) {
    let path = format!("{}/{}", r.at, r.file);
    let held = Held {
        file: ok("lookup file", g.lookup_path(&path)),
        fh: 0,
        dir: ok("lookup dir", g.lookup_path(&format!("{}/{}", r.at, r.dir))),
        root: ok("lookup root", g.lookup_path(r.at)),
    };
    let held = Held {
        fh: ok("open", g.open(held.file.nodeid, false)),
        ..held
    };
    let got = ok("read", g.read(held.file.nodeid, held.fh, 0, 65536));
    assert_eq!(got, r.old_bytes[..got.len()], "{path} before");
    assert_eq!(held.file.ino, held.file.nodeid, "st_ino is the node id");

    d.must_umount(r.at);
    all_stale(g, &held, r.child, "unmounted");
    // What the guest still names by path is gone from the table's directory.
    let (parent, name) = r.at.rsplit_once('/').unwrap();
    let parent_node = ok("lookup parent", g.lookup_path(parent)).nodeid;
    assert_eq!(
        errno("LOOKUP gone", g.lookup(parent_node, name)),
        libc::ENOENT
    );
    let names = ok("READDIR parent", g.list(parent_node));
    assert!(!names.iter().any(|n| n == name), "{names:?}");
    // Releasing the handle and forgetting the nodes of a gone mount harm nothing.
    assert_eq!(
        errno("RELEASE", g.release(held.file.nodeid, held.fh, false)),
        libc::ESTALE
    );
    g.forget(held.file.nodeid, 1).unwrap();

    (r.remount)();
    all_stale(g, &held, r.child, "remounted");
    let file = ok("lookup new file", g.lookup_path(&path));
    assert_eq!(slot(file.nodeid), slot(held.file.nodeid), "the same slot");
    assert_eq!(
        generation(file.nodeid),
        generation(held.file.nodeid) + 1,
        "its next generation"
    );
    assert_eq!(
        file.nodeid & INNER,
        held.file.nodeid & INNER,
        "the same inode in the new file system: only the generation tells them apart"
    );
    let data = ok("read new", g.read_file(file.nodeid, file.size));
    assert_eq!(data, r.new_bytes, "{path} after the remount");
    assert_ne!(data, r.old_bytes);
    // Still stale, whatever the guest asks again.
    assert_eq!(
        errno("GETATTR again", g.getattr(held.file.nodeid)),
        libc::ESTALE
    );
    g.forget(held.dir.nodeid, 1).unwrap();
    g.forget(held.root.nodeid, 1).unwrap();
    g.forget(file.nodeid, 1).unwrap();

    let m = d.metrics();
    let mount = mount_metrics(&m, r.at);
    assert_eq!(mount["slot"], slot(file.nodeid), "{mount}");
    assert_eq!(mount["generation"], generation(file.nodeid), "{mount}");
}

#[test]
fn unmounted_node_ids_go_stale_and_never_reach_the_next_mount() {
    let fx = fixtures();
    let d = TableDaemon::start(&[]);
    let dirs = tempfile::tempdir().unwrap();
    let (one, two) = (dirs.path().join("one"), dirs.path().join("two"));
    for (dir, text) in [(&one, "first directory\n"), (&two, "second directory\n")] {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("note"), text).unwrap();
        std::fs::write(dir.join("sub/inner"), text).unwrap();
    }
    d.must_mount("/rafs/c1/lowerdir", "rafs", &fx.v1.zstd.target, "");
    d.must_mount("/containers", "passthrough_fs", one.to_str().unwrap(), "");

    let mut o = RunOptions::new(&d.sock);
    o.depth = 1;
    let mut g = Guest::connect(&o).unwrap();
    let v = |b: &super::Built| std::fs::read(b.tree.join("data/blob")).unwrap();
    let v2 = fx.v2.plain.target.clone();
    unmount_under_the_guest(
        &d,
        &mut g,
        Round {
            at: "/rafs/c1/lowerdir",
            file: "data/blob",
            dir: "etc",
            child: "version",
            old_bytes: v(&fx.v1),
            new_bytes: v(&fx.v2),
            remount: &|| d.must_mount("/rafs/c1/lowerdir", "rafs", &v2, ""),
        },
    );
    let two_path = two.to_str().unwrap().to_string();
    unmount_under_the_guest(
        &d,
        &mut g,
        Round {
            at: "/containers",
            file: "note",
            dir: "sub",
            child: "inner",
            old_bytes: b"first directory\n".to_vec(),
            new_bytes: b"second directory\n".to_vec(),
            remount: &|| d.must_mount("/containers", "passthrough_fs", &two_path, ""),
        },
    );
    // The table's root still answers, and the daemon ends cleanly with its VMM.
    ok("GETATTR /", g.getattr(1));
    g.stop().unwrap();
    let mut daemon = d.daemon;
    let status = daemon.wait_exit(crate::harness::DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
}

/// Remounts the guest cannot see coming: one mount point swapped between two images as fast
/// as the API allows, while the guest looks the same file up again and again and reads it
/// through each node id it got. Every READ returns the bytes of the image that node id's
/// generation was mounted with, or ESTALE; never the other image's. Every failed LOOKUP is
/// ENOENT (nothing mounted there at that moment) or ESTALE (the mount went mid-walk).
#[test]
fn reads_racing_remounts_get_their_own_image_or_estale() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const SWAPS: u64 = 300;
    const READ: u32 = 65536;
    let fx = fixtures();
    let d = TableDaemon::start(&[]);
    // Mount number g of the slot (its generation g) serves images[(g - 1) % 2].
    let images = [&fx.v1.zstd, &fx.v2.plain];
    let blob = |b: &super::Built| std::fs::read(b.tree.join("data/blob")).unwrap();
    let want = [blob(&fx.v1), blob(&fx.v2)];
    d.must_mount("/race", "rafs", &images[0].target, "");

    let mut o = RunOptions::new(&d.sock);
    o.depth = 1;
    let mut g = Guest::connect(&o).unwrap();
    let done = AtomicBool::new(false);
    let (mut good, mut stale, mut gone) = (0u64, 0u64, 0u64);
    let mut generations = std::collections::BTreeSet::new();
    std::thread::scope(|scope| {
        let swapper = scope.spawn(|| {
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _done = Done(&done);
            for k in 1..=SWAPS {
                d.must_umount("/race");
                d.must_mount("/race", "rafs", &images[(k % 2) as usize].target, "");
            }
        });
        while !done.load(Ordering::SeqCst) {
            let file = match g.lookup_path("/race/data/blob").unwrap() {
                Ok(a) => a,
                Err(e) if e == libc::ENOENT || e == libc::ESTALE => {
                    gone += 1;
                    continue;
                }
                Err(e) => panic!("LOOKUP: errno {e}"),
            };
            let gen = generation(file.nodeid);
            generations.insert(gen);
            let expected = &want[((gen - 1) % 2) as usize];
            let fh = match g.open(file.nodeid, false).unwrap() {
                Ok(fh) => fh,
                Err(libc::ESTALE) => {
                    stale += 1;
                    continue;
                }
                Err(e) => panic!("OPEN: errno {e}"),
            };
            let mut off = 0u64;
            while off < file.size {
                match g.read(file.nodeid, fh, off, READ).unwrap() {
                    Ok(data) => {
                        let end = (off as usize + data.len()).min(expected.len());
                        assert!(!data.is_empty(), "generation {gen}: empty READ at {off}");
                        assert!(
                            data == expected[off as usize..end],
                            "generation {gen}: READ at {off} returned another image's bytes"
                        );
                        good += 1;
                        off += data.len() as u64;
                    }
                    Err(libc::ESTALE) => {
                        stale += 1;
                        break;
                    }
                    Err(e) => panic!("READ: errno {e}"),
                }
            }
            match g.release(file.nodeid, fh, false).unwrap() {
                Ok(()) | Err(libc::ESTALE) => {}
                Err(e) => panic!("RELEASE: errno {e}"),
            }
            g.forget(file.nodeid, 1).unwrap();
        }
        swapper.join().expect("the swapping client failed");
    });
    eprintln!(
        "{good} good reads, {stale} stale, {gone} lookups found nothing, {} generations seen",
        generations.len()
    );
    assert!(good > 0);
    // Settled: the last mount serves its own image, in the slot's last generation.
    let file = ok("lookup", g.lookup_path("/race/data/blob"));
    assert_eq!(generation(file.nodeid), SWAPS + 1);
    let data = ok("read", g.read_file(file.nodeid, file.size));
    assert_eq!(data, want[(SWAPS % 2) as usize]);
    g.stop().unwrap();
    let status = { d.daemon }.wait_exit(crate::harness::DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
}
