//! The `puzzlefs-virtiofsd` command line: a drop-in for virtiofsd as Kata launches it.
//!
//! Kata's Go runtime runs `--syslog --cache=auto --shared-dir=DIR --fd=3
//! [--thread-pool-size=1 --announce-submounts] [--xattr]`; runtime-rs runs `--socket-path S
//! --shared-dir DIR --cache auto [--thread-pool-size=1 -o announce_submounts] [--xattr]`. Both
//! forms (`--flag value` and `--flag=value`) work for every flag.
//!
//! Honoured:
//! - `--socket-path PATH` / `--socket PATH`: listen there (an old socket file is replaced);
//!   `--fd N`: accept on the inherited listening socket N. Exactly one of them.
//! - `--shared-dir DIR` / `-o source=DIR`: serve DIR (when no `--image`) read-write, as
//!   virtiofsd does: the guest's writes, creations, renames, links, chmod/chown and (with
//!   `--xattr`) extended attributes reach DIR.
//! - `--readonly` / `-o readonly`: serve the shared directory read-only instead (every write
//!   gets EROFS). Images are always served read-only.
//! - `--image OCI_DIR:TAG`, `--digest SHA256`: serve that PuzzleFS image, pinned by digest.
//! - `--cache auto|always|metadata|never` / `-o cache=`: guest cache timeouts and modes.
//! - `--thread-pool-size N`: request workers (0: serve on the queue threads).
//! - `--xattr` / `-o xattr` / `-o no_xattr`: extended attributes of the shared dir.
//! - `--allow-direct-io` / `-o allow_direct_io`: honour the guest's O_DIRECT.
//! - `--syslog`: log to syslog; `--log-level LEVEL` / `-o log_level=` / `-d`: verbosity.
//! - `--reconnect` (ours): serve the next front end on the same socket after a disconnect,
//!   keeping the file system and its FUSE INIT state; without it the daemon exits when the
//!   front end hangs up, as virtiofsd does. Works in every mode, `virtiofs --apisock` too;
//!   with the namespace sandbox an image or a mount table also survives the death of its
//!   serving process (see `restart`).
//! - `--print-capabilities`: print the vhost-user capabilities JSON and exit.
//! - `--sandbox namespace|chroot|none` (default namespace) and `--seccomp
//!   kill|log|trap|none` (default kill): how the daemon confines itself (see `sandbox`).
//!
//! Accepted and ignored (logged at startup): `--announce-submounts` / `-o announce_submounts`
//! (no submount crossing is announced yet), `--tag` (QEMU and cloud-hypervisor set the tag;
//! we offer no CONFIG), `-f`, `--socket-group`, `--rlimit-nofile`,
//! `--writeback` and `-o writeback` (no write-back cache is negotiated: guest writes reach the
//! host as they are made), `--no-readdirplus`, `--posix-acl`, and the `-o` options listed in
//! `config::IGNORED_O` (`flock`, `posix_lock`, `readdirplus`, `posix_acl`, `security_label`,
//! `killpriv_v2` and their `no_` forms; `timeout=`, `xattrmap=`, `modcaps=`, `norace`).
//! Anything else is an error.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Parser};

use super::config::{
    default_thread_pool_size, parse_cache, parse_digest, parse_image, parse_log_level, parse_o,
    parse_root_hash, parse_sandbox, parse_seccomp, usage, Config, SocketSpec, Source, TableSource,
    DEFAULT_CACHE_DIR,
};
use super::DaemonError;
use crate::format::parse_bytes;
use crate::fs::{CachePolicy, CHUNK_STORE_BYTES};

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Serve.
    Run(Box<Config>),
    /// Print this help text and exit successfully.
    Help(String),
    /// Print this version text and exit successfully.
    Version(String),
    /// Print this capabilities JSON and exit successfully (vhost-user backend convention).
    PrintCapabilities(String),
}

#[derive(Parser, Debug)]
#[command(
    name = "puzzlefs-virtiofsd",
    version,
    about = "Serve a PuzzleFS image (read-only) or a directory to a VM over vhost-user-fs"
)]
struct Args {
    /// vhost-user socket to listen on.
    #[arg(long = "socket-path", visible_aliases = ["socket", "sock"], value_name = "PATH")]
    socket_path: Option<PathBuf>,
    /// Inherited listening socket to accept on (as Kata's Go runtime passes it).
    #[arg(long, value_name = "N")]
    fd: Option<i32>,
    /// Directory to serve (read-write unless --readonly) when no --image is given.
    #[arg(long = "shared-dir", value_name = "DIR")]
    shared_dir: Option<PathBuf>,
    /// PuzzleFS image to serve.
    #[arg(long, value_name = "OCI_DIR:TAG")]
    image: Option<String>,
    /// Refuse the image unless its manifest has this sha256 digest.
    #[arg(long, value_name = "SHA256", requires = "image")]
    digest: Option<String>,
    /// Require fs-verity on the image's files: the manifest must measure to this fs-verity
    /// digest (hex, as `puzzlefs enable-fs-verity` prints it), every blob to its recorded one.
    #[arg(long = "fs-verity", value_name = "ROOT_HASH", requires = "image")]
    fs_verity: Option<String>,
    /// Guest caching: auto, always, metadata or never.
    #[arg(long, value_name = "MODE")]
    cache: Option<String>,
    /// Request worker threads (0: serve requests on the queue threads).
    #[arg(long = "thread-pool-size", value_name = "N")]
    thread_pool_size: Option<usize>,
    /// Log to syslog instead of stderr.
    #[arg(long)]
    syslog: bool,
    /// Log level: error, warn, info, debug, trace or off.
    #[arg(long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Same as --log-level debug.
    #[arg(short = 'd', long = "debug")]
    debug: bool,
    /// Serve extended attributes of the shared directory.
    #[arg(long)]
    xattr: bool,
    /// Honour O_DIRECT opens from the guest.
    #[arg(long = "allow-direct-io")]
    allow_direct_io: bool,
    /// Accepted for compatibility; no submounts are announced yet.
    #[arg(long = "announce-submounts")]
    announce_submounts: bool,
    /// virtiofsd-style options: source=DIR, cache=MODE, xattr, no_xattr, log_level=LEVEL,
    /// announce_submounts, allow_direct_io...
    #[arg(short = 'o', value_name = "OPT[=VAL],...", action = ArgAction::Append)]
    options: Vec<String>,
    /// Sandbox: namespace (default), chroot or none.
    #[arg(long, value_name = "MODE")]
    sandbox: Option<String>,
    /// Action on a forbidden system call: kill (default), log, trap or none.
    #[arg(long, value_name = "ACTION")]
    seccomp: Option<String>,
    /// Bytes of verified, decompressed chunks kept for warm reads of an image (K, M or G
    /// suffix; 0 keeps none). Default 512M.
    #[arg(long = "cache-size", value_name = "SIZE")]
    cache_size: Option<String>,
    /// Keep that chunk store in an unnamed file in DIR: page cache the kernel can reclaim.
    /// Default /var/tmp, or a memfd when /var/tmp cannot hold one.
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Keep the chunk store in a memfd (shared memory, not reclaimable without swap).
    #[arg(long = "cache-in-memory", conflicts_with = "cache_dir")]
    cache_in_memory: bool,
    /// Accepted for compatibility; the VMM sets the mount tag.
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,
    /// Serve the shared directory read-only (images always are).
    #[arg(long)]
    readonly: bool,
    /// When the front end disconnects, keep listening and serve the next connection with the
    /// same file system and FUSE session (a VMM reconnecting after a guest reboot); with the
    /// namespace sandbox, an image or a mount table also survives its serving process dying;
    /// default: exit, as virtiofsd does.
    #[arg(long)]
    reconnect: bool,
    /// Print the vhost-user backend capabilities as JSON and exit.
    #[arg(long = "print-capabilities")]
    print_capabilities: bool,
    /// Accepted for compatibility (the daemon always stays in the foreground).
    #[arg(short = 'f', long = "foreground", hide = true)]
    foreground: bool,
    #[arg(long = "socket-group", hide = true)]
    socket_group: Option<String>,
    #[arg(long = "rlimit-nofile", hide = true)]
    rlimit_nofile: Option<u64>,
    #[arg(long, hide = true)]
    writeback: bool,
    #[arg(long = "no-readdirplus", hide = true)]
    no_readdirplus: bool,
    #[arg(long = "posix-acl", hide = true)]
    posix_acl: bool,
    /// Serve a mount table filled at run time through a nydusd-compatible HTTP API on this
    /// unix socket (instead of --image or --shared-dir).
    #[arg(long, short = 'A', value_name = "PATH")]
    apisock: Option<PathBuf>,
    /// With --apisock: mount requests may only name directories inside DIR (repeatable;
    /// default: any but /, /proc, /sys and /dev).
    #[arg(long = "allow-mount-from", value_name = "DIR", requires = "apisock", action = ArgAction::Append)]
    allow_mount_from: Vec<PathBuf>,
    /// With --apisock: the daemon's id, as the API reports it (nydusd's --id).
    #[arg(long, value_name = "ID", requires = "apisock")]
    id: Option<String>,
    // nydusd's flags that change nothing here.
    #[arg(long = "hybrid-mode", hide = true)]
    hybrid_mode: bool,
    #[arg(long, hide = true)]
    supervisor: Option<String>,
    #[arg(long, hide = true)]
    upgrade: bool,
    #[arg(long = "log-file", short = 'L', hide = true)]
    log_file: Option<PathBuf>,
    #[arg(long = "log-rotation-size", hide = true)]
    log_rotation_size: Option<u64>,
}

/// The first argument that makes the rest nydusd's `virtiofs` command line.
const VIRTIOFS: &str = "virtiofs";

/// Largest `--thread-pool-size` accepted.
pub const MAX_THREAD_POOL_SIZE: usize = 1024;

/// Parses the command line (`args[0]` is the program name).
pub fn parse_args<I, T>(args: I) -> Result<Command, DaemonError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // `puzzlefs-virtiofsd virtiofs ...`: as Kata's nydus mode runs nydusd.
    let virtiofs = args.get(1).is_some_and(|a| a == VIRTIOFS);
    if virtiofs {
        args.remove(1);
    }
    let a = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp => Ok(Command::Help(e.to_string())),
                clap::error::ErrorKind::DisplayVersion => Ok(Command::Version(e.to_string())),
                _ => Err(usage(first_line(&e.to_string()))),
            };
        }
    };
    if a.print_capabilities {
        return Ok(Command::PrintCapabilities(
            "{\n  \"type\": \"fs\"\n}".into(),
        ));
    }
    if virtiofs && a.apisock.is_none() {
        return Err(usage(
            "virtiofs: missing --apisock PATH (images are mounted through the API)",
        ));
    }
    Ok(Command::Run(Box::new(to_config(a)?)))
}

/// clap's first paragraph (the error itself, without tips and usage), on one line.
fn first_line(msg: &str) -> String {
    let para: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    let text = para.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    format!("{text} (try --help)")
}

fn to_config(a: Args) -> Result<Config, DaemonError> {
    let o = parse_o(&a.options)?;
    let mut ignored = o.ignored;

    let socket = match (a.socket_path, a.fd) {
        (Some(p), None) => SocketSpec::Path(p),
        (None, Some(fd)) if fd >= 0 => SocketSpec::Fd(fd),
        (None, Some(fd)) => return Err(usage(format!("--fd wants a file descriptor, got {fd}"))),
        (Some(_), Some(_)) => return Err(usage("give either --socket-path or --fd, not both")),
        (None, None) => return Err(usage("missing --socket-path PATH (or --fd N)")),
    };

    // Explicit flags win over -o.
    let shared_dir = a.shared_dir.or(o.source);
    let source = match (a.image, shared_dir) {
        (image, shared) if a.apisock.is_some() => {
            if image.is_some() || shared.is_some() {
                return Err(usage(
                    "with --apisock, mount images and directories through the API",
                ));
            }
            if a.digest.is_some() || a.fs_verity.is_some() {
                return Err(usage(
                    "with --apisock, pins go in each mount request's config",
                ));
            }
            Source::Table(TableSource {
                apisock: a.apisock.clone().unwrap_or_default(),
                allow_mount_from: a.allow_mount_from.clone(),
                id: a.id.clone(),
            })
        }
        (Some(image), shared) => {
            if let Some(dir) = shared {
                ignored.push(format!(
                    "--shared-dir {} (an --image is served)",
                    dir.display()
                ));
            }
            let mut source = parse_image(&image, a.digest.as_deref())?;
            source.fs_verity = a.fs_verity.as_deref().map(parse_root_hash).transpose()?;
            Source::Image(source)
        }
        (None, Some(dir)) => Source::SharedDir(dir),
        (None, None) => return Err(usage("nothing to serve: give --image or --shared-dir")),
    };
    if let Some(d) = &a.digest {
        parse_digest(d)?;
    }

    let cache = match a.cache {
        Some(c) => parse_cache(&c)?,
        None => o.cache.unwrap_or(CachePolicy::Auto),
    };
    let thread_pool_size = a.thread_pool_size.unwrap_or_else(default_thread_pool_size);
    if thread_pool_size > MAX_THREAD_POOL_SIZE {
        return Err(usage(format!(
            "--thread-pool-size {thread_pool_size} is above {MAX_THREAD_POOL_SIZE}"
        )));
    }
    let log_level = match (a.log_level, a.debug) {
        (Some(l), _) => parse_log_level(&l)?,
        (None, true) => log::LevelFilter::Debug,
        (None, false) => o.log_level.unwrap_or(log::LevelFilter::Info),
    };
    let chunk_store_bytes = match a.cache_size.as_deref() {
        Some(s) => parse_bytes(s).filter(|&n| n <= 1 << 40).ok_or_else(|| {
            usage(format!(
                "--cache-size {s:?}: not a size up to 1T (bytes, K, M or G)"
            ))
        })?,
        None => CHUNK_STORE_BYTES,
    };
    if let Some(dir) = &a.cache_dir {
        if !dir.is_dir() {
            return Err(usage(format!(
                "--cache-dir {}: not a directory",
                dir.display()
            )));
        }
    }
    let sandbox = a.sandbox.as_deref().map(parse_sandbox).transpose()?;
    let seccomp = a.seccomp.as_deref().map(parse_seccomp).transpose()?;

    if a.announce_submounts || o.announce_submounts {
        ignored.push("--announce-submounts".into());
    }
    if let Some(tag) = a.tag {
        ignored.push(format!("--tag {tag} (the VMM sets the tag)"));
    }
    let hidden = [
        (a.foreground, "-f"),
        (a.socket_group.is_some(), "--socket-group"),
        (a.rlimit_nofile.is_some(), "--rlimit-nofile"),
        (a.writeback, "--writeback"),
        (a.no_readdirplus, "--no-readdirplus"),
        (a.posix_acl, "--posix-acl"),
        (a.hybrid_mode, "--hybrid-mode"),
        (a.supervisor.is_some(), "--supervisor"),
        (a.upgrade, "--upgrade"),
        (
            a.log_file.is_some(),
            "--log-file (logs go to stderr or --syslog)",
        ),
        (a.log_rotation_size.is_some(), "--log-rotation-size"),
    ];
    ignored.extend(hidden.iter().filter(|h| h.0).map(|h| h.1.to_string()));

    Ok(Config {
        socket,
        source,
        cache,
        thread_pool_size,
        xattr: a.xattr || o.xattr.unwrap_or(false),
        read_only: a.readonly || o.readonly,
        allow_direct_io: a.allow_direct_io || o.allow_direct_io.unwrap_or(false),
        syslog: a.syslog,
        log_level,
        sandbox: sandbox.unwrap_or_default(),
        seccomp: seccomp.unwrap_or_default(),
        chunk_store_bytes,
        chunk_store_fallback: a.cache_dir.is_none() && !a.cache_in_memory,
        chunk_store_dir: match (a.cache_dir, a.cache_in_memory) {
            (Some(dir), _) => Some(dir),
            (None, true) => None,
            (None, false) => Some(PathBuf::from(DEFAULT_CACHE_DIR)),
        },
        reconnect: a.reconnect,
        ignored,
    })
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
