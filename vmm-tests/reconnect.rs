//! VMM reconnects through the native front end, cloud-hypervisor style: with `--reconnect`
//! our daemon serves connection after connection on one socket with the same FUSE session
//! (the front end never sends INIT again and keeps its node ids and handles), every byte read
//! verified, its memory flat over 100 reconnects; without the flag it exits on the first
//! disconnect, as virtiofsd does. Correctness and resources only: no timing is asserted.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use harness::daemon::Daemon;
use harness::tree::frontend_tree as tree;
use harness::{image, DAEMON_DEADLINE};
use virtiofs_frontend::{run, Profile, RunOptions, RunReport, Workload};

/// The image built from [`tree`], made once.
fn target() -> &'static str {
    static IMAGE: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    &IMAGE
        .get_or_init(|| {
            let oci = tempfile::tempdir().unwrap();
            let img = image::build(tree(), oci.path(), "reconnect", true);
            (oci, img.target)
        })
        .1
}

/// cloud-hypervisor, two request queues, depth 16, walk then read the whole image, verified.
fn options(socket: &Path, reconnects: usize, every: usize) -> RunOptions {
    let mut o = RunOptions::new(socket);
    o.profile = Profile::CloudHypervisor;
    o.request_queues = 2;
    o.queue_size = 256;
    o.depth = 16;
    o.workloads = vec![Workload::Walk, Workload::Read];
    o.verify = Some(tree().to_path_buf());
    o.reconnects = reconnects;
    o.reconnect_every = every;
    o
}

fn files(root: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            n += files(&e.path());
        } else if t.is_file() {
            n += 1;
        }
    }
    n
}

fn check_verified(r: &RunReport) {
    assert_eq!(r.verified_files, Some(files(tree())), "{r:?}");
    for w in &r.workloads {
        assert!(w.ops > 0, "{w:?}");
    }
}

/// The process serving the device: the deepest under the supervisor `pid` (respawner ->
/// waiter -> daemon, or supervisor -> daemon), or `pid` itself.
fn server_pid(pid: u32) -> u32 {
    let first_child = |p: u32| {
        std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()
    };
    let mut p = pid;
    while let Some(c) = first_child(p) {
        p = c;
    }
    p
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..i + 3].to_string()))
        .is_some_and(|state| state != "Z" && state != "X")
}

fn connections(d: &Daemon) -> usize {
    d.stderr()
        .iter()
        .filter(|l| l.contains("front end connected"))
        .count()
}

/// Stops a daemon that keeps listening, as Kata does (SIGTERM), and checks it exits cleanly.
fn terminate(mut d: Daemon) {
    // SAFETY: kill(2) on our own child's pid, with a plain signal number.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) }, 0);
    let status = d.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
}

#[test]
fn twenty_reconnects_mid_read_every_byte_verified_and_the_daemon_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let daemon = image::serve(&socket, target(), &["--reconnect"]);
    // Every 8 completions: all 20 reconnects fall inside the walk and the reads.
    let o = options(&socket, 20, 8);
    let r = run(&o).unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    assert_eq!(r.reconnects, 20);
    assert_eq!(r.reconnects_during_workloads, 20, "{r:?}");
    let inits = r.messages.iter().filter(|m| *m == "(reconnected)").count();
    assert_eq!(inits, 20, "{:?}", r.messages);
    check_verified(&r);
    let read = r.workloads.iter().find(|w| w.workload == Workload::Read);
    assert!(read.is_some_and(|w| w.bytes > 6 << 20), "{r:?}");
    // The session's end was one more disconnect: the daemon is still there, listening.
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(daemon.pid()), "{:#?}", daemon.stderr());
    assert_eq!(connections(&daemon), 21, "{:#?}", daemon.stderr());
    UnixStream::connect(&socket).expect("still listening");
    terminate(daemon);
}

#[test]
fn without_the_flag_the_daemon_exits_on_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let mut daemon = image::serve(&socket, target(), &[]);
    let r = run(&options(&socket, 0, 1)).unwrap_or_else(|e| panic!("{e}"));
    check_verified(&r);
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "daemon: {status}");
    assert!(UnixStream::connect(&socket).is_err(), "nobody listens");
}

#[test]
fn memory_stays_flat_over_a_hundred_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let daemon = image::serve(&socket, target(), &["--reconnect"]);
    let server = server_pid(daemon.pid());
    // Warm-up: 10 reconnects during the workloads (caches and allocator arenas fill), then
    // 100 at the end, each checked with a GETATTR. RSS is sampled when connection 11 is up
    // and once the last one is closed.
    let daemon = Arc::new(Mutex::new(daemon));
    let before = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (daemon, before, done) = (daemon.clone(), before.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if before.lock().unwrap().is_none() && connections(&daemon.lock().unwrap()) >= 11 {
                    *before.lock().unwrap() = Some(vm_rss_kib(server));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let o = options(&socket, 110, 40);
    let r = run(&o);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let daemon = Arc::try_unwrap(daemon).ok().unwrap().into_inner().unwrap();
    let r = r.unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    assert_eq!(r.reconnects, 110);
    check_verified(&r);
    std::thread::sleep(Duration::from_millis(200));
    let after = vm_rss_kib(server);
    let before = before.lock().unwrap().expect("connection 11 was seen");
    eprintln!("server VmRSS: {before} KiB at connection 11, {after} KiB after connection 111");
    assert!(
        after < before + 2048,
        "VmRSS grew from {before} to {after} KiB over 100 reconnects"
    );
    assert!(alive(daemon.pid()));
    terminate(daemon);
}

/// A mount table daemon with `--reconnect`, started as Kata's Go runtime starts nydusd (with
/// the flag from `virtio_fs_extra_args`); its vhost-user and API sockets.
fn table_daemon(dir: &Path) -> (Daemon, std::path::PathBuf, std::path::PathBuf) {
    let socket = dir.join("vfs.sock");
    let api = dir.join("api.sock");
    let daemon = Daemon::spawn(&[
        "virtiofs",
        "--log-level",
        "info",
        "--apisock",
        api.to_str().unwrap(),
        "--sock",
        socket.to_str().unwrap(),
        "--reconnect",
    ]);
    (daemon, socket, api)
}

/// Kata's nydus mode (`virtiofs --apisock`) takes the flag too: an empty mount table's root
/// answers after each of 5 reconnects.
#[test]
fn mount_table_mode_serves_across_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, socket, _api) = table_daemon(dir.path());
    daemon.wait_for_line(harness::daemon::READY_LINE, DAEMON_DEADLINE);
    let mut o = options(&socket, 5, 1);
    o.workloads = Vec::new();
    o.verify = None;
    let r = run(&o).unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    assert_eq!(r.reconnects, 5);
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(daemon.pid()), "{:#?}", daemon.stderr());
    assert_eq!(connections(&daemon), 6, "{:#?}", daemon.stderr());
    terminate(daemon);
}

fn generations(d: &Daemon) -> usize {
    d.stderr()
        .iter()
        .filter(|l| l.contains("serving process generation") && l.contains("started"))
        .count()
}

/// utime+stime of `pid`, seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A resumed connection (INIT answered on an earlier one) that sits idle costs next to no
/// CPU. Regression: the ring primer's poke was a level-triggered eventfd nobody drained, so
/// the threads of the queues the front end never set up (14 of 16 here) spun for 10 s.
#[test]
fn an_idle_resumed_connection_costs_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let daemon = image::serve(&socket, target(), &["--reconnect"]);
    let mut o = options(&socket, 0, 1);
    o.workloads = vec![Workload::Walk];
    o.verify = None;
    run(&o).unwrap_or_else(|e| panic!("{e}"));
    let server = server_pid(daemon.pid());
    let (mut ready, mut out) = UnixStream::pair().unwrap();
    let (input, feed) = UnixStream::pair().unwrap();
    let session = std::thread::spawn(move || {
        virtiofs_frontend::run_reading_paths(&o, &mut std::io::BufReader::new(input), &mut out)
    });
    let mut line = [0u8; 15];
    std::io::Read::read_exact(&mut ready, &mut line).unwrap();
    assert_eq!(&line, b"{\"ready\":true}\n");
    let before = cpu_s(server);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_s(server) - before;
    drop(feed);
    session.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert!(spent < 0.3, "{spent:.2} s of CPU in 2 s of idling");
    terminate(daemon);
}

/// A daemon behind a respawner on `socket`, and a run that kills its serving process 20 times,
/// about every 24 answers.
fn twenty_kills(socket: &Path) -> (Daemon, RunOptions) {
    let daemon = image::serve(socket, target(), &["--reconnect", "--sandbox", "namespace"]);
    let mut o = options(socket, 20, 24);
    o.kill_under = Some(daemon.pid());
    (daemon, o)
}

/// Crash recovery: the serving process is SIGKILLed 20 times while the walk and the reads
/// run (here with nothing in flight; the next test kills with requests in flight). Each time
/// the supervisor, the PID the VMM holds, starts a new one that opens the image by its
/// manifest digest and replays the guest's INIT; the front end reconnects and goes on with
/// its node ids and handles, every byte verified. Blackouts are reported, not asserted.
#[test]
fn twenty_sigkills_of_the_serving_process_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, o) = twenty_kills(&dir.path().join("vfs.sock"));
    let r = run(&o).unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    check_verified(&r);
    assert_eq!(r.reconnects, 20);
    // A kill at the end of one workload and one before the next answer share a blackout.
    let n = r.restart_blackouts_ms.len();
    assert!(
        (15..=20).contains(&n),
        "{n} blackouts measured for 20 kills"
    );
    let mut ms = r.restart_blackouts_ms.clone();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "blackout after SIGKILL: p50 {:.0} ms, p99 {:.0} ms ({n} measured over 20 restarts)",
        ms[n / 2],
        ms[n - 1]
    );
    assert!(alive(daemon.pid()), "{:#?}", daemon.stderr());
    assert_eq!(generations(&daemon), 21, "{:#?}", daemon.stderr());
    let lines = daemon.stderr();
    let ready = lines
        .iter()
        .filter(|l| l.contains(harness::daemon::READY_LINE))
        .count();
    assert_eq!(ready, 1, "the ready line is printed once: {lines:#?}");
    terminate(daemon);
}

/// Crash recovery with requests in flight (INFLIGHT_SHMFD): 20 SIGKILLs at random moments,
/// right after a round of submissions at depth 16 or up to 1.5 ms later, so the dead process had taken
/// requests it never answered and the guest had published others it never took. The new
/// generation takes both up from the inflight region the front end hands back: every request
/// is answered exactly once (a second answer or a missing one fails the run, naming the
/// request), every byte verified.
#[test]
fn twenty_sigkills_with_requests_in_flight_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut o) = twenty_kills(&dir.path().join("vfs.sock"));
    o.kill_in_flight = true;
    let r = run(&o).unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    check_verified(&r);
    assert_eq!(r.reconnects, 20);
    assert_eq!(r.in_flight_at_kills.len(), 20, "{r:?}");
    let in_flight: usize = r.in_flight_at_kills.iter().sum();
    assert!(in_flight > 20, "requests in flight at the kills: {r:?}");
    // Requests sent to a process that died unanswered, answered by the next.
    assert!(r.answered_across_kills > 0, "{r:?}");
    let lines = daemon.stderr();
    // Whether a kill caught chains the dead process had taken is up to timing (unit tests
    // of `inflight::ring` cover that path); reported, not asserted.
    let took_up = lines
        .iter()
        .filter(|l| l.contains("took up") && l.contains("left in flight"))
        .count();
    let mut ms = r.restart_blackouts_ms.clone();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    eprintln!(
        "kills with requests in flight (seed {:?}): {in_flight} in flight at 20 kills, {} \
         answered across a kill, {took_up} generations took up chains left in flight; blackout \
         p50 {:.0} ms, p99 {:.0} ms",
        r.kill_seed,
        r.answered_across_kills,
        ms[n / 2],
        ms[n - 1]
    );
    assert_eq!(generations(&daemon), 21, "{lines:#?}");
    terminate(daemon);
}

/// As Kata's Go runtime launches it (the listener as fd 3): after the serving process is
/// killed the PID Kata holds is still there, the guest is served again, and SIGTERM stops
/// everything well within Kata's 5 s.
#[test]
fn launched_with_fd_3_the_supervisor_outlives_a_killed_serving_process() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let image = format!("--image={}", target());
    let mut daemon = Daemon::spawn_with_fd3(
        &listener,
        &["--fd=3", "--cache=auto", &image, "--reconnect"],
    );
    drop(listener);
    let supervisor = daemon.pid();
    let wait_for = |what: &dyn Fn() -> bool| {
        let until = std::time::Instant::now() + DAEMON_DEADLINE;
        while !what() {
            assert!(std::time::Instant::now() < until, "timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for(&|| server_pid(supervisor) != supervisor);
    let mut o = options(&socket, 3, 50);
    o.kill_under = Some(supervisor);
    let r = run(&o).unwrap_or_else(|e| panic!("{e}"));
    check_verified(&r);
    assert!(!r.restart_blackouts_ms.is_empty(), "{r:?}");
    assert_eq!(generations(&daemon), 4, "{:#?}", daemon.stderr());
    assert!(alive(supervisor));
    // SAFETY: kill(2) on our own child's pid, with a plain signal number.
    assert_eq!(unsafe { libc::kill(supervisor as i32, libc::SIGTERM) }, 0);
    let started = std::time::Instant::now();
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A new serving process that cannot start (here: the image's manifest is gone) is not
/// replaced again and again: the supervisor says why and exits with its status.
#[test]
fn a_serving_process_that_fails_before_it_is_ready_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vfs.sock");
    let oci = dir.path().join("oci");
    let img = image::build(tree(), &oci, "doomed", true);
    let mut daemon = image::serve(&socket, &img.target, &["--reconnect"]);
    let supervisor = daemon.pid();
    std::fs::rename(&oci, dir.path().join("moved")).unwrap();
    let server = server_pid(supervisor);
    assert_ne!(server, supervisor);
    // SAFETY: kill(2) on a pid just read from /proc, with a plain signal number.
    unsafe { libc::kill(server as i32, libc::SIGKILL) };
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(!status.success(), "{status}");
    let lines = daemon.stderr();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("failed before it was ready")),
        "{lines:#?}"
    );
    assert_eq!(generations(&daemon), 2, "{lines:#?}");
}

/// `tree` copied to `at`, with the table's own directories above it as the daemon shows them
/// (mode 0755), for verifying what a mount table serves.
fn mirror_at(root: &Path, at: &str) {
    use std::os::unix::fs::PermissionsExt;
    let target = root.join(at.trim_start_matches('/'));
    let parent = target.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let mut dir = Some(parent);
    while let Some(d) = dir.filter(|d| d.starts_with(root)) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir = d.parent();
    }
    let copied = std::process::Command::new("cp")
        .args(["-a", tree().to_str().unwrap(), target.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
}

/// Kata's nydus mode with crash recovery: the daemon launched as Kata's Go runtime launches
/// nydusd (`virtiofs --apisock --sock`, plus `--reconnect` from `virtio_fs_extra_args`), two
/// containers' images mounted through the API, then its serving process SIGKILLed 20 times
/// with requests in flight. Each new process gets the table back from the supervisor (the
/// PID Kata holds, which never exits): both images in their slots, so the guest's node ids
/// go on naming the same files, every request answered exactly once, every byte verified.
/// The API then still lists both, mounts and unmounts, and SIGTERM stops everything within
/// Kata's 5 s.
#[test]
fn a_mount_table_comes_back_whole_after_twenty_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, socket, api) = table_daemon(dir.path());
    harness::api::wait_running(&api, DAEMON_DEADLINE);
    let mirror = tempfile::tempdir().unwrap();
    for at in ["/rafs/c1/lowerdir", "/rafs/c2/lowerdir"] {
        let r = harness::api::mount(&api, at, "rafs", target(), "");
        assert_eq!(r.status, 204, "{}", r.body);
        mirror_at(mirror.path(), at);
    }
    let supervisor = daemon.pid();
    let mut o = options(&socket, 20, 24);
    o.verify = Some(mirror.path().to_path_buf());
    o.kill_under = Some(supervisor);
    o.kill_in_flight = true;
    let r = run(&o).unwrap_or_else(|e| panic!("{e}\n{:#?}", daemon.stderr()));
    assert_eq!(r.verified_files, Some(2 * files(tree())), "{r:?}");
    assert_eq!(r.reconnects, 20);
    assert!(r.answered_across_kills > 0, "{r:?}");
    let mut ms = r.restart_blackouts_ms.clone();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    eprintln!(
        "mount table, 20 kills with requests in flight: {} in flight, {} answered across a \
         kill; blackout p50 {:.0} ms, p99 {:.0} ms",
        r.in_flight_at_kills.iter().sum::<usize>(),
        r.answered_across_kills,
        ms[n / 2],
        ms[n - 1]
    );
    assert!(alive(supervisor), "{:#?}", daemon.stderr());
    assert_eq!(generations(&daemon), 21, "{:#?}", daemon.stderr());

    let info = harness::api::request(&api, "GET", "/api/v1/daemon", None).unwrap();
    let info = info.json();
    assert_eq!(info["state"], "RUNNING", "{info}");
    let backends = info["backend_collection"].as_object().unwrap();
    let listed: Vec<&String> = backends.keys().collect();
    assert_eq!(listed, ["/rafs/c1/lowerdir", "/rafs/c2/lowerdir"], "{info}");
    let r = harness::api::mount(&api, "/rafs/c3/lowerdir", "rafs", target(), "");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = harness::api::umount(&api, "/rafs/c1/lowerdir");
    assert_eq!(r.status, 204, "{}", r.body);

    // SAFETY: kill(2) on our own child's pid, with a plain signal number.
    assert_eq!(unsafe { libc::kill(supervisor as i32, libc::SIGTERM) }, 0);
    let started = std::time::Instant::now();
    let status = daemon.wait_exit(DAEMON_DEADLINE);
    assert!(status.success(), "{status}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert!(
        !api.exists() && !socket.exists(),
        "socket files left behind"
    );
}

/// The API through crashes of the serving process (no VMM attached): a client mounting and
/// unmounting in a loop while the serving process is SIGKILLed 10 times gets 204 (the
/// request carried out, asked again of the next process if the first died under it) or 503
/// (nothing changed), never anything else, and the daemon's info at the end lists exactly
/// the mounts those 204s left.
#[test]
fn api_requests_during_crashes_are_done_once_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _socket, api) = table_daemon(dir.path());
    harness::api::wait_running(&api, DAEMON_DEADLINE);
    let supervisor = daemon.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (api, stop) = (api.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut mounted = [false; 4];
            let mut answers = std::collections::BTreeMap::<u16, usize>::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let c = i % mounted.len();
                let at = format!("/rafs/c{c}/lowerdir");
                let r = if mounted[c] {
                    harness::api::umount(&api, &at)
                } else {
                    harness::api::mount(&api, &at, "rafs", target(), "")
                };
                assert!(
                    r.status == 204 || r.status == 503,
                    "{}: {}",
                    r.status,
                    r.body
                );
                if r.status == 204 {
                    mounted[c] = !mounted[c];
                }
                *answers.entry(r.status).or_default() += 1;
                i += 1;
            }
            (mounted, answers)
        })
    };
    let mut killed = 0;
    while killed < 10 {
        // Once the API answers, the serving process is attached (and past its ready note).
        harness::api::wait_running(&api, DAEMON_DEADLINE);
        std::thread::sleep(Duration::from_millis(50));
        let server = server_pid(supervisor);
        assert_ne!(server, supervisor, "{:#?}", daemon.stderr());
        // SAFETY: kill(2) of a process of this test's daemon, with a plain signal number.
        assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
        killed += 1;
        while server_pid(supervisor) == server {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    harness::api::wait_running(&api, DAEMON_DEADLINE);
    stop.store(true, Ordering::Relaxed);
    let (mounted, answers) = client.join().unwrap();
    let retried = daemon
        .stderr()
        .iter()
        .filter(|l| l.contains("asking the next one"))
        .count();
    eprintln!(
        "API answers through 10 kills: {answers:?}, {retried} asked again of the next process"
    );
    assert!(answers.get(&204).copied().unwrap_or(0) > 10, "{answers:?}");
    let info = harness::api::request(&api, "GET", "/api/v1/daemon", None).unwrap();
    let info = info.json();
    let listed: Vec<String> = info["backend_collection"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let want: Vec<String> = (0..mounted.len())
        .filter(|&c| mounted[c])
        .map(|c| format!("/rafs/c{c}/lowerdir"))
        .collect();
    assert_eq!(listed, want, "{info}");
    assert!(alive(supervisor));
    assert_eq!(generations(&daemon), 11, "{:#?}", daemon.stderr());
    terminate(daemon);
}
