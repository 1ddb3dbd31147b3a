//! Transfers that work: Debian versions pushed and pulled with only the delta moving, skopeo
//! both ways, copies between repositories (mounted) and registries, upstream's images.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use super::registry_harness::{Auth, FaultProxy, Kind, Registry};
use super::{extract, manifest_blobs, manifest_hex, n, puzzlefs_with, s, succeeded, transfer};
use crate::common::fixture::upstream_layout;
use crate::common::{
    assert_same_tree, build_image, corner_case_tree, debian_tree, debian_tree_with, image_snapshot,
    puzzlefs, Compare,
};
use puzzlefs_virtiofsd::oci::OciDir;
use puzzlefs_virtiofsd::reader::{Image, OpenOptions};

fn open(dir: &Path, tag: &str) -> Image {
    Image::open(&OciDir::open(dir).unwrap(), tag, OpenOptions::default()).unwrap()
}

#[test]
fn debian_versions_move_only_their_delta() {
    let (v1_tree, v2_tree) = (debian_tree(), debian_tree_with(&["python3"]));
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let v1 = build_image(&v1_tree, &ours, "v1", true);
    let v2 = build_image(&v2_tree, &ours, "v2", true);
    let (b1, b2) = (manifest_blobs(&ours, "v1"), manifest_blobs(&ours, "v2"));
    let delta: BTreeSet<String> = b2.difference(&b1).cloned().collect();
    assert!(
        !delta.is_empty() && delta.len() < b2.len(),
        "{} of {}",
        delta.len(),
        b2.len()
    );

    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.addr());
    let repo = format!("docker://{}/debian/bookworm", proxy.addr());
    let r = transfer("push", &[&v1, &format!("{repo}:v1")]);
    assert_eq!(n(&r, "blobs_sent"), b1.len() as u64);
    let mut expect = b1.clone();
    expect.insert(manifest_hex(&ours, "v1"));
    assert_eq!(registry.stored_blobs(), expect);

    // The second version sends exactly the chunks the first lacks: counted in the
    // registry's storage and on the wire.
    proxy.reset_counts();
    let r = transfer("push", &[&v2, &format!("{repo}:v2")]);
    assert_eq!(n(&r, "blobs_sent"), delta.len() as u64);
    // In bytes: the stored bytes of the chunks v1 lacks, plus v2's metadata, manifest and the
    // packs' seek tables (within 10%).
    let stored = |tag: &str| -> std::collections::HashMap<_, u64> {
        let image = open(&ours, tag);
        let chunks = image.table().chunks();
        chunks
            .iter()
            .map(|c| (c.digest, c.pack.expect("chunks are in packs").stored_len))
            .collect()
    };
    let (c1, c2) = (stored("v1"), stored("v2"));
    let chunk_delta: u64 = c2
        .iter()
        .filter(|(d, _)| !c1.contains_key(*d))
        .map(|(_, len)| len)
        .sum();
    let true_delta = chunk_delta + open(&ours, "v2").metadata_size();
    let sent = n(&r, "bytes_sent");
    assert!(
        sent >= chunk_delta && sent as f64 <= 1.1 * true_delta as f64,
        "sent {sent} bytes for a delta of {true_delta}"
    );
    assert_eq!(n(&r, "blobs_skipped"), (b2.len() - delta.len()) as u64);
    assert_eq!(proxy.count(Kind::UploadPut), delta.len());
    let before = expect;
    let added: BTreeSet<String> = registry
        .stored_blobs()
        .difference(&before)
        .cloned()
        .collect();
    let mut expect = delta.clone();
    expect.insert(manifest_hex(&ours, "v2"));
    assert_eq!(added, expect);
    let again = transfer("push", &[&v2, &format!("{repo}:v2")]);
    assert_eq!(n(&again, "blobs_sent"), 0);

    // Pulled into an empty layout, the first version extracts to its tree.
    let pulled = tmp.path().join("pulled");
    let r = transfer(
        "pull",
        &[&format!("{repo}:v1"), &format!("{}:v1", s(&pulled))],
    );
    assert_eq!(n(&r, "blobs_sent"), b1.len() as u64);
    assert_eq!(manifest_hex(&pulled, "v1"), manifest_hex(&ours, "v1"));
    let x1 = tmp.path().join("x1");
    extract(&format!("{}:v1", s(&pulled)), &x1);
    assert_same_tree(&v1_tree, &x1, Compare::ALL);
    std::fs::remove_dir_all(&x1).unwrap();

    // Pulled beside it, the second version fetches only the delta.
    proxy.reset_counts();
    let r = transfer(
        "pull",
        &[&format!("{repo}:v2"), &format!("{}:v2", s(&pulled))],
    );
    assert_eq!(n(&r, "blobs_sent"), delta.len() as u64);
    assert_eq!(proxy.count(Kind::BlobGet), delta.len());
    let x2 = tmp.path().join("x2");
    extract(&format!("{}:v2", s(&pulled)), &x2);
    assert_same_tree(&v2_tree, &x2, Compare::ALL);
    assert_eq!(manifest_hex(&pulled, "v2"), manifest_hex(&ours, "v2"));
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo ({e}): run scripts/setup.sh"));
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn skopeo_reads_what_we_push_and_we_pull_what_it_pushes() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    corner_case_tree(&tree);
    let ours = tmp.path().join("ours");
    let image = build_image(&tree, &ours, "t", true);
    let registry = Registry::start(Auth::None);
    let at = |repo: &str| format!("docker://{}/{repo}:t", registry.addr());

    transfer("push", &[&image, &at("ours")]);
    let theirs = tmp.path().join("theirs");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &at("ours"),
        &format!("oci:{}:t", s(&theirs)),
    ]);
    assert_eq!(manifest_hex(&theirs, "t"), manifest_hex(&ours, "t"));
    assert_eq!(manifest_blobs(&theirs, "t"), manifest_blobs(&ours, "t"));
    assert_eq!(
        image_snapshot(&open(&theirs, "t")),
        image_snapshot(&open(&ours, "t"))
    );
    puzzlefs(&["check".as_ref(), format!("{}:t", s(&theirs)).as_ref()]);

    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", s(&ours)),
        &at("by-skopeo"),
    ]);
    let pulled = tmp.path().join("pulled");
    transfer("pull", &[&at("by-skopeo"), &format!("{}:t", s(&pulled))]);
    assert_eq!(manifest_hex(&pulled, "t"), manifest_hex(&ours, "t"));
    assert_eq!(
        image_snapshot(&open(&pulled, "t")),
        image_snapshot(&open(&ours, "t"))
    );
    puzzlefs(&["check".as_ref(), format!("{}:t", s(&pulled)).as_ref()]);
}

#[test]
fn copies_between_repositories_registries_and_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    corner_case_tree(&tree);
    let ours = tmp.path().join("ours");
    let image = build_image(&tree, &ours, "t", false);
    let blobs = manifest_blobs(&ours, "t");
    let one = Registry::start(Auth::None);
    let two = Registry::start(Auth::None);
    let at = |r: &Registry, repo: &str| format!("docker://{}/{repo}:t", r.addr());
    transfer("push", &[&image, &at(&one, "a")]);

    // Within one registry the blobs are mounted, not sent.
    let r = transfer("copy", &[&at(&one, "a"), &at(&one, "b")]);
    assert_eq!(n(&r, "blobs_mounted"), blobs.len() as u64);
    assert_eq!(n(&r, "blobs_sent"), 0);
    assert!(one.repo_layers("b").is_superset(&blobs));

    // Between registries they pass through.
    let r = transfer("copy", &[&at(&one, "b"), &at(&two, "c")]);
    assert_eq!(n(&r, "blobs_sent"), blobs.len() as u64);
    let mut expect = blobs.clone();
    expect.insert(manifest_hex(&ours, "t"));
    assert_eq!(two.stored_blobs(), expect);

    // By digest, into a layout, and from layout to layout.
    let digest = format!("sha256:{}", manifest_hex(&ours, "t"));
    let pulled = tmp.path().join("pulled");
    let by_digest = format!("docker://{}/c@{digest}", two.addr());
    transfer("copy", &[&by_digest, &format!("oci:{}:t", s(&pulled))]);
    let copied = tmp.path().join("copied");
    let r = transfer(
        "copy",
        &[
            &format!("{}@{digest}", s(&pulled)),
            &format!("{}:u", s(&copied)),
        ],
    );
    assert_eq!(n(&r, "blobs_sent"), blobs.len() as u64);
    for dir in [&pulled, &copied] {
        let tag = if dir == &pulled { "t" } else { "u" };
        assert_eq!(
            image_snapshot(&open(dir, tag)),
            image_snapshot(&open(&ours, "t"))
        );
    }
}

#[test]
fn upstream_images_push_and_pull_with_their_base_chunks() {
    let registry = Registry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let pulled = tmp.path().join("pulled");
    let src = upstream_layout();
    for tag in ["plain", "zstd", "v2"] {
        let dst = format!("docker://{}/upstream/{tag}:{tag}", registry.addr());
        let pushed = transfer("push", &[&format!("{}:{tag}", s(&src)), &dst]);
        // Upstream's --base-layer image (v2) leaves the base's chunks out of its manifest;
        // they move anyway, or the pulled image could not be read.
        assert_eq!(
            n(&pushed, "blobs_unlisted") > 0,
            tag == "v2",
            "{tag}: {pushed}"
        );
        // Each into a layout of its own: nothing else supplies a missing chunk.
        let dir = pulled.join(tag);
        let r = transfer("pull", &[&dst, &format!("{}:{tag}", s(&dir))]);
        assert_eq!(n(&r, "blobs_unlisted"), n(&pushed, "blobs_unlisted"));
        assert_eq!(
            image_snapshot(&open(&dir, tag)),
            image_snapshot(&open(&src, tag)),
            "{tag}"
        );
        let x = tmp.path().join(format!("x-{tag}"));
        extract(&format!("{}:{tag}", s(&dir)), &x);
    }
}

#[test]
fn a_push_mounts_what_the_registry_holds_in_the_repository_pushed_before() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    corner_case_tree(&tree);
    let ours = tmp.path().join("ours");
    let one = build_image(&tree, &ours, "one", true);
    std::fs::write(tree.join("new-file"), b"only in the second image").unwrap();
    let two = build_image(&tree, &ours, "two", true);
    let (b1, b2) = (manifest_blobs(&ours, "one"), manifest_blobs(&ours, "two"));
    let registry = Registry::start(Auth::None);
    let cache = tmp.path().join("cache");
    let push = |image: &str, repo: &str| {
        let dst = format!("docker://{}/{repo}:t", registry.addr());
        let out = succeeded(puzzlefs_with(
            &["push", "--tls-verify=false", "--json", image, &dst],
            &[("XDG_CACHE_HOME", cache.as_os_str())],
        ));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let r = push(&one, "m/a");
    assert_eq!(
        (n(&r, "blobs_sent"), n(&r, "blobs_mounted")),
        (b1.len() as u64, 0)
    );
    let r = push(&one, "m/b");
    assert_eq!(
        (n(&r, "blobs_sent"), n(&r, "blobs_mounted")),
        (0, b1.len() as u64)
    );
    assert!(registry.repo_layers("m/b").is_superset(&b1));
    let r = push(&two, "m/c");
    let shared = b2.intersection(&b1).count() as u64;
    assert_eq!(
        (n(&r, "blobs_sent"), n(&r, "blobs_mounted")),
        (b2.len() as u64 - shared, shared)
    );
    let history: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cache.join("puzzlefs/pushed-repositories.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        history[registry.addr()],
        serde_json::json!(["m/c", "m/b", "m/a"])
    );
}
