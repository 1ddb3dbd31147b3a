//! A native vhost-user-fs front end: speaks vhost-user to any virtio-fs back end as QEMU or
//! cloud-hypervisor does, shares guest RAM from a memfd, and drives FUSE traffic through real
//! split virtqueues to load, check and attack the back end.

mod device;
mod error;
mod fuse;
mod guest;
mod hostile;
mod memory;
mod path_read;
mod reconnect;
mod report;
mod rng;
mod session;
mod verify;
mod virtq;
mod workload;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

pub use device::{Device, DeviceConfig, Profile};
pub use error::{FrontendError, Result};
pub use guest::{Answer, Attr, Guest, SubtreeReport};
pub use hostile::{CaseResult, Outcome};
pub use memory::GuestRam;
pub use path_read::{components, PathRead};
pub use report::{RunReport, WorkloadReport};
pub use workload::Workload;

use reconnect::Reconnects;
use session::{Session, IN_ROOM};
use workload::Ctx;

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub socket: PathBuf,
    pub profile: Profile,
    pub request_queues: usize,
    pub queue_size: u16,
    /// Requests in flight at once, over all request queues.
    pub depth: usize,
    pub workloads: Vec<Workload>,
    pub verify: Option<PathBuf>,
    /// Bytes per READ in `read` (capped by what INIT negotiated).
    pub read_size: u32,
    pub random_reads: usize,
    pub seed: u64,
    pub backend_pid: Option<u32>,
    pub hostile: bool,
    /// How long a hostile chain whose head is past the table (it cannot be returned) is
    /// waited for before it counts as dropped; the other cases wait up to `timeout`.
    pub hostile_wait: Duration,
    /// How long to wait for any completion before giving up on the back end.
    pub timeout: Duration,
    /// Reconnects to make after INIT, cloud-hypervisor style (needs that profile).
    pub reconnects: usize,
    /// Completions between two reconnects; those the workloads leave over come at the end.
    pub reconnect_every: usize,
    /// Make each reconnect a crash: SIGKILL the deepest process under this pid (the serving
    /// process behind its supervisor), wait for the hang-up, then reconnect.
    pub kill_under: Option<u32>,
    /// With `kill_under`: kill with requests in flight, after a number of completions drawn
    /// from 1..=2*`reconnect_every`, and reconnect without draining; the next back end must
    /// answer them (needs INFLIGHT_SHMFD, checked at the first kill).
    pub kill_in_flight: bool,
    /// Seed of the kill moments with `kill_in_flight` (None: from the clock); reported.
    pub kill_seed: Option<u64>,
    /// Do not accept INFLIGHT_SHMFD (to measure what tracking requests costs the back end).
    pub no_inflight: bool,
}

impl RunOptions {
    /// Defaults for `socket`: QEMU profile, one request queue of 1024, depth 1, every
    /// workload, 128 KiB reads.
    pub fn new(socket: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            socket: socket.into(),
            profile: Profile::Qemu,
            request_queues: 1,
            queue_size: 1024,
            depth: 1,
            workloads: vec![
                Workload::Walk,
                Workload::Readdirplus,
                Workload::Read,
                Workload::Random,
            ],
            verify: None,
            read_size: 128 * 1024,
            random_reads: 2000,
            seed: 1,
            backend_pid: None,
            hostile: false,
            hostile_wait: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            reconnects: 0,
            reconnect_every: 100,
            kill_under: None,
            kill_in_flight: false,
            kill_seed: None,
            no_inflight: false,
        }
    }
}

fn ram_size(o: &RunOptions, slots: usize, out_room: u32) -> u64 {
    let per_queue = 26 * u64::from(o.queue_size) + 4 * 4096;
    let queues = (1 + o.request_queues as u64) * per_queue;
    let per_slot = u64::from(IN_ROOM) + u64::from(out_room) + 4096;
    queues + slots as u64 * per_slot + (4 << 20)
}

/// Connects, negotiates, runs the hostile cases (if asked) and the workloads, forgets every
/// inode, checks against `verify` (if given), and stops the device.
pub fn run(o: &RunOptions) -> Result<RunReport> {
    run_inner(o, None)
}

/// [`run`], and after the workloads reads the paths `input` names, one per line, while the
/// session stays up (the back end may mount new file systems meanwhile): writes
/// `{"ready":true}` to `output` once the session is ready, then one [`PathRead`] JSON line per
/// path, flushed at once. Ends at the end of `input`.
pub fn run_reading_paths(
    o: &RunOptions,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<RunReport> {
    run_inner(o, Some((input, output)))
}

fn serve_paths(
    s: &mut Session,
    read_size: u32,
    depth: usize,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<()> {
    let io = |e| FrontendError::io("--read-paths-from", e);
    writeln!(output, "{{\"ready\":true}}").map_err(io)?;
    output.flush().map_err(io)?;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        let path = line.trim_end_matches(['\n', '\r']);
        if path.is_empty() {
            continue;
        }
        let answer = path_read::read_path(s, path, read_size, depth)?;
        let json = serde_json::to_string(&answer)
            .map_err(|e| FrontendError::Usage(format!("JSON: {e}")))?;
        writeln!(output, "{json}").map_err(io)?;
        output.flush().map_err(io)?;
    }
}

/// Connects and sets up the device and the request slots `o` asks for (no FUSE yet).
fn connect(o: &RunOptions) -> Result<Session> {
    if o.depth == 0 || o.depth > 4096 {
        return Err(FrontendError::Usage(
            "depth must be between 1 and 4096".into(),
        ));
    }
    let out_room = o.read_size.clamp(64 * 1024, 16 << 20);
    let slots = o.depth + 2;
    let ram = GuestRam::new(ram_size(o, slots, out_room))?;
    let cfg = DeviceConfig {
        profile: o.profile,
        inflight: !o.no_inflight,
        request_queues: o.request_queues,
        queue_size: o.queue_size,
    };
    let dev = Device::start(&o.socket, &cfg, ram)?;
    Session::new(dev, slots, out_room, o.timeout)
}

fn run_inner(
    o: &RunOptions,
    mut paths: Option<(&mut dyn BufRead, &mut dyn Write)>,
) -> Result<RunReport> {
    if o.reconnects > 0 && o.profile != Profile::CloudHypervisor {
        return Err(FrontendError::Usage(
            "--reconnects follows cloud-hypervisor: add --profile cloud-hypervisor".into(),
        ));
    }
    if o.kill_in_flight && o.kill_under.is_none() {
        return Err(FrontendError::Usage(
            "--kill-in-flight needs --kill-under PID".into(),
        ));
    }
    if o.kill_in_flight && o.reconnects == 0 {
        return Err(FrontendError::Usage(
            "--kill-in-flight needs --reconnects N (the number of kills)".into(),
        ));
    }
    let mut s = connect(o)?;
    let waits = hostile::Waits {
        dropped: o.hostile_wait,
        reply: o.timeout,
    };
    let mut hostile = Vec::new();
    if o.hostile {
        hostile.extend(hostile::before_init(&mut s, waits, o.backend_pid)?);
    }
    let init = if hostile.iter().any(|c| c.outcome == Outcome::Died) {
        None
    } else {
        Some(s.init(o.read_size)?)
    };
    if init.is_some() && o.reconnects > 0 {
        let mut r = Reconnects::new(&o.socket, o.reconnects, o.reconnect_every);
        r.kill_under = o.kill_under;
        if let (true, Some(top)) = (o.kill_in_flight, o.kill_under) {
            let seed = o.kill_seed.unwrap_or_else(rng::clock_seed);
            // Printed now: a failing run has no report to carry it.
            eprintln!("virtiofs-frontend: killing with requests in flight, seed {seed}");
            r.kill_in_flight(top, seed);
        }
        s.reconnects = Some(r);
    }
    let read_size = init.map_or(o.read_size, |i| session::read_size(&i, o.read_size));
    let mut ctx = Ctx {
        verify: o.verify.clone(),
        read_size,
        random_reads: o.random_reads,
        seed: o.seed,
        ..Default::default()
    };
    let mut report = RunReport {
        profile: o.profile,
        request_queues: o.request_queues,
        queue_size: o.queue_size,
        messages: Vec::new(),
        fuse_minor: init.map_or(0, |i| i.minor),
        max_pages: init.map_or(0, |i| i.max_pages),
        read_size,
        workloads: Vec::new(),
        hostile: Vec::new(),
        verified_entries: None,
        verified_files: None,
        kicks: 0,
        zero_used_len_replies: 0,
        reconnects: 0,
        reconnects_during_workloads: 0,
        restart_blackouts_ms: Vec::new(),
        kill_seed: None,
        in_flight_at_kills: Vec::new(),
        answered_by_killed: 0,
        answered_across_kills: 0,
    };
    if o.hostile && init.is_some() {
        workload::run(&mut s, &mut ctx, Workload::Walk, o.depth)?;
        // The largest file, so that reads fill the cases' reply buffers.
        let target = ctx
            .tree
            .values()
            .filter(|n| n.mode & libc::S_IFMT == libc::S_IFREG && n.size > 0)
            .max_by_key(|n| n.size)
            .map(|n| n.nodeid)
            .ok_or_else(|| {
                FrontendError::Usage("hostile: the tree has no non-empty file".into())
            })?;
        hostile.extend(hostile::after_init(&mut s, target, waits, o.backend_pid)?);
    }
    let died = hostile.iter().any(|c| c.outcome == Outcome::Died);
    report.hostile = hostile;
    if !died {
        for w in &o.workloads {
            let cpu_before = o.backend_pid.and_then(report::CpuSample::take);
            let m = workload::run(&mut s, &mut ctx, *w, o.depth)?;
            let mut r = WorkloadReport::new(*w, o.depth, m);
            if let Some(pid) = o.backend_pid {
                r.backend_cpu_s = cpu_before
                    .zip(report::CpuSample::take(pid))
                    .map(|(before, after)| after.seconds_since(&before));
                r.backend_peak_rss_kib = report::peak_rss_kib(pid);
                r.backend_rss_kib = report::status_kib(pid, "VmRSS:");
                r.backend_rss_anon_kib = report::status_kib(pid, "RssAnon:");
            }
            report.workloads.push(r);
        }
        if let Some((input, output)) = paths.take() {
            serve_paths(&mut s, read_size, o.depth, input, output)?;
        }
        report.reconnects_during_workloads = s.reconnects.as_ref().map_or(0, |r| r.done);
        s.finish_reconnects()?;
        workload::forget_all(&mut s, &mut ctx)?;
        if let Some(dir) = &o.verify {
            verify::compare(&mut ctx, dir);
            report.verified_entries = Some(ctx.tree.len());
            report.verified_files = Some(ctx.digests.len());
        }
        s.dev.stop()?;
    }
    report.kicks = s.dev.queues.iter().map(|q| q.kicks).sum();
    report.zero_used_len_replies = s.zero_used_len;
    report.reconnects = s.reconnects.as_ref().map_or(0, |r| r.done);
    report.restart_blackouts_ms = s.reconnects.as_ref().map_or(Vec::new(), |r| {
        r.blackouts
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect()
    });
    if let Some(r) = s.reconnects.as_ref() {
        report.kill_seed = r.seed;
        report.in_flight_at_kills = r.in_flight_at_kills.clone();
        report.answered_by_killed = r.answered_by_killed;
        report.answered_across_kills = r.answered_across_kills;
    }
    report.messages = std::mem::take(&mut s.dev.messages);
    if !ctx.differences.is_empty() {
        return Err(FrontendError::Mismatch {
            count: ctx.differences.len(),
            first: ctx
                .differences
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    Ok(report)
}
