//! PostgreSQL backend (`tokio-postgres`), for a server instead of an embedded file.
//!
//! It implements the same two traits as SQLite, so the writer thread, the read pool, the API
//! and WebSocket resume do not know which backend they talk to. Each store value owns one
//! connection and one current-thread tokio runtime (`conn`), and lives on one side thread: the
//! writer's (`PgWriter`) or a reader's (`PgReader`, one per `storage.pool`); the synchronous
//! trait methods `block_on` that runtime, so nothing on a shard ever waits on the database.
//! Concerns, one per file: `conn` (connection, runtime, reconnects, timeouts), `migrate`
//! (versioned SQL migrations under an advisory lock), `write` (batched idempotent appends,
//! registry, retention steps), `read` (history queries), `partitions` (daily partitions of
//! `results` and dropping them). `docs/storage.md` describes the schema.

mod conn;
mod ingest;
mod migrate;
mod partitions;
mod read;
mod write;

use std::cell::RefCell;

pub use ingest::PgIngest;
pub use migrate::{latest_version, MigrationReport};

use self::conn::Conn;
use self::partitions::Partitions;
use super::StoreError;
use crate::config::PgConfig;

/// The operation named in append errors.
const OP_APPEND: &str = "append";

/// The newest seq: the counter covers transitions pruned away, MAX(seq) covers rows written
/// by a process that did not advance the counter.
const MAX_SEQ: &str = "SELECT GREATEST(
    (SELECT COALESCE(MAX(seq), 0) FROM transitions),
    (SELECT COALESCE(MAX(last_seq), 0) FROM seq_counter))";

/// The write side: the writer thread's connection.
#[derive(Debug)]
pub struct PgWriter {
    conn: Conn,
    partitions: Partitions,
    /// Reused between batches: the batch's results as (service, scheduled_at, position).
    order: Vec<(u64, i64, usize)>,
}

impl PgWriter {
    /// Connects, applies pending migrations (under the advisory lock) and creates the
    /// partitions of today and the next days. Errors name the server and the reason.
    pub fn open(cfg: &PgConfig) -> Result<PgWriter, StoreError> {
        let mut conn = Conn::new(cfg)?;
        conn.connect()?;
        let report = migrate::run(&mut conn)?;
        if !report.applied.is_empty() {
            tracing::info!(server = %conn.what(), applied = ?report.applied, version = report.version, "postgres schema migrated");
        }
        Ok(PgWriter {
            conn,
            partitions: Partitions::default(),
            order: Vec::new(),
        })
    }
}

/// The read side: one reader thread's connection.
#[derive(Debug)]
pub struct PgReader {
    /// The trait's methods take `&self`; a reader thread owns its reader alone, and the
    /// connection is remade in place after a failure.
    conn: RefCell<Conn>,
}

impl PgReader {
    /// Connects now, so a wrong URL or a server that is down fails at start, not on the first
    /// query. Later failures reconnect on the next query.
    pub fn open(cfg: &PgConfig) -> Result<PgReader, StoreError> {
        let mut conn = Conn::new(cfg)?;
        conn.connect()?;
        Ok(PgReader {
            conn: RefCell::new(conn),
        })
    }
}

/// Connects and applies pending migrations, for `ringwatch migrate`.
pub fn migrate(cfg: &PgConfig) -> Result<MigrationReport, StoreError> {
    let mut conn = Conn::new(cfg)?;
    conn.connect()?;
    migrate::run(&mut conn)
}

#[cfg(test)]
mod tests;
