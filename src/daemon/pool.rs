//! A fixed pool of request workers fed through one FIFO: queue threads hand here the requests
//! that may wait on I/O, so a slow request never holds up the queue or other requests.

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};

/// One unit of work: decode, serve and complete one request.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

/// Worker threads. With zero threads, jobs run on the submitting thread.
pub(crate) struct WorkerPool {
    inline: bool,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl WorkerPool {
    /// Starts `size` worker threads.
    pub(crate) fn new(size: usize) -> io::Result<WorkerPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let mut threads = Vec::with_capacity(size);
        for i in 0..size {
            let shared = shared.clone();
            let t = thread::Builder::new()
                .name(format!("fs-worker-{i}"))
                .spawn(move || work(&shared))?;
            threads.push(t);
        }
        Ok(WorkerPool {
            inline: size == 0,
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Whether jobs run on the submitting thread (a pool of no threads).
    pub(crate) fn is_inline(&self) -> bool {
        self.inline
    }

    /// Runs `job` on a worker (or right here when the pool has no threads or is closed).
    pub(crate) fn submit(&self, job: Job) {
        if self.inline {
            run(job);
            return;
        }
        let mut state = lock(&self.shared.state);
        if state.closed {
            drop(state);
            run(job);
            return;
        }
        state.jobs.push_back(job);
        drop(state);
        self.shared.ready.notify_one();
    }

    /// Lets the workers finish the queued jobs, then joins them.
    pub(crate) fn shutdown(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.ready.notify_all();
        let threads = std::mem::take(&mut *self.lock_threads());
        for t in threads {
            let _ = t.join();
        }
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Jobs run outside the lock and panics are caught, so poisoning cannot leave the queue
    // half-updated; keep going with the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut state = lock(&shared.state);
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    break job;
                }
                if state.closed {
                    return;
                }
                state = shared.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        run(job);
    }
}

fn run(job: Job) {
    // A panic is a bug, but it must not take a worker away: the request's completion guard
    // still returns its descriptor chain to the guest while unwinding.
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        log::error!("request worker panicked; request answered with an empty reply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn runs_every_job_and_drains_on_shutdown() {
        let pool = WorkerPool::new(3).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let c = count.clone();
            pool.submit(Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }));
        }
        pool.shutdown();
        assert_eq!(count.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn a_blocked_job_does_not_stop_others() {
        let pool = WorkerPool::new(2).unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        pool.submit(Box::new(move || {
            let _ = release_rx.recv();
        }));
        for i in 0..10 {
            let tx = done_tx.clone();
            pool.submit(Box::new(move || tx.send(i).unwrap()));
        }
        let got: Vec<_> = (0..10).map(|_| done_rx.recv().unwrap()).collect();
        assert_eq!(got.len(), 10);
        release_tx.send(()).unwrap();
        pool.shutdown();
    }

    #[test]
    fn zero_threads_runs_inline_and_survives_panics() {
        let pool = WorkerPool::new(0).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        pool.submit(Box::new(|| panic!("boom")));
        let c = count.clone();
        pool.submit(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
