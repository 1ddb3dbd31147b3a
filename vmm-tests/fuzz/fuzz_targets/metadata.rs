//! Fuzz target `metadata`: its body is `targets/metadata.rs`, which the replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = puzzlefs_virtiofsd_fuzz::metadata::run(data);
});
