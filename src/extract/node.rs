//! Creating one non-directory entry, and applying a node's owner, xattrs, mode and mtime.
//!
//! Order matters: chown clears setuid/setgid and file capabilities, so it comes first, then
//! the xattrs (while the file is still writable by us), then the mode, and the mtime last.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;

use super::error::{on, show};
use super::sparse::SparseWriter;
use super::tree::{join, Extractor};
use super::ExtractError;
use crate::reader::{Node, NodeId, ReaderError};

/// What attributes are applied to.
pub enum Target<'f> {
    /// An open regular file or directory.
    Fd(BorrowedFd<'f>),
    /// A symlink, device, fifo or socket, by name in its directory (never followed).
    At {
        /// The directory holding it.
        dir: BorrowedFd<'f>,
        /// Its name there.
        name: &'f [u8],
    },
}

/// Errors from the data sink: the reader's, or our writes'.
enum Sink {
    Reader(ReaderError),
    Io(io::Error),
}

impl From<ReaderError> for Sink {
    fn from(e: ReaderError) -> Self {
        Sink::Reader(e)
    }
}

const CREATE_FILE: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Extractor<'_> {
    /// Creates `name` in `dir` for node `id`; returns whether something was created
    /// (devices may be skipped).
    pub(super) fn create(
        &mut self,
        dir: &OwnedFd,
        dir_path: &[u8],
        name: &[u8],
        id: NodeId,
    ) -> Result<bool, ExtractError> {
        let node = self.image.table().node(id);
        let path = join(dir_path, name);
        match FileType::from_raw_mode(node.mode) {
            FileType::RegularFile => {
                let fd = rfs::openat(dir, name, CREATE_FILE, Mode::from_raw_mode(0o600))
                    .map_err(on(&path, "create file"))?;
                self.write_file(&fd, &path, id, node)?;
                self.apply_attrs(Target::Fd(fd.as_fd()), &path, id)?;
                self.report.files += 1;
            }
            FileType::Symlink => {
                let Some(target) = self.image.table().symlink_target(node) else {
                    return Err(ExtractError::io(
                        &path,
                        "create symlink",
                        io::Error::other("no target"),
                    ));
                };
                rfs::symlinkat(target, dir, name).map_err(on(&path, "create symlink"))?;
                self.apply_attrs(
                    Target::At {
                        dir: dir.as_fd(),
                        name,
                    },
                    &path,
                    id,
                )?;
                self.report.symlinks += 1;
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice) => {
                if self.opts.skip_devices {
                    self.report.skipped_devices += 1;
                    return Ok(false);
                }
                match rfs::mknodat(dir, name, kind, Mode::from_raw_mode(0o600), node.rdev()) {
                    Err(Errno::PERM) => {
                        return Err(ExtractError::DeviceNeedsRoot { path: show(&path) })
                    }
                    r => r.map_err(on(&path, "create device"))?,
                }
                self.apply_attrs(
                    Target::At {
                        dir: dir.as_fd(),
                        name,
                    },
                    &path,
                    id,
                )?;
                self.report.devices += 1;
            }
            kind @ (FileType::Fifo | FileType::Socket) => {
                rfs::mknodat(dir, name, kind, Mode::from_raw_mode(0o600), 0)
                    .map_err(on(&path, "create special file"))?;
                self.apply_attrs(
                    Target::At {
                        dir: dir.as_fd(),
                        name,
                    },
                    &path,
                    id,
                )?;
                self.report.specials += 1;
            }
            FileType::Directory | FileType::Unknown => {
                return Err(ExtractError::io(
                    &path,
                    "create",
                    io::Error::other(format!("unexpected file type {:o}", node.mode)),
                ));
            }
        }
        Ok(true)
    }

    /// Writes a file's bytes, every one of them from a verified blob, leaving holes for zeros.
    fn write_file(
        &mut self,
        fd: &OwnedFd,
        path: &[u8],
        id: NodeId,
        node: &Node,
    ) -> Result<(), ExtractError> {
        let file = File::from(
            fd.try_clone()
                .map_err(|e| ExtractError::io(path, "dup", e))?,
        );
        let mut writer = SparseWriter::new(&file);
        let got = self
            .image
            .read_with(id, 0, node.size, |piece| {
                writer.push(piece).map_err(Sink::Io)
            })
            .map_err(|e| match e {
                Sink::Reader(error) => ExtractError::Read {
                    path: show(path),
                    error,
                },
                Sink::Io(e) => ExtractError::io(path, "write", e),
            })?;
        if got != node.size {
            return Err(ExtractError::SizeMismatch {
                path: show(path),
                expected: node.size,
                actual: got,
            });
        }
        let written = writer.written;
        writer
            .finish()
            .map_err(|e| ExtractError::io(path, "write", e))?;
        self.report.bytes += node.size;
        self.report.bytes_written += written;
        Ok(())
    }

    /// Owner (as root), xattrs, permission bits (not for symlinks), then mtime.
    pub(super) fn apply_attrs(
        &mut self,
        target: Target<'_>,
        path: &[u8],
        id: NodeId,
    ) -> Result<(), ExtractError> {
        let node = self.image.table().node(id);
        let symlink = FileType::from_raw_mode(node.mode) == FileType::Symlink;
        if self.privileged {
            let (uid, gid) = (Some(Uid::from_raw(node.uid)), Some(Gid::from_raw(node.gid)));
            match target {
                Target::Fd(fd) => rfs::fchown(fd, uid, gid),
                Target::At { dir, name } => {
                    rfs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                }
            }
            .map_err(on(path, "set owner"))?;
        }
        for x in self.image.table().xattrs(node) {
            let result = match target {
                Target::Fd(fd) => rfs::fsetxattr(fd, &x.key[..], &x.value, XattrFlags::empty()),
                Target::At { dir, name } => rfs::lsetxattr(
                    proc_path(dir, name),
                    &x.key[..],
                    &x.value,
                    XattrFlags::empty(),
                ),
            };
            match result {
                Ok(()) => {}
                // Without root, trusted.* and security.* cannot be set: count, do not fail.
                Err(Errno::PERM | Errno::ACCESS)
                    if !self.privileged && !x.key.starts_with(b"user.") =>
                {
                    self.report.skipped_xattrs += 1;
                }
                Err(e) => {
                    return Err(ExtractError::Io {
                        path: show(path),
                        op: "set extended attribute",
                        error: io::Error::other(format!(
                            "{}: {}",
                            String::from_utf8_lossy(&x.key),
                            io::Error::from(e)
                        )),
                    })
                }
            }
        }
        let mode = Mode::from_raw_mode(node.mode & 0o7777);
        if !symlink {
            match target {
                Target::Fd(fd) => rfs::fchmod(fd, mode),
                // Never a symlink here, and nothing else can have replaced the node we just
                // made: the staged tree is private (mode 0700) until it is complete.
                Target::At { dir, name } => rfs::chmodat(dir, name, mode, AtFlags::empty()),
            }
            .map_err(on(path, "set mode"))?;
        }
        let t = rfs::Timespec {
            tv_sec: node.mtime_sec,
            tv_nsec: node.mtime_nsec.into(),
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        match target {
            Target::Fd(fd) => rfs::futimens(fd, &times),
            Target::At { dir, name } => {
                rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(on(path, "set mtime"))?;
        Ok(())
    }
}

/// `/proc/self/fd/<dir>/<name>`: names `name` inside the directory `dir` refers to, for the
/// `l*xattr` calls that have no `*at` form. Only the magic link of our own descriptor is
/// followed; `name` (one validated component) is not.
fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}
