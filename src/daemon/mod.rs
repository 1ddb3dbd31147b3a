//! The vhost-user-fs daemon: serves one file system read-only to a VM through QEMU's
//! `vhost-user-fs-pci` or cloud-hypervisor's `--fs`.
//!
//! Layout: [`cli`](parse_args) turns a Kata/virtiofsd command line into a [`Config`];
//! [`run`] opens what the config names and calls [`serve`], which is generic over any
//! fuse-backend-rs `FileSystem`. Inside, `backend` wires vhost-user-backend (one epoll thread
//! per virtqueue: queue 0 hiprio, then the request queues), `pool` runs requests on worker
//! threads, and `request` decodes, answers and completes one descriptor chain; completions
//! happen in any order. `readonly` turns any file system read-only (EROFS for every write).

mod backend;
mod cli;
mod config;
mod error;
mod passthrough;
mod pool;
mod request;
mod serve;
mod syslog;

use std::sync::Arc;

pub use cli::{parse_args, Command, MAX_THREAD_POOL_SIZE};
pub use config::{
    default_thread_pool_size, parse_cache, Config, ImageSource, Sandbox, Seccomp, SocketSpec,
    Source,
};
pub use error::DaemonError;
pub use passthrough::{cache_timeout, shared_dir, SharedDirFs};
pub use serve::{listen, serve, ServeOptions};
pub use syslog::SyslogLogger;

use crate::fs::{FsConfig, PuzzleFs, ReadOnly};
use crate::oci::OciDir;
use crate::reader::{Image, OpenOptions};

/// The line Kata's runtime-rs waits for on stderr before connecting.
pub const READY_LINE: &str = "Waiting for vhost-user socket connection";

/// Runs the daemon `config` describes until the VMM disconnects.
///
/// The file system is opened before the socket is created, so a bad image or directory fails
/// before anyone connects. `on_ready` runs when the socket listens (see [`serve`]).
pub fn run(config: &Config, on_ready: impl FnOnce()) -> Result<(), DaemonError> {
    log_unimplemented(config);
    let opts = ServeOptions {
        thread_pool_size: config.thread_pool_size,
        ..ServeOptions::default()
    };
    match &config.source {
        Source::SharedDir(dir) => {
            let fs = shared_dir(dir, config)?;
            log::info!("serving {} read-only", dir.display());
            serve(fs, listen(&config.socket)?, &opts, on_ready)
        }
        Source::Image(source) => {
            let image = open_image(source)?;
            log::info!("serving image {} read-only", image.manifest_digest());
            let fs = ReadOnly::new(PuzzleFs::new(image, FsConfig::new(config.cache)));
            serve(fs, listen(&config.socket)?, &opts, on_ready)
        }
    }
}

/// Opens (and, with `--digest`, pins) the image to serve.
pub fn open_image(source: &ImageSource) -> Result<Arc<Image>, DaemonError> {
    let oci = OciDir::open(&source.oci_dir).map_err(|e| DaemonError::Image(e.to_string()))?;
    let options = OpenOptions {
        pin: source.digest,
        read_ahead: crate::fs::READ_AHEAD_CHUNKS,
        ..OpenOptions::default()
    };
    let image =
        Image::open(&oci, &source.tag, options).map_err(|e| DaemonError::Image(e.to_string()))?;
    Ok(Arc::new(image))
}

fn log_unimplemented(config: &Config) {
    for opt in &config.ignored {
        log::info!("accepted for compatibility, no effect: {opt}");
    }
    if config.sandbox != Sandbox::None {
        log::warn!(
            "--sandbox {:?}: sandboxing is not implemented yet (issue 6); running without",
            config.sandbox
        );
    }
    if config.seccomp != Seccomp::None {
        log::warn!(
            "--seccomp {:?}: seccomp filtering is not implemented yet (issue 6); running without",
            config.seccomp
        );
    }
}
