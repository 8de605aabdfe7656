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
//! 5. **redirects** — only with `follow_redirects` set, a 301/302/303/307/308 with a `Location`
//!    is followed (steps 1-4 again for each hop, within the same deadline; see `redirect`).
//!    Off, a redirect outside `expect.status` fails saying it was not followed.
//! 6. **expectations** — status ranges, then body substring, then `max_latency` on the total.
//!
//! Each phase timeout is clipped to what is left of `spec.timeout`, so the whole-probe timeout
//! always wins; the reported phase is the one that was running (`dns` for a slow lookup).
//! `Timings::first_byte` is measured from the probe start (like curl's time_starttransfer).
//! A connection goes back to the pool only after a complete response that allows keep-alive
//! (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `keep-alive`) and left no extra bytes.
//!
//! Where each part lives: `Prober` and the probe's outline here; `conn` (the connection, name
//! resolution through the shard's cache, dialling, the TLS handshake), `exchange` (writing the
//! request, reading the head and the body), `expect` (the expectations), `error`
//! (`ProbeError`), `clock` (the whole-probe deadline and phase limits), `redirect` (following
//! redirects, cold); `plan` (what a probe reads, made once per definition), `pool` (idle
//! keep-alive connections), `tls` (client configs) and `http1` (pure encoding and parsing).

pub mod http1;
pub mod plan;
pub mod pool;
pub mod tls;

mod clock;
mod conn;
mod error;
mod exchange;
mod expect;
mod redirect;

use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{ServiceSpec, Timings};
use crate::rt::dns::ResolverHandle;

pub use self::error::ProbeError;

use self::clock::Clock;
use self::conn::{Conn, Dial, RequestBuf};
use self::exchange::{Progress, Route};
use self::expect::expectations;
use self::plan::{Hosts, Plan};
use self::pool::{Pool, PoolKey};

/// What one probe observed.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Phase timings (with redirects followed: connect and tls summed over the connections
    /// opened, first byte of the final response).
    pub timings: Timings,
    /// Status code of the last response whose head arrived.
    pub status_code: Option<u16>,
    /// Bytes read (head + body), over every redirect hop.
    pub bytes: u64,
    /// True when the (last) request went over a pooled keep-alive connection.
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
                // `report.bytes` holds what earlier redirect hops read (0 without redirects).
                report.bytes += progress.bytes;
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
        let to = Dial {
            host: &spec.target.host,
            addr,
            tls: tls_config.as_ref(),
        };
        let route = Route {
            key,
            to,
            now: clock.start,
        };
        let request = || RequestBuf(plan.clone());
        let ex = self
            .send(plan, route, request, plan.method, clock, report, progress)
            .await?;
        // Only a redirect status with a Location carries one: the plan's setting is read then,
        // never on an ordinary response.
        match ex.redirect {
            None => Ok(ex.body_ok),
            Some(to) => {
                self.redirected(plan, clock, report, progress, to, ex.body_ok)
                    .await
            }
        }
    }
}
