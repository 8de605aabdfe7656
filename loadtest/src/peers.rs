//! Peers measured inside a scenario run, so its report can print ringwatch / peer ratios:
//! `wrk` and Debian's `prometheus-blackbox-exporter` for `probe`, a Node `ws` broadcast
//! server (`scripts/ws-peer/server.js`) for `fanout`.
//!
//! Every peer is optional: a missing binary or module becomes a note in the report that names
//! the install script, never a failed run. Peers bind 127.0.0.1 only, every child is killed
//! when its measurement ends however it ends, and every wait is bounded.
//!
//! CPU figures come from `/proc/PID/stat` (`procstat`) for peers that keep running (the
//! exporter, node) and from `wait4`'s resource usage for `wrk`, which exits at the end of its
//! run: its `/proc` entry is gone once reaped, and `wait4` reports exactly its user + system
//! time (all threads), the same quantity.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procstat;
use crate::report::Metric;

/// A peer a scenario can measure alongside ringwatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// `wrk -t1 -c64` against the fleet's `/ok` (probe scenario): requests per wrk CPU-second.
    Wrk,
    /// `prometheus-blackbox-exporter` probing the fleet's `/ok` (probe scenario): probes per
    /// exporter CPU-second.
    Blackbox,
    /// Node `ws` broadcast server with the same swarm (fanout scenario).
    Ws,
}

impl Peer {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Wrk => "wrk",
            Peer::Blackbox => "blackbox_exporter",
            Peer::Ws => "node ws",
        }
    }
}

/// Install hint for the probe peers.
pub const INSTALL_PEERS: &str = "scripts/install-peers.sh";
/// Install hint for the WebSocket peer.
pub const INSTALL_WS_PEER: &str = "scripts/install-ws-peer.sh";

/// Why a peer was not measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// A binary or module is not installed; the message names the install script.
    Missing(String),
    /// It ran but the measurement failed.
    Failed(String),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Missing(m) => write!(f, "not measured, {m}"),
            PeerError::Failed(m) => write!(f, "measurement failed: {m}"),
        }
    }
}

/// The note a report carries for a peer that was not measured.
pub fn note(peer: Peer, e: &PeerError) -> String {
    format!("{}: {e}", peer.name())
}

/// Finds an executable in `PATH` (what a shell would run).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn require(bin: &str, script: &str) -> Result<PathBuf, PeerError> {
    which(bin).ok_or_else(|| {
        PeerError::Missing(format!("`{bin}` is not in PATH: install it with {script}"))
    })
}

/// Kills and reaps a peer process when dropped.
struct Guard(Option<Child>);

impl Guard {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    fn exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cpu_s(pid: u32) -> Result<f64, PeerError> {
    procstat::sample(pid)
        .map(|s| s.cpu_s())
        .map_err(|e| PeerError::Failed(format!("/proc/{pid}: {e}")))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

// ------------------------------------------------------------------------------------ wrk

/// What one `wrk` run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkFigures {
    /// Requests completed.
    pub requests: f64,
    /// Requests per second (wrk's own figure).
    pub per_s: f64,
    /// wrk's CPU-seconds (user + system, all threads).
    pub cpu_s: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: f64,
    /// Latency p50 and p99, ms (NaN when absent).
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
}

impl WrkFigures {
    /// Requests per wrk CPU-second.
    pub fn per_cpu_s(&self) -> f64 {
        self.requests / self.cpu_s
    }
}

/// Parses wrk's text output (`--latency`).
pub fn parse_wrk(out: &str) -> Option<WrkFigures> {
    let mut f = WrkFigures {
        requests: f64::NAN,
        per_s: f64::NAN,
        cpu_s: f64::NAN,
        errors: 0.0,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
    };
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.contains(" requests in ") {
            f.requests = words.first()?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            f.per_s = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            f.errors += v.trim().parse::<f64>().unwrap_or(0.0);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            f.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<f64>().ok())
                .sum::<f64>();
        } else if words.len() == 2 && words[0] == "50%" {
            f.p50_ms = wrk_ms(words[1]).unwrap_or(f64::NAN);
        } else if words.len() == 2 && words[0] == "99%" {
            f.p99_ms = wrk_ms(words[1]).unwrap_or(f64::NAN);
        }
    }
    f.requests.is_finite().then_some(f)
}

/// `510.00us`, `2.40ms`, `1.02s`, `1.5m` -> ms.
fn wrk_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Runs `wrk -t1 -cCONNS -dDURATIONs --latency http://ADDR/ok` and measures its CPU.
pub fn run_wrk(addr: SocketAddr, conns: u32, duration_s: u64) -> Result<WrkFigures, PeerError> {
    let wrk = require("wrk", INSTALL_PEERS)?;
    let url = format!("http://{addr}/ok");
    let mut child = Command::new(wrk)
        .args(["-t1", &format!("-c{conns}"), &format!("-d{duration_s}s")])
        .arg("--latency")
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PeerError::Failed(format!("starting wrk: {e}")))?;
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + Duration::from_secs(duration_s + 30);
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; status and ru are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PeerError::Failed(format!(
                "wrk did not finish within {} s",
                duration_s + 30
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The child is reaped: read what it wrote (a few hundred bytes, it fits the pipe).
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let mut f = parse_wrk(&out).ok_or_else(|| {
        PeerError::Failed(format!(
            "could not read wrk's output: {}",
            format!("{out} {err}").trim()
        ))
    })?;
    f.cpu_s = cpu;
    Ok(f)
}

// ------------------------------------------------------------------------------ blackbox

/// What the blackbox exporter did.
#[derive(Debug, Clone, PartialEq)]
pub struct BlackboxFigures {
    /// Successful probes (`probe_success 1`).
    pub probes: f64,
    /// Failed probes or requests.
    pub failed: f64,
    /// Wall time of the drive, seconds.
    pub seconds: f64,
    /// The exporter's CPU-seconds over the drive.
    pub cpu_s: f64,
    /// The exporter's RSS at the end, KiB.
    pub rss_kib: f64,
}

impl BlackboxFigures {
    /// Probes per exporter CPU-second.
    pub fn per_cpu_s(&self) -> f64 {
        self.probes / self.cpu_s
    }
}

const BLACKBOX_CONFIG: &str = "modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
";

/// Starts the exporter on `port` (config and log in `dir`), checks one probe of `target`
/// (`http://127.0.0.1:P/ok`), then drives `/probe` with `conns` keep-alive connections for
/// `duration_s` seconds, as Prometheus would (one request = one probe).
pub fn run_blackbox(
    dir: &Path,
    port: u16,
    target: &str,
    conns: usize,
    duration_s: u64,
) -> Result<BlackboxFigures, PeerError> {
    let bin = require("prometheus-blackbox-exporter", INSTALL_PEERS)?;
    let failed = |e: String| PeerError::Failed(e);
    let cfg = dir.join("blackbox.yml");
    std::fs::write(&cfg, BLACKBOX_CONFIG).map_err(|e| failed(format!("{}: {e}", cfg.display())))?;
    let log_path = dir.join("blackbox.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| failed(format!("{}: {e}", log_path.display())))?;
    let log2 = log.try_clone().map_err(|e| failed(format!("log: {e}")))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut g = Guard(Some(
        Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| failed(format!("starting the exporter: {e}")))?,
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if g.exited() {
            return Err(failed(format!("exporter exited: {}", tail(&log_path))));
        }
        if matches!(
            crate::scenario::http_get(addr, "/-/healthy", Duration::from_secs(1)),
            Ok((200, _))
        ) {
            break;
        }
        if Instant::now() > deadline {
            return Err(failed("exporter not healthy within 15 s".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let path = format!("/probe?target={target}&module=http_2xx");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringwatch-loadtest\r\n\r\n");
    // A failed probe still answers 200 (with probe_success 0): check one by hand first. The
    // exporter answers chunked, hence its own reader rather than `scenario::http_get`.
    let one = (|| -> io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        read_response(&mut s, &mut Vec::new())
    })();
    match one {
        Ok(body) if body.windows(16).any(|w| w == b"\nprobe_success 1") => {}
        Ok(body) => {
            let text = String::from_utf8_lossy(&body);
            return Err(failed(format!(
                "a probe of {target} failed: {}",
                text.lines()
                    .find(|l| l.starts_with("probe_success"))
                    .unwrap_or("no probe_success line")
            )));
        }
        Err(e) => return Err(failed(format!("GET {path}: {e}"))),
    }
    let c0 = cpu_s(g.pid())?;
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(duration_s);
    let handles: Vec<_> = (0..conns.max(1))
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || drive(addr, request.as_bytes(), until))
        })
        .collect();
    let (mut ok, mut bad) = (0u64, 0u64);
    let mut first_error = None;
    for h in handles {
        let (o, b, e) = h
            .join()
            .map_err(|_| failed("driver thread panicked".into()))?;
        ok += o;
        bad += b;
        first_error = first_error.or(e);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let c1 = cpu_s(g.pid())?;
    let rss_kib = procstat::sample(g.pid()).map_or(f64::NAN, |s| s.rss_kib as f64);
    if ok == 0 {
        return Err(failed(format!(
            "no successful probe through the exporter ({bad} failed{})",
            first_error.map_or(String::new(), |e| format!(", first: {e}"))
        )));
    }
    Ok(BlackboxFigures {
        probes: ok as f64,
        failed: bad as f64,
        seconds,
        cpu_s: c1 - c0,
        rss_kib,
    })
}

/// Most consecutive failed requests one driver connection tolerates before giving up.
const MAX_DRIVE_ERRORS: u32 = 50;

/// One keep-alive connection sending `request` until `until`: (successful probes, failed,
/// first error).
fn drive(addr: SocketAddr, request: &[u8], until: Instant) -> (u64, u64, Option<String>) {
    let (mut ok, mut bad, mut errors_in_row) = (0u64, 0u64, 0u32);
    let mut first_error = None;
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(8192);
    while Instant::now() < until && errors_in_row < MAX_DRIVE_ERRORS {
        let res = (|| -> io::Result<bool> {
            if conn.is_none() {
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.set_nodelay(true)?;
                conn = Some(s);
                buf.clear();
            }
            let s = conn
                .as_mut()
                .ok_or_else(|| io::Error::other("no connection"))?;
            s.write_all(request)?;
            let body = read_response(s, &mut buf)?;
            Ok(body.windows(16).any(|w| w == b"\nprobe_success 1"))
        })();
        match res {
            Ok(true) => {
                ok += 1;
                errors_in_row = 0;
            }
            Ok(false) => {
                bad += 1;
                errors_in_row += 1;
            }
            Err(e) => {
                bad += 1;
                errors_in_row += 1;
                first_error.get_or_insert_with(|| e.to_string());
                conn = None;
            }
        }
    }
    (ok, bad, first_error)
}

/// Reads one HTTP/1.1 response (Content-Length or chunked) from `s`; `buf` carries bytes
/// between responses. Returns the body (decoded) if the status is 200, an error otherwise.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut chunk = [0u8; 8192];
    let mut fill = |s: &mut TcpStream, buf: &mut Vec<u8>| -> io::Result<()> {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Err(bad("response over 1 MiB"));
        }
        Ok(())
    };
    let (head_len, status, len, chunked) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp
            .parse(buf)
            .map_err(|e| bad(&format!("bad response: {e}")))?
        {
            httparse::Status::Complete(n) => {
                let mut len = None;
                let mut chunked = false;
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = h.value.eq_ignore_ascii_case(b"chunked");
                    }
                }
                break (n, resp.code.unwrap_or(0), len, chunked);
            }
            httparse::Status::Partial => fill(s, buf)?,
        }
    };
    buf.drain(..head_len);
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                fill(s, buf)?;
                continue;
            };
            let size_text = std::str::from_utf8(&buf[..eol]).map_err(|_| bad("chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            // size line, data, CRLF (for the last chunk: the empty trailer's CRLF).
            let need = eol + 2 + size + 2;
            while buf.len() < need {
                fill(s, buf)?;
            }
            body.extend_from_slice(&buf[eol + 2..eol + 2 + size]);
            buf.drain(..need);
            if size == 0 {
                break body;
            }
        }
    } else {
        let len = len.ok_or_else(|| bad("response without length"))?;
        while buf.len() < len {
            fill(s, buf)?;
        }
        buf.drain(..len).collect()
    };
    if status != 200 {
        return Err(bad(&format!("status {status}")));
    }
    Ok(body)
}

// ------------------------------------------------------------------------------------ ws

/// The repository root holding `scripts/ws-peer/server.js`: the working directory when run
/// from the checkout (as the docs do), else the checkout this binary was built from.
fn repo_root() -> Option<PathBuf> {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    [std::env::current_dir().ok(), Some(built)]
        .into_iter()
        .flatten()
        .find(|d| d.join("scripts/ws-peer/server.js").is_file())
}

/// A running Node `ws` broadcast server; killed when dropped.
pub struct WsPeer {
    g: Guard,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl WsPeer {
    /// Its pid (for `/proc` CPU-seconds).
    pub fn pid(&self) -> u32 {
        self.g.pid()
    }
}

/// Starts `node scripts/ws-peer/server.js PORT RATE START_AFTER` (log in `log`), with `ws`
/// from `target/ws-peer/node_modules`, and waits (bounded) until it accepts connections.
pub fn start_ws_peer(
    port: u16,
    rate: u32,
    start_after: usize,
    log: &Path,
) -> Result<WsPeer, PeerError> {
    let node = require("node", INSTALL_WS_PEER)?;
    let root = repo_root().ok_or_else(|| {
        PeerError::Missing(
            "scripts/ws-peer/server.js not found (run from the repository root)".into(),
        )
    })?;
    let modules = root.join("target/ws-peer/node_modules");
    if !modules.join("ws/package.json").is_file() {
        return Err(PeerError::Missing(format!(
            "the `ws` module is not in {}: install it with {INSTALL_WS_PEER}",
            modules.display()
        )));
    }
    let failed = |e: String| PeerError::Failed(e);
    let out = std::fs::File::create(log).map_err(|e| failed(format!("{}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| failed(format!("log: {e}")))?;
    let mut g = Guard(Some(
        Command::new(node)
            .arg(root.join("scripts/ws-peer/server.js"))
            .arg(port.to_string())
            .arg(rate.to_string())
            .arg(start_after.to_string())
            .env("NODE_PATH", &modules)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| failed(format!("starting node: {e}")))?,
    ));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if g.exited() {
            return Err(failed(format!("node exited: {}", tail(log))));
        }
        // A bare TCP connect that closes at once is harmless to the ws server (no upgrade,
        // no client).
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(WsPeer { g, addr });
        }
        if Instant::now() > deadline {
            return Err(failed("node ws peer not listening within 15 s".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The fan-out figures compared between ringwatch and the ws peer.
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutFigures {
    /// Frames received by the clients per second of the window.
    pub delivered_per_s: f64,
    /// Change (or broadcast) -> receipt latency, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Server CPU-seconds in the window per frame delivered, microseconds.
    pub cpu_us_per_delivery: f64,
}

/// The peers table rows comparing two [`FanoutFigures`].
pub fn fanout_rows(rw: &FanoutFigures, peer: &FanoutFigures) -> Vec<crate::report::PeerRow> {
    let row = |metric: &str, unit: &str, a: f64, b: f64, higher: bool| crate::report::PeerRow {
        peer: Peer::Ws.name().into(),
        metric: metric.into(),
        unit: unit.into(),
        ringwatch: a,
        peer_value: b,
        higher_is_better: higher,
    };
    vec![
        row(
            "delivered frames per second",
            "1/s",
            rw.delivered_per_s,
            peer.delivered_per_s,
            true,
        ),
        row("latency p50", "ms", rw.p50_ms, peer.p50_ms, false),
        row("latency p99", "ms", rw.p99_ms, peer.p99_ms, false),
        row(
            "server CPU per delivery",
            "us",
            rw.cpu_us_per_delivery,
            peer.cpu_us_per_delivery,
            false,
        ),
    ]
}

/// Summary metrics for a peer's figures, prefixed `peer_<name>_`.
pub fn wrk_metrics(f: &WrkFigures) -> Vec<Metric> {
    vec![
        Metric::new("peer_wrk_requests", f.requests, "count"),
        Metric::new("peer_wrk_requests_per_s", f.per_s, "1/s"),
        Metric::new("peer_wrk_cpu_seconds", f.cpu_s, "s"),
        Metric::new("peer_wrk_requests_per_cpu_second", f.per_cpu_s(), "1/s"),
        Metric::new("peer_wrk_errors", f.errors, "count"),
        Metric::new("peer_wrk_latency_p99", f.p99_ms, "ms"),
    ]
}

/// See [`wrk_metrics`].
pub fn blackbox_metrics(f: &BlackboxFigures) -> Vec<Metric> {
    vec![
        Metric::new("peer_blackbox_probes", f.probes, "count"),
        Metric::new("peer_blackbox_failed", f.failed, "count"),
        Metric::new(
            "peer_blackbox_probes_per_s",
            f.probes / f.seconds.max(1e-3),
            "1/s",
        ),
        Metric::new("peer_blackbox_cpu_seconds", f.cpu_s, "s"),
        Metric::new("peer_blackbox_probes_per_cpu_second", f.per_cpu_s(), "1/s"),
        Metric::new("peer_blackbox_rss", f.rss_kib, "KiB"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUT: &str = "Running 10s test @ http://127.0.0.1:20000/ok
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   840.12us  500.00us  20.00ms   90.00%
    Req/Sec    76.00k     2.00k   80.00k    70.00%
  Latency Distribution
     50%  510.00us
     75%  700.00us
     90%    1.10ms
     99%    2.40ms
  759390 requests in 10.00s, 60.83MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 1, read 2, write 0, timeout 4
Requests/sec:  75939.00
Transfer/sec:      6.08MB
";

    #[test]
    fn parses_wrk_output() {
        let f = parse_wrk(WRK_OUT).expect("parses");
        assert_eq!(f.requests, 759_390.0);
        assert_eq!(f.per_s, 75_939.0);
        assert_eq!(f.errors, 10.0);
        assert!((f.p50_ms - 0.51).abs() < 1e-9);
        assert!((f.p99_ms - 2.4).abs() < 1e-9);
        assert!(parse_wrk("wrk: command failed").is_none());
        assert_eq!(wrk_ms("1.5s"), Some(1500.0));
        assert_eq!(wrk_ms("7x"), None);
    }

    #[test]
    fn missing_binaries_are_reported_with_the_install_script() {
        let e = require("ringwatch-no-such-peer-binary", INSTALL_PEERS).expect_err("missing");
        let text = note(Peer::Wrk, &e);
        assert!(matches!(e, PeerError::Missing(_)));
        assert!(text.contains("scripts/install-peers.sh"), "{text}");
        assert!(text.starts_with("wrk: not measured"), "{text}");
        assert!(which("sh").is_some());
    }

    #[test]
    fn reads_chunked_and_sized_responses() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n10\r\n\nprobe_success 1\r\n0\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc\
                  HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
            )
            .expect("write");
        });
        let mut s = TcpStream::connect(addr).expect("connect");
        let mut buf = Vec::new();
        assert_eq!(
            read_response(&mut s, &mut buf).expect("chunked"),
            b"hello\nprobe_success 1"
        );
        assert_eq!(read_response(&mut s, &mut buf).expect("sized"), b"abc");
        assert!(read_response(&mut s, &mut buf).is_err());
        server.join().expect("server");
    }
}
