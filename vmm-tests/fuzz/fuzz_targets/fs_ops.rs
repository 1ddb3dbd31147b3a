//! Fuzz target `fs_ops`: its body is `targets/fs_ops.rs`, which the replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = puzzlefs_virtiofsd_fuzz::fs_ops::run(data);
});
