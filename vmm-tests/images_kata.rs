//! Images served the way Kata launches the daemon (Go runtime: listening socket as fd 3;
//! runtime-rs: `--socket-path` and the ready line), many guest readers of one image at once,
//! and `--digest` pinning.

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::common::pseudo_random;

use crate::common::{self, Compare};
use crate::harness::daemon::{binary, Daemon, READY_LINE};
use crate::harness::image::{self, Image};
use crate::harness::listing::{self, pfs_list};
use crate::harness::tree::make_fixture;
use crate::harness::{run_vm, tail, vm_lock, Vm, DAEMON_DEADLINE};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fixture tree and its image, plus a shared dir that must NOT be what the guest sees.
struct Setup {
    _tmp: tempfile::TempDir,
    tree: std::path::PathBuf,
    shared: std::path::PathBuf,
    sock: std::path::PathBuf,
    img: Image,
}

fn setup(compressed: bool) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_fixture(&tree);
    let img = image::build(&tree, &tmp.path().join("oci"), "kata", compressed);
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("from-the-shared-dir"), b"not the image").unwrap();
    Setup {
        tree,
        shared,
        sock: tmp.path().join("kata.sock"),
        img,
        _tmp: tmp,
    }
}

/// The guest lists the mount; it must be the image, all of it, and nothing else.
fn guest_sees_the_image(st: &Setup, tag: &str) {
    let out = run_vm(&Vm::new(&st.sock, tag, &pfs_list("/mnt")));
    let guest = listing::parse(&out.output);
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 40));
    listing::assert_same(&guest, &common::snapshot(&st.tree), Compare::ALL);
}

#[test]
fn go_runtime_launch_serves_an_image() {
    let _one_vm = vm_lock();
    let st = setup(true);
    // Kata's Go runtime listens itself and hands the socket over as fd 3.
    let listener = UnixListener::bind(&st.sock).unwrap();
    let shared = format!("--shared-dir={}", s(&st.shared));
    let image = format!("--image={}", st.img.target);
    let mut daemon = Daemon::spawn_with_fd3(
        &listener,
        &[
            "--fd=3",
            "--syslog",
            "--cache=auto",
            &shared,
            "--thread-pool-size=1",
            "--announce-submounts",
            &image,
        ],
    );
    drop(listener);
    guest_sees_the_image(&st, "kata-go-img");
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon exit after the VM quit: {status}");
}

#[test]
fn runtime_rs_launch_serves_an_image() {
    let _one_vm = vm_lock();
    let st = setup(false);
    let mut daemon = Daemon::spawn(&[
        "--socket-path",
        s(&st.sock),
        "--shared-dir",
        s(&st.shared),
        "--cache",
        "auto",
        "--thread-pool-size=1",
        "-o",
        "announce_submounts",
        "--image",
        &st.img.target,
    ]);
    daemon.wait_for_line(READY_LINE, DAEMON_DEADLINE);
    guest_sees_the_image(&st, "kata-rs-img");
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon exit after the VM quit: {status}");
    assert!(!st.sock.exists(), "socket file left behind");
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn parallel_guest_readers_of_a_compressed_image_get_every_byte() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("big")).unwrap();
    let mut want = BTreeMap::new();
    // Eight incompressible files, and one compressible text file of many chunks.
    for i in 0..8u64 {
        let data = pseudo_random((5 << 20) + 4097 * i as usize, 2000 + i);
        want.insert(format!("own/f{i}"), sha256(&data));
        std::fs::write(tree.join(format!("big/f{i}")), data).unwrap();
    }
    let text: Vec<u8> = (0..400_000u32)
        .flat_map(|i| format!("line {i} of {}\n", i.wrapping_mul(2_654_435_761)).into_bytes())
        .collect();
    for i in 0..8 {
        want.insert(format!("same/{i}"), sha256(&text));
        // 512 KiB slices of f0, at different offsets.
        let f0 = std::fs::read(tree.join("big/f0")).unwrap();
        let at = i * (512 << 10);
        want.insert(format!("part/{i}"), sha256(&f0[at..at + (512 << 10)]));
    }
    std::fs::write(tree.join("big/text"), &text).unwrap();
    let img = image::build(&tree, &tmp.path().join("oci"), "big", true);
    let sock = tmp.path().join("vfs.sock");
    // No guest caching: every read of every process reaches the daemon.
    let mut daemon = image::serve(
        &sock,
        &img.target,
        &["--cache=never", "--thread-pool-size=4"],
    );

    // 24 readers at once: each of the eight files, the text file eight times, and eight
    // slices of one file.
    let script = r#"
for i in 0 1 2 3 4 5 6 7; do
    sha256sum /mnt/big/f$i | sed "s|  .*|  own/f$i|" > /tmp/own$i &
    cat /mnt/big/text | sha256sum | sed "s|  .*|  same/$i|" > /tmp/same$i &
    dd if=/mnt/big/f0 bs=64k skip=$((i * 8)) count=8 2>/dev/null | sha256sum | sed "s|  .*|  part/$i|" > /tmp/part$i &
done
wait
cat /tmp/own* /tmp/same* /tmp/part*
"#;
    let mut vm = Vm::new(&sock, "conc-img", script);
    vm.request_queues = 2;
    let out = run_vm(&vm);
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 40));
    let got: BTreeMap<String, String> = out
        .output
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, n)| (n.to_string(), h.to_string()))
        .collect();
    assert_eq!(got, want, "{}", out.output);
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
}

#[test]
fn digest_pin_serves_its_image_and_refuses_another() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    make_fixture(&tree);
    let img = image::build(&tree, &tmp.path().join("oci"), "v1", false);
    let sock = tmp.path().join("vfs.sock");

    // Another digest: refused before the socket exists, in one line.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = Command::new(binary())
        .args(["--socket-path", s(&sock), "--image", &img.target])
        .args(["--digest", &wrong])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("manifest digest") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!sock.exists(), "refused before listening");

    // Its own digest (bare hex, as Kata configs may give it): served.
    let bare = img.digest.strip_prefix("sha256:").unwrap();
    let mut daemon = image::serve(&sock, &img.target, &["--digest", bare]);
    let out = run_vm(&Vm::new(&sock, "pinned", "sha256sum /mnt/sizes/f1048589\n"));
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 40));
    let want = sha256(&std::fs::read(tree.join("sizes/f1048589")).unwrap());
    assert!(
        out.output.contains(&format!("{want}  /mnt/sizes/f1048589")),
        "{}",
        out.output
    );
    assert!(daemon.wait_exit(DAEMON_DEADLINE).success());
}
