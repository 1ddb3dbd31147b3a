//! The stand-in for the mount table and the raw HTTP/1.1 client the tests speak through.
//!
//! [`Recorder`] is a small recording [`Control`] standing in for the mount table (another
//! layer, written separately): it keeps mounts in a map, records every call, and fails,
//! blocks or panics on request for the mount points the tests pick.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use puzzlefs_virtiofsd::api::{
    self, ApiError, BackendInfo, Control, DaemonInfo, MountRequest, ServerConfig,
};
use puzzlefs_virtiofsd::mounts::{ChunkStoreMetrics, MetricsSnapshot, MountMetrics};

// ---------------------------------------------------------------------------------------
// The stand-in mount table.

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Info,
    Mount(String, MountRequest),
    Umount(String),
    Metrics,
}

#[derive(Default)]
struct Gate {
    entered: bool,
    open: bool,
}

#[derive(Default)]
pub struct Recorder {
    calls: Mutex<Vec<Call>>,
    table: Mutex<BTreeMap<String, MountRequest>>,
    gate: Mutex<Gate>,
    gate_cv: Condvar,
}

impl Recorder {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn mount_calls(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(c, Call::Mount(..) | Call::Umount(_)))
            .collect()
    }

    /// Blocks until a mount at `/block` is inside [`Control::mount`].
    pub fn wait_blocked(&self) {
        let mut g = self.gate.lock().unwrap();
        while !g.entered {
            g = self.gate_cv.wait(g).unwrap();
        }
    }

    pub fn release(&self) {
        self.gate.lock().unwrap().open = true;
        self.gate_cv.notify_all();
    }
}

impl Control for Recorder {
    fn info(&self) -> DaemonInfo {
        self.calls.lock().unwrap().push(Call::Info);
        let mut info = DaemonInfo::running();
        info.id = Some("test-daemon".into());
        let table = self.table.lock().unwrap();
        info.backend_collection = Some(
            table
                .iter()
                .map(|(mp, r)| {
                    let b = BackendInfo {
                        fs_type: r.fs_type.clone(),
                        source: r.source.clone(),
                        mountpoint: mp.clone(),
                    };
                    (mp.clone(), b)
                })
                .collect(),
        );
        info
    }

    fn mount(&self, mountpoint: &str, request: MountRequest) -> Result<(), ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Mount(mountpoint.into(), request.clone()));
        let msg = || format!("refused {mountpoint}");
        match mountpoint {
            "/block" => {
                let mut g = self.gate.lock().unwrap();
                g.entered = true;
                self.gate_cv.notify_all();
                while !g.open {
                    g = self.gate_cv.wait(g).unwrap();
                }
            }
            "/panic" => panic!("the table fell over at {mountpoint}"),
            "/err/conflict" => return Err(ApiError::Conflict(msg())),
            "/err/notfound" => return Err(ApiError::NotFound(msg())),
            "/err/internal" => return Err(ApiError::Internal(msg())),
            "/err/unavailable" => return Err(ApiError::Unavailable(msg())),
            "/err/unsupported" => return Err(ApiError::Unsupported(msg())),
            "/err/badrequest" => return Err(ApiError::BadRequest(msg())),
            _ => {}
        }
        if !matches!(request.fs_type.as_str(), "passthrough_fs" | "rafs") {
            return Err(ApiError::BadRequest(format!(
                "unknown fs_type {:?}",
                request.fs_type
            )));
        }
        let mut table = self.table.lock().unwrap();
        if table.contains_key(mountpoint) {
            return Err(ApiError::Conflict(format!(
                "{mountpoint} is already mounted"
            )));
        }
        table.insert(mountpoint.into(), request);
        Ok(())
    }

    fn umount(&self, mountpoint: &str) -> Result<(), ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Umount(mountpoint.into()));
        match self.table.lock().unwrap().remove(mountpoint) {
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound(format!(
                "nothing is mounted at {mountpoint}"
            ))),
        }
    }

    fn metrics(&self) -> Result<MetricsSnapshot, ApiError> {
        self.calls.lock().unwrap().push(Call::Metrics);
        Ok(snapshot())
    }
}

fn mount_metrics(mp: &str, fs_type: &str) -> MountMetrics {
    MountMetrics {
        mountpoint: mp.into(),
        fs_type: fs_type.into(),
        source: "/src".into(),
        slot: 1,
        generation: 0,
        ops: vec![],
        bytes_read: 123,
        bytes_written: 0,
        image: None,
    }
}

pub fn snapshot() -> MetricsSnapshot {
    MetricsSnapshot {
        uptime_seconds: 1.5,
        mounts_total: 1,
        umounts_total: 0,
        mount_failures_total: 0,
        chunk_store: ChunkStoreMetrics {
            capacity_bytes: 1 << 20,
            hits: 3,
            ..Default::default()
        },
        pseudo: mount_metrics("/", "pseudo"),
        mounts: vec![mount_metrics("/containers", "passthrough_fs")],
    }
}

// ---------------------------------------------------------------------------------------
// The server, in its own thread and runtime, as the daemon will run it.

pub struct Server {
    _dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub control: Arc<Recorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub fn start() -> Server {
        Server::with_config(ServerConfig::default())
    }

    pub fn with_config(config: ServerConfig) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nydusd-api.sock");
        // Bound before any runtime exists, as the daemon does before its sandbox.
        let listener = api::bind(&sock).unwrap();
        let control = Arc::new(Recorder::default());
        let c: Arc<dyn Control> = control.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener)?;
                api::serve_with(listener, c, config, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        Server {
            _dir: dir,
            sock,
            control,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).unwrap();
        // Only so that a stuck server fails the test instead of hanging it.
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s
    }

    /// Sends `raw` on a new connection and reads one response.
    pub fn raw(&self, raw: &[u8]) -> Reply {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_reply(&mut s).expect("a response")
    }

    /// A request as Kata's Go client writes it (`net/http`, new connection per call).
    pub fn kata(&self, method: &str, target: &str, body: Option<&str>) -> Reply {
        self.raw(kata_request(method, target, body).as_bytes())
    }

    pub fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.control.release();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn kata_request(method: &str, target: &str, body: Option<&str>) -> String {
    let mut r =
        format!("{method} {target} HTTP/1.1\r\nHost: unix\r\nUser-Agent: Go-http-client/1.1\r\n");
    if let Some(b) = body {
        r += &format!(
            "Content-Length: {}\r\nContent-Type: application/json\r\n",
            b.len()
        );
    }
    r += "Accept-Encoding: gzip\r\n\r\n";
    if let Some(b) = body {
        r += b;
    }
    r
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The error body: exactly `code` and `message`.
    pub fn error(&self) -> (String, String) {
        let v = self.json();
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 2, "{v}");
        (
            o["code"].as_str().unwrap().to_string(),
            o["message"].as_str().unwrap().to_string(),
        )
    }
}

/// One response: status line, headers, and `Content-Length` bytes of body (none without
/// it: hyper sends a length with every body here). `None` if the server closed first.
pub fn read_reply(s: &mut UnixStream) -> Option<Reply> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => return None,
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: HashMap<String, String> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .get("content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// True once the server has closed the connection (reads EOF or a reset).
pub fn closed(s: &mut UnixStream) -> bool {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

pub const RAFS_CONFIG: &str = r#"{"device":{"backend":{"type":"registry","config":{"scheme":"https","host":"reg.example","repo":"library/busybox","auth":"dTpw"}},"cache":{"type":"blobcache","config":{"work_dir":"/var/lib/nydus/cache"}}},"mode":"direct","digest_validate":false,"iostats_files":false,"enable_xattr":true,"fs_prefetch":{"enable":true,"threads_count":10}}"#;

/// The body Go's encoding/json writes for Kata's rafs mount (it escapes `&` `<` `>`).
pub fn rafs_body(source: &str) -> String {
    let req = serde_json::json!({"fs_type": "rafs", "source": source, "config": RAFS_CONFIG});
    serde_json::to_string(&req).unwrap().replace('&', "\\u0026")
}

pub fn still_serves(server: &Server) {
    let r = server.kata("GET", "/api/v1/daemon", None);
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (200, Some("RUNNING"))
    );
}
