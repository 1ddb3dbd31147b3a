//! A blob's bytes on their way to their name: an unnamed file in the blobs directory
//! (O_TMPFILE), linked under its name only once complete, so that a process killed while
//! writing leaves nothing behind. Where the file system has no O_TMPFILE, a named temporary
//! file (`.tmp-blob-*`, removed on every path but a kill) instead.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};

use super::dir::public_file;

const PREFIX: &str = ".tmp-blob-";

/// Bytes being written, not yet under their name.
pub(crate) enum TempBlob {
    Unnamed { file: File, dir: PathBuf },
    Named(tempfile::NamedTempFile),
}

impl TempBlob {
    /// A new empty file in `dir` (mode 0644).
    pub(crate) fn new_in(dir: &Path) -> io::Result<TempBlob> {
        let unnamed = rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        );
        match unnamed {
            Ok(fd) => {
                let file = File::from(fd);
                // The umask may have narrowed the mode.
                file.set_permissions(public_file())?;
                Ok(TempBlob::Unnamed {
                    file,
                    dir: dir.to_path_buf(),
                })
            }
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => Ok(TempBlob::Named(
                tempfile::Builder::new()
                    .prefix(PREFIX)
                    .permissions(public_file())
                    .tempfile_in(dir)?,
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The file to write.
    pub(crate) fn file(&mut self) -> &mut File {
        match self {
            TempBlob::Unnamed { file, .. } => file,
            TempBlob::Named(tmp) => tmp.as_file_mut(),
        }
    }

    /// What to name in an error.
    pub(crate) fn path(&self) -> PathBuf {
        match self {
            TempBlob::Unnamed { dir, .. } => dir.join("(unnamed temporary file)"),
            TempBlob::Named(tmp) => tmp.path().to_path_buf(),
        }
    }

    /// Gives the file its name `dest` (in the same directory), replacing what is there.
    pub(crate) fn persist(self, dest: &Path) -> io::Result<()> {
        match self {
            TempBlob::Named(tmp) => tmp.persist(dest).map(|_| ()).map_err(|e| e.error),
            TempBlob::Unnamed { file, dir } => {
                if link(&file, dest)? {
                    return Ok(());
                }
                // Something holds the name: link under a fresh temporary name, then rename
                // over it (atomic for readers, as a named temporary file would be).
                for attempt in 0..16u32 {
                    let name = dir.join(format!(
                        "{PREFIX}{}-{}-{attempt}",
                        std::process::id(),
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.subsec_nanos())
                    ));
                    if link(&file, &name)? {
                        return std::fs::rename(&name, dest).inspect_err(|_| {
                            let _ = std::fs::remove_file(&name);
                        });
                    }
                }
                Err(io::Error::other("cannot find a free temporary name"))
            }
        }
    }
}

/// Links the unnamed `file` at `dest`: whether it did (false: the name exists).
fn link(file: &File, dest: &Path) -> io::Result<bool> {
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd works for anyone with /proc.
    let linked =
        rustix::fs::linkat(file.as_fd(), "", CWD, dest, AtFlags::EMPTY_PATH).or_else(|e| match e {
            rustix::io::Errno::NOENT | rustix::io::Errno::PERM | rustix::io::Errno::ACCESS => {
                let fd = rustix::fd::AsRawFd::as_raw_fd(&file.as_fd());
                let proc_path = format!("/proc/self/fd/{fd}");
                rustix::fs::linkat(CWD, proc_path.as_str(), CWD, dest, AtFlags::SYMLINK_FOLLOW)
            }
            other => Err(other),
        });
    match linked {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn nothing_has_a_name_until_it_is_persisted_and_then_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TempBlob::new_in(dir.path()).unwrap();
        assert!(
            matches!(t, TempBlob::Unnamed { .. }),
            "tmpfs and ext4 have O_TMPFILE"
        );
        t.file().write_all(b"first").unwrap();
        assert!(names(dir.path()).is_empty());
        t.persist(&dir.path().join("blob")).unwrap();
        let mut t = TempBlob::new_in(dir.path()).unwrap();
        t.file().write_all(b"second").unwrap();
        t.persist(&dir.path().join("blob")).unwrap();
        assert_eq!(names(dir.path()), ["blob"]);
        let mut got = String::new();
        File::open(dir.path().join("blob"))
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "second");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("blob"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // Dropped unpersisted: nothing left.
        let mut t = TempBlob::new_in(dir.path()).unwrap();
        t.file().write_all(b"lost").unwrap();
        drop(t);
        assert_eq!(names(dir.path()), ["blob"]);
    }
}
