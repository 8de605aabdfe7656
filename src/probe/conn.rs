//! A probe connection: plain TCP or rustls over TCP with its reusable read buffer, and dialling
//! it (name resolution through the shard's cache, connect, TLS handshake).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::model::ServiceSpec;
use crate::rt::dns::DnsError;

use super::clock::{within, Clock};
use super::error::{connect_error, tls_error};
use super::plan::Plan;
use super::pool::PoolKey;
use super::{tls, ProbeError, ProbeReport, Prober};

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
    pub(super) rbuf: Vec<u8>,
    pub(super) pos: usize,
    /// Body prefix kept for `expect.body_contains`.
    pub(super) kept: Vec<u8>,
}

impl Conn {
    /// A connection over `io` with its read buffer sized for `max_header_bytes`.
    fn new(io: Io, max_header_bytes: usize) -> Self {
        Conn {
            io,
            rbuf: Vec::with_capacity(max_header_bytes.saturating_add(1).max(MIN_READ_BUF)),
            pos: 0,
            kept: Vec::new(),
        }
    }

    /// The bytes read and not yet consumed.
    pub(super) fn buffered(&self) -> &[u8] {
        self.rbuf.get(self.pos..).unwrap_or_default()
    }

    /// Reads more bytes after the unconsumed ones; Ok(0) is EOF.
    pub(super) async fn fill(&mut self) -> io::Result<usize> {
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

    /// Writes the whole request.
    pub(super) async fn write_request<B: IoBuf>(&mut self, request: B) -> io::Result<()> {
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
pub(super) struct RequestBuf(pub(super) Rc<Plan>);

// SAFETY: the bytes live in the plan's heap allocation (inline array or boxed slice), which the
// `Rc` keeps alive and never mutates or moves for as long as this buffer (and so the I/O
// operation owning it) exists.
unsafe impl IoBuf for RequestBuf {
    fn read_ptr(&self) -> *const u8 {
        self.0.request.as_slice().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.0.request.as_slice().len()
    }
}

/// Where to dial: the service's target, or a redirect hop's.
#[derive(Clone, Copy)]
pub(super) struct Dial<'a> {
    /// Host name (or IP literal): SNI and certificate name, and the DNS cache entry to drop
    /// when the connect fails.
    pub(super) host: &'a str,
    /// The resolved address.
    pub(super) addr: SocketAddr,
    /// The TLS client config for https, None for http.
    pub(super) tls: Option<&'a Arc<rustls::ClientConfig>>,
}

impl Prober {
    /// The address of `host`: the shard's cache first, then the resolver threads.
    pub(super) async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DnsError> {
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

    /// Returns `conn` to the pool as idle for `key`, its buffer emptied (its last response was
    /// complete and allows keep-alive).
    #[inline]
    pub(super) fn park(&self, key: &PoolKey, mut conn: Conn) {
        conn.rbuf.clear();
        conn.pos = 0;
        self.pool.borrow_mut().put(key, conn, Instant::now());
    }

    /// Dials `to.addr` (and does the TLS handshake for https); `spec` gives the phase limits.
    pub(super) async fn open(
        &self,
        spec: &ServiceSpec,
        to: Dial<'_>,
        clock: Clock<'_>,
        report: &mut ProbeReport,
    ) -> Result<Conn, ProbeError> {
        let Dial {
            host,
            addr,
            tls: tls_config,
        } = to;
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
                self.dns_cache.borrow_mut().remove(host);
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
                let name = tls::server_name(host).map_err(ProbeError::Tls)?;
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
}
