//! `puzzlefs`: build, inspect, check, extract and mount PuzzleFS images.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use puzzlefs_virtiofsd::builder::{build, BuildOptions, Progress, ZstdOptions};
use puzzlefs_virtiofsd::chunk::ChunkParams;
use puzzlefs_virtiofsd::format::{human_bytes, parse_bytes, Digest};
use puzzlefs_virtiofsd::oci::OciDir;
use puzzlefs_virtiofsd::reader::{Image, OpenOptions};

#[path = "puzzlefs/transfer.rs"]
mod transfer;

#[derive(Parser)]
#[command(
    name = "puzzlefs",
    version,
    about = "Build, inspect, check, extract and mount PuzzleFS images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a directory tree.
    Build(BuildArgs),
    /// Recreate an image's tree in a directory.
    Extract(ExtractArgs),
    /// Mount an image read-only with FUSE.
    Mount(MountArgs),
    /// Copy an image from a layout to a registry, sending only the blobs it lacks.
    Push(transfer::TransferArgs),
    /// Copy an image from a registry to a layout, fetching only the blobs it lacks.
    Pull(transfer::TransferArgs),
    /// Copy an image between any two registries or layouts.
    Copy(transfer::TransferArgs),
    /// Unmount a FUSE mount.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Show tags, sizes, counts and sharing between images.
    Inspect {
        /// OCI_DIR or OCI_DIR:TAG.
        image: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List a directory of an image.
    Ls {
        /// OCI_DIR:TAG.
        image: String,
        /// Path in the image (default: /).
        path: Option<String>,
        /// List the whole subtree.
        #[arg(short = 'R', long)]
        recursive: bool,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Write a file of an image to standard output.
    Cat {
        /// OCI_DIR:TAG.
        image: String,
        /// Path in the image.
        path: String,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Verify every blob digest and the metadata of one or all images.
    Check {
        /// OCI_DIR or OCI_DIR:TAG.
        image: String,
    },
    /// Turn the kernel's fs-verity on for every file of an image (on a file system that has
    /// it, such as ext4 made with `-O verity`), after checking every recorded digest.
    /// Prints the root hash that `--fs-verity` takes.
    EnableFsVerity {
        /// OCI_DIR:TAG.
        image: String,
        /// The fs-verity digest the image manifest must have (hex), as upstream PuzzleFS
        /// prints it; without it, the manifest index.json names is trusted.
        root_hash: Option<String>,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
}

/// How a reader pins the image it opens.
#[derive(Args)]
struct PinArgs {
    /// Refuse the image unless its manifest digest (sha256, as `build` prints it) is this.
    #[arg(long)]
    digest: Option<String>,
    /// Require fs-verity: the manifest must measure to this fs-verity digest (hex, as
    /// `enable-fs-verity` prints it), and every blob to the digest the image records.
    #[arg(long, value_name = "ROOT_HASH")]
    fs_verity: Option<String>,
}

#[derive(Args)]
struct BuildArgs {
    /// Directory to build from.
    rootfs: PathBuf,
    /// OCI_DIR:TAG to write (the directory is created if missing).
    target: String,
    /// Compress chunks with zstd.
    #[arg(short, long)]
    compress: bool,
    /// Reuse unchanged files of this tag in the same OCI directory.
    #[arg(short, long, alias = "base-layer")]
    base: Option<String>,
    /// zstd level with --compress (1-22; higher is smaller and slower; 9 with --frame-size 4M
    /// makes images about 10% smaller than the defaults for twice the build time).
    #[arg(long, default_value_t = puzzlefs_virtiofsd::builder::DEFAULT_LEVEL, requires = "compress",
          value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    /// Uncompressed bytes per zstd frame with --compress (4K to 16M; K and M suffixes). In
    /// packs, consecutive new chunks are compressed together to fill a frame; a reader
    /// decompresses a whole frame to read any byte of it.
    #[arg(long, default_value = "1M", requires = "compress", value_parser = parse_frame_size)]
    frame_size: u32,
    /// Average chunk size: a power of two from 4K to 4M (K and M suffixes); chunks range
    /// from a quarter to four times it. The default, 64K, is upstream's.
    #[arg(long, default_value = "64K", value_parser = parse_chunk_size)]
    chunk_size: ChunkParams,
    /// Target size of a pack blob, which holds many chunks (K, M or G suffix; at most 1G).
    /// 0 stores every chunk as a blob of its own, as upstream PuzzleFS does.
    #[arg(long, default_value = "16M", value_parser = parse_pack_size)]
    pack_size: u64,
    /// Worker threads (default: all cores).
    #[arg(short = 'j', long)]
    threads: Option<usize>,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExtractArgs {
    /// OCI_DIR:TAG.
    image: String,
    /// Destination directory (created; must be empty if it exists).
    dest: PathBuf,
    #[command(flatten)]
    pin: PinArgs,
    /// Leave device nodes out (for extraction without root).
    #[arg(long)]
    skip_devices: bool,
}

#[derive(Args)]
struct MountArgs {
    /// OCI_DIR:TAG.
    image: String,
    /// Where to mount.
    mountpoint: PathBuf,
    /// Stay in the foreground.
    #[arg(short, long)]
    foreground: bool,
    #[command(flatten)]
    pin: PinArgs,
    /// Let other users access the mount (needs user_allow_other or root).
    #[arg(long)]
    allow_other: bool,
}

/// A byte count (K, M or G suffix) that fits a u32.
fn parse_size(s: &str) -> std::result::Result<u32, String> {
    parse_bytes(s)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or a number with K or M)"))
}

fn parse_frame_size(s: &str) -> std::result::Result<u32, String> {
    let n = parse_size(s)?;
    if (4 << 10..=16 << 20).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} bytes is outside 4K to 16M"))
    }
}

fn parse_pack_size(s: &str) -> std::result::Result<u64, String> {
    match parse_bytes(s) {
        Some(n) if n <= 1 << 30 => Ok(n),
        Some(n) => Err(format!("{n} bytes is more than 1G")),
        None => Err(format!(
            "{s:?} is not a size (bytes, or a number with K, M or G)"
        )),
    }
}

fn parse_chunk_size(s: &str) -> std::result::Result<ChunkParams, String> {
    ChunkParams::with_average(parse_size(s)?).map_err(|e| e.to_string())
}

fn split_target(s: &str) -> Result<(PathBuf, String)> {
    match s.rsplit_once(':') {
        Some((dir, tag)) if !dir.is_empty() && !tag.is_empty() => {
            Ok((PathBuf::from(dir), tag.to_string()))
        }
        _ => bail!("expected OCI_DIR:TAG, got {s:?}"),
    }
}

fn split_optional_tag(s: &str) -> (PathBuf, Option<String>) {
    match s.rsplit_once(':') {
        Some((dir, tag)) if !dir.is_empty() && !tag.is_empty() && !tag.contains('/') => {
            (PathBuf::from(dir), Some(tag.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

fn open_image(spec: &str, pin: &PinArgs) -> Result<Image> {
    open_image_with(spec, pin, 0)
}

/// A 32-byte fs-verity digest in hex (a `sha256:` prefix, as `fsverity digest` prints, is
/// accepted).
fn parse_root_hash(s: &str) -> Result<[u8; 32]> {
    Digest::parse(s)
        .map(|d| d.0)
        .map_err(|_| anyhow::anyhow!("{s:?} is not an fs-verity digest (64 lowercase hex digits)"))
}

fn open_image_with(spec: &str, pin: &PinArgs, read_ahead: usize) -> Result<Image> {
    let (dir, tag) = split_target(spec)?;
    let oci = OciDir::open(&dir)?;
    let options = OpenOptions {
        pin: pin.digest.as_deref().map(Digest::parse).transpose()?,
        fs_verity: pin.fs_verity.as_deref().map(parse_root_hash).transpose()?,
        read_ahead,
        ..Default::default()
    };
    Ok(Image::open(&oci, &tag, options)?)
}

fn cmd_enable_fs_verity(image: &str, root_hash: Option<&str>, json: bool) -> Result<()> {
    let (dir, tag) = split_target(image)?;
    let oci = OciDir::open(&dir)?;
    let root = root_hash.map(parse_root_hash).transpose()?;
    let report = puzzlefs_virtiofsd::inspect::enable_fs_verity(&oci, &tag, root.as_ref())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "fs-verity on for {} files ({}; {} newly enabled)",
            report.files,
            human_bytes(report.bytes),
            report.newly_enabled
        );
        println!("{}", report.root_hash);
    }
    Ok(())
}

fn cmd_build(a: BuildArgs) -> Result<()> {
    let (dir, tag) = split_target(&a.target)?;
    puzzlefs_virtiofsd::oci::validate_tag(&tag)?;
    if !a.rootfs.is_dir() {
        bail!("{}: not a directory", a.rootfs.display());
    }
    let oci = OciDir::create(&dir)?;
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel.clone())?;
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message("scanning");
        bar
    });
    let progress = |p: Progress| {
        if let Some(bar) = &bar {
            match p {
                Progress::Scanned { entries, bytes } => {
                    bar.set_message(format!("{entries} entries"));
                    bar.set_length(bytes);
                }
                Progress::Data { done, total } => {
                    bar.set_length(total);
                    bar.set_position(done);
                }
            }
        }
    };
    let opts = BuildOptions {
        zstd: a.compress.then_some(ZstdOptions {
            frame_size: a.frame_size,
            level: a.level,
        }),
        params: a.chunk_size,
        pack_size: a.pack_size,
        base: a.base.as_deref(),
        threads: a.threads.unwrap_or(BuildOptions::default().threads),
        progress: Some(&progress),
        cancel: Some(&cancel),
    };
    let report = build(&a.rootfs, &oci, &tag, &opts);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if bar.is_some() {
            eprintln!(
                "{} files, {} in {:.1}s; {} of {} chunks new ({}) in {} blobs, metadata {}{}",
                report.files,
                human_bytes(report.file_bytes),
                report.seconds,
                report.new_chunks,
                report.chunks,
                human_bytes(report.new_bytes),
                report.data_blobs,
                human_bytes(report.metadata_bytes),
                if report.reused_files > 0 {
                    format!(", {} files reused from base", report.reused_files)
                } else {
                    String::new()
                }
            );
        }
        println!("{}", report.manifest_digest);
    }
    Ok(())
}

fn cmd_cat(image: &str, path: &str, pin: &PinArgs) -> Result<()> {
    let img = open_image(image, pin)?;
    let node = img.table().resolve(path.as_bytes(), true)?;
    let n = img.table().node(node);
    if !matches!(n.data, puzzlefs_virtiofsd::reader::NodeData::File(_)) {
        bail!("{path}: not a regular file");
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    img.read_with(node, 0, n.size, |piece| {
        out.write_all(piece).map_err(anyhow::Error::from)
    })?;
    out.flush()?;
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => cmd_build(a),
        Command::Push(a) => transfer::run(transfer::Direction::Push, a),
        Command::Pull(a) => transfer::run(transfer::Direction::Pull, a),
        Command::Copy(a) => transfer::run(transfer::Direction::Copy, a),
        Command::Cat { image, path, pin } => cmd_cat(&image, &path, &pin),
        Command::EnableFsVerity {
            image,
            root_hash,
            json,
        } => cmd_enable_fs_verity(&image, root_hash.as_deref(), json),
        Command::Ls {
            image,
            path,
            recursive,
            pin,
        } => open_image(&image, &pin).and_then(|img| {
            let text =
                puzzlefs_virtiofsd::inspect::list(&img, path.as_deref().unwrap_or("/"), recursive)?;
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(())
        }),
        Command::Inspect { image, json } => {
            let (dir, tag) = split_optional_tag(&image);
            OciDir::open(&dir)
                .map_err(anyhow::Error::from)
                .and_then(|oci| {
                    let report = puzzlefs_virtiofsd::inspect::inspect(&oci, tag.as_deref())?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", report.to_text());
                    }
                    Ok(())
                })
        }
        Command::Check { image } => {
            let (dir, tag) = split_optional_tag(&image);
            OciDir::open(&dir)
                .map_err(anyhow::Error::from)
                .and_then(|oci| {
                    let report = puzzlefs_virtiofsd::inspect::check(&oci, tag.as_deref())?;
                    print!("{}", report.to_text());
                    if !report.ok() {
                        bail!("{} problem(s) found", report.problems.len());
                    }
                    Ok(())
                })
        }
        Command::Extract(a) => open_image(&a.image, &a.pin).and_then(|img| {
            let opts = puzzlefs_virtiofsd::extract::ExtractOptions {
                skip_devices: a.skip_devices,
            };
            let report = puzzlefs_virtiofsd::extract::extract(&img, &a.dest, &opts)?;
            eprintln!("{}", report.summary());
            Ok(())
        }),
        Command::Mount(a) => open_image_with(
            &a.image,
            &a.pin,
            puzzlefs_virtiofsd::fs::READ_AHEAD_CHUNKS,
        )
        .and_then(|img| {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
                .init();
            let opts = puzzlefs_virtiofsd::fs::MountOptions {
                foreground: a.foreground,
                allow_other: a.allow_other,
            };
            Ok(puzzlefs_virtiofsd::fs::mount(
                Arc::new(img),
                &a.mountpoint,
                &opts,
            )?)
        }),
        Command::Umount { mountpoint } => {
            puzzlefs_virtiofsd::fs::unmount(&mountpoint).map_err(Into::into)
        }
    };
    if let Err(e) = result {
        let _ = std::io::stdout().flush();
        // Every layer's error message already includes its cause.
        eprintln!("puzzlefs: {e}");
        std::process::exit(1);
    }
}
