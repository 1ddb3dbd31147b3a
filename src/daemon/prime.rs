//! Priming the rings of a resumed session. A guest with EVENT_IDX kicks only when its new
//! avail index passes the `avail_event` the back end last published; a back end that died
//! (or disconnected) between popping requests and re-arming left that value behind, so after a
//! reconnect the guest may add requests and never kick. So on every connection after the first
//! of a FUSE session, each queue is kicked from our side until its thread has drained it once
//! (the queue thread's own kick handler then checks that the front end enabled the ring).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// How often an unprimed queue is poked.
const POKE_EVERY: Duration = Duration::from_millis(10);
/// How long after the connection the poking goes on (the VMM sets its rings up at once).
const POKE_FOR: Duration = Duration::from_secs(10);

/// Per queue: whether its thread drained it on this connection.
#[derive(Debug)]
pub(crate) struct Primed(Vec<AtomicBool>);

impl Primed {
    pub(crate) fn new(queues: usize) -> Primed {
        Primed((0..queues).map(|_| AtomicBool::new(false)).collect())
    }

    /// Queue `queue` was drained.
    pub(crate) fn set(&self, queue: usize) {
        if let Some(p) = self.0.get(queue) {
            p.store(true, Ordering::Relaxed);
        }
    }

    fn all(&self) -> bool {
        self.0.iter().all(|p| p.load(Ordering::Relaxed))
    }

    fn is(&self, queue: usize) -> bool {
        self.0.get(queue).is_none_or(|p| p.load(Ordering::Relaxed))
    }
}

/// Writes 1 to the kick eventfd `fd` of a ring, as the guest's kick would.
pub(crate) fn kick(fd: &impl AsRawFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: an 8-byte write from a live buffer to an eventfd the vring owns; a full or
    // closed eventfd only makes it fail, which is harmless (the next poke retries).
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

/// The poker of one connection: one eventfd per queue thread, registered under `event` with
/// `register(thread, fd, events, data)`; the thread's handler answers a poke by kicking its
/// ring (see [`kick`]).
pub(crate) struct Poker {
    /// Dropping it stops the thread (which waits on it between rounds: a futex wait, which
    /// the seccomp filter allows where a sleep is not).
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Poker {
    pub(crate) fn start(
        threads: usize,
        event: u64,
        primed: Arc<Primed>,
        register: impl Fn(usize, &EventFd, EventSet, u64) -> io::Result<()>,
    ) -> io::Result<Poker> {
        let mut pokes = Vec::with_capacity(threads);
        for t in 0..threads {
            let fd = EventFd::new(EFD_NONBLOCK)?;
            // Edge-triggered: the queue thread does not hold the poke's fd to drain it, and a
            // level-triggered fd left readable would wake it again at once, forever (a queue
            // the front end never set up is never primed: 10 s of a spinning thread).
            register(t, &fd, EventSet::IN | EventSet::EDGE_TRIGGERED, event)?;
            pokes.push(fd);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("prime".into())
            .spawn(move || {
                let until = Instant::now() + POKE_FOR;
                while !primed.all() && Instant::now() < until {
                    for (queue, fd) in pokes.iter().enumerate() {
                        if !primed.is(queue) {
                            let _ = fd.write(1);
                        }
                    }
                    if stopped.recv_timeout(POKE_EVERY) != Err(RecvTimeoutError::Timeout) {
                        return;
                    }
                }
            })?;
        Ok(Poker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Poker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pokes_until_every_queue_is_primed() {
        let primed = Arc::new(Primed::new(2));
        let fds = std::sync::Mutex::new(Vec::new());
        let poker = Poker::start(2, 9, primed.clone(), |_, fd, _, data| {
            assert_eq!(data, 9);
            fds.lock().unwrap().push(fd.try_clone()?);
            Ok(())
        })
        .unwrap();
        let fds = fds.into_inner().unwrap();
        std::thread::sleep(POKE_EVERY * 3);
        assert!(fds[0].read().unwrap() > 0);
        primed.set(0);
        let _ = fds[0].read();
        std::thread::sleep(POKE_EVERY * 3);
        assert!(fds[0].read().is_err(), "a primed queue is not poked again");
        assert!(fds[1].read().unwrap() > 0);
        primed.set(1);
        drop(poker);
        assert!(primed.all());
    }
}
