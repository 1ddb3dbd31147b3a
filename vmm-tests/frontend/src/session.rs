//! A FUSE session over the device: request slots in guest RAM, submission spread over the
//! request queues, completions reaped from every used ring, and a pipelined engine that keeps
//! a fixed number of requests in flight while replies spawn follow-up requests. Reconnects
//! come between requests, or (killing with requests in flight) between submission and reaping,
//! the in-flight table carried over to the next back end.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{InitOut, Opcode, OutHeader};
use vm_memory::{Bytes, GuestAddress};

use crate::device::Device;
use crate::error::{FrontendError, Result};
use crate::fuse::{self, Request, OUT_HEADER_LEN};
use crate::reconnect::Reconnects;
use crate::virtq::Buf;

/// Readable room per slot: header, arguments and a name.
pub const IN_ROOM: u32 = 8192;
/// The hiprio queue's index.
pub const HIPRIO: usize = 0;

/// A reply: errno (0 for success) and payload, or an empty completion.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The back end answered with this errno (0: success) and payload.
    Answer { errno: i32, data: Vec<u8> },
    /// The chain came back with nothing written (what FORGET gets, or a dropped request).
    Empty { used_len: u32 },
}

struct Slot {
    input: GuestAddress,
    output: GuestAddress,
}

struct InFlight<T> {
    unique: u64,
    opcode: u32,
    /// Reconnects done when it was submitted.
    epoch: usize,
    slot: usize,
    started: Instant,
    tag: T,
    out_room: u32,
    /// Whether the request had a device-writable buffer (all but FORGET).
    replies: bool,
}

/// The FUSE session and the device under it.
pub struct Session {
    pub dev: Device,
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    out_room: u32,
    next_unique: u64,
    next_queue: usize,
    pub timeout: Duration,
    /// INIT's answer, once sent.
    pub init: Option<InitOut>,
    /// Replies whose used-ring entry said 0 bytes although a reply was written.
    pub zero_used_len: u64,
    /// Reconnects to make while requests run (`--reconnects`).
    pub reconnects: Option<Reconnects>,
    /// Per queue, the request each descriptor head last carried and got answered (unique,
    /// opcode): names the request when its head comes back a second time.
    answered: Vec<HashMap<u32, (u64, u32)>>,
}

impl Session {
    /// Carves `slots` request slots out of the device's RAM, each with `out_room` bytes of
    /// reply payload.
    pub fn new(mut dev: Device, slots: usize, out_room: u32, timeout: Duration) -> Result<Self> {
        let mut v = Vec::with_capacity(slots);
        for _ in 0..slots {
            let input = dev.ram.alloc(u64::from(IN_ROOM), 64)?;
            let output = dev
                .ram
                .alloc(u64::from(out_room) + OUT_HEADER_LEN as u64, 64)?;
            v.push(Slot { input, output });
        }
        Ok(Session {
            free_slots: (0..slots).rev().collect(),
            slots: v,
            out_room,
            next_unique: 1,
            next_queue: 0,
            timeout,
            init: None,
            zero_used_len: 0,
            reconnects: None,
            answered: (0..dev.queues.len()).map(|_| HashMap::new()).collect(),
            dev,
        })
    }

    fn request_queues(&self) -> usize {
        self.dev.queues.len() - 1
    }

    /// Sends FUSE_INIT and keeps the answer.
    pub fn init(&mut self, max_readahead: u32) -> Result<InitOut> {
        let reply = self.call(fuse::init(max_readahead))?;
        let out: InitOut = fuse::parse("INIT", &expect_ok("INIT", "", reply)?)?;
        self.init = Some(out);
        Ok(out)
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, req: Request) -> Result<Reply> {
        let mut got = None;
        self.run(1, VecDeque::from([(req, ())]), |_, r, _| {
            got = Some(r);
            Ok(())
        })?;
        got.ok_or_else(|| FrontendError::BadReply {
            op: "request",
            why: "no completion".into(),
        })
    }

    /// Runs `ops` with at most `depth` in flight; `on_reply` may queue more. Requests without
    /// a reply (FORGET) go to the hiprio queue, the rest round-robin over the request queues.
    /// Returns each request's latency in nanoseconds.
    pub fn run<T>(
        &mut self,
        depth: usize,
        mut ops: VecDeque<(Request, T)>,
        mut on_reply: impl FnMut(T, Reply, &mut VecDeque<(Request, T)>) -> Result<()>,
    ) -> Result<Vec<u64>> {
        let depth = depth.clamp(1, self.slots.len());
        let mut inflight: Vec<HashMap<u32, InFlight<T>>> =
            (0..self.dev.queues.len()).map(|_| HashMap::new()).collect();
        let mut count = 0usize;
        let mut latencies = Vec::new();
        let kill_in_flight = self.reconnects.as_ref().is_some_and(|r| r.in_flight);
        loop {
            if !kill_in_flight && count == 0 && self.reconnect_due() {
                self.reconnect_now()?;
            }
            // A due reconnect waits for the requests in flight: hold the others back (not
            // when killing with requests in flight, which is the point there).
            let hold = !kill_in_flight && self.reconnect_due();
            let epoch = self.reconnects.as_ref().map_or(0, |r| r.done);
            let mut kicked = vec![false; self.dev.queues.len()];
            while !hold && count < depth {
                let Some((req, tag)) = ops.pop_front() else {
                    break;
                };
                let queue = if req.reply_room.is_none() {
                    HIPRIO
                } else {
                    1 + self.next_queue % self.request_queues()
                };
                if self.free_slots.is_empty() || self.dev.queues[queue].free() < 2 {
                    ops.push_front((req, tag));
                    break;
                }
                self.next_queue += 1;
                let slot = self.free_slots.pop().unwrap();
                let (head, unique) = self.submit(queue, slot, &req)?;
                let out_room = req.reply_room.unwrap_or(0);
                inflight[queue].insert(
                    u32::from(head),
                    InFlight {
                        unique,
                        opcode: req.opcode,
                        epoch,
                        slot,
                        started: Instant::now(),
                        tag,
                        out_room,
                        replies: req.reply_room.is_some(),
                    },
                );
                kicked[queue] = true;
                count += 1;
            }
            for (q, k) in kicked.iter().enumerate() {
                if *k {
                    let mem = self.dev.ram.mem().clone();
                    self.dev.queues[q].notify(&mem)?;
                }
            }
            if count == 0 {
                return Ok(latencies);
            }
            // Killing in flight: the requests just kicked are in the back end's hands (or on
            // their way); the kill, the hang-up and the reconnect happen here, so that the
            // wait below only ever watches the new back end's socket.
            let by_killed = kill_in_flight && self.reconnect_due();
            let done = if by_killed {
                self.kill_and_reconnect(&mut inflight, count)?
            } else {
                self.reap(&mut inflight)?
            };
            if done.is_empty() {
                if !by_killed {
                    self.wait(&inflight)?;
                }
                continue;
            }
            for (f, reply) in done {
                count -= 1;
                latencies.push(f.started.elapsed().as_nanos() as u64);
                self.free_slots.push(f.slot);
                if let Some(r) = self.reconnects.as_mut() {
                    r.completed(f.epoch, by_killed);
                }
                on_reply(f.tag, reply, &mut ops)?;
            }
        }
    }

    /// SIGKILLs the serving process with `count` requests in flight, waits for its hang-up,
    /// takes the answers it wrote before dying, and reconnects; the requests still in
    /// `inflight` are the new back end's to answer. Returns the dead one's answers.
    fn kill_and_reconnect<T>(
        &mut self,
        inflight: &mut [HashMap<u32, InFlight<T>>],
        count: usize,
    ) -> Result<Vec<(InFlight<T>, Reply)>> {
        let Some(r) = self.reconnects.as_mut() else {
            return Ok(Vec::new());
        };
        r.kill(&self.dev, count)?;
        let done = self.reap(inflight)?;
        if let Some(r) = self.reconnects.as_mut() {
            r.connect_again(&mut self.dev)?;
        }
        Ok(done)
    }

    fn submit(&mut self, queue: usize, slot: usize, req: &Request) -> Result<(u16, u64)> {
        let unique = self.next_unique;
        self.next_unique += 1;
        let bytes = req.encode(unique);
        if bytes.len() > IN_ROOM as usize {
            return Err(FrontendError::Usage(format!(
                "request of {} bytes does not fit a slot",
                bytes.len()
            )));
        }
        let s = &self.slots[slot];
        let mem = self.dev.ram.mem().clone();
        mem.write_slice(&bytes, s.input)
            .map_err(|e| FrontendError::Memory(e.to_string()))?;
        // A stale header from the slot's last use must not pass for this reply.
        mem.write_slice(&[0u8; OUT_HEADER_LEN], s.output)
            .map_err(|e| FrontendError::Memory(e.to_string()))?;
        let mut bufs = vec![Buf {
            addr: s.input,
            len: bytes.len() as u32,
            writable: false,
        }];
        if let Some(room) = req.reply_room {
            bufs.push(Buf {
                addr: s.output,
                len: OUT_HEADER_LEN as u32 + room.min(self.out_room),
                writable: true,
            });
        }
        let head = self.dev.queues[queue].push(&mem, &bufs)?;
        Ok((head, unique))
    }

    fn reap<T>(
        &mut self,
        inflight: &mut [HashMap<u32, InFlight<T>>],
    ) -> Result<Vec<(InFlight<T>, Reply)>> {
        let mem = self.dev.ram.mem().clone();
        let mut done = Vec::new();
        for (q, table) in inflight.iter_mut().enumerate() {
            while let Some(used) = self.dev.queues[q].pop_used(&mem)? {
                let Some(f) = table.remove(&used.id) else {
                    if used.known {
                        // A hand-made (hostile) chain answered late: nobody waits for it.
                        continue;
                    }
                    let last = match self.answered[q].get(&used.id) {
                        Some((unique, op)) => format!(
                            "; it last carried request {unique} ({}), answered already: \
                             a request answered twice",
                            opcode_name(*op)
                        ),
                        None => String::new(),
                    };
                    return Err(FrontendError::BadReply {
                        op: "used ring",
                        why: format!(
                            "queue {q} returned descriptor {}, which is not in flight{last}",
                            used.id
                        ),
                    });
                };
                self.answered[q].insert(used.id, (f.unique, f.opcode));
                let reply = self.read_reply(&f, used.len)?;
                done.push((f, reply));
            }
        }
        Ok(done)
    }

    /// Decodes a completion. Like the Linux driver, trusts the reply header over the used
    /// length: some back ends (nydusd) always report 0. Such completions are counted.
    fn read_reply<T>(&mut self, f: &InFlight<T>, used_len: u32) -> Result<Reply> {
        if !f.replies && used_len == 0 {
            return Ok(Reply::Empty { used_len });
        }
        let mem = self.dev.ram.mem();
        let out_addr = self.slots[f.slot].output;
        let header: OutHeader = mem
            .read_obj(out_addr)
            .map_err(|e| FrontendError::Memory(e.to_string()))?;
        if used_len == 0 {
            if header.unique != f.unique {
                return Ok(Reply::Empty { used_len });
            }
            self.zero_used_len += 1;
        }
        let room = OUT_HEADER_LEN as u32 + f.out_room;
        if header.unique != f.unique
            || (header.len as usize) < OUT_HEADER_LEN
            || header.len > room
            || (used_len != 0 && header.len > used_len)
        {
            return Err(FrontendError::BadReply {
                op: "reply",
                why: format!(
                    "header {{len {}, error {}, unique {}}} for request {} (used length {used_len})",
                    header.len, header.error, header.unique, f.unique
                ),
            });
        }
        let mut data = vec![0u8; header.len as usize - OUT_HEADER_LEN];
        mem.read_slice(
            &mut data,
            vm_memory::Address::unchecked_add(&out_addr, OUT_HEADER_LEN as u64),
        )
        .map_err(|e| FrontendError::Memory(e.to_string()))?;
        Ok(Reply::Answer {
            errno: -header.error,
            data,
        })
    }

    /// Sleeps until some queue's call eventfd fires (or the timeout passes, or the back end
    /// hangs up: an error naming the requests in `inflight`). Kills made on purpose never
    /// come here: the run loop reconnects before it waits again.
    fn wait<T>(&mut self, inflight: &[HashMap<u32, InFlight<T>>]) -> Result<()> {
        let mut fds: Vec<libc::pollfd> = self
            .dev
            .queues
            .iter()
            .map(|q| libc::pollfd {
                fd: std::os::unix::io::AsRawFd::as_raw_fd(&q.call),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        fds.push(libc::pollfd {
            fd: self.dev.socket_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        });
        let ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a live array of initialized pollfds whose length is passed along.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(FrontendError::io("poll", e));
        }
        let hup = fds.last().is_some_and(|p| p.revents != 0);
        if n == 0 || (hup && !fds[..fds.len() - 1].iter().any(|p| p.revents != 0)) {
            return Err(FrontendError::Timeout {
                secs: self.timeout.as_secs(),
                in_flight: inflight.iter().map(HashMap::len).sum(),
                state: if self.dev.backend_connected() {
                    "still connected"
                } else {
                    "disconnected (died?)"
                },
                unanswered: unanswered(inflight),
            });
        }
        for q in &self.dev.queues {
            // Non-blocking: EAGAIN just means this queue did not fire.
            let _ = q.call.read();
        }
        Ok(())
    }

    fn reconnect_due(&self) -> bool {
        self.reconnects.as_ref().is_some_and(Reconnects::due)
    }

    fn reconnect_now(&mut self) -> Result<()> {
        if let Some(r) = self.reconnects.as_mut() {
            r.reconnect(&mut self.dev)?;
        }
        Ok(())
    }

    /// Makes the reconnects the workloads left over, each followed by a GETATTR of the root
    /// that must succeed (the session carries on without a second INIT).
    pub fn finish_reconnects(&mut self) -> Result<()> {
        while let Some(r) = self.reconnects.as_mut().filter(|r| r.left > 0) {
            r.hurry();
            expect_ok(
                "GETATTR",
                "/ after a reconnect",
                self.call(fuse::getattr(1))?,
            )?;
        }
        Ok(())
    }

    /// A fresh request id.
    pub fn unique(&mut self) -> u64 {
        self.next_unique += 1;
        self.next_unique - 1
    }
}

/// At most this many unanswered requests are named in a timeout.
const NAMED_UNANSWERED: usize = 32;

/// The requests nobody answered, oldest first: queue, descriptor, FUSE unique, opcode.
fn unanswered<T>(inflight: &[HashMap<u32, InFlight<T>>]) -> String {
    let mut all: Vec<(u64, usize, u32, u32, Instant)> = inflight
        .iter()
        .enumerate()
        .flat_map(|(q, t)| {
            t.iter()
                .map(move |(head, f)| (f.unique, q, *head, f.opcode, f.started))
        })
        .collect();
    all.sort_unstable_by_key(|e| e.0);
    let mut s: Vec<String> = all
        .iter()
        .take(NAMED_UNANSWERED)
        .map(|(unique, q, head, op, started)| {
            format!(
                "queue {q} descriptor {head} unique {unique} {} ({:.1} s)",
                opcode_name(*op),
                started.elapsed().as_secs_f64()
            )
        })
        .collect();
    if all.len() > NAMED_UNANSWERED {
        s.push(format!("and {} more", all.len() - NAMED_UNANSWERED));
    }
    if s.is_empty() {
        return "none".into();
    }
    s.join("; ")
}

/// A FUSE opcode's name, from fuse-backend-rs's `Opcode` (GETATTR, READDIRPLUS...).
fn opcode_name(op: u32) -> String {
    format!("{:?}", Opcode::from(op)).to_uppercase()
}

/// The payload of a successful reply, or the errno as an error.
pub fn expect_ok(op: &'static str, what: &str, reply: Reply) -> Result<Vec<u8>> {
    match reply {
        Reply::Answer { errno: 0, data } => Ok(data),
        Reply::Answer { errno, .. } => Err(FrontendError::Fuse {
            op,
            what: what.to_string(),
            errno,
        }),
        Reply::Empty { used_len } => Err(FrontendError::BadReply {
            op,
            why: format!("no reply written (used length {used_len}) for {what}"),
        }),
    }
}

/// Read size the session uses: `wanted`, capped by what INIT negotiated.
pub fn read_size(init: &InitOut, wanted: u32) -> u32 {
    let by_pages =
        if init.flags & fuse_backend_rs::abi::fuse_abi::FsOptions::MAX_PAGES.bits() as u32 != 0
            && init.max_pages > 0
        {
            u32::from(init.max_pages) * 4096
        } else {
            32 * 4096
        };
    wanted.min(by_pages).max(4096)
}
