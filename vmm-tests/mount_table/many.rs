//! Many mounts, every byte verified: images in every slot but one, a pass-through directory in
//! that one, the next mount refused with 409; the front end walks the whole table (LOOKUP +
//! GETATTR, then READDIRPLUS), reads every file and random blocks of the big ones, and
//! compares all of it with a host tree laid out the same way. The per-mount metrics must add
//! up to exactly the bytes the front end read.

use std::path::Path;

use virtiofs_frontend::{Guest, Profile, RunOptions, Workload};

use super::{
    assert_error_body, copy_tree, file_stats, fixtures, mount_metrics, op_requests, Mirror,
    TableDaemon,
};

const RANDOM_READS: usize = 500;
const RANDOM_READ_BYTES: u64 = 4096;

struct Case {
    sandbox: &'static [&'static str],
    /// Image mounts (the pass-through at /containers comes on top).
    images: usize,
    profile: Profile,
    queues: usize,
    depth: usize,
}

fn many_mounts(case: Case) {
    let fx = fixtures();
    let d = TableDaemon::start(case.sandbox);
    let mirror = Mirror::empty();

    // Kata's first mount: its shared directory, here a private copy of a fixture tree.
    let share = tempfile::tempdir().unwrap();
    let shared = share.path().join("shared");
    copy_tree(&fx.sets[0].tree, &shared, false);
    d.must_mount(
        "/containers",
        "passthrough_fs",
        shared.to_str().unwrap(),
        "",
    );
    mirror.add("/containers", &shared);

    // Every image, plain and compressed, named each way a request may name it.
    let mut expected = std::collections::BTreeMap::new();
    expected.insert(
        "/containers".to_string(),
        ("passthrough_fs".to_string(), shared.display().to_string()),
    );
    for i in 0..case.images {
        let set = &fx.sets[i % fx.sets.len()];
        let img = if (i / fx.sets.len()).is_multiple_of(2) {
            &set.plain
        } else {
            &set.zstd
        };
        let at = format!("/m/{i}");
        let by_digest = format!("{}@{}", fx.oci.display(), img.digest);
        let pin = format!(r#"{{"digest":"{}"}}"#, img.digest);
        let (fs_type, source, config) = match i % 4 {
            0 => ("rafs", img.target.as_str(), ""),
            1 => ("puzzlefs", by_digest.as_str(), ""),
            2 => ("rafs", img.target.as_str(), pin.as_str()),
            _ => ("puzzlefs", by_digest.as_str(), "{}"),
        };
        d.must_mount(&at, fs_type, source, config);
        mirror.add(&at, &set.tree);
        expected.insert(at, (fs_type.to_string(), source.to_string()));
    }
    if case.images + 1 == 255 {
        let r = d.mount("/m/full", "rafs", &fx.sets[0].plain.target, "");
        assert_error_body(&r, 409, "the 256th mount");
        assert!(r.body.contains("slots"), "{}", r.body);
    }
    assert_eq!(d.backends(), expected, "backend_collection");

    let mut o = RunOptions::new(&d.sock);
    o.profile = case.profile;
    o.request_queues = case.queues;
    o.depth = case.depth;
    o.queue_size = 256;
    o.random_reads = RANDOM_READS;
    o.verify = Some(mirror.root().to_path_buf());
    // The whole table, from its root, through one connection kept open for the metrics.
    let mut g = Guest::connect(&o).unwrap_or_else(|e| panic!("front end: {e}"));
    let all_workloads = [
        Workload::Walk,
        Workload::Readdirplus,
        Workload::Read,
        Workload::Random,
    ];
    let report = g
        .workloads(1, Some(mirror.root()), &all_workloads)
        .unwrap_or_else(|e| panic!("front end: {e}\n{:#?}", d.daemon.stderr()));
    let all = file_stats(mirror.root());
    assert_eq!(
        report.verified_files, all.files,
        "every file read and checked"
    );
    assert!(report.workloads.iter().all(|w| w.ops > 0), "{report:?}");
    eprintln!(
        "verified {} entries, {} files, {} bytes over {} mounts",
        report.entries,
        all.files,
        all.bytes,
        expected.len()
    );

    check_metrics(&d, mirror.root(), &expected, all.bytes);
    g.stop().unwrap();

    // The VMM is gone: so is the daemon, with both its sockets.
    let mut daemon = d.daemon;
    let status = daemon.wait_exit(crate::harness::DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
    assert!(!d.api.exists() && !d.sock.exists(), "socket files left");
}

/// Every mount was read, by exactly the bytes of its files plus its share of the random
/// reads; the table's own directories read nothing; `/metrics` has the same numbers.
fn check_metrics(
    d: &TableDaemon,
    mirror: &Path,
    expected: &std::collections::BTreeMap<String, (String, String)>,
    all_bytes: u64,
) {
    let m = d.metrics();
    let mounts = m["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), expected.len(), "one entry per mount");
    assert_eq!(m["mounts_total"], expected.len() as u64);
    assert_eq!(m["umounts_total"], 0);
    assert_eq!(m["pseudo"]["bytes_read"], 0);
    let mut total = 0;
    let prometheus = d.prometheus();
    for at in expected.keys() {
        let mount = mount_metrics(&m, at);
        let st = file_stats(&mirror.join(at.trim_start_matches('/')));
        let (files, bytes) = (st.files as u64, st.bytes);
        let read = mount["bytes_read"].as_u64().unwrap();
        let requests = op_requests(mount, "read");
        // Each whole-file read ends at the file's size; random reads are whole blocks.
        assert!(read >= bytes, "{at}: read {read} of {bytes} bytes");
        assert_eq!(
            (read - bytes) % RANDOM_READ_BYTES,
            0,
            "{at}: {read} bytes read"
        );
        assert!(requests >= files, "{at}: {requests} reads, {files} files");
        assert_eq!(
            op_requests(mount, "open"),
            files + st.large as u64,
            "{at}: one OPEN per file, one more per large file (random reads)"
        );
        assert!(mount["slot"].as_u64().unwrap() >= 1);
        assert_eq!(mount["generation"], 1, "{at}");
        total += read;
        let fs_type = &mount["fs_type"];
        let line =
            format!("puzzlefs_read_bytes_total{{mountpoint=\"{at}\",fs_type={fs_type}}} {read}\n");
        assert!(prometheus.contains(&line), "no {line:?} in /metrics");
        let reads = format!(
            "puzzlefs_fuse_requests_total{{mountpoint=\"{at}\",fs_type={fs_type},op=\"read\"}} {requests}\n"
        );
        assert!(prometheus.contains(&reads), "no {reads:?} in /metrics");
    }
    assert_eq!(
        total,
        all_bytes + RANDOM_READS as u64 * RANDOM_READ_BYTES,
        "the mounts' bytes_read add up to what the front end read"
    );
}

/// All 255 slots (254 images and the pass-through), the 256th refused; two request queues,
/// 16 requests in flight, cloud-hypervisor's message flow; default sandbox and seccomp.
#[test]
fn every_slot_mounted_and_every_byte_verified() {
    many_mounts(Case {
        sandbox: &[],
        images: 254,
        profile: Profile::CloudHypervisor,
        queues: 2,
        depth: 16,
    });
}

/// The same without a sandbox (one process serves the API and the table), QEMU's message
/// flow, one queue, depth 4.
#[test]
fn every_slot_mounted_and_verified_without_sandbox() {
    many_mounts(Case {
        sandbox: &["--sandbox", "none"],
        images: 254,
        profile: Profile::Qemu,
        queues: 1,
        depth: 4,
    });
}
