//! A registry that fails, refuses or corrupts: one clear line, retries where retrying can
//! help, nothing of a bad blob kept, no tag for an incomplete image, and an interrupted
//! transfer run again moves only what is still missing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::registry_harness::{Auth, FaultProxy, Kind, Outcome, Registry, ALWAYS};
use super::{
    leftovers, manifest_blobs, n, puzzlefs_with, s, small_image, transfer, transfer_fails,
};
use crate::common::{bin, debian_tree, puzzlefs};
use puzzlefs_virtiofsd::oci::OciDir;

#[test]
fn a_corrupted_blob_fails_the_pull_and_nothing_of_it_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, ours) = small_image(tmp.path());
    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.addr());
    let src = format!("docker://{}/c/img:t", proxy.addr());
    transfer("push", &[&image, &src]);
    let oci = OciDir::open(&ours).unwrap();
    let manifest = oci.read_manifest(&oci.resolve("t").unwrap()).unwrap();
    let victim = manifest.layers.last().unwrap().digest.hex();
    proxy.corrupt_blob(&victim, ALWAYS);
    let dest = tmp.path().join("pulled");
    let target = format!("{}:t", s(&dest));
    transfer_fails("pull", &[&src, &target], &victim);
    assert!(!dest.join("blobs/sha256").join(&victim).exists());
    assert!(OciDir::open(&dest)
        .unwrap()
        .read_index()
        .unwrap()
        .tags()
        .is_empty());
    assert_eq!(leftovers(&dest), Vec::<String>::new());
    // Once the registry serves the right bytes, the same pull completes.
    proxy.clear_rules();
    transfer("pull", &[&src, &target]);
    puzzlefs(&["check".as_ref(), target.as_ref()]);
}

/// A blob whose transfer breaks halfway is fetched on from where it broke (`Range`), not
/// again from its first byte, and checks out.
#[test]
fn a_broken_blob_transfer_resumes_where_it_broke() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, ours) = small_image(tmp.path());
    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.addr());
    let src = format!("docker://{}/r/img:t", proxy.addr());
    transfer("push", &[&image, &src]);
    let oci = OciDir::open(&ours).unwrap();
    let manifest = oci.read_manifest(&oci.resolve("t").unwrap()).unwrap();
    let victim = manifest.layers.iter().max_by_key(|l| l.size).unwrap();
    assert!(victim.size > 1000, "{victim:?}");
    proxy.cut_blob(&victim.digest.hex(), 1);
    let dest = tmp.path().join("pulled");
    let target = format!("{}:t", s(&dest));
    transfer("pull", &[&src, &target]);
    puzzlefs(&["check".as_ref(), target.as_ref()]);
    let gets: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.kind == Kind::BlobGet && r.path.contains(&victim.digest.hex()))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[0].range, None);
    let resumed_at: u64 = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{gets:#?}"));
    assert!(resumed_at > 0 && resumed_at < victim.size, "{gets:#?}");
    assert_eq!(gets[1].outcome, Outcome::Forwarded(206), "{gets:#?}");
    assert_eq!(leftovers(&dest), Vec::<String>::new());
}

#[test]
fn statuses_give_one_clear_line_and_no_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = small_image(tmp.path());
    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.addr());
    // (status, where, what the line says, tries: 429, 5xx and a lost upload session are
    // retried, once with --retries 1; the rest are not).
    let cases: [(u16, &str, &str, &str, usize); 7] = [
        (401, "POST", "/blobs/uploads/", "401 Unauthorized", 1),
        (403, "PUT", "/manifests/", "403 Forbidden", 1),
        (404, "POST", "/blobs/uploads/", "404 Not Found", 2),
        (413, "PUT", "/blobs/uploads/", "413 Payload Too Large", 1),
        (429, "HEAD", "/blobs/", "429 Too Many Requests", 2),
        (
            500,
            "POST",
            "/blobs/uploads/",
            "500 Internal Server Error",
            2,
        ),
        (503, "PUT", "/manifests/", "503 Service Unavailable", 2),
    ];
    for (i, (status, method, part, needle, tries)) in cases.into_iter().enumerate() {
        proxy.clear_rules();
        proxy.reset_counts();
        proxy.fail(method, part, status, ALWAYS);
        let repo = format!("s/r{i}");
        let dst = format!("docker://{}/{repo}:t", proxy.addr());
        let err = transfer_fails("push", &[&image, &dst, "--retries", "1", "-j", "1"], needle);
        assert!(err.contains(&proxy.addr()), "{err}");
        assert_eq!(proxy.faults_injected(), tries, "{status}");
        assert!(registry.repo_tags(&repo).is_empty(), "{status}");
    }
    proxy.clear_rules();
    // A tag the registry does not have, straight from the real registry: the layout the pull
    // would have created is not left behind.
    let missing = format!("docker://{}/s/none:t", registry.addr());
    transfer_fails(
        "pull",
        &[&missing, &format!("{}:t", s(&tmp.path().join("p")))],
        "MANIFEST_UNKNOWN",
    );
    assert!(!tmp.path().join("p").exists());
    // A plain-HTTP registry without --tls-verify=false is explained.
    let plain = format!("{}:t", s(&tmp.path().join("plain")));
    let out = puzzlefs_with(&["pull", &missing, &plain], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--tls-verify=false"),
        "{err}"
    );
    assert!(!tmp.path().join("plain").exists());
}

#[test]
fn transient_failures_are_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, ours) = small_image(tmp.path());
    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.addr());
    let dst = format!("docker://{}/t/img:t", proxy.addr());
    proxy.fail("HEAD", "/blobs/", 503, 2);
    proxy.drop_connection("PUT", "/blobs/uploads/", 1);
    proxy.fail("PUT", "/manifests/", 502, 1);
    let r = transfer("push", &[&image, &dst]);
    assert_eq!(proxy.faults_injected(), 4);
    assert_eq!(n(&r, "blobs_sent"), manifest_blobs(&ours, "t").len() as u64);
    proxy.clear_rules();
    proxy.fail("GET", "/blobs/", 500, 1);
    proxy.drop_connection("GET", "/manifests/", 1);
    let pulled = format!("{}:t", s(&tmp.path().join("pulled")));
    transfer("pull", &[&dst, &pulled]);
    assert_eq!(proxy.faults_injected(), 6);
    puzzlefs(&["check".as_ref(), pulled.as_ref()]);
}

/// Starts `puzzlefs ARGS` and SIGKILLs it once `ready` holds (it must not finish first).
fn kill_when(args: &[&str], ready: impl Fn() -> bool) {
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("puzzlefs"))
        .args(args)
        .arg("--tls-verify=false")
        .env("XDG_CACHE_HOME", cache.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{args:?} finished before the kill"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{args:?} made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn killed_push_and_pull_run_again_move_only_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    // Small packs of small frame groups: hundreds of blobs, so the kills land mid-transfer.
    let image = format!("{}:v1", s(&ours));
    puzzlefs(&[
        "build".as_ref(),
        "-c".as_ref(),
        "--pack-size=128K".as_ref(),
        "--frame-size=128K".as_ref(),
        debian_tree().as_os_str(),
        image.as_ref(),
    ]);
    let total = manifest_blobs(&ours, "v1").len() as u64;
    assert!(total > 250, "{total} blobs");
    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.addr());
    let dst = format!("docker://{}/k/deb:v1", proxy.addr());

    kill_when(&["push", "-j", "1", &image, &dst], || {
        proxy.count(Kind::UploadPut) >= 100
    });
    assert!(registry.repo_tags("k/deb").is_empty());
    // An upload the killed push had in flight may still land in the registry's storage: count
    // once the count stops moving.
    let mut stored = registry.stored_blobs().len() as u64;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = registry.stored_blobs().len() as u64;
        if now == stored {
            break;
        }
        stored = now;
    }
    let r = transfer("push", &[&image, &dst]);
    assert_eq!(n(&r, "blobs_skipped"), stored);
    assert_eq!(n(&r, "blobs_sent") + n(&r, "blobs_skipped"), total);
    assert!(stored >= 100 && stored < total, "{stored} of {total}");

    let pulled = tmp.path().join("pulled");
    let target = format!("{}:v1", s(&pulled));
    proxy.reset_counts();
    kill_when(&["pull", "-j", "1", &dst, &target], || {
        proxy.count(Kind::BlobGet) >= 200
    });
    // No tag, and the index is whole (if there is one at all).
    assert!(OciDir::open(&pulled)
        .unwrap()
        .read_index()
        .unwrap()
        .tags()
        .is_empty());
    let present = OciDir::open(&pulled).unwrap().list_blobs().unwrap().len() as u64;
    assert!(present >= 190, "{present}");
    let r = transfer("pull", &[&dst, &target]);
    assert_eq!(n(&r, "blobs_skipped"), present);
    assert_eq!(n(&r, "blobs_sent") + n(&r, "blobs_skipped"), total);
    puzzlefs(&["check".as_ref(), target.as_ref()]);
    // A SIGKILL leaves nothing half-written: blobs in flight were unnamed files.
    let left = leftovers(&pulled);
    assert!(left.is_empty(), "{left:?}");
}
