//! A swarm of WebSocket clients that measures how late each event reaches each client.
//!
//! Clients are spread over several loopback source addresses (bound before connect) so
//! 10,000 connections per run do not exhaust one address's ephemeral ports. Each client does
//! the RFC 6455 handshake, sends one (masked) subscribe message, answers pings, and for every
//! text frame that carries `"at":"YYYY-MM-DDTHH:MM:SS.mmmZ"` records `arrival - at` in an HDR
//! histogram. Both ringwatch's events and the Node peer's messages carry `at` the same way.
//!
//! With [`SwarmConfig::seqs`] set (the soak scenario), every client also keeps a [`SeqLog`]:
//! which transition seqs it received, how many twice, and a fingerprint of their content, so
//! the caller can check each client against the store afterwards. The log is a bitmap
//! relative to a base seq, grown on demand up to a cap (one bit per transition), so it stays
//! small for thousands of clients.

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
    /// Record every transition's seq per client (soak); `None`: latency only.
    pub seqs: Option<SeqRecording>,
}

/// How clients record transition seqs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRecording {
    /// Seqs up to and including this one are not expected (the subscription's `since`).
    pub base: u64,
    /// Most seqs after `base` a client records (bits); beyond that they are only counted.
    pub cap: u64,
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
    /// Clients whose connection ended (close frame, EOF, error) before the swarm stopped.
    pub disconnected: u64,
    /// Per connected client, in client order: its transition seqs (empty unless
    /// [`SwarmConfig::seqs`] was set).
    pub seq_logs: Vec<SeqLog>,
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
            "{{\"connected\":{},\"failed\":{},\"disconnected\":{},\"connect_seconds\":{:.2},\"window_seconds\":{:.2},\"events\":{},\"events_per_second\":{:.0},\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p999\":{:.3},\"max\":{:.3},\"mean\":{:.3}}}}}",
            self.connected,
            self.failed,
            self.disconnected,
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
    disconnected: AtomicU64,
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

/// Longest wait for every client to connect or fail.
const CONNECT_LIMIT: Duration = Duration::from_secs(120);

/// A connected swarm: clients are reading (and answering pings) on their threads until
/// [`Swarm::finish`]; dropping it stops them too.
pub struct Swarm {
    shared: Arc<Shared>,
    handles: Vec<std::thread::JoinHandle<ThreadResult>>,
    connect_seconds: f64,
    window: f64,
}

impl Swarm {
    /// Starts the client threads and returns once every client connected or failed (at
    /// most [`CONNECT_LIMIT`], or sooner if a thread gave up).
    pub fn start(cfg: SwarmConfig) -> Result<Swarm, String> {
        let mut swarm = Swarm {
            shared: Arc::new(Shared {
                connected: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                disconnected: AtomicU64::new(0),
                from_us: AtomicU64::new(0),
                to_us: AtomicU64::new(0),
                stop: AtomicBool::new(false),
            }),
            handles: Vec::new(),
            connect_seconds: 0.0,
            window: 0.0,
        };
        let started = Instant::now();
        let threads = cfg.threads.max(1);
        for t in 0..threads {
            let ids: Vec<usize> = (0..cfg.clients).filter(|i| i % threads == t).collect();
            let cfg = cfg.clone();
            let shared = swarm.shared.clone();
            // On error `swarm` is dropped, which stops the threads already started.
            swarm.handles.push(
                std::thread::Builder::new()
                    .name(format!("swarm-{t}"))
                    .spawn(move || thread_main(t, ids, cfg, shared))
                    .map_err(|e| format!("spawn: {e}"))?,
            );
        }
        let deadline = Instant::now() + CONNECT_LIMIT;
        loop {
            let done = swarm.connected() + swarm.failed();
            // A thread that returned early (runtime setup failed) will never connect its
            // share: stop waiting for it.
            if done >= cfg.clients as u64
                || Instant::now() > deadline
                || swarm.handles.iter().any(|h| h.is_finished())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        swarm.connect_seconds = started.elapsed().as_secs_f64();
        Ok(swarm)
    }

    /// Clients that completed the handshake.
    pub fn connected(&self) -> u64 {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Clients that could not connect or complete the handshake.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Clients whose connection ended before the swarm stopped.
    pub fn disconnected(&self) -> u64 {
        self.shared.disconnected.load(Ordering::Relaxed)
    }

    /// Seconds [`Swarm::start`] took.
    pub fn connect_seconds(&self) -> f64 {
        self.connect_seconds
    }

    /// Opens the latency window: events arriving from `warmup` seconds from now, for
    /// `duration` seconds, are counted and their latency recorded. Returns when it opens and
    /// closes.
    pub fn open_window(&mut self, warmup: f64, duration: f64) -> (Instant, Instant) {
        let (warmup, duration) = (warmup.max(0.0), duration.max(0.0));
        let now = Instant::now();
        let from = unix_us() + (warmup * 1e6) as u64;
        let to = from + (duration * 1e6) as u64;
        self.shared.from_us.store(from, Ordering::Relaxed);
        self.shared.to_us.store(to, Ordering::Relaxed);
        self.window = duration;
        let open = now + Duration::from_secs_f64(warmup);
        (open, open + Duration::from_secs_f64(duration))
    }

    /// Stops every client and collects what they measured.
    pub fn finish(mut self) -> Result<SwarmReport, String> {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut latency = new_hist();
        let mut events = 0;
        let mut logs = Vec::new();
        for h in std::mem::take(&mut self.handles) {
            let out = h
                .join()
                .map_err(|_| "swarm thread panicked".to_string())??;
            latency.add(&out.hist).map_err(|e| format!("merge: {e}"))?;
            events += out.events;
            logs.extend(out.logs);
        }
        logs.sort_unstable_by_key(|(i, _)| *i);
        Ok(SwarmReport {
            connected: self.connected(),
            failed: self.failed(),
            events,
            window: self.window,
            latency,
            connect_seconds: self.connect_seconds,
            disconnected: self.disconnected(),
            seq_logs: logs.into_iter().map(|(_, l)| l).collect(),
        })
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        // Threads end within one 50 ms poll once this is set; no client outlives the swarm.
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs the swarm to completion: connect, warm up, measure, stop.
pub fn run(cfg: SwarmConfig) -> Result<SwarmReport, String> {
    let (warmup, duration) = (cfg.warmup, cfg.duration);
    let mut swarm = Swarm::start(cfg)?;
    eprintln!(
        "swarm: {} connected, {} failed in {:.1}s; warmup {}s, measuring {}s",
        swarm.connected(),
        swarm.failed(),
        swarm.connect_seconds(),
        warmup,
        duration
    );
    let (_, end) = swarm.open_window(warmup, duration);
    std::thread::sleep(
        (end + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    );
    swarm.finish()
}

fn new_hist() -> Histogram<u64> {
    // 1 us .. 60 s, 3 significant digits: constant bounds hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// What one swarm thread measured.
struct ThreadOut {
    hist: Histogram<u64>,
    events: u64,
    /// (client index, its log) for the thread's connected clients when recording seqs.
    logs: Vec<(usize, SeqLog)>,
}

type ThreadResult = Result<ThreadOut, String>;

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
    let mut logs: Vec<(usize, Rc<RefCell<SeqLog>>)> = Vec::new();
    for (n, i) in ids.iter().enumerate() {
        let octets = u32::from(cfg.source) + (*i % cfg.sources.max(1)) as u32;
        let src = Ipv4Addr::from(octets);
        match connect_from(src, cfg.server, &request) {
            Ok((std, leftover)) => match TcpStream::from_std(std) {
                Ok(s) => {
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                    let log = cfg.seqs.map(|r| {
                        let l = Rc::new(RefCell::new(SeqLog::new(r.base, r.cap)));
                        logs.push((*i, l.clone()));
                        l
                    });
                    monoio::spawn(client(
                        s,
                        leftover,
                        sub.clone(),
                        tally.clone(),
                        shared.clone(),
                        log,
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
    Ok(ThreadOut {
        hist: t.hist.clone(),
        events: t.events,
        // The client tasks still hold their handles (they are never resumed again): take
        // the contents rather than unwrapping the Rc.
        logs: logs
            .into_iter()
            .map(|(i, l)| (i, std::mem::take(&mut *l.borrow_mut())))
            .collect(),
    })
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
    s: TcpStream,
    buf: Vec<u8>,
    sub: Rc<Vec<u8>>,
    tally: Rc<RefCell<Tally>>,
    shared: Arc<Shared>,
    log: Option<Rc<RefCell<SeqLog>>>,
) {
    session(s, buf, sub, &tally, &shared, log.as_deref()).await;
    // A connection that ends while the swarm still runs means that client stopped
    // receiving: the soak checks need to know why its seqs are missing.
    if !shared.stop.load(Ordering::Relaxed) {
        shared.disconnected.fetch_add(1, Ordering::Relaxed);
    }
}

async fn session(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    sub: Rc<Vec<u8>>,
    tally: &Rc<RefCell<Tally>>,
    shared: &Shared,
    log: Option<&RefCell<SeqLog>>,
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
                0x1 => {
                    record(payload, tally, shared);
                    if let Some(l) = log {
                        l.borrow_mut().observe(payload);
                    }
                }
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

/// The transition seqs one client received (see [`SwarmConfig::seqs`]).
///
/// Seq `base + 1 + k` is bit `k`; the bitmap grows on demand up to `cap` bits, so a client
/// costs one bit per transition of the run, not per seq ever issued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqLog {
    base: u64,
    cap: u64,
    bits: Vec<u64>,
    distinct: u64,
    /// Transition events received, duplicates included.
    pub received: u64,
    /// Transition events whose seq had already been received.
    pub duplicates: u64,
    /// The first few duplicated seqs, for the report.
    pub duplicate_examples: Vec<u64>,
    /// Transitions with seq <= base (the subscription asked for seq > base only).
    pub below_base: u64,
    /// Transitions past the cap: received but not recorded, so the client cannot be checked.
    pub beyond_cap: u64,
    /// Transition events whose seq, service or `to` could not be read.
    pub unparsed: u64,
    /// `{"type":"error"}` messages from the server (e.g. `events_lost`, `replay_failed`).
    pub server_errors: u64,
    /// The first such message, for the report.
    pub first_error: Option<String>,
    /// Wrapping sum of [`fingerprint`] over the distinct seqs recorded: compared with the
    /// same sum over the store's rows, it shows whether each seq carried the right service
    /// and status without keeping them per client.
    pub fingerprint_sum: u64,
}

/// Examples of duplicated seqs kept per client.
const DUPLICATE_EXAMPLES: usize = 8;

impl SeqLog {
    /// An empty log expecting seqs after `base`, recording at most `cap` of them.
    pub fn new(base: u64, cap: u64) -> Self {
        SeqLog {
            base,
            cap,
            ..SeqLog::default()
        }
    }

    /// The seq after which transitions are expected.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Records one transition with its content fingerprint.
    pub fn record(&mut self, seq: u64, fingerprint: u64) {
        self.received += 1;
        if seq <= self.base {
            self.below_base += 1;
            return;
        }
        let k = seq - self.base - 1;
        if k >= self.cap {
            self.beyond_cap += 1;
            return;
        }
        let (word, bit) = ((k / 64) as usize, k % 64);
        if word >= self.bits.len() {
            // `resize` grows the allocation geometrically, so this is amortized O(1).
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            if self.duplicate_examples.len() < DUPLICATE_EXAMPLES {
                self.duplicate_examples.push(seq);
            }
            return;
        }
        self.bits[word] |= 1 << bit;
        self.distinct += 1;
        self.fingerprint_sum = self.fingerprint_sum.wrapping_add(fingerprint);
    }

    /// Records a text message if it is a transition (or a server error); other messages
    /// (hello, subscribed, snapshot) are ignored.
    pub fn observe(&mut self, payload: &[u8]) {
        if payload.starts_with(br#"{"type":"error""#) {
            self.server_errors += 1;
            if self.first_error.is_none() {
                self.first_error =
                    Some(String::from_utf8_lossy(&payload[..payload.len().min(200)]).into_owned());
            }
            return;
        }
        if !payload.starts_with(TRANSITION_PREFIX) {
            return;
        }
        match transition_fields(payload) {
            Some((seq, service, to)) => self.record(seq, fingerprint(seq, service, to)),
            None => {
                self.received += 1;
                self.unparsed += 1;
            }
        }
    }

    /// Whether `seq` was received.
    pub fn contains(&self, seq: u64) -> bool {
        if seq <= self.base || seq - self.base > self.cap {
            return false;
        }
        let k = seq - self.base - 1;
        self.bits
            .get((k / 64) as usize)
            .is_some_and(|w| w & (1 << (k % 64)) != 0)
    }

    /// Distinct seqs recorded.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// The recorded seqs, ascending.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        let base = self.base;
        self.bits.iter().enumerate().flat_map(move |(w, &word)| {
            (0..64u64)
                .filter(move |b| word & (1 << b) != 0)
                .map(move |b| base + 1 + w as u64 * 64 + b)
        })
    }
}

/// How a ringwatch transition event starts (`serde` writes `type` first).
const TRANSITION_PREFIX: &[u8] = br#"{"type":"transition""#;

/// `(seq, service, to)` of a transition event's JSON, without a JSON parser: the swarm reads
/// up to 100k events a second on one thread. Keys are found by their exact spelling
/// (`"service":"` cannot match `"service_id"`, and a quote inside a string value is escaped,
/// so a key pattern cannot occur inside one).
pub fn transition_fields(p: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let seq_at = find(p, br#""seq":"#)?;
    let digits = p[seq_at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let seq = std::str::from_utf8(&p[seq_at..seq_at + digits])
        .ok()?
        .parse()
        .ok()?;
    let string_at = |key: &[u8]| -> Option<&[u8]> {
        let i = find(p, key)?;
        let len = p[i..].iter().position(|&b| b == b'"')?;
        Some(&p[i..i + len])
    };
    Some((seq, string_at(br#""service":""#)?, string_at(br#""to":""#)?))
}

/// Index just past the first occurrence of `key` in `p`.
fn find(p: &[u8], key: &[u8]) -> Option<usize> {
    p.windows(key.len())
        .position(|w| w == key)
        .map(|i| i + key.len())
}

/// A 64-bit fingerprint of one transition's identity: FNV-1a over seq, service and target
/// status, then a final mix so that sums of fingerprints do not cancel in simple ways.
pub fn fingerprint(seq: u64, service: &[u8], to: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    seq.to_le_bytes().into_iter().for_each(&mut eat);
    service.iter().copied().for_each(&mut eat);
    eat(0xff);
    to.iter().copied().for_each(&mut eat);
    // splitmix64's finalizer.
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

    #[test]
    fn seq_log_counts_duplicates_gaps_and_caps() {
        let mut l = SeqLog::new(100, 130);
        for seq in [101, 102, 102, 164, 165, 230, 231, 100, 5] {
            l.record(seq, seq);
        }
        assert_eq!(l.received, 9);
        assert_eq!(l.duplicates, 1);
        assert_eq!(l.duplicate_examples, [102]);
        assert_eq!(l.below_base, 2);
        assert_eq!(l.beyond_cap, 1, "231 is the 131st seq after 100");
        assert_eq!(l.distinct(), 5);
        assert_eq!(l.seqs().collect::<Vec<_>>(), [101, 102, 164, 165, 230]);
        assert!(l.contains(164) && !l.contains(163) && !l.contains(231) && !l.contains(100));
        assert_eq!(l.fingerprint_sum, 101 + 102 + 164 + 165 + 230);
    }

    #[test]
    fn observes_transition_events_only() {
        let ev = br#"{"type":"transition","seq":42,"service":"svc-000002","service_id":77,"from":"up","to":"down","at":"2026-11-22T16:21:00.456Z","latency_ms":1.0,"status_code":500,"error":"status 500"}"#;
        assert_eq!(
            transition_fields(ev),
            Some((42, &b"svc-000002"[..], &b"down"[..]))
        );
        let mut l = SeqLog::new(40, 1000);
        l.observe(br#"{"type":"hello","version":"0.1.0","seq":41}"#);
        l.observe(br#"{"type":"subscribed","seq":41}"#);
        l.observe(ev);
        l.observe(br#"{"type":"transition","seq":x}"#);
        l.observe(br#"{"type":"error","code":"events_lost","message":"resubscribe"}"#);
        assert_eq!(l.received, 2);
        assert_eq!(l.unparsed, 1);
        assert_eq!(l.distinct(), 1);
        assert_eq!(l.server_errors, 1);
        assert!(l
            .first_error
            .as_deref()
            .is_some_and(|e| e.contains("events_lost")));
        assert_eq!(l.fingerprint_sum, fingerprint(42, b"svc-000002", b"down"));
        assert_ne!(
            fingerprint(42, b"svc-000002", b"down"),
            fingerprint(42, b"svc-000002", b"up")
        );
    }
}
