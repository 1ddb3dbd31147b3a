//! The committed Rust for `schema/metadata.capnp` must be exactly what capnpc generates from it.
//!
//! Run with `PFS_REGENERATE_SCHEMA=1` to rewrite `schema/metadata_capnp.rs` after editing the schema.

use std::path::Path;

#[test]
fn generated_schema_code_matches_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("temp dir");
    capnpc::CompilerCommand::new()
        .src_prefix(root.join("schema"))
        .file(root.join("schema/metadata.capnp"))
        .default_parent_module(vec!["format".into()])
        .output_path(out.path())
        .run()
        .expect("capnp compile (is the capnproto package installed?)");
    let fresh = std::fs::read_to_string(out.path().join("metadata_capnp.rs")).unwrap();
    let committed_path = root.join("schema/metadata_capnp.rs");
    if std::env::var_os("PFS_REGENERATE_SCHEMA").is_some() {
        std::fs::write(&committed_path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == fresh,
        "schema/metadata_capnp.rs is stale: rerun with PFS_REGENERATE_SCHEMA=1"
    );
}
