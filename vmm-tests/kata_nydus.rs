//! Kata's nydus mode end to end: the daemon started as Kata's Go runtime starts nydusd, driven
//! through its API while a guest runs, and the guest building each container's root as
//! Kata's agent does (overlay: the image below, an upper directory in the pass-through).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::api;
use crate::harness::daemon::Daemon;
use crate::harness::image::{self, Image};
use crate::harness::tree::make_fixture;
use crate::harness::{debian_rootfs, debian_tree_with, run_vm, tail, vm_lock, Vm, DAEMON_DEADLINE};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits for the guest to leave `name` in the shared directory; false if the guest ended
/// first (or never wrote it).
fn wait_for(dir: &Path, name: &str, guest_done: &AtomicBool) -> bool {
    let start = Instant::now();
    while !dir.join(name).exists() {
        if guest_done.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(900) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The guest's side, in Kata's paths: the `kataShared` device at
/// /run/kata-containers/shared, each container's root an overlay of its image.
const GUEST: &str = r#"
S=/run/kata-containers/shared
mkdir -p $S && mount --bind /mnt $S || exit 90
await() {
    n=0
    while [ ! -e "$S/containers/$1" ]; do
        n=$((n + 1)); [ $n -gt 3000 ] && { echo "no $1 from the host"; exit 91; }
        sleep 0.2
    done
}
rootfs() {
    c=$1
    mkdir -p $S/containers/$c/snapshotdir/fs $S/containers/$c/snapshotdir/work $S/containers/$c/rootfs
    mount -t overlay overlay -o upperdir=$S/containers/$c/snapshotdir/fs,workdir=$S/containers/$c/snapshotdir/work,lowerdir=$S/rafs/$c/lowerdir,index=off $S/containers/$c/rootfs || { echo "overlay $c failed"; dmesg | tail -5; exit 92; }
}
touch $S/containers/guest-up
await go
rootfs c1
rootfs c2
echo "c1-dpkg=$(chroot $S/containers/c1/rootfs /usr/bin/dpkg-query -W -f='${Version}' base-files)"
chroot $S/containers/c1/rootfs /bin/sh -c 'echo written-by-c1 > /root/note && cat /etc/debian_version' | sed 's/^/c1-debian=/'
echo "c2-py=$(chroot $S/containers/c2/rootfs /usr/bin/python3 -c 'import json, sys; print(json.dumps([sys.version_info[0], "ok"]))')"
echo changed >> $S/containers/c2/rootfs/etc/hostname
umount $S/containers/c1/rootfs || exit 93
touch $S/containers/c1-released
await go2
rootfs c3
echo "c3-sha=$(sha256sum $S/containers/c3/rootfs/sizes/f1048589 | cut -d' ' -f1)"
echo "c1-after=$(ls $S/rafs/c1 | wc -l)"
touch $S/containers/done-reading
await bye
umount $S/containers/c2/rootfs $S/containers/c3/rootfs
exit 0
"#;

struct Images {
    minbase: Image,
    python: Image,
    fixture: Image,
    fixture_tree: PathBuf,
}

fn images(tmp: &Path) -> Images {
    let oci = tmp.join("oci");
    let fixture_tree = tmp.join("fixture");
    make_fixture(&fixture_tree);
    Images {
        minbase: image::build(&debian_rootfs(), &oci, "minbase", true),
        python: image::build(&debian_tree_with(&["python3"]), &oci, "python", true),
        fixture: image::build(&fixture_tree, &oci, "fixture", false),
        fixture_tree,
    }
}

#[test]
fn containers_get_their_roots_from_images_mounted_through_the_api() {
    let _one_vm = vm_lock();
    let tmp = tempfile::tempdir().unwrap();
    let imgs = images(tmp.path());
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let apisock = tmp.path().join("nydusd-api.sock");
    let sock = tmp.path().join("vhost-fs.sock");

    // As Kata's Go runtime starts nydusd (virtcontainers/nydusd.go, args).
    let _daemon = Daemon::spawn(&[
        "virtiofs",
        "--log-level",
        "info",
        "--apisock",
        s(&apisock),
        "--sock",
        s(&sock),
    ]);
    api::wait_running(&apisock, DAEMON_DEADLINE);
    let r = api::mount(&apisock, "/containers", "passthrough_fs", s(&shared), "");
    assert_eq!(r.status, 204, "{}", r.body);

    let guest_done = Arc::new(AtomicBool::new(false));
    let host = {
        let guest_done = guest_done.clone();
        let shared = shared.clone();
        let apisock = apisock.clone();
        let (minbase, python, fixture) = (
            imgs.minbase.target.clone(),
            imgs.python.target.clone(),
            imgs.fixture.target.clone(),
        );
        std::thread::spawn(move || {
            let containers = shared.clone();
            if !wait_for(&containers, "guest-up", &guest_done) {
                return None;
            }
            for (at, source) in [
                ("/rafs/c1/lowerdir", &minbase),
                ("/rafs/c2/lowerdir", &python),
            ] {
                let r = api::mount(&apisock, at, "rafs", source, "");
                assert_eq!(r.status, 204, "{at}: {}", r.body);
            }
            std::fs::write(containers.join("go"), b"").unwrap();
            if !wait_for(&containers, "c1-released", &guest_done) {
                return None;
            }
            let r = api::umount(&apisock, "/rafs/c1/lowerdir");
            assert_eq!(r.status, 204, "{}", r.body);
            let r = api::mount(&apisock, "/rafs/c3/lowerdir", "rafs", &fixture, "{}");
            assert_eq!(r.status, 204, "{}", r.body);
            std::fs::write(containers.join("go2"), b"").unwrap();
            // The daemon ends with the VM: read the metrics while the guest waits.
            if !wait_for(&containers, "done-reading", &guest_done) {
                return None;
            }
            let json = api::request(&apisock, "GET", "/api/v1/metrics", None).unwrap();
            let text = api::request(&apisock, "GET", "/metrics", None).unwrap();
            std::fs::write(containers.join("bye"), b"").unwrap();
            Some((json, text))
        })
    };

    let mut vm = Vm::new(&sock, "kataShared", GUEST);
    vm.mem_mib = 1024;
    let out = run_vm(&vm);
    guest_done.store(true, Ordering::Relaxed);
    let metrics = host.join().expect("the host side of the flow failed");
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 60));
    let (r, text) = metrics.expect("the guest ended before the metrics were read");
    let line = |key: &str| -> String {
        out.output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in:\n{}", out.output))
            .to_string()
    };
    let minbase = debian_rootfs();
    let debian_version = std::fs::read_to_string(minbase.join("etc/debian_version")).unwrap();
    assert_eq!(line("c1-debian"), debian_version.trim());
    assert!(!line("c1-dpkg").is_empty());
    assert_eq!(line("c2-py"), r#"[3, "ok"]"#);
    let want = sha256_file(&imgs.fixture_tree.join("sizes/f1048589"));
    assert_eq!(line("c3-sha"), want);
    assert_eq!(
        line("c1-after"),
        "0",
        "the unmounted image is gone from the guest's view"
    );

    // The containers' writes landed in their upper directories on the host.
    let upper = |c: &str| shared.join(c).join("snapshotdir/fs");
    assert_eq!(
        std::fs::read_to_string(upper("c1").join("root/note")).unwrap(),
        "written-by-c1\n"
    );
    let hostname = std::fs::read_to_string(upper("c2").join("etc/hostname")).unwrap();
    assert!(hostname.ends_with("changed\n"), "{hostname:?}");

    // The reads show in the metrics, per mount.
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    let mounts = m["mounts"].as_array().unwrap();
    let at: Vec<&str> = mounts
        .iter()
        .map(|x| x["mountpoint"].as_str().unwrap())
        .collect();
    assert_eq!(
        at,
        ["/containers", "/rafs/c2/lowerdir", "/rafs/c3/lowerdir"]
    );
    for mount in &mounts[1..] {
        assert!(mount["bytes_read"].as_u64().unwrap() > 0, "{mount}");
        assert!(
            mount["image"]["chunk_loads"].as_u64().unwrap() > 0,
            "{mount}"
        );
    }
    // What each image's decoded metadata holds: a Debian tree's hundreds of KB, the small
    // fixture's a few.
    let metadata = |m: &serde_json::Value| m["image"]["metadata_bytes"].as_u64().unwrap();
    let (python, fixture) = (metadata(&mounts[1]), metadata(&mounts[2]));
    assert!((100_000..8 << 20).contains(&python), "{}", mounts[1]);
    assert!(fixture > 0 && fixture < python / 10, "{}", mounts[2]);
    assert!(mounts[0]["bytes_written"].as_u64().unwrap() > 0);
    assert_eq!(text.status, 200);
    assert!(
        text.body.contains(r#"mountpoint="/rafs/c3/lowerdir""#),
        "{}",
        text.body
    );
}

fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}
