//! Image locations: `docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]` (a registry) and
//! `[oci:]DIR:TAG` or `[oci:]DIR@sha256:HEX` (an OCI layout), in skopeo's transport syntax.

use std::fmt;
use std::path::PathBuf;

use super::RegistryError;
use crate::format::Digest;
use crate::oci::validate_tag;

/// Which manifest of a repository or layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The manifest a tag names.
    Tag(String),
    /// The manifest with this digest.
    Digest(Digest),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tag(t) => write!(f, ":{t}"),
            Target::Digest(d) => write!(f, "@{d}"),
        }
    }
}

/// An image in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as the user wrote it (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository, `a/b/c`.
    pub repository: String,
    /// Tag or digest (`latest` when neither was given).
    pub target: Target,
}

impl Reference {
    /// Parses `HOST[:PORT]/REPO[:TAG|@sha256:HEX]` (without `docker://`). As docker does, a
    /// first component without a `.` or `:` that is not `localhost` is a Docker Hub
    /// repository, where one-component names live under `library/`.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let bad = |reason: &str| RegistryError::BadLocation {
            location: format!("docker://{text}"),
            reason: reason.into(),
        };
        let (name, target) = match text.split_once('@') {
            Some((name, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are supported"))?;
                let digest = Digest::parse(&format!("sha256:{hex}"))
                    .map_err(|_| bad("the digest is not 64 lowercase hex digits"))?;
                (name, Target::Digest(digest))
            }
            None => match text.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => {
                    validate_tag(tag).map_err(|e| bad(&e.to_string()))?;
                    (name, Target::Tag(tag.to_string()))
                }
                _ => (text, Target::Tag("latest".into())),
            },
        };
        let (registry, repository) = match name.split_once('/') {
            Some((host, rest))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                (host.to_string(), rest.to_string())
            }
            Some(_) => ("docker.io".to_string(), name.to_string()),
            None => ("docker.io".to_string(), format!("library/{name}")),
        };
        if registry.is_empty() || registry.contains(['/', '@', ' ']) {
            return Err(bad("bad registry host"));
        }
        if !valid_repository(&repository) {
            return Err(bad(
                "a repository is lowercase letters and digits, in '/'-separated parts \
                 joined by '.', '_', '__' or '-'",
            ));
        }
        Ok(Reference {
            registry,
            repository,
            target,
        })
    }

    /// The host the API lives on (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The tag or digest as the manifest URL takes it.
    pub fn target_path(&self) -> String {
        match &self.target {
            Target::Tag(t) => t.clone(),
            Target::Digest(d) => d.oci(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "docker://{}/{}{}",
            self.registry, self.repository, self.target
        )
    }
}

/// The distribution spec's grammar: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` per component.
fn valid_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|part| {
            let b = part.as_bytes();
            let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
                return false;
            }
            let mut i = 0;
            while i < b.len() {
                if alnum(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !alnum(b[i]) {
                    i += 1;
                }
                let sep = &part[start..i];
                if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
                    return false;
                }
            }
            true
        })
}

/// Either end of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An image in a registry.
    Registry(Reference),
    /// An image in a local OCI layout.
    Layout {
        /// The layout's directory.
        dir: PathBuf,
        /// Which image in it.
        target: Target,
    },
}

impl Location {
    /// Parses `docker://...`, `oci:DIR:TAG`, `oci:DIR@sha256:HEX`, or the same without
    /// `oci:` (a directory path may hold colons: the tag is after the last one).
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        if let Some(rest) = text.strip_prefix("docker://") {
            return Reference::parse(rest).map(Location::Registry);
        }
        let bad = |reason: String| RegistryError::BadLocation {
            location: text.into(),
            reason,
        };
        if let Some((transport, _)) = text.split_once("://") {
            return Err(bad(format!(
                "unknown transport {transport:?}: use docker://HOST/REPO:TAG or [oci:]DIR:TAG"
            )));
        }
        let path = text.strip_prefix("oci:").unwrap_or(text);
        if let Some((dir, digest)) = path.rsplit_once('@') {
            if let Some(hex) = digest.strip_prefix("sha256:") {
                let digest = Digest::parse(&format!("sha256:{hex}"))
                    .map_err(|_| bad("the digest is not 64 lowercase hex digits".into()))?;
                if dir.is_empty() {
                    return Err(bad("no directory".into()));
                }
                return Ok(Location::Layout {
                    dir: dir.into(),
                    target: Target::Digest(digest),
                });
            }
        }
        match path.rsplit_once(':') {
            Some((dir, tag)) if !dir.is_empty() && !tag.contains('/') => {
                validate_tag(tag).map_err(|e| bad(e.to_string()))?;
                Ok(Location::Layout {
                    dir: dir.into(),
                    target: Target::Tag(tag.into()),
                })
            }
            _ => Err(bad(
                "expected docker://HOST/REPO[:TAG], [oci:]DIR:TAG or [oci:]DIR@sha256:DIGEST"
                    .into(),
            )),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(r) => r.fmt(f),
            Location::Layout { dir, target } => write!(f, "{}{target}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn registry_references() {
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), &r.target),
            ("127.0.0.1:5000", "a/b", &Target::Tag("v1".into()))
        );
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(r.target, Target::Tag("latest".into()));
        assert_eq!(r.registry, "localhost");
        let r = Reference::parse("debian").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.api_host()),
            ("docker.io", "library/debian", "registry-1.docker.io")
        );
        let r = Reference::parse(&format!("reg.io:443/ns/img@sha256:{HEX}")).unwrap();
        assert_eq!(r.target_path(), format!("sha256:{HEX}"));
        assert_eq!(
            r.to_string(),
            format!("docker://reg.io:443/ns/img@sha256:{HEX}")
        );
        for bad in [
            "reg.io/UPPER:t",
            "reg.io/a//b",
            "reg.io/-a",
            "reg.io/a:bad/tag:",
            "reg.io/a:.t",
            "reg.io/a@sha256:abc",
            &format!("reg.io/a@sha512:{HEX}"),
            "reg.io/a..b",
            "",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        for good in ["reg.io/a__b", "reg.io/a---b", "reg.io/a.b_c/d-e:T_1.x"] {
            Reference::parse(good).unwrap();
        }
    }

    #[test]
    fn locations() {
        assert!(matches!(
            Location::parse("docker://r.io/a:t").unwrap(),
            Location::Registry(_)
        ));
        assert_eq!(
            Location::parse("oci:/x:y/dir:tag").unwrap(),
            Location::Layout {
                dir: "/x:y/dir".into(),
                target: Target::Tag("tag".into())
            }
        );
        assert_eq!(
            Location::parse(&format!("rel/dir@sha256:{HEX}")).unwrap(),
            Location::Layout {
                dir: "rel/dir".into(),
                target: Target::Digest(Digest::parse(HEX).unwrap())
            }
        );
        for bad in [
            "dir",
            "dir:",
            ":tag",
            "http://x/y:z",
            "oci:dir:a/b",
            "dir:-t",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
