//! The destination: a private temporary directory next to DEST that becomes DEST by one rename
//! on success and is removed on failure, so no half-written tree is ever visible as DEST.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, CWD};

use super::ExtractError;

/// Flags for every directory we open: never through a symlink, never inherited.
pub const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC);

/// A temporary directory that will become DEST.
pub struct Staged {
    parent: OwnedFd,
    parent_path: PathBuf,
    temp: OsString,
    dest_name: OsString,
    dest: PathBuf,
    /// DEST existed as an empty directory (to be replaced) rather than not at all.
    replace: bool,
    /// The temporary directory, opened.
    pub root: OwnedFd,
    armed: bool,
}

fn dest_err(dest: &Path, reason: impl Into<String>) -> ExtractError {
    ExtractError::Destination {
        dest: dest.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path, e: impl Into<io::Error>) -> ExtractError {
    ExtractError::DestinationIo {
        path: path.to_path_buf(),
        error: e.into(),
    }
}

impl Staged {
    /// Checks DEST (absent or an empty directory) and creates the temporary directory, mode
    /// 0700, in DEST's parent.
    pub fn prepare(dest: &Path) -> Result<Staged, ExtractError> {
        let dest_name = match dest.file_name() {
            Some(n) if n != OsStr::new(".") => n.to_os_string(),
            _ => return Err(dest_err(dest, "destination must name a directory")),
        };
        let parent_path = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let parent = rfs::openat(
            CWD,
            &parent_path,
            OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&parent_path, e))?;
        let replace = match rfs::statat(&parent, &dest_name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => false,
            Err(e) => return Err(io_err(dest, e)),
            Ok(st) => {
                let kind = FileType::from_raw_mode(st.st_mode);
                if kind != FileType::Directory {
                    return Err(dest_err(dest, "exists and is not a directory"));
                }
                let fd = rfs::openat(&parent, &dest_name, DIR_FLAGS, Mode::empty())
                    .map_err(|e| io_err(dest, e))?;
                if !is_empty_dir(&fd).map_err(|e| io_err(dest, e))? {
                    return Err(dest_err(dest, "exists and is not empty"));
                }
                true
            }
        };
        let hasher = RandomState::new();
        let mut attempt = 0u64;
        loop {
            let mut h = hasher.build_hasher();
            h.write_u64(attempt);
            h.write_u32(std::process::id());
            let temp = OsString::from(format!(".puzzlefs-extract-{:016x}", h.finish()));
            match rfs::mkdirat(&parent, &temp, Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    let root = rfs::openat(&parent, &temp, DIR_FLAGS, Mode::empty())
                        .map_err(|e| io_err(&parent_path.join(&temp), e))?;
                    return Ok(Staged {
                        parent,
                        parent_path,
                        temp,
                        dest_name,
                        dest: dest.to_path_buf(),
                        replace,
                        root,
                        armed: true,
                    });
                }
                Err(rustix::io::Errno::EXIST) if attempt < 100 => attempt += 1,
                Err(e) => return Err(io_err(&parent_path.join(&temp), e)),
            }
        }
    }

    /// Where the temporary directory is.
    pub fn temp_path(&self) -> PathBuf {
        self.parent_path.join(&self.temp)
    }

    /// Renames the temporary directory to DEST.
    pub fn commit(mut self) -> Result<(), ExtractError> {
        let result = if self.replace {
            // Replaces DEST only if it is still an empty directory.
            rfs::renameat(&self.parent, &self.temp, &self.parent, &self.dest_name)
        } else {
            rfs::renameat_with(
                &self.parent,
                &self.temp,
                &self.parent,
                &self.dest_name,
                RenameFlags::NOREPLACE,
            )
        };
        match result {
            Ok(()) => {
                self.armed = false;
                Ok(())
            }
            Err(e) => {
                let error = io_err(&self.dest, e);
                Err(self.discard(error))
            }
        }
    }

    /// Removes the temporary directory; returns `error`, extended if removal failed too.
    pub fn discard(mut self, error: ExtractError) -> ExtractError {
        self.armed = false;
        match remove_tree(&self.parent, &self.temp) {
            Ok(()) => error,
            Err(cleanup) => ExtractError::Cleanup {
                error: Box::new(error),
                temp: self.temp_path(),
                cleanup,
            },
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Only reached without commit or discard, e.g. while unwinding from a panic.
        if self.armed {
            let _ = remove_tree(&self.parent, &self.temp);
        }
    }
}

fn is_empty_dir(fd: &OwnedFd) -> io::Result<bool> {
    for entry in rfs::Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Removes the tree `name` in `parent` without following symlinks and without holding more
/// than three descriptors, whatever its depth: it climbs back up through `..`, which in a
/// private directory we created is the directory we came from.
pub fn remove_tree(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    // Directories of the tree may have lost their write or search permission already.
    let unlock = |dir: &OwnedFd, name: &[u8]| {
        let _ = rfs::chmodat(dir, name, Mode::from_raw_mode(0o700), AtFlags::empty());
    };
    unlock(parent, name.as_bytes());
    let mut cur = rfs::openat(parent, name, DIR_FLAGS, Mode::empty())?;
    let mut path: Vec<Vec<u8>> = Vec::new();
    loop {
        let (subdir, removed) = unlink_non_dirs(&cur)?;
        if let Some(child) = subdir {
            unlock(&cur, &child);
            cur = rfs::openat(&cur, &child[..], DIR_FLAGS, Mode::empty())?;
            path.push(child);
        } else if removed {
            // Scan again: only a scan that finds nothing proves the directory empty.
        } else if let Some(done) = path.pop() {
            let up = rfs::openat(&cur, c"..", DIR_FLAGS, Mode::empty())?;
            drop(cur);
            rfs::unlinkat(&up, &done[..], AtFlags::REMOVEDIR)?;
            cur = up;
        } else {
            break;
        }
    }
    drop(cur);
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

/// Unlinks the non-directories of `dir` until it meets a subdirectory, which it returns.
/// Also says whether anything was removed.
fn unlink_non_dirs(dir: &OwnedFd) -> io::Result<(Option<Vec<u8>>, bool)> {
    let mut removed = false;
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let is_dir = match entry.file_type() {
            FileType::Unknown => {
                let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            t => t == FileType::Directory,
        };
        if is_dir {
            return Ok((Some(name.to_bytes().to_vec()), removed));
        }
        rfs::unlinkat(dir, name, AtFlags::empty())?;
        removed = true;
    }
    Ok((None, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::fd::AsRawFd;

    #[test]
    fn refuses_non_empty_or_non_directory_destinations() {
        let tmp = tempfile::tempdir().unwrap();
        let full = tmp.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("x"), b"").unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("empty"), &link).unwrap();
        fs::create_dir(tmp.path().join("empty")).unwrap();
        for (dest, want) in [
            (&full, "not empty"),
            (&file, "not a directory"),
            (&link, "not a directory"),
        ] {
            let err = Staged::prepare(dest).err().expect("refused").to_string();
            assert!(err.contains(want), "{err}");
        }
        assert!(Staged::prepare(&tmp.path().join("missing/x")).is_err());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            4,
            "nothing created"
        );
    }

    #[test]
    fn commit_renames_and_discard_removes_everything() {
        let tmp = tempfile::tempdir().unwrap();
        for (dest, replace) in [
            (tmp.path().join("new"), false),
            (tmp.path().join("e"), true),
        ] {
            if replace {
                fs::create_dir(&dest).unwrap();
            }
            let staged = Staged::prepare(&dest).unwrap();
            let mode = rfs::fstat(&staged.root).unwrap().st_mode & 0o7777;
            assert_eq!(mode, 0o700, "no one else can enter the tree being built");
            assert_eq!(
                staged.temp_path().parent(),
                Some(tmp.path()),
                "next to DEST"
            );
            rfs::mkdirat(&staged.root, "d", Mode::from_raw_mode(0o700)).unwrap();
            staged.commit().unwrap();
            assert!(dest.join("d").is_dir());
        }
        let dest = tmp.path().join("gone");
        let staged = Staged::prepare(&dest).unwrap();
        // A deep tree with unwritable and unsearchable directories and a symlink out.
        let mut cur = rfs::openat(&staged.root, ".", DIR_FLAGS, Mode::empty()).unwrap();
        for i in 0..300 {
            rfs::mkdirat(&cur, "d", Mode::from_raw_mode(0o700)).unwrap();
            rfs::symlinkat(tmp.path(), &cur, "out").unwrap();
            fs::write(format!("/proc/self/fd/{}/f{i}", cur.as_raw_fd()), b"x").unwrap();
            let next = rfs::openat(&cur, "d", DIR_FLAGS, Mode::empty()).unwrap();
            rfs::fchmod(
                &cur,
                Mode::from_raw_mode(if i % 2 == 0 { 0o500 } else { 0 }),
            )
            .unwrap();
            cur = next;
        }
        drop(cur);
        let err = staged.discard(ExtractError::TooDeep {
            path: "/".into(),
            limit: 0,
        });
        assert!(matches!(err, ExtractError::TooDeep { .. }), "{err}");
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "only new and e remain: {left:?}");
    }
}
