//! A shard: one pinned thread, one monoio executor, and everything it owns.
//!
//! A shard owns a slice of the services (`ServiceId::owner`), schedules and probes them, runs
//! their state machines, and serves the HTTP connections the kernel hands its listener
//! (SO_REUSEPORT). Nothing it owns is shared: other threads reach it only through the mesh.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};

use crate::config::{DriverChoice, ServerConfig};
use crate::dns::ResolverHandle;
use crate::event::{Event, EventKind};
use crate::http::{self, HttpReject, Request, Response};
use crate::mesh::{From, Mesh};
use crate::model::{ProbeResult, ServiceId, ServiceSpec, Source, Status, Transition, UnixMillis};
use crate::notify::Notify;
use crate::probe::plan::Plan;
use crate::probe::Prober;
use crate::sched::{self, Due, Scheduler};
use crate::state::{Health, SeqCounter};
use crate::stats::{self, GlobalStats, ShardStats, Skip, StatsSnapshot};
use crate::store::{Record, StoreHandle};
use crate::table::{prefetch_read, SlotId, Table};
use crate::ws;

/// Messages shards (and control threads) send each other through the mesh.
pub enum ShardMsg {
    /// An event to fan out to this shard's clients.
    Event(Arc<Event>),
    /// Reply with this shard's stats.
    Stats(futures_channel::oneshot::Sender<StatsSnapshot>),
    /// The full set of config-defined services this shard must own now (SIGHUP reload).
    ReplaceConfig(Vec<Arc<ServiceSpec>>),
    /// Stop probing, finish in-flight probes (up to the grace period) and exit.
    Shutdown,
    /// A REST operation on a service this shard owns; the answer goes back on the oneshot.
    Api(
        crate::api::Op,
        futures_channel::oneshot::Sender<crate::api::Reply>,
    ),
    /// Reply with the current state of every service this shard owns (WebSocket snapshots).
    States(futures_channel::oneshot::Sender<Vec<ws::protocol::ServiceState>>),
}

/// Process-wide state every shard can read; written only through atomics.
pub struct Shared {
    /// The ring mesh.
    pub mesh: Arc<Mesh<ShardMsg>>,
    /// Producer side of the storage writer queue.
    pub store: StoreHandle,
    /// Global transition seq.
    pub seq: SeqCounter,
    /// DNS resolver threads.
    pub resolver: ResolverHandle,
    /// Server settings.
    pub server: ServerConfig,
    /// Process start.
    pub started: Instant,
    /// Shards that are up and listening.
    pub shards_ready: AtomicUsize,
    /// Set when shutdown begins (readyz turns 503).
    pub stopping: AtomicBool,
    /// Token verifier for the API, `/metrics` and the WebSocket upgrade.
    pub auth: crate::auth::Auth,
    /// Blocking read pool for API history queries (never SQLite on a shard).
    pub reader: crate::store::reader::ReadPool,
    /// Persists API-defined services on the writer thread.
    pub registry: crate::store::RegistryHandle,
    /// Config `defaults`, applied to services created over the API.
    pub defaults: Arc<crate::config::ServiceDefaults>,
}

impl Shared {
    /// True when every shard listens and shutdown has not begun.
    pub fn ready(&self) -> bool {
        self.shards_ready.load(Ordering::Acquire) == self.mesh.shards()
            && !self.stopping.load(Ordering::Acquire)
    }
}

/// A service as its shard holds it.
struct Slot {
    /// The definition and what its probes read every run (see `probe::plan`).
    plan: Rc<Plan>,
    health: Health,
    /// Bumped whenever the planned entry in the heap must be ignored.
    generation: u32,
    /// A probe of this service is running.
    running: bool,
    /// Latency of the last probe, for snapshots.
    last_latency: Duration,
}

impl Slot {
    fn spec(&self) -> &Arc<ServiceSpec> {
        &self.plan.spec
    }
}

/// One shard's state. Lives in an `Rc` on its own thread.
pub struct Shard {
    id: usize,
    driver: &'static str,
    shared: Arc<Shared>,
    prober: Prober,
    services: RefCell<Table<Slot>>,
    sched: RefCell<Scheduler>,
    stats: RefCell<ShardStats>,
    wake_sched: Notify,
    probe_done: Notify,
    inflight: Cell<usize>,
    stopping: Cell<bool>,
    connections: Cell<usize>,
    /// Source of generations for new slots, so a re-created service never matches a stale
    /// heap entry of its deleted predecessor.
    next_generation: Cell<u32>,
    api: crate::api::Local,
    hub: Rc<ws::Hub>,
}

impl Shard {
    fn new(id: usize, driver: &'static str, shared: Arc<Shared>) -> Rc<Self> {
        let prober = Prober::new(shared.resolver.clone(), shared.server.probe);
        let hub = Rc::new(ws::Hub::new(shared.server.ws));
        Rc::new(Shard {
            id,
            driver,
            shared,
            prober,
            services: RefCell::new(Table::default()),
            sched: RefCell::new(Scheduler::new()),
            stats: RefCell::new(ShardStats::default()),
            wake_sched: Notify::default(),
            probe_done: Notify::default(),
            inflight: Cell::new(0),
            stopping: Cell::new(false),
            connections: Cell::new(0),
            next_generation: Cell::new(0),
            api: crate::api::Local::default(),
            hub,
        })
    }

    /// Adds or replaces a service, keeping its health when it already exists.
    fn upsert(&self, spec: Arc<ServiceSpec>) {
        let now = Instant::now();
        let mut services = self.services.borrow_mut();
        let mut sched = self.sched.borrow_mut();
        let existing = services.slot_of(spec.id);
        match existing.and_then(|at| Some((at, services.at_mut(at)?))) {
            Some((at, slot)) => {
                let replan =
                    slot.spec().interval != spec.interval || slot.spec().paused != spec.paused;
                slot.plan = self.prober.plan(spec);
                if replan {
                    slot.generation = slot.generation.wrapping_add(1);
                    // A paused service has no planned entry of its current generation, which
                    // is what lets `start_due` skip reading the definition.
                    if !slot.spec().paused {
                        sched.push(Due {
                            at: sched::first_run(now, slot.plan.interval.get()),
                            slot: at,
                            generation: slot.generation,
                        });
                    }
                }
            }
            None => {
                let generation = self.next_generation.get();
                self.next_generation.set(generation.wrapping_add(1));
                let (id, first, paused) =
                    (spec.id, sched::first_run(now, spec.interval), spec.paused);
                let at = services.insert(
                    id,
                    Slot {
                        plan: self.prober.plan(spec),
                        health: Health::new(UnixMillis::now()),
                        generation,
                        running: false,
                        last_latency: Duration::ZERO,
                    },
                );
                if !paused {
                    sched.push(Due {
                        at: first,
                        slot: at,
                        generation,
                    });
                }
            }
        }
        drop(sched);
        drop(services);
        self.wake_sched.notify();
    }

    /// Replaces the config-defined services with `specs`; API-defined ones are untouched.
    fn replace_config(&self, specs: Vec<Arc<ServiceSpec>>) {
        let keep: std::collections::HashSet<ServiceId> = specs.iter().map(|s| s.id).collect();
        let removed: Vec<ServiceId> = self
            .services
            .borrow()
            .values()
            .filter(|s| s.spec().source == Source::Config && !keep.contains(&s.plan.id))
            .map(|s| s.plan.id)
            .collect();
        for id in &removed {
            self.services.borrow_mut().remove(*id);
        }
        let (mut added, mut changed) = (0, 0);
        for spec in specs {
            match self.services.borrow().get(spec.id) {
                None => added += 1,
                Some(old) if !same_definition(old.spec(), &spec) => changed += 1,
                Some(_) => {}
            }
            self.upsert(spec);
        }
        if self.sched.borrow().len() > 2 * self.services.borrow().len() + 1024 {
            let services = self.services.borrow();
            self.sched.borrow_mut().compact(|d| {
                services
                    .at(d.slot)
                    .is_some_and(|s| s.generation == d.generation)
            });
        }
        tracing::info!(
            shard = self.id,
            added,
            changed,
            removed = removed.len(),
            "config services reconciled"
        );
    }

    /// Plans and starts every due probe, then sleeps until the next one (or a change).
    async fn scheduler_loop(self: Rc<Self>) {
        loop {
            if self.stopping.get() {
                return;
            }
            let now = Instant::now();
            let max_inflight = self.shared.server.probe.max_inflight;
            loop {
                if self.inflight.get() >= max_inflight {
                    break;
                }
                let due = self.sched.borrow_mut().pop_due(now);
                match due {
                    Some(due) => self.start_due(due, now),
                    None => break,
                }
                self.prefetch_upcoming();
            }
            if self.inflight.get() >= max_inflight {
                self.probe_done.wait_or(None).await;
                continue;
            }
            let next = self.sched.borrow().next_at();
            self.wake_sched.wait_or(next).await;
        }
    }

    /// Warms the cache for the next probes to start: the slot of the one after next, and the
    /// plan of the next (whose slot the previous call warmed). At 100k+ services these loads
    /// are cache misses that otherwise stall `start_due` and the probe's first steps.
    fn prefetch_upcoming(&self) {
        let services = self.services.borrow();
        let sched = self.sched.borrow();
        let mut next = sched.upcoming(2);
        if let Some(d) = next.next() {
            if let Some(slot) = services.at(d.slot) {
                prefetch_read(&*slot.plan);
                prefetch_read(&slot.plan.request);
            }
        }
        if let Some(d) = next.next() {
            services.prefetch(d.slot);
        }
    }

    fn start_due(self: &Rc<Self>, due: Due, now: Instant) {
        let plan = {
            let mut services = self.services.borrow_mut();
            let Some(slot) = services.at_mut(due.slot) else {
                return;
            };
            // Pausing bumps the generation and plans nothing, so a current entry is never of a
            // paused service; the definition itself is not read here.
            if slot.generation != due.generation {
                return;
            }
            debug_assert!(!slot.spec().paused);
            let (next, skipped) =
                sched::next_run(due.at, now, slot.plan.interval.get(), slot.plan.jitter);
            self.sched.borrow_mut().push(Due { at: next, ..due });
            if skipped > 0 {
                self.stats.borrow_mut().skip(Skip::Behind, skipped);
            }
            if slot.running {
                self.stats.borrow_mut().skip(Skip::Overlap, 1);
                return;
            }
            slot.running = true;
            slot.plan.clone()
        };
        self.inflight.set(self.inflight.get() + 1);
        monoio::spawn(self.clone().run_probe(plan, due.slot, due.at));
    }

    async fn run_probe(self: Rc<Self>, plan: Rc<Plan>, at: SlotId, planned: Instant) {
        let start = Instant::now();
        let lag = start.saturating_duration_since(planned);
        let started_at = UnixMillis::now();
        let scheduled_at = UnixMillis(started_at.0 - lag.as_millis() as i64);
        let report = self.prober.probe_planned(&plan, start).await;
        let result = ProbeResult {
            service_id: plan.id,
            scheduled_at,
            started_at,
            timings: report.timings,
            status_code: report.status_code,
            bytes: report.bytes,
            error_kind: report.error.as_ref().map(|e| e.kind()),
            error: report.error.as_ref().map(|e| e.to_string()),
        };
        // The probe's own end reading serves as "now" (no further clock reads per probe).
        let born = start + report.timings.total;
        let now = UnixMillis(started_at.0 + report.timings.total.as_millis() as i64);
        self.finish_probe(&plan, at, result, lag, born, now);
    }

    /// Applies a finished probe: stats, state machine, store, events. `born` (monotonic) and
    /// `now` (wall clock) are when the probe ended; push latency is measured from `born`.
    fn finish_probe(
        &self,
        plan: &Plan,
        at: SlotId,
        result: ProbeResult,
        lag: Duration,
        born: Instant,
        now: UnixMillis,
    ) {
        // Only read for log lines that are enabled, transitions and live results.
        let spec = &plan.spec;
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.probe_done.notify();
        let latency = result.timings.total;
        {
            let mut stats = self.stats.borrow_mut();
            stats.lag(lag);
            stats.probe(result.error_kind, latency);
        }
        let latency_ms = latency.as_secs_f64() * 1000.0;
        match &result.error {
            None => {
                tracing::debug!(service = %spec.name, outcome = "ok", latency_ms, status_code = result.status_code, "probe")
            }
            Some(err) => tracing::info!(
                service = %spec.name,
                outcome = result.error_kind.map(|k| k.as_str()).unwrap_or("error"),
                latency_ms,
                error = %err,
                "probe failed"
            ),
        }
        let transition = {
            let mut services = self.services.borrow_mut();
            // The service may have been removed while its probe ran (and its slot reused by
            // another): keep the result, no state.
            services
                .at_mut(at)
                .filter(|s| s.plan.id == plan.id)
                .and_then(|slot| {
                    slot.running = false;
                    slot.last_latency = latency;
                    let change = slot.health.observe(
                        result.ok(),
                        now,
                        slot.plan.failure_threshold,
                        slot.plan.success_threshold,
                    )?;
                    Some(Transition {
                        seq: self.shared.seq.next(),
                        service_id: plan.id,
                        service: spec.name.clone(),
                        from: change.from,
                        to: change.to,
                        at: now,
                        latency,
                        status_code: result.status_code,
                        error: result.error.clone(),
                    })
                })
        };
        // Result events are encoded only while some client asked for them.
        let result_event = ws::results_wanted()
            .then(|| {
                let status = self.services.borrow().get(plan.id)?.health.status;
                Some(Event::live_result(spec.clone(), &result, status, now, born))
            })
            .flatten();
        if !self.shared.store.push(Record::Result(result)) {
            self.stats.borrow_mut().results_dropped += 1;
        }
        if let Some(t) = transition {
            self.stats.borrow_mut().transitions += 1;
            if t.to == Status::Down {
                tracing::warn!(service = %t.service, seq = t.seq, from = t.from.as_str(), to = t.to.as_str(), error = t.error.as_deref().unwrap_or(""), "service down");
            } else {
                tracing::info!(service = %t.service, seq = t.seq, from = t.from.as_str(), to = t.to.as_str(), "service up");
            }
            let event = Event::live_transition(&t, spec.clone(), born);
            self.shared.store.push(Record::Transition(t));
            self.broadcast(event);
        }
        if let Some(e) = result_event {
            self.broadcast(e);
        }
    }

    /// Sends an event to every other shard and delivers it locally.
    fn broadcast(&self, event: Arc<Event>) {
        for to in 0..self.shared.mesh.shards() {
            if to != self.id {
                // A full ring drops the event for that shard's clients; the mesh counts it.
                let _ =
                    self.shared
                        .mesh
                        .send(From::Shard(self.id), to, ShardMsg::Event(event.clone()));
            }
        }
        self.deliver(&event);
    }

    /// Local fan-out of an event (WebSocket clients attach here).
    fn deliver(&self, event: &Arc<Event>) {
        let mut stats = self.stats.borrow_mut();
        stats.events_received += 1;
        debug_assert!(matches!(
            event.kind,
            EventKind::Transition | EventKind::Result
        ));
        drop(stats);
        self.hub.deliver(event);
    }

    /// This shard's WebSocket clients.
    pub(crate) fn ws_hub(&self) -> &Rc<ws::Hub> {
        &self.hub
    }

    /// Process-wide state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A WebSocket connection ended (it counted against the connection limit).
    pub(crate) fn ws_closed(&self) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
    }

    /// Current state of the services this shard owns.
    fn local_states(&self) -> Vec<ws::protocol::ServiceState> {
        self.services
            .borrow()
            .values()
            .map(|s| ws::protocol::ServiceState {
                id: s.plan.id,
                name: s.spec().name.clone(),
                tags: s.spec().tags.clone(),
                status: s.health.status,
                since: s.health.since,
                latency_ms: (s.last_latency.as_micros() as f64 / 1000.0 * 1000.0).round() / 1000.0,
            })
            .collect()
    }

    /// Current state of every service on every shard, gathered through the mesh.
    pub(crate) async fn all_service_states(&self) -> Vec<ws::protocol::ServiceState> {
        let pending = ask_others(&self.shared, self.id, ShardMsg::States);
        let mut all = self.local_states();
        // Like /metrics: a shard busy for over a second is left out rather than hang.
        for s in gather(pending, Duration::from_secs(1))
            .await
            .into_iter()
            .flatten()
        {
            all.extend(s);
        }
        all
    }

    fn snapshot(&self) -> StatsSnapshot {
        let services = self.services.borrow();
        let mut by_status = [0u64; 3];
        let mut paused = 0;
        for slot in services.values() {
            let i = Status::ALL
                .iter()
                .position(|s| *s == slot.health.status)
                .unwrap_or(0);
            by_status[i] += 1;
            paused += u64::from(slot.spec().paused);
        }
        let mut stats = self.stats.borrow().clone();
        stats.ws = self.hub.stats.borrow().clone();
        StatsSnapshot {
            shard: self.id,
            driver: self.driver,
            stats,
            services: by_status,
            paused,
            inflight: self.inflight.get() as u64,
            prober: self.prober.counters(),
            mesh_dropped: self.shared.mesh.dropped(self.id),
        }
    }

    /// Collects every shard's snapshot through the mesh and renders `/metrics`.
    async fn metrics(&self) -> String {
        let pending = ask_others(&self.shared, self.id, ShardMsg::Stats);
        let mut snaps = vec![self.snapshot()];
        // A shard busy for over a second is left out of this scrape rather than hang it.
        snaps.extend(
            gather(pending, Duration::from_secs(1))
                .await
                .into_iter()
                .flatten(),
        );
        snaps.sort_by_key(|s| s.shard);
        let store = &self.shared.store;
        let global = GlobalStats {
            store_queue_depth: store.queue_depth() as u64,
            store_queue_capacity: store.queue_capacity() as u64,
            store_written: store.counters.written.load(Ordering::Relaxed),
            store_dropped: store.counters.dropped.load(Ordering::Relaxed),
            store_failed_batches: store.counters.failed_batches.load(Ordering::Relaxed),
            store_abandoned: store.counters.abandoned.load(Ordering::Relaxed),
            store_pruned: store.counters.pruned.load(Ordering::Relaxed),
            seq: self.shared.seq.latest(),
            uptime: self.shared.started.elapsed(),
        };
        stats::render(&snaps, &global)
    }

    async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        loop {
            let (stream, _peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(shard = self.id, error = %e, "accept failed");
                    // EMFILE and friends: back off instead of spinning.
                    monoio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.connections.get() >= self.shared.server.limits.max_connections {
                self.stats.borrow_mut().reject(HttpReject::ConnectionLimit);
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.connections.set(self.connections.get() + 1);
            self.stats.borrow_mut().http_connections += 1;
            let me = self.clone();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            monoio::spawn(async move {
                let upgraded = match me.shared.server.tls.clone() {
                    None => http::serve_upgradable(stream, &*me, me.shared.server.limits)
                        .await
                        .map(|up| {
                            match ws::plain::run(me.clone(), up) {
                                Ok(session) => {
                                    monoio::spawn(session);
                                }
                                Err(e) => {
                                    tracing::warn!(shard = me.id, error = %e, "websocket session could not start");
                                    me.ws_closed();
                                }
                            }
                        }),
                    Some(tls) => {
                        let acceptor = monoio_rustls::TlsAcceptor::from(tls.config);
                        // A client that never finishes its handshake loses its slot.
                        match monoio::time::timeout(tls.handshake_timeout, acceptor.accept(stream))
                            .await
                        {
                            // wss: the same session over the TLS stream (its frames are
                            // encrypted per client, which TLS requires anyway).
                            Ok(Ok(s)) => http::serve_upgradable(s, &*me, me.shared.server.limits)
                                .await
                                .map(|up| {
                                    monoio::spawn(ws::conn::run(me.clone(), up, fd));
                                }),
                            Ok(Err(e)) => {
                                tracing::debug!(shard = me.id, error = %e, "TLS handshake failed");
                                me.stats.borrow_mut().reject(HttpReject::TlsHandshake);
                                None
                            }
                            Err(_) => {
                                me.stats.borrow_mut().reject(HttpReject::TlsHandshake);
                                None
                            }
                        }
                    }
                };
                me.stats.borrow_mut().http_connections -= 1;
                // Only /ws answers 101; the session then runs as its own (smaller) task and
                // keeps counting against the connection limit until it ends.
                if upgraded.is_none() {
                    me.connections.set(me.connections.get().saturating_sub(1));
                }
            });
        }
    }

    /// Processes mesh messages until told to shut down, then drains in-flight probes.
    async fn mesh_loop(self: Rc<Self>) {
        let mut batch = Vec::with_capacity(256);
        loop {
            batch.clear();
            let mesh = self.shared.mesh.clone();
            mesh.recv_batch(self.id, &mut batch, 256).await;
            self.stats.borrow_mut().mesh_received += batch.len() as u64;
            for msg in batch.drain(..) {
                match msg {
                    ShardMsg::Event(e) => self.deliver(&e),
                    ShardMsg::Stats(reply) => {
                        let _ = reply.send(self.snapshot());
                    }
                    ShardMsg::ReplaceConfig(specs) => self.replace_config(specs),
                    ShardMsg::Api(op, reply) => {
                        // Writes await the writer thread; a task keeps the mesh loop moving.
                        let me = self.clone();
                        monoio::spawn(async move {
                            let _ = reply.send(crate::api::services::apply(&*me, op).await);
                        });
                    }
                    ShardMsg::Shutdown => {
                        self.drain().await;
                        return;
                    }
                    ShardMsg::States(reply) => {
                        let _ = reply.send(self.local_states());
                    }
                }
            }
        }
    }

    async fn drain(&self) {
        self.stopping.set(true);
        // WebSocket clients get a 1001 close; their writers run while probes finish.
        self.hub.close_all();
        self.wake_sched.notify();
        let deadline = Instant::now() + self.shared.server.shutdown_grace;
        while self.inflight.get() > 0 && Instant::now() < deadline {
            self.probe_done.wait_or(Some(deadline)).await;
        }
        // Let the close handshakes finish (bounded), so clients see 1001 rather than a reset.
        let ws_deadline = Instant::now() + self.shared.server.ws.close_timeout;
        while !self.hub.is_empty() && Instant::now() < ws_deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(
            shard = self.id,
            abandoned = self.inflight.get(),
            "shard stopped"
        );
    }
}

/// A reply awaited from another shard; `None` where the ring to it was full.
pub(crate) type Pending<T> = Option<futures_channel::oneshot::Receiver<T>>;

/// Sends `make(reply)` to every shard but `me` through the mesh, without waiting; pair with
/// `gather`. Doing local work between the two lets every shard work at once.
pub(crate) fn ask_others<T>(
    shared: &Shared,
    me: usize,
    make: impl Fn(futures_channel::oneshot::Sender<T>) -> ShardMsg,
) -> Vec<Pending<T>> {
    (0..shared.mesh.shards())
        .filter(|to| *to != me)
        .map(|to| {
            let (tx, rx) = futures_channel::oneshot::channel();
            shared
                .mesh
                .send(From::Shard(me), to, make(tx))
                .ok()
                .map(|()| rx)
        })
        .collect()
}

/// Awaits the answers of `ask_others`, each for at most `wait`; `None` for a shard that could
/// not be asked or did not answer in time.
pub(crate) async fn gather<T>(pending: Vec<Pending<T>>, wait: Duration) -> Vec<Option<T>> {
    let mut out = Vec::with_capacity(pending.len());
    for rx in pending {
        out.push(match rx {
            Some(rx) => monoio::time::timeout(wait, rx)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        });
    }
    out
}

/// True when two definitions probe the same way (TLS settings aside).
fn same_definition(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    a.url == b.url
        && a.method == b.method
        && a.headers == b.headers
        && a.body == b.body
        && a.interval == b.interval
        && a.timeout == b.timeout
        && a.phase_timeouts == b.phase_timeouts
        && a.jitter == b.jitter
        && a.tags == b.tags
        && a.expect == b.expect
        && a.failure_threshold == b.failure_threshold
        && a.success_threshold == b.success_threshold
        && a.paused == b.paused
        && a.max_body_bytes == b.max_body_bytes
}

impl http::Handler for Shard {
    async fn handle(&self, req: Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => {
                // /metrics needs a read token when auth is on: it reveals fleet size and health.
                if let Err(e) = self.shared.auth.check(&req, crate::auth::Scope::Read) {
                    return e.response();
                }
                let mut r = Response::text(200, self.metrics().await);
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r
            }
            ("GET", "/healthz") => Response::text(200, "ok\n"),
            (_, "/ws") => match ws::handshake::accept(&req) {
                // A valid upgrade still needs a read token when auth is on (header or ?token=).
                Ok(switch) => match self.shared.auth.check(&req, crate::auth::Scope::Read) {
                    Ok(()) => switch,
                    Err(e) => e.response(),
                },
                Err(bad) => bad,
            },
            ("GET", "/readyz") => {
                if self.shared.ready() {
                    Response::text(200, "ready\n")
                } else if self.shared.stopping.load(Ordering::Acquire) {
                    Response::text(503, "shutting down\n")
                } else {
                    Response::text(503, "starting\n")
                }
            }
            (_, "/metrics" | "/healthz" | "/readyz") => {
                Response::error(405, "method_not_allowed", "only GET is allowed here")
                    .with_header("Allow", "GET, HEAD")
            }
            (_, p) if p.starts_with("/api/") => {
                let r = crate::api::handle(self, &req).await;
                self.stats.borrow_mut().api_response(r.status);
                r
            }
            _ => Response::error(404, "not_found", &format!("no route for {}", req.path)),
        }
    }

    fn on_request(&self) {
        self.stats.borrow_mut().http_requests += 1;
    }

    fn on_reject(&self, why: HttpReject) {
        self.stats.borrow_mut().reject(why);
    }
}

impl crate::api::Host for Shard {
    fn shard_id(&self) -> usize {
        self.id
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn api_local(&self) -> &crate::api::Local {
        &self.api
    }

    fn view(&self, id: ServiceId) -> Option<crate::api::ServiceView> {
        self.services.borrow().get(id).map(slot_view)
    }

    fn views(
        &self,
        keep: &dyn Fn(&crate::api::ServiceView) -> bool,
    ) -> Vec<crate::api::ServiceView> {
        self.services
            .borrow()
            .values()
            .map(slot_view)
            .filter(|v| keep(v))
            .collect()
    }

    fn put(&self, spec: Arc<ServiceSpec>) {
        self.upsert(spec);
    }

    fn remove(&self, id: ServiceId) -> bool {
        // Heap entries of a removed slot are skipped when they surface (no slot, no probe).
        self.services.borrow_mut().remove(id).is_some()
    }
}

fn slot_view(slot: &Slot) -> crate::api::ServiceView {
    crate::api::ServiceView {
        spec: slot.spec().clone(),
        status: slot.health.status,
        since: slot.health.since,
    }
}

/// Binds one SO_REUSEPORT listener per shard on the same address.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let opts = ListenerOpts::default().reuse_port(true).backlog(4096);
    TcpListener::bind_with_config(addr, &opts)
}

/// io_uring set-up flags for a shard's ring. By default the kernel interrupts a running shard
/// (an IPI, then task work on its way back to user space) for each completion, i.e. for nearly
/// every probe response. With `COOP_TASKRUN` completions wait for the shard's next entry into
/// the kernel, which its event loop makes every turn anyway (submit or wait). Measured with
/// peer-bench: shard CPU per probe 23-25 us -> 15-18 us. (`DEFER_TASKRUN` measured no better.)
fn uring_setup() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun();
    b
}

/// Runs `fut` on the driver `choice` asks for; returns the driver's name.
fn run_on_driver<F, Fut>(choice: DriverChoice, id: usize, make: F) -> io::Result<()>
where
    F: FnOnce(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    let entries = 4096;
    if choice != DriverChoice::Epoll {
        // Tuned ring first (see `uring_setup`); a kernel that refuses its flags gets a plain one.
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(uring_setup())
            .enable_timer()
            .build()
            .or_else(|_| {
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(entries)
                    .enable_timer()
                    .build()
            });
        match built {
            Ok(mut rt) => {
                rt.block_on(make("io_uring"));
                return Ok(());
            }
            Err(e) if choice == DriverChoice::Auto => {
                // Seccomp, old kernels and low `ulimit -l` land here; epoll still works.
                tracing::warn!(shard = id, error = %e, "io_uring unavailable, falling back to epoll");
            }
            Err(e) => return Err(e),
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .with_entries(entries)
        .enable_timer()
        .build()?;
    rt.block_on(make("epoll"));
    Ok(())
}

/// Starts shard `id` on the current thread and runs it until shutdown.
///
/// `started` receives the bind result once the listener is up (or failed).
pub fn run(
    id: usize,
    cpu: Option<usize>,
    shared: Arc<Shared>,
    services: Vec<Arc<ServiceSpec>>,
    started: std::sync::mpsc::Sender<io::Result<()>>,
) {
    if let Some(cpu) = cpu {
        if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
            tracing::warn!(shard = id, cpu, error = ?e, "could not pin shard");
        }
    }
    let choice = shared.server.driver;
    let addr = shared.server.listen;
    let started2 = started.clone();
    let res = run_on_driver(choice, id, move |driver| async move {
        let listener = match bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = started2.send(Err(e));
                return;
            }
        };
        tracing::info!(
            shard = id,
            driver,
            services = services.len(),
            "shard started"
        );
        let shard = Shard::new(id, driver, shared.clone());
        for spec in services {
            shard.upsert(spec);
        }
        monoio::spawn(shard.clone().accept_loop(listener));
        monoio::spawn(shard.clone().scheduler_loop());
        monoio::spawn(shard.hub.clone().tick_loop());
        monoio::spawn(shard.hub.clone().flush_loop());
        shard.shared.shards_ready.fetch_add(1, Ordering::AcqRel);
        let _ = started2.send(Ok(()));
        shard.mesh_loop().await;
    });
    if let Err(e) = res {
        let _ = started.send(Err(e));
    }
}
