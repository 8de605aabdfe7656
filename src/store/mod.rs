//! Append-only storage of results and transitions, split into a write side and a read side.
//!
//! Shards never touch the database. The write side ([`StoreWriter`]) is owned by one writer
//! thread: shards `push` records into a bounded lock-free queue (`StoreHandle`), dropping and
//! counting when it is full, and the writer drains it in one transaction per batch, completely
//! on shutdown. The read side ([`StoreReader`]) serves history to the API and `since` replay to
//! WebSocket clients from a small pool of reader threads (`reader::ReadPool`), each with its own
//! connection. The two are separate traits because they live on different threads with
//! different connections and different failure handling; neither the writer, the read pool, the
//! API nor the WebSocket resume knows which backend is behind them.

mod handle;
mod latency;
pub mod postgres;
pub mod reader;
pub mod sqlite;
mod writer;

pub use handle::{RegistryHandle, RegistryWrite, StoreHandle};
pub use latency::AtomicLatency;
pub use writer::{LatestSeq, Publish, Spawned, Writer, TRANSITION_LANE};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{StorageConfig, StorageKind};
use crate::model::{ProbeResult, ServiceId, ServiceSpec, Transition, UnixMillis};

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening or migrating the database.
    #[error("cannot open store {what}: {reason}")]
    Open {
        /// Path or URL.
        what: String,
        /// Driver message.
        reason: String,
    },
    /// The database server could not be reached (refused, timed out, starting up): worth
    /// retrying, unlike `Open`, which a retry would not fix (wrong password, no database).
    #[error("cannot reach store {what}: {reason}")]
    Unreachable {
        /// Path or URL.
        what: String,
        /// Driver message.
        reason: String,
    },
    /// A read or write failed.
    #[error("store {op} failed: {reason}")]
    Io {
        /// The operation.
        op: &'static str,
        /// Driver message.
        reason: String,
    },
}

impl StoreError {
    /// True when the same call may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unreachable { .. })
    }
}

/// A decided transition in its lane, with what its event needs once it is numbered.
#[derive(Debug, Clone)]
pub struct TransitionRecord {
    /// The change.
    pub decided: crate::model::Decided,
    /// The service's definition (its tags, for subscription filters).
    pub spec: std::sync::Arc<ServiceSpec>,
    /// When the deciding probe ended (push latency is measured from it).
    pub born: std::time::Instant,
}

/// One record for the append-only log.
#[derive(Debug, Clone)]
pub enum Record {
    /// A probe result.
    Result(ProbeResult),
    /// A status transition.
    Transition(Transition),
}

/// What the store knows at start-up.
#[derive(Debug, Clone, Default)]
pub struct StoreInfo {
    /// Largest transition seq stored (0 when none): the global seq continues after it.
    pub max_seq: u64,
}

/// The write side of a backend, owned by the writer thread.
pub trait StoreWriter: Send {
    /// Creates tables and indexes if needed and reports the stored state.
    fn open_info(&mut self) -> Result<StoreInfo, StoreError>;
    /// Hands the store the writer's counters, for what only the backend sees (reconnects).
    fn attach(&mut self, counters: Arc<StoreCounters>) {
        let _ = counters;
    }
    /// Appends a batch in one transaction; duplicates (same service and scheduled_at, or same
    /// seq) are ignored.
    fn append(&mut self, batch: &[Record]) -> Result<(), StoreError>;
    /// Upserts the registry row of each service (name, url, source, definition). `services`
    /// is the complete current set of config-defined services: config-sourced rows missing
    /// from it are marked deleted (`deleted_at`); their results are kept.
    fn sync_services(&mut self, services: &[ServiceSpec]) -> Result<(), StoreError>;
    /// Inserts or replaces the registry row of one API-defined service (`source = 'api'`).
    /// Config rows are never touched by this; `sync_services` never marks API rows deleted.
    fn upsert_api_service(&mut self, spec: &ServiceSpec) -> Result<(), StoreError> {
        let _ = spec;
        Err(StoreError::Io {
            op: "upsert service",
            reason: "not supported by this store".into(),
        })
    }
    /// Marks an API-defined service deleted (`deleted_at`); its results stay.
    fn delete_api_service(&mut self, id: ServiceId) -> Result<(), StoreError> {
        let _ = id;
        Err(StoreError::Io {
            op: "delete service",
            reason: "not supported by this store".into(),
        })
    }
    /// Retention: deletes at most about `max_rows` results and transitions older than `cutoff`
    /// (each service's latest transition is always kept, so `last_states` and `max_seq`
    /// survive; PostgreSQL drops whole days of results per step instead of `max_rows`). Call again with the same
    /// cutoff until `done`; a store keeps its place between calls. The default keeps everything.
    fn prune(&mut self, cutoff: UnixMillis, max_rows: usize) -> Result<Pruned, StoreError> {
        let _ = (cutoff, max_rows);
        Ok(Pruned {
            deleted: 0,
            done: true,
        })
    }
}

/// A registry row of the `services` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    /// Stable id (derived from the name).
    pub id: ServiceId,
    /// Unique name.
    pub name: String,
    /// URL as written by the user.
    pub url: String,
    /// `config` or `api`.
    pub source: String,
    /// JSON of the user-visible definition (see `ServiceSpec::definition_json`).
    pub spec: String,
    /// First insert, unix ms.
    pub created_at: Option<UnixMillis>,
    /// Last change of the definition (or deletion), unix ms.
    pub updated_at: Option<UnixMillis>,
    /// Set when a config service disappeared from the config; its results are kept.
    pub deleted_at: Option<UnixMillis>,
}

/// The read side of a backend: one per reader thread, never on a shard.
pub trait StoreReader: Send {
    /// Results stored for a service.
    fn count_results(&self, service: ServiceId) -> Result<u64, StoreError>;
    /// Transitions stored.
    fn count_transitions(&self) -> Result<u64, StoreError>;
    /// The newest `limit` results of a service, newest first.
    fn results_for(
        &self,
        service: ServiceId,
        limit: usize,
    ) -> Result<Vec<ProbeResult>, StoreError> {
        self.results_range(service, None, None, limit)
    }
    /// Results of a service with `from <= scheduled_at < to`, newest first, at most `limit`.
    fn results_range(
        &self,
        service: ServiceId,
        from: Option<UnixMillis>,
        to: Option<UnixMillis>,
        limit: usize,
    ) -> Result<Vec<ProbeResult>, StoreError>;
    /// Transitions with seq > `since`, in seq order, at most `limit`.
    fn transitions_since(&self, since: u64, limit: usize) -> Result<Vec<Transition>, StoreError>;
    /// A service's transitions with seq < `before` (all when None), newest first, at most `limit`.
    fn transitions_for(
        &self,
        service: ServiceId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Transition>, StoreError>;
    /// Registry rows by name, deleted ones only when asked.
    fn services(&self, include_deleted: bool) -> Result<Vec<StoredService>, StoreError>;
    /// One registry row, deleted or not.
    fn service(&self, id: ServiceId) -> Result<Option<StoredService>, StoreError>;
    /// Each service's latest transition: the status it holds and since when (restored at
    /// start, so a restart does not re-announce statuses that did not change).
    fn last_states(&self) -> Result<Vec<LastState>, StoreError>;
    /// The largest stored transition seq (0 when none).
    fn max_seq(&self) -> Result<u64, StoreError>;
    /// A cheap value that changes whenever a registry row does, so a poller can skip reading
    /// an unchanged registry; `None` when the backend has none (then read it all).
    fn services_fingerprint(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

/// A result arriving at cluster ingest, with what judging it needs.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The result.
    pub result: ProbeResult,
    /// The service's name (transitions carry it).
    pub service: String,
    /// Consecutive failures before DOWN.
    pub failure_threshold: std::num::NonZeroU32,
    /// Consecutive successes before UP.
    pub success_threshold: std::num::NonZeroU32,
}

/// What one ingest transaction did.
#[derive(Debug, Default)]
pub struct IngestOutcome {
    /// Results stored by it (the others were already stored).
    pub new_rows: usize,
    /// Transitions it committed, in seq order.
    pub transitions: Vec<Transition>,
}

/// Cluster ingest's side of a backend: many processes store and judge results concurrently,
/// so storing a batch and deciding its transitions must be one transaction.
pub trait IngestStore: Send {
    /// Inserts `batch` (rows already stored are ignored, so a redelivered result changes
    /// nothing), runs the state machine (`pipeline::judge`) over the new rows of each service
    /// in `scheduled_at` order with the service's state row locked (a result older than the
    /// last one applied is stored but moves nothing), appends the transitions it decides,
    /// numbered from the shared counter row in the same transaction (so seq is gap-free and in
    /// commit order), and commits.
    fn ingest(&mut self, batch: &[Ingested]) -> Result<IngestOutcome, StoreError>;
}

/// A service's status as its latest stored transition left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastState {
    /// Which service.
    pub service_id: ServiceId,
    /// The status it transitioned to.
    pub status: crate::model::Status,
    /// When.
    pub since: UnixMillis,
    /// The transition's seq.
    pub seq: u64,
}

/// Progress of one retention step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Rows deleted by this step.
    pub deleted: u64,
    /// Nothing older than the cutoff is left.
    pub done: bool,
}

/// Counters shared between the shards' handles and the writer.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Records accepted into the queue.
    pub enqueued: AtomicU64,
    /// Results dropped because their lane was full (or the writer was gone).
    pub dropped: AtomicU64,
    /// Transitions refused because their lane was full (the shard deferred the change).
    pub deferred: AtomicU64,
    /// Transitions committed and handed to the fan-out (each encoded once).
    pub published: AtomicU64,
    /// Records committed (duplicates ignored by the store included).
    pub written: AtomicU64,
    /// Append attempts that failed (each retry of a batch counts once).
    pub failed_batches: AtomicU64,
    /// Accepted records given up at shutdown because the store stayed down past the budget.
    pub abandoned: AtomicU64,
    /// Rows deleted by retention.
    pub pruned: AtomicU64,
    /// The last append attempt failed (the store is unreachable or refusing writes); cleared
    /// by the next commit. `/readyz` answers 503 while it is set.
    pub down: AtomicBool,
    /// Connections the backend had to make again after losing one.
    pub reconnects: AtomicU64,
    /// Time to commit one batch (successful appends only).
    pub batch_latency: AtomicLatency,
}

impl StoreCounters {
    /// Whether the store accepted the last batch (true before the first).
    pub fn up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// Records the outcome of one append attempt that took `took`.
    pub fn batch_done(&self, ok: bool, took: std::time::Duration) {
        self.down.store(!ok, Ordering::Relaxed);
        if ok {
            self.batch_latency.record(took);
        }
    }

    /// The backend's connection families: up, reconnects, batch latency.
    pub fn render_backend(&self, w: &mut crate::metrics::Exposition) {
        w.single(
            "ringwatch_store_up",
            "gauge",
            "1 when the store accepted the last batch, 0 while the writer cannot write.",
            if self.up() { 1.0 } else { 0.0 },
        );
        w.single(
            "ringwatch_store_reconnects_total",
            "counter",
            "Connections to the database server made again after one was lost.",
            self.reconnects.load(Ordering::Relaxed) as f64,
        );
        w.summary(
            "ringwatch_store_batch_seconds",
            "Time to commit one batch to the store.",
            &self.batch_latency.snapshot(),
        );
    }
}

/// Opens the write side of the backend named by the config (creating and migrating it).
pub fn open(cfg: &StorageConfig) -> Result<Box<dyn StoreWriter>, StoreError> {
    match &cfg.kind {
        StorageKind::Sqlite { path } => Ok(Box::new(sqlite::SqliteStore::open(path)?)),
        StorageKind::Postgres(pg) => Ok(Box::new(postgres::PgWriter::open(pg)?)),
    }
}

/// Opens one read-side connection to the backend named by the config; the store must exist
/// (the writer creates it).
pub fn open_reader(cfg: &StorageConfig) -> Result<Box<dyn StoreReader>, StoreError> {
    match &cfg.kind {
        StorageKind::Sqlite { path } => Ok(Box::new(sqlite::SqliteStore::open_read_only(path)?)),
        StorageKind::Postgres(pg) => Ok(Box::new(postgres::PgReader::open(pg)?)),
    }
}

/// Reader threads (and connections) for history queries.
pub fn reader_threads(cfg: &StorageConfig) -> usize {
    match &cfg.kind {
        // Two: one slow history scan never blocks a `since` replay, and SQLite readers share
        // the page cache of one file.
        StorageKind::Sqlite { .. } => 2,
        StorageKind::Postgres(pg) => pg.pool,
    }
}

/// Creates the store if needed and applies pending schema migrations (`ringwatch migrate`);
/// returns a one-line summary.
pub fn migrate(cfg: &StorageConfig) -> Result<String, StoreError> {
    match &cfg.kind {
        StorageKind::Sqlite { path } => {
            drop(sqlite::SqliteStore::open(path)?);
            Ok(format!(
                "{}: schema version {}",
                path.display(),
                sqlite::SCHEMA_VERSION
            ))
        }
        StorageKind::Postgres(pg) => {
            let r = postgres::migrate(pg)?;
            let applied = if r.applied.is_empty() {
                "nothing to apply".to_string()
            } else {
                format!("applied {}", r.applied.join(", "))
            };
            Ok(format!(
                "{}: {applied}; schema version {}",
                pg.redacted_url(),
                r.version
            ))
        }
    }
}

/// Opens cluster ingest's side of the backend named by the config (PostgreSQL only: SQLite
/// serves one process).
pub fn open_ingest(cfg: &StorageConfig) -> Result<Box<dyn IngestStore>, StoreError> {
    match &cfg.kind {
        StorageKind::Sqlite { path } => Err(StoreError::Open {
            what: path.display().to_string(),
            reason: "cluster ingest needs storage.kind: postgres".into(),
        }),
        StorageKind::Postgres(pg) => Ok(Box::new(postgres::PgIngest::open(pg)?)),
    }
}

#[cfg(test)]
mod tests;
