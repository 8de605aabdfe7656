//! Append-only storage of results and transitions, written in batches by one writer thread.
//!
//! Shards never touch the database: they `push` records into a bounded lock-free queue
//! (`StoreHandle`), dropping and counting when it is full. The writer thread drains the queue
//! into the `Store` in one transaction per batch, and drains completely on shutdown.

pub mod sqlite;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::model::{ProbeResult, ServiceSpec, Transition};

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
    /// A read or write failed.
    #[error("store {op} failed: {reason}")]
    Io {
        /// The operation.
        op: &'static str,
        /// Driver message.
        reason: String,
    },
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

/// A storage backend. Implementations run on the writer thread (or a blocking read pool).
pub trait Store: Send {
    /// Creates tables and indexes if needed and reports the stored state.
    fn open_info(&mut self) -> Result<StoreInfo, StoreError>;
    /// Appends a batch in one transaction; duplicates (same service and scheduled_at, or same
    /// seq) are ignored.
    fn append(&mut self, batch: &[Record]) -> Result<(), StoreError>;
    /// Upserts the registry row of each service (name, url, source, definition).
    fn sync_services(&mut self, services: &[ServiceSpec]) -> Result<(), StoreError>;
}

/// Counters shared between the shards' handles and the writer.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Records accepted into the queue.
    pub enqueued: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records committed.
    pub written: AtomicU64,
    /// Batches that failed to commit.
    pub failed_batches: AtomicU64,
}

/// Cloneable, `Send` producer side of the writer queue; `push` never blocks.
#[derive(Clone)]
pub struct StoreHandle {
    /// Shared counters.
    pub counters: Arc<StoreCounters>,
}

impl StoreHandle {
    /// Queues a record for the writer; when the queue is full the record is dropped, counted,
    /// and `false` returned. Never blocks, never allocates beyond the record itself.
    pub fn push(&self, _rec: Record) -> bool {
        todo!("store push")
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        todo!("queue depth")
    }

    /// The queue bound.
    pub fn queue_capacity(&self) -> usize {
        todo!("queue capacity")
    }
}

/// The writer thread; `finish` drains the queue completely and joins it.
pub struct Writer {}

impl Writer {
    /// Opens the store on a new writer thread, returning the writer, the producer handle and
    /// what the store holds (max seq).
    pub fn spawn(
        _store: Box<dyn Store>,
        _cfg: &crate::config::StorageConfig,
    ) -> Result<(Writer, StoreHandle, StoreInfo), StoreError> {
        todo!("writer spawn")
    }

    /// Stops accepting, writes everything still queued, and joins the thread.
    pub fn finish(self) -> Result<(), StoreError> {
        todo!("writer finish")
    }
}

/// Opens the backend named by the config (SQLite for now).
pub fn open(_cfg: &crate::config::StorageConfig) -> Result<Box<dyn Store>, StoreError> {
    todo!("open store")
}
