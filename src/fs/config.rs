//! How the file system lets its client (host kernel or guest) cache what it serves.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How long entries and attributes stay valid when caching is on. The image never changes,
/// so this only bounds how long the kernel keeps unused entries; virtiofsd uses the same.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(86_400);

/// Chunks a served image loads ahead of its readers (`OpenOptions::read_ahead`): clients
/// read files whole and in directory order, which is the order chunks are stored in.
pub const READ_AHEAD_CHUNKS: usize = 2;

/// Cache modes, named and meant as virtiofsd's `--cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CachePolicy {
    /// Nothing cached: zero timeouts, direct I/O, no readdirplus.
    Never,
    /// Names and attributes cached; file data read through (direct I/O).
    Metadata,
    /// As `Always`: the image is immutable, so there is nothing to revalidate.
    Auto,
    /// Names, attributes, file data, directory listings and symlinks all cached.
    #[default]
    Always,
}

impl CachePolicy {
    /// Whether file data and directory listings may stay in the client's page cache.
    pub fn caches_data(self) -> bool {
        matches!(self, CachePolicy::Auto | CachePolicy::Always)
    }
}

impl FromStr for CachePolicy {
    type Err = String;

    /// Parses virtiofsd's names (`never`, `metadata`, `auto`, `always`; `none` = `never`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never" | "none" => Ok(CachePolicy::Never),
            "metadata" => Ok(CachePolicy::Metadata),
            "auto" => Ok(CachePolicy::Auto),
            "always" => Ok(CachePolicy::Always),
            other => Err(format!(
                "unknown cache mode {other:?} (expected never, metadata, auto or always)"
            )),
        }
    }
}

impl fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CachePolicy::Never => "never",
            CachePolicy::Metadata => "metadata",
            CachePolicy::Auto => "auto",
            CachePolicy::Always => "always",
        })
    }
}

/// Settings of a [`PuzzleFs`](super::PuzzleFs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The cache mode; the other fields default from it in [`FsConfig::new`].
    pub cache: CachePolicy,
    /// How long the client may trust a name lookup, positive or negative.
    pub entry_timeout: Duration,
    /// How long the client may trust attributes.
    pub attr_timeout: Duration,
    /// Offer READDIRPLUS (names with attributes in one request).
    pub readdirplus: bool,
    /// Serve extended attributes; when false, xattr requests get `ENOSYS` so the client stops
    /// asking (as virtiofsd without `--xattr`).
    pub xattr: bool,
    /// Answer the first OPEN and OPENDIR with `ENOSYS` so the kernel stops sending them and
    /// their RELEASEs (zero-message open). Only for clients that mounted read-only and cache
    /// data: the kernel then opens files itself, so a write open would no longer be refused.
    pub zero_message_open: bool,
}

impl FsConfig {
    /// The settings virtiofsd would use for `cache`.
    pub fn new(cache: CachePolicy) -> Self {
        let timeout = match cache {
            CachePolicy::Never => Duration::ZERO,
            CachePolicy::Metadata | CachePolicy::Auto | CachePolicy::Always => LONG_TIMEOUT,
        };
        FsConfig {
            cache,
            entry_timeout: timeout,
            attr_timeout: timeout,
            readdirplus: cache != CachePolicy::Never,
            xattr: true,
            zero_message_open: false,
        }
    }

    /// The settings for a client that mounted read-only, as host mounts do: `cache` plus
    /// zero-message opens when `cache` caches data.
    pub fn read_only_mount(cache: CachePolicy) -> Self {
        FsConfig {
            zero_message_open: cache.caches_data(),
            ..FsConfig::new(cache)
        }
    }
}

impl Default for FsConfig {
    /// `CachePolicy::Always`, what host mounts use.
    fn default() -> Self {
        FsConfig::new(CachePolicy::Always)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_set_timeouts() {
        for p in [
            CachePolicy::Never,
            CachePolicy::Metadata,
            CachePolicy::Auto,
            CachePolicy::Always,
        ] {
            assert_eq!(p.to_string().parse::<CachePolicy>(), Ok(p));
        }
        assert_eq!("none".parse(), Ok(CachePolicy::Never));
        assert!("sometimes".parse::<CachePolicy>().is_err());
        let never = FsConfig::new(CachePolicy::Never);
        assert_eq!(never.entry_timeout, Duration::ZERO);
        assert!(!never.readdirplus);
        let always = FsConfig::default();
        assert_eq!(always.cache, CachePolicy::Always);
        assert_eq!(always.attr_timeout, LONG_TIMEOUT);
        assert!(always.readdirplus && always.xattr);
    }
}
