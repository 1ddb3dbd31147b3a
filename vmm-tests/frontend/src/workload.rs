//! The workloads: walk (LOOKUP + GETATTR of every entry), readdirplus (the same walk by
//! READDIRPLUS), read (every regular file, sequentially, whole), random (4 KiB reads in the
//! large files). Each runs pipelined at a queue depth and records what it saw for checking.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{AttrOut, EntryOut, Opcode, OpenOut};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{FrontendError, Result};
use crate::fuse::{self, Request};
use crate::session::{expect_ok, Reply, Session};

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Walk,
    Readdirplus,
    Read,
    Random,
}

/// Bytes READDIR and READDIRPLUS ask for, as the Linux driver does (one page).
const DIR_BUF: u32 = 4096;
/// Files at least this big take part in `random`.
const LARGE_FILE: u64 = 1 << 20;
/// Size of one random read.
const RANDOM_READ: u32 = 4096;

/// What the walk learned about one entry.
#[derive(Debug, Clone)]
pub struct Node {
    pub nodeid: u64,
    pub mode: u32,
    pub size: u64,
    pub link: Option<Vec<u8>>,
}

/// What all workloads of a run share: the served tree, lookup counts to forget, file
/// digests, and differences from the source tree found on the way.
#[derive(Default)]
pub struct Ctx {
    /// Served entries by path relative to the root ("" is the root).
    pub tree: BTreeMap<Vec<u8>, Node>,
    pub lookups: HashMap<u64, u64>,
    pub digests: BTreeMap<Vec<u8>, String>,
    pub differences: Vec<String>,
    pub verify: Option<PathBuf>,
    pub read_size: u32,
    pub random_reads: usize,
    pub seed: u64,
    /// The node id the walks start from (0: FUSE's root, 1).
    pub root: u64,
}

impl Ctx {
    /// The node id the walks start from.
    pub fn root(&self) -> u64 {
        if self.root == 0 {
            1
        } else {
            self.root
        }
    }
}

/// Counters of one workload run.
#[derive(Debug, Default)]
pub struct Measured {
    pub ops: u64,
    pub bytes: u64,
    pub latencies_ns: Vec<u64>,
    pub elapsed: Duration,
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

fn is_dir(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}
fn is_link(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFLNK
}
fn is_file(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFREG
}

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

enum WalkOp {
    OpenDir(Vec<u8>, u64),
    ReadDir(Vec<u8>, u64, u64),
    ReleaseDir,
    Lookup(Vec<u8>, u32),
    GetAttr(Vec<u8>, u32),
    Readlink(Vec<u8>),
}

/// Runs `w` at `depth`; read and random walk the tree first (untimed) if no walk ran yet.
pub fn run(s: &mut Session, ctx: &mut Ctx, w: Workload, depth: usize) -> Result<Measured> {
    if matches!(w, Workload::Read | Workload::Random) && ctx.tree.len() <= 1 {
        walk(s, ctx, depth, false)?;
    }
    let started = Instant::now();
    let mut m = match w {
        Workload::Walk => walk(s, ctx, depth, false)?,
        Workload::Readdirplus => walk(s, ctx, depth, true)?,
        Workload::Read => read_all(s, ctx, depth)?,
        Workload::Random => random(s, ctx, depth)?,
    };
    m.elapsed = started.elapsed();
    Ok(m)
}

fn walk(s: &mut Session, ctx: &mut Ctx, depth: usize, plus: bool) -> Result<Measured> {
    let start = ctx.root();
    let root = expect_ok("GETATTR", "/", s.call(fuse::getattr(start))?)?;
    let root: AttrOut = fuse::parse("GETATTR", &root)?;
    ctx.tree.clear();
    ctx.tree.insert(
        Vec::new(),
        Node {
            nodeid: start,
            mode: root.attr.mode,
            size: root.attr.size,
            link: None,
        },
    );
    let mut m = Measured::default();
    let mut ops = VecDeque::new();
    ops.push_back((fuse::open(start, true), WalkOp::OpenDir(Vec::new(), start)));
    let readdir = if plus {
        Opcode::Readdirplus
    } else {
        Opcode::Readdir
    };
    let lat = s.run(depth, ops, |op, reply, ops| {
        m.ops += 1;
        walk_reply(ctx, op, reply, ops, readdir, &mut m.bytes)
    })?;
    m.latencies_ns = lat;
    Ok(m)
}

fn walk_reply(
    ctx: &mut Ctx,
    op: WalkOp,
    reply: Reply,
    ops: &mut VecDeque<(Request, WalkOp)>,
    readdir: Opcode,
    bytes: &mut u64,
) -> Result<()> {
    let plus = matches!(readdir, Opcode::Readdirplus);
    match op {
        WalkOp::OpenDir(path, ino) => {
            let open: OpenOut =
                fuse::parse("OPENDIR", &expect_ok("OPENDIR", &show(&path), reply)?)?;
            let req = fuse::read(readdir, ino, open.fh, 0, DIR_BUF);
            ops.push_back((req, WalkOp::ReadDir(path, ino, open.fh)));
        }
        WalkOp::ReadDir(path, ino, fh) => {
            let data = expect_ok("READDIR", &show(&path), reply)?;
            *bytes += data.len() as u64;
            let entries = fuse::parse_dirents(&data, plus)?;
            let Some(last) = entries.last().map(|e| e.off) else {
                ops.push_back((fuse::release(ino, fh, true), WalkOp::ReleaseDir));
                return Ok(());
            };
            for e in entries.iter().filter(|e| !e.is_dot()) {
                let child = join(&path, &e.name);
                match &e.entry {
                    None => {
                        ops.push_back((fuse::lookup(ino, &e.name), WalkOp::Lookup(child, e.kind)))
                    }
                    Some(entry) if entry.nodeid != 0 => found(ctx, child, e.kind, entry, ops),
                    Some(_) => {}
                }
            }
            let req = fuse::read(readdir, ino, fh, last, DIR_BUF);
            ops.push_back((req, WalkOp::ReadDir(path, ino, fh)));
        }
        WalkOp::ReleaseDir => match reply {
            // The Linux driver ignores RELEASEDIR's answer; fuse-backend-rs's pseudo file
            // system (the directories above nydusd's mounts) answers ENOSYS.
            Reply::Answer {
                errno: libc::ENOSYS,
                ..
            } => {}
            reply => {
                expect_ok("RELEASEDIR", "", reply)?;
            }
        },
        WalkOp::Lookup(path, kind) => {
            let entry: EntryOut =
                fuse::parse("LOOKUP", &expect_ok("LOOKUP", &show(&path), reply)?)?;
            *ctx.lookups.entry(entry.nodeid).or_default() += 1;
            ops.push_back((
                fuse::getattr(entry.nodeid),
                WalkOp::GetAttr(path.clone(), kind),
            ));
            ctx.tree.insert(
                path,
                Node {
                    nodeid: entry.nodeid,
                    mode: 0,
                    size: 0,
                    link: None,
                },
            );
        }
        WalkOp::GetAttr(path, kind) => {
            let attr: AttrOut =
                fuse::parse("GETATTR", &expect_ok("GETATTR", &show(&path), reply)?)?;
            check_kind(ctx, &path, kind, attr.attr.mode);
            let node = ctx.tree.get_mut(&path).expect("looked up before");
            node.mode = attr.attr.mode;
            node.size = attr.attr.size;
            descend(path, node.nodeid, attr.attr.mode, ops);
        }
        WalkOp::Readlink(path) => {
            let target = expect_ok("READLINK", &show(&path), reply)?;
            if let Some(node) = ctx.tree.get_mut(&path) {
                node.link = Some(target);
            }
        }
    }
    Ok(())
}

/// A directory entry's d_type must agree with the inode's mode (or be DT_UNKNOWN, 0, which
/// is legal: nydusd sends it).
fn check_kind(ctx: &mut Ctx, path: &[u8], kind: u32, mode: u32) {
    if kind != 0 && kind != (mode & libc::S_IFMT) >> 12 {
        ctx.differences.push(format!(
            "{}: directory entry type {kind}, inode mode {mode:o}",
            show(path)
        ));
    }
}

fn found(
    ctx: &mut Ctx,
    path: Vec<u8>,
    kind: u32,
    e: &EntryOut,
    ops: &mut VecDeque<(Request, WalkOp)>,
) {
    check_kind(ctx, &path, kind, e.attr.mode);
    *ctx.lookups.entry(e.nodeid).or_default() += 1;
    ctx.tree.insert(
        path.clone(),
        Node {
            nodeid: e.nodeid,
            mode: e.attr.mode,
            size: e.attr.size,
            link: None,
        },
    );
    descend(path, e.nodeid, e.attr.mode, ops);
}

fn descend(path: Vec<u8>, ino: u64, mode: u32, ops: &mut VecDeque<(Request, WalkOp)>) {
    if is_dir(mode) {
        ops.push_back((fuse::open(ino, true), WalkOp::OpenDir(path, ino)));
    } else if is_link(mode) {
        ops.push_back((fuse::readlink(ino), WalkOp::Readlink(path)));
    }
}

enum ReadOp {
    Open(usize),
    Read { file: usize, off: u64, len: u32 },
    Release(usize),
}

struct FileRead {
    path: Vec<u8>,
    nodeid: u64,
    size: u64,
    fh: u64,
    hasher: Sha256,
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    left: u64,
}

fn files(ctx: &Ctx, min_size: u64) -> Vec<FileRead> {
    ctx.tree
        .iter()
        .filter(|(_, n)| is_file(n.mode) && n.size >= min_size)
        .map(|(p, n)| FileRead {
            path: p.clone(),
            nodeid: n.nodeid,
            size: n.size,
            fh: 0,
            hasher: Sha256::new(),
            next: 0,
            pending: BTreeMap::new(),
            left: 0,
        })
        .collect()
}

fn read_all(s: &mut Session, ctx: &mut Ctx, depth: usize) -> Result<Measured> {
    let rs = u64::from(ctx.read_size);
    let mut files = files(ctx, 0);
    let mut m = Measured::default();
    let ops = (0..files.len())
        .map(|i| (fuse::open(files[i].nodeid, false), ReadOp::Open(i)))
        .collect();
    let lat = s.run(depth, ops, |op, reply, ops| {
        m.ops += 1;
        match op {
            ReadOp::Open(i) => {
                let f = &mut files[i];
                let open: OpenOut =
                    fuse::parse("OPEN", &expect_ok("OPEN", &show(&f.path), reply)?)?;
                f.fh = open.fh;
                f.left = f.size.div_ceil(rs);
                if f.left == 0 {
                    ops.push_front((fuse::release(f.nodeid, f.fh, false), ReadOp::Release(i)));
                }
                // Front of the queue, in offset order: a file is read before the next opens.
                for k in (0..f.left).rev() {
                    let off = k * rs;
                    let len = rs.min(f.size - off) as u32;
                    let req = fuse::read(Opcode::Read, f.nodeid, f.fh, off, len);
                    ops.push_front((req, ReadOp::Read { file: i, off, len }));
                }
            }
            ReadOp::Read { file, off, len } => {
                let f = &mut files[file];
                let data = expect_ok("READ", &show(&f.path), reply)?;
                m.bytes += data.len() as u64;
                if data.len() != len as usize {
                    ctx.differences.push(format!(
                        "{}: read of {len} bytes at {off} returned {}",
                        show(&f.path),
                        data.len()
                    ));
                }
                f.pending.insert(off, data);
                while let Some(chunk) = f.pending.remove(&f.next) {
                    f.hasher.update(&chunk);
                    f.next += rs;
                }
                f.left -= 1;
                if f.left == 0 {
                    ops.push_front((fuse::release(f.nodeid, f.fh, false), ReadOp::Release(file)));
                }
            }
            ReadOp::Release(i) => {
                let f = &mut files[i];
                expect_ok("RELEASE", &show(&f.path), reply)?;
                let digest = std::mem::take(&mut f.hasher).finalize();
                ctx.digests.insert(f.path.clone(), hex::encode(digest));
            }
        }
        Ok(())
    })?;
    m.latencies_ns = lat;
    Ok(m)
}

/// xorshift64*: a small deterministic generator, so a seed reproduces a run.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn random(s: &mut Session, ctx: &mut Ctx, depth: usize) -> Result<Measured> {
    let mut files = files(ctx, LARGE_FILE);
    if files.is_empty() {
        files = files_fallback(ctx);
    }
    if files.is_empty() {
        return Err(FrontendError::Usage(
            "random: no regular file of 4 KiB or more".into(),
        ));
    }
    for f in files.iter_mut() {
        let open = expect_ok("OPEN", &show(&f.path), s.call(fuse::open(f.nodeid, false))?)?;
        f.fh = fuse::parse::<OpenOut>("OPEN", &open)?.fh;
    }
    let mut state = ctx.seed | 1;
    let mut ops = VecDeque::new();
    for _ in 0..ctx.random_reads {
        let i = (next_random(&mut state) % files.len() as u64) as usize;
        let blocks = files[i].size / u64::from(RANDOM_READ);
        let off = (next_random(&mut state) % blocks.max(1)) * u64::from(RANDOM_READ);
        let f = &files[i];
        let req = fuse::read(Opcode::Read, f.nodeid, f.fh, off, RANDOM_READ);
        ops.push_back((
            req,
            ReadOp::Read {
                file: i,
                off,
                len: RANDOM_READ,
            },
        ));
    }
    let sources: Vec<Option<std::fs::File>> = files
        .iter()
        .map(|f| {
            ctx.verify
                .as_ref()
                .and_then(|d| std::fs::File::open(source_path(d, &f.path)).ok())
        })
        .collect();
    let mut m = Measured::default();
    let lat = s.run(depth, ops, |op, reply, _| {
        m.ops += 1;
        let ReadOp::Read { file, off, len } = op else {
            return Ok(());
        };
        let path = &files[file].path;
        let data = expect_ok("READ", &show(path), reply)?;
        m.bytes += data.len() as u64;
        let want_len = u64::from(len).min(files[file].size - off) as usize;
        let mut want = vec![0u8; want_len];
        let mismatch = match &sources[file] {
            Some(src) => src.read_exact_at(&mut want, off).is_err() || want != data,
            None => data.len() != want_len,
        };
        if mismatch && (ctx.verify.is_some() || data.len() != want_len) {
            ctx.differences.push(format!(
                "{}: random read of {len} bytes at {off} differs from the source",
                show(path)
            ));
        }
        Ok(())
    })?;
    for f in &files {
        expect_ok(
            "RELEASE",
            &show(&f.path),
            s.call(fuse::release(f.nodeid, f.fh, false))?,
        )?;
    }
    m.latencies_ns = lat;
    Ok(m)
}

fn files_fallback(ctx: &Ctx) -> Vec<FileRead> {
    files(ctx, u64::from(RANDOM_READ))
}

/// Where a served path lives in the source tree.
pub fn source_path(dir: &Path, rel: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dir.join(std::ffi::OsStr::from_bytes(rel))
}

/// Drops every lookup reference the run took, with BATCH_FORGET on the hiprio queue.
pub fn forget_all(s: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let items: Vec<(u64, u64)> = ctx.lookups.drain().collect();
    forget(s, &items)
}

/// Drops `(nodeid, nlookup)` references with BATCH_FORGET on the hiprio queue.
pub fn forget(s: &mut Session, items: &[(u64, u64)]) -> Result<()> {
    let ops: VecDeque<_> = items
        .chunks(256)
        .map(|c| (fuse::batch_forget(c), ()))
        .collect();
    s.run(1, ops, |_, reply, _| match reply {
        Reply::Empty { .. } => Ok(()),
        Reply::Answer { errno, .. } => Err(FrontendError::BadReply {
            op: "BATCH_FORGET",
            why: format!("FORGET must not be answered (got errno {errno})"),
        }),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release_dir(errno: i32) -> Result<()> {
        let mut ctx = Ctx::default();
        let mut ops = VecDeque::new();
        let reply = Reply::Answer {
            errno,
            data: Vec::new(),
        };
        let mut bytes = 0;
        walk_reply(
            &mut ctx,
            WalkOp::ReleaseDir,
            reply,
            &mut ops,
            Opcode::Readdir,
            &mut bytes,
        )
    }

    #[test]
    fn releasedir_enosys_is_ignored_as_the_linux_driver_does_other_errors_are_not() {
        assert!(release_dir(0).is_ok());
        assert!(release_dir(libc::ENOSYS).is_ok());
        assert!(release_dir(libc::EIO).is_err());
    }
}
