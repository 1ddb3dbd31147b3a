//! fs-verity on a real kernel: this host's kernel has none, so the Debian guest does the
//! work on an ext4 disk made with `mkfs.ext4 -O verity`, holding an image built here, our
//! binaries (run through the host's dynamic loader and libraries, copied onto the disk) and
//! the source tree. In the guest: `--fs-verity` refuses files without verity;
//! `enable-fs-verity` with a wrong root hash changes nothing; with the right one every blob is
//! sealed; `cat`, `extract` and the daemon (sandboxed, seccomp on, driven by the native
//! front end with `--verify`) then serve the image; an index.json pointing the tag at another
//! manifest, and a copy of the layout without verity, are refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::image;
use crate::harness::{run_vm, tail, vm_lock, Vm};

/// The dynamic loader and libraries `bins` need, from `ldd`.
fn shared_libraries(bins: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut libs = BTreeSet::new();
    for bin in bins {
        let out = Command::new("ldd").arg(bin).output().expect("run ldd");
        assert!(out.status.success(), "ldd {}", bin.display());
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    libs
}

/// The native front end's binary, built on demand (a workspace member, not a dependency).
fn frontend_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "virtiofs-frontend"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build -p virtiofs-frontend");
    assert!(status.success(), "building virtiofs-frontend failed");
    let daemon = PathBuf::from(env!("CARGO_BIN_EXE_puzzlefs-virtiofsd"));
    daemon.with_file_name("virtiofs-frontend")
}

fn make_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc/conf.d")).unwrap();
    std::fs::write(dir.join("hello"), "hello, verity\n").unwrap();
    std::fs::write(dir.join("etc/conf.d/a.conf"), "x = 1\n".repeat(5000)).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    std::os::unix::fs::symlink("hello", dir.join("link")).unwrap();
}

/// Makes `index.json` with the descriptors of tags `a` and `b` swapped in content.
fn swapped_index(index: &[u8], a: &str, b: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(index).unwrap();
    let manifests = v["manifests"].as_array_mut().unwrap();
    let find = |ms: &[serde_json::Value], tag: &str| {
        ms.iter()
            .position(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap()
    };
    let (ia, ib) = (find(manifests, a), find(manifests, b));
    for key in ["digest", "size"] {
        let tmp = manifests[ia][key].clone();
        manifests[ia][key] = manifests[ib][key].clone();
        manifests[ib][key] = tmp;
    }
    serde_json::to_vec(&v).unwrap()
}

const GUEST_SCRIPT: &str = r#"
mkdir -p /disk && mount -t ext4 /dev/vda /disk || exit 90
L=/disk/lib
run() { "$L/ld-linux-x86-64.so.2" --library-path "$L" "$@"; }
pfs() { run /disk/bin/puzzlefs "$@"; }
step() { echo "STEP $1 rc=$2"; }
blob() { echo /disk/oci/blobs/sha256/$1; }

pfs cat --fs-verity "$ROOT" /disk/oci:t /hello 2>&1; step cat-before-enable $?
pfs enable-fs-verity /disk/oci:t "$WRONG" 2>&1; step enable-wrong-root $?
# Nothing was sealed: a file with verity on cannot be opened for writing (tried in a
# subshell: a failed redirection ends the shell).
(: >> "$(blob $DATA_BLOB)"); step data-blob-still-writable $?
(: >> "$(blob $MANIFEST)"); step manifest-still-writable $?
printf 'root=%s\n' "$(pfs enable-fs-verity /disk/oci:t "$ROOT")"; step enable $?
(: >> "$(blob $DATA_BLOB)") 2>/dev/null; step data-blob-sealed $?
(: >> "$(blob $MANIFEST)") 2>/dev/null; step manifest-sealed $?
pfs enable-fs-verity --json /disk/oci:t "$ROOT" | grep '"newly_enabled"'; step enable-again $?
pfs cat --fs-verity "$ROOT" /disk/oci:t /hello; step cat $?
pfs extract --fs-verity "$ROOT" /disk/oci:t /tmp/x 2>&1; step extract $?
sha256sum /tmp/x/big.bin /disk/src/big.bin
# Tag t2 sealed too, then index.json points t at t2's manifest.
pfs enable-fs-verity /disk/oci:t2 >/dev/null; step enable-t2 $?
cp /disk/oci/index.json /tmp/index.json
cp /disk/index-swapped.json /disk/oci/index.json
pfs cat --fs-verity "$ROOT" /disk/oci:t /hello 2>&1; step cat-swapped-index $?
cp /tmp/index.json /disk/oci/index.json
cp -a /disk/oci /disk/copy
pfs cat --fs-verity "$ROOT" /disk/copy:t /hello 2>&1; step cat-copy-without-verity $?
pfs cat /disk/copy:t /hello >/dev/null; step cat-copy-unpinned $?

# The daemon, chrooted (pivot_root cannot leave an initramfs) with seccomp kill.
run /disk/bin/puzzlefs-virtiofsd --socket-path /tmp/vfs.sock --image /disk/oci:t \
    --fs-verity "$ROOT" --sandbox chroot --seccomp kill 2>/tmp/daemon.err &
pid=$!
n=0; while [ ! -S /tmp/vfs.sock ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
run /disk/bin/virtiofs-frontend --socket /tmp/vfs.sock --workload walk,read \
    --verify /disk/src --timeout 300 >/tmp/frontend.out 2>&1; step frontend $?
wait $pid; step daemon-exit $?
cat /tmp/frontend.out /tmp/daemon.err
run /disk/bin/puzzlefs-virtiofsd --socket-path /tmp/vfs2.sock --image /disk/copy:t \
    --fs-verity "$ROOT" --sandbox chroot 2>&1; step daemon-copy-without-verity $?
exit 0
"#;

fn step(out: &str, name: &str) -> i32 {
    let prefix = format!("STEP {name} rc=");
    let line = out
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("guest never ran step {name}:\n{out}"));
    line[prefix.len()..].trim().parse().unwrap()
}

#[test]
fn fs_verity_in_a_guest_seals_the_image_and_every_reader_requires_it() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = tmp.path().join("stage");
    let src = stage.join("src");
    make_tree(&src);
    let oci = stage.join("oci");
    let pfs_bin = PathBuf::from(env!("CARGO_BIN_EXE_puzzlefs"));
    let report = Command::new(&pfs_bin)
        .args(["build", "--json", "-c"])
        .arg(&src)
        .arg(format!("{}:t", oci.display()))
        .output()
        .unwrap();
    assert!(report.status.success());
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let root = report["manifest_fs_verity"].as_str().unwrap().to_string();
    let manifest = report["manifest_digest"].as_str().unwrap()["sha256:".len()..].to_string();
    let data_blob = {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(oci.join("blobs/sha256").join(&manifest)).unwrap(),
        )
        .unwrap();
        m["layers"][0]["digest"].as_str().unwrap()["sha256:".len()..].to_string()
    };

    // Another image in the same layout, for the swapped index.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("hello"), "another image\n").unwrap();
    image::build(&other, &oci, "t2", true);
    let index = std::fs::read(oci.join("index.json")).unwrap();
    std::fs::write(
        stage.join("index-swapped.json"),
        swapped_index(&index, "t", "t2"),
    )
    .unwrap();

    let bins = [
        pfs_bin,
        PathBuf::from(env!("CARGO_BIN_EXE_puzzlefs-virtiofsd")),
        frontend_binary(),
    ];
    std::fs::create_dir_all(stage.join("bin")).unwrap();
    std::fs::create_dir_all(stage.join("lib")).unwrap();
    for b in &bins {
        std::fs::copy(b, stage.join("bin").join(b.file_name().unwrap())).unwrap();
    }
    for lib in shared_libraries(&bins) {
        std::fs::copy(&lib, stage.join("lib").join(lib.file_name().unwrap())).unwrap();
    }
    let disk = tmp.path().join("disk.img");
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "verity", "-b", "4096", "-d"])
        .arg(&stage)
        .arg(&disk)
        .arg("512M")
        .status()
        .expect("run mkfs.ext4 (apt-get install e2fsprogs)");
    assert!(mkfs.success(), "mkfs.ext4 -O verity failed");

    let script = format!(
        "ROOT={root}\nWRONG={}\nMANIFEST={manifest}\nDATA_BLOB={data_blob}\n{GUEST_SCRIPT}",
        "0".repeat(64)
    );
    let _one_vm = vm_lock();
    let mut vm = Vm::without_fs(&script);
    vm.disk = Some(&disk);
    vm.mem_mib = 1024;
    let out = run_vm(&vm);
    let o = &out.output;
    assert_eq!(out.rc, 0, "{}", tail(&out.console, 60));
    eprintln!("[vm] fs-verity guest output:\n{o}");

    // Before enabling: refused, and a wrong root hash seals nothing.
    assert_eq!(step(o, "cat-before-enable"), 1, "{o}");
    assert!(o.contains("fs-verity is not enabled on it"), "{o}");
    assert_eq!(step(o, "enable-wrong-root"), 1, "{o}");
    assert!(
        o.contains(&format!("but the image requires {}", "0".repeat(64))),
        "{o}"
    );
    assert_eq!(step(o, "data-blob-still-writable"), 0, "{o}");
    assert_eq!(step(o, "manifest-still-writable"), 0, "{o}");
    // Enabled with the right root hash: sealed, idempotent, readable.
    assert_eq!(step(o, "enable"), 0, "{o}");
    assert!(o.contains(&format!("root={root}")), "{o}");
    assert_ne!(step(o, "data-blob-sealed"), 0, "{o}");
    assert_ne!(step(o, "manifest-sealed"), 0, "{o}");
    assert_eq!(step(o, "enable-again"), 0, "{o}");
    assert!(o.contains("\"newly_enabled\": 0"), "{o}");
    assert_eq!(step(o, "cat"), 0, "{o}");
    assert!(o.contains("hello, verity"), "{o}");
    assert_eq!(step(o, "extract"), 0, "{o}");
    let sums: Vec<&str> = o
        .lines()
        .filter(|l| l.ends_with("big.bin"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(sums.len(), 2, "{o}");
    assert_eq!(sums[0], sums[1], "extracted big.bin differs: {o}");
    // Tampering that verity must catch: another manifest behind the tag, files without verity.
    assert_eq!(step(o, "enable-t2"), 0, "{o}");
    assert_eq!(step(o, "cat-swapped-index"), 1, "{o}");
    assert!(o.contains(&format!("but the image requires {root}")), "{o}");
    assert_eq!(step(o, "cat-copy-without-verity"), 1, "{o}");
    assert_eq!(step(o, "cat-copy-unpinned"), 0, "{o}");
    // The daemon serves the sealed image, every byte verified by the front end.
    assert_eq!(step(o, "frontend"), 0, "{o}");
    assert_eq!(step(o, "daemon-exit"), 0, "{o}");
    assert_ne!(step(o, "daemon-copy-without-verity"), 0, "{o}");
}
