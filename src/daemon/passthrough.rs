//! `--shared-dir DIR` without `--image`: fuse-backend-rs's pass-through file system over DIR,
//! behind the read-only wrapper, with virtiofsd's cache timeouts.

use std::io;
use std::path::Path;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::FsOptions;
use fuse_backend_rs::passthrough::{CachePolicy as PtCache, Config as PtConfig, PassthroughFs};

use super::config::Config;
use super::DaemonError;
use crate::fs::CachePolicy;
use crate::fs::ReadOnly;

/// The pass-through file system served for a shared directory.
pub type SharedDirFs = ReadOnly<PassthroughFs<()>>;

/// Entry and attribute timeout for a cache mode (virtiofsd's values).
pub fn cache_timeout(cache: CachePolicy) -> Duration {
    match cache {
        CachePolicy::Never => Duration::ZERO,
        CachePolicy::Auto => Duration::from_secs(1),
        CachePolicy::Metadata | CachePolicy::Always => Duration::from_secs(86400),
    }
}

/// Opens `dir` for serving, read-only.
pub fn shared_dir(dir: &Path, config: &Config) -> Result<SharedDirFs, DaemonError> {
    check_shared_dir(dir)?;
    let fs = new_passthrough(dir, dir, config)?;
    import(fs, dir)
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
    let timeout = cache_timeout(config.cache);
    let cfg = PtConfig {
        root_dir: root.to_string(),
        cache_policy: match config.cache {
            CachePolicy::Never => PtCache::Never,
            CachePolicy::Metadata => PtCache::Metadata,
            CachePolicy::Auto => PtCache::Auto,
            CachePolicy::Always => PtCache::Always,
        },
        entry_timeout: timeout,
        attr_timeout: timeout,
        xattr: config.xattr,
        allow_direct_io: config.allow_direct_io,
        writeback: false,
        do_import: true,
        ..PtConfig::default()
    };
    PassthroughFs::<()>::new(cfg).map_err(at(dir))
}

/// Opens the root of `fs` (so a bad directory fails before FUSE_INIT) and wraps it read-only.
pub(crate) fn import(fs: PassthroughFs<()>, dir: &Path) -> Result<SharedDirFs, DaemonError> {
    fs.import().map_err(at(dir))?;
    // PassthroughFs asks for none of these; without MAX_PAGES a guest read is 128 KiB at most.
    let extra = FsOptions::ASYNC_READ | FsOptions::PARALLEL_DIROPS | FsOptions::MAX_PAGES;
    Ok(ReadOnly::new(fs).with_init_options(extra))
}
