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
use crate::config::{Config, ConfigError};
use crate::model::ServiceSpec;
use crate::pipeline::judge::SeqCounter;
use crate::rt::dns::ResolverHandle;
use crate::rt::mesh::{From, Mesh};
use crate::shard::{self, ShardMsg, Shared};
use crate::store::reader::ReadPool;
use crate::store::{self, StoreError, Writer};
use crate::ws::ResultInterest;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
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

/// Ring capacity between each pair of shards.
const MESH_CAPACITY: usize = 4096;

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
fn concrete_listen_addr(addr: SocketAddr) -> Result<SocketAddr, ServerError> {
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
const READ_QUEUE: usize = 256;

/// Opens the API read pool and loads the API-defined services persisted in the store.
///
/// A stored service that no longer validates (e.g. `defaults` changed) or whose name is now
/// taken by a config service is skipped with a warning; its row and results stay.
fn open_reader(cfg: &Config) -> Result<(store::reader::ReadPool, Vec<ServiceSpec>), ServerError> {
    let storage = cfg.storage.clone();
    let reader = ReadPool::open(
        move || store::open_reader(&storage),
        store::reader_threads(&cfg.storage),
        READ_QUEUE,
    )?;
    let ro = store::open_reader(&cfg.storage)?;
    let config_ids: std::collections::HashSet<_> = cfg.services.iter().map(|s| s.id).collect();
    let mut out = Vec::new();
    for row in ro.services(false)? {
        if row.source != "api" {
            continue;
        }
        if config_ids.contains(&row.id) {
            tracing::warn!(service = %row.name, "API service shadowed by a config service of the same name");
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(&row.spec)
            .map_err(|e| e.to_string())
            .and_then(|v| crate::config::api_service(&v, &cfg.defaults).map_err(|e| e.to_string()));
        match parsed {
            Ok(spec) => out.push(spec),
            Err(e) => tracing::warn!(service = %row.name, error = %e, "stored API service skipped"),
        }
    }
    Ok((reader, out))
}

/// A running server: its threads and how to stop them.
pub struct Running {
    shared: Arc<Shared>,
    shards: Vec<JoinHandle<()>>,
    writer: Writer,
    config_path: PathBuf,
    /// The address the shards listen on.
    pub listen: SocketAddr,
}

/// Starts everything described by `cfg` (read from `config_path`, re-read on reload).
pub fn start(mut cfg: Config, config_path: &Path) -> Result<Running, ServerError> {
    let n = shard_count(cfg.server.shards);
    cfg.server.listen = concrete_listen_addr(cfg.server.listen)?;
    let mut backend = store::open(&cfg.storage)?;
    backend.sync_services(&cfg.services)?;
    let (writer, handle, info) = Writer::spawn(backend, &cfg.storage)?;
    let (reader, api_services) = open_reader(&cfg)?;
    let resolver = ResolverHandle::spawn(cfg.server.resolver);
    let shared = Arc::new(Shared {
        mesh: Mesh::new(n, MESH_CAPACITY),
        store: handle,
        seq: SeqCounter::starting_after(info.max_seq),
        resolver,
        server: cfg.server.clone(),
        started: Instant::now(),
        shards_ready: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        auth: crate::auth::Auth::new(&cfg.auth),
        reader,
        registry: writer.registry(),
        defaults: cfg.defaults.clone(),
        interest: ResultInterest::default(),
    });
    if !shared.auth.enabled() {
        tracing::warn!(
            addr = %cfg.server.listen,
            "auth is off: anyone who can reach this port can change services"
        );
    }
    let api_total = api_services.len();
    cfg.services.extend(api_services);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut threads = Vec::with_capacity(n);
    let (tx, rx) = std::sync::mpsc::channel();
    let total = cfg.services.len();
    for (id, services) in partition(std::mem::take(&mut cfg.services), n)
        .into_iter()
        .enumerate()
    {
        let shared = shared.clone();
        let tx = tx.clone();
        let cpu = cfg.server.pin.then_some(id % cores);
        let t = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || shard::run(id, cpu, shared, services, tx))
            .map_err(|source| ServerError::Os {
                what: "spawning a shard thread",
                source,
            })?;
        threads.push(t);
    }
    drop(tx);
    let mut failure = None;
    for id in 0..n {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                failure.get_or_insert(ServerError::Listen {
                    shard: id,
                    addr: cfg.server.listen,
                    source,
                });
            }
            Err(_) => {
                failure.get_or_insert(ServerError::Os {
                    what: "starting shards",
                    source: std::io::Error::other("a shard thread exited during start"),
                });
            }
        }
    }
    let running = Running {
        shared,
        shards: threads,
        writer,
        config_path: config_path.to_path_buf(),
        listen: cfg.server.listen,
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
        seq = info.max_seq,
        "ringwatch listening"
    );
    Ok(running)
}

impl Running {
    /// Sends `msg(shard)` to every shard from the control ring, retrying while a ring is full.
    fn tell_all(&self, mut msg: impl FnMut(usize) -> ShardMsg) {
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
        if cfg.server.listen != self.listen && cfg.server.listen.port() != 0 {
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
