//! The prober: one hand-rolled HTTP/1.1 (+TLS) request per probe, with keep-alive reuse.
//!
//! A `Prober` lives on one shard and is shared by that shard's probe tasks (`Rc`). It never
//! blocks: names are resolved by the `dns` resolver thread, and every phase has a deadline that
//! the whole-probe timeout overrides.
//!
//! One probe, in order:
//! 1. **dns** — IP literals are used as is; names hit a shard-local TTL cache, then the resolver
//!    threads (IPv4 preferred). A connect failure evicts the name so it is re-resolved.
//! 2. **connection** — an idle pooled connection for (address, scheme, host, TLS config) is
//!    reused; otherwise `connect_addr` (phase `connect`) and, for https, a rustls handshake with
//!    SNI from the host (phase `tls`). If a *reused* connection fails before the first response
//!    byte (the server closed it while idle), the request is retried once on a fresh connection.
//! 3. **response head** — the request is written and the head read (phase `response head`,
//!    bounded by `ProbeLimits::max_header_bytes`); 1xx interim responses are skipped.
//! 4. **body** — framed by Content-Length, chunked (trailers consumed) or connection close; HEAD,
//!    204 and 304 have none. The first `max_body_bytes` are kept for `expect.body_contains`; up
//!    to 1 MiB more is read and discarded so the connection stays reusable, after which reading
//!    stops and the connection is closed (so endless streams do not time out).
//! 5. **expectations** — status ranges, then body substring, then `max_latency` on the total.
//!
//! Each phase timeout is clipped to what is left of `spec.timeout`, so the whole-probe timeout
//! always wins; the reported phase is the one that was running (`dns` for a slow lookup).
//! `Timings::first_byte` is measured from the probe start (like curl's time_starttransfer).
//! A connection goes back to the pool only after a complete response that allows keep-alive
//! (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `keep-alive`) and left no extra bytes.

pub mod http1;
pub mod plan;
pub mod pool;
pub mod tls;

use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::model::{ErrorKind, ServiceSpec, Timings};
use crate::rt::dns::{DnsError, ResolverHandle};

use self::http1::{BodyDecoder, Framing, ResponseHead};
use self::plan::{Hosts, Plan};
use self::pool::{Pool, PoolKey};

/// Why a probe failed; each variant maps to one `ErrorKind`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// Name resolution failed.
    #[error("dns lookup of {host} failed: {reason}")]
    Dns {
        /// The host name.
        host: String,
        /// Resolver's message.
        reason: String,
    },
    /// Connection refused.
    #[error("connection to {addr} refused")]
    Refused {
        /// The address dialled.
        addr: String,
    },
    /// A phase (connect, tls, head, body) or the whole probe ran out of time.
    #[error("timed out after {elapsed_ms} ms waiting for {phase}")]
    Timeout {
        /// The phase that was running.
        phase: &'static str,
        /// Time since the probe started.
        elapsed_ms: u64,
    },
    /// Handshake or certificate failure.
    #[error("tls: {0}")]
    Tls(String),
    /// Reset, unexpected EOF or another I/O error.
    #[error("connection error: {0}")]
    Connection(String),
    /// Invalid HTTP or a limit exceeded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Status outside the expected ranges.
    #[error("status {got} not in expected {expected}")]
    Status {
        /// Received status code.
        got: u16,
        /// Expected ranges, as configured.
        expected: String,
    },
    /// Body lacks the expected substring.
    #[error("body does not contain {needle:?}")]
    BodyMismatch {
        /// The expected substring.
        needle: String,
    },
    /// Slower than `expect.max_latency`.
    #[error("latency {got_ms} ms over max {max_ms} ms")]
    Latency {
        /// Measured total latency.
        got_ms: u64,
        /// Configured maximum.
        max_ms: u64,
    },
}

impl ProbeError {
    /// The coarse class, for metrics and storage.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProbeError::Dns { .. } => ErrorKind::Dns,
            ProbeError::Refused { .. } => ErrorKind::Refused,
            ProbeError::Timeout { .. } => ErrorKind::Timeout,
            ProbeError::Tls(_) => ErrorKind::Tls,
            ProbeError::Connection(_) => ErrorKind::Connection,
            ProbeError::Protocol(_) => ErrorKind::Protocol,
            ProbeError::Status { .. } => ErrorKind::Status,
            ProbeError::BodyMismatch { .. } => ErrorKind::BodyMismatch,
            ProbeError::Latency { .. } => ErrorKind::Latency,
        }
    }
}

/// What one probe observed.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Phase timings.
    pub timings: Timings,
    /// Status code, when a head arrived.
    pub status_code: Option<u16>,
    /// Bytes read (head + body).
    pub bytes: u64,
    /// True when the request went over a pooled keep-alive connection.
    pub reused: bool,
    /// The failure, None on success.
    pub error: Option<ProbeError>,
}

pub use crate::config::ProbeLimits;

/// Counters a prober keeps; read by the shard's stats.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProberCounters {
    /// New TCP connections opened.
    pub connections_opened: u64,
    /// Requests sent over a reused connection.
    pub connections_reused: u64,
    /// Idle connections dropped because a pool bound was hit.
    pub idle_dropped: u64,
}

impl ProberCounters {
    /// Adds another shard's counters.
    pub fn merge(&mut self, o: &ProberCounters) {
        self.connections_opened += o.connections_opened;
        self.connections_reused += o.connections_reused;
        self.idle_dropped += o.idle_dropped;
    }

    /// The prober's families (merged figures of every shard).
    pub fn render(&self, w: &mut crate::metrics::Exposition) {
        w.single(
            "ringwatch_probe_connections_opened_total",
            "counter",
            "TCP connections opened by the prober.",
            self.connections_opened as f64,
        );
        w.single(
            "ringwatch_probe_connections_reused_total",
            "counter",
            "Probes sent over a pooled keep-alive connection.",
            self.connections_reused as f64,
        );
        w.single(
            "ringwatch_probe_idle_dropped_total",
            "counter",
            "Idle keep-alive connections closed because a pool bound was hit.",
            self.idle_dropped as f64,
        );
    }
}

/// Body bytes read and discarded past the kept prefix to keep a connection reusable; beyond
/// this (huge downloads, endless streams) we stop reading and close the connection instead.
const MAX_DRAIN_BYTES: u64 = 1024 * 1024;

/// Smallest read buffer per connection; a head may use up to `max_header_bytes` of it.
const MIN_READ_BUF: usize = 16 * 1024;

/// The transport under HTTP: plain TCP or rustls over TCP.
enum Io {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>),
}

/// One connection plus its reusable buffers (no allocation per read or per probe).
pub(crate) struct Conn {
    io: Io,
    /// Bytes read; `rbuf[pos..]` is not yet consumed. Capacity is fixed at creation.
    rbuf: Vec<u8>,
    pos: usize,
    /// Body prefix kept for `expect.body_contains`.
    kept: Vec<u8>,
}

impl Conn {
    fn new(io: Io, max_header_bytes: usize) -> Self {
        Conn {
            io,
            rbuf: Vec::with_capacity(max_header_bytes.saturating_add(1).max(MIN_READ_BUF)),
            pos: 0,
            kept: Vec::new(),
        }
    }

    fn buffered(&self) -> &[u8] {
        self.rbuf.get(self.pos..).unwrap_or_default()
    }

    /// Reads more bytes after the unconsumed ones; Ok(0) is EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            // Compacting keeps the buffer bounded; cheap because it only moves a partial head
            // or a partial chunk line.
            self.rbuf.drain(..self.pos.min(self.rbuf.len()));
            self.pos = 0;
        }
        let len = self.rbuf.len();
        let cap = self.rbuf.capacity();
        if len >= cap {
            return Err(io::Error::other("read buffer full"));
        }
        let buf = std::mem::take(&mut self.rbuf).slice_mut(len..cap);
        // The TLS futures are large and would swell every probe task, http ones included;
        // boxing them costs one allocation per TLS read, small beside the decryption.
        let (res, buf) = match &mut self.io {
            Io::Plain(s) => s.read(buf).await,
            Io::Tls(s) => Box::pin(s.read(buf)).await,
        };
        self.rbuf = buf.into_inner();
        res
    }

    async fn write_request(&mut self, request: RequestBuf) -> io::Result<()> {
        let (res, _) = match &mut self.io {
            Io::Plain(s) => s.write_all(request).await,
            Io::Tls(s) => Box::pin(s.write_all(request)).await,
        };
        res.map(|_| ())
    }
}

/// A plan's encoded request as an owned I/O buffer, so the send reads it where it lies instead
/// of it being copied into a per-connection buffer first (with many targets those buffers are
/// cold, and the copy was the probe's largest user-space cost after the misses on the plan).
struct RequestBuf(Rc<Plan>);

// SAFETY: the bytes live in the plan's heap allocation (inline array or boxed slice), which the
// `Rc` keeps alive and never mutates or moves for as long as this buffer (and so the I/O
// operation owning it) exists.
unsafe impl monoio::buf::IoBuf for RequestBuf {
    fn read_ptr(&self) -> *const u8 {
        self.0.request.as_slice().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.0.request.as_slice().len()
    }
}

/// Probe start, the whole-probe deadline every phase is clipped to, and the phase running now
/// (so the one whole-probe timer can say where it fired).
#[derive(Clone, Copy)]
struct Clock<'a> {
    start: Instant,
    deadline: Instant,
    phase: &'a Cell<&'static str>,
}

impl Clock<'_> {
    fn timeout(&self, phase: &'static str) -> ProbeError {
        ProbeError::Timeout {
            phase,
            elapsed_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Runs `fut` as `phase`, for at most the phase limit. Only a limit tighter than what is left of
/// the probe needs a timer of its own; otherwise the whole-probe timer around `Prober::run`
/// covers it, so a default probe arms one timer instead of one per phase.
///
/// Used on the cold, boxed dialling path only: it stores `fut` twice (as its argument and inside
/// the timeout), so the hot path applies `phase_limit` in place instead.
async fn within<T>(
    phase: &'static str,
    limit: Option<Duration>,
    clock: Clock<'_>,
    fut: impl Future<Output = T>,
) -> Result<T, ProbeError> {
    clock.phase.set(phase);
    match phase_limit(limit, clock) {
        Some(l) => monoio::time::timeout(l, fut)
            .await
            .map_err(|_| clock.timeout(phase)),
        None => Ok(fut.await),
    }
}

/// The phase limit when it is tighter than what is left of the probe (then the phase needs a
/// timer of its own), else None (the whole-probe timer covers it).
fn phase_limit(limit: Option<Duration>, clock: Clock<'_>) -> Option<Duration> {
    let l = limit?;
    // A limit no tighter than the whole budget can never be the tighter one: skip the clock read.
    if l >= clock.deadline.saturating_duration_since(clock.start) {
        return None;
    }
    (l < clock.deadline.saturating_duration_since(Instant::now())).then_some(l)
}

/// What one request/response exchange saw, kept even when it fails part-way.
#[derive(Default)]
struct Progress {
    bytes: u64,
    first_byte: Option<Instant>,
    status: Option<u16>,
}

/// A complete response.
struct Exchange {
    /// The connection may carry another request.
    reusable: bool,
    /// `expect.body_contains` result (true when there is no needle).
    body_ok: bool,
}

/// A shard's prober (not `Send`: it lives on one shard).
///
/// Pooled connections are registered with the runtime that opened them, so one `Prober` must
/// only ever be driven by one runtime (create it on the shard thread; do not share it between
/// runtimes, even sequentially: monoio's legacy driver panics on a foreign fd).
pub struct Prober {
    resolver: ResolverHandle,
    limits: ProbeLimits,
    pool: RefCell<Pool<Conn>>,
    /// Shard-side answer cache (by host), so a cached name costs no thread hop.
    dns_cache: RefCell<HashMap<String, (IpAddr, Instant)>>,
    /// Host names shared by this shard's plans (and so by its pool keys).
    hosts: Hosts,
    /// TLS client configs built from definitions' settings, shared by this shard's plans.
    tls: tls::Configs,
    opened: Cell<u64>,
    reused: Cell<u64>,
}

impl Prober {
    /// Creates a prober that resolves names through `resolver`.
    pub fn new(resolver: ResolverHandle, limits: ProbeLimits) -> Self {
        Prober {
            resolver,
            limits,
            pool: RefCell::new(Pool::new(
                limits.max_idle_per_target,
                limits.max_idle_total,
                limits.idle_timeout,
            )),
            dns_cache: RefCell::new(HashMap::default()),
            hosts: Hosts::default(),
            tls: tls::Configs::default(),
            opened: Cell::new(0),
            reused: Cell::new(0),
        }
    }

    /// Prepares the plan a shard keeps for `spec` (one per definition, reused by every probe).
    pub fn plan(&self, spec: Arc<ServiceSpec>) -> Rc<Plan> {
        let tls = self.tls.for_spec(&spec);
        Rc::new(Plan::new(spec, &self.hosts, tls))
    }

    /// Runs one probe of `spec`, applying every expectation. Never panics on peer input.
    ///
    /// Plans the probe first; a shard keeps its plans and calls `probe_planned` instead.
    pub async fn probe(&self, spec: &ServiceSpec) -> ProbeReport {
        let plan = self.plan(Arc::new(spec.clone()));
        self.probe_planned(&plan, Instant::now()).await
    }

    /// Runs one probe of `plan`'s service that started at `start` (the caller's clock reading,
    /// so one probe reads the clock as few times as it can), applying every expectation.
    pub async fn probe_planned(&self, plan: &Rc<Plan>, start: Instant) -> ProbeReport {
        // `Instant + Duration` panics on overflow; an absurd configured timeout must not.
        let deadline = start
            .checked_add(plan.timeout.get())
            .or_else(|| start.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(start);
        let phase = Cell::new("dns");
        let clock = Clock {
            start,
            deadline,
            phase: &phase,
        };
        let mut report = ProbeReport::default();
        // Kept outside `run` so what the exchange saw survives the whole-probe timer firing.
        let mut progress = Progress::default();
        let budget = deadline.saturating_duration_since(start);
        // `run` is built inside the timeout call, not bound to a local first: a local that is
        // then moved into the timeout would be a second copy of the whole exchange state in
        // this future (and so in every probe task).
        let outcome =
            monoio::time::timeout(budget, self.run(plan, clock, &mut report, &mut progress)).await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) => {
                report.bytes = progress.bytes;
                report.status_code = progress.status;
                if let Some(at) = progress.first_byte {
                    report.timings.first_byte = at.saturating_duration_since(start);
                }
                Err(clock.timeout(phase.get()))
            }
        };
        report.timings.total = start.elapsed();
        report.error = match outcome {
            Err(e) => Some(e),
            Ok(body_ok) => expectations(plan, &report, body_ok).err(),
        };
        report
    }

    /// Snapshot of the counters.
    pub fn counters(&self) -> ProberCounters {
        ProberCounters {
            connections_opened: self.opened.get(),
            connections_reused: self.reused.get(),
            idle_dropped: self.pool.borrow().dropped(),
        }
    }

    /// Idle keep-alive connections currently pooled.
    pub fn idle_connections(&self) -> usize {
        self.pool.borrow().len()
    }

    /// Closes idle connections past `idle_timeout`; the pool also does this on its own when
    /// connections are returned, so calling it is only needed on an otherwise quiet shard.
    pub fn close_expired_idle(&self) {
        self.pool.borrow_mut().expire_all();
    }

    async fn run(
        &self,
        plan: &Rc<Plan>,
        clock: Clock<'_>,
        report: &mut ProbeReport,
        progress: &mut Progress,
    ) -> Result<bool, ProbeError> {
        let spec = &*plan.spec;
        clock.phase.set("dns");
        let addr = match plan.literal {
            Some(ip) => SocketAddr::new(ip, plan.port),
            None => self
                .resolve(&spec.target.host, plan.port)
                .await
                .map_err(|e| ProbeError::Dns {
                    host: spec.target.host.clone(),
                    reason: e.to_string(),
                })?,
        };
        let tls_config = plan.tls.clone();
        let key = PoolKey {
            addr,
            scheme: plan.scheme,
            host: plan.host.clone(),
            tls_config: tls_config.as_ref().map_or(0, |c| Arc::as_ptr(c) as usize),
        };
        let tls_config = tls_config.as_ref();
        let pooled = self.pool.borrow_mut().take(&key, clock.start);
        let (mut conn, mut reused) = match pooled {
            Some(conn) => (conn, true),
            // Dialling (and the TLS handshake future inside it) is boxed: it is the cold path,
            // and inlined it would make every probe task several KB larger to spawn and move.
            None => (
                Box::pin(self.open(spec, addr, tls_config, clock, report)).await?,
                false,
            ),
        };
        loop {
            if reused {
                self.reused.set(self.reused.get() + 1);
            }
            *progress = Progress::default();
            report.reused = reused;
            let res = self.exchange(&mut conn, plan, clock, progress).await;
            report.bytes = progress.bytes;
            report.status_code = progress.status;
            report.reused = reused;
            if let Some(at) = progress.first_byte {
                report.timings.first_byte = at.saturating_duration_since(clock.start);
            }
            match res {
                Ok(ex) => {
                    if ex.reusable {
                        conn.rbuf.clear();
                        conn.pos = 0;
                        self.pool.borrow_mut().put(&key, conn, Instant::now());
                    }
                    return Ok(ex.body_ok);
                }
                // A pooled connection the server already closed fails before any response
                // byte; that says nothing about the target, so try once on a fresh one.
                Err(ProbeError::Connection(_)) if reused && progress.bytes == 0 => {
                    drop(conn);
                    conn = Box::pin(self.open(spec, addr, tls_config, clock, report)).await?;
                    reused = false;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DnsError> {
        let ttl = self.resolver.ttl();
        let hit = self
            .dns_cache
            .borrow()
            .get(host)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(ip, _)| *ip);
        if let Some(ip) = hit {
            return Ok(SocketAddr::new(ip, port));
        }
        let addr = self.resolver.resolve(host, port).await?;
        if host.parse::<IpAddr>().is_err() {
            self.dns_cache
                .borrow_mut()
                .insert(host.to_owned(), (addr.ip(), Instant::now()));
        }
        Ok(addr)
    }

    /// Dials `addr` (and does the TLS handshake for https).
    async fn open(
        &self,
        spec: &ServiceSpec,
        addr: SocketAddr,
        tls_config: Option<&Arc<rustls::ClientConfig>>,
        clock: Clock<'_>,
        report: &mut ProbeReport,
    ) -> Result<Conn, ProbeError> {
        let t0 = Instant::now();
        let dialled = within(
            "connect",
            Some(spec.phase_timeouts.connect),
            clock,
            TcpStream::connect_addr(addr),
        )
        .await;
        let tcp = match dialled.and_then(|r| r.map_err(|e| connect_error(addr, e))) {
            Ok(tcp) => tcp,
            Err(e) => {
                // The address may have moved: re-resolve next time instead of trusting the cache.
                self.dns_cache.borrow_mut().remove(&spec.target.host);
                return Err(e);
            }
        };
        // Best effort: a request is one small write, Nagle would only add latency.
        let _ = tcp.set_nodelay(true);
        report.timings.connect = t0.elapsed();
        self.opened.set(self.opened.get() + 1);
        let io = match tls_config {
            None => Io::Plain(tcp),
            Some(cfg) => {
                let cfg = cfg.clone();
                let name = tls::server_name(&spec.target.host).map_err(ProbeError::Tls)?;
                let t1 = Instant::now();
                let stream = within(
                    "tls",
                    Some(spec.phase_timeouts.tls),
                    clock,
                    monoio_rustls::TlsConnector::from(cfg).connect(name, tcp),
                )
                .await?
                .map_err(|e| ProbeError::Tls(tls_error(e)))?;
                report.timings.tls = t1.elapsed();
                Io::Tls(Box::new(stream))
            }
        };
        Ok(Conn::new(io, self.limits.max_header_bytes))
    }

    /// Sends the request and reads the whole response (body bounded, rest discarded).
    async fn exchange(
        &self,
        conn: &mut Conn,
        plan: &Rc<Plan>,
        clock: Clock<'_>,
        progress: &mut Progress,
    ) -> Result<Exchange, ProbeError> {
        let max_head = self.limits.max_header_bytes;
        // Not `within`: its argument plus the timeout wrapping it would store the read future
        // twice in every probe task. Each branch builds its future in place.
        const HEAD: &str = "response head";
        clock.phase.set(HEAD);
        let head = match phase_limit(Some(plan.head_timeout.get()), clock) {
            Some(l) => monoio::time::timeout(
                l,
                read_head(conn, RequestBuf(plan.clone()), max_head, progress),
            )
            .await
            .map_err(|_| clock.timeout(HEAD))?,
            None => read_head(conn, RequestBuf(plan.clone()), max_head, progress).await,
        }?;
        progress.status = Some(head.status);
        let framing = Framing::of(&head, plan.method);
        // No phase limit of its own: the whole-probe timer covers the body.
        clock.phase.set("body");
        let keep = plan.keep.map_or(0, |k| k as usize);
        let complete = read_body(conn, framing, max_head, keep, progress).await?;
        // The spec is read only when there is a needle to look for.
        let body_ok = plan.keep.is_none()
            || plan
                .spec
                .expect
                .body_contains
                .as_deref()
                .is_none_or(|n| http1::contains(&conn.kept, n.as_bytes()));
        // After 101 the connection no longer speaks HTTP/1.1.
        let reusable = complete
            && !head.close
            && head.status != 101
            && framing != Framing::UntilClose
            && conn.buffered().is_empty();
        Ok(Exchange { reusable, body_ok })
    }
}

/// Writes the request and reads up to the final (non-1xx) response head.
async fn read_head(
    conn: &mut Conn,
    request: RequestBuf,
    max_head: usize,
    progress: &mut Progress,
) -> Result<ResponseHead, ProbeError> {
    conn.write_request(request)
        .await
        .map_err(|e| io_error("sending request", &e))?;
    loop {
        match http1::parse_head(conn.buffered(), max_head) {
            Ok(Some((head, n))) => {
                conn.pos += n;
                // Interim responses (100 Continue, 103 Early Hints) precede the real one;
                // 101 would switch protocols, so it is final.
                if (100..200).contains(&head.status) && head.status != 101 {
                    continue;
                }
                return Ok(head);
            }
            Ok(None) => {}
            Err(e) => return Err(ProbeError::Protocol(e.0)),
        }
        let n = conn
            .fill()
            .await
            .map_err(|e| io_error("reading response head", &e))?;
        if n == 0 {
            return Err(ProbeError::Connection(if progress.bytes == 0 {
                "connection closed before any response".into()
            } else {
                "connection closed in the middle of the response head".into()
            }));
        }
        progress.first_byte.get_or_insert_with(Instant::now);
        progress.bytes += n as u64;
    }
}

/// Reads the body per `framing`, keeping its first `keep` bytes in `conn.kept`. Returns false
/// when it stopped early (body longer than `keep + MAX_DRAIN_BYTES`).
async fn read_body(
    conn: &mut Conn,
    framing: Framing,
    max_trailers: usize,
    keep: usize,
    progress: &mut Progress,
) -> Result<bool, ProbeError> {
    conn.kept.clear();
    let mut decoder = BodyDecoder::new(framing, max_trailers);
    let mut seen: u64 = 0;
    let limit = (keep as u64).saturating_add(MAX_DRAIN_BYTES);
    loop {
        let Conn {
            rbuf, pos, kept, ..
        } = &mut *conn;
        let input = rbuf.get(*pos..).unwrap_or_default();
        if !input.is_empty() && !decoder.is_done() {
            let used = decoder
                .feed(input, &mut |data| {
                    seen += data.len() as u64;
                    http1::keep_bounded(kept, data, keep);
                })
                .map_err(|e| ProbeError::Protocol(e.0))?;
            *pos += used;
        }
        if *pos >= rbuf.len() {
            rbuf.clear();
            *pos = 0;
        }
        if decoder.is_done() {
            return Ok(true);
        }
        if seen >= limit {
            return Ok(false);
        }
        let n = match conn.fill().await {
            Ok(n) => n,
            // TLS peers often close without close_notify; for read-until-close that is the end.
            Err(e)
                if e.kind() == io::ErrorKind::UnexpectedEof && framing == Framing::UntilClose =>
            {
                0
            }
            Err(e) => return Err(io_error("reading response body", &e)),
        };
        if n == 0 {
            return decoder
                .eof()
                .map(|()| true)
                .map_err(|e| ProbeError::Connection(e.0));
        }
        progress.bytes += n as u64;
    }
}

fn connect_error(addr: SocketAddr, e: io::Error) -> ProbeError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        ProbeError::Refused {
            addr: addr.to_string(),
        }
    } else {
        ProbeError::Connection(format!("connect to {addr}: {e}"))
    }
}

fn io_error(context: &str, e: &io::Error) -> ProbeError {
    ProbeError::Connection(format!("{context}: {e}"))
}

fn tls_error(e: monoio_rustls::TlsError) -> String {
    match e {
        monoio_rustls::TlsError::Rustls(e) => format!("handshake failed: {e}"),
        monoio_rustls::TlsError::Io(e) => format!("handshake failed: {e}"),
    }
}

/// Applies `expect` in order: status, body, latency (the first failure is reported).
fn expectations(plan: &Plan, report: &ProbeReport, body_ok: bool) -> Result<(), ProbeError> {
    if let Some(code) = report.status_code {
        if !plan.status_ok(code) {
            return Err(ProbeError::Status {
                got: code,
                expected: plan.spec.expect.status.to_string(),
            });
        }
    }
    if !body_ok {
        return Err(ProbeError::BodyMismatch {
            needle: plan.spec.expect.body_contains.clone().unwrap_or_default(),
        });
    }
    // `then`, not `then_some`: the spec is read only when the plan says there is a bound.
    if let Some(max) = plan
        .latency_bound
        .then(|| plan.spec.expect.max_latency)
        .flatten()
    {
        if report.timings.total > max {
            return Err(ProbeError::Latency {
                got_ms: u64::try_from(report.timings.total.as_millis()).unwrap_or(u64::MAX),
                max_ms: u64::try_from(max.as_millis()).unwrap_or(u64::MAX),
            });
        }
    }
    Ok(())
}
