//! A swarm of WebSocket clients that measures how late each event reaches each client.
//!
//! Clients are spread over several loopback source addresses (bound before connect) so
//! 10,000 connections per run do not exhaust one address's ephemeral ports. Each client does
//! the RFC 6455 handshake, sends one (masked) subscribe message, answers pings, and for every
//! text frame that carries `"at":"YYYY-MM-DDTHH:MM:SS.mmmZ"` records `arrival - at` in an HDR
//! histogram. Both ringwatch's events and the Node peer's messages carry `at` the same way.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

/// Swarm settings.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Server address.
    pub server: SocketAddr,
    /// Request path (e.g. `/ws`).
    pub path: String,
    /// Number of clients.
    pub clients: usize,
    /// First source address (127.x.y.z).
    pub source: Ipv4Addr,
    /// Source addresses to spread over (source, source+1, ...).
    pub sources: usize,
    /// Text sent once after the handshake (empty = nothing).
    pub subscribe: String,
    /// Threads (each its own runtime); clients are split evenly.
    pub threads: usize,
    /// Pin thread t to cpus[t % len].
    pub cpus: Vec<usize>,
    /// Seconds between "everyone connected" and the start of measurement.
    pub warmup: f64,
    /// Measurement window, seconds.
    pub duration: f64,
    /// Use io_uring (true) or epoll (false) in the client threads.
    pub uring: bool,
}

/// What the swarm measured.
pub struct SwarmReport {
    /// Clients that completed the handshake.
    pub connected: u64,
    /// Connect or handshake failures.
    pub failed: u64,
    /// Events received inside the window.
    pub events: u64,
    /// Window length, seconds.
    pub window: f64,
    /// Latency (us) histogram.
    pub latency: Histogram<u64>,
    /// Seconds taken to connect every client.
    pub connect_seconds: f64,
}

impl SwarmReport {
    /// One line of JSON.
    pub fn to_json(&self) -> String {
        let q = |p: f64| {
            if self.latency.is_empty() {
                0.0
            } else {
                self.latency.value_at_quantile(p) as f64 / 1000.0
            }
        };
        format!(
            "{{\"connected\":{},\"failed\":{},\"connect_seconds\":{:.2},\"window_seconds\":{:.2},\"events\":{},\"events_per_second\":{:.0},\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3},\"mean\":{:.3}}}}}",
            self.connected,
            self.failed,
            self.connect_seconds,
            self.window,
            self.events,
            self.events as f64 / self.window.max(1e-9),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            if self.latency.is_empty() { 0.0 } else { self.latency.max() as f64 / 1000.0 },
            if self.latency.is_empty() { 0.0 } else { self.latency.mean() / 1000.0 },
        )
    }
}

struct Shared {
    connected: AtomicU64,
    failed: AtomicU64,
    /// Measurement window in unix microseconds (0 = not started).
    from_us: AtomicU64,
    to_us: AtomicU64,
    stop: AtomicBool,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs the swarm to completion.
pub fn run(cfg: SwarmConfig) -> Result<SwarmReport, String> {
    let shared = Arc::new(Shared {
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        from_us: AtomicU64::new(0),
        to_us: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let threads = cfg.threads.max(1);
    let mut handles = Vec::new();
    for t in 0..threads {
        let ids: Vec<usize> = (0..cfg.clients).filter(|i| i % threads == t).collect();
        let cfg = cfg.clone();
        let shared = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("swarm-{t}"))
                .spawn(move || thread_main(t, ids, cfg, shared))
                .map_err(|e| format!("spawn: {e}"))?,
        );
    }
    // Wait until every client connected or failed (bounded).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if done >= cfg.clients as u64 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "swarm: {} connected, {} failed in {:.1}s; warmup {}s, measuring {}s",
        shared.connected.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed),
        connect_seconds,
        cfg.warmup,
        cfg.duration
    );
    let from = unix_us() + (cfg.warmup * 1e6) as u64;
    let to = from + (cfg.duration * 1e6) as u64;
    shared.from_us.store(from, Ordering::Relaxed);
    shared.to_us.store(to, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(cfg.warmup + cfg.duration + 0.5));
    shared.stop.store(true, Ordering::Relaxed);
    let mut latency = new_hist();
    let mut events = 0;
    for h in handles {
        let (hist, n) = h
            .join()
            .map_err(|_| "swarm thread panicked".to_string())??;
        latency.add(&hist).map_err(|e| format!("merge: {e}"))?;
        events += n;
    }
    Ok(SwarmReport {
        connected: shared.connected.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        events,
        window: cfg.duration,
        latency,
        connect_seconds,
    })
}

fn new_hist() -> Histogram<u64> {
    // 1 us .. 60 s, 3 significant digits: constant bounds hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

type ThreadResult = Result<(Histogram<u64>, u64), String>;

fn thread_main(t: usize, ids: Vec<usize>, cfg: SwarmConfig, shared: Arc<Shared>) -> ThreadResult {
    if !cfg.cpus.is_empty() {
        let _ = monoio::utils::bind_to_cpu_set([cfg.cpus[t % cfg.cpus.len()]]);
    }
    let uring = cfg.uring;
    let fut = thread_run(ids, cfg, shared);
    match RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build()
    {
        Ok(mut rt) if uring => rt.block_on(fut),
        _ => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map_err(|e| format!("runtime: {e}"))?
            .block_on(fut),
    }
}

struct Tally {
    hist: Histogram<u64>,
    events: u64,
}

async fn thread_run(ids: Vec<usize>, cfg: SwarmConfig, shared: Arc<Shared>) -> ThreadResult {
    let tally = Rc::new(RefCell::new(Tally {
        hist: new_hist(),
        events: 0,
    }));
    let request = Rc::new(format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        cfg.path, cfg.server
    ));
    let sub = Rc::new(mask_text(cfg.subscribe.as_bytes()));
    for (n, i) in ids.iter().enumerate() {
        let octets = u32::from(cfg.source) + (*i % cfg.sources.max(1)) as u32;
        let src = Ipv4Addr::from(octets);
        match connect_from(src, cfg.server, &request) {
            Ok((std, leftover)) => match TcpStream::from_std(std) {
                Ok(s) => {
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                    monoio::spawn(client(
                        s,
                        leftover,
                        sub.clone(),
                        tally.clone(),
                        shared.clone(),
                    ));
                }
                Err(_) => {
                    shared.failed.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(e) => {
                if shared.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("swarm: client {i} from {src}: {e}");
                }
            }
        }
        // Let already-connected clients read now and then while the rest connect.
        if n % 64 == 63 {
            monoio::time::sleep(Duration::from_micros(100)).await;
        }
    }
    while !shared.stop.load(Ordering::Relaxed) {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = tally.borrow();
    Ok((t.hist.clone(), t.events))
}

/// Blocking bind + connect + handshake (quick on loopback); returns bytes read past the 101.
fn connect_from(
    src: Ipv4Addr,
    server: SocketAddr,
    request: &str,
) -> Result<(std::net::TcpStream, Vec<u8>), String> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
    s.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())
        .map_err(|e| format!("bind {src}: {e}"))?;
    s.connect_timeout(&server.into(), Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let mut std: std::net::TcpStream = s.into();
    std.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    std.write_all(request.as_bytes())
        .map_err(|e| format!("handshake write: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = match std.read(&mut chunk) {
            Ok(n) => n,
            // The runtime's timer signals can interrupt this blocking read: just retry.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("handshake read: {e}")),
        };
        if n == 0 {
            return Err("closed during handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "handshake refused: {}",
            String::from_utf8_lossy(&buf[..end.min(80)])
        ));
    }
    std.set_read_timeout(None).map_err(|e| e.to_string())?;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((std, buf[end..].to_vec()))
}

/// A masked client text frame.
fn mask_text(payload: &[u8]) -> Vec<u8> {
    mask_frame(0x81, payload)
}

fn mask_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![b0];
    if payload.len() <= 125 {
        v.push(0x80 | payload.len() as u8);
    } else {
        v.push(0x80 | 126);
        v.extend_from_slice(&(payload.len().min(0xFFFF) as u16).to_be_bytes());
    }
    let key = [0x3A, 0x5C, 0x7E, 0x91];
    v.extend_from_slice(&key);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    v
}

async fn client(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    sub: Rc<Vec<u8>>,
    tally: Rc<RefCell<Tally>>,
    shared: Arc<Shared>,
) {
    if !sub.is_empty() {
        let (r, _) = s.write_all(sub.to_vec()).await;
        if r.is_err() {
            return;
        }
    }
    buf.reserve(4096);
    loop {
        // Parse every complete frame in the buffer.
        let mut off = 0;
        while let Some((opcode, start, end)) = parse_frame(&buf[off..]) {
            let payload = &buf[off + start..off + end];
            match opcode {
                0x1 => record(payload, &tally, &shared),
                0x9 => {
                    let pong = mask_frame(0x8A, payload);
                    let (r, _) = s.write_all(pong).await;
                    if r.is_err() {
                        return;
                    }
                }
                0x8 => return,
                _ => {}
            }
            off += end;
        }
        buf.drain(..off);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (r, b) = s.read(buf.slice_mut(len..cap)).await;
        buf = b.into_inner();
        match r {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// (opcode, payload start, payload end) of the first complete unmasked frame.
fn parse_frame(b: &[u8]) -> Option<(u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, h) = match b[1] & 0x7F {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => {
            let mut x = [0u8; 8];
            x.copy_from_slice(b.get(2..10)?);
            (u64::from_be_bytes(x) as usize, 10)
        }
        n => (n as usize, 2),
    };
    (b.len() >= h + len).then_some((b[0] & 0x0F, h, h + len))
}

fn record(payload: &[u8], tally: &Rc<RefCell<Tally>>, shared: &Shared) {
    let Some(at_ms) = find_at(payload) else {
        return;
    };
    let now = unix_us();
    let from = shared.from_us.load(Ordering::Relaxed);
    if from == 0 || now < from || now > shared.to_us.load(Ordering::Relaxed) {
        return;
    }
    let lat = now.saturating_sub(at_ms * 1000).max(1);
    let mut t = tally.borrow_mut();
    t.events += 1;
    t.hist.saturating_record(lat);
}

/// The `"at"` timestamp of a message, in unix milliseconds.
pub fn find_at(p: &[u8]) -> Option<u64> {
    let key = b"\"at\":\"";
    let i = p.windows(key.len()).position(|w| w == key)? + key.len();
    parse_rfc3339_ms(p.get(i..i + 24)?)
}

/// Parses `YYYY-MM-DDTHH:MM:SS.mmmZ` to unix milliseconds.
pub fn parse_rfc3339_ms(s: &[u8]) -> Option<u64> {
    let n = |a: usize, b: usize| -> Option<i64> {
        std::str::from_utf8(s.get(a..b)?).ok()?.parse().ok()
    };
    if s.get(23) != Some(&b'Z') {
        return None;
    }
    let (y, mo, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (h, mi, se, ms) = (n(11, 13)?, n(14, 16)?, n(17, 19)?, n(20, 23)?);
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_parses_at() {
        let m = br#"{"type":"transition","seq":1,"at":"1970-01-01T00:00:01.500Z","x":1}"#;
        assert_eq!(find_at(m), Some(1500));
        let m = br#"{"at":"2024-02-29T12:00:00.000Z"}"#;
        assert_eq!(find_at(m), Some(1_709_208_000_000));
        assert_eq!(find_at(b"{}"), None);
    }

    #[test]
    fn frames_parse_all_lengths() {
        assert_eq!(parse_frame(&[0x81, 2, b'a', b'b']), Some((1, 2, 4)));
        assert_eq!(parse_frame(&[0x81, 2, b'a']), None);
        let mut v = vec![0x81, 126, 0, 200];
        v.extend(std::iter::repeat_n(0u8, 200));
        assert_eq!(parse_frame(&v), Some((1, 4, 204)));
    }
}
