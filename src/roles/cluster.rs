//! A cluster node: the standalone pipeline cut at its seams, the cut ends wired to Redis
//! Streams and PostgreSQL, in the roles this node plays.
//!
//! Every node keeps a mirror of the service registry in its shards (config services from its
//! own file, API services from PostgreSQL, looked at every second), so the REST API, WebSocket
//! snapshots and per-service metrics work on any node, and it follows the events stream so its
//! view of each service's status is current. On top of that:
//! - **scheduler**: the shards plan every slot on each service's fixed grid and hand the due
//!   jobs to the dispatcher, which writes them to the jobs stream while this node holds the
//!   lease (`remote::lease`, `remote::dispatch`);
//! - **worker**: jobs read from the stream run on the shard that owns the service, with the
//!   standalone prober; results go back through the results stream (`remote::worker`);
//! - **ingest**: results are stored and judged in PostgreSQL (`roles::ingest`);
//! - **gateway**: the events stream's transitions reach this node's WebSocket clients through
//!   the same encode-once fan-out as standalone (every node reads the stream; a node without
//!   the role simply has no reason to be given clients).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::standalone::{
    api_services, concrete_listen_addr, open_reader, partition, shard_count, spawn_shards, Running,
    ServerError, MESH_CAPACITY,
};
use crate::config::{ClusterConfig, Config, ServiceDefaults};
use crate::model::{ServiceId, ServiceSpec, Status, UnixMillis};
use crate::pipeline::event::Event;
use crate::pipeline::seam::{Dispatch, Forwarded, JobRoute, ResultRoute, Routes};
use crate::remote::dispatch::Dispatcher;
use crate::remote::{self, ClusterCounters, ClusterHandle, Link, RemoteJob, Sinks};
use crate::rt::dns::ResolverHandle;
use crate::rt::mesh::{From, Mesh};
use crate::rt::outbox::{outbox, Outbox};
use crate::shard::{ShardMsg, Shared};
use crate::store::{self, LatestSeq, Writer};
use crate::ws::ResultInterest;

/// Due jobs a scheduler's shards may hand the dispatcher before it drains them.
const DISPATCH_OUTBOX: usize = 262_144;
/// Results a worker's shards may hand the results writer before it drains them.
const RESULTS_OUTBOX: usize = 65_536;
/// How often the registry mirror looks at the API services (a fingerprint query; the rows only
/// when it moved).
const REGISTRY_EVERY: Duration = Duration::from_secs(1);
/// The mirror reads every row at least this often anyway (a backstop for the fingerprint).
const REGISTRY_FULL_EVERY: Duration = Duration::from_secs(30);
/// How long a stopping worker waits for its results to reach Redis.
const DRAIN_BUDGET: Duration = Duration::from_secs(5);

/// Delivers what the transport reads to the shards, through the mesh's remote rings.
struct MeshSinks {
    mesh: Arc<Mesh<ShardMsg>>,
}

impl Sinks for MeshSinks {
    fn job(&self, job: RemoteJob) -> bool {
        let owner = job.spec.id.owner(self.mesh.shards());
        self.mesh
            .send(From::Remote, owner, ShardMsg::Job(job))
            .is_ok()
    }

    fn event(&self, event: Arc<Event>, service: ServiceId, to: Status, at: UnixMillis) {
        let n = self.mesh.shards();
        let _ = self.mesh.send(
            From::Remote,
            service.owner(n),
            ShardMsg::Status(service, to, at),
        );
        for shard in 0..n {
            // A full ring drops the event for that shard's clients (counted by the mesh);
            // they see a gap in seq and can fill it with `since`.
            let _ = self
                .mesh
                .send(From::Remote, shard, ShardMsg::Event(event.clone()));
        }
    }
}

/// A cluster node's parts that outlive start-up.
pub struct Parts {
    config_tx: Sender<Vec<ServiceSpec>>,
    results: Option<Outbox<Forwarded>>,
    stopping: Arc<AtomicBool>,
}

impl Parts {
    /// The config file's services changed (SIGHUP): the registry mirror takes them.
    pub(super) fn config_changed(&self, services: Vec<ServiceSpec>) {
        let _ = self.config_tx.try_send(services);
    }

    /// After the shards stopped: waits (bounded) until the worker's results reached Redis.
    pub(super) fn drain(&self) {
        self.stopping.store(true, Ordering::Release);
        let Some(out) = &self.results else {
            return;
        };
        let deadline = Instant::now() + DRAIN_BUDGET;
        while out.depth() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if out.depth() > 0 {
            tracing::warn!(
                left = out.depth(),
                "results not written to redis at shutdown; their jobs will be reclaimed"
            );
        }
    }
}

/// This node's name: the configured one, else `<host>:<port>`.
fn node_name(cluster: &ClusterConfig, listen: std::net::SocketAddr) -> String {
    cluster.node.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        format!("{host}:{}", listen.port())
    })
}

/// Starts a cluster node described by `cfg`.
pub fn start(mut cfg: Config, config_path: &std::path::Path) -> Result<Running, ServerError> {
    let Some(cluster) = cfg.cluster.clone() else {
        return Err(ServerError::Os {
            what: "starting a cluster node",
            source: std::io::Error::other("no cluster section in the config"),
        });
    };
    let n = shard_count(cfg.server.shards);
    cfg.server.listen = concrete_listen_addr(cfg.server.listen)?;
    let lock = super::instance::InstanceLock::acquire(cfg.server.listen, &cfg.storage)?;
    let node = node_name(&cluster, cfg.server.listen);
    let mesh = Mesh::new(n, MESH_CAPACITY);
    // PostgreSQL away at start is waited for (with /readyz saying so), never a reason to exit.
    let (writer, handle, info, stored, ingest) =
        super::waiting::retry_store(&cfg.server, &cfg.auth, || {
            let mut backend = store::open(&cfg.storage)?;
            backend.sync_services(&cfg.services)?;
            // The writer serves API registry writes; results and transitions go through ingest.
            let (writer, handle, info) = Writer::spawn(backend, &cfg.storage)?;
            let stored = open_reader(&cfg)?;
            let ingest = if cluster.roles.ingest {
                Some(super::ingest::open(&cfg)?)
            } else {
                None
            };
            Ok((writer, handle, info, stored, ingest))
        })?;
    let counters = Arc::new(ClusterCounters::default());
    let (cluster_handle, asks) = ClusterHandle::new(
        counters.clone(),
        cluster.roles.names(),
        node.as_str().into(),
    );
    let latest = LatestSeq::default();
    latest.set(info.max_seq);
    let shared = Arc::new(Shared {
        mesh: mesh.clone(),
        store: handle,
        seq: latest.clone(),
        resolver: ResolverHandle::spawn(cfg.server.resolver),
        server: cfg.server.clone(),
        started: Instant::now(),
        shards_ready: std::sync::atomic::AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        auth: crate::auth::Auth::new(&cfg.auth),
        reader: stored.reader.clone(),
        registry: writer.registry(),
        defaults: cfg.defaults.clone(),
        interest: ResultInterest::default(),
        cluster: Some(cluster_handle),
    });
    let link = Link::new(&cluster, &node, counters).map_err(|e| ServerError::Os {
        what: "connecting to redis",
        source: std::io::Error::other(e.to_string()),
    })?;
    let wiring = Wiring {
        cfg: &cfg,
        cluster: &cluster,
        node: &node,
        shared: &shared,
    };
    let (threads, failure, parts) = wiring.wire(link, stored, ingest, asks, latest)?;
    let running = Running {
        _lock: lock,
        shared,
        shards: threads,
        writer,
        config_path: config_path.to_path_buf(),
        listen: cfg.server.listen,
        listen_from_flag: false,
        cluster: Some(parts),
    };
    if let Some(e) = failure {
        let _ = running.stop();
        return Err(e);
    }
    tracing::info!(addr = %cfg.server.listen, node = %node, roles = %cluster.roles.names(), shards = n, seq = info.max_seq, "ringwatch cluster node listening");
    Ok(running)
}

/// What wiring a node needs from start-up.
struct Wiring<'a> {
    cfg: &'a Config,
    cluster: &'a ClusterConfig,
    node: &'a str,
    shared: &'a Arc<Shared>,
}

impl Wiring<'_> {
    /// Starts the shards with this node's routes, the transport thread, the registry mirror
    /// and (for the ingest role) the ingest thread.
    #[allow(clippy::type_complexity)]
    fn wire(
        &self,
        link: Link,
        stored: super::standalone::Stored,
        ingest: Option<super::ingest::IngestConns>,
        asks: Receiver<futures_channel::oneshot::Sender<remote::ClusterSnapshot>>,
        latest: LatestSeq,
    ) -> Result<(Vec<std::thread::JoinHandle<()>>, Option<ServerError>, Parts), ServerError> {
        let (dispatch_tx, dispatch_rx) = outbox::<Dispatch>(DISPATCH_OUTBOX);
        let (results_tx, results_rx) = outbox::<Forwarded>(RESULTS_OUTBOX);
        let roles = self.cluster.roles;
        let routes = |_: usize| Routes {
            jobs: if roles.scheduler {
                JobRoute::Dispatch(dispatch_tx.clone())
            } else {
                JobRoute::Hold
            },
            results: if roles.worker {
                ResultRoute::Forward(results_tx.clone())
            } else {
                ResultRoute::Judge
            },
        };
        let all = merged(&self.cfg.services, stored.api_services);
        let (threads, failure) = spawn_shards(
            self.shared,
            &self.cfg.server,
            partition(all, self.shared.mesh.shards()),
            stored.last_states,
            routes,
        )?;
        let stopping = Arc::new(AtomicBool::new(false));
        // The node's counters: the ingest thread counts into them too, so `/metrics` shows
        // what it stored, committed and published.
        let counters = link.counters.clone();
        let mesh = self.shared.mesh.clone();
        let sinks: Arc<dyn Sinks> = Arc::new(MeshSinks { mesh: mesh.clone() });
        let transport = Transport {
            link,
            cluster: self.cluster.clone(),
            sinks,
            latest,
            asks,
            dispatch: roles.scheduler.then_some(dispatch_rx),
            results: roles.worker.then_some(results_rx),
        };
        spawn_thread("ringwatch-cluster", move || transport.run())?;
        let (config_tx, config_rx) = crossbeam_channel::bounded(4);
        let mirror = Mirror {
            storage: self.cfg.storage.clone(),
            defaults: self.cfg.defaults.clone(),
            config: self.cfg.services.clone(),
            updates: config_rx,
            mesh,
        };
        spawn_thread("ringwatch-registry", move || mirror.run())?;
        if let Some(conns) = ingest {
            super::ingest::spawn(conns, self.cluster, self.node, counters)?;
        }
        Ok((
            threads,
            failure,
            Parts {
                config_tx,
                results: roles.worker.then_some(results_tx),
                stopping,
            },
        ))
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), ServerError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|source| ServerError::Os {
            what: "spawning a cluster thread",
            source,
        })
}

/// The config file's services and the registry's API services (a config service wins a name).
fn merged(config: &[ServiceSpec], api: Vec<ServiceSpec>) -> Vec<ServiceSpec> {
    let mut all = config.to_vec();
    all.extend(api);
    all
}

/// The transport thread's tasks, by role.
struct Transport {
    link: Link,
    cluster: ClusterConfig,
    sinks: Arc<dyn Sinks>,
    latest: LatestSeq,
    asks: Receiver<futures_channel::oneshot::Sender<remote::ClusterSnapshot>>,
    dispatch: Option<crate::rt::outbox::Inbox<Dispatch>>,
    results: Option<crate::rt::outbox::Inbox<Forwarded>>,
}

impl Transport {
    /// Runs every task on one current-thread tokio runtime, for the life of the process.
    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the cluster runtime");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, self.tasks());
    }

    async fn tasks(self) {
        let c = &self.cluster;
        let mut tasks = Vec::new();
        tasks.push(tokio::task::spawn_local(remote::status::serve(
            self.link.clone(),
            self.asks,
        )));
        tasks.push(tokio::task::spawn_local(remote::events::read(
            self.link.clone(),
            self.sinks.clone(),
            self.latest,
            c.batch,
        )));
        if let Some(inbox) = self.dispatch {
            tasks.push(tokio::task::spawn_local(remote::lease::run(
                self.link.clone(),
                c.lease_ttl,
            )));
            // The takeover window: a few lease TTLs, and at least long enough to ride out a
            // short Redis outage during which nobody could hold the lease.
            let window = (c.lease_ttl * 4).max(Duration::from_secs(10));
            let d = Dispatcher::new(self.link.clone(), inbox, c.batch, c.stream_maxlen, window);
            tasks.push(tokio::task::spawn_local(d.run()));
        }
        if let Some(inbox) = self.results {
            tasks.push(tokio::task::spawn_local(remote::worker::read_jobs(
                self.link.clone(),
                self.sinks.clone(),
                c.batch,
            )));
            tasks.push(tokio::task::spawn_local(remote::worker::reclaim(
                self.link.clone(),
                self.sinks.clone(),
                c.batch,
                c.claim_idle,
            )));
            tasks.push(tokio::task::spawn_local(remote::worker::write_results(
                self.link.clone(),
                inbox,
                c.batch,
                c.stream_maxlen,
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The registry mirror: keeps every shard's set of services equal to the config's services
/// plus the API services in PostgreSQL.
struct Mirror {
    storage: crate::config::StorageConfig,
    defaults: Arc<ServiceDefaults>,
    config: Vec<ServiceSpec>,
    updates: Receiver<Vec<ServiceSpec>>,
    mesh: Arc<Mesh<ShardMsg>>,
}

impl Mirror {
    fn run(mut self) {
        let mut reader = None;
        let mut last: HashMap<ServiceId, ServiceSpec> = HashMap::new();
        let mut seen: Option<String> = None;
        let mut full_at = Instant::now();
        loop {
            let mut changed = false;
            while let Ok(c) = self.updates.try_recv() {
                self.config = c;
                changed = true;
            }
            if reader.is_none() {
                reader = store::open_reader(&self.storage).ok();
                seen = None;
            }
            if let Some(r) = reader.as_ref() {
                // Read before the rows, so a change made during the read shows next time.
                let fp = r.services_fingerprint().ok().flatten();
                let unchanged = !changed
                    && fp.is_some()
                    && fp == seen
                    && full_at.elapsed() < REGISTRY_FULL_EVERY;
                if !unchanged {
                    seen = fp;
                    full_at = Instant::now();
                    match api_services(r.as_ref(), &self.config, &self.defaults, false) {
                        Ok(api) => {
                            let all = merged(&self.config, api);
                            let now: HashMap<ServiceId, ServiceSpec> =
                                all.into_iter().map(|s| (s.id, s)).collect();
                            if changed || now != last {
                                self.tell(&now);
                                last = now;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "registry mirror cannot read services");
                            reader = None;
                        }
                    }
                }
            }
            std::thread::sleep(REGISTRY_EVERY);
        }
    }

    fn tell(&self, all: &HashMap<ServiceId, ServiceSpec>) {
        let n = self.mesh.shards();
        let mut parts = partition(all.values().cloned().collect(), n);
        for (to, part) in parts.iter_mut().enumerate() {
            let mut msg = ShardMsg::ReplaceAll(std::mem::take(part));
            for _ in 0..200 {
                match self.mesh.send(From::Control, to, msg) {
                    Ok(()) => break,
                    Err(back) => {
                        msg = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
    }
}
