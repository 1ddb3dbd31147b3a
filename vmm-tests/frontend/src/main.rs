//! `virtiofs-frontend`: command-line wrapper around the library; prints a table or JSON.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use virtiofs_frontend::{run, run_reading_paths, Outcome, Profile, RunOptions, Workload};

/// Drive a vhost-user-fs back end as a VMM and a guest would: load, check, attack.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The back end's vhost-user socket.
    #[arg(long)]
    socket: PathBuf,
    /// Whose vhost-user message sequence to follow.
    #[arg(long, value_enum, default_value = "qemu")]
    profile: Profile,
    /// Request queues (the hiprio queue comes on top).
    #[arg(long, default_value_t = 1)]
    queues: usize,
    /// Entries per virtqueue.
    #[arg(long, default_value_t = 1024)]
    queue_size: u16,
    /// Requests in flight at once, spread over the request queues.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Workloads to run, in order (comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    workload: Vec<Workload>,
    /// Compare the served tree and file contents with this directory.
    #[arg(long)]
    verify: Option<PathBuf>,
    /// Bytes per READ for `read` (capped by INIT's max_pages).
    #[arg(long, default_value_t = 128 * 1024)]
    read_size: u32,
    /// Reads done by `random`.
    #[arg(long, default_value_t = 2000)]
    random_reads: usize,
    /// Seed of `random`'s offsets (default 1) and of --kill-in-flight's kill moments
    /// (default: from the clock, printed on standard error and reported).
    #[arg(long)]
    seed: Option<u64>,
    /// Do not accept INFLIGHT_SHMFD even where the profile would (cloud-hypervisor): the back
    /// end then tracks no requests, for measuring what tracking costs.
    #[arg(long)]
    no_inflight: bool,
    /// Back end process, for its CPU time and peak RSS.
    #[arg(long)]
    backend_pid: Option<u32>,
    /// Send malformed requests first, then the workloads.
    #[arg(long)]
    hostile: bool,
    /// Milliseconds a hostile chain with a head past the table is waited for before it counts
    /// as dropped (other cases wait up to --timeout).
    #[arg(long, default_value_t = 1000)]
    hostile_wait_ms: u64,
    /// Seconds to wait for a completion before giving up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// After the workloads (none unless --workload names some), read the files named in FILE
    /// ("-": standard input), one path per line, as they come, each answered on standard output
    /// with one JSON line (after a first `{"ready":true}`); for timing the first read of a
    /// file system mounted while the session runs.
    #[arg(long, value_name = "FILE")]
    read_paths_from: Option<PathBuf>,
    /// After INIT, close the socket and reconnect this many times as cloud-hypervisor does
    /// after a guest reboot (needs --profile cloud-hypervisor): replay the device setup with
    /// each ring's base at its avail index, no second INIT, same node ids and handles.
    #[arg(long, default_value_t = 0)]
    reconnects: usize,
    /// Completions between two reconnects (those the workloads leave over come at the end,
    /// each checked with a GETATTR).
    #[arg(long, default_value_t = 100)]
    reconnect_every: usize,
    /// Make each reconnect a crash: SIGKILL the deepest process under PID (the serving
    /// process behind its supervisor), wait for the hang-up, then reconnect; reports the
    /// blackout of each restart.
    #[arg(long, value_name = "PID")]
    kill_under: Option<u32>,
    /// With --kill-under and --reconnects N: make the N kills with requests in flight, each
    /// after a number of completions drawn uniformly from 1..=2*--reconnect-every, at once or
    /// (half of them) up to 1.5 ms after a round of submissions, without draining first; the
    /// next back end must answer every request exactly once. Needs a back end offering
    /// INFLIGHT_SHMFD.
    #[arg(long, requires = "kill_under")]
    kill_in_flight: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut o = RunOptions::new(&a.socket);
    o.profile = a.profile;
    o.request_queues = a.queues;
    o.queue_size = a.queue_size;
    o.depth = a.depth;
    if !a.workload.is_empty() {
        o.workloads = a.workload;
    } else if a.read_paths_from.is_some() {
        o.workloads = Vec::new();
    }
    o.verify = a.verify;
    o.read_size = a.read_size;
    o.random_reads = a.random_reads;
    o.seed = a.seed.unwrap_or(1);
    o.kill_seed = a.seed;
    o.backend_pid = a.backend_pid;
    o.no_inflight = a.no_inflight;
    o.hostile = a.hostile;
    o.hostile_wait = Duration::from_millis(a.hostile_wait_ms);
    o.timeout = Duration::from_secs(a.timeout);
    o.reconnects = a.reconnects;
    o.reconnect_every = a.reconnect_every;
    o.kill_under = a.kill_under;
    o.kill_in_flight = a.kill_in_flight;
    let result = match &a.read_paths_from {
        None => run(&o),
        Some(file) => {
            let stdout = std::io::stdout();
            let mut output = stdout.lock();
            if file.as_os_str() == "-" {
                run_reading_paths(&o, &mut std::io::stdin().lock(), &mut output)
            } else {
                match std::fs::File::open(file) {
                    Ok(f) => run_reading_paths(&o, &mut BufReader::new(f), &mut output),
                    Err(e) => {
                        eprintln!("virtiofs-frontend: {}: {e}", file.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("virtiofs-frontend: {e}");
            return ExitCode::FAILURE;
        }
    };
    if a.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("virtiofs-frontend: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.table());
    }
    if report.hostile.iter().any(|c| c.outcome == Outcome::Died) {
        eprintln!("virtiofs-frontend: the back end died during the hostile cases");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
