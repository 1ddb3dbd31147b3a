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
    let err = |source: io::Error| DaemonError::SharedDir {
        path: dir.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    let root = dir
        .to_str()
        .ok_or_else(|| err(io::Error::other("path is not valid UTF-8")))?;
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
    let fs = PassthroughFs::<()>::new(cfg).map_err(err)?;
    // Open the root now, so that a bad directory fails at startup rather than at FUSE_INIT.
    fs.import().map_err(err)?;
    // PassthroughFs asks for none of these; without MAX_PAGES a guest read is 128 KiB at most.
    let extra = FsOptions::ASYNC_READ | FsOptions::PARALLEL_DIROPS | FsOptions::MAX_PAGES;
    Ok(ReadOnly::new(fs).with_init_options(extra))
}
