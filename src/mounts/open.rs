//! [`Mounter`]: from a [`MountSpec`] to a file system the table can mount. Images are served
//! as [`ImageFs`] (read-only), all of them sharing one chunk store; directories through
//! fuse-backend-rs's pass-through file system. The source is opened through a path the caller
//! gives (the host path itself, or `/proc/self/fd/N` for a directory descriptor handed to a
//! sandboxed process), so this layer needs no access of its own to the host.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fuse_backend_rs::passthrough::{CachePolicy as PtCache, Config as PtConfig, PassthroughFs};

use super::backend::Backend;
use super::spec::{ImageRef, ImageSpec, MountSpec, PassthroughSpec};
use super::{ImageMetrics, MountError};
use crate::format::Digest;
use crate::fs::{CachePolicy, FsConfig, ImageFs, PuzzleFs, ReadOnly};
use crate::oci::OciDir;
use crate::reader::{FileChunkCache, HeapChunkCache, Image, OpenOptions, ReaderError};
use rustix::fs::{openat, statx, AtFlags, Mode, OFlags, StatxFlags, CWD};

/// Daemon-wide settings a mount request may leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountDefaults {
    /// How the guest may cache.
    pub cache: CachePolicy,
    /// Serve extended attributes of pass-through directories.
    pub xattr: bool,
    /// Honour the guest's O_DIRECT on pass-through directories.
    pub allow_direct_io: bool,
}

/// Builds the file systems mount requests ask for.
pub struct Mounter {
    store: Arc<FileChunkCache>,
    defaults: MountDefaults,
    /// Images opened and still mounted somewhere: mounting one again shares its inode table.
    images: Mutex<HashMap<ImageKey, Weak<PuzzleFs>>>,
}

/// What an opened image is a function of: the layout directory (as the kernel names it),
/// the manifest, the fs-verity pin and the cache policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ImageKey {
    dir: (u64, u64),
    manifest: Digest,
    fs_verity: Option<[u8; 32]>,
    cache: CachePolicy,
}

impl Mounter {
    /// Images will keep verified chunks in `store`.
    pub fn new(store: Arc<FileChunkCache>, defaults: MountDefaults) -> Self {
        Mounter {
            store,
            defaults,
            images: Mutex::new(HashMap::new()),
        }
    }

    /// The chunk store the images share.
    pub fn store(&self) -> &Arc<FileChunkCache> {
        &self.store
    }

    /// How many opened images are mounted somewhere.
    pub fn images_open(&self) -> usize {
        let opened = self.images.lock().unwrap_or_else(|e| e.into_inner());
        opened.values().filter(|i| i.strong_count() > 0).count()
    }

    /// Opens what `spec` names, reaching its host directory through `dir` (the directory
    /// itself, or another path to it). Errors name the directory as `spec` does, not `dir`.
    pub fn open(&self, spec: &MountSpec, dir: &Path) -> Result<Box<dyn Backend>, MountError> {
        let opened = match spec {
            MountSpec::Image(image) => self.image(image, dir),
            MountSpec::Passthrough(p) => self.passthrough(p, dir),
        };
        opened.map_err(|e| match e {
            MountError::Image(m) => MountError::Image(named_as(&m, dir, spec.host_dir())),
            other => other,
        })
    }

    fn image(&self, spec: &ImageSpec, dir: &Path) -> Result<Box<dyn Backend>, MountError> {
        let fail = |e: String| MountError::Image(e);
        // The image reaches its blobs through a descriptor of its own, so that it outlives
        // the mount that opened it when others share it.
        let held = openat(
            CWD,
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| MountError::Source {
            path: spec.oci_dir.clone(),
            source: e.into(),
        })?;
        // statx: what the daemon's seccomp filter allows (fstat is not in it).
        let st = statx(&held, "", AtFlags::EMPTY_PATH, StatxFlags::INO)
            .map_err(|e| fail(e.to_string()))?;
        let via = PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
        let named = |e: String| fail(named_as(&e, &via, dir));
        let oci = OciDir::open_held(held).map_err(|e| named(e.to_string()))?;
        let desc = match &spec.image {
            ImageRef::Tag(tag) => oci.resolve(tag).map_err(|e| named(e.to_string()))?,
            ImageRef::Digest(digest) => oci
                .manifest_by_digest(digest)
                .map_err(|_| fail(format!("no manifest {digest} in {}", dir.display())))?,
        };
        if let Some(pin) = spec.digest.filter(|pin| *pin != desc.digest) {
            return Err(fail(
                ReaderError::PinMismatch {
                    expected: pin,
                    actual: desc.digest,
                }
                .to_string(),
            ));
        }
        let cache = spec.cache.unwrap_or(self.defaults.cache);
        let key = ImageKey {
            dir: (
                (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor),
                st.stx_ino,
            ),
            manifest: desc.digest,
            fs_verity: spec.fs_verity,
            cache,
        };
        let mut opened = self.images.lock().unwrap_or_else(|e| e.into_inner());
        opened.retain(|_, image| image.strong_count() > 0);
        let fs = match opened.get(&key).and_then(Weak::upgrade) {
            Some(fs) => fs,
            None => {
                let options = OpenOptions {
                    pin: spec.digest,
                    fs_verity: spec.fs_verity,
                    // Verified chunks live in the shared chunk store, outside the heap.
                    cache: Some(Arc::new(HeapChunkCache::new(0))),
                    lean: true,
                    ..OpenOptions::default()
                };
                let image = Image::open_descriptor(&oci, &desc, options)
                    .map_err(|e| named(e.to_string()))?;
                let fs = Arc::new(PuzzleFs::new(Arc::new(image), FsConfig::new(cache)));
                opened.insert(key, Arc::downgrade(&fs));
                fs
            }
        };
        Ok(Box::new(ReadOnly::new(ImageFs::new(
            fs,
            self.store.clone(),
        ))))
    }

    fn passthrough(
        &self,
        spec: &PassthroughSpec,
        dir: &Path,
    ) -> Result<Box<dyn Backend>, MountError> {
        let fail = |source| MountError::Source {
            path: spec.dir.clone(),
            source,
        };
        // The last component must not be a symlink to follow: "dir/." opens dir itself
        // (a /proc/self/fd/N path included), with O_NOFOLLOW on ".".
        let root = dir.join(".");
        let root = root
            .to_str()
            .ok_or_else(|| fail(std::io::Error::other("the path is not valid UTF-8")))?;
        let meta = std::fs::metadata(root).map_err(fail)?;
        if !meta.is_dir() {
            return Err(fail(std::io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        let fs = PassthroughFs::<()>::new(passthrough_config(
            root,
            self.defaults.cache,
            spec.xattr.unwrap_or(self.defaults.xattr),
            self.defaults.allow_direct_io,
            false,
        ))
        .map_err(fail)?;
        fs.import().map_err(fail)?;
        Ok(if spec.readonly {
            Box::new(ReadOnly::new(fs))
        } else {
            Box::new(fs)
        })
    }
}

/// `message` with the path `via` (`/proc/self/fd/N` in a sandboxed process) written as
/// `source`, the directory the request named: the message ends up in Kata's log. Only whole
/// occurrences are replaced (`/proc/self/fd/7` is not a part of `/proc/self/fd/71`).
fn named_as(message: &str, via: &Path, source: &Path) -> String {
    let (via, source) = (via.to_string_lossy(), source.to_string_lossy());
    if via.is_empty() || via == source {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(&*via) {
        let after = &rest[at + via.len()..];
        let whole = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        out.push_str(&rest[..at]);
        out.push_str(if whole { &source } else { &via });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Entry and attribute timeout of a pass-through directory for a cache mode (virtiofsd's
/// values).
pub fn cache_timeout(cache: CachePolicy) -> Duration {
    match cache {
        CachePolicy::Never => Duration::ZERO,
        CachePolicy::Auto => Duration::from_secs(1),
        CachePolicy::Metadata | CachePolicy::Always => Duration::from_secs(86400),
    }
}

/// fuse-backend-rs's pass-through settings for a directory reached at `root`, as virtiofsd
/// would serve it with `cache`: its timeouts, no write-back cache (guest writes reach the
/// directory as they are made, so the host sees them at once), and the root opened again at
/// FUSE_INIT only with `import_at_init` (under the table, INIT comes with options already
/// settled and the mount imported it).
pub fn passthrough_config(
    root: &str,
    cache: CachePolicy,
    xattr: bool,
    allow_direct_io: bool,
    import_at_init: bool,
) -> PtConfig {
    let timeout = cache_timeout(cache);
    PtConfig {
        root_dir: root.to_string(),
        cache_policy: match cache {
            CachePolicy::Never => PtCache::Never,
            CachePolicy::Metadata => PtCache::Metadata,
            CachePolicy::Auto => PtCache::Auto,
            CachePolicy::Always => PtCache::Always,
        },
        entry_timeout: timeout,
        attr_timeout: timeout,
        xattr,
        allow_direct_io,
        writeback: false,
        do_import: import_at_init,
        ..PtConfig::default()
    }
}

/// Images: metadata is in memory, a read is quick when its chunks are stored.
impl Backend for ReadOnly<ImageFs> {
    fn is_quick(&self, _opcode: u32, inode: u64, read: Option<(u64, u32)>) -> bool {
        match read {
            Some((offset, size)) => self.inner().read_is_stored(inode, offset, size),
            None => true,
        }
    }

    fn manifest(&self) -> Option<crate::format::Digest> {
        Some(self.inner().manifest_digest())
    }

    fn image_metrics(&self) -> Option<ImageMetrics> {
        let s = self.inner().read_stats();
        Some(ImageMetrics {
            chunk_hits: s.hits,
            chunk_misses: s.misses,
            chunk_loads: s.loads,
            chunk_bytes_loaded: s.bytes_loaded,
            digest_failures: s.digest_failures,
            fs_verity_failures: s.verity_failures,
            load_failures: s.other_failures,
            metadata_bytes: self.inner().metadata_bytes(),
        })
    }
}

/// Pass-through directories: any request may wait on the host's disk; the guest's overlayfs
/// keeps its `trusted.*` attributes in the user namespace of the host's.
impl Backend for PassthroughFs<()> {
    fn maps_trusted_xattrs(&self) -> bool {
        true
    }
}

impl Backend for ReadOnly<PassthroughFs<()>> {
    fn maps_trusted_xattrs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_source_not_the_path_it_was_reached_by() {
        let (via, source) = (Path::new("/proc/self/fd/7"), Path::new("/var/lib/img"));
        assert_eq!(
            named_as("no manifest m in /proc/self/fd/7", via, source),
            "no manifest m in /var/lib/img"
        );
        assert_eq!(
            named_as("/proc/self/fd/7/blobs/sha256/ab: bad", via, source),
            "/var/lib/img/blobs/sha256/ab: bad"
        );
        assert_eq!(
            named_as("/proc/self/fd/71 and /proc/self/fd/7.", via, source),
            "/proc/self/fd/71 and /var/lib/img."
        );
        assert_eq!(named_as("nothing", via, source), "nothing");
        assert_eq!(named_as("/x: y", Path::new("/x"), Path::new("/x")), "/x: y");
    }
}
