//! Reading one given path, as a guest's first access to it does: LOOKUP of each component from
//! the root, OPEN, READs of the whole file (pipelined at the run's depth), RELEASE, then
//! BATCH_FORGET of what was looked up. Symbolic links are not followed. Made for timing the
//! first read of a file system mounted while the session runs (`--read-paths-from`): each
//! path is answered with one JSON line.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use fuse_backend_rs::abi::fuse_abi::{EntryOut, Opcode, OpenOut};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{FrontendError, Result};
use crate::fuse;
use crate::session::{expect_ok, Reply, Session};
use crate::workload::forget;

/// What reading one path gave: one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathRead {
    pub path: String,
    /// Whether every request succeeded; if not, `op` and `errno` say which failed.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// The file's size as LOOKUP reported it.
    pub size: u64,
    /// Bytes the READs returned.
    pub bytes: u64,
    /// sha256 of those bytes, hex (empty on failure).
    pub sha256: String,
    /// FUSE requests answered (LOOKUPs, OPEN, READs, RELEASE).
    pub requests: u64,
    /// Microseconds from the first LOOKUP to the RELEASE's answer.
    pub us: f64,
}

/// The components of `path` ("/a/b" or "a/b"); "." and ".." are refused.
pub fn components(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() {
        return Err(FrontendError::Usage(format!("{path:?}: no file named")));
    }
    if let Some(bad) = parts.iter().find(|c| **c == "." || **c == "..") {
        return Err(FrontendError::Usage(format!(
            "{path:?}: component {bad:?} not allowed"
        )));
    }
    Ok(parts)
}

/// Reads `path` whole with `read_size` READs, `depth` in flight. A FUSE error is part of the
/// answer (`ok: false`); a protocol failure is an error.
pub fn read_path(s: &mut Session, path: &str, read_size: u32, depth: usize) -> Result<PathRead> {
    let parts = components(path)?;
    let started = Instant::now();
    let mut line = PathRead {
        path: path.to_string(),
        ok: false,
        op: None,
        errno: None,
        size: 0,
        bytes: 0,
        sha256: String::new(),
        requests: 0,
        us: 0.0,
    };
    let mut looked_up = Vec::new();
    let outcome = lookup_and_read(s, &parts, read_size, depth, &mut line, &mut looked_up);
    line.us = started.elapsed().as_secs_f64() * 1e6;
    let items: Vec<(u64, u64)> = looked_up.iter().map(|n| (*n, 1)).collect();
    forget(s, &items)?;
    match outcome {
        Ok(()) => line.ok = true,
        Err(FrontendError::Fuse { op, errno, .. }) => {
            line.op = Some(op);
            line.errno = Some(errno);
            line.sha256.clear();
        }
        Err(e) => return Err(e),
    }
    Ok(line)
}

fn lookup_and_read(
    s: &mut Session,
    parts: &[&str],
    read_size: u32,
    depth: usize,
    line: &mut PathRead,
    looked_up: &mut Vec<u64>,
) -> Result<()> {
    let mut nodeid = 1;
    let mut entry = EntryOut::default();
    for name in parts {
        let reply = s.call(fuse::lookup(nodeid, name.as_bytes()))?;
        line.requests += 1;
        entry = fuse::parse("LOOKUP", &expect_ok("LOOKUP", &line.path, reply)?)?;
        nodeid = entry.nodeid;
        looked_up.push(nodeid);
    }
    line.size = entry.attr.size;
    let reply = s.call(fuse::open(nodeid, false))?;
    line.requests += 1;
    let fh = fuse::parse::<OpenOut>("OPEN", &expect_ok("OPEN", &line.path, reply)?)?.fh;
    let rs = u64::from(read_size.max(4096));
    let ops: VecDeque<_> = (0..line.size.div_ceil(rs))
        .map(|k| {
            let off = k * rs;
            let len = rs.min(line.size - off) as u32;
            (fuse::read(Opcode::Read, nodeid, fh, off, len), off)
        })
        .collect();
    let mut pieces = BTreeMap::new();
    let mut failed = None;
    s.run(depth, ops, |off, reply: Reply, _| {
        line.requests += 1;
        match expect_ok("READ", &line.path, reply) {
            Ok(data) => {
                pieces.insert(off, data);
            }
            Err(e @ FrontendError::Fuse { .. }) => failed = failed.take().or(Some(e)),
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    let released = s.call(fuse::release(nodeid, fh, false))?;
    line.requests += 1;
    if let Some(e) = failed {
        return Err(e);
    }
    expect_ok("RELEASE", &line.path, released)?;
    let mut hasher = Sha256::new();
    for data in pieces.values() {
        line.bytes += data.len() as u64;
        hasher.update(data);
    }
    line.sha256 = hex::encode(hasher.finalize());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_split_and_refuse_dot_dot() {
        assert_eq!(
            components("/rafs/c1/lowerdir/etc/passwd").unwrap(),
            ["rafs", "c1", "lowerdir", "etc", "passwd"]
        );
        assert_eq!(components("a//b/").unwrap(), ["a", "b"]);
        assert!(components("/").is_err());
        assert!(components("").is_err());
        assert!(components("/a/../b").is_err());
        assert!(components("./a").is_err());
    }

    #[test]
    fn a_failure_line_names_the_request_and_errno() {
        let line = PathRead {
            path: "/x".into(),
            ok: false,
            op: Some("LOOKUP"),
            errno: Some(2),
            size: 0,
            bytes: 0,
            sha256: String::new(),
            requests: 1,
            us: 5.0,
        };
        let v: serde_json::Value = serde_json::to_value(&line).unwrap();
        assert_eq!(v["op"], "LOOKUP");
        assert_eq!(v["errno"], 2);
        assert_eq!(v["ok"], false);
        let ok = PathRead {
            ok: true,
            op: None,
            errno: None,
            ..line
        };
        let v: serde_json::Value = serde_json::to_value(&ok).unwrap();
        assert!(v.get("op").is_none() && v.get("errno").is_none());
    }
}
