//! `--hostile`: malformed requests a malicious guest could send (bad lengths, unknown
//! opcodes, inodes and handles, huge sizes, descriptors outside RAM, loops, bad heads,
//! requests before INIT). Each must be answered with an error or dropped, and the back end
//! must live on; what came back is recorded per case, for the caller to compare with what
//! that back end should answer.

use std::fmt;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, OutHeader, ReadIn};
use serde::Serialize;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use crate::error::{FrontendError, Result};
use crate::fuse::{self, Request, OUT_HEADER_LEN};
use crate::session::{Session, HIPRIO};
use crate::virtq::{DESC_F_NEXT, DESC_F_WRITE};

const DESC_F_INDIRECT: u16 = 4;
const SCRATCH_IN: u64 = 128 * 1024;
const SCRATCH_OUT: u32 = 64 * 1024;

/// What came back for one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// A reply with this errno.
    Errno { errno: i32 },
    /// A successful reply of this many bytes (fine for requests that are legal after all).
    Success { reply_len: u32 },
    /// A successful LOOKUP reply naming this node (0: a negative entry).
    Entry { nodeid: u64 },
    /// The chain came back with nothing written.
    Empty { used_len: u32 },
    /// A reply whose header did not match the request.
    BadReply { why: String },
    /// No completion within the wait.
    Dropped,
    /// The back end went away.
    Died,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Errno { errno } => write!(
                f,
                "errno {errno} ({})",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Outcome::Success { reply_len } => write!(f, "success ({reply_len} bytes)"),
            Outcome::Entry { nodeid } => write!(f, "entry (node {nodeid})"),
            Outcome::Empty { used_len } => {
                write!(f, "completed, no reply (used length {used_len})")
            }
            Outcome::BadReply { why } => write!(f, "bad reply: {why}"),
            Outcome::Dropped => write!(f, "dropped (no completion)"),
            Outcome::Died => write!(f, "BACK END DIED"),
        }
    }
}

/// One case's name and outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub outcome: Outcome,
}

/// One part of a hand-made chain.
enum Part {
    /// Readable bytes (placed in scratch RAM).
    In(Vec<u8>),
    /// Readable descriptor at any address.
    InAt(u64, u32),
    /// Writable room in scratch RAM.
    Out(u32),
    /// Writable descriptor at any address.
    OutAt(u64, u32),
    /// An INDIRECT descriptor pointing at garbage.
    Indirect,
}

/// How the chain's links are broken, if at all.
#[derive(Clone, Copy, PartialEq)]
enum Links {
    Fine,
    /// The last descriptor points back at the first.
    Loop,
    /// The last descriptor's `next` is past the table.
    PastTable,
    /// The avail ring gets a head past the table instead of the chain.
    BadHead,
}

struct Case {
    name: &'static str,
    queue: usize,
    parts: Vec<Part>,
    links: Links,
}

fn header(op: u32, nodeid: u64, unique: u64, len: u32) -> Vec<u8> {
    let h = InHeader {
        len,
        opcode: op,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 1,
        padding: 0,
    };
    vm_memory::ByteValued::as_slice(&h).to_vec()
}

/// A well-formed request's readable bytes with `unique`.
fn encoded(req: &Request, unique: u64) -> Vec<u8> {
    req.encode(unique)
}

fn simple(name: &'static str, bytes: Vec<u8>) -> Case {
    Case {
        name,
        queue: 1,
        parts: vec![Part::In(bytes), Part::Out(4096)],
        links: Links::Fine,
    }
}

fn read_in(fh: u64, offset: u64, size: u32) -> Vec<u8> {
    let r = ReadIn {
        fh,
        offset,
        size,
        ..Default::default()
    };
    vm_memory::ByteValued::as_slice(&r).to_vec()
}

/// How long to wait for a case's completion.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// For a chain whose head is past the table, which cannot be returned: after this it
    /// counts as dropped.
    pub dropped: Duration,
    /// For every other case: a hang guard, not a limit a slow back end may hit.
    pub reply: Duration,
}

/// The (opcode, unique) of the request in the case's first readable bytes, if any.
fn request_ids(case: &Case) -> (u32, u64) {
    case.parts
        .iter()
        .find_map(|p| match p {
            Part::In(b) if b.len() >= 16 => Some((
                u32::from_ne_bytes(b[4..8].try_into().unwrap()),
                u64::from_ne_bytes(b[8..16].try_into().unwrap()),
            )),
            _ => None,
        })
        .unwrap_or((0, 0))
}

/// Sends one case and classifies the result.
fn send(
    s: &mut Session,
    scratch: (GuestAddress, GuestAddress),
    case: &Case,
    waits: Waits,
) -> Result<Outcome> {
    let (opcode, unique) = request_ids(case);
    let mem = s.dev.ram.mem().clone();
    let ram_end = s.dev.ram.end();
    let q = &mut s.dev.queues[case.queue];
    let size = q.size;
    let ids = q.reserve(case.parts.len())?;
    let mut in_at = scratch.0;
    for (i, part) in case.parts.iter().enumerate() {
        let (addr, len, mut flags) = match part {
            Part::In(bytes) => {
                let bytes = &bytes[..bytes.len().min(SCRATCH_IN as usize)];
                mem.write_slice(bytes, in_at)
                    .map_err(|e| FrontendError::Memory(e.to_string()))?;
                let a = in_at;
                in_at = GuestAddress(in_at.0 + bytes.len() as u64);
                (a.0, bytes.len() as u32, 0)
            }
            Part::InAt(addr, len) => (*addr, *len, 0),
            Part::Out(len) => (scratch.1 .0, (*len).min(SCRATCH_OUT), DESC_F_WRITE),
            Part::OutAt(addr, len) => (*addr, *len, DESC_F_WRITE),
            Part::Indirect => (ram_end - 4096, 4096, DESC_F_INDIRECT),
        };
        let last = i + 1 == ids.len();
        let next = match (last, case.links) {
            (false, _) => ids[i + 1],
            (true, Links::Loop) => ids[0],
            (true, Links::PastTable) => size.wrapping_add(7),
            (true, _) => 0,
        };
        if !last || matches!(case.links, Links::Loop | Links::PastTable) {
            flags |= DESC_F_NEXT;
        }
        q.write_desc(&mem, ids[i], Descriptor::new(addr, len, flags, next))?;
    }
    // Clear the reply area so a stale reply cannot pass for a new one.
    mem.write_slice(&[0u8; OUT_HEADER_LEN], scratch.1)
        .map_err(|e| FrontendError::Memory(e.to_string()))?;
    let head = if case.links == Links::BadHead {
        size.wrapping_add(5)
    } else {
        ids[0]
    };
    if case.links != Links::BadHead {
        q.track(head, ids);
    }
    q.publish(&mem, head)?;
    q.notify(&mem)?;
    let wait = if case.links == Links::BadHead {
        waits.dropped
    } else {
        waits.reply
    };
    wait_for(
        s,
        case.queue,
        u32::from(head),
        scratch.1,
        (opcode, unique),
        wait,
    )
}

fn wait_for(
    s: &mut Session,
    queue: usize,
    head: u32,
    out: GuestAddress,
    (opcode, unique): (u32, u64),
    wait: Duration,
) -> Result<Outcome> {
    let deadline = Instant::now() + wait;
    let mem = s.dev.ram.mem().clone();
    loop {
        while let Some(used) = s.dev.queues[queue].pop_used(&mem)? {
            if used.id != head {
                continue;
            }
            if used.len == 0 {
                return Ok(Outcome::Empty { used_len: 0 });
            }
            let h: OutHeader = mem
                .read_obj(out)
                .map_err(|e| FrontendError::Memory(e.to_string()))?;
            if h.unique != unique || (h.len as usize) < OUT_HEADER_LEN {
                return Ok(Outcome::BadReply {
                    why: format!(
                        "header {{len {}, error {}, unique {}}}, used length {}",
                        h.len, h.error, h.unique, used.len
                    ),
                });
            }
            let entry_len = (OUT_HEADER_LEN + 8) as u32;
            return Ok(match h.error {
                0 if opcode == Opcode::Lookup as u32 && h.len >= entry_len => {
                    let nodeid = mem
                        .read_obj(GuestAddress(out.0 + OUT_HEADER_LEN as u64))
                        .map_err(|e| FrontendError::Memory(e.to_string()))?;
                    Outcome::Entry { nodeid }
                }
                0 => Outcome::Success { reply_len: h.len },
                e => Outcome::Errno { errno: -e },
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Outcome::Dropped);
        }
        // The call eventfd, and the control socket: a back end that dies ends the wait.
        let mut pfds = [
            libc::pollfd {
                fd: s.dev.queues[queue].call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: s.dev.socket_fd(),
                events: libc::POLLRDHUP,
                revents: 0,
            },
        ];
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: two valid pollfds on descriptors this session owns.
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
        if pfds[1].revents != 0 {
            return Ok(Outcome::Died);
        }
        let _ = s.dev.queues[queue].call.read();
    }
}

fn pre_init_cases(u: &mut impl FnMut() -> u64) -> Vec<Case> {
    vec![
        simple("getattr-before-init", encoded(&fuse::getattr(1), u())),
        simple(
            "read-before-init",
            encoded(&fuse::read(Opcode::Read, 1, 0, 0, 4096), u()),
        ),
    ]
}

/// The valid objects hostile requests poke around: a regular file and an open handle.
struct Targets {
    file: u64,
    fh: u64,
    dir_fh: u64,
}

fn post_init_cases(u: &mut impl FnMut() -> u64, t: &Targets, ram_end: u64) -> Vec<Case> {
    let getattr = |unique: u64| encoded(&fuse::getattr(1), unique);
    let with_len = |mut b: Vec<u8>, len: u32| {
        b[..4].copy_from_slice(&len.to_ne_bytes());
        b
    };
    let lookup_raw = |unique: u64, name: &[u8]| {
        let mut b = header(Opcode::Lookup as u32, 1, unique, (40 + name.len()) as u32);
        b.extend_from_slice(name);
        b
    };
    let read_req = |unique: u64, nodeid: u64, fh: u64, off: u64, size: u32| {
        let mut b = header(Opcode::Read as u32, nodeid, unique, 40 + 40);
        b.extend(read_in(fh, off, size));
        b
    };
    let mut huge_name = vec![b'a'; 64 * 1024];
    huge_name.push(0);
    let mut v = vec![
        simple(
            "len-larger-than-chain",
            with_len(getattr(u()), 40 + 16 + 4096),
        ),
        simple("len-smaller-than-header", with_len(getattr(u()), 16)),
        simple("len-zero", with_len(getattr(u()), 0)),
        simple("unknown-opcode", header(9999, 1, u(), 40)),
        simple("opcode-zero", header(0, 1, u(), 40)),
        simple("init-again", encoded(&fuse::init(128 * 1024), u())),
        simple(
            "getattr-unknown-inode",
            encoded(&fuse::getattr(0xdead_beef_0000), u()),
        ),
        simple("getattr-inode-zero", encoded(&fuse::getattr(0), u())),
        simple(
            "getattr-no-args",
            header(Opcode::Getattr as u32, 1, u(), 40),
        ),
        simple(
            "lookup-unknown-parent",
            encoded(&fuse::lookup(0xdead_beef_0000, b"x"), u()),
        ),
        simple("lookup-no-nul", lookup_raw(u(), b"etc")),
        simple("lookup-huge-namelen", lookup_raw(u(), &huge_name)),
        simple("lookup-dotdot", encoded(&fuse::lookup(1, b".."), u())),
        simple("lookup-slash", encoded(&fuse::lookup(1, b"a/b"), u())),
        simple("read-4gib", read_req(u(), t.file, t.fh, 0, u32::MAX)),
        // A size that fits the reply buffer: only the offset is wrong.
        simple(
            "read-huge-offset",
            read_req(u(), t.file, t.fh, u64::MAX - 10, 1024),
        ),
        simple(
            "read-unknown-fh",
            read_req(u(), t.file, 0xdead_beef, 0, 4096),
        ),
        simple(
            "read-unknown-inode",
            read_req(u(), 0xdead_beef_0000, t.fh, 0, 4096),
        ),
        simple("readdir-4gib", {
            let mut b = header(Opcode::Readdir as u32, 1, u(), 80);
            b.extend(read_in(t.dir_fh, 0, u32::MAX));
            b
        }),
        simple("readdirplus-unknown-fh", {
            let mut b = header(Opcode::Readdirplus as u32, 1, u(), 80);
            b.extend(read_in(0xdead_beef, 0, 4096));
            b
        }),
        simple(
            "release-unknown-fh",
            encoded(&fuse::release(t.file, 0xdead_beef, false), u()),
        ),
        simple("write-readonly", {
            let mut b = header(Opcode::Write as u32, t.file, u(), 40 + 40 + 4);
            b.extend(read_in(t.fh, 0, 4));
            b.extend_from_slice(b"evil");
            b
        }),
    ];
    let chain = |name, parts: Vec<Part>, links| Case {
        name,
        queue: 1,
        parts,
        links,
    };
    v.extend([
        chain(
            "in-desc-outside-ram",
            vec![Part::InAt(ram_end + (1 << 30), 80), Part::Out(4096)],
            Links::Fine,
        ),
        chain(
            "in-desc-below-ram",
            vec![Part::InAt(0, 80), Part::Out(4096)],
            Links::Fine,
        ),
        chain(
            "in-desc-straddles-end",
            vec![Part::InAt(ram_end - 8, 64), Part::Out(4096)],
            Links::Fine,
        ),
        chain(
            "in-desc-huge-len",
            vec![Part::InAt(ram_end - (1 << 20), u32::MAX), Part::Out(4096)],
            Links::Fine,
        ),
        chain(
            "out-desc-outside-ram",
            vec![Part::In(getattr(u())), Part::OutAt(u64::MAX - 4095, 4096)],
            Links::Fine,
        ),
        chain(
            "zero-len-writable",
            vec![Part::In(getattr(u())), Part::Out(0)],
            Links::Fine,
        ),
        chain("no-writable", vec![Part::In(getattr(u()))], Links::Fine),
        chain(
            "writable-before-readable",
            vec![Part::Out(4096), Part::In(getattr(u()))],
            Links::Fine,
        ),
        chain(
            "short-writable",
            vec![Part::In(getattr(u())), Part::Out(8)],
            Links::Fine,
        ),
        chain(
            "desc-loop",
            vec![Part::In(getattr(u())), Part::Out(4096)],
            Links::Loop,
        ),
        chain(
            "next-past-table",
            vec![Part::In(getattr(u())), Part::Out(4096)],
            Links::PastTable,
        ),
        chain(
            "head-past-table",
            vec![Part::In(getattr(u()))],
            Links::BadHead,
        ),
        chain(
            "indirect-not-negotiated",
            vec![Part::Indirect, Part::Out(4096)],
            Links::Fine,
        ),
        chain(
            "header-split-over-descs",
            {
                let b = getattr(u());
                vec![
                    Part::In(b[..20].to_vec()),
                    Part::In(b[20..].to_vec()),
                    Part::Out(4096),
                ]
            },
            Links::Fine,
        ),
    ]);
    let mut forget = fuse::forget(0xdead_beef_0000, u64::MAX);
    forget.reply_room = None;
    let mut batch = fuse::batch_forget(&[(0xdead_beef_0000, 1)]);
    batch.args[..4].copy_from_slice(&1_000_000u32.to_ne_bytes());
    v.extend([
        Case {
            name: "forget-unknown-inode",
            queue: HIPRIO,
            parts: vec![Part::In(encoded(&forget, u()))],
            links: Links::Fine,
        },
        Case {
            name: "batch-forget-count-overflow",
            queue: HIPRIO,
            parts: vec![Part::In(encoded(&batch, u()))],
            links: Links::Fine,
        },
        Case {
            name: "getattr-on-hiprio",
            queue: HIPRIO,
            parts: vec![Part::In(getattr(u())), Part::Out(4096)],
            links: Links::Fine,
        },
    ]);
    v
}

/// Runs the pre-INIT cases (call before `Session::init`).
pub fn before_init(s: &mut Session, waits: Waits, pid: Option<u32>) -> Result<Vec<CaseResult>> {
    let scratch = alloc_scratch(s)?;
    let mut next = 1_000_000u64;
    let mut u = || {
        next += 1;
        next
    };
    let cases = pre_init_cases(&mut u);
    run_cases(s, scratch, cases, waits, pid)
}

/// Runs the cases after INIT; `file` is a regular file's node id (looked up by the caller).
pub fn after_init(
    s: &mut Session,
    file: u64,
    waits: Waits,
    pid: Option<u32>,
) -> Result<Vec<CaseResult>> {
    let scratch = alloc_scratch(s)?;
    let open =
        crate::session::expect_ok("OPEN", "hostile target", s.call(fuse::open(file, false))?)?;
    let fh = fuse::parse::<fuse_backend_rs::abi::fuse_abi::OpenOut>("OPEN", &open)?.fh;
    let open = crate::session::expect_ok("OPENDIR", "/", s.call(fuse::open(1, true))?)?;
    let dir_fh = fuse::parse::<fuse_backend_rs::abi::fuse_abi::OpenOut>("OPENDIR", &open)?.fh;
    let targets = Targets { file, fh, dir_fh };
    let mut next = s.unique() + 2_000_000;
    let mut u = || {
        next += 1;
        next
    };
    let cases = post_init_cases(&mut u, &targets, s.dev.ram.end());
    let results = run_cases(s, scratch, cases, waits, pid)?;
    if !results.iter().any(|r| r.outcome == Outcome::Died) {
        crate::session::expect_ok(
            "RELEASE",
            "hostile target",
            s.call(fuse::release(file, fh, false))?,
        )?;
        crate::session::expect_ok("RELEASEDIR", "/", s.call(fuse::release(1, dir_fh, true))?)?;
    }
    Ok(results)
}

fn alloc_scratch(s: &mut Session) -> Result<(GuestAddress, GuestAddress)> {
    Ok((
        s.dev.ram.alloc(SCRATCH_IN, 4096)?,
        s.dev.ram.alloc(u64::from(SCRATCH_OUT), 4096)?,
    ))
}

fn run_cases(
    s: &mut Session,
    scratch: (GuestAddress, GuestAddress),
    cases: Vec<Case>,
    waits: Waits,
    pid: Option<u32>,
) -> Result<Vec<CaseResult>> {
    let mut out = Vec::new();
    for case in &cases {
        let mut outcome = send(s, scratch, case, waits)?;
        let alive = s.dev.backend_connected() && pid.is_none_or(crate::report::alive);
        if !alive {
            outcome = Outcome::Died;
        }
        out.push(CaseResult {
            name: case.name.to_string(),
            outcome,
        });
        if !alive {
            break;
        }
    }
    Ok(out)
}
