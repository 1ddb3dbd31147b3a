//! The body of every fuzz target, in one place: the libFuzzer binaries (`fuzz_targets/`) and
//! the replay test of `cargo test` (`replay.rs`, which includes this file by path) run the same
//! code on the same inputs. Each `run` returns what it made of its input, so the replay test
//! can check that known-good inputs are read correctly and garbage is refused.

pub mod fs_ops;
pub mod layout;
pub mod metadata;
pub mod oci_json;
pub mod seeds;
pub mod seekable;

/// The targets, by the name of their binary and corpus folder.
pub const TARGETS: [&str; 4] = ["fs_ops", "metadata", "oci_json", "seekable"];

/// Runs target `name` on `data`: whether the target accepted the input (`None`: no such target).
pub fn accepts(name: &str, data: &[u8]) -> Option<bool> {
    Some(match name {
        "fs_ops" => fs_ops::run(data).is_some(),
        "metadata" => metadata::run(data).is_some(),
        "oci_json" => {
            let parsed = oci_json::run(data);
            parsed.tags.is_some() || parsed.rootfs_manifest
        }
        "seekable" => seekable::run(data).is_some(),
        _ => return None,
    })
}
