//! `puzzlefs push`, `pull` and `copy`: their flags, a progress bar, and their report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use puzzlefs_virtiofsd::format::human_bytes;
use puzzlefs_virtiofsd::registry::{
    copy_blocking, ClientOptions, Credentials, Location, Progress, Report, TransferOptions,
};

/// Which command: what each end must be.
#[derive(Clone, Copy)]
pub enum Direction {
    Push,
    Pull,
    Copy,
}

#[derive(Args)]
pub struct TransferArgs {
    /// Source: docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST], or [oci:]OCI_DIR:TAG or
    /// [oci:]OCI_DIR@sha256:DIGEST.
    source: String,
    /// Destination, in the same forms (a layout destination needs a tag; it is created if
    /// missing).
    destination: String,
    /// Credentials for the registry (without them, the auth file's entry, else anonymous).
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
    /// Auth file to read (containers auth.json or docker config.json format) instead of
    /// $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json, ~/.docker/config.json.
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Require HTTPS with verified certificates; false allows any certificate and plain HTTP.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    tls_verify: bool,
    /// Directory of *.crt CA certificates and *.cert/*.key client certificate pairs.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Blobs transferred at once.
    #[arg(short = 'j', long, default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,
    /// Retries of a failed request (with backoff from 200 ms, doubling) before giving up.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=20))]
    retries: u32,
    /// Print a JSON report (blobs and bytes sent, skipped and mounted).
    #[arg(long)]
    json: bool,
}

pub fn run(direction: Direction, a: TransferArgs) -> Result<()> {
    let src = Location::parse(&a.source)?;
    let dst = Location::parse(&a.destination)?;
    let registry = |l: &Location| matches!(l, Location::Registry(_));
    match direction {
        Direction::Push if registry(&src) || !registry(&dst) => {
            bail!("push copies from a layout to a registry: puzzlefs push OCI_DIR:TAG docker://HOST/REPO:TAG (or use copy)")
        }
        Direction::Pull if !registry(&src) || registry(&dst) => {
            bail!("pull copies from a registry to a layout: puzzlefs pull docker://HOST/REPO:TAG OCI_DIR:TAG (or use copy)")
        }
        _ => {}
    }
    let opts = TransferOptions {
        client: ClientOptions {
            tls_verify: a.tls_verify,
            cert_dir: a.cert_dir,
            credentials: a.creds.as_deref().map(Credentials::parse).transpose()?,
            authfile: a.authfile,
            retries: a.retries,
            ..ClientOptions::default()
        },
        jobs: a.jobs.into(),
    };
    let bar = std::io::stderr().is_terminal().then(Bar::new);
    let result = match &bar {
        Some(b) => copy_blocking(&src, &dst, &opts, b),
        None => copy_blocking(&src, &dst, &opts, &puzzlefs_virtiofsd::registry::NoProgress),
    };
    if let Some(b) = &bar {
        b.bar.finish_and_clear();
    }
    let report = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!("{}", summary(&report));
        println!("{}", report.manifest_digest);
    }
    Ok(())
}

fn summary(r: &Report) -> String {
    let mut out = format!(
        "{} blobs sent ({}), {} already there ({})",
        r.blobs_sent,
        human_bytes(r.bytes_sent),
        r.blobs_skipped,
        human_bytes(r.bytes_skipped)
    );
    if r.blobs_mounted > 0 {
        out.push_str(&format!(
            ", {} mounted from the source repository ({})",
            r.blobs_mounted,
            human_bytes(r.bytes_mounted)
        ));
    }
    out
}

/// A progress bar on a terminal: blobs, bytes and rate.
struct Bar {
    bar: indicatif::ProgressBar,
    blobs: AtomicU64,
    done: AtomicU64,
}

impl Bar {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar {
            bar,
            blobs: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }
}

impl Progress for Bar {
    fn begin(&self, blobs: u64, bytes: u64) {
        self.bar.set_length(bytes);
        self.blobs.store(blobs, Ordering::Relaxed);
        self.bar.set_message(format!("0/{blobs} blobs"));
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let blobs = self.blobs.load(Ordering::Relaxed).max(done);
        self.bar.set_message(format!("{done}/{blobs} blobs"));
    }
}
