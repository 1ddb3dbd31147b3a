//! Interoperability with upstream PuzzleFS 0.2 in the direction "upstream reads ours" (packs
//! included), and identical chunking of identical trees. (Our reading of upstream images is
//! covered by the extract and mount tests.)

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    build_image, corner_case_tree, puzzlefs, snapshot, upstream, upstream_build, Compare,
};

fn blob_set(oci: &Path, tag: &str) -> BTreeSet<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let digest = desc["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("blobs/sha256").join(digest)).unwrap())
            .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] != "application/vnd.puzzlefs.image.rootfs.v1")
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn identical_trees_give_the_same_chunks_as_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    let ours = format!("{}:ours", oci.display());
    let theirs = format!("{}:theirs", oci.display());
    // In a layout of its own: chunks the layout holds as blobs of their own are reused as such.
    let oci_packed = tmp.path().join("oci-packed");
    let packed = format!("{}:packed", oci_packed.display());
    puzzlefs(&[
        OsStr::new("build"),
        OsStr::new("--pack-size=0"),
        src.as_os_str(),
        OsStr::new(&ours),
    ]);
    puzzlefs(&[OsStr::new("build"), src.as_os_str(), OsStr::new(&packed)]);
    upstream_build(&[src.as_os_str(), OsStr::new(&theirs)]);
    let a = blob_set(&oci, "ours");
    let b = blob_set(&oci, "theirs");
    assert!(a.len() > 40, "{}", a.len());
    assert_eq!(
        a, b,
        "same stream order and FastCDC parameters give the same chunks"
    );
    // In packs, the same chunks (raw, so their digests are upstream's blob names).
    let dir = puzzlefs_virtiofsd::oci::OciDir::open(&oci_packed).unwrap();
    let image =
        puzzlefs_virtiofsd::reader::Image::open(&dir, "packed", Default::default()).unwrap();
    let in_packs: BTreeSet<String> = image
        .table()
        .chunks()
        .iter()
        .map(|c| {
            assert!(c.pack.is_some(), "{c:?} is not in a pack");
            c.digest.to_string()
        })
        .collect();
    assert_eq!(in_packs, b);
    assert!(blob_set(&oci_packed, "packed").len() < a.len() / 10);
}

/// An upstream `puzzlefs mount -f` in the background, unmounted on drop.
struct UpstreamMount {
    child: Child,
    at: std::path::PathBuf,
}

impl UpstreamMount {
    fn start(image: &str, at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let child = Command::new(upstream())
            .args([
                OsStr::new("mount"),
                OsStr::new("-f"),
                OsStr::new(image),
                at.as_os_str(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = UpstreamMount {
            child,
            at: at.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let needle = format!(" {} fuse", at.display());
        while !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(&needle)
        {
            assert!(Instant::now() < deadline, "upstream mount did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

impl Drop for UpstreamMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn upstream_mount_reads_our_images() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    corner_case_tree(&src);
    let oci = tmp.path().join("oci");
    for (tag, compress) in [("plain", false), ("zstd", true), ("zstd2", true)] {
        if tag == "zstd2" {
            std::fs::write(src.join("added"), common::pseudo_random(200_000, 3)).unwrap();
        }
        let image = build_image(&src, &oci, tag, compress);
        let mnt = tmp.path().join(format!("mnt-{tag}"));
        let m = UpstreamMount::start(&image, &mnt);
        let mut expected = snapshot(&src);
        let mut got = snapshot(&m.at);
        // Upstream's mount cannot report sockets and reports symlink sizes as 0.
        for snap in [&mut expected, &mut got] {
            snap.retain(|_, f| f.kind != 's');
            for f in snap.values_mut().filter(|f| f.kind == 'l') {
                f.size = 0;
            }
        }
        let d = common::diff(&expected, &got, Compare::UPSTREAM_MOUNT);
        assert!(d.is_empty(), "{tag}: {}", d.join("\n"));
    }
    // The second compressed image reuses the first one's packs (frame groups included) and
    // adds its own: upstream just read an image whose chunks lie in two builds' packs.
    let (zstd, zstd2) = (blob_set(&oci, "zstd"), blob_set(&oci, "zstd2"));
    assert!(
        zstd.intersection(&zstd2).next().is_some(),
        "{zstd:?} {zstd2:?}"
    );
    assert!(zstd2.difference(&zstd).next().is_some());
    // An uncompressed and a compressed build of one tree share nothing: each keeps its kind.
    assert!(blob_set(&oci, "plain").is_disjoint(&zstd));
}
