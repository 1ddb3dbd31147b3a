//! The vhost-user-fs daemon: serves one file system to a VM through QEMU's
//! `vhost-user-fs-pci` or cloud-hypervisor's `--fs`: a PuzzleFS image (always read-only) or
//! a shared directory (read-write, as virtiofsd serves Kata's, or read-only with
//! `--readonly`).
//!
//! Layout: [`cli`](parse_args) turns a Kata/virtiofsd command line into a [`Config`];
//! [`start`] opens what the config names, creates the socket and enters the `sandbox`
//! (namespaces or chroot, capabilities, seccomp); [`Daemon::serve`] then calls [`serve`], which
//! is generic over any fuse-backend-rs `FileSystem`. Inside, `backend` wires
//! vhost-user-backend (one epoll thread per virtqueue: queue 0 hiprio, then the request
//! queues); a queue thread serves the requests `triage` calls quick itself and hands the
//! others to `pool`'s worker threads; `request` decodes, answers and completes one descriptor
//! chain; completions happen in any order. Images are served by [`crate::fs::ImageFs`], whose
//! file reads go through a [`crate::reader::FileChunkCache`]; shared directories by `passthrough`
//! (fuse-backend-rs's pass-through file system, behind `init_options` or, read-only,
//! `fs::ReadOnly`).

mod backend;
mod cli;
mod config;
pub mod control;
mod error;
mod heap;
mod inflight;
mod init_options;
mod passthrough;
mod pool;
mod prime;
mod request;
mod restart;
mod sandbox;
mod serve;
mod start;
mod start_table;
mod syslog;
mod triage;

pub use cli::{parse_args, Command, MAX_THREAD_POOL_SIZE};
pub use config::{
    default_thread_pool_size, parse_cache, Config, ImageSource, Sandbox, Seccomp, SocketSpec,
    Source, TableSource,
};
pub use error::DaemonError;
pub use init_options::InitOptions;
pub use passthrough::{shared_dir, ReadOnlySharedDirFs, SharedDir, SharedDirFs};
pub use sandbox::{SandboxError, TRAPPED_EXIT_STATUS};
pub use serve::{listen, serve, ServeOptions};
pub use start::{open_image, start, Daemon, Started, Supervising};
pub use syslog::SyslogLogger;
pub use triage::Triage;

/// The line Kata's runtime-rs waits for on stderr before connecting.
pub const READY_LINE: &str = "Waiting for vhost-user socket connection";
