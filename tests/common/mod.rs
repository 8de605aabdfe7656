//! Shared helpers for integration tests: a scripted HTTP target server, and a real
//! `ringwatch` process started from a generated config file.
#![allow(dead_code)]

pub mod pg;
pub mod redis;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A local HTTP/1.1 keep-alive server with behaviours chosen by path:
/// `/hang` never answers, `/slow` answers 200 after 1.5 s, `/switch` answers with the settable
/// `status`, anything else 200 "ok". It counts requests received and responses completed per
/// path, and accepted connections.
pub struct Target {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub connections: Arc<AtomicU64>,
    served: Arc<Mutex<HashMap<String, u64>>>,
    received: Arc<Mutex<HashMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

impl Target {
    pub fn start() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind target");
        let addr = listener.local_addr().expect("addr");
        let t = Target {
            addr,
            status: Arc::new(AtomicU16::new(200)),
            connections: Arc::new(AtomicU64::new(0)),
            served: Arc::new(Mutex::new(HashMap::new())),
            received: Arc::new(Mutex::new(HashMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (status, conns, served, received, stop) = (
            t.status.clone(),
            t.connections.clone(),
            t.served.clone(),
            t.received.clone(),
            t.stop.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                conns.fetch_add(1, Ordering::Relaxed);
                let (status, served, received) = (status.clone(), served.clone(), received.clone());
                std::thread::spawn(move || serve_conn(stream, status, served, received));
            }
        });
        t
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Responses completed for `path`.
    pub fn served(&self, path: &str) -> u64 {
        *self.served.lock().expect("lock").get(path).unwrap_or(&0)
    }

    /// Requests received (head read) for `path`, answered or not.
    pub fn received(&self, path: &str) -> u64 {
        *self.received.lock().expect("lock").get(path).unwrap_or(&0)
    }

    /// Responses completed for every path starting with `prefix`.
    pub fn served_prefix(&self, prefix: &str) -> u64 {
        self.served
            .lock()
            .expect("lock")
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum()
    }

    /// Completed responses per path.
    pub fn served_map(&self) -> HashMap<String, u64> {
        self.served.lock().expect("lock").clone()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_conn(
    mut stream: TcpStream,
    status: Arc<AtomicU16>,
    served: Arc<Mutex<HashMap<String, u64>>>,
    received: Arc<Mutex<HashMap<String, u64>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .split('?')
            .next()
            .unwrap_or("/")
            .to_string();
        *received
            .lock()
            .expect("lock")
            .entry(path.clone())
            .or_insert(0) += 1;
        if path == "/slow" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        if path == "/hang" {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        let code = if path == "/switch" {
            status.load(Ordering::Relaxed)
        } else {
            200
        };
        let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok");
        if stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
        *served.lock().expect("lock").entry(path).or_insert(0) += 1;
    }
}

/// Picks a free loopback port (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `ringwatch run` process.
pub struct Ringwatch {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The binary under test: this build's, or `RINGWATCH_TEST_BIN` when set (to check that a
/// test fails against an older build).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RINGWATCH_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringwatch").to_string())
    })
}

/// A config with `server`, `storage` and `log` filled in for a test; append `services:`.
pub fn base_config(port: u16, db: &Path, shards: usize, extra_server: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:{port}\n  shards: {shards}\n  pin: false\n  shutdown_grace: 5s\n{extra_server}\
storage:\n  kind: sqlite\n  path: {}\n  flush_interval: 50ms\n\
log:\n  level: info\n  format: text\n",
        db.display()
    )
}

/// The storage backend a test runs against: the same test body runs on both through
/// [`backend_matrix!`].
pub enum Backend {
    /// An SQLite file `rw.db` in the test's directory.
    Sqlite,
    /// A database of its own on the shared PostgreSQL server, dropped after the test.
    Postgres(pg::PgDb),
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite
    }

    pub fn postgres() -> Backend {
        Backend::Postgres(pg::PgDb::create())
    }

    /// The `storage:` section for a test config in `dir` (short flush interval).
    pub fn storage(&self, dir: &Path) -> String {
        match self {
            Backend::Sqlite => format!(
                "storage:\n  kind: sqlite\n  path: {}\n  flush_interval: 50ms\n",
                dir.join("rw.db").display()
            ),
            Backend::Postgres(db) => format!(
                "storage:\n  kind: postgres\n  url: \"{}\"\n  flush_interval: 50ms\n",
                db.url
            ),
        }
    }
}

/// `base_config` with the storage section of `backend`.
pub fn backend_config(
    port: u16,
    backend: &Backend,
    dir: &Path,
    shards: usize,
    extra_server: &str,
) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:{port}\n  shards: {shards}\n  pin: false\n  shutdown_grace: 5s\n{extra_server}\
{}log:\n  level: info\n  format: text\n",
        backend.storage(dir)
    )
}

/// Runs one test body against every storage backend: `backend_matrix! { fn name(b: Backend)
/// { ... } }` makes a module `name` with the tests `sqlite` and `postgres`, each calling the
/// body with its backend (the postgres one in a database of its own, dropped afterwards).
#[macro_export]
macro_rules! backend_matrix {
    ($(#[doc = $doc:literal])* fn $name:ident($backend:ident: Backend) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($backend: Backend) $body

            #[test]
            fn sqlite() {
                body(Backend::sqlite())
            }

            #[test]
            fn postgres() {
                body(Backend::postgres())
            }
        }
    };
}

impl Ringwatch {
    /// Writes `config` into `dir/ringwatch.yaml` and starts the server on `port`, waiting until
    /// `/readyz` says ready.
    pub fn start_in(dir: &Path, port: u16, config: &str) -> Ringwatch {
        let mut rw = Ringwatch::spawn_in(dir, port, config);
        rw.wait_ready();
        rw
    }

    /// Like `start_in`, without waiting for `/readyz` (a node waiting for a server).
    pub fn spawn_in(dir: &Path, port: u16, config: &str) -> Ringwatch {
        let path = dir.join("ringwatch.yaml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringwatch");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().expect("lock").push(line);
            }
        });
        Ringwatch {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
            config: path,
            stderr,
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "ringwatch exited ({st}) during start:\n{}",
                    self.stderr_text()
                );
            }
            if let Ok((200, _)) = http_get(self.addr, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ringwatch not ready; stderr:\n{}", self.stderr_text());
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lock").clone()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).expect("GET")
    }

    /// The value of the first sample whose line starts with `series` (name plus labels).
    pub fn metric(&self, series: &str) -> f64 {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200);
        metric_value(&body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// `terminate`, then the whole stderr, shutdown lines included.
    pub fn terminate_with_log(self) -> (std::process::ExitStatus, String) {
        let lines = self.stderr.clone();
        let status = self.terminate();
        // The reader thread sees EOF right after the exit; give it a moment to store the tail.
        let _ = eventually(Duration::from_secs(2), || {
            lines
                .lock()
                .expect("lock")
                .iter()
                .any(|l| l.contains("store drained"))
        });
        let text = lines.lock().expect("lock").join("\n");
        (status, text)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Ringwatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `series value` lines of a Prometheus text body.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A one-shot HTTP/1.1 GET over a fresh connection.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends raw bytes and reads the whole response (the server must close).
pub fn http_request(addr: SocketAddr, raw: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(raw.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Waits until `f` is true or `timeout` passes; returns whether it became true.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Opens the test's SQLite database read-only.
pub fn db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("open db")
}

/// `SELECT COUNT(*)` with no parameters.
pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}
