//! A real CNCF distribution registry (Debian's `docker-registry`, 2.8) on loopback, started per test.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::token::{openssl, TokenServer};

/// Where Debian's `docker-registry` package puts the binary.
pub const BINARY: &str = "/usr/bin/docker-registry";

/// How the registry authenticates clients.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Anonymous access to everything.
    None,
    /// htpasswd users (name, password), stored as bcrypt hashes.
    Basic(Vec<(String, String)>),
    /// Bearer tokens from a token server whose certificate the registry trusts.
    Token(TokenAuth),
}

/// The registry's `auth: token:` settings.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM of the certificate(s) whose keys may sign tokens (`rootcertbundle`).
    pub root_cert_pem: String,
}

impl Auth {
    pub fn basic(users: &[(&str, &str)]) -> Auth {
        Auth::Basic(
            users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        )
    }

    /// Tokens from `server`, fetched at its own realm.
    pub fn token(server: &TokenServer) -> Auth {
        Auth::token_with_realm(server, &server.realm())
    }

    /// Tokens from `server`, but the challenge names `realm` (a FaultProxy in front of it, say).
    pub fn token_with_realm(server: &TokenServer, realm: &str) -> Auth {
        Auth::Token(TokenAuth {
            realm: realm.to_string(),
            service: server.service().to_string(),
            issuer: server.issuer().to_string(),
            root_cert_pem: server.cert_pem().to_string(),
        })
    }
}

/// A running `docker-registry serve`, killed on drop. Its storage, config and log live in a
/// tempdir that goes with it.
pub struct Registry {
    dir: tempfile::TempDir,
    binary: PathBuf,
    port: u16,
    child: Option<Child>,
    tls: bool,
}

impl Registry {
    /// Starts a registry with `auth` and waits until `/v2/` answers. Panics (never skips) if
    /// docker-registry is not installed.
    pub fn start(auth: Auth) -> Registry {
        Registry::start_with(Path::new(BINARY), auth)
    }

    /// As `start`, serving HTTPS with a certificate for 127.0.0.1 signed by a test CA
    /// ([`Registry::ca_dir`]).
    pub fn start_tls(auth: Auth) -> Registry {
        Registry::start_inner(Path::new(BINARY), auth, true)
    }

    /// As `start`, with another binary.
    pub fn start_with(binary: &Path, auth: Auth) -> Registry {
        Registry::start_inner(binary, auth, false)
    }

    fn start_inner(binary: &Path, auth: Auth, tls: bool) -> Registry {
        assert!(
            binary.exists(),
            "{} is missing: run scripts/setup.sh (it installs Debian's docker-registry)",
            binary.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("registry-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("storage")).unwrap();
        if tls {
            make_certificates(dir.path());
        }
        let mut registry = Registry {
            dir,
            binary: binary.to_path_buf(),
            port: 0,
            child: None,
            tls,
        };
        for attempt in 0.. {
            registry.port = free_port();
            write_config(registry.dir.path(), registry.port, &auth, tls);
            match registry.spawn() {
                Ok(()) => break,
                // Another process took the port between our probe and the registry's bind.
                Err(log) if attempt < 5 && log.contains("address already in use") => {}
                Err(log) => panic!("docker-registry did not start; its log ends:\n{log}"),
            }
        }
        registry
    }

    /// Spawns the process and waits for `/v2/`; on failure, the log's tail.
    fn spawn(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("(exited: {status})\n{}", self.log_tail(40)));
            }
            if http_status(&self.addr(), "/v2/").is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "(no answer on /v2/ in 20 s)\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A directory holding only the test CA's certificate (`ca.crt`), as `--cert-dir` takes
    /// it; the registry must have been started with [`Registry::start_tls`].
    pub fn ca_dir(&self) -> PathBuf {
        assert!(self.tls, "not a TLS registry");
        self.dir.path().join("ca")
    }

    /// "127.0.0.1:PORT".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// "http://127.0.0.1:PORT".
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The filesystem driver's `rootdirectory`.
    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The last `lines` lines of the registry's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn v2(&self) -> PathBuf {
        self.storage_root().join("docker/registry/v2")
    }

    /// The sha256 hex digests of every blob in the storage (`blobs/sha256/??/HEX/data`).
    pub fn stored_blobs(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for prefix in read_dir_names(&self.v2().join("blobs/sha256")) {
            for hex in read_dir_names(&self.v2().join("blobs/sha256").join(&prefix)) {
                if self.blob_data_path(&hex).is_file() {
                    found.insert(hex);
                }
            }
        }
        found
    }

    /// Where the blob `hex` (sha256) is stored, whether or not it is.
    pub fn blob_data_path(&self, hex: &str) -> PathBuf {
        let prefix = hex.get(..2).unwrap_or(hex);
        self.v2().join(format!("blobs/sha256/{prefix}/{hex}/data"))
    }

    /// The blobs (sha256 hex) linked into `repo` (`repositories/REPO/_layers/sha256/HEX/link`).
    pub fn repo_layers(&self, repo: &str) -> BTreeSet<String> {
        self.links(&format!("repositories/{repo}/_layers/sha256"))
    }

    /// The manifests (sha256 hex) `repo` holds (`_manifests/revisions/sha256/HEX/link`).
    pub fn repo_manifests(&self, repo: &str) -> BTreeSet<String> {
        self.links(&format!("repositories/{repo}/_manifests/revisions/sha256"))
    }

    /// The tags of `repo` (`_manifests/tags/TAG`).
    pub fn repo_tags(&self, repo: &str) -> BTreeSet<String> {
        let dir = self
            .v2()
            .join(format!("repositories/{repo}/_manifests/tags"));
        read_dir_names(&dir).into_iter().collect()
    }

    fn links(&self, under: &str) -> BTreeSet<String> {
        let dir = self.v2().join(under);
        read_dir_names(&dir)
            .into_iter()
            .filter(|hex| dir.join(hex).join("link").is_file())
            .collect()
    }

    /// Kills the registry (requests then fail to connect) until `restart`.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Kills the registry if it runs and starts it again on the same storage, port and config.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn() {
            panic!("docker-registry did not restart; its log ends:\n{log}");
        }
    }

    /// Runs the offline `docker-registry garbage-collect` (stopping the registry meanwhile) and
    /// returns its output.
    pub fn garbage_collect(&mut self, delete_untagged: bool) -> String {
        self.kill();
        let mut gc = Command::new(&self.binary);
        gc.arg("garbage-collect");
        if delete_untagged {
            gc.arg("--delete-untagged");
        }
        let out = gc.arg(self.config_path()).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "garbage-collect failed:\n{text}");
        self.restart();
        text
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- registry {} log (last 30 lines):\n{}",
                self.addr(),
                self.log_tail(30)
            );
        }
    }
}

/// A CA (`ca/ca.crt`) and a server certificate for IP 127.0.0.1 it signed (`server.crt`,
/// `server.key`), made with the openssl CLI. rustls refuses a CA certificate as a server's,
/// so the two are distinct.
fn make_certificates(dir: &Path) {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca_key, ca_crt) = (path("ca.key"), path("ca/ca.crt"));
    let (key, csr, ext, crt) = (
        path("server.key"),
        path("server.csr"),
        path("server.ext"),
        path("server.crt"),
    );
    fs::create_dir(dir.join("ca")).unwrap();
    let ca_subject = "/CN=puzzlefs test CA";
    openssl(
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", ca_subject,
            "-keyout", &ca_key, "-out", &ca_crt,
        ],
        &[],
        b"",
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
        &[],
        b"",
    );
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let serial = path("ca.srl");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-CAserial",
            &serial,
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
        &[],
        b"",
    );
}

fn write_config(dir: &Path, port: u16, auth: &Auth, tls: bool) {
    let storage = dir.join("storage");
    let auth_yaml = match auth {
        Auth::None => String::new(),
        Auth::Basic(users) => {
            let mut htpasswd = String::new();
            for (user, password) in users {
                let hash = bcrypt::hash(password, 4).unwrap();
                htpasswd.push_str(&format!("{user}:{hash}\n"));
            }
            let path = dir.join("htpasswd");
            fs::write(&path, htpasswd).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: puzzlefs-test\n    path: {}\n",
                path.display()
            )
        }
        Auth::Token(token) => {
            let path = dir.join("token-cert.pem");
            fs::write(&path, &token.root_cert_pem).unwrap();
            format!(
                "auth:\n  token:\n    realm: \"{}\"\n    service: \"{}\"\n    issuer: \"{}\"\n    rootcertbundle: {}\n",
                token.realm,
                token.service,
                token.issuer,
                path.display()
            )
        }
    };
    let tls_yaml = if tls {
        format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        )
    } else {
        String::new()
    };
    // A fixed http.secret keeps upload sessions valid across a restart.
    let config = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: puzzlefs-test-secret\n{tls_yaml}\
         {auth_yaml}",
        storage.display()
    );
    fs::write(dir.join("config.yml"), config).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// The status of a plain `GET path` on `addr`, or None if nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
