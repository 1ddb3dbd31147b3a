//! Registry credentials: `--creds USER:PASS`, or an auth file in the containers `auth.json`
//! / docker `config.json` format at the places skopeo and docker look.

use std::path::{Path, PathBuf};

use base64::Engine;

use super::RegistryError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password or identity token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.user)
    }
}

impl Credentials {
    /// Parses `USER:PASS` (the password may hold colons).
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        match text.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials {
                user: user.into(),
                password: password.into(),
            }),
            _ => Err(RegistryError::Credentials(
                "expected USER:PASSWORD with a non-empty user".into(),
            )),
        }
    }

    /// The credentials for `registry` (`host[:port]`) from `authfile`, or else from the
    /// first of the usual auth files that exists: `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `$XDG_CONFIG_HOME/containers/auth.json`
    /// (`~/.config/...`), `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`). A file that
    /// exists but cannot be parsed is an error; no entry for the registry is `None`.
    pub fn lookup(registry: &str, authfile: Option<&Path>) -> Result<Option<Self>, RegistryError> {
        let files = match authfile {
            Some(f) => vec![f.to_path_buf()],
            None => default_auth_files(),
        };
        for file in files {
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && authfile.is_none() => {
                    continue
                }
                Err(e) => return Err(RegistryError::io(file, e)),
            };
            if let Some(found) = Self::from_auth_file(&bytes, registry)
                .map_err(|e| RegistryError::Credentials(format!("{}: {e}", file.display())))?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The entry for `registry` in an auth file's `auths`: keyed by `host[:port]`, a URL of
    /// it, or (docker.io) Docker's `https://index.docker.io/v1/`.
    fn from_auth_file(bytes: &[u8], registry: &str) -> Result<Option<Self>, String> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            auths: std::collections::BTreeMap<String, Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(default)]
            auth: Option<String>,
        }
        let file: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let host_of = |key: &str| {
            let key = key
                .strip_prefix("https://")
                .or_else(|| key.strip_prefix("http://"))
                .unwrap_or(key);
            let host = key.split('/').next().unwrap_or(key).to_string();
            if host == "index.docker.io" || host == "registry-1.docker.io" {
                "docker.io".to_string()
            } else {
                host
            }
        };
        let Some(entry) = file.auths.iter().find(|(k, _)| host_of(k) == registry) else {
            return Ok(None);
        };
        let Some(auth) = &entry.1.auth else {
            return Ok(None);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| format!("the entry for {registry} is not base64"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| format!("the entry for {registry} is not UTF-8"))?;
        Self::parse(&text)
            .map(Some)
            .map_err(|_| format!("the entry for {registry} is not USER:PASSWORD"))
    }
}

fn default_auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut out = Vec::new();
    out.extend(env("REGISTRY_AUTH_FILE"));
    out.extend(env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    out.extend(
        env("XDG_CONFIG_HOME")
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
            .map(|d| d.join("containers/auth.json")),
    );
    out.extend(
        env("DOCKER_CONFIG")
            .or_else(|| home.as_ref().map(|h| h.join(".docker")))
            .map(|d| d.join("config.json")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn creds_flag() {
        let c = Credentials::parse("u:p:q").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u", "p:q"));
        assert!(Credentials::parse("nouser").is_err());
        assert!(Credentials::parse(":p").is_err());
        assert!(!format!("{c:?}").contains("p:q"));
    }

    #[test]
    fn auth_file_entries() {
        let file = serde_json::json!({"auths": {
            "127.0.0.1:5000": {"auth": b64("alice:secret")},
            "https://index.docker.io/v1/": {"auth": b64("bob:pw")},
            "https://other.io/v2/": {"auth": b64("carol:x")},
            "broken.io": {"auth": "%%%"},
            "noauth.io": {"identitytoken": "t"}
        }})
        .to_string();
        let get = |r: &str| Credentials::from_auth_file(file.as_bytes(), r);
        assert_eq!(get("127.0.0.1:5000").unwrap().unwrap().user, "alice");
        assert_eq!(get("docker.io").unwrap().unwrap().password, "pw");
        assert_eq!(get("other.io").unwrap().unwrap().user, "carol");
        assert!(get("broken.io").is_err());
        assert_eq!(get("noauth.io").unwrap(), None);
        assert_eq!(get("127.0.0.1:5001").unwrap(), None);
        assert!(Credentials::from_auth_file(b"not json", "x").is_err());
    }

    #[test]
    fn lookup_uses_the_given_file_and_fails_on_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(
            &path,
            serde_json::json!({"auths": {"r.io": {"auth": b64("u:p")}}}).to_string(),
        )
        .unwrap();
        let c = Credentials::lookup("r.io", Some(&path)).unwrap().unwrap();
        assert_eq!(c.user, "u");
        assert_eq!(Credentials::lookup("s.io", Some(&path)).unwrap(), None);
        assert!(Credentials::lookup("r.io", Some(&dir.path().join("none"))).is_err());
    }
}
