//! FUSE requests as a virtio-fs guest sends them, and their replies decoded without trusting
//! the back end (every length checked, no panics on malformed replies).

use fuse_backend_rs::abi::fuse_abi::{
    BatchForgetIn, Dirent, EntryOut, ForgetIn, ForgetOne, FsOptions, GetattrIn, InHeader, InitIn,
    InitOut, Opcode, OpenIn, OpenOut, OutHeader, ReadIn, ReleaseIn,
};
use vm_memory::ByteValued;

use crate::error::{FrontendError, Result};

/// FUSE protocol version the front end speaks (the Linux 5.x-6.x virtio-fs driver's level,
/// without the 7.36 extended INIT).
pub const KERNEL_MINOR: u32 = 31;
/// Bytes of an `InHeader`.
pub const IN_HEADER_LEN: usize = std::mem::size_of::<InHeader>();
/// Bytes of an `OutHeader`.
pub const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();

/// One request before it is placed in guest memory: the header is filled in at submission.
#[derive(Debug, Clone)]
pub struct Request {
    pub opcode: u32,
    pub nodeid: u64,
    pub args: Vec<u8>,
    /// Room for the reply payload (after the `OutHeader`); `None` for requests without a
    /// reply (FORGET, BATCH_FORGET), which get no device-writable buffer.
    pub reply_room: Option<u32>,
}

impl Request {
    fn new(op: Opcode, nodeid: u64, args: Vec<u8>, reply_room: u32) -> Request {
        Request {
            opcode: op as u32,
            nodeid,
            args,
            reply_room: Some(reply_room),
        }
    }

    /// The bytes of the readable part: header then arguments.
    pub fn encode(&self, unique: u64) -> Vec<u8> {
        let header = InHeader {
            len: (IN_HEADER_LEN + self.args.len()) as u32,
            opcode: self.opcode,
            unique,
            nodeid: self.nodeid,
            uid: 0,
            gid: 0,
            pid: 1,
            padding: 0,
        };
        let mut out = header.as_slice().to_vec();
        out.extend_from_slice(&self.args);
        out
    }
}

fn with_name(mut args: Vec<u8>, name: &[u8]) -> Vec<u8> {
    args.extend_from_slice(name);
    args.push(0);
    args
}

/// What INIT asks for: readdirplus, parallel directory operations, big requests.
pub fn init_flags() -> FsOptions {
    FsOptions::ASYNC_READ
        | FsOptions::BIG_WRITES
        | FsOptions::DO_READDIRPLUS
        | FsOptions::READDIRPLUS_AUTO
        | FsOptions::PARALLEL_DIROPS
        | FsOptions::MAX_PAGES
}

pub fn init(max_readahead: u32) -> Request {
    let arg = InitIn {
        major: 7,
        minor: KERNEL_MINOR,
        max_readahead,
        flags: init_flags().bits() as u32,
    };
    Request::new(
        Opcode::Init,
        0,
        arg.as_slice().to_vec(),
        std::mem::size_of::<InitOut>() as u32,
    )
}

pub fn lookup(parent: u64, name: &[u8]) -> Request {
    let room = std::mem::size_of::<EntryOut>() as u32;
    Request::new(Opcode::Lookup, parent, with_name(Vec::new(), name), room)
}

pub fn getattr(nodeid: u64) -> Request {
    let arg = GetattrIn::default();
    let room = std::mem::size_of::<fuse_backend_rs::abi::fuse_abi::AttrOut>() as u32;
    Request::new(Opcode::Getattr, nodeid, arg.as_slice().to_vec(), room)
}

pub fn readlink(nodeid: u64) -> Request {
    Request::new(Opcode::Readlink, nodeid, Vec::new(), 4096)
}

pub fn open(nodeid: u64, dir: bool) -> Request {
    let arg = OpenIn {
        flags: libc::O_RDONLY as u32,
        fuse_flags: 0,
    };
    let op = if dir { Opcode::Opendir } else { Opcode::Open };
    let room = std::mem::size_of::<OpenOut>() as u32;
    Request::new(op, nodeid, arg.as_slice().to_vec(), room)
}

/// READ, READDIR or READDIRPLUS of `size` bytes at `offset`.
pub fn read(op: Opcode, nodeid: u64, fh: u64, offset: u64, size: u32) -> Request {
    let arg = ReadIn {
        fh,
        offset,
        size,
        flags: libc::O_RDONLY as u32,
        ..Default::default()
    };
    Request::new(op, nodeid, arg.as_slice().to_vec(), size)
}

pub fn release(nodeid: u64, fh: u64, dir: bool) -> Request {
    let arg = ReleaseIn {
        fh,
        flags: libc::O_RDONLY as u32,
        ..Default::default()
    };
    let op = if dir {
        Opcode::Releasedir
    } else {
        Opcode::Release
    };
    Request::new(op, nodeid, arg.as_slice().to_vec(), 0)
}

pub fn forget(nodeid: u64, nlookup: u64) -> Request {
    Request {
        opcode: Opcode::Forget as u32,
        nodeid,
        args: ForgetIn { nlookup }.as_slice().to_vec(),
        reply_room: None,
    }
}

pub fn batch_forget(items: &[(u64, u64)]) -> Request {
    let head = BatchForgetIn {
        count: items.len() as u32,
        dummy: 0,
    };
    let mut args = head.as_slice().to_vec();
    for (nodeid, nlookup) in items {
        let one = ForgetOne {
            nodeid: *nodeid,
            nlookup: *nlookup,
        };
        args.extend_from_slice(one.as_slice());
    }
    Request {
        opcode: Opcode::BatchForget as u32,
        nodeid: 0,
        args,
        reply_room: None,
    }
}

/// Reads a `T` from the front of `data`, or says why not.
pub fn parse<T: ByteValued + Default>(op: &'static str, data: &[u8]) -> Result<T> {
    let need = std::mem::size_of::<T>();
    if data.len() < need {
        return Err(FrontendError::BadReply {
            op,
            why: format!("{} bytes, expected at least {need}", data.len()),
        });
    }
    Ok(T::from_slice(&data[..need]).copied().unwrap_or_else(|| {
        // Unaligned source: copy through an aligned value.
        let mut v = T::default();
        v.as_mut_slice().copy_from_slice(&data[..need]);
        v
    }))
}

/// One directory entry from READDIR or READDIRPLUS.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub off: u64,
    /// d_type: the file type bits of the mode, shifted right by 12.
    pub kind: u32,
    pub name: Vec<u8>,
    /// READDIRPLUS only: the entry's lookup result (nodeid 0: none was made).
    pub entry: Option<EntryOut>,
}

impl DirEntry {
    /// `.` and `..`, which carry no lookup reference.
    pub fn is_dot(&self) -> bool {
        self.name == b"." || self.name == b".."
    }
}

/// Decodes a READDIR (`plus == false`) or READDIRPLUS reply buffer.
pub fn parse_dirents(data: &[u8], plus: bool) -> Result<Vec<DirEntry>> {
    let op = if plus { "READDIRPLUS" } else { "READDIR" };
    let entry_len = if plus {
        std::mem::size_of::<EntryOut>()
    } else {
        0
    };
    let dirent_len = std::mem::size_of::<Dirent>();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = &data[pos..];
        let entry = if plus {
            Some(parse::<EntryOut>(op, rest)?)
        } else {
            None
        };
        let d: Dirent = parse(op, &rest[entry_len..])?;
        let name_at = entry_len + dirent_len;
        let name_end = name_at
            .checked_add(d.namelen as usize)
            .filter(|end| *end <= rest.len())
            .ok_or_else(|| FrontendError::BadReply {
                op,
                why: format!("entry name of {} bytes overruns the reply", d.namelen),
            })?;
        if d.namelen == 0 || d.namelen > 1024 {
            return Err(FrontendError::BadReply {
                op,
                why: format!("name length {}", d.namelen),
            });
        }
        out.push(DirEntry {
            off: d.off,
            kind: d.type_,
            name: rest[name_at..name_end].to_vec(),
            entry,
        });
        pos += name_end.next_multiple_of(8);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirent(buf: &mut Vec<u8>, name: &[u8], off: u64) {
        let d = Dirent {
            ino: 5,
            off,
            namelen: name.len() as u32,
            type_: 8,
        };
        buf.extend_from_slice(d.as_slice());
        buf.extend_from_slice(name);
        while !buf.len().is_multiple_of(8) {
            buf.push(0);
        }
    }

    #[test]
    fn decodes_padded_entries() {
        let mut buf = Vec::new();
        dirent(&mut buf, b"a", 1);
        dirent(&mut buf, b"longer-name", 2);
        let got = parse_dirents(&buf, false).unwrap();
        let names: Vec<&[u8]> = got.iter().map(|e| e.name.as_slice()).collect();
        assert_eq!(names, [b"a".as_slice(), b"longer-name"]);
        assert_eq!(got[1].off, 2);
        assert_eq!(got[0].kind, 8);
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let mut buf = Vec::new();
        dirent(&mut buf, b"name", 1);
        assert!(parse_dirents(&buf[..buf.len() - 8], false).is_err());
        assert!(parse_dirents(&buf, true).is_err());
        let mut lying = buf.clone();
        lying[16..20].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_dirents(&lying, false).is_err());
        // Garbage of every length up to a few entries: never a panic.
        let mut x = 0x1234_5678u32;
        let garbage: Vec<u8> = (0..600)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        for len in 0..garbage.len() {
            let _ = parse_dirents(&garbage[..len], false);
            let _ = parse_dirents(&garbage[..len], true);
        }
        assert!(parse::<InitOut>("INIT", &[0u8; 10]).is_err());
    }

    #[test]
    fn requests_carry_their_length_and_arguments() {
        let r = lookup(1, b"etc");
        let bytes = r.encode(42);
        let h: InHeader = parse("test", &bytes).unwrap();
        assert_eq!(h.len as usize, bytes.len());
        assert_eq!(
            (h.opcode, h.unique, h.nodeid),
            (Opcode::Lookup as u32, 42, 1)
        );
        assert_eq!(&bytes[IN_HEADER_LEN..], b"etc\0");
        let f = batch_forget(&[(3, 1), (4, 2)]);
        assert!(f.reply_room.is_none());
        assert_eq!(f.args.len(), 8 + 2 * 16);
    }
}
