//! Benchmark: what checking every chunk's sha256 costs a whole-image read through the reader.
//!
//! `cargo bench --bench verify -- OCI_DIR TAG [RUNS]` (scripts/bench-verify.sh builds the
//! images and runs it). Each run reads every regular file of the image once, single-threaded,
//! in four ways:
//! - cold, verified: `puzzlefs_virtiofsd::reader::Image` with an empty chunk cache, what we ship (each chunk
//!   read, sha256-checked, decompressed, cached, then copied out);
//! - cold, unverified: the same walk, cache and copies, with chunks read and decompressed by
//!   `puzzlefs_virtiofsd::chunk` directly, skipping only the sha256 check (exists only in this benchmark);
//! - warm: the verified image again, every chunk from its cache;
//! - sha256 alone: the digest of every stored blob, already in memory.
//!
//! Reported: MB/s of file bytes (wall clock) and CPU seconds per GB of file bytes (this
//! thread's CPU time, stable on shared machines where wall clock is not), medians over runs,
//! and verification's share of the cold verified read's CPU time.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use puzzlefs_virtiofsd::chunk::decompress_seekable;
use puzzlefs_virtiofsd::format::Digest;
use puzzlefs_virtiofsd::oci::OciDir;
use puzzlefs_virtiofsd::reader::{
    ChunkInfo, HeapChunkCache, Image, InodeTable, NodeData, NodeId, OpenOptions, MAX_BLOB_BYTES,
};

/// Big enough to keep every chunk of the image: the warm pass must not miss.
const WHOLE_IMAGE_CACHE: usize = 1 << 40;

/// Wall-clock and CPU time of one pass.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn measure(pass: impl FnOnce()) -> Cost {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    pass();
    Cost {
        wall: wall.elapsed(),
        cpu: thread_cpu() - cpu,
    }
}

fn files(table: &InodeTable) -> impl Iterator<Item = NodeId> + '_ {
    (0..table.len() as NodeId).filter(|&n| matches!(table.node(n).data, NodeData::File(_)))
}

/// Every file through the reader; returns the bytes read.
fn read_verified(image: &Image, out: &mut Vec<u8>) -> u64 {
    let mut total = 0u64;
    for node in files(image.table()) {
        total += image
            .read_with(node, 0, u64::MAX, |piece| {
                out.clear();
                out.extend_from_slice(piece);
                Ok::<(), puzzlefs_virtiofsd::reader::ReaderError>(())
            })
            .expect("verified read");
    }
    black_box(out);
    total
}

/// The reader's loader without its sha256 check.
fn load_unverified(oci: &OciDir, blob: &ChunkInfo) -> Vec<u8> {
    let raw = std::fs::read(oci.blob_path(&blob.digest)).expect("blob");
    if blob.compressed {
        decompress_seekable(&raw, MAX_BLOB_BYTES).expect("seekable blob")
    } else {
        raw
    }
}

/// Every file, chunks loaded into a cache as the reader does, without verification.
fn read_unverified(oci: &OciDir, table: &InodeTable, out: &mut Vec<u8>) -> u64 {
    let cache = HeapChunkCache::new(WHOLE_IMAGE_CACHE);
    let blobs = table.chunks();
    let mut total = 0u64;
    for node in files(table) {
        for e in table.extents(node) {
            let blob = &blobs[e.chunk as usize];
            let Ok(data) = cache.get_or_load(&blob.into(), || {
                Ok::<_, std::convert::Infallible>(load_unverified(oci, blob))
            });
            let piece = &data[e.chunk_offset as usize..e.chunk_end() as usize];
            out.clear();
            out.extend_from_slice(piece);
            total += u64::from(e.len);
        }
    }
    black_box(out);
    total
}

/// Cold then warm reads of every file through `image`, opened with an empty cache.
fn verified_passes(image: Image, out: &mut Vec<u8>, file_bytes: u64) -> (Cost, Cost) {
    let cold = measure(|| assert_eq!(read_verified(&image, out), file_bytes));
    let misses = image.cache().stats().1;
    let warm = measure(|| assert_eq!(read_verified(&image, out), file_bytes));
    assert_eq!(image.cache().stats().1, misses, "warm pass loaded a chunk");
    (cold, warm)
}

fn unverified_pass(oci: &OciDir, table: &InodeTable, out: &mut Vec<u8>, file_bytes: u64) -> Cost {
    measure(|| assert_eq!(read_unverified(oci, table, out), file_bytes))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [oci, tag, rest @ ..] = &args[..] else {
        eprintln!("usage: cargo bench --bench verify -- OCI_DIR TAG [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = rest.first().map_or(5, |r| r.parse().expect("RUNS"));
    let oci = OciDir::open(std::path::Path::new(oci)).expect("OCI directory");
    let open = || {
        let options = OpenOptions {
            cache: Some(Arc::new(HeapChunkCache::new(WHOLE_IMAGE_CACHE))),
            ..OpenOptions::default()
        };
        Image::open(&oci, tag, options).expect("image")
    };
    // The image's table, and its file bytes counted, with a cache that keeps nothing.
    let index = Image::open(
        &oci,
        tag,
        OpenOptions {
            cache: Some(Arc::new(HeapChunkCache::new(0))),
            ..OpenOptions::default()
        },
    )
    .expect("image");
    let table = index.table();
    let mut blobs: Vec<Digest> = table.chunks().iter().map(|b| b.digest).collect();
    blobs.sort();
    blobs.dedup();
    let stored: Vec<Vec<u8>> = blobs
        .iter()
        .map(|d| std::fs::read(oci.blob_path(d)).expect("blob"))
        .collect();
    let stored_bytes: usize = stored.iter().map(Vec::len).sum();

    let mut out = Vec::with_capacity(MAX_BLOB_BYTES as usize);
    let names = [
        "cold, verified",
        "cold, unverified",
        "warm (chunk cache)",
        "sha256 alone",
    ];
    let mut costs: [Vec<Cost>; 4] = Default::default();
    let file_bytes = read_verified(&index, &mut out);
    // Run 0 warms the allocator up and is not counted; the cold passes alternate in order so
    // neither always comes first (the first pass after a free pays more page faults).
    for run in 0..=runs {
        let (cold, warm, unverified);
        if run % 2 == 0 {
            (cold, warm) = verified_passes(open(), &mut out, file_bytes);
            unverified = unverified_pass(&oci, table, &mut out, file_bytes);
        } else {
            unverified = unverified_pass(&oci, table, &mut out, file_bytes);
            (cold, warm) = verified_passes(open(), &mut out, file_bytes);
        }
        let sha = measure(|| {
            for blob in &stored {
                black_box(Digest::of(blob));
            }
        });
        if run > 0 {
            for (pass, cost) in costs.iter_mut().zip([cold, unverified, warm, sha]) {
                pass.push(cost);
            }
        }
    }

    let gb = file_bytes as f64 / 1e9;
    println!(
        "{oci}:{tag}: {} files, {:.1} MB of file data, {} blobs, {:.1} MB stored; {runs} runs",
        files(table).count(),
        file_bytes as f64 / 1e6,
        blobs.len(),
        stored_bytes as f64 / 1e6,
        oci = oci.path().display(),
    );
    println!("| pass | MB/s (median) | CPU s per GB (median) | CPU s per GB (min-max) |");
    println!("|---|---:|---:|---:|");
    let mut cpu_per_gb = [0.0; 4];
    for (i, name) in names.iter().enumerate() {
        let mbs = median(
            costs[i]
                .iter()
                .map(|c| file_bytes as f64 / 1e6 / c.wall.as_secs_f64())
                .collect(),
        );
        cpu_per_gb[i] = median(costs[i].iter().map(|c| c.cpu.as_secs_f64() / gb).collect());
        let cpu = costs[i].iter().map(|c| c.cpu.as_secs_f64() / gb);
        let (low, high) = cpu.fold((f64::MAX, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
        println!(
            "| {name} | {mbs:.0} | {:.3} | {low:.3}-{high:.3} |",
            cpu_per_gb[i]
        );
    }
    println!(
        "verification share of the cold verified read's CPU: {:.1}% (verified minus \
         unverified), {:.1}% (sha256 alone)",
        100.0 * (cpu_per_gb[0] - cpu_per_gb[1]) / cpu_per_gb[0],
        100.0 * cpu_per_gb[3] / cpu_per_gb[0],
    );
}
