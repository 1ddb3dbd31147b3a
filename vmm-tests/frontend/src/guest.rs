//! [`Guest`]: one FUSE session driven a request at a time, as a test needs when what the back
//! end serves changes between requests (a mount table driven through its API): keep a node
//! id, unmount what it names, and see what that node id gets afterwards. Whole workloads can
//! run on any subtree too, checked against a host directory.

use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{AttrOut, EntryOut, InitOut, Opcode, OpenOut};

use crate::error::{FrontendError, Result};
use crate::fuse::{self, Request};
use crate::report::WorkloadReport;
use crate::session::{self, Reply, Session};
use crate::workload::{self, Ctx, Workload};
use crate::{connect, RunOptions};

/// What the back end answered to one request: the decoded payload, or the errno it sent.
/// (The outer [`Result`] of each call is for the transport: a back end that died, a
/// malformed reply.)
pub type Answer<T> = std::result::Result<T, i32>;

/// The attributes a LOOKUP or GETATTR returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The node id (LOOKUP) or the one asked about (GETATTR).
    pub nodeid: u64,
    /// `st_ino`.
    pub ino: u64,
    pub mode: u32,
    pub size: u64,
}

/// What [`Guest::workloads`] did.
#[derive(Debug, Clone)]
pub struct SubtreeReport {
    pub workloads: Vec<WorkloadReport>,
    /// Entries of the subtree seen by the last walk (its root included).
    pub entries: usize,
    /// Files whose every byte was read and checked (with a host directory to check with).
    pub verified_files: usize,
}

/// A connected device with an initialised FUSE session.
pub struct Guest {
    s: Session,
    o: RunOptions,
    init: InitOut,
}

fn answer(op: &'static str, reply: Reply) -> Result<Answer<Vec<u8>>> {
    match reply {
        Reply::Answer { errno: 0, data } => Ok(Ok(data)),
        Reply::Answer { errno, .. } => Ok(Err(errno)),
        Reply::Empty { used_len } => Err(FrontendError::BadReply {
            op,
            why: format!("no reply written (used length {used_len})"),
        }),
    }
}

impl Guest {
    /// Connects to `o.socket` as `o.profile` does, with `o`'s queues and depth, and sends
    /// FUSE_INIT.
    pub fn connect(o: &RunOptions) -> Result<Guest> {
        let mut s = connect(o)?;
        let init = s.init(o.read_size)?;
        Ok(Guest {
            s,
            o: o.clone(),
            init,
        })
    }

    /// What FUSE_INIT settled on.
    pub fn init_out(&self) -> InitOut {
        self.init
    }

    fn call(&mut self, op: &'static str, req: Request) -> Result<Answer<Vec<u8>>> {
        let reply = self.s.call(req)?;
        answer(op, reply)
    }

    /// LOOKUP of `name` in directory `parent` (a success takes one lookup reference).
    pub fn lookup(&mut self, parent: u64, name: &str) -> Result<Answer<Attr>> {
        let data = match self.call("LOOKUP", fuse::lookup(parent, name.as_bytes()))? {
            Ok(d) => d,
            Err(errno) => return Ok(Err(errno)),
        };
        let e: EntryOut = fuse::parse("LOOKUP", &data)?;
        Ok(Ok(Attr {
            nodeid: e.nodeid,
            ino: e.attr.ino,
            mode: e.attr.mode,
            size: e.attr.size,
        }))
    }

    /// LOOKUP of each name of `path` (`/a/b`) from the root; the first error ends it.
    pub fn lookup_path(&mut self, path: &str) -> Result<Answer<Attr>> {
        let mut at = self.getattr(1)?;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            let parent = match at {
                Ok(a) => a.nodeid,
                Err(errno) => return Ok(Err(errno)),
            };
            at = self.lookup(parent, name)?;
        }
        Ok(at)
    }

    /// GETATTR of `nodeid`.
    pub fn getattr(&mut self, nodeid: u64) -> Result<Answer<Attr>> {
        let data = match self.call("GETATTR", fuse::getattr(nodeid))? {
            Ok(d) => d,
            Err(errno) => return Ok(Err(errno)),
        };
        let a: AttrOut = fuse::parse("GETATTR", &data)?;
        Ok(Ok(Attr {
            nodeid,
            ino: a.attr.ino,
            mode: a.attr.mode,
            size: a.attr.size,
        }))
    }

    /// OPEN (or OPENDIR) of `nodeid`, read-only: the handle.
    pub fn open(&mut self, nodeid: u64, dir: bool) -> Result<Answer<u64>> {
        let op = if dir { "OPENDIR" } else { "OPEN" };
        Ok(match self.call(op, fuse::open(nodeid, dir))? {
            Ok(d) => Ok(fuse::parse::<OpenOut>(op, &d)?.fh),
            Err(errno) => Err(errno),
        })
    }

    /// READ of `size` bytes at `offset` through handle `fh`.
    pub fn read(
        &mut self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Answer<Vec<u8>>> {
        self.call("READ", fuse::read(Opcode::Read, nodeid, fh, offset, size))
    }

    /// The whole of a file: OPEN, READs to the end of `size` bytes, RELEASE.
    pub fn read_file(&mut self, nodeid: u64, size: u64) -> Result<Answer<Vec<u8>>> {
        let fh = match self.open(nodeid, false)? {
            Ok(fh) => fh,
            Err(errno) => return Ok(Err(errno)),
        };
        let chunk = session::read_size(&self.init, self.o.read_size);
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            match self.read(nodeid, fh, out.len() as u64, chunk)? {
                Ok(d) if d.is_empty() => break,
                Ok(d) => out.extend_from_slice(&d),
                Err(errno) => {
                    let _ = self.release(nodeid, fh, false)?;
                    return Ok(Err(errno));
                }
            }
        }
        Ok(self.release(nodeid, fh, false)?.map(|()| out))
    }

    /// RELEASE (or RELEASEDIR) of handle `fh`.
    pub fn release(&mut self, nodeid: u64, fh: u64, dir: bool) -> Result<Answer<()>> {
        let op = if dir { "RELEASEDIR" } else { "RELEASE" };
        Ok(self.call(op, fuse::release(nodeid, fh, dir))?.map(|_| ()))
    }

    /// The names in directory `nodeid` (`.` and `..` left out): OPENDIR, READDIR to the
    /// end, RELEASEDIR. READDIR takes no lookup references.
    pub fn list(&mut self, nodeid: u64) -> Result<Answer<Vec<String>>> {
        let fh = match self.open(nodeid, true)? {
            Ok(fh) => fh,
            Err(errno) => return Ok(Err(errno)),
        };
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let req = fuse::read(Opcode::Readdir, nodeid, fh, offset, 4096);
            let data = match self.call("READDIR", req)? {
                Ok(d) => d,
                Err(errno) => {
                    let _ = self.release(nodeid, fh, true)?;
                    return Ok(Err(errno));
                }
            };
            let entries = fuse::parse_dirents(&data, false)?;
            let Some(last) = entries.last().map(|e| e.off) else {
                break;
            };
            names.extend(
                entries
                    .iter()
                    .filter(|e| !e.is_dot())
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned()),
            );
            offset = last;
        }
        Ok(self.release(nodeid, fh, true)?.map(|()| names))
    }

    /// FORGET `nlookup` references of `nodeid` (no reply: it goes to the hiprio queue and
    /// completes empty).
    pub fn forget(&mut self, nodeid: u64, nlookup: u64) -> Result<()> {
        match self.s.call(fuse::forget(nodeid, nlookup))? {
            Reply::Empty { .. } => Ok(()),
            Reply::Answer { errno, .. } => Err(FrontendError::BadReply {
                op: "FORGET",
                why: format!("FORGET must not be answered (got errno {errno})"),
            }),
        }
    }

    /// Runs `workloads` on the subtree whose root is directory `root`, with the queue depth
    /// of the options it connected with; forgets every reference they took; with `verify`,
    /// checks names, types, sizes, modes, link targets and every byte read against that host
    /// directory (any difference is [`FrontendError::Mismatch`]).
    pub fn workloads(
        &mut self,
        root: u64,
        verify: Option<&Path>,
        workloads: &[Workload],
    ) -> Result<SubtreeReport> {
        let mut ctx = Ctx {
            verify: verify.map(Path::to_path_buf),
            read_size: session::read_size(&self.init, self.o.read_size),
            random_reads: self.o.random_reads,
            seed: self.o.seed,
            root,
            ..Default::default()
        };
        let mut reports = Vec::new();
        let mut failed = None;
        for w in workloads {
            match workload::run(&mut self.s, &mut ctx, *w, self.o.depth) {
                Ok(m) => reports.push(WorkloadReport::new(*w, self.o.depth, m)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Whatever happened, drop the references taken before reporting.
        workload::forget_all(&mut self.s, &mut ctx)?;
        if let Some(e) = failed {
            return Err(e);
        }
        if let Some(dir) = verify {
            crate::verify::compare(&mut ctx, dir);
        }
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
        Ok(SubtreeReport {
            workloads: reports,
            entries: ctx.tree.len(),
            verified_files: if verify.is_some() {
                ctx.digests.len()
            } else {
                0
            },
        })
    }

    /// Stops the device as the VMM does at shutdown and disconnects.
    pub fn stop(mut self) -> Result<()> {
        self.s.dev.stop()
    }
}
