//! SQLite backend (rusqlite, bundled, WAL): the default, embedded store.
//!
//! One connection per `SqliteStore`. The writer thread owns the read-write one; readers (tests,
//! later the API's blocking pool) open their own with [`SqliteStore::open_read_only`], which WAL
//! lets run concurrently with the writer. `docs/storage.md` describes the schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use super::{Pruned, Record, Store, StoreError, StoreInfo};
use crate::model::{
    ErrorKind, ProbeResult, ServiceId, ServiceSpec, Status, Timings, Transition, UnixMillis,
};

/// Schema version this binary writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Migrations, in order: entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // v1: initial schema.
    "CREATE TABLE IF NOT EXISTS services (
        id INTEGER PRIMARY KEY,
        name TEXT UNIQUE NOT NULL,
        url TEXT NOT NULL,
        source TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at INTEGER,
        updated_at INTEGER,
        deleted_at INTEGER NULL
    );
    CREATE TABLE IF NOT EXISTS results (
        service_id INTEGER NOT NULL,
        scheduled_at INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        latency_us INTEGER NOT NULL,
        connect_us INTEGER,
        tls_us INTEGER,
        first_byte_us INTEGER,
        status_code INTEGER NULL,
        bytes INTEGER NOT NULL,
        error_kind TEXT NULL,
        error TEXT NULL
    );
    -- A rowid table appends in arrival order (results arrive roughly in time order), so a
    -- batch dirties few table pages; the narrow unique index carries the idempotency key and
    -- serves per-service history. Measured: ~30% less CPU per row than a WITHOUT ROWID table
    -- keyed by (service_id, scheduled_at), whose batches dirty one wide leaf per service.
    CREATE UNIQUE INDEX IF NOT EXISTS results_service_time ON results (service_id, scheduled_at);
    CREATE TABLE IF NOT EXISTS transitions (
        seq INTEGER PRIMARY KEY,
        service_id INTEGER NOT NULL,
        service TEXT NOT NULL,
        from_status TEXT NOT NULL,
        to_status TEXT NOT NULL,
        at INTEGER NOT NULL,
        latency_us INTEGER,
        status_code INTEGER NULL,
        error TEXT NULL
    );
    CREATE INDEX IF NOT EXISTS transitions_service_seq ON transitions (service_id, seq);
    -- Retention finds old transitions without scanning the table.
    CREATE INDEX IF NOT EXISTS transitions_at ON transitions (at);",
];

/// How long a statement waits on a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Services a single `prune` call visits at most, so a pass over many services stays short.
const PRUNE_SERVICES_PER_CALL: usize = 256;

const INSERT_RESULT: &str = "INSERT OR IGNORE INTO results (service_id, scheduled_at, started_at,
    latency_us, connect_us, tls_us, first_byte_us, status_code, bytes, error_kind, error)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Results per multi-row `INSERT` (11 parameters each, far below SQLite's 32,766 limit). One
/// statement per 64 rows instead of per row saves the per-statement step/reset/bind overhead
/// (measured: 256 rows per statement was no faster).
const RESULT_CHUNK: usize = 64;

/// `INSERT_RESULT` with `rows` value tuples.
fn insert_results_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO results (service_id, scheduled_at, started_at, latency_us,
    connect_us, tls_us, first_byte_us, status_code, bytes, error_kind, error) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql
}

const INSERT_TRANSITION: &str = "INSERT OR IGNORE INTO transitions (seq, service_id, service,
    from_status, to_status, at, latency_us, status_code, error)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

const RESULT_COLUMNS: &str = "service_id, scheduled_at, started_at, latency_us, connect_us,
    tls_us, first_byte_us, status_code, bytes, error_kind, error";

const TRANSITION_COLUMNS: &str =
    "seq, service_id, service, from_status, to_status, at, latency_us, status_code, error";

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

/// Where an unfinished retention pass stands, so the next `prune` call resumes there.
#[derive(Debug, Clone, Copy)]
struct PruneCursor {
    /// The cutoff the pass was started with; a new cutoff restarts the pass.
    cutoff: i64,
    /// Results of services with a smaller id are done.
    next_service: i64,
    /// All results are done; only transitions remain.
    results_done: bool,
}

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    prune: Option<PruneCursor>,
    /// `insert_results_sql(RESULT_CHUNK)`, built once (it is the prepared-statement cache key).
    insert_chunk: String,
    /// Reused between batches: indexes of the batch's results in key order.
    order: Vec<(u64, i64, usize)>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Maps a rusqlite error to `StoreError::Io` naming the operation.
fn io(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Io {
        op,
        reason: e.to_string(),
    }
}

/// Converts a duration to whole microseconds, saturating (a probe never runs for 292k years).
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Binds one result's 11 columns to parameters `base + 1 ..= base + 11` (`append` already
/// skipped results whose service id does not fit an i64).
fn bind_result(
    st: &mut rusqlite::Statement<'_>,
    base: usize,
    r: &ProbeResult,
) -> rusqlite::Result<()> {
    let sid = i64::try_from(r.service_id.get()).unwrap_or(i64::MAX);
    st.raw_bind_parameter(base + 1, sid)?;
    st.raw_bind_parameter(base + 2, r.scheduled_at.0)?;
    st.raw_bind_parameter(base + 3, r.started_at.0)?;
    st.raw_bind_parameter(base + 4, micros(r.timings.total))?;
    st.raw_bind_parameter(base + 5, micros(r.timings.connect))?;
    st.raw_bind_parameter(base + 6, micros(r.timings.tls))?;
    st.raw_bind_parameter(base + 7, micros(r.timings.first_byte))?;
    st.raw_bind_parameter(base + 8, r.status_code)?;
    st.raw_bind_parameter(base + 9, i64::try_from(r.bytes).unwrap_or(i64::MAX))?;
    st.raw_bind_parameter(base + 10, r.error_kind.map(ErrorKind::as_str))?;
    st.raw_bind_parameter(base + 11, r.error.as_deref())?;
    Ok(())
}

/// Converts an unsigned value for an INTEGER column, failing rather than wrapping.
fn to_i64(op: &'static str, what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Io {
        op,
        reason: format!("{what} {v} does not fit a signed 64-bit column"),
    })
}

/// Reads a column that must hold a non-negative integer.
fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(idx)?;
    u64::try_from(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Integer, Box::new(e))
    })
}

/// Reads a nullable microsecond column as a duration (NULL or negative = zero).
fn get_micros(row: &Row<'_>, idx: usize) -> rusqlite::Result<Duration> {
    let v: Option<i64> = row.get(idx)?;
    Ok(Duration::from_micros(
        v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
    ))
}

/// Reads a nullable HTTP status code column.
fn get_status_code(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u16>> {
    let v: Option<i64> = row.get(idx)?;
    v.map(|v| {
        u16::try_from(v).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                idx,
                rusqlite::types::Type::Integer,
                Box::new(e),
            )
        })
    })
    .transpose()
}

/// A conversion error for a text column holding an unknown name.
fn bad_text(idx: usize, what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        format!("unknown {what} {v:?}").into(),
    )
}

fn result_from_row(row: &Row<'_>) -> rusqlite::Result<ProbeResult> {
    let error_kind: Option<String> = row.get(9)?;
    let error_kind = match error_kind {
        None => None,
        Some(s) => Some(ErrorKind::parse(&s).ok_or_else(|| bad_text(9, "error kind", &s))?),
    };
    Ok(ProbeResult {
        service_id: ServiceId::from_raw(get_u64(row, 0)?),
        scheduled_at: UnixMillis(row.get(1)?),
        started_at: UnixMillis(row.get(2)?),
        timings: Timings {
            total: get_micros(row, 3)?,
            connect: get_micros(row, 4)?,
            tls: get_micros(row, 5)?,
            first_byte: get_micros(row, 6)?,
        },
        status_code: get_status_code(row, 7)?,
        bytes: get_u64(row, 8)?,
        error_kind,
        error: row.get(10)?,
    })
}

fn transition_from_row(row: &Row<'_>) -> rusqlite::Result<Transition> {
    let status = |idx: usize| -> rusqlite::Result<Status> {
        let s: String = row.get(idx)?;
        Status::parse(&s).ok_or_else(|| bad_text(idx, "status", &s))
    };
    Ok(Transition {
        seq: get_u64(row, 0)?,
        service_id: ServiceId::from_raw(get_u64(row, 1)?),
        service: row.get(2)?,
        from: status(3)?,
        to: status(4)?,
        at: UnixMillis(row.get(5)?),
        latency: get_micros(row, 6)?,
        status_code: get_status_code(row, 7)?,
        error: row.get(8)?,
    })
}

fn service_from_row(row: &Row<'_>) -> rusqlite::Result<StoredService> {
    let ms = |idx: usize| -> rusqlite::Result<Option<UnixMillis>> {
        Ok(row.get::<_, Option<i64>>(idx)?.map(UnixMillis))
    };
    Ok(StoredService {
        id: ServiceId::from_raw(get_u64(row, 0)?),
        name: row.get(1)?,
        url: row.get(2)?,
        source: row.get(3)?,
        spec: row.get(4)?,
        created_at: ms(5)?,
        updated_at: ms(6)?,
        deleted_at: ms(7)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database file read-write, in WAL mode, and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let fail = |reason: String| StoreError::Open {
            what: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create directory {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        // WAL: readers never block the writer and commits append instead of rewriting pages.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| fail(format!("enabling WAL: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail(format!("journal_mode is {mode}, WAL unavailable")));
        }
        // NORMAL in WAL mode syncs at checkpoints only: a power cut may lose the last commits
        // but never corrupts the file, which is the right trade for a probe log.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| fail(format!("setting synchronous: {e}")))?;
        // After a checkpoint, truncate a WAL that grew during a burst back to 64 MiB.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(|e| fail(format!("setting journal_size_limit: {e}")))?;
        // A results batch touches one B-tree leaf per service it covers; a 64 MiB page cache
        // keeps those leaves in memory between batches instead of re-reading them, and mmap
        // lets reads skip the copy through the read(2) path.
        conn.pragma_update(None, "cache_size", -64 * 1024)
            .map_err(|e| fail(format!("setting cache_size: {e}")))?;
        conn.pragma_update(None, "mmap_size", 256 * 1024 * 1024)
            .map_err(|e| fail(format!("setting mmap_size: {e}")))?;
        // Checkpoint every ~32 MiB of WAL rather than every 4 MiB: fewer, larger copies.
        conn.pragma_update(None, "wal_autocheckpoint", 8192)
            .map_err(|e| fail(format!("setting wal_autocheckpoint: {e}")))?;
        conn.set_prepared_statement_cache_capacity(32);
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            prune: None,
            insert_chunk: insert_results_sql(RESULT_CHUNK),
            order: Vec::new(),
        };
        store.migrate().map_err(|e| fail(e.to_string()))?;
        Ok(store)
    }

    /// Opens an existing database read-only, for queries running beside the writer.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let fail = |reason: String| StoreError::Open {
            what: path.display().to_string(),
            reason,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| fail(e.to_string()))?;
        if version != SCHEMA_VERSION {
            return Err(fail(format!(
                "schema version {version}, this binary reads {SCHEMA_VERSION}"
            )));
        }
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            prune: None,
            insert_chunk: insert_results_sql(RESULT_CHUNK),
            order: Vec::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings the schema to `SCHEMA_VERSION`, one transaction per step; refuses newer files.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(io("read schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Io {
                op: "migrate",
                reason: format!(
                    "schema version {version} is newer than this binary supports \
                     ({SCHEMA_VERSION})"
                ),
            });
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(io("migrate"))?;
            tx.execute_batch(sql).map_err(io("migrate"))?;
            // user_version takes no bound parameter; the value is our own constant.
            tx.execute_batch(&format!("PRAGMA user_version = {}", from + 1))
                .map_err(io("migrate"))?;
            tx.commit().map_err(io("migrate"))?;
        }
        Ok(())
    }

    /// Number of stored results of one service.
    pub fn count_results(&self, service: ServiceId) -> Result<u64, StoreError> {
        let sid = to_i64("count results", "service id", service.get())?;
        self.conn
            .prepare_cached("SELECT COUNT(*) FROM results WHERE service_id = ?1")
            .and_then(|mut st| st.query_row([sid], |r| get_u64(r, 0)))
            .map_err(io("count results"))
    }

    /// Number of stored transitions.
    pub fn count_transitions(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM transitions", [], |r| get_u64(r, 0))
            .map_err(io("count transitions"))
    }

    /// The newest `limit` results of a service, newest first.
    pub fn results_for(
        &self,
        service: ServiceId,
        limit: usize,
    ) -> Result<Vec<ProbeResult>, StoreError> {
        self.results_range(service, None, None, limit)
    }

    /// One page of a service's history, newest first: results with `from <= scheduled_at < to`
    /// (either bound optional). For the next page pass the last item's `scheduled_at` as `to`;
    /// the primary key makes every page an index range scan.
    pub fn results_range(
        &self,
        service: ServiceId,
        from: Option<UnixMillis>,
        to: Option<UnixMillis>,
        limit: usize,
    ) -> Result<Vec<ProbeResult>, StoreError> {
        let sid = to_i64("read results", "service id", service.get())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {RESULT_COLUMNS} FROM results WHERE service_id = ?1 AND scheduled_at >= ?2
             AND scheduled_at < ?3 ORDER BY scheduled_at DESC LIMIT ?4"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(io("read results"))?;
        let rows = st
            .query_map(
                params![
                    sid,
                    from.map_or(i64::MIN, |t| t.0),
                    to.map_or(i64::MAX, |t| t.0),
                    limit
                ],
                result_from_row,
            )
            .map_err(io("read results"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(io("read results"))
    }

    /// Transitions with `seq > since`, oldest first, at most `limit`: the WebSocket replay and
    /// `GET /transitions?since=` query.
    pub fn transitions_since(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Transition>, StoreError> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS} FROM transitions WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        );
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(io("read transitions"))?;
        let rows = st
            .query_map(params![since, limit], transition_from_row)
            .map_err(io("read transitions"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(io("read transitions"))
    }

    /// One service's transitions with `seq < before` (all when None), newest first, at most
    /// `limit`; served by the `(service_id, seq)` index.
    pub fn transitions_for(
        &self,
        service: ServiceId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Transition>, StoreError> {
        let sid = to_i64("read transitions", "service id", service.get())?;
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS} FROM transitions WHERE service_id = ?1 AND seq < ?2
             ORDER BY seq DESC LIMIT ?3"
        );
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(io("read transitions"))?;
        let rows = st
            .query_map(params![sid, before, limit], transition_from_row)
            .map_err(io("read transitions"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(io("read transitions"))
    }

    /// The registry, ordered by name; deleted services only when `include_deleted`.
    pub fn services(&self, include_deleted: bool) -> Result<Vec<StoredService>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, name, url, source, spec, created_at, updated_at, deleted_at
                 FROM services WHERE ?1 OR deleted_at IS NULL ORDER BY name",
            )
            .map_err(io("read services"))?;
        let rows = st
            .query_map([include_deleted], service_from_row)
            .map_err(io("read services"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(io("read services"))
    }

    /// One registry row by id, deleted or not.
    pub fn service(&self, id: ServiceId) -> Result<Option<StoredService>, StoreError> {
        let sid = to_i64("read services", "service id", id.get())?;
        self.conn
            .prepare_cached(
                "SELECT id, name, url, source, spec, created_at, updated_at, deleted_at
                 FROM services WHERE id = ?1",
            )
            .and_then(|mut st| st.query_row([sid], service_from_row).optional())
            .map_err(io("read services"))
    }

    /// `append` with the batch's results in `order`: one transaction, results in chunks of
    /// `RESULT_CHUNK` rows per statement, then the transitions.
    fn append_sorted(
        &mut self,
        batch: &[Record],
        order: &[(u64, i64, usize)],
    ) -> rusqlite::Result<()> {
        // IMMEDIATE takes the write lock up front, so a busy database fails (and is retried)
        // before any work rather than at commit.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let results = order.iter().filter_map(|(_, _, i)| match batch.get(*i) {
                Some(Record::Result(r)) => Some(r),
                _ => None,
            });
            let mut chunk = tx.prepare_cached(&self.insert_chunk)?;
            let mut one = tx.prepare_cached(INSERT_RESULT)?;
            let mut pending: [Option<&ProbeResult>; RESULT_CHUNK] = [None; RESULT_CHUNK];
            let mut n = 0;
            for r in results {
                pending[n] = Some(r);
                n += 1;
                if n == RESULT_CHUNK {
                    for (row, r) in pending.iter().flatten().enumerate() {
                        bind_result(&mut chunk, row * 11, r)?;
                    }
                    chunk.raw_execute()?;
                    n = 0;
                }
            }
            // The tail of the batch, row by row (fewer than RESULT_CHUNK rows).
            for r in pending.iter().take(n).flatten() {
                bind_result(&mut one, 0, r)?;
                one.raw_execute()?;
            }
            let mut ins_t = tx.prepare_cached(INSERT_TRANSITION)?;
            for rec in batch {
                let Record::Transition(t) = rec else { continue };
                let (Ok(seq), Ok(sid)) = (i64::try_from(t.seq), i64::try_from(t.service_id.get()))
                else {
                    tracing::warn!(seq = t.seq, "transition skipped: seq or id out of range");
                    continue;
                };
                ins_t.execute(params![
                    seq,
                    sid,
                    t.service,
                    t.from.as_str(),
                    t.to.as_str(),
                    t.at.0,
                    micros(t.latency),
                    t.status_code,
                    t.error.as_deref(),
                ])?;
            }
        }
        tx.commit()
    }

    /// Deletes up to `max_rows` results of services from the cursor on; returns rows deleted.
    fn prune_results(&mut self, cur: &mut PruneCursor, max_rows: usize) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(io("retention"))?;
        {
            // Seek service by service through the primary key: each step is an index range,
            // never a scan of the whole table.
            let mut next = tx
                .prepare_cached(
                    "SELECT service_id FROM results WHERE service_id >= ?1
                     ORDER BY service_id LIMIT 1",
                )
                .map_err(io("retention"))?;
            let mut del = tx
                .prepare_cached(
                    "DELETE FROM results WHERE service_id = ?1 AND scheduled_at IN (
                       SELECT scheduled_at FROM results WHERE service_id = ?1
                       AND scheduled_at < ?2 ORDER BY scheduled_at LIMIT ?3)",
                )
                .map_err(io("retention"))?;
            let mut visited = 0;
            while (deleted as usize) < max_rows && visited < PRUNE_SERVICES_PER_CALL {
                let Some(sid) = next
                    .query_row([cur.next_service], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(io("retention"))?
                else {
                    cur.results_done = true;
                    break;
                };
                visited += 1;
                let want = max_rows - deleted as usize;
                let n = del
                    .execute(params![sid, cur.cutoff, want as i64])
                    .map_err(io("retention"))?;
                deleted += n as u64;
                if n < want {
                    // This service has nothing older left; move past it.
                    match sid.checked_add(1) {
                        Some(n) => cur.next_service = n,
                        None => {
                            cur.results_done = true;
                            break;
                        }
                    }
                } else {
                    cur.next_service = sid;
                }
            }
        }
        tx.commit().map_err(io("retention"))?;
        Ok(deleted)
    }

    /// Deletes up to `max_rows` transitions older than the cutoff, always keeping the newest so
    /// `max_seq` (and with it the global seq) survives a restart even after everything aged out.
    fn prune_transitions(&mut self, cutoff: i64, max_rows: usize) -> Result<u64, StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM transitions WHERE seq IN (
                   SELECT seq FROM transitions WHERE at < ?1
                   AND seq < (SELECT MAX(seq) FROM transitions) LIMIT ?2)",
            )
            .and_then(|mut st| st.execute(params![cutoff, max_rows as i64]))
            .map_err(io("retention"))?;
        Ok(n as u64)
    }
}

impl Store for SqliteStore {
    fn open_info(&mut self) -> Result<StoreInfo, StoreError> {
        self.migrate()?;
        let max_seq = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM transitions", [], |r| {
                get_u64(r, 0)
            })
            .map_err(io("read max seq"))?;
        Ok(StoreInfo { max_seq })
    }

    fn append(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        // Results go in in key order: consecutive inserts then walk the unique index
        // (service_id, scheduled_at) left to right, reusing the pages the previous insert
        // loaded, instead of descending to a random leaf each time (measured: ~30% less CPU
        // per row at 60,000 services). The batch position breaks ties, so of two rows with the
        // same key the first in the batch still wins. Keys are sorted by value, not through
        // the records: comparing in place is several times cheaper than chasing each index.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        for (i, rec) in batch.iter().enumerate() {
            if let Record::Result(r) = rec {
                // An id past i64 can only come from a bug upstream; failing the batch would
                // retry it forever, so the one record is skipped instead.
                if i64::try_from(r.service_id.get()).is_err() {
                    tracing::warn!(
                        service_id = r.service_id.get(),
                        "result skipped: id out of range"
                    );
                    continue;
                }
                order.push((r.service_id.get(), r.scheduled_at.0, i));
            }
        }
        order.sort_unstable();
        let res = self.append_sorted(batch, &order);
        self.order = order;
        res.map_err(io("append"))
    }

    fn sync_services(&mut self, services: &[ServiceSpec]) -> Result<(), StoreError> {
        const OP: &str = "sync services";
        let now = UnixMillis::now().0;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(io(OP))?;
        {
            // updated_at moves only when the definition really changed (or the row revives).
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO services (id, name, url, source, spec, created_at, updated_at,
                       deleted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, NULL)
                     ON CONFLICT(id) DO UPDATE SET
                       updated_at = CASE WHEN services.name IS excluded.name
                         AND services.url IS excluded.url AND services.source IS excluded.source
                         AND services.spec IS excluded.spec AND services.deleted_at IS NULL
                         THEN services.updated_at ELSE excluded.updated_at END,
                       name = excluded.name, url = excluded.url, source = excluded.source,
                       spec = excluded.spec, deleted_at = NULL",
                )
                .map_err(io(OP))?;
            let mut keep = std::collections::HashSet::with_capacity(services.len());
            for s in services {
                let id = to_i64(OP, "service id", s.id.get())?;
                keep.insert(id);
                upsert
                    .execute(params![
                        id,
                        s.name,
                        s.url,
                        s.source.as_str(),
                        s.definition_json().to_string(),
                        now
                    ])
                    .map_err(io(OP))?;
            }
            let live: Vec<i64> = {
                let mut st = tx
                    .prepare_cached(
                        "SELECT id FROM services WHERE source = 'config' AND deleted_at IS NULL",
                    )
                    .map_err(io(OP))?;
                let rows = st.query_map([], |r| r.get(0)).map_err(io(OP))?;
                rows.collect::<Result<_, _>>().map_err(io(OP))?
            };
            let mut del = tx
                .prepare_cached(
                    "UPDATE services SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1",
                )
                .map_err(io(OP))?;
            for id in live.into_iter().filter(|id| !keep.contains(id)) {
                del.execute(params![id, now]).map_err(io(OP))?;
            }
        }
        tx.commit().map_err(io(OP))
    }

    fn upsert_api_service(&mut self, spec: &ServiceSpec) -> Result<(), StoreError> {
        const OP: &str = "upsert service";
        let id = to_i64(OP, "service id", spec.id.get())?;
        let now = UnixMillis::now().0;
        // A live config row with this id is never overwritten (names are unique across both).
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO services (id, name, url, source, spec, created_at, updated_at,
                   deleted_at) VALUES (?1, ?2, ?3, 'api', ?4, ?5, ?5, NULL)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, url = excluded.url,
                   source = 'api', spec = excluded.spec, updated_at = excluded.updated_at,
                   deleted_at = NULL
                 WHERE services.source = 'api' OR services.deleted_at IS NOT NULL",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    spec.name,
                    spec.url,
                    spec.definition_json().to_string(),
                    now
                ])
            })
            .map_err(io(OP))?;
        if n == 0 {
            return Err(StoreError::Io {
                op: OP,
                reason: format!("service {} is defined in the config file", spec.name),
            });
        }
        Ok(())
    }

    fn delete_api_service(&mut self, id: ServiceId) -> Result<(), StoreError> {
        const OP: &str = "delete service";
        let sid = to_i64(OP, "service id", id.get())?;
        let now = UnixMillis::now().0;
        self.conn
            .prepare_cached(
                "UPDATE services SET deleted_at = ?2, updated_at = ?2
                 WHERE id = ?1 AND source = 'api' AND deleted_at IS NULL",
            )
            .and_then(|mut st| st.execute(params![sid, now]))
            .map_err(io(OP))?;
        Ok(())
    }

    fn prune(&mut self, cutoff: UnixMillis, max_rows: usize) -> Result<Pruned, StoreError> {
        let max_rows = max_rows.max(1);
        let mut cur = match self.prune {
            Some(c) if c.cutoff == cutoff.0 => c,
            _ => PruneCursor {
                cutoff: cutoff.0,
                next_service: i64::MIN,
                results_done: false,
            },
        };
        let mut deleted = 0;
        if !cur.results_done {
            let r = self.prune_results(&mut cur, max_rows);
            // Keep the cursor even on error so a retry resumes instead of restarting.
            self.prune = Some(cur);
            deleted = r?;
        }
        let mut done = false;
        if cur.results_done && (deleted as usize) < max_rows {
            let want = max_rows - deleted as usize;
            let n = self.prune_transitions(cur.cutoff, want)?;
            deleted += n;
            done = (n as usize) < want;
        }
        self.prune = if done { None } else { Some(cur) };
        Ok(Pruned { deleted, done })
    }
}
