//! Fuzz target `seekable`: its body is `targets/seekable.rs`, which the replay test runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = puzzlefs_virtiofsd_fuzz::seekable::run(data);
});
