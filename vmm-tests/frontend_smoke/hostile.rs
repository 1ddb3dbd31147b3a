//! What our daemon answers to each hostile case of the front end, serving an image or a
//! shared directory read-write; the cases are in `vmm-tests/frontend/src/hostile.rs`.

use virtiofs_frontend::{Outcome, RunReport};

/// What the daemon served the hostile cases from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// A PuzzleFS image (read-only; handles carry no state).
    Image,
    /// A shared directory served read-write (fuse-backend-rs's pass-through file system).
    SharedDir,
}

/// Every case, in the order the front end sends them, with what it must get back.
pub fn expected(served: Served) -> Vec<(&'static str, Outcome)> {
    use Outcome::{Empty, Entry, Errno, Success};
    let errno = |errno| Errno { errno };
    // Nothing can be written: no header to reply to, or no room for one.
    let nothing = Empty { used_len: 0 };
    // A GETATTR answered whole: out header and attr_out.
    let attr = Success { reply_len: 120 };
    let image_or_dir = |image, dir| match served {
        Served::Image => image,
        Served::SharedDir => dir,
    };
    vec![
        // Before INIT, as libfuse does (virtiofsd 1.14 says EBADF).
        ("getattr-before-init", errno(libc::EIO)),
        ("read-before-init", errno(libc::EIO)),
        // A header length that disagrees with the chain is refused before decoding.
        ("len-larger-than-chain", errno(libc::EINVAL)),
        ("len-smaller-than-header", errno(libc::EINVAL)),
        ("len-zero", errno(libc::EINVAL)),
        ("unknown-opcode", errno(libc::ENOSYS)),
        ("opcode-zero", errno(libc::ENOSYS)),
        // A guest that reboots on the same connection sends INIT again: answered.
        ("init-again", Success { reply_len: 80 }),
        // Node ids the daemon never gave out.
        ("getattr-unknown-inode", errno(libc::EBADF)),
        ("getattr-inode-zero", errno(libc::EBADF)),
        ("getattr-no-args", errno(libc::EINVAL)),
        ("lookup-unknown-parent", errno(libc::EBADF)),
        ("lookup-no-nul", errno(libc::EINVAL)),
        ("lookup-huge-namelen", errno(libc::ENAMETOOLONG)),
        // ".." of the root is the root: nothing above it is reachable.
        ("lookup-dotdot", Entry { nodeid: 1 }),
        // No image entry can hold a '/' (the reader refuses such names): a negative entry.
        (
            "lookup-slash",
            image_or_dir(Entry { nodeid: 0 }, errno(libc::EINVAL)),
        ),
        // A READ larger than its reply buffer: the image fills the buffer; fuse-backend-rs
        // refuses it ("data out of range").
        (
            "read-4gib",
            image_or_dir(Success { reply_len: 4096 }, errno(libc::EIO)),
        ),
        // An offset past i64::MAX: past the end of any image file; pread(2) says EINVAL.
        (
            "read-huge-offset",
            image_or_dir(Success { reply_len: 16 }, errno(libc::EINVAL)),
        ),
        // Image handles carry no state (so they survive reconnects): any handle reads.
        (
            "read-unknown-fh",
            image_or_dir(Success { reply_len: 4096 }, errno(libc::EBADF)),
        ),
        ("read-unknown-inode", errno(libc::EBADF)),
        // Over fuse-backend-rs's largest buffer.
        ("readdir-4gib", errno(libc::ENOMEM)),
        // The whole root listing of the fixture tree (it fits the 4 KiB buffer).
        (
            "readdirplus-unknown-fh",
            image_or_dir(Success { reply_len: 2272 }, errno(libc::EBADF)),
        ),
        (
            "release-unknown-fh",
            image_or_dir(Success { reply_len: 16 }, errno(libc::EBADF)),
        ),
        // The shared directory is writable, but not through a handle opened read-only.
        (
            "write-readonly",
            image_or_dir(errno(libc::EROFS), errno(libc::EBADF)),
        ),
        ("in-desc-outside-ram", nothing.clone()),
        ("in-desc-below-ram", nothing.clone()),
        ("in-desc-straddles-end", nothing.clone()),
        ("in-desc-huge-len", nothing.clone()),
        ("out-desc-outside-ram", nothing.clone()),
        ("zero-len-writable", nothing.clone()),
        ("no-writable", nothing.clone()),
        // Out of the order the spec asks of drivers, but each part is usable: served.
        ("writable-before-readable", attr.clone()),
        ("short-writable", nothing.clone()),
        // virtio-queue ends a chain after queue-size descriptors or at a `next` past the
        // table; what came before holds the whole request.
        ("desc-loop", attr.clone()),
        ("next-past-table", attr.clone()),
        // A head past the table cannot be returned to the used ring.
        ("head-past-table", Outcome::Dropped),
        ("indirect-not-negotiated", nothing.clone()),
        ("header-split-over-descs", attr.clone()),
        // FORGETs have no reply.
        ("forget-unknown-inode", nothing.clone()),
        ("batch-forget-count-overflow", nothing),
        ("getattr-on-hiprio", attr),
    ]
}

/// Compares every case's outcome with [`expected`]; fails listing each difference.
pub fn check(r: &RunReport, served: Served) {
    let want = expected(served);
    let mut wrong = Vec::new();
    for (i, (name, want)) in want.iter().enumerate() {
        match r.hostile.get(i) {
            None => wrong.push(format!("{name}: not sent")),
            Some(got) if got.name != *name => {
                wrong.push(format!("case {i}: {name} expected, {} sent", got.name))
            }
            Some(got) if got.outcome != *want => {
                wrong.push(format!("{name}: expected {want}, got {}", got.outcome))
            }
            Some(_) => {}
        }
    }
    for extra in r.hostile.iter().skip(want.len()) {
        wrong.push(format!("{}: sent, but no outcome expected", extra.name));
    }
    assert!(
        wrong.is_empty(),
        "{served:?}: hostile cases answered wrongly:\n{}",
        wrong.join("\n")
    );
}
