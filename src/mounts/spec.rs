//! What a mount request asks for: `fs_type`, `source` and `config` as nydusd's API takes them,
//! checked and turned into a [`MountSpec`]. No I/O: the source is only parsed here.
//!
//! - `passthrough_fs` (also `passthroughfs`, `passthrough`): `source` is a host directory;
//!   `config` is empty or a JSON object with optional `readonly` and `xattr` booleans.
//! - `puzzlefs`, and `rafs` (the name Kata's Go runtime sends for every image): `source` is
//!   `OCI_DIR:TAG` or `OCI_DIR@sha256:DIGEST`; `config` is empty or a JSON object with
//!   optional `digest` (the manifest must have it), `fs_verity` (root hash: the image's files
//!   must carry fs-verity) and `cache` (never, metadata, auto, always). Other keys are
//!   ignored, so a snapshotter's nydusd configuration passed on verbatim does no harm.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{MountError, MountLabel};
use crate::format::Digest;
use crate::fs::CachePolicy;
use crate::oci::validate_tag;

/// A checked mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A host directory, passed through.
    Passthrough(PassthroughSpec),
    /// A PuzzleFS image.
    Image(ImageSpec),
}

/// A host directory to pass through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughSpec {
    /// The directory.
    pub dir: PathBuf,
    /// Refuse writes (EROFS).
    pub readonly: bool,
    /// Serve extended attributes (None: the daemon's default).
    pub xattr: Option<bool>,
}

/// Which image of an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// The manifest a tag names.
    Tag(String),
    /// The manifest with this digest.
    Digest(Digest),
}

/// A PuzzleFS image to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The OCI image layout.
    pub oci_dir: PathBuf,
    /// The image in it.
    pub image: ImageRef,
    /// Refuse the image unless its manifest has this digest.
    pub digest: Option<Digest>,
    /// Require fs-verity rooted at this fs-verity digest of the manifest.
    pub fs_verity: Option<[u8; 32]>,
    /// How the guest may cache it (None: the daemon's default).
    pub cache: Option<CachePolicy>,
}

#[derive(Deserialize, Default)]
struct PassthroughConfig {
    readonly: Option<bool>,
    xattr: Option<bool>,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    digest: Option<String>,
    fs_verity: Option<String>,
    cache: Option<String>,
}

impl MountSpec {
    /// Checks a request's three strings.
    pub fn parse(fs_type: &str, source: &str, config: &str) -> Result<MountSpec, MountError> {
        match fs_type {
            "passthrough_fs" | "passthroughfs" | "passthrough" => {
                let c: PassthroughConfig = parse_config(config)?;
                Ok(MountSpec::Passthrough(PassthroughSpec {
                    dir: absolute(source)?,
                    readonly: c.readonly.unwrap_or(false),
                    xattr: c.xattr,
                }))
            }
            "puzzlefs" | "rafs" => {
                let c: ImageConfig = parse_config(config)?;
                let (oci_dir, image) = parse_image_source(source)?;
                let digest = c
                    .digest
                    .as_deref()
                    .map(|d| {
                        Digest::parse(&d.to_ascii_lowercase()).map_err(|_| {
                            MountError::BadConfig(format!("digest {d:?} is not a sha256 digest"))
                        })
                    })
                    .transpose()?;
                if let (ImageRef::Digest(named), Some(pin)) = (&image, digest) {
                    if *named != pin {
                        return Err(MountError::BadConfig(format!(
                            "the source names {named} but config pins {pin}"
                        )));
                    }
                }
                let fs_verity = c
                    .fs_verity
                    .as_deref()
                    .map(|h| {
                        Digest::parse(&h.to_ascii_lowercase())
                            .map(|d| d.0)
                            .map_err(|_| {
                                MountError::BadConfig(format!(
                                    "fs_verity {h:?} is not a root hash (64 hex digits)"
                                ))
                            })
                    })
                    .transpose()?;
                let cache = c
                    .cache
                    .as_deref()
                    .map(|s| s.parse::<CachePolicy>().map_err(MountError::BadConfig))
                    .transpose()?;
                Ok(MountSpec::Image(ImageSpec {
                    oci_dir,
                    image,
                    digest,
                    fs_verity,
                    cache,
                }))
            }
            other => Err(MountError::UnknownFsType(other.to_string())),
        }
    }

    /// The host directory the mount needs to reach.
    pub fn host_dir(&self) -> &Path {
        match self {
            MountSpec::Passthrough(p) => &p.dir,
            MountSpec::Image(i) => &i.oci_dir,
        }
    }

    /// Whether the mount may change the host directory.
    pub fn writable(&self) -> bool {
        matches!(self, MountSpec::Passthrough(p) if !p.readonly)
    }

    /// How metrics and the daemon's info name it.
    pub fn label(&self) -> MountLabel {
        match self {
            MountSpec::Passthrough(p) => MountLabel {
                fs_type: "passthrough_fs".into(),
                source: p.dir.display().to_string(),
            },
            MountSpec::Image(i) => MountLabel {
                fs_type: "puzzlefs".into(),
                source: match &i.image {
                    ImageRef::Tag(t) => format!("{}:{t}", i.oci_dir.display()),
                    ImageRef::Digest(d) => format!("{}@{d}", i.oci_dir.display()),
                },
            },
        }
    }
}

/// `config`: empty, or a JSON object (whose unknown keys are ignored).
fn parse_config<T: for<'de> Deserialize<'de> + Default>(config: &str) -> Result<T, MountError> {
    if config.trim().is_empty() {
        return Ok(T::default());
    }
    let value: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| MountError::BadConfig(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(MountError::BadConfig("not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| MountError::BadConfig(e.to_string()))
}

fn bad_source(source: &str, reason: &str) -> MountError {
    MountError::BadSource {
        source_text: source.to_string(),
        reason: reason.to_string(),
    }
}

fn absolute(source: &str) -> Result<PathBuf, MountError> {
    if source.contains('\0') {
        return Err(bad_source(source, "NUL in the path"));
    }
    if !source.starts_with('/') {
        return Err(bad_source(source, "not an absolute path"));
    }
    Ok(PathBuf::from(source))
}

/// `OCI_DIR@sha256:DIGEST` or `OCI_DIR:TAG` (split at the last colon: the directory may hold
/// one, a tag may not).
fn parse_image_source(source: &str) -> Result<(PathBuf, ImageRef), MountError> {
    let expected = "expected OCI_DIR:TAG or OCI_DIR@sha256:DIGEST";
    if let Some((dir, digest)) = source.rsplit_once('@') {
        if let Some(hex) = digest.strip_prefix("sha256:") {
            let digest = Digest::parse(&format!("sha256:{}", hex.to_ascii_lowercase()))
                .map_err(|_| bad_source(source, "the digest is not 64 hex digits"))?;
            return Ok((absolute(dir)?, ImageRef::Digest(digest)));
        }
    }
    let (dir, tag) = source
        .rsplit_once(':')
        .filter(|(d, t)| !d.is_empty() && !t.is_empty())
        .ok_or_else(|| bad_source(source, expected))?;
    validate_tag(tag).map_err(|e| bad_source(source, &e.to_string()))?;
    Ok((absolute(dir)?, ImageRef::Tag(tag.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "aa00000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn passthrough_requests() {
        let s = MountSpec::parse("passthrough_fs", "/run/share", "").unwrap();
        assert_eq!(
            s,
            MountSpec::Passthrough(PassthroughSpec {
                dir: "/run/share".into(),
                readonly: false,
                xattr: None,
            })
        );
        assert!(s.writable());
        let s =
            MountSpec::parse("passthroughfs", "/x", r#"{"readonly":true,"xattr":true}"#).unwrap();
        assert!(!s.writable());
        assert_eq!(s.label().fs_type, "passthrough_fs");
        assert!(matches!(
            MountSpec::parse("passthrough_fs", "rel", ""),
            Err(MountError::BadSource { .. })
        ));
        assert!(matches!(
            MountSpec::parse("passthrough_fs", "/x", "[1]"),
            Err(MountError::BadConfig(_))
        ));
        assert!(matches!(
            MountSpec::parse("passthrough_fs", "/x", r#"{"readonly":"yes"}"#),
            Err(MountError::BadConfig(_))
        ));
    }

    #[test]
    fn image_requests() {
        let s = MountSpec::parse("rafs", "/var/lib/img:v1", "").unwrap();
        let MountSpec::Image(i) = &s else { panic!() };
        assert_eq!(i.oci_dir, Path::new("/var/lib/img"));
        assert_eq!(i.image, ImageRef::Tag("v1".into()));
        assert_eq!(s.label().source, "/var/lib/img:v1");
        assert_eq!(s.label().fs_type, "puzzlefs");

        let by_digest = format!("/a:b/img@sha256:{}", HEX.to_ascii_uppercase());
        let s = MountSpec::parse("puzzlefs", &by_digest, "{}").unwrap();
        let MountSpec::Image(i) = &s else { panic!() };
        assert_eq!(i.oci_dir, Path::new("/a:b/img"));
        assert_eq!(
            i.image,
            ImageRef::Digest(Digest::parse(&format!("sha256:{HEX}")).unwrap())
        );

        // A nydusd RAFS config passed on verbatim, plus our own keys.
        let config = format!(
            r#"{{"device":{{"backend":{{"type":"localfs"}}}},"mode":"direct","digest":"sha256:{HEX}","fs_verity":"{HEX}","cache":"never"}}"#
        );
        let s = MountSpec::parse("rafs", "/img:latest", &config).unwrap();
        let MountSpec::Image(i) = s else { panic!() };
        assert!(i.digest.is_some() && i.fs_verity.is_some());
        assert_eq!(i.cache, Some(CachePolicy::Never));
    }

    #[test]
    fn bad_image_requests() {
        for (source, config) in [
            ("/img", ""),
            ("/img:", ""),
            (":tag", ""),
            ("img:tag", ""),
            ("/img:bad tag", ""),
            ("/img@sha256:1234", ""),
            ("/img:t", "not json"),
            ("/img:t", r#"{"digest":"sha256:12"}"#),
            ("/img:t", r#"{"fs_verity":"xyz"}"#),
            ("/img:t", r#"{"cache":"sometimes"}"#),
            ("/img:t", r#"{"digest":5}"#),
        ] {
            let e = MountSpec::parse("rafs", source, config).unwrap_err();
            assert!(
                matches!(e, MountError::BadSource { .. } | MountError::BadConfig(_)),
                "{source} {config}: {e}"
            );
        }
        let other = format!("/img@sha256:{HEX}");
        let pin = format!(r#"{{"digest":"sha256:{}"}}"#, "b".repeat(64));
        assert!(matches!(
            MountSpec::parse("rafs", &other, &pin),
            Err(MountError::BadConfig(_))
        ));
        assert!(matches!(
            MountSpec::parse("overlay", "/x", ""),
            Err(MountError::UnknownFsType(_))
        ));
    }
}
