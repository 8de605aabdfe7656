//! The read side of the SQLite store: history queries for the API and `since` replay.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Row};

use super::{io, to_i64, SqliteStore};
use crate::model::{ErrorKind, ProbeResult, ServiceId, Status, Timings, Transition, UnixMillis};
use crate::store::{LastState, StoreError, StoreReader, StoredService};

const RESULT_COLUMNS: &str = "service_id, scheduled_at, started_at, latency_us, connect_us,
    tls_us, first_byte_us, status_code, bytes, error_kind, error";

const TRANSITION_COLUMNS: &str =
    "seq, service_id, service, from_status, to_status, at, latency_us, status_code, error";

/// Reads a column that must hold a non-negative integer.
pub(super) fn get_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
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

pub(super) fn result_from_row(row: &Row<'_>) -> rusqlite::Result<ProbeResult> {
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

pub(super) fn transition_from_row(row: &Row<'_>) -> rusqlite::Result<Transition> {
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

impl StoreReader for SqliteStore {
    /// Number of stored results of one service.
    fn count_results(&self, service: ServiceId) -> Result<u64, StoreError> {
        let sid = to_i64("count results", "service id", service.get())?;
        self.conn
            .prepare_cached("SELECT COUNT(*) FROM results WHERE service_id = ?1")
            .and_then(|mut st| st.query_row([sid], |r| get_u64(r, 0)))
            .map_err(io("count results"))
    }

    /// Number of stored transitions.
    fn count_transitions(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM transitions", [], |r| get_u64(r, 0))
            .map_err(io("count transitions"))
    }

    /// One page of a service's history, newest first: results with `from <= scheduled_at < to`
    /// (either bound optional). For the next page pass the last item's `scheduled_at` as `to`;
    /// the primary key makes every page an index range scan.
    fn results_range(
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
    fn transitions_since(&self, since: u64, limit: usize) -> Result<Vec<Transition>, StoreError> {
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
    fn transitions_for(
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
    fn services(&self, include_deleted: bool) -> Result<Vec<StoredService>, StoreError> {
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
    fn service(&self, id: ServiceId) -> Result<Option<StoredService>, StoreError> {
        let sid = to_i64("read services", "service id", id.get())?;
        self.conn
            .prepare_cached(
                "SELECT id, name, url, source, spec, created_at, updated_at, deleted_at
                 FROM services WHERE id = ?1",
            )
            .and_then(|mut st| st.query_row([sid], service_from_row).optional())
            .map_err(io("read services"))
    }

    fn last_states(&self) -> Result<Vec<LastState>, StoreError> {
        const OP: &str = "read last states";
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT service_id, to_status, at, seq FROM transitions
                 WHERE seq IN (SELECT max(seq) FROM transitions GROUP BY service_id)",
            )
            .map_err(io(OP))?;
        let rows = st
            .query_map([], |r| {
                let status: String = r.get(1)?;
                Ok(LastState {
                    service_id: ServiceId::from_raw(get_u64(r, 0)?),
                    status: Status::parse(&status).ok_or_else(|| bad_text(1, "status", &status))?,
                    since: UnixMillis(r.get(2)?),
                    seq: get_u64(r, 3)?,
                })
            })
            .map_err(io(OP))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(io(OP))
    }

    fn max_seq(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM transitions", [], |r| {
                get_u64(r, 0)
            })
            .map_err(io("read max seq"))
    }
}
