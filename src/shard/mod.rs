//! A shard: one pinned thread, one monoio executor, and everything it owns.
//!
//! A shard owns a slice of the services (`ServiceId::owner`) and composes the pipeline stages
//! for them on its core: the scheduler hands due jobs to the prober, results go to the judge,
//! transitions and results to the store and the fan-out (`probing`, across the seams of
//! `pipeline::seam`). It also serves the HTTP connections the kernel hands its listener
//! (SO_REUSEPORT; `accept`, `routes`), and it is the host the API (`api::Host`) and the
//! WebSocket sessions (`ws::Feed`) run against. Nothing it owns is shared: other shards and
//! threads reach it only through the mesh (`messages`).
//!
//! Files: `services` (the table of owned services), `probing` (scheduler loop, probe, observe,
//! record, publish), `messages` (the mesh loop and what shards ask each other), `gather`
//! (stats and `/metrics`), `accept` (listener and connections), `routes` (HTTP routing and the
//! API and WebSocket hosts).

mod accept;
mod gather;
mod messages;
mod probing;
mod remote;
mod routes;
mod services;

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ServerConfig, ServiceDefaults};
use crate::model::ServiceSpec;
use crate::pipeline::sched::Scheduler;
use crate::pipeline::seam::Routes;
use crate::probe::Prober;
use crate::rt::dns::ResolverHandle;
use crate::rt::mesh::Mesh;
use crate::rt::notify::Notify;
use crate::rt::table::Table;
use crate::store::reader::ReadPool;
use crate::store::{LastState, LatestSeq, RegistryHandle, StoreHandle};
use crate::ws::{self, ResultInterest};

pub use gather::{FrontStats, ShardStats, StatsSnapshot};
pub use messages::ShardMsg;

use services::Slot;

/// Process-wide context every shard reads; written only through atomics. Only the shard sees
/// it: the API and the WebSocket sessions get what they need through their host traits.
pub struct Shared {
    /// The ring mesh.
    pub mesh: Arc<Mesh<ShardMsg>>,
    /// Producer side of the storage writer queue.
    pub store: StoreHandle,
    /// The latest transition seq committed and published (the writer advances it).
    pub seq: LatestSeq,
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
    /// The store's reader threads (API history, WebSocket `since`).
    pub reader: ReadPool,
    /// Persists API-defined services on the writer thread.
    pub registry: RegistryHandle,
    /// Config `defaults`, applied to services created over the API.
    pub defaults: Arc<ServiceDefaults>,
    /// How many WebSocket clients, on all shards, want result events.
    pub interest: ResultInterest,
    /// A cluster node's transport state (None standalone).
    pub cluster: Option<crate::remote::ClusterHandle>,
}

impl Shared {
    /// Ready when every shard listens, shutdown has not begun and (in a cluster) Redis
    /// answers; otherwise the reason `/readyz` gives.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down");
        }
        if self.shards_ready.load(Ordering::Acquire) != self.mesh.shards() {
            return Err("starting");
        }
        if self.cluster.as_ref().is_some_and(|c| !c.redis_up()) {
            return Err("redis unavailable");
        }
        // While the writer cannot write, results only buffer (then drop) and history reads
        // fail: not fit to take traffic (docs/storage.md).
        if !self.store.counters.up() {
            return Err("store unavailable");
        }
        Ok(())
    }
}

/// One shard's state. Lives in an `Rc` on its own thread.
pub struct Shard {
    id: usize,
    driver: &'static str,
    shared: Arc<Shared>,
    routes: Routes,
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
    /// wheel entry of its deleted predecessor.
    next_generation: Cell<u32>,
    api: crate::api::Local,
    hub: Rc<ws::Hub>,
    /// Cluster jobs waiting for a free probe slot (at most `max_inflight`).
    remote_queue: RefCell<std::collections::VecDeque<crate::remote::RemoteJob>>,
    /// Plans of the definitions cluster jobs carried, by service.
    remote_plans:
        RefCell<std::collections::HashMap<crate::model::ServiceId, Rc<crate::probe::plan::Plan>>>,
}

impl Shard {
    fn new(id: usize, driver: &'static str, shared: Arc<Shared>, routes: Routes) -> Rc<Self> {
        let prober = Prober::new(shared.resolver.clone(), shared.server.probe);
        let hub = Rc::new(ws::Hub::new(shared.server.ws, shared.interest.clone()));
        Rc::new(Shard {
            id,
            driver,
            shared,
            routes,
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
            remote_queue: RefCell::default(),
            remote_plans: RefCell::default(),
        })
    }
}

/// Starts shard `id` on the current thread and runs it until shutdown.
///
/// `started` receives the bind result once the listener is up (or failed).
pub fn run(
    id: usize,
    cpu: Option<usize>,
    shared: Arc<Shared>,
    services: Vec<Arc<ServiceSpec>>,
    restored: Vec<LastState>,
    routes: Routes,
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
    let res = crate::rt::driver::run_on_driver(choice, id, move |driver| async move {
        let listener = match accept::bind(addr) {
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
        let shard = Shard::new(id, driver, shared.clone(), routes);
        for spec in services {
            shard.upsert(spec);
        }
        shard.restore(&restored);
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
