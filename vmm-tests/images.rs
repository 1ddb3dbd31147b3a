//! Guests served PuzzleFS images: a real Debian tree and the corner-case tree mounted with
//! `mount -t virtiofs` and listed in full by the guest (type, mode, owner, size, sha256, link
//! target, xattrs, mtime with nanoseconds, nlink, device numbers, hard-link groups), compared
//! with the source tree on the host; a Debian image as the guest's root file system; images
//! built by upstream PuzzleFS.

use std::path::Path;

use crate::common::{self, corner_case_tree, Compare};
use crate::harness::image::{self, Image};
use crate::harness::listing::{self, pfs_list, Snapshot};
use crate::harness::{run_vm, run_vm_boots, tail, vm_lock, Vm, VmOutput, DAEMON_DEADLINE};

/// Serves `target` with `--cache cache`, lets a guest list the whole mount, compares with
/// `tree`, and returns what the guest saw. Before the listing the guest looks up every entry
/// and then drops its caches, so the daemon gets FORGETs for all of them and lookups anew.
fn guest_lists_like_host(
    target: &str,
    tree: &Path,
    tag: &str,
    cache: &str,
    cmp: Compare,
) -> Snapshot {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = image::serve(&sock, target, &["--cache", cache]);
    let script = format!(
        "find /mnt > /dev/null || exit 1\nsync\necho 3 > /proc/sys/vm/drop_caches\n{}",
        pfs_list("/mnt")
    );
    let out = run_vm(&Vm::new(&sock, tag, &script));
    let guest = listing::parse(&out.output);
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 40));
    listing::assert_same(&guest, &common::snapshot(tree), cmp);
    eprintln!("[vm] {tag}: {} entries identical", guest.len());
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon exit after the VM quit: {status}");
    guest
}

/// The corner cases really reached the guest (so equality with the host is not vacuous).
fn assert_corner_cases_seen(guest: &Snapshot) {
    let ns = |p: &[u8]| {
        guest
            .values()
            .any(|f| f.xattrs.keys().any(|k| k.starts_with(p)))
    };
    assert!(ns(b"user.") && ns(b"trusted.") && ns(b"security."));
    assert!(guest
        .values()
        .any(|f| f.kind == 'b' && f.rdev == libc::makedev(7, 200)));
    assert!(guest.values().any(|f| f.kind == 'f' && f.nlink == 3));
    assert!(guest
        .keys()
        .any(|k| k.contains(&b'\n') || k.contains(&0xff)));
}

#[test]
fn compressed_debian_image_shows_the_guest_every_attribute() {
    let tree = common::debian_tree();
    let tmp = tempfile::tempdir().unwrap();
    let img = image::build(&tree, &tmp.path().join("oci"), "bookworm", true);
    let guest = guest_lists_like_host(&img.target, &tree, "debian", "auto", Compare::ALL);
    assert!(
        guest.values().any(|f| f.mtime.1 != 0),
        "nanoseconds reached the guest"
    );
}

#[test]
fn corner_case_image_shows_the_guest_every_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    corner_case_tree(&tree);
    let img = image::build(&tree, &tmp.path().join("oci"), "corner", false);
    let guest = guest_lists_like_host(&img.target, &tree, "corner", "metadata", Compare::ALL);
    assert_corner_cases_seen(&guest);
}

/// Upstream stores no timestamps; everything else it keeps must reach the guest unchanged.
const UPSTREAM: Compare = Compare {
    mtime: false,
    dir_mtime: false,
    ..Compare::ALL
};

#[test]
fn upstream_compressed_corner_case_image_serves_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    corner_case_tree(&tree);
    let target = image::build_upstream(&tree, &tmp.path().join("oci"), "up", true);
    let guest = guest_lists_like_host(&target, &tree, "up-corner", "never", UPSTREAM);
    assert_corner_cases_seen(&guest);
}

#[test]
fn upstream_compressed_debian_image_serves_the_same_tree() {
    let tree = common::debian_tree();
    let tmp = tempfile::tempdir().unwrap();
    let target = image::build_upstream(&tree, &tmp.path().join("oci"), "up", true);
    let guest = guest_lists_like_host(&target, &tree, "up-debian", "always", UPSTREAM);
    assert!(guest.len() > 5000, "{}", guest.len());
}

/// `KEY=value` printed by the guest.
fn field(out: &VmOutput, key: &str) -> String {
    out.output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {key}= in guest output:\n{}", out.output))
}

/// Runs in the image's own /bin/sh (dash) after switch_root. Python checks each `.pyc`
/// header against its source's mtime and size, so `pyc=fresh` needs the image's mtimes.
const ROOT_SCRIPT: &str = r#"
echo "shell=$(readlink -f /bin/sh)"
echo "debian=$(cat /etc/debian_version)"
echo "root=$(sed -n 's|^[^ ]* / \([^ ]*\) .*|\1|p' /proc/mounts | tail -n 1)"
echo "installed=$(dpkg -l | grep -c '^ii ')"
echo "dpkg=$(dpkg -l dpkg | tail -n 1 | cut -c1-2)"
apt-cache -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= policy apt | sed -n 's/^ *Installed: /apt=/p'
python3 -c 'import sys, hashlib, json, sqlite3; print("py=%d.%d" % sys.version_info[:2]); print("pysha=" + hashlib.sha256(json.dumps([1, "x"]).encode()).hexdigest())'
python3 -c '
import importlib.util, json, os, struct
src = json.__file__
with open(importlib.util.cache_from_source(src), "rb") as f:
    flags, mtime, size = struct.unpack("<III", f.read(16)[4:])
st = os.stat(src)
ok = flags == 0 and mtime == int(st.st_mtime) & 0xFFFFFFFF and size == st.st_size & 0xFFFFFFFF
print("pyc=" + ("fresh" if ok else "stale"))
'
"#;

#[test]
fn debian_image_is_the_guest_root_file_system() {
    let _one_vm = vm_lock();
    let tree = crate::harness::debian_tree_with(&["python3"]);
    let tmp = tempfile::tempdir().unwrap();
    let Image { target, .. } = image::build(&tree, &tmp.path().join("oci"), "py", true);
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = image::serve(&sock, &target, &["--cache", "auto"]);
    let mut vm = Vm::new(&sock, "rootfs", ROOT_SCRIPT);
    vm.root = true;
    let out = run_vm(&vm);
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 60));

    assert_eq!(field(&out, "shell"), "/usr/bin/dash");
    let version = std::fs::read_to_string(tree.join("etc/debian_version")).unwrap();
    assert_eq!(field(&out, "debian"), version.trim());
    assert_eq!(field(&out, "root"), "virtiofs");
    let status = std::fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap();
    let installed = status.matches("Status: install ok installed").count();
    assert!(installed > 80, "{installed}");
    assert_eq!(field(&out, "installed"), installed.to_string());
    assert_eq!(field(&out, "dpkg"), "ii");
    let apt = field(&out, "apt");
    assert!(!apt.is_empty() && apt != "(none)", "{apt}");
    assert_eq!(field(&out, "py"), "3.11");
    // sha256 of '[1, "x"]'.
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"[1, \"x\"]"));
    assert_eq!(field(&out, "pysha"), want);
    assert_eq!(field(&out, "pyc"), "fresh");
    eprintln!(
        "[vm] Debian image as root + programs: {:.1} s",
        out.elapsed.as_secs_f64()
    );
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
}

/// QEMU guest resets (`system_reset` on the monitor) re-initialise the device on the same
/// connection: a guest whose root file system is the image is reset 3 times, and each of its
/// 4 boots (each with its own boot id) reaches userspace and runs programs from the image.
#[test]
fn a_guest_whose_root_is_the_image_boots_again_after_three_resets() {
    let _one_vm = vm_lock();
    let tree = common::debian_tree();
    let tmp = tempfile::tempdir().unwrap();
    let Image { target, .. } = image::build(&tree, &tmp.path().join("oci"), "reset", true);
    let sock = tmp.path().join("vfs.sock");
    let mut daemon = image::serve(&sock, &target, &["--cache", "auto"]);
    let script = r#"
echo "boot=$(cat /proc/sys/kernel/random/boot_id)"
echo "debian=$(cat /etc/debian_version)"
echo "dpkg=$(dpkg -l dpkg | tail -n 1 | cut -c1-2)"
"#;
    let mut vm = Vm::new(&sock, "rootfs", script);
    vm.root = true;
    vm.resets = 3;
    let boots = run_vm_boots(&vm);
    let version = std::fs::read_to_string(tree.join("etc/debian_version")).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for out in &boots {
        assert_eq!(out.rc, 0, "{}", tail(&out.console, 40));
        assert_eq!(field(out, "debian"), version.trim());
        assert_eq!(field(out, "dpkg"), "ii");
        ids.insert(field(out, "boot"));
    }
    assert_eq!(ids.len(), 4, "four distinct boots: {ids:?}");
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
}
