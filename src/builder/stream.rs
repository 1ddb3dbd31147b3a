//! The file data stream: regular files concatenated in scan order.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::BuildError;
use crate::format::Digest;

/// A file to stream: inode number, host path, size seen when scanning.
pub(super) struct StreamFile {
    pub ino: u64,
    pub path: PathBuf,
    pub size: u64,
}

struct Current {
    ino: u64,
    size: u64,
    path: PathBuf,
    file: File,
    left: u64,
    hash: Sha256,
}

/// A file that went through the stream: inode number, size, sha256.
pub(super) type Streamed = (u64, u64, Digest);

/// Reads files back to back, insisting each has exactly the size seen when scanning, and
/// records each file's size and sha256 in stream order.
pub(super) struct FileStream {
    files: Box<dyn Iterator<Item = StreamFile> + Send>,
    current: Option<Current>,
    streamed: Arc<Mutex<Vec<Streamed>>>,
}

impl FileStream {
    /// Streams `files` (which may still be arriving, from the scan); `streamed` receives
    /// each file as it completes.
    pub fn new(
        files: Box<dyn Iterator<Item = StreamFile> + Send>,
        streamed: Arc<Mutex<Vec<Streamed>>>,
    ) -> Self {
        FileStream {
            files,
            current: None,
            streamed,
        }
    }
}

fn wrap(e: BuildError) -> io::Error {
    io::Error::other(e)
}

impl Read for FileStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                let Some(next) = self.files.next() else {
                    return Ok(0);
                };
                if next.size == 0 {
                    self.streamed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((next.ino, 0, Digest::of(b"")));
                    continue;
                }
                let file = File::open(&next.path).map_err(|source| {
                    wrap(BuildError::Source {
                        path: next.path.clone(),
                        source,
                    })
                })?;
                self.current = Some(Current {
                    ino: next.ino,
                    size: next.size,
                    path: next.path,
                    file,
                    left: next.size,
                    hash: Sha256::new(),
                });
            }
            let cur = self.current.as_mut().expect("current file set above");
            let source_err = |source| {
                wrap(BuildError::Source {
                    path: cur.path.clone(),
                    source,
                })
            };
            let want = buf
                .len()
                .min(usize::try_from(cur.left).unwrap_or(usize::MAX));
            let n = cur.file.read(&mut buf[..want]).map_err(source_err)?;
            if n == 0 {
                return Err(wrap(BuildError::FileChanged {
                    path: cur.path.clone(),
                    expected: cur.left,
                }));
            }
            cur.hash.update(&buf[..n]);
            cur.left -= n as u64;
            if cur.left == 0 {
                // The file must end where the scan said it would.
                let mut probe = [0u8; 1];
                if cur.file.read(&mut probe).map_err(source_err)? != 0 {
                    return Err(wrap(BuildError::FileChanged {
                        path: cur.path.clone(),
                        expected: cur.file.metadata().map(|m| m.len()).unwrap_or(0),
                    }));
                }
                let done = self.current.take().expect("current file set above");
                self.streamed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((done.ino, done.size, Digest(done.hash.finalize().into())));
            }
            return Ok(n);
        }
    }
}

/// sha256 of a whole file, for comparing with a base image.
pub(super) fn hash_file(path: &std::path::Path) -> Result<Digest, BuildError> {
    let mut f = File::open(path).map_err(|source| BuildError::Source {
        path: path.to_path_buf(),
        source,
    })?;
    let mut w = crate::format::Sha256Writer::default();
    io::copy(&mut f, &mut w).map_err(|source| BuildError::Source {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(w.finish())
}

/// Recovers a [`BuildError`] that travelled through an `io::Error`.
pub(super) fn unwrap_io(e: io::Error) -> BuildError {
    match e.downcast::<BuildError>() {
        Ok(b) => b,
        Err(e) => BuildError::Chunk(crate::chunk::ChunkError::Io(e)),
    }
}
