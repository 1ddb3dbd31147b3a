//! Results: per-workload throughput and latency, the back end's CPU time and peak memory from
//! /proc, printed as a table or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::hostile::CaseResult;
use crate::workload::{Measured, Workload};

/// One workload's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    pub workload: Workload,
    pub depth: usize,
    pub ops: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Back end CPU time spent during this workload (with `--backend-pid`; see
    /// [`CpuSample::seconds_since`]).
    pub backend_cpu_s: Option<f64>,
    /// Back end VmHWM after this workload, KiB (with `--backend-pid`).
    pub backend_peak_rss_kib: Option<u64>,
    /// Back end VmRSS right after this workload, KiB (with `--backend-pid`).
    pub backend_rss_kib: Option<u64>,
    /// Its anonymous part (RssAnon), KiB.
    pub backend_rss_anon_kib: Option<u64>,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub profile: crate::device::Profile,
    pub request_queues: usize,
    pub queue_size: u16,
    /// vhost-user messages sent, in order.
    pub messages: Vec<String>,
    /// FUSE INIT: negotiated minor version, max_pages, max_write.
    pub fuse_minor: u32,
    pub max_pages: u16,
    pub read_size: u32,
    pub workloads: Vec<WorkloadReport>,
    pub hostile: Vec<CaseResult>,
    /// Entries and files checked by `--verify` (None without it).
    pub verified_entries: Option<usize>,
    pub verified_files: Option<usize>,
    pub kicks: u64,
    /// Replies written although the used ring said 0 bytes (nydusd does this).
    pub zero_used_len_replies: u64,
    /// Reconnects made (`--reconnects`), each without a second INIT.
    pub reconnects: usize,
    /// Of those, the ones made while the workloads ran (the others came after them).
    pub reconnects_during_workloads: usize,
    /// With `--kill-under`: per kill, milliseconds from the SIGKILL to the next completion.
    pub restart_blackouts_ms: Vec<f64>,
    /// With `--kill-in-flight`: the seed of the kill moments (`--seed`, or from the clock).
    pub kill_seed: Option<u64>,
    /// With `--kill-in-flight`: per kill, the requests submitted and not yet reaped at the
    /// SIGKILL.
    pub in_flight_at_kills: Vec<usize>,
    /// Of those, the ones the killed back end had answered before it died.
    pub answered_by_killed: usize,
    /// Requests answered by a later back end than the one they were submitted to (each
    /// exactly once: a second answer is an error).
    pub answered_across_kills: usize,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

impl WorkloadReport {
    pub fn new(w: Workload, depth: usize, mut m: Measured) -> WorkloadReport {
        m.latencies_ns.sort_unstable();
        let secs = m.elapsed.as_secs_f64().max(1e-9);
        WorkloadReport {
            workload: w,
            depth,
            ops: m.ops,
            bytes: m.bytes,
            seconds: secs,
            ops_per_s: m.ops as f64 / secs,
            mb_per_s: m.bytes as f64 / secs / 1e6,
            p50_us: percentile(&m.latencies_ns, 0.50),
            p99_us: percentile(&m.latencies_ns, 0.99),
            backend_cpu_s: None,
            backend_peak_rss_kib: None,
            backend_rss_kib: None,
            backend_rss_anon_kib: None,
        }
    }
}

/// A sample of a process's CPU time, for [`CpuSample::seconds_since`].
#[derive(Debug, Clone)]
pub struct CpuSample {
    /// utime+stime, in clock ticks turned into seconds (dead threads included).
    ticks_s: f64,
    /// Each live thread's time on a CPU (the first field of its schedstat), nanoseconds.
    threads_ns: Vec<(u32, u64)>,
}

impl CpuSample {
    /// Samples `pid` now.
    pub fn take(pid: u32) -> Option<CpuSample> {
        let ticks_s = cpu_seconds(pid)?;
        let mut threads_ns = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let Some(tid) = entry
                .ok()
                .and_then(|e| e.file_name().to_str()?.parse().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"));
            if let Some(ns) = stat
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
            {
                threads_ns.push((tid, ns));
            }
        }
        Some(CpuSample {
            ticks_s,
            threads_ns,
        })
    }

    /// CPU seconds spent since `before`: to the nanosecond from the threads' schedstat when
    /// every thread of `before` still lives (new ones count whole), else from the clock ticks
    /// (10 ms steps) of /proc/PID/stat, which keep dead threads' time.
    pub fn seconds_since(&self, before: &CpuSample) -> f64 {
        let mut ns = 0u64;
        for (tid, was) in &before.threads_ns {
            match self.threads_ns.iter().find(|(t, _)| t == tid) {
                Some((_, now)) => ns += now.saturating_sub(*was),
                None => return self.ticks_s - before.ticks_s,
            }
        }
        for (tid, now) in &self.threads_ns {
            if !before.threads_ns.iter().any(|(t, _)| t == tid) {
                ns += now;
            }
        }
        ns as f64 / 1e9
    }
}

/// utime+stime of `pid` in seconds (fields 14 and 15 of /proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / hz)
}

/// VmHWM of `pid` in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// A KiB field (`VmRSS:`, `RssAnon:`...) of /proc/`pid`/status.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` is still running (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl RunReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "profile {:?}, {} request queue(s) of {}, FUSE 7.{}, read size {} KiB, {} vhost-user messages, {} kicks",
            self.profile,
            self.request_queues,
            self.queue_size,
            self.fuse_minor,
            self.read_size / 1024,
            self.messages.len(),
            self.kicks
        );
        if self.reconnects > 0 {
            let _ = writeln!(
                s,
                "{} reconnects ({} during the workloads), none with a second INIT",
                self.reconnects, self.reconnects_during_workloads
            );
        }
        if !self.restart_blackouts_ms.is_empty() {
            let mut ms = self.restart_blackouts_ms.clone();
            ms.sort_by(f64::total_cmp);
            let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
            let _ = writeln!(
                s,
                "{} serving processes killed; blackout (kill to next answer) p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                ms.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
        if !self.in_flight_at_kills.is_empty() {
            let n = &self.in_flight_at_kills;
            let _ = writeln!(
                s,
                "{} kills with requests in flight (seed {}): {} in flight in all, at most {} at once; \
                 {} answered by the killed back end, {} by the next one",
                n.len(),
                self.kill_seed.map_or("-".into(), |x| x.to_string()),
                n.iter().sum::<usize>(),
                n.iter().max().copied().unwrap_or(0),
                self.answered_by_killed,
                self.answered_across_kills
            );
        }
        if !self.workloads.is_empty() {
            let _ = writeln!(
                s,
                "{:<12} {:>5} {:>9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>10}",
                "workload",
                "depth",
                "ops",
                "ops/s",
                "MB/s",
                "p50 us",
                "p99 us",
                "cpu s",
                "peak KiB"
            );
        }
        for w in &self.workloads {
            let cpu = w.backend_cpu_s.map_or("-".into(), |c| format!("{c:.3}"));
            let rss = w.backend_peak_rss_kib.map_or("-".into(), |r| r.to_string());
            let _ = writeln!(
                s,
                "{:<12} {:>5} {:>9} {:>10.0} {:>10.1} {:>9.1} {:>9.1} {:>9} {:>10}",
                format!("{:?}", w.workload).to_lowercase(),
                w.depth,
                w.ops,
                w.ops_per_s,
                w.mb_per_s,
                w.p50_us,
                w.p99_us,
                cpu,
                rss
            );
        }
        if !self.hostile.is_empty() {
            let _ = writeln!(s, "hostile cases:");
            for c in &self.hostile {
                let _ = writeln!(s, "  {:<28} {}", c.name, c.outcome);
            }
        }
        if self.zero_used_len_replies > 0 {
            let _ = writeln!(
                s,
                "warning: {} replies came back with used length 0",
                self.zero_used_len_replies
            );
        }
        if let (Some(e), Some(f)) = (self.verified_entries, self.verified_files) {
            let _ = writeln!(s, "verified: {e} entries, {f} file digests, no differences");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_samples_count_this_process_to_the_nanosecond() {
        let pid = std::process::id();
        let before = CpuSample::take(pid).unwrap();
        let ticks_before = cpu_seconds(pid).unwrap();
        let mut x = 0u64;
        for _ in 0..200_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let spent = CpuSample::take(pid).unwrap().seconds_since(&before);
        let ticks = cpu_seconds(pid).unwrap() - ticks_before;
        // The same work as the clock ticks count it (10 ms steps; other test threads may
        // run meanwhile, in both counts).
        assert!(spent > 0.0, "{spent}");
        assert!(
            (spent - ticks).abs() <= 0.03 + ticks * 0.2,
            "{spent} s, ticks {ticks} s"
        );
        // A thread of the first sample is gone: the ticks count instead.
        let mut gone = before.clone();
        gone.threads_ns.push((u32::MAX, 0));
        let coarse = CpuSample::take(pid).unwrap().seconds_since(&gone);
        assert!((0.0..1.0).contains(&coarse), "{coarse}");
    }
}
