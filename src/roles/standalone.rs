//! The standalone process: starts the resolver, the storage writer and readers and the shards,
//! then handles signals.
//!
//! SIGHUP reloads the config file and hands each shard its new set of config-defined services.
//! SIGTERM/SIGINT stop the shards (each finishes its in-flight probes within the grace period),
//! then drain the storage writer so every completed probe is on disk before exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::service_manager;
use crate::config::{Config, LoadError};
use crate::model::ServiceSpec;
use crate::model::{Status, Transition};
use crate::pipeline::event::Event;
use crate::pipeline::seam::Routes;
use crate::rt::dns::ResolverHandle;
use crate::rt::mesh::{From, Mesh};
use crate::shard::{self, ShardMsg, Shared};
use crate::store::reader::ReadPool;
use crate::store::{self, LastState, Publish, StoreError, Writer};
use crate::ws::ResultInterest;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(#[from] LoadError),
    /// Another instance holds the port or the database.
    #[error("{0}")]
    Instance(#[from] super::instance::InstanceError),
    /// The store could not be opened or drained.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A shard could not bind its listener or build its runtime.
    #[error("shard {shard}: cannot listen on {addr}: {source}")]
    Listen {
        /// Which shard.
        shard: usize,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Threads or signals could not be set up.
    #[error("{what}: {source}")]
    Os {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ServerError {
    /// True when starting again later may succeed unchanged (the database was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, ServerError::Store(e) if e.is_transient())
    }
}

/// Ring capacity between each pair of shards.
pub(super) const MESH_CAPACITY: usize = 4096;

/// Shard count for a config value (0 = one per available core).
pub fn shard_count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// Splits services by owning shard.
pub fn partition(services: Vec<ServiceSpec>, shards: usize) -> Vec<Vec<Arc<ServiceSpec>>> {
    let mut out = vec![Vec::new(); shards];
    for s in services {
        out[s.id.owner(shards)].push(Arc::new(s));
    }
    out
}

/// Resolves port 0 to a concrete free port so every shard binds the same one.
pub(super) fn concrete_listen_addr(addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Os {
        what: "choosing a free port",
        source,
    })?;
    probe.local_addr().map_err(|source| ServerError::Os {
        what: "choosing a free port",
        source,
    })
}

/// Queue bound of the API read pool (full = 503 busy); its threads: `store::reader_threads`.
pub(super) const READ_QUEUE: usize = 256;

/// Opens the API read pool and loads the API-defined services persisted in the store.
///
/// A stored service that no longer validates (e.g. `defaults` changed) or whose name is now
/// taken by a config service is skipped with a warning; its row and results stay.
pub(super) fn open_reader(cfg: &Config) -> Result<Stored, ServerError> {
    let storage = cfg.storage.clone();
    let reader = ReadPool::open(
        move || store::open_reader(&storage),
        store::reader_threads(&cfg.storage),
        READ_QUEUE,
    )?;
    let ro = store::open_reader(&cfg.storage)?;
    let out = api_services(ro.as_ref(), &cfg.services, &cfg.defaults, true)?;
    Ok(Stored {
        reader,
        api_services: out,
        last_states: ro.last_states()?,
    })
}

/// The API-defined services stored in the registry, validated with the current `defaults`.
///
/// A stored service that no longer validates (e.g. `defaults` changed) or whose name is now
/// taken by a config service is skipped (with a warning when `warn`); its row and results stay.
pub(super) fn api_services(
    ro: &dyn store::StoreReader,
    config: &[ServiceSpec],
    defaults: &crate::config::ServiceDefaults,
    warn: bool,
) -> Result<Vec<ServiceSpec>, StoreError> {
    let config_ids: std::collections::HashSet<_> = config.iter().map(|s| s.id).collect();
    let mut out = Vec::new();
    for row in ro.services(false)? {
        if row.source != "api" {
            continue;
        }
        if config_ids.contains(&row.id) {
            if warn {
                tracing::warn!(service = %row.name, "API service shadowed by a config service of the same name");
            }
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(&row.spec)
            .map_err(|e| e.to_string())
            .and_then(|v| crate::config::api_service(&v, defaults).map_err(|e| e.to_string()));
        match parsed {
            Ok(spec) => out.push(spec),
            Err(e) if warn => {
                tracing::warn!(service = %row.name, error = %e, "stored API service skipped")
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// What start-up reads from the store besides the writer's `StoreInfo`.
pub(super) struct Stored {
    /// The read pool for the API and `since`.
    pub(super) reader: ReadPool,
    /// API-defined services to run.
    pub(super) api_services: Vec<ServiceSpec>,
    /// Each service's last stored status.
    pub(super) last_states: Vec<LastState>,
}

/// Publishes committed transitions to every shard's clients: encodes each event once on the
/// writer thread and hands the same buffer to every shard through the mesh's store rings.
struct MeshPublisher {
    mesh: Arc<Mesh<ShardMsg>>,
}

impl Publish for MeshPublisher {
    fn transition(&mut self, t: &Transition, spec: &Arc<ServiceSpec>, born: Instant) {
        if t.to == Status::Down {
            tracing::warn!(service = %t.service, seq = t.seq, from = t.from.as_str(), to = t.to.as_str(), error = t.error.as_deref().unwrap_or(""), "service down");
        } else {
            tracing::info!(service = %t.service, seq = t.seq, from = t.from.as_str(), to = t.to.as_str(), "service up");
        }
        let event = Event::live_transition(t, spec.clone(), born);
        for to in 0..self.mesh.shards() {
            // A full ring drops the event for that shard's clients; the mesh counts it, and a
            // client can resume from the store with `since`.
            let _ = self
                .mesh
                .send(From::Store, to, ShardMsg::Event(event.clone()));
        }
    }
}

/// A running server: its threads and how to stop them.
pub struct Running {
    /// Held until the process exits: no second instance on this port or database.
    pub(super) _lock: super::instance::InstanceLock,
    pub(super) shared: Arc<Shared>,
    pub(super) shards: Vec<JoinHandle<()>>,
    pub(super) writer: Writer,
    pub(super) config_path: PathBuf,
    /// The address the shards listen on.
    pub listen: SocketAddr,
    /// `listen` came from `--listen`, so the file's `server.listen` is not compared on reload.
    pub(super) listen_from_flag: bool,
    /// A cluster node's transport threads and registry mirror (None standalone).
    pub(super) cluster: Option<super::cluster::Parts>,
}

/// Starts everything described by `cfg` (read from `config_path`, re-read on reload).
pub fn start(mut cfg: Config, config_path: &Path) -> Result<Running, ServerError> {
    let n = shard_count(cfg.server.shards);
    cfg.server.listen = concrete_listen_addr(cfg.server.listen)?;
    let lock = super::instance::InstanceLock::acquire(cfg.server.listen, &cfg.storage)?;
    let mesh = Mesh::new(n, MESH_CAPACITY);
    // Standalone, an unreachable database ends start-up with one line (a process alone on a
    // host is restarted by its supervisor); a cluster node waits for it (`waiting`).
    let mut backend = store::open(&cfg.storage)?;
    backend.sync_services(&cfg.services)?;
    let publisher = Box::new(MeshPublisher { mesh: mesh.clone() });
    let spawned = Writer::spawn_publishing(backend, &cfg.storage, publisher)?;
    let stored = open_reader(&cfg)?;
    let shared = Arc::new(Shared {
        mesh,
        store: spawned.handle,
        seq: spawned.latest,
        resolver: ResolverHandle::spawn(cfg.server.resolver),
        server: cfg.server.clone(),
        started: Instant::now(),
        shards_ready: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        auth: crate::auth::Auth::new(&cfg.auth),
        reader: stored.reader,
        registry: spawned.writer.registry(),
        defaults: cfg.defaults.clone(),
        interest: ResultInterest::default(),
        cluster: None,
    });
    if !shared.auth.enabled() {
        tracing::warn!(
            addr = %cfg.server.listen,
            "auth is off: anyone who can reach this port can change services"
        );
    }
    let api_total = stored.api_services.len();
    cfg.services.extend(stored.api_services);
    let total = cfg.services.len();
    let services = partition(std::mem::take(&mut cfg.services), n);
    let (threads, failure) =
        spawn_shards(&shared, &cfg.server, services, stored.last_states, |_| {
            Routes::local()
        })?;
    let running = Running {
        _lock: lock,
        shared,
        shards: threads,
        writer: spawned.writer,
        config_path: config_path.to_path_buf(),
        listen: cfg.server.listen,
        listen_from_flag: false,
        cluster: None,
    };
    if let Some(e) = failure {
        let _ = running.stop();
        return Err(e);
    }
    tracing::info!(
        addr = %cfg.server.listen,
        shards = n,
        services = total,
        api_services = api_total,
        tls = cfg.server.tls.is_some(),
        seq = spawned.info.max_seq,
        "ringwatch listening"
    );
    Ok(running)
}

/// Starts one thread per shard with its services, their restored statuses and its routes, and
/// waits for every shard to listen; returns the threads and the first start-up failure.
pub(super) fn spawn_shards(
    shared: &Arc<Shared>,
    server: &crate::config::ServerConfig,
    services: Vec<Vec<Arc<ServiceSpec>>>,
    last_states: Vec<LastState>,
    routes: impl Fn(usize) -> Routes,
) -> Result<(Vec<JoinHandle<()>>, Option<ServerError>), ServerError> {
    let n = services.len();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut restored = vec![Vec::new(); n];
    for st in last_states {
        restored[st.service_id.owner(n)].push(st);
    }
    let mut threads = Vec::with_capacity(n);
    let (tx, rx) = std::sync::mpsc::channel();
    for (id, (services, restored)) in services.into_iter().zip(restored).enumerate() {
        let shared = shared.clone();
        let tx = tx.clone();
        let cpu = server.pin.then_some(id % cores);
        let routes = routes(id);
        let t = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || shard::run(id, cpu, shared, services, restored, routes, tx))
            .map_err(|source| ServerError::Os {
                what: "spawning a shard thread",
                source,
            })?;
        threads.push(t);
    }
    drop(tx);
    let mut failure = None;
    for id in 0..n {
        let err = match rx.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(source)) => ServerError::Listen {
                shard: id,
                addr: server.listen,
                source,
            },
            Err(_) => ServerError::Os {
                what: "starting shards",
                source: std::io::Error::other("a shard thread exited during start"),
            },
        };
        failure.get_or_insert(err);
    }
    Ok((threads, failure))
}

impl Running {
    /// Marks `listen` as set by `run --listen`: a reload then ignores the file's address.
    pub fn with_listen_flag(mut self) -> Self {
        self.listen_from_flag = true;
        self
    }

    /// Sends `msg(shard)` to every shard from the control ring, retrying while a ring is full.
    pub(super) fn tell_all(&self, mut msg: impl FnMut(usize) -> ShardMsg) {
        let mesh = &self.shared.mesh;
        for to in 0..mesh.shards() {
            let mut m = msg(to);
            for _ in 0..1000 {
                match mesh.send(From::Control, to, m) {
                    Ok(()) => break,
                    Err(back) => {
                        m = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
    }

    /// Re-reads the config file and reconciles config-defined services on every shard.
    pub fn reload(&self) -> Result<usize, ServerError> {
        let cfg = Config::load(&self.config_path)?;
        if !self.listen_from_flag
            && cfg.server.listen != self.listen
            && cfg.server.listen.port() != 0
        {
            tracing::warn!("server settings changed; they take effect after a restart");
        }
        let n = self.shared.mesh.shards();
        // The writer thread owns the connection; it updates the registry between batches.
        if let Err(e) = self
            .writer
            .sync_services(cfg.services.clone(), Duration::from_secs(10))
        {
            tracing::warn!(error = %e, "could not update the service registry");
        }
        let total = cfg.services.len();
        if let Some(c) = &self.cluster {
            // The registry mirror merges them with the API's services and tells the shards.
            c.config_changed(cfg.services);
            return Ok(total);
        }
        let mut parts = partition(cfg.services, n);
        self.tell_all(|to| ShardMsg::ReplaceConfig(std::mem::take(&mut parts[to])));
        Ok(total)
    }

    /// Stops the shards (finishing in-flight probes), then drains the writer.
    pub fn stop(self) -> Result<(), ServerError> {
        self.shared.stopping.store(true, Ordering::Release);
        self.tell_all(|_| ShardMsg::Shutdown);
        for t in self.shards {
            let _ = t.join();
        }
        if let Some(c) = &self.cluster {
            c.drain();
        }
        let written = self.shared.store.counters.written.load(Ordering::Relaxed);
        self.writer.finish()?;
        let total = self.shared.store.counters.written.load(Ordering::Relaxed);
        tracing::info!(
            flushed = total - written,
            written = total,
            dropped = self.shared.store.counters.dropped.load(Ordering::Relaxed),
            "store drained"
        );
        Ok(())
    }

    /// Blocks handling SIGHUP (reload) until SIGTERM or SIGINT, then stops cleanly.
    pub fn serve_signals(self) -> Result<(), ServerError> {
        let mut signals =
            Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(|source| ServerError::Os {
                what: "installing signal handlers",
                source,
            })?;
        service_manager::started(self.listen, self.shared.mesh.shards()); // sd_notify READY=1
        for sig in signals.forever() {
            match sig {
                // sd_notify RELOADING=1 before, READY=1 after
                SIGHUP => match service_manager::reload(|| self.reload()) {
                    Ok(n) => tracing::info!(services = n, "config reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused; keeping the running config")
                    }
                },
                _ => {
                    tracing::info!(signal = sig, "shutting down");
                    service_manager::stopping(); // sd_notify STOPPING=1
                    break;
                }
            }
        }
        self.stop()
    }
}
