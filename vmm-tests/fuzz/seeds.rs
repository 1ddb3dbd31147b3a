//! Writes the seed corpora of every fuzz target: `cargo run --release --bin seeds -- corpus`.

use std::fs;
use std::path::Path;

use puzzlefs_virtiofsd::format::Digest;

fn main() {
    let out = std::env::args().nth(1).expect("usage: seeds CORPUS_DIR");
    for (target, seed) in puzzlefs_virtiofsd_fuzz::seeds::all() {
        let dir = Path::new(&out).join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(Digest::of(&seed).hex()), &seed).unwrap();
    }
}
