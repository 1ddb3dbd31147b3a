//! A shared directory served read-write (the default for `--shared-dir`, with the default
//! sandbox and seccomp filter), written by a real guest: every kind of change a container
//! makes (create, write, append, rename over files and across directories, chmod with setuid,
//! setgid and sticky bits, chown, hard and symbolic links, truncate, fifos and device nodes,
//! xattrs, fsync, fallocate, utimes, removal; some as an unprivileged guest user) must reach
//! the host exactly as the same changes made directly on a host directory, the guest must
//! then see what the host has, and virtiofsd 1.14 given the same script on its own copy of
//! the same tree must end with the same host tree and show its guest the same.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

use crate::common::{self, diff, Compare, Facts};
use crate::harness::changes::{failed_step, script, Change};
use crate::harness::daemon::{Daemon, READY_LINE};
use crate::harness::listing::{self, Snapshot};
use crate::harness::virtiofsd::Virtiofsd;
use crate::harness::{run_vm, tail, vm_lock, Vm, VmOutput, DAEMON_DEADLINE};

/// Timestamps differ between runs (and inode numbers are not compared at all).
const NO_TIMES: Compare = Compare {
    mtime: false,
    dir_mtime: false,
    ..Compare::ALL
};

/// 2020-01-02 03:04:05 UTC.
const STAMP: (&str, i64) = ("202001020304.05", 1_577_934_245);

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tree every run starts from (made afresh, identically, for each).
fn start_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    };
    w("keep/a.txt", b"alpha\n");
    w("keep/b.txt", b"bravo\n");
    w("old/victim", b"to be replaced\n");
    w("trunc/shrink", &common::pseudo_random(100_000, 1));
    w("trunc/grow", b"0123456789");
    w("trunc/emptied", b"not for long\n");
    w("gone/file", b"bye\n");
    w("gone/dir/sub/file", b"deep bye\n");
    w("gone/dir/other", b"x");
    w("owned/by-1000", b"user\n");
    chown(root.join("owned/by-1000"), Some(1000), Some(1000)).unwrap();
    w("modes/setid-then-chown", b"s");
    w("x/attrs", b"x");
    xattr::set(root.join("x/attrs"), "user.keep", b"1").unwrap();
    xattr::set(root.join("x/attrs"), "user.drop", b"2").unwrap();
    fs::create_dir_all(root.join("users")).unwrap();
    chown(root.join("users"), Some(1000), Some(1000)).unwrap();
    for dir in [
        "",
        "keep",
        "old",
        "trunc",
        "gone",
        "gone/dir",
        "gone/dir/sub",
        "owned",
    ] {
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for dir in ["modes", "x", "users"] {
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// What the guest does, in order.
fn changes() -> Vec<Change> {
    use Change::*;
    let user = |c: Change| As(1000, 1000, Box::new(c));
    vec![
        Mkdir("new"),
        Mkdir("new/deep"),
        Mkdir("new/deep/er"),
        Write("new/file", "hello\n"),
        Append("new/file", "more\n"),
        Seq("new/big", 60_000),
        Overwrite("new/big", 1000, "XYZ"),
        Write("new/deep/er/leaf", "leaf\n"),
        Rename("keep/a.txt", "keep/a-renamed.txt"),
        Rename("keep/b.txt", "old/victim"),
        Rename("new/deep", "keep/deep"),
        Chmod("new/file", 0o640),
        Write("new/prog", "#!/bin/sh\necho prog\n"),
        Chmod("new/prog", 0o4755),
        Chmod("modes/setid-then-chown", 0o6755),
        Chown("modes/setid-then-chown", 1000, 1000),
        Mkdir("new/sgid"),
        Chown("new/sgid", 0, 4321),
        Chmod("new/sgid", 0o2775),
        Write("new/sgid/inherits", "group\n"),
        Mkdir("new/sgid/subdir"),
        Mkdir("new/tmp"),
        Chmod("new/tmp", 0o1777),
        Chown("new/file", 1234, 5678),
        Chown("owned/by-1000", 2000, 3000),
        Symlink("../keep/a-renamed.txt", "new/sym"),
        Symlink("/nowhere/at/all", "new/dangling"),
        Lchown("new/sym", 42, 43),
        // As an unprivileged guest user: the daemon switches credentials per request.
        user(Write("users/mine", "mine\n")),
        user(Mkdir("users/sub")),
        user(Symlink("mine", "users/mine-link")),
        user(Mkfifo("users/fifo")),
        // A user's truncate of their setuid file: the guest kernel clears the bit in the same
        // SETATTR, with the file handle.
        user(Write("users/own-setuid", "setuid, then truncated\n")),
        user(Chmod("users/own-setuid", 0o4755)),
        user(Truncate("users/own-setuid", 6)),
        Refused(1000, 1000, Box::new(Write("keep/denied", "no\n"))),
        Refused(1000, 1000, Box::new(Chmod("keep/a-renamed.txt", 0o777))),
        // Hard links of files looked up before those credential switches.
        Link("new/file", "new/file-hard"),
        Link("keep/a-renamed.txt", "old/a-hard"),
        Truncate("trunc/shrink", 1000),
        Truncate("trunc/grow", 70_000),
        Write("trunc/emptied", ""),
        Mkfifo("new/fifo"),
        Mknod("new/null", 'c', 1, 3),
        Mknod("new/loop", 'b', 7, 200),
        SetXattr("new/file", "user.color", "blue"),
        SetXattr("new", "user.dir", "yes"),
        SetXattr("x/attrs", "user.keep", "changed"),
        RmXattr("x/attrs", "user.drop"),
        Fallocate("new/falloc", 8192),
        Fsync("new/big"),
        Fdatasync("new/file"),
        Fsync("new"),
        Touch("new/file", STAMP.0, STAMP.1),
        Remove("gone/file"),
        RemoveTree("gone/dir"),
        Rmdir("gone"),
    ]
}

/// What the guest prints after the changes: `stat` of every entry (no times), some contents,
/// device numbers, then the full listing.
const VIEW: &str = r#"
cd /mnt || exit 1
echo "@@VIEW"
find . ! -type d | sort | xargs stat -c '%N|%A|%u|%g|%s|%h|%F'
find . -type d | sort | xargs stat -c '%n|%A|%u|%g|%h|%F'
stat -c '%n|%t|%T' new/null new/loop
cat new/file new/file-hard keep/a-renamed.txt old/victim users/mine new/sgid/inherits
head -c 1010 new/big | tail -c 20; echo
ls -A new users keep old trunc
echo "@@LIST"
pfs-list /mnt
"#;

/// One guest run of the changes through the daemon on `sock`, then the view.
fn run_changes(sock: &Path, tag: &str, changes: &[Change]) -> VmOutput {
    let full = format!("{}{VIEW}", script("/mnt", changes));
    let out = run_vm(&Vm::new(sock, tag, &full));
    if let Some((n, c)) = failed_step(&out.output, changes) {
        panic!(
            "{tag}: step {n} failed: {c:?}\n  {}\n{}",
            c.shell(),
            out.output
        );
    }
    assert_eq!(out.rc, 0, "{tag}: {}", tail(&out.console, 60));
    out
}

/// The guest's view: the lines before the listing, and the listing.
fn view(out: &VmOutput) -> (String, Snapshot) {
    let text = &out.output[out.output.find("@@VIEW").expect("the view was printed")..];
    let (lines, list) = text
        .split_once("@@LIST\n")
        .expect("the listing was printed");
    (lines.to_string(), listing::parse(list))
}

fn assert_no_diff(what: &str, d: Vec<String>) {
    assert!(
        d.is_empty(),
        "{what}: {} differences (left, right):\n{}",
        d.len(),
        d.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn get<'a>(snap: &'a BTreeMap<Vec<u8>, Facts>, path: &str) -> &'a Facts {
    snap.get(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing on the host"))
}

/// Facts stated outright, independent of the host-side replay of the changes.
fn assert_key_facts(host: &BTreeMap<Vec<u8>, Facts>) {
    let file = get(host, "new/file");
    assert_eq!(file.mode, 0o100640);
    assert_eq!((file.uid, file.gid), (1234, 5678));
    assert_eq!(file.size, 11, "hello + more");
    assert_eq!(file.nlink, 2);
    assert_eq!(file.mtime, (STAMP.1, 0), "touch -t reached the host");
    assert_eq!(
        file.xattrs.get(b"user.color".as_slice()).map(Vec::as_slice),
        Some(b"blue".as_slice())
    );
    assert_eq!(get(host, "new/file-hard").link_group, file.link_group);
    assert_eq!(get(host, "new/prog").mode, 0o104755, "setuid bit kept");
    assert_eq!(
        get(host, "modes/setid-then-chown").mode & 0o7777,
        0o755,
        "chown cleared setuid and setgid"
    );
    let sgid = get(host, "new/sgid/inherits");
    assert_eq!(
        (sgid.uid, sgid.gid),
        (0, 4321),
        "group of a setgid directory"
    );
    assert_eq!(get(host, "new/sgid/subdir").mode, 0o42755);
    assert_eq!(get(host, "new/tmp").mode, 0o41777);
    let mine = get(host, "users/mine");
    assert_eq!((mine.uid, mine.gid, mine.mode), (1000, 1000, 0o100644));
    assert_eq!(get(host, "users/fifo").kind, 'p');
    let own = get(host, "users/own-setuid");
    assert_eq!(
        (own.mode, own.size),
        (0o100755, 6),
        "a user's truncate kills setuid"
    );
    let sym = get(host, "new/sym");
    assert_eq!((sym.kind, sym.uid, sym.gid), ('l', 42, 43));
    assert_eq!(
        sym.link.as_deref(),
        Some(b"../keep/a-renamed.txt".as_slice())
    );
    assert_eq!(get(host, "new/fifo").kind, 'p');
    let null = get(host, "new/null");
    assert_eq!((null.kind, null.rdev), ('c', libc::makedev(1, 3)));
    assert_eq!(get(host, "new/loop").rdev, libc::makedev(7, 200));
    assert_eq!(get(host, "trunc/shrink").size, 1000);
    assert_eq!(get(host, "trunc/grow").size, 70_000);
    assert_eq!(get(host, "trunc/emptied").size, 0);
    assert_eq!(get(host, "new/falloc").size, 8192);
    assert_eq!(get(host, "new/big").size, 348_894, "seq 1 60000");
    let attrs = &get(host, "x/attrs").xattrs;
    assert_eq!(attrs.len(), 1, "{attrs:?}");
    assert_eq!(attrs[b"user.keep".as_slice()], b"changed");
    let victim = get(host, "old/victim");
    assert_eq!(victim.size, 6, "replaced by bravo");
    let renamed = get(host, "keep/a-renamed.txt");
    assert_eq!(renamed.nlink, 2);
    assert_eq!(get(host, "old/a-hard").link_group, renamed.link_group);
    for gone in [
        "gone",
        "keep/a.txt",
        "keep/b.txt",
        "new/deep",
        "keep/denied",
    ] {
        assert!(!host.contains_key(gone.as_bytes()), "{gone} still exists");
    }
    assert!(host.contains_key(b"keep/deep/er/leaf".as_slice()));
}

#[test]
fn guest_writes_reach_the_host_as_virtiofsd_makes_them() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let changes = changes();

    // What the changes make of the tree when made directly on the host.
    let expected_root = tmp.path().join("expected");
    start_tree(&expected_root);
    for c in &changes {
        c.apply(&expected_root);
    }
    let expected = common::snapshot(&expected_root);

    // Our daemon, as Kata's Go runtime starts it, with the default sandbox and seccomp.
    let ours = tmp.path().join("ours");
    start_tree(&ours);
    let sock = tmp.path().join("ours.sock");
    let mut daemon = Daemon::spawn(&[
        "--socket-path",
        s(&sock),
        "--shared-dir",
        s(&ours),
        "--cache=auto",
        "--xattr",
        // One worker: the credential switches and the hard links after them share a thread.
        "--thread-pool-size=1",
    ]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
    let out = run_changes(&sock, "rw-ours", &changes);
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon exit after the VM quit: {status}");
    let host = common::snapshot(&ours);
    assert_key_facts(&host);
    assert_no_diff(
        "changes made on the host vs through our daemon",
        diff(&expected, &host, NO_TIMES),
    );
    let (lines, guest) = view(&out);
    listing::assert_same(&guest, &host, Compare::ALL);
    assert!(
        lines.contains("hello\nmore\nhello\nmore\nalpha\nbravo\nmine\ngroup\n"),
        "{lines}"
    );
    assert!(
        lines.contains("5\n276\n277\nXYZ\n279\n28\n"),
        "the overwrite: {lines}"
    );

    // virtiofsd 1.14, the same script on its own copy of the same tree.
    let theirs = tmp.path().join("theirs");
    start_tree(&theirs);
    let ref_sock = tmp.path().join("theirs.sock");
    let mut reference = Virtiofsd::start(
        &ref_sock,
        &theirs,
        &["--cache=auto", "--xattr", "--thread-pool-size=1"],
    );
    let ref_out = run_changes(&ref_sock, "rw-virtiofsd", &changes);
    assert!(reference.0.wait().unwrap().success(), "virtiofsd exit");
    let ref_host = common::snapshot(&theirs);
    assert_no_diff(
        "host tree: virtiofsd vs ours",
        diff(&ref_host, &host, NO_TIMES),
    );
    let (ref_lines, ref_guest) = view(&ref_out);
    assert_eq!(
        ref_lines, lines,
        "what the guests saw: virtiofsd (left) vs ours (right)"
    );
    assert_no_diff(
        "guest listing: virtiofsd vs ours",
        diff(&ref_guest, &guest, NO_TIMES),
    );
}

/// `--sandbox chroot` serves the same writes (without `--xattr`, which a chroot cannot
/// serve: no /proc), with the same seccomp filter and capabilities.
#[test]
fn chroot_sandbox_serves_the_writes_too() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let changes: Vec<Change> = changes()
        .into_iter()
        .filter(|c| !matches!(c, Change::SetXattr(..) | Change::RmXattr(..)))
        .collect();
    let expected_root = tmp.path().join("expected");
    start_tree(&expected_root);
    for c in &changes {
        c.apply(&expected_root);
    }
    let dir = tmp.path().join("chroot");
    start_tree(&dir);
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = Daemon::spawn(&[
        "--socket-path",
        s(&sock),
        "--shared-dir",
        s(&dir),
        "--sandbox=chroot",
        "--thread-pool-size=1",
    ]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
    let out = run_changes(&sock, "rw-chroot", &changes);
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
    let host = common::snapshot(&dir);
    assert_no_diff(
        "changes made on the host vs through the chrooted daemon",
        diff(&common::snapshot(&expected_root), &host, NO_TIMES),
    );
    let without_xattrs = Compare {
        xattrs: false,
        ..Compare::ALL
    };
    listing::assert_same(&view(&out).1, &host, without_xattrs);
}
