//! The read side of the PostgreSQL store: history for the API and `since` replay, with the
//! same queries, orders and page semantics as SQLite's.
//!
//! A service's history page is `service_id = $1 AND scheduled_at < $to ORDER BY scheduled_at
//! DESC LIMIT n`: the planner prunes partitions outside `[from, to)` and walks the remaining
//! ones newest first through each partition's primary key, stopping after `n` rows, so a page
//! costs the same with ten days or a year stored (docs/perf.md).

use std::time::Duration;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use super::{PgReader, MAX_SEQ};
use crate::model::{ErrorKind, ProbeResult, ServiceId, Status, Timings, Transition, UnixMillis};
use crate::store::{LastState, StoreError, StoreReader, StoredService};

const RESULT_COLUMNS: &str = "service_id, scheduled_at, started_at, latency_us, connect_us,
    tls_us, first_byte_us, status_code, bytes, error_kind, error";

const TRANSITION_COLUMNS: &str =
    "seq, service_id, service, from_status, to_status, at, latency_us, status_code, error";

const SERVICE_COLUMNS: &str = "id, name, url, source, spec, created_at, updated_at, deleted_at";

/// Reads a bigint column that must hold a non-negative value.
fn get_u64(row: &Row, idx: usize) -> Result<u64, String> {
    let v: i64 = row.try_get(idx).map_err(|e| e.to_string())?;
    u64::try_from(v).map_err(|_| format!("column {idx} holds {v}, expected >= 0"))
}

/// Reads a nullable microsecond column as a duration (NULL or negative = zero).
fn get_micros(row: &Row, idx: usize) -> Result<Duration, String> {
    let v: Option<i64> = row.try_get(idx).map_err(|e| e.to_string())?;
    Ok(Duration::from_micros(
        v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
    ))
}

/// Reads a nullable HTTP status code column.
fn get_code(row: &Row, idx: usize) -> Result<Option<u16>, String> {
    let v: Option<i32> = row.try_get(idx).map_err(|e| e.to_string())?;
    v.map(|v| u16::try_from(v).map_err(|_| format!("status code {v} out of range")))
        .transpose()
}

/// Reads a column, the error as text.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, String> {
    row.try_get(idx).map_err(|e| e.to_string())
}

fn status(row: &Row, idx: usize) -> Result<Status, String> {
    let s: String = get(row, idx)?;
    Status::parse(&s).ok_or_else(|| format!("unknown status {s:?}"))
}

fn result_from_row(row: &Row) -> Result<ProbeResult, String> {
    let error_kind: Option<String> = get(row, 9)?;
    let error_kind = match error_kind {
        None => None,
        Some(s) => Some(ErrorKind::parse(&s).ok_or_else(|| format!("unknown error kind {s:?}"))?),
    };
    Ok(ProbeResult {
        service_id: ServiceId::from_raw(get_u64(row, 0)?),
        scheduled_at: UnixMillis(get(row, 1)?),
        started_at: UnixMillis(get(row, 2)?),
        timings: Timings {
            total: get_micros(row, 3)?,
            connect: get_micros(row, 4)?,
            tls: get_micros(row, 5)?,
            first_byte: get_micros(row, 6)?,
        },
        status_code: get_code(row, 7)?,
        bytes: get_u64(row, 8)?,
        error_kind,
        error: get(row, 10)?,
    })
}

fn transition_from_row(row: &Row) -> Result<Transition, String> {
    Ok(Transition {
        seq: get_u64(row, 0)?,
        service_id: ServiceId::from_raw(get_u64(row, 1)?),
        service: get(row, 2)?,
        from: status(row, 3)?,
        to: status(row, 4)?,
        at: UnixMillis(get(row, 5)?),
        latency: get_micros(row, 6)?,
        status_code: get_code(row, 7)?,
        error: get(row, 8)?,
    })
}

fn service_from_row(row: &Row) -> Result<StoredService, String> {
    let ms = |idx| -> Result<Option<UnixMillis>, String> {
        Ok(get::<Option<i64>>(row, idx)?.map(UnixMillis))
    };
    Ok(StoredService {
        id: ServiceId::from_raw(get_u64(row, 0)?),
        name: get(row, 1)?,
        url: get(row, 2)?,
        source: get(row, 3)?,
        spec: get(row, 4)?,
        created_at: ms(5)?,
        updated_at: ms(6)?,
        deleted_at: ms(7)?,
    })
}

fn sid(op: &'static str, id: ServiceId) -> Result<i64, StoreError> {
    i64::try_from(id.get()).map_err(|_| StoreError::Io {
        op,
        reason: format!("service id {} does not fit a bigint column", id.get()),
    })
}

fn clamp(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgReader {
    /// Runs a query and converts every row, naming `op` in any error.
    fn rows<T>(
        &self,
        op: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
        convert: impl Fn(&Row) -> Result<T, String>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self
            .conn
            .borrow_mut()
            .run(op, |c| async move { c.query_typed(sql, params).await })?;
        rows.iter()
            .map(|r| convert(r).map_err(|reason| StoreError::Io { op, reason }))
            .collect()
    }

    fn count(
        &self,
        op: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<u64, StoreError> {
        let n = self.rows(op, sql, params, |r| get_u64(r, 0))?;
        Ok(n.first().copied().unwrap_or(0))
    }
}

impl StoreReader for PgReader {
    fn count_results(&self, service: ServiceId) -> Result<u64, StoreError> {
        const OP: &str = "count results";
        let id = sid(OP, service)?;
        self.count(
            OP,
            "SELECT COUNT(*) FROM results WHERE service_id = $1",
            &[(&id, Type::INT8)],
        )
    }

    fn count_transitions(&self) -> Result<u64, StoreError> {
        self.count("count transitions", "SELECT COUNT(*) FROM transitions", &[])
    }

    fn results_range(
        &self,
        service: ServiceId,
        from: Option<UnixMillis>,
        to: Option<UnixMillis>,
        limit: usize,
    ) -> Result<Vec<ProbeResult>, StoreError> {
        const OP: &str = "read results";
        let id = sid(OP, service)?;
        let from = from.map_or(i64::MIN, |t| t.0);
        let to = to.map_or(i64::MAX, |t| t.0);
        let limit = clamp(limit);
        let sql = format!(
            "SELECT {RESULT_COLUMNS} FROM results WHERE service_id = $1 AND scheduled_at >= $2
             AND scheduled_at < $3 ORDER BY scheduled_at DESC LIMIT $4"
        );
        self.rows(
            OP,
            &sql,
            &[
                (&id, Type::INT8),
                (&from, Type::INT8),
                (&to, Type::INT8),
                (&limit, Type::INT8),
            ],
            result_from_row,
        )
    }

    fn transitions_since(&self, since: u64, limit: usize) -> Result<Vec<Transition>, StoreError> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let limit = clamp(limit);
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS} FROM transitions WHERE seq > $1 ORDER BY seq LIMIT $2"
        );
        self.rows(
            "read transitions",
            &sql,
            &[(&since, Type::INT8), (&limit, Type::INT8)],
            transition_from_row,
        )
    }

    fn transitions_for(
        &self,
        service: ServiceId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Transition>, StoreError> {
        const OP: &str = "read transitions";
        let id = sid(OP, service)?;
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = clamp(limit);
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS} FROM transitions WHERE service_id = $1 AND seq < $2
             ORDER BY seq DESC LIMIT $3"
        );
        self.rows(
            OP,
            &sql,
            &[
                (&id, Type::INT8),
                (&before, Type::INT8),
                (&limit, Type::INT8),
            ],
            transition_from_row,
        )
    }

    fn services(&self, include_deleted: bool) -> Result<Vec<StoredService>, StoreError> {
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE $1 OR deleted_at IS NULL ORDER BY name"
        );
        self.rows(
            "read services",
            &sql,
            &[(&include_deleted, Type::BOOL)],
            service_from_row,
        )
    }

    fn service(&self, id: ServiceId) -> Result<Option<StoredService>, StoreError> {
        const OP: &str = "read services";
        let id = sid(OP, id)?;
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1");
        Ok(self
            .rows(OP, &sql, &[(&id, Type::INT8)], service_from_row)?
            .into_iter()
            .next())
    }

    fn max_seq(&self) -> Result<u64, StoreError> {
        self.count("read max seq", MAX_SEQ, &[])
    }

    fn services_fingerprint(&self) -> Result<Option<String>, StoreError> {
        // Every insert or update gives a row a new xmin (its transaction's id) and a deletion
        // changes the count, so the pair moves on every change; the scan stays in the
        // server (no rows sent, no specs parsed).
        let fp = self.rows(
            "read services fingerprint",
            "SELECT count(*)::text || '/' || COALESCE(sum(xmin::text::int8), 0)::text
             FROM services",
            &[],
            |r| r.try_get::<_, String>(0).map_err(|e| e.to_string()),
        )?;
        Ok(fp.into_iter().next())
    }

    fn last_states(&self) -> Result<Vec<LastState>, StoreError> {
        // DISTINCT ON walks the (service_id, seq) index once, newest per service.
        self.rows(
            "read last states",
            "SELECT DISTINCT ON (service_id) service_id, to_status, at, seq FROM transitions
             ORDER BY service_id, seq DESC",
            &[],
            |r| {
                Ok(LastState {
                    service_id: ServiceId::from_raw(get_u64(r, 0)?),
                    status: status(r, 1)?,
                    since: UnixMillis(get(r, 2)?),
                    seq: get_u64(r, 3)?,
                })
            },
        )
    }
}
