//! The target fleet: an HTTP/1.1 keep-alive server on many loopback ports that answers by
//! path (see [`crate::script`]), so one process plays every kind of monitored service.
//!
//! Shape: N threads, each a single-threaded monoio runtime (io_uring, falling back to the
//! legacy epoll driver when io_uring cannot be set up). Every thread binds every port with
//! `SO_REUSEPORT`, so the kernel spreads connections over threads and no thread is a hot
//! spot. Each thread caps its open connections; extra connections are accepted and dropped
//! at once (and counted) instead of piling up in the backlog where they would look like
//! slow targets.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::script::{self, Framing, Parsed, Route};

/// Initial read buffer per connection. A probe's request head is a few hundred bytes, so
/// 4 KiB holds a pipeline of them; the buffer doubles only for a larger head, up to
/// [`script::MAX_HEAD_BYTES`]. Small matters: 100k idle keep-alive connections at 32 KiB
/// each would be 3 GiB.
const READ_BUF: usize = 4 * 1024;
/// Initial response buffer; grows (once, then reused) for pipelined bursts.
const WRITE_BUF: usize = 512;
/// Bodies up to this size are copied into the response buffer with their head (one write);
/// larger ones are streamed from a static buffer so a connection never holds more than this.
const INLINE_BODY: usize = 16 * 1024;
/// Static filler for `/bytes/N`: large bodies are written from here in slices, no allocation.
static FILL: [u8; 64 * 1024] = [b'x'; 64 * 1024];
/// How long `/reset` lets the partial response reach the peer before the abortive close,
/// so the client sees "some bytes, then RST" rather than a bare RST.
const RESET_GRACE: Duration = Duration::from_millis(10);

/// Which monoio driver the fleet threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring, or the legacy driver if io_uring setup fails (e.g. low `ulimit -l`).
    Auto,
    /// io_uring only; fail if it cannot be set up.
    Uring,
    /// The legacy (epoll) driver.
    Legacy,
}

/// Fleet settings.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Address to bind; must be in 127.0.0.0/8 (checked by [`crate::ports::parse_loopback`]).
    pub listen: IpAddr,
    /// Ports every thread serves; a single 0 picks one ephemeral port (tests).
    pub ports: Vec<u16>,
    /// Number of server threads (at least 1).
    pub threads: usize,
    /// Open connections allowed per thread; more are accepted, dropped and counted.
    pub max_conns_per_thread: usize,
    /// Driver selection.
    pub driver: DriverChoice,
    /// Pin thread `t` to CPU `cpus[t % cpus.len()]`; empty means no pinning (use `taskset`).
    pub cpus: Vec<usize>,
}

impl FleetConfig {
    /// A one-thread fleet on `127.0.0.1` with the given ports and default limits.
    pub fn local(ports: Vec<u16>) -> Self {
        FleetConfig {
            listen: IpAddr::from([127, 0, 0, 1]),
            ports,
            threads: 1,
            max_conns_per_thread: 50_000,
            driver: DriverChoice::Auto,
            cpus: Vec::new(),
        }
    }
}

/// Counters of one fleet thread.
///
/// Only the owning thread writes them (plain load+store, no read-modify-write), the summary
/// reader only loads; aligned to its own cache lines so threads never share one.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct ThreadStats {
    /// Requests answered (or, for `/hang`, swallowed).
    pub requests: AtomicU64,
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections dropped because the thread was at its connection cap.
    pub rejected: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// `accept()` errors (e.g. EMFILE).
    pub accept_errors: AtomicU64,
}

/// Single-writer increment: cheaper than `fetch_add` and exact because only the owning
/// thread writes.
#[inline]
fn bump(a: &AtomicU64) {
    a.store(a.load(Relaxed).wrapping_add(1), Relaxed);
}

/// Sum of all threads' counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests served.
    pub requests: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections dropped at the cap.
    pub rejected: u64,
    /// Connections open now.
    pub active: u64,
    /// Accept errors.
    pub accept_errors: u64,
}

/// A running fleet. Its threads are detached and run until the process exits, which is
/// how both the CLI (exit on signal) and the tests (exit at the end) use it.
#[derive(Debug)]
pub struct Fleet {
    stats: Vec<Arc<ThreadStats>>,
    ports: Vec<u16>,
    drivers: Vec<&'static str>,
    started: Instant,
}

impl Fleet {
    /// Starts the fleet and returns once every thread has bound every port.
    ///
    /// Threads start one after another: the first one's bound ports (which resolves port 0
    /// to a real port) are what the next ones bind, so all threads share the same ports.
    pub fn start(cfg: FleetConfig) -> io::Result<Fleet> {
        if cfg.threads == 0 || cfg.ports.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fleet needs at least one thread and one port",
            ));
        }
        let mut ports = cfg.ports.clone();
        let mut stats = Vec::with_capacity(cfg.threads);
        let mut drivers = Vec::with_capacity(cfg.threads);
        for t in 0..cfg.threads {
            let (tx, rx) = mpsc::channel();
            let st = Arc::new(ThreadStats::default());
            let spec = ThreadSpec {
                listen: cfg.listen,
                ports: ports.clone(),
                max_conns: cfg.max_conns_per_thread.max(1),
                driver: cfg.driver,
                cpu: (!cfg.cpus.is_empty()).then(|| cfg.cpus[t % cfg.cpus.len()]),
                stats: st.clone(),
            };
            std::thread::Builder::new()
                .name(format!("fleet-{t}"))
                .spawn(move || thread_main(spec, tx))?;
            match rx.recv() {
                Ok(Ok((bound, driver))) => {
                    ports = bound;
                    drivers.push(driver);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("fleet thread died during startup")),
            }
            stats.push(st);
        }
        Ok(Fleet {
            stats,
            ports,
            drivers,
            started: Instant::now(),
        })
    }

    /// The ports served (port 0 resolved to the real one).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The driver each thread runs (`io_uring` or `legacy`).
    pub fn drivers(&self) -> &[&'static str] {
        &self.drivers
    }

    /// Time since the fleet started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counters summed over threads.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in &self.stats {
            t.requests += s.requests.load(Relaxed);
            t.accepted += s.accepted.load(Relaxed);
            t.rejected += s.rejected.load(Relaxed);
            t.active += s.active.load(Relaxed);
            t.accept_errors += s.accept_errors.load(Relaxed);
        }
        t
    }

    /// One-line summary for the end of a run.
    pub fn summary(&self) -> String {
        let t = self.totals();
        format!(
            "fleet: requests={} accepted={} rejected={} active={} accept_errors={} uptime={:.1}s threads={} drivers={}",
            t.requests,
            t.accepted,
            t.rejected,
            t.active,
            t.accept_errors,
            self.uptime().as_secs_f64(),
            self.stats.len(),
            self.drivers.join(","),
        )
    }
}

struct ThreadSpec {
    listen: IpAddr,
    ports: Vec<u16>,
    max_conns: usize,
    driver: DriverChoice,
    cpu: Option<usize>,
    stats: Arc<ThreadStats>,
}

type Ready = mpsc::Sender<io::Result<(Vec<u16>, &'static str)>>;

fn thread_main(spec: ThreadSpec, ready: Ready) {
    if let Some(cpu) = spec.cpu {
        // Best effort: a failed pin only costs locality, not correctness.
        let _ = monoio::utils::bind_to_cpu_set([cpu]);
    }
    let uring = match spec.driver {
        DriverChoice::Legacy => None,
        DriverChoice::Auto | DriverChoice::Uring => {
            match RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(1024)
                .enable_timer()
                .build()
            {
                Ok(rt) => Some(rt),
                Err(e) if spec.driver == DriverChoice::Uring => {
                    let _ = ready.send(Err(io::Error::new(e.kind(), format!("io_uring: {e}"))));
                    return;
                }
                // monoio has no automatic fallback when io_uring setup fails (ENOMEM under a
                // low locked-memory limit, seccomp): build the legacy runtime ourselves.
                Err(_) => None,
            }
        }
    };
    match uring {
        Some(mut rt) => rt.block_on(serve_thread(spec, ready, "io_uring")),
        None => match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
            Ok(mut rt) => rt.block_on(serve_thread(spec, ready, "legacy")),
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        },
    }
}

async fn serve_thread(spec: ThreadSpec, ready: Ready, driver: &'static str) {
    let mut opts = ListenerOpts::new().reuse_port(true).reuse_addr(true);
    // A burst of new connections (a prober starting 100k services) must not overflow the
    // accept queue and turn into SYN retries that look like slow targets.
    opts.backlog = 4096;
    let mut listeners = Vec::with_capacity(spec.ports.len());
    let mut bound = Vec::with_capacity(spec.ports.len());
    for &port in &spec.ports {
        let addr = SocketAddr::new(spec.listen, port);
        match TcpListener::bind_with_config(addr, &opts) {
            Ok(l) => {
                bound.push(l.local_addr().map(|a| a.port()).unwrap_or(port));
                listeners.push(l);
            }
            Err(e) => {
                let _ = ready.send(Err(io::Error::new(e.kind(), format!("bind {addr}: {e}"))));
                return;
            }
        }
    }
    let _ = ready.send(Ok((bound, driver)));
    let active = Rc::new(Cell::new(0usize));
    let mut tasks = Vec::with_capacity(listeners.len());
    for l in listeners {
        tasks.push(monoio::spawn(accept_loop(
            l,
            spec.stats.clone(),
            active.clone(),
            spec.max_conns,
        )));
    }
    for t in tasks {
        t.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    stats: Arc<ThreadStats>,
    active: Rc<Cell<usize>>,
    max_conns: usize,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if active.get() >= max_conns {
                    bump(&stats.rejected);
                    drop(stream);
                    continue;
                }
                bump(&stats.accepted);
                active.set(active.get() + 1);
                stats.active.store(active.get() as u64, Relaxed);
                // Responses are one write each; Nagle would only add delay to the
                // head-then-body writes of large bodies.
                let _ = stream.set_nodelay(true);
                let stats = stats.clone();
                let active = active.clone();
                monoio::spawn(async move {
                    serve_conn(stream, &stats).await;
                    active.set(active.get() - 1);
                    stats.active.store(active.get() as u64, Relaxed);
                });
            }
            Err(_) => {
                // Typically EMFILE: back off instead of spinning on a full fd table.
                bump(&stats.accept_errors);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// What the connection does after the current batch of requests.
enum Next {
    /// Keep reading.
    Continue,
    /// Flush and close normally.
    Close,
}

/// Serves one connection until the peer closes, an error occurs, or a route ends it.
async fn serve_conn(mut stream: TcpStream, stats: &ThreadStats) {
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_BUF);
    // Start of unparsed data in rbuf, and request-body bytes still to discard.
    let mut start = 0usize;
    let mut skip_body = 0u64;
    loop {
        // Answer every complete request already buffered (pipelining), batching the
        // responses into one write.
        let next = loop {
            if skip_body > 0 {
                let n = skip_body.min((rbuf.len() - start) as u64);
                start += n as usize;
                skip_body -= n;
                if skip_body > 0 {
                    break Next::Continue;
                }
            }
            let req = match script::parse_request(&rbuf[start..]) {
                Parsed::Complete(r) => r,
                Parsed::Partial => break Next::Continue,
                Parsed::TooLarge => {
                    script::write_simple(&mut out, 431, b"head too large\n", true, false);
                    break Next::Close;
                }
                Parsed::Invalid => {
                    script::write_simple(&mut out, 400, b"bad request\n", true, false);
                    break Next::Close;
                }
            };
            start += req.head_len;
            skip_body = req.body_len;
            bump(&stats.requests);
            let close = req.close;
            match req.route {
                Route::Ok => {
                    if close || req.head_only {
                        script::write_simple(&mut out, 200, b"ok", close, req.head_only);
                    } else {
                        out.extend_from_slice(script::OK_RESPONSE);
                    }
                }
                Route::Status(code) => {
                    let mut num = itoa::Buffer::new();
                    let body = num.format(code).as_bytes();
                    script::write_simple(&mut out, code, body, close, req.head_only);
                }
                Route::Flap(period) => {
                    let code = script::flap_status(period, unix_ms());
                    let body: &[u8] = if code == 200 { b"ok" } else { b"flap" };
                    script::write_simple(&mut out, code, body, close, req.head_only);
                }
                Route::Delay(ms) => {
                    // Earlier pipelined responses go out now rather than waiting behind
                    // the delay.
                    if !flush(&mut stream, &mut out).await {
                        return;
                    }
                    monoio::time::sleep(Duration::from_millis(ms)).await;
                    script::write_simple(&mut out, 200, b"ok", close, req.head_only);
                }
                Route::Close => {
                    script::write_simple(&mut out, 200, b"ok", true, req.head_only);
                    break Next::Close;
                }
                Route::Chunked => {
                    script::write_head(&mut out, 200, Framing::Chunked, close);
                    if !req.head_only {
                        out.extend_from_slice(script::CHUNKED_BODY);
                    }
                }
                Route::Bytes(n) => {
                    script::write_head(&mut out, 200, Framing::Length(n), close);
                    if req.head_only {
                        // Head only.
                    } else if n as usize <= INLINE_BODY {
                        out.extend_from_slice(&FILL[..n as usize]);
                    } else if !flush(&mut stream, &mut out).await
                        || !stream_fill(&mut stream, n).await
                    {
                        return;
                    }
                }
                Route::Hang => {
                    if flush(&mut stream, &mut out).await {
                        drain_until_closed(&mut stream, rbuf).await;
                    }
                    return;
                }
                Route::Reset => {
                    // Promise 1000 bytes, send 10, then abort: a truncated body and an RST.
                    script::write_head(&mut out, 200, Framing::Length(1000), false);
                    out.extend_from_slice(&FILL[..10]);
                    if flush(&mut stream, &mut out).await {
                        monoio::time::sleep(RESET_GRACE).await;
                    }
                    set_linger_zero(&stream);
                    return;
                }
                Route::NotFound => {
                    script::write_simple(&mut out, 404, b"not found\n", close, req.head_only)
                }
                Route::BadArg => {
                    script::write_simple(&mut out, 400, b"bad argument\n", close, req.head_only)
                }
            }
            if close {
                break Next::Close;
            }
        };
        if !flush(&mut stream, &mut out).await {
            return;
        }
        if let Next::Close = next {
            return;
        }
        // Compact: keep only the unparsed tail, at the front, so the buffer never grows.
        if start == rbuf.len() {
            rbuf.clear();
        } else if start > 0 {
            rbuf.copy_within(start.., 0);
            rbuf.truncate(rbuf.len() - start);
        }
        start = 0;
        if rbuf.len() == rbuf.capacity() {
            // A head larger than the buffer; parse_request answers TooLarge before the
            // buffer passes twice MAX_HEAD_BYTES.
            rbuf.reserve(rbuf.capacity());
        }
        let len = rbuf.len();
        let cap = rbuf.capacity();
        let (res, slice) = stream.read(rbuf.slice_mut(len..cap)).await;
        rbuf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Writes and clears `out`; false if the connection failed.
async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let buf = std::mem::take(out);
    let (res, mut buf) = stream.write_all(buf).await;
    buf.clear();
    *out = buf;
    res.is_ok()
}

/// Writes `n` filler bytes in slices of the static buffer.
async fn stream_fill(stream: &mut TcpStream, mut n: u64) -> bool {
    while n > 0 {
        let chunk = n.min(FILL.len() as u64) as usize;
        let (res, _) = stream.write_all(&FILL[..chunk]).await;
        if res.is_err() {
            return false;
        }
        n -= chunk as u64;
    }
    true
}

/// `/hang`: keep reading (and discarding) so the connection is freed as soon as the client
/// gives up, but never answer.
async fn drain_until_closed(stream: &mut TcpStream, mut buf: Vec<u8>) {
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// `SO_LINGER` with a zero timeout makes the coming close send an RST instead of a FIN.
fn set_linger_zero(stream: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd owned by `stream`; the option value is a properly sized `linger`.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    /// A blocking test client that keeps bytes read past one response for the next, so
    /// pipelined responses are not lost.
    struct Client {
        s: StdStream,
        buf: Vec<u8>,
    }

    impl Client {
        fn connect(port: u16) -> Client {
            let s = StdStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            Client { s, buf: Vec::new() }
        }

        fn fill(&mut self) {
            let mut tmp = [0u8; 4096];
            let k = self.s.read(&mut tmp).expect("read");
            assert!(k > 0, "unexpected eof");
            self.buf.extend_from_slice(&tmp[..k]);
        }

        /// Reads one response (Content-Length or chunked body): status, whether the server
        /// said `connection: close`, and the decoded body.
        fn response(&mut self) -> (u16, bool, Vec<u8>) {
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut resp = httparse::Response::new(&mut headers);
                let httparse::Status::Complete(n) = resp.parse(&self.buf).expect("valid") else {
                    self.fill();
                    continue;
                };
                let code = resp.code.expect("code");
                let (mut close, mut len, mut chunked) = (false, 0usize, false);
                for h in resp.headers.iter() {
                    let v = std::str::from_utf8(h.value).expect("utf8");
                    match h.name.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.parse().expect("len"),
                        "connection" => close = v.eq_ignore_ascii_case("close"),
                        "transfer-encoding" => chunked = v == "chunked",
                        _ => {}
                    }
                }
                self.buf.drain(..n);
                if chunked {
                    let end = loop {
                        if let Some(i) = self.buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                            break i + 5;
                        }
                        self.fill();
                    };
                    let body = decode_chunked(&self.buf[..end]);
                    self.buf.drain(..end);
                    return (code, close, body);
                }
                while self.buf.len() < len {
                    self.fill();
                }
                let body = self.buf.drain(..len).collect();
                return (code, close, body);
            }
        }

        fn get(&mut self, path: &str) -> (u16, bool, Vec<u8>) {
            write!(self.s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
            self.response()
        }
    }

    fn decode_chunked(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let i = b.windows(2).position(|w| w == b"\r\n").expect("size line");
            let n =
                usize::from_str_radix(std::str::from_utf8(&b[..i]).expect("hex"), 16).expect("hex");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&b[i + 2..i + 2 + n]);
            b = &b[i + 2 + n + 2..];
        }
    }

    #[test]
    fn fleet_serves_scripted_paths() {
        let fleet = Fleet::start(FleetConfig::local(vec![0])).expect("start fleet");
        let port = fleet.ports()[0];
        assert_ne!(port, 0);
        let mut c = Client::connect(port);

        assert_eq!(c.get("/ok?i=1"), (200, false, b"ok".to_vec()));
        assert_eq!(c.get("/status/503"), (503, false, b"503".to_vec()));
        assert_eq!(
            c.get("/chunked"),
            (200, false, script::CHUNKED_DECODED.to_vec())
        );
        let t0 = Instant::now();
        assert_eq!(c.get("/delay/100"), (200, false, b"ok".to_vec()));
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert_eq!(c.get("/bytes/100000").2.len(), 100_000);

        // Pipelined: two requests in one write, two responses in order, same connection.
        c.s.write_all(b"GET /status/201 HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n")
            .expect("write");
        assert_eq!(c.response().0, 201);
        assert_eq!(c.response().0, 200);

        // /close answers with connection: close and then closes.
        assert_eq!(c.get("/close"), (200, true, b"ok".to_vec()));
        let mut rest = Vec::new();
        assert_eq!(c.s.read_to_end(&mut rest).expect("eof"), 0);

        // /reset: a truncated body and then an error or EOF, never 1000 bytes.
        let mut r = StdStream::connect(("127.0.0.1", port)).expect("connect");
        r.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        r.write_all(b"GET /reset HTTP/1.1\r\n\r\n").expect("write");
        let mut got = Vec::new();
        let _ = r.read_to_end(&mut got);
        // The RST may overtake the bytes on a busy machine, so an empty read is fine too.
        assert!(got.is_empty() || got.starts_with(b"HTTP/1.1 200"));
        assert!(got.len() < 200);

        let t = fleet.totals();
        assert!(t.requests >= 9, "{t:?}");
        assert_eq!(t.accepted, 2);
        assert!(fleet.summary().starts_with("fleet: requests="));
    }

    #[test]
    fn threads_share_one_ephemeral_port() {
        let mut cfg = FleetConfig::local(vec![0]);
        cfg.threads = 2;
        let fleet = Fleet::start(cfg).expect("start fleet");
        assert_eq!(fleet.drivers().len(), 2);
        // Enough connections that SO_REUSEPORT hands some to each thread; all must work.
        for i in 0..16 {
            let mut c = Client::connect(fleet.ports()[0]);
            assert_eq!(c.get(&format!("/ok?i={i}")).0, 200);
        }
        assert_eq!(fleet.totals().accepted, 16);
    }

    #[test]
    fn refuses_empty_config() {
        let mut cfg = FleetConfig::local(vec![0]);
        cfg.threads = 0;
        assert!(Fleet::start(cfg).is_err());
    }

    #[test]
    fn large_heads_grow_the_buffer_up_to_the_limit() {
        let fleet = Fleet::start(FleetConfig::local(vec![0])).expect("start fleet");
        let mut c = Client::connect(fleet.ports()[0]);
        let pad = "p".repeat(10_000);
        write!(c.s, "GET /ok HTTP/1.1\r\nX-Pad: {pad}\r\n\r\n").expect("write");
        assert_eq!(c.response(), (200, false, b"ok".to_vec()));
        // Still usable after the buffer grew.
        assert_eq!(c.get("/status/418").0, 418);
        let pad = "p".repeat(script::MAX_HEAD_BYTES + 10);
        write!(c.s, "GET /ok HTTP/1.1\r\nX-Pad: {pad}\r\n\r\n").expect("write");
        assert_eq!(c.response().0, 431);
    }

    #[test]
    fn hang_never_answers_and_cap_rejects() {
        let mut cfg = FleetConfig::local(vec![0]);
        cfg.max_conns_per_thread = 1;
        let fleet = Fleet::start(cfg).expect("start fleet");
        let port = fleet.ports()[0];
        let mut h = StdStream::connect(("127.0.0.1", port)).expect("connect");
        h.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        h.write_all(b"GET /hang HTTP/1.1\r\n\r\n").expect("write");
        let mut b = [0u8; 16];
        let err = h.read(&mut b).expect_err("hang must not answer");
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        // The hung connection holds the only slot: the next one is dropped at once.
        let mut x = StdStream::connect(("127.0.0.1", port)).expect("connect");
        x.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = x.write_all(b"GET /ok HTTP/1.1\r\n\r\n");
        let mut got = Vec::new();
        let _ = x.read_to_end(&mut got);
        assert!(got.is_empty());
        assert_eq!(fleet.totals().rejected, 1);
    }
}
