//! `--shared-dir DIR` without `--image`: fuse-backend-rs's pass-through file system over DIR
//! with virtiofsd's cache timeouts, served read-write as virtiofsd serves Kata's shared
//! directory (guest writes, creations, renames, links, ownership and mode changes and, with
//! `--xattr`, extended attributes all reach DIR), or behind the read-only wrapper with
//! `--readonly` (every write answers EROFS). Both ask for ASYNC_READ, PARALLEL_DIROPS and
//! MAX_PAGES at FUSE_INIT and never negotiate the write-back cache or DAX.

use std::io;
use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::FsOptions;
use fuse_backend_rs::passthrough::PassthroughFs;

use super::config::Config;
use super::init_options::InitOptions;
use super::DaemonError;
use crate::fs::ReadOnly;
use crate::mounts::passthrough_config;

/// The pass-through file system served for a shared directory, read-write.
pub type SharedDirFs = InitOptions<PassthroughFs<()>>;

/// The pass-through file system served for a shared directory with `--readonly`.
pub type ReadOnlySharedDirFs = ReadOnly<PassthroughFs<()>>;

/// A shared directory, opened for serving as the configuration asks.
pub enum SharedDir {
    /// The default: guest writes reach the directory.
    ReadWrite(Box<SharedDirFs>),
    /// `--readonly`: every write answers EROFS.
    ReadOnly(Box<ReadOnlySharedDirFs>),
}

/// Opens `dir` for serving (without a sandbox): read-write, or read-only when
/// `config.read_only`.
pub fn shared_dir(dir: &Path, config: &Config) -> Result<SharedDir, DaemonError> {
    check_shared_dir(dir)?;
    let fs = new_passthrough(dir, dir, config)?;
    import(fs, dir, config.read_only)
}

fn at(dir: &Path) -> impl Fn(io::Error) -> DaemonError + '_ {
    move |source| DaemonError::SharedDir {
        path: dir.to_path_buf(),
        source,
    }
}

/// Fails unless `dir` is a directory with a UTF-8 path (fuse-backend-rs wants a `String`).
pub(crate) fn check_shared_dir(dir: &Path) -> Result<(), DaemonError> {
    let meta = std::fs::metadata(dir).map_err(at(dir))?;
    if !meta.is_dir() {
        return Err(at(dir)(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    dir.to_str()
        .ok_or_else(|| at(dir)(io::Error::other("path is not valid UTF-8")))?;
    Ok(())
}

/// The pass-through file system for `dir`, which [`import`] will open as `root` (its path
/// once the sandbox is entered). This opens /proc/self/fd, so it must run while /proc is
/// still reachable.
pub(crate) fn new_passthrough(
    dir: &Path,
    root: &Path,
    config: &Config,
) -> Result<PassthroughFs<()>, DaemonError> {
    let root = root
        .to_str()
        .ok_or_else(|| at(dir)(io::Error::other("path is not valid UTF-8")))?;
    let cfg = passthrough_config(
        root,
        config.cache,
        config.xattr,
        config.allow_direct_io,
        true,
    );
    PassthroughFs::<()>::new(cfg).map_err(at(dir))
}

/// Opens the root of `fs` (so a bad directory fails before FUSE_INIT) and wraps it for
/// serving, read-only when `read_only`.
pub(crate) fn import(
    fs: PassthroughFs<()>,
    dir: &Path,
    read_only: bool,
) -> Result<SharedDir, DaemonError> {
    fs.import().map_err(at(dir))?;
    // PassthroughFs asks for none of these; without MAX_PAGES a guest read is at most
    // 128 KiB and fuse-backend-rs caps a write at 4 KiB (with it: 1 MiB both).
    let extra = FsOptions::ASYNC_READ | FsOptions::PARALLEL_DIROPS | FsOptions::MAX_PAGES;
    Ok(if read_only {
        SharedDir::ReadOnly(Box::new(ReadOnly::new(fs).with_init_options(extra)))
    } else {
        SharedDir::ReadWrite(Box::new(InitOptions::new(fs, extra)))
    })
}
