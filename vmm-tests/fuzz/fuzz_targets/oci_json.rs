//! Fuzz target `oci_json`: its body is `targets/oci_json.rs`, which the replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = puzzlefs_virtiofsd_fuzz::oci_json::run(data);
});
