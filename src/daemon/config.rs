//! What the daemon is asked to do, independent of how it was asked: the parsed command line,
//! plus the value parsers shared by flags and virtiofsd-style `-o` options.

use std::os::unix::io::RawFd;
use std::path::PathBuf;

use super::DaemonError;
use crate::format::Digest;
use crate::fs::CachePolicy;

/// Where the vhost-user socket comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// Bind and listen on this path (`--socket-path`, `--socket`).
    Path(PathBuf),
    /// Accept on this inherited listening socket (`--fd`).
    Fd(RawFd),
}

/// What is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host directory, served through the pass-through file system (`--shared-dir`
    /// without `--image`): read-write unless [`Config::read_only`].
    SharedDir(PathBuf),
    /// A PuzzleFS image (`--image OCI_DIR:TAG [--digest SHA256]`).
    Image(ImageSource),
    /// A mount table, filled at run time through the API (`virtiofs --apisock PATH`, as Kata
    /// runs nydusd).
    Table(TableSource),
}

/// A mount table driven through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSource {
    /// The API's unix socket.
    pub apisock: PathBuf,
    /// If not empty, mount requests may only name directories inside these.
    pub allow_mount_from: Vec<PathBuf>,
    /// The daemon's id, as the API reports it (nydusd's `--id`).
    pub id: Option<String>,
}

/// A PuzzleFS image to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// The OCI image layout directory.
    pub oci_dir: PathBuf,
    /// The tag inside it.
    pub tag: String,
    /// Refuse the image unless its manifest has this digest.
    pub digest: Option<Digest>,
    /// Require fs-verity, rooted at this fs-verity digest of the manifest.
    pub fs_verity: Option<[u8; 32]>,
}

/// Where the chunk store's file goes unless `--cache-dir` or `--cache-in-memory` says.
pub const DEFAULT_CACHE_DIR: &str = "/var/tmp";

/// Parses a `--cache` value (virtiofsd's names).
pub fn parse_cache(s: &str) -> Result<CachePolicy, DaemonError> {
    s.parse().map_err(usage)
}

/// `--sandbox`: how the daemon confines itself before serving (virtiofsd's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sandbox {
    /// No confinement.
    None,
    /// The default: new user (when not root), pid, mount, net, IPC and UTS namespaces; the
    /// served directory becomes the root (pivot_root; an image's OCI directory read-only, a
    /// shared directory read-write unless `--readonly`); capabilities dropped.
    #[default]
    Namespace,
    /// chroot into the served directory and drop capabilities; no namespaces.
    Chroot,
}

/// `--seccomp`: what happens on a system call outside the daemon's allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seccomp {
    /// No filter.
    None,
    /// The default: the kernel kills the daemon.
    #[default]
    Kill,
    /// The kernel logs the call (audit log) and lets it run.
    Log,
    /// SIGSYS: the daemon reports the call's number on stderr and exits with status 159.
    Trap,
}

/// Everything needed to run the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The vhost-user socket.
    pub socket: SocketSpec,
    /// What to serve.
    pub source: Source,
    /// Guest caching policy.
    pub cache: CachePolicy,
    /// Request worker threads; 0 serves requests on the queue threads.
    pub thread_pool_size: usize,
    /// Serve extended attributes (pass-through only; images always serve theirs).
    pub xattr: bool,
    /// Serve the shared directory read-only (`--readonly`, `-o readonly`): every write
    /// answers EROFS. Images are always read-only.
    pub read_only: bool,
    /// Let files opened with O_DIRECT in the guest bypass its page cache.
    pub allow_direct_io: bool,
    /// Log to syslog instead of stderr.
    pub syslog: bool,
    /// Most verbose level logged.
    pub log_level: log::LevelFilter,
    /// Requested sandbox.
    pub sandbox: Sandbox,
    /// Requested seccomp action.
    pub seccomp: Seccomp,
    /// Bytes of verified chunks an image's daemon keeps for warm reads (0: none).
    pub chunk_store_bytes: u64,
    /// Directory for the chunk store's unnamed file (reclaimable page cache); a memfd if None.
    pub chunk_store_dir: Option<std::path::PathBuf>,
    /// Use a memfd when that directory cannot hold the file (true for the default directory,
    /// false for one given with `--cache-dir`).
    pub chunk_store_fallback: bool,
    /// Keep listening when the front end disconnects and serve the next connection with the
    /// same file system and FUSE INIT state (`--reconnect`); otherwise exit, as virtiofsd does.
    pub reconnect: bool,
    /// Options accepted for compatibility that have no effect, for the startup log.
    pub ignored: Vec<String>,
}

/// The number of request workers when `--thread-pool-size` is not given: two per CPU (requests
/// wait on I/O), at least 4, at most 32.
pub fn default_thread_pool_size() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cpus * 2).clamp(4, 32)
}

pub(crate) fn usage(msg: impl Into<String>) -> DaemonError {
    DaemonError::Usage(msg.into())
}

/// Parses `--sandbox`.
pub(crate) fn parse_sandbox(s: &str) -> Result<Sandbox, DaemonError> {
    match s {
        "none" => Ok(Sandbox::None),
        "namespace" => Ok(Sandbox::Namespace),
        "chroot" => Ok(Sandbox::Chroot),
        _ => Err(usage(format!(
            "invalid sandbox '{s}' (expected none, namespace or chroot)"
        ))),
    }
}

/// Parses `--seccomp`.
pub(crate) fn parse_seccomp(s: &str) -> Result<Seccomp, DaemonError> {
    match s {
        "none" => Ok(Seccomp::None),
        "kill" => Ok(Seccomp::Kill),
        "log" => Ok(Seccomp::Log),
        "trap" => Ok(Seccomp::Trap),
        _ => Err(usage(format!(
            "invalid seccomp action '{s}' (expected none, kill, log or trap)"
        ))),
    }
}

/// Parses `--log-level` (virtiofsd's names, plus `warning`).
pub(crate) fn parse_log_level(s: &str) -> Result<log::LevelFilter, DaemonError> {
    match s.to_ascii_lowercase().as_str() {
        "off" => Ok(log::LevelFilter::Off),
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err(usage(format!(
            "invalid log level '{s}' (expected error, warn, info, debug, trace or off)"
        ))),
    }
}

/// Parses `--image OCI_DIR:TAG` (split at the last colon, so the directory may contain one).
pub(crate) fn parse_image(s: &str, digest: Option<&str>) -> Result<ImageSource, DaemonError> {
    let (dir, tag) = s
        .rsplit_once(':')
        .filter(|(d, t)| !d.is_empty() && !t.is_empty())
        .ok_or_else(|| usage(format!("--image wants OCI_DIR:TAG, got '{s}'")))?;
    let digest = digest.map(parse_digest).transpose()?;
    Ok(ImageSource {
        oci_dir: PathBuf::from(dir),
        tag: tag.to_string(),
        digest,
        fs_verity: None,
    })
}

/// Parses `--digest`: 64 hex digits, optionally prefixed by `sha256:`.
pub(crate) fn parse_digest(s: &str) -> Result<Digest, DaemonError> {
    Digest::parse(&s.to_ascii_lowercase()).map_err(|_| {
        usage(format!(
            "--digest wants a sha256 (64 hex digits, optionally 'sha256:' first), got '{s}'"
        ))
    })
}

/// Parses `--fs-verity`: an fs-verity digest, 64 hex digits (optionally 'sha256:' first).
pub(crate) fn parse_root_hash(s: &str) -> Result<[u8; 32], DaemonError> {
    Digest::parse(&s.to_ascii_lowercase())
        .map(|d| d.0)
        .map_err(|_| {
            usage(format!(
                "--fs-verity wants an fs-verity digest (64 hex digits), got '{s}'"
            ))
        })
}

/// Settings a virtiofsd-style `-o` list can change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OOptions {
    pub source: Option<PathBuf>,
    pub cache: Option<CachePolicy>,
    pub xattr: Option<bool>,
    pub announce_submounts: bool,
    pub allow_direct_io: Option<bool>,
    pub readonly: bool,
    pub log_level: Option<log::LevelFilter>,
    pub ignored: Vec<String>,
}

/// Options virtiofsd accepts that change nothing here (or are not done yet).
const IGNORED_O: &[&str] = &[
    "flock",
    "no_flock",
    "posix_lock",
    "no_posix_lock",
    "writeback",
    "no_writeback",
    "readdirplus",
    "no_readdirplus",
    "posix_acl",
    "no_posix_acl",
    "security_label",
    "no_security_label",
    "killpriv_v2",
    "no_killpriv_v2",
    "timeout",
    "modcaps",
    "xattrmap",
    "norace",
    "no_announce_submounts",
];

/// Parses every `-o opt[=val][,opt[=val]...]` argument.
pub(crate) fn parse_o<'a>(args: &'a [String]) -> Result<OOptions, DaemonError> {
    let mut o = OOptions::default();
    for opt in args
        .iter()
        .flat_map(|a| a.split(','))
        .filter(|s| !s.is_empty())
    {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let need = |v: Option<&'a str>| need_value(key, v);
        let flag = |v: Option<&str>| match v {
            None => Ok(()),
            Some(_) => Err(usage(format!("-o {key} takes no value"))),
        };
        match key {
            "source" => o.source = Some(PathBuf::from(need(val)?)),
            "cache" => o.cache = Some(parse_cache(need(val)?)?),
            "log_level" => o.log_level = Some(parse_log_level(need(val)?)?),
            "xattr" => o.xattr = Some(flag(val).map(|_| true)?),
            "no_xattr" => o.xattr = Some(flag(val).map(|_| false)?),
            "announce_submounts" => o.announce_submounts = flag(val).map(|_| true)?,
            "readonly" => o.readonly = flag(val).map(|_| true)?,
            "allow_direct_io" => o.allow_direct_io = Some(flag(val).map(|_| true)?),
            "no_allow_direct_io" => o.allow_direct_io = Some(flag(val).map(|_| false)?),
            k if IGNORED_O.contains(&k) => o.ignored.push(format!("-o {opt}")),
            _ => return Err(usage(format!("unknown option '-o {opt}'"))),
        }
    }
    Ok(o)
}

fn need_value<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str, DaemonError> {
    v.filter(|v| !v.is_empty())
        .ok_or_else(|| usage(format!("-o {key} needs a value ({key}=...)")))
}
