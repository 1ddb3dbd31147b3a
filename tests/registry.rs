//! `puzzlefs push`, `pull` and `copy` against a real CNCF distribution registry (Debian's
//! docker-registry, started per test by tests/registry_harness): only missing blobs move,
//! pulled images extract to the tree they were built from, skopeo reads what we push and we
//! read what it pushes, authentication (basic, bearer tokens) works, and a registry that
//! fails, refuses or corrupts gets one clear line and leaves nothing half written. Faults are
//! injected by a proxy in front of the real registry (the registry itself never misbehaves).

#[path = "registry/auth.rs"]
mod auth;
#[path = "registry/big.rs"]
mod big;
mod common;
#[path = "registry/faults.rs"]
mod faults;
#[path = "registry_harness/mod.rs"]
mod registry_harness;
#[path = "registry/transfer.rs"]
mod transfer;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use common::bin;
use puzzlefs_virtiofsd::oci::{ImageManifest, OciDir};

/// Runs `puzzlefs CMD ARGS... --tls-verify=false --json` and returns its report.
fn transfer(cmd: &str, args: &[&str]) -> serde_json::Value {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "puzzlefs {cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn run(cmd: &str, args: &[&str]) -> Output {
    puzzlefs_with(
        &[&[cmd], args, &["--tls-verify=false", "--json"]].concat(),
        &[],
    )
}

/// `puzzlefs ARGS...` with `env` added, and a cache directory of its own unless `env` names
/// one: no push history (mount hints) from other runs.
fn puzzlefs_with(args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(bin("puzzlefs"))
        .args(args)
        .env("XDG_CACHE_HOME", cache.path())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `out`, after checking that its run succeeded (else a panic with its stderr).
fn succeeded(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An image of the corner-case tree (`-c`, several chunks); returns `OCI:TAG` and the
/// layout's directory.
fn small_image(tmp: &Path) -> (String, std::path::PathBuf) {
    let tree = tmp.join("tree");
    common::corner_case_tree(&tree);
    let dir = tmp.join("ours");
    (common::build_image(&tree, &dir, "t", true), dir)
}

/// Runs a transfer that must fail; returns its one line of error, which must name `needle`.
fn transfer_fails(cmd: &str, args: &[&str], needle: &str) -> String {
    let out = run(cmd, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "puzzlefs {cmd} {args:?} should fail");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("puzzlefs: "), "{err}");
    assert!(err.contains(needle), "{needle:?} in {err}");
    err
}

fn n(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

/// The hex digests of the blobs (config and layers) an image's manifest lists.
fn manifest_blobs(dir: &Path, tag: &str) -> BTreeSet<String> {
    let oci = OciDir::open(dir).unwrap();
    let m: ImageManifest = oci.read_manifest(&oci.resolve(tag).unwrap()).unwrap();
    std::iter::once(&m.config)
        .chain(&m.layers)
        .map(|d| d.digest.hex())
        .collect()
}

/// The manifest digest a tag names (hex).
fn manifest_hex(dir: &Path, tag: &str) -> String {
    OciDir::open(dir)
        .unwrap()
        .resolve(tag)
        .unwrap()
        .digest
        .hex()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `puzzlefs extract` of `OCI:TAG` into `dest`.
fn extract(image: &str, dest: &Path) {
    common::puzzlefs(&[OsStr::new("extract"), OsStr::new(image), dest.as_os_str()]);
}

/// Files under the layout's root and blobs directory other than blobs, the index and the
/// layout marker: what an interrupted or failed transfer might leave.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in [dir.to_path_buf(), dir.join("blobs/sha256")] {
        for e in std::fs::read_dir(&d).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let known = matches!(name.as_str(), "blobs" | "oci-layout" | "index.json")
                || (name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()));
            if !known {
                out.push(name);
            }
        }
    }
    out
}
