//! Reconnecting as cloud-hypervisor does after a guest reboot: close the control socket,
//! connect again (every 100 ms, for up to 60 s), replay SET_OWNER, features, memory table,
//! inflight area and vring setup with each ring's base at the guest's current avail index,
//! and go on with the same FUSE session: no second INIT, the same node ids and handles.
//! With `kill_under` a reconnect follows a SIGKILL of the serving process: either with
//! nothing in flight, or (`in_flight`, needs INFLIGHT_SHMFD) at random moments with requests
//! in flight, which the next back end must answer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::Frontend;

use crate::device::{Device, Profile};
use crate::error::{FrontendError, Result};
use crate::rng::XorShift;

/// Pause between connection attempts (cloud-hypervisor's).
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// How long to keep trying (cloud-hypervisor's).
const RETRY_FOR: Duration = Duration::from_secs(60);

/// How many reconnects a session still owes, and when the next one is due.
#[derive(Debug, Clone)]
pub struct Reconnects {
    socket: PathBuf,
    /// Reconnects still to do.
    pub left: usize,
    /// Completions between two reconnects (with `in_flight`, the mean: each gap is drawn
    /// from 1..=2*every).
    pub every: usize,
    /// Completions since the last reconnect.
    since: usize,
    /// Completions after which the next reconnect is due.
    gap: usize,
    /// Reconnects done.
    pub done: usize,
    /// Instead of closing the socket, SIGKILL the deepest process under this one (the
    /// serving process behind a supervisor) and reconnect once the back end hung up.
    pub kill_under: Option<u32>,
    /// Kill with requests in flight, after a random number of completions, instead of
    /// draining first (set by [`Reconnects::kill_in_flight`]).
    pub in_flight: bool,
    /// The seed of the kill moments (with `in_flight`).
    pub seed: Option<u64>,
    rng: Option<XorShift>,
    /// For each kill, the time from the SIGKILL to the first completion after it (two kills
    /// with no completion between them count once, from the first). Answers the killed back
    /// end had written before it died do not end a blackout.
    pub blackouts: Vec<Duration>,
    killed_at: Option<Instant>,
    /// With `in_flight`: per kill, the requests submitted and not yet reaped at the SIGKILL.
    pub in_flight_at_kills: Vec<usize>,
    /// Of those, the ones the killed back end had answered before it died.
    pub answered_by_killed: usize,
    /// Requests answered by a back end that came after the one they were submitted to.
    pub answered_across_kills: usize,
}

impl Reconnects {
    /// `count` reconnects to `socket`, one after every `every` completions (at least 1).
    pub fn new(socket: impl Into<PathBuf>, count: usize, every: usize) -> Reconnects {
        let every = every.max(1);
        Reconnects {
            socket: socket.into(),
            left: count,
            every,
            since: 0,
            gap: every,
            done: 0,
            kill_under: None,
            in_flight: false,
            seed: None,
            rng: None,
            blackouts: Vec::new(),
            killed_at: None,
            in_flight_at_kills: Vec::new(),
            answered_by_killed: 0,
            answered_across_kills: 0,
        }
    }

    /// Makes each reconnect a SIGKILL of the deepest process under `top` with requests in
    /// flight, due after a number of completions drawn from 1..=2*every (seeded by `seed`).
    pub fn kill_in_flight(&mut self, top: u32, seed: u64) {
        self.kill_under = Some(top);
        self.in_flight = true;
        self.seed = Some(seed);
        let mut rng = XorShift::new(seed);
        self.gap = rng.between(1, 2 * self.every);
        self.rng = Some(rng);
    }

    /// Counts one completion of a request submitted when `epoch` reconnects were done;
    /// `by_killed`: written by a back end that was killed before the session saw it (not
    /// counted towards the next reconnect, which comes after the new back end's answers).
    pub fn completed(&mut self, epoch: usize, by_killed: bool) {
        if by_killed {
            self.answered_by_killed += 1;
            return;
        }
        self.since += 1;
        if let Some(at) = self.killed_at.take() {
            self.blackouts.push(at.elapsed());
        }
        if epoch < self.done {
            self.answered_across_kills += 1;
        }
    }

    /// Whether a reconnect is due. Without `in_flight` the session then stops submitting
    /// until nothing is in flight; with it, the kill comes right after the next submissions.
    pub fn due(&self) -> bool {
        self.left > 0 && self.since >= self.gap
    }

    /// Makes the next reconnect due at once (for the ones the workloads left over).
    pub fn hurry(&mut self) {
        self.since = self.since.max(self.gap);
    }

    /// Reconnects `dev` (after killing the serving process, with `kill_under`) and counts it.
    pub fn reconnect(&mut self, dev: &mut Device) -> Result<()> {
        if self.kill_under.is_some() {
            self.kill(dev, 0)?;
        }
        self.connect_again(dev)
    }

    /// SIGKILLs the serving process with `in_flight` requests in flight and waits until the
    /// back end hung up (nothing of it touches the rings after that). With `in_flight` set,
    /// refuses unless the back end tracks requests in flight in a shared area.
    pub fn kill(&mut self, dev: &Device, in_flight: usize) -> Result<()> {
        let Some(top) = self.kill_under else {
            return Err(FrontendError::Usage("a kill needs --kill-under".into()));
        };
        if self.in_flight && !dev.inflight_shared() {
            return Err(FrontendError::Usage(format!(
                "--kill-in-flight needs a back end that offers INFLIGHT_SHMFD (it offered {:?}): \
                 requests in flight across a kill would be lost",
                dev.offered_protocol
            )));
        }
        if let (true, Some(rng)) = (self.in_flight, self.rng.as_mut()) {
            // Half the kills right after the kicks (the chains just published not taken yet),
            // half at a random moment up to 1.5 ms later, when the back end may be taking
            // chains, serving them or putting answers on the used rings.
            if rng.between(0, 1) == 1 {
                std::thread::sleep(Duration::from_micros(rng.between(1, 1500) as u64));
            }
        }
        let at = kill_deepest(top)?;
        // Two kills with no answer between them make one blackout, from the first.
        self.killed_at.get_or_insert(at);
        if self.in_flight {
            self.in_flight_at_kills.push(in_flight);
        }
        dev.wait_for_hangup(RETRY_FOR)
    }

    /// Connects `dev` again and counts the reconnect.
    pub fn connect_again(&mut self, dev: &mut Device) -> Result<()> {
        dev.reconnect(&self.socket)?;
        self.reconnected();
        Ok(())
    }

    /// Counts a reconnect and sets when the next one is due.
    fn reconnected(&mut self) {
        self.left -= 1;
        self.done += 1;
        self.since = 0;
        if let Some(rng) = self.rng.as_mut() {
            self.gap = rng.between(1, 2 * self.every);
        }
    }
}

impl Device {
    /// Closes the control socket, connects to `socket` again and replays cloud-hypervisor's
    /// device setup. The rings stay where they are in guest RAM and each restarts at its
    /// current avail index. Without INFLIGHT_SHMFD call it with nothing in flight (a request
    /// in flight across a reconnect could be lost, as with cloud-hypervisor); with it, the
    /// new back end gets the same inflight area and answers what the old one had taken.
    pub fn reconnect(&mut self, socket: &Path) -> Result<()> {
        if self.profile != Profile::CloudHypervisor {
            return Err(FrontendError::Usage(
                "reconnects follow cloud-hypervisor: use --profile cloud-hypervisor".into(),
            ));
        }
        // SAFETY: shutdown on the control socket this device owns; it stays open (and is
        // closed once, when the Frontend holding it is replaced below).
        unsafe { libc::shutdown(self.socket_fd(), libc::SHUT_RDWR) };
        self.messages.push("(close)".into());
        let deadline = Instant::now() + RETRY_FOR;
        let frontend = loop {
            match Frontend::connect(socket, self.queues.len() as u64) {
                Ok(f) => break f,
                Err(e) if Instant::now() >= deadline => {
                    return Err(FrontendError::vhost(
                        format!("reconnect {}", socket.display()),
                        e,
                    ))
                }
                Err(_) => std::thread::sleep(RETRY_EVERY),
            }
        };
        self.replace_frontend(frontend);
        self.messages.push("(reconnected)".into());
        self.cloud_hypervisor_setup()
    }
}

/// SIGKILLs the deepest process under `top` (following each process's first child) and
/// returns when.
fn kill_deepest(top: u32) -> Result<Instant> {
    let mut pid = top;
    while let Some(child) = first_child(pid) {
        pid = child;
    }
    if pid == top {
        return Err(FrontendError::Usage(format!(
            "--kill-under {top}: it has no child to kill"
        )));
    }
    let at = Instant::now();
    // SAFETY: kill with a pid read from /proc just now and a constant signal; at worst the
    // process is already gone (ESRCH), which the hang-up wait then sees anyway.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    Ok(at)
}

fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Device {
    /// Waits until the back end's end of the control socket is closed.
    pub fn wait_for_hangup(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.backend_connected() {
            if Instant::now() >= deadline {
                return Err(FrontendError::Usage(
                    "the killed back end still holds the socket".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(r: &mut Reconnects, n: usize) {
        for _ in 0..n {
            r.completed(r.done, false);
        }
    }

    #[test]
    fn drained_reconnects_come_every_n_completions() {
        let mut r = Reconnects::new("/nonexistent", 2, 3);
        complete(&mut r, 2);
        assert!(!r.due());
        complete(&mut r, 1);
        assert!(r.due());
        r.reconnected();
        assert!(!r.due());
        complete(&mut r, 3);
        assert!(r.due());
        r.reconnected();
        complete(&mut r, 10);
        assert!(!r.due(), "none left");
        assert_eq!((r.done, r.left), (2, 0));
    }

    #[test]
    fn in_flight_kills_come_after_a_drawn_gap() {
        let every = 5;
        let mut r = Reconnects::new("/nonexistent", 200, every);
        r.kill_in_flight(1, 99);
        let mut gaps = Vec::new();
        while r.left > 0 {
            let mut n = 0;
            while !r.due() {
                r.completed(r.done, false);
                n += 1;
            }
            gaps.push(n);
            r.reconnected();
        }
        assert!(gaps.iter().all(|g| (1..=2 * every).contains(g)), "{gaps:?}");
        assert!(gaps.contains(&1) && gaps.contains(&(2 * every)), "{gaps:?}");
        // The same seed draws the same moments.
        let mut again = Reconnects::new("/nonexistent", 200, every);
        again.kill_in_flight(1, 99);
        assert_eq!(again.gap, gaps[0]);
    }

    #[test]
    fn hurry_makes_it_due_and_answers_are_attributed() {
        let mut r = Reconnects::new("/nonexistent", 1, 1000);
        r.kill_in_flight(1, 7);
        assert!(!r.due());
        r.hurry();
        assert!(r.due());
        r.killed_at = Some(Instant::now());
        // The killed back end's own last answer: no blackout end, not across.
        r.completed(0, true);
        r.reconnected();
        assert!(r.killed_at.is_some());
        // Submitted before the kill, answered by the new back end.
        r.completed(0, false);
        r.completed(1, false);
        assert_eq!(r.answered_by_killed, 1);
        assert_eq!(r.answered_across_kills, 1);
        assert_eq!(r.blackouts.len(), 1);
    }
}
