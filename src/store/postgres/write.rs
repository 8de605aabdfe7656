//! The write side of the PostgreSQL store: batched idempotent appends, the service registry,
//! retention.
//!
//! A batch is one statement and one round trip: the results and the transitions travel as
//! column arrays (binary) and are inserted with `INSERT .. SELECT unnest(..), unnest(..) ..
//! ON CONFLICT DO NOTHING`, in data-modifying CTEs of one statement that also advances
//! `seq_counter`, so the batch commits or fails as a whole.
//!
//! Measured (docs/perf.md, `scripts/pg-bench.sh`, 1,000,000 results in batches of 65,536):
//! this costs the same CPU per row, client plus server, as the alternative, `COPY` into a
//! temporary staging table then `INSERT .. SELECT .. ON CONFLICT DO NOTHING` (three
//! alternated pairs: 0.84-1.10x, a tie within the machine's noise), and 0.68-0.86x of a plain
//! `psql \copy` with no conflict handling. With the tie it keeps the simpler path: one statement per batch, no per-connection
//! staging table to recreate after a reconnect. The unnests sit in the select list on purpose:
//! `FROM unnest(a, b, ..)` materializes every array into a tuplestore first, which measured
//! clearly slower in early runs.

use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};

use super::partitions::{self, day_of};
use super::{PgWriter, MAX_SEQ, OP_APPEND};
use crate::model::{ErrorKind, ServiceId, ServiceSpec, UnixMillis};
use crate::store::{Pruned, Record, StoreCounters, StoreError, StoreInfo, StoreWriter};

/// One statement per batch: results, transitions, and the seq counter.
const APPEND: &str = "WITH r AS (
    INSERT INTO results (service_id, scheduled_at, started_at, latency_us, connect_us, tls_us,
        first_byte_us, status_code, bytes, error_kind, error)
    SELECT unnest($1::int8[]), unnest($2::int8[]), unnest($3::int8[]), unnest($4::int8[]),
        unnest($5::int8[]), unnest($6::int8[]), unnest($7::int8[]), unnest($8::int4[]),
        unnest($9::int8[]), unnest($10::text[]), unnest($11::text[])
    ON CONFLICT DO NOTHING
), t AS (
    INSERT INTO transitions (seq, service_id, service, from_status, to_status, at, latency_us,
        status_code, error)
    SELECT * FROM unnest($12::int8[], $13::int8[], $14::text[], $15::text[], $16::text[],
        $17::int8[], $18::int8[], $19::int4[], $20::text[])
    ON CONFLICT (seq) DO NOTHING
)
UPDATE seq_counter SET last_seq = $21 WHERE last_seq < $21";

/// Upserts config services and marks config rows missing from the set deleted, in one
/// statement (so in one transaction). `updated_at` moves only when the definition changed or
/// the row revives, as in SQLite. The sub-statements share one snapshot, and the rows they
/// touch are disjoint (in the set / not in it).
const SYNC_SERVICES: &str = "WITH up AS (
    INSERT INTO services (id, name, url, source, spec, created_at, updated_at, deleted_at)
    SELECT u.id, u.name, u.url, u.source, u.spec, $6, $6, NULL
    FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[])
        AS u(id, name, url, source, spec)
    ON CONFLICT (id) DO UPDATE SET
        updated_at = CASE WHEN services.name = excluded.name AND services.url = excluded.url
            AND services.source = excluded.source AND services.spec = excluded.spec
            AND services.deleted_at IS NULL
            THEN services.updated_at ELSE excluded.updated_at END,
        name = excluded.name, url = excluded.url, source = excluded.source,
        spec = excluded.spec, deleted_at = NULL
)
UPDATE services SET deleted_at = $6, updated_at = $6
WHERE source = 'config' AND deleted_at IS NULL
  AND id NOT IN (SELECT unnest($1::int8[]))";

/// Inserts or replaces one API service; never overwrites a live config row.
const UPSERT_API: &str = "INSERT INTO services (id, name, url, source, spec, created_at,
        updated_at, deleted_at) VALUES ($1, $2, $3, 'api', $4, $5, $5, NULL)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, url = excluded.url, source = 'api',
        spec = excluded.spec, updated_at = excluded.updated_at, deleted_at = NULL
    WHERE services.source = 'api' OR services.deleted_at IS NOT NULL";

const DELETE_API: &str = "UPDATE services SET deleted_at = $2, updated_at = $2
    WHERE id = $1 AND source = 'api' AND deleted_at IS NULL";

/// One retention chunk of transitions: older than the cutoff and not their service's latest
/// (each service's latest transition is what `last_states` restores at start).
const PRUNE_TRANSITIONS: &str = "DELETE FROM transitions WHERE seq IN (
    SELECT t.seq FROM transitions t WHERE t.at < $1
      AND EXISTS (SELECT 1 FROM transitions n WHERE n.service_id = t.service_id AND n.seq > t.seq)
    ORDER BY t.seq LIMIT $2)";

/// Converts an unsigned value for a bigint column, failing rather than wrapping.
fn to_i64(op: &'static str, what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Io {
        op,
        reason: format!("{what} {v} does not fit a bigint column"),
    })
}

/// Whole microseconds of a duration, saturating.
fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A batch as column arrays, results in key order.
#[derive(Default)]
struct Columns<'a> {
    r_sid: Vec<i64>,
    r_sched: Vec<i64>,
    r_started: Vec<i64>,
    r_latency: Vec<i64>,
    r_connect: Vec<i64>,
    r_tls: Vec<i64>,
    r_first_byte: Vec<i64>,
    r_code: Vec<Option<i32>>,
    r_bytes: Vec<i64>,
    r_kind: Vec<Option<&'static str>>,
    r_error: Vec<Option<&'a str>>,
    t_seq: Vec<i64>,
    t_sid: Vec<i64>,
    t_service: Vec<&'a str>,
    t_from: Vec<&'static str>,
    t_to: Vec<&'static str>,
    t_at: Vec<i64>,
    t_latency: Vec<i64>,
    t_code: Vec<Option<i32>>,
    t_error: Vec<Option<&'a str>>,
    max_seq: i64,
    /// Distinct days of the results' scheduled_at.
    days: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// Splits `batch` into columns. Results go in key order (a stable order: of two rows with
    /// the same key the first in the batch wins), so the primary key index is walked left to
    /// right. A record whose id or seq does not fit a bigint (only possible through a bug) is
    /// skipped with a warning rather than failing the batch forever.
    fn of(batch: &'a [Record], order: &mut Vec<(u64, i64, usize)>) -> Columns<'a> {
        order.clear();
        let mut c = Columns::default();
        for (i, rec) in batch.iter().enumerate() {
            match rec {
                Record::Result(r) => {
                    if i64::try_from(r.service_id.get()).is_err() {
                        tracing::warn!(
                            service_id = r.service_id.get(),
                            "result skipped: id out of range"
                        );
                        continue;
                    }
                    order.push((r.service_id.get(), r.scheduled_at.0, i));
                }
                Record::Transition(t) => {
                    let (Ok(seq), Ok(sid)) =
                        (i64::try_from(t.seq), i64::try_from(t.service_id.get()))
                    else {
                        tracing::warn!(seq = t.seq, "transition skipped: seq or id out of range");
                        continue;
                    };
                    c.t_seq.push(seq);
                    c.t_sid.push(sid);
                    c.t_service.push(&t.service);
                    c.t_from.push(t.from.as_str());
                    c.t_to.push(t.to.as_str());
                    c.t_at.push(t.at.0);
                    c.t_latency.push(micros(t.latency));
                    c.t_code.push(t.status_code.map(i32::from));
                    c.t_error.push(t.error.as_deref());
                    c.max_seq = c.max_seq.max(seq);
                }
            }
        }
        order.sort_unstable();
        let n = order.len();
        for v in [
            &mut c.r_sid,
            &mut c.r_sched,
            &mut c.r_started,
            &mut c.r_latency,
            &mut c.r_connect,
            &mut c.r_tls,
            &mut c.r_first_byte,
            &mut c.r_bytes,
        ] {
            v.reserve_exact(n);
        }
        c.r_code.reserve_exact(n);
        c.r_kind.reserve_exact(n);
        c.r_error.reserve_exact(n);
        for &(sid, sched, i) in order.iter() {
            let Some(Record::Result(r)) = batch.get(i) else {
                continue;
            };
            c.r_sid.push(sid as i64);
            c.r_sched.push(sched);
            c.r_started.push(r.started_at.0);
            c.r_latency.push(micros(r.timings.total));
            c.r_connect.push(micros(r.timings.connect));
            c.r_tls.push(micros(r.timings.tls));
            c.r_first_byte.push(micros(r.timings.first_byte));
            c.r_code.push(r.status_code.map(i32::from));
            c.r_bytes.push(i64::try_from(r.bytes).unwrap_or(i64::MAX));
            c.r_kind.push(r.error_kind.map(ErrorKind::as_str));
            c.r_error.push(r.error.as_deref());
            let day = day_of(sched);
            if !c.days.contains(&day) {
                c.days.push(day);
            }
        }
        c
    }

    /// The statement's parameters with their types.
    fn params(&self) -> [(&(dyn ToSql + Sync), Type); 21] {
        let i8a = Type::INT8_ARRAY;
        let i4a = Type::INT4_ARRAY;
        let ta = Type::TEXT_ARRAY;
        [
            (&self.r_sid, i8a.clone()),
            (&self.r_sched, i8a.clone()),
            (&self.r_started, i8a.clone()),
            (&self.r_latency, i8a.clone()),
            (&self.r_connect, i8a.clone()),
            (&self.r_tls, i8a.clone()),
            (&self.r_first_byte, i8a.clone()),
            (&self.r_code, i4a.clone()),
            (&self.r_bytes, i8a.clone()),
            (&self.r_kind, ta.clone()),
            (&self.r_error, ta.clone()),
            (&self.t_seq, i8a.clone()),
            (&self.t_sid, i8a.clone()),
            (&self.t_service, ta.clone()),
            (&self.t_from, ta.clone()),
            (&self.t_to, ta.clone()),
            (&self.t_at, i8a.clone()),
            (&self.t_latency, i8a.clone()),
            (&self.t_code, i4a),
            (&self.t_error, ta),
            (&self.max_seq, Type::INT8),
        ]
    }
}

impl PgWriter {
    /// Creates the partitions of today, the next days and `days` that are not known to exist.
    fn ensure_partitions(&mut self, days: &[i64]) -> Result<(), StoreError> {
        partitions::ensure(&mut self.conn, &mut self.partitions, days)
    }

    fn append_columns(&mut self, cols: &Columns<'_>) -> Result<(), StoreError> {
        self.ensure_partitions(&cols.days)?;
        let params = cols.params();
        let p = &params;
        self.conn
            .run(
                OP_APPEND,
                |c| async move { c.execute_typed(APPEND, p).await },
            )
            .map(|_| ())
    }

    /// Drops the oldest partition that ended before `cutoff`; Some(estimated rows) when one
    /// was dropped.
    fn drop_oldest_partition(&mut self, cutoff: i64) -> Result<Option<u64>, StoreError> {
        const OP: &str = "retention";
        let listed = self
            .conn
            .run(OP, |c| async move { partitions::list(&c).await })?;
        let Some((day, name)) = listed
            .into_iter()
            .find(|(day, _)| (day + 1).saturating_mul(partitions::DAY_MS) <= cutoff)
        else {
            return Ok(None);
        };
        let n = &name;
        let rows = self.conn.run(OP, |c| async move {
            let rows = partitions::estimated_rows(&c, n).await?;
            partitions::drop_one(&c, n).await?;
            Ok(rows)
        })?;
        self.partitions.forget(day);
        tracing::info!(partition = %name, rows, "retention dropped a results partition");
        Ok(Some(rows))
    }
}

impl StoreWriter for PgWriter {
    fn open_info(&mut self) -> Result<StoreInfo, StoreError> {
        self.ensure_partitions(&[])?;
        let max: i64 = self.conn.run("read max seq", |c| async move {
            c.query_one(MAX_SEQ, &[]).await?.try_get(0)
        })?;
        Ok(StoreInfo {
            max_seq: u64::try_from(max).unwrap_or(0),
        })
    }

    fn attach(&mut self, counters: Arc<StoreCounters>) {
        self.conn.count_reconnects(counters);
    }

    fn append(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        let mut order = std::mem::take(&mut self.order);
        let res = {
            let cols = Columns::of(batch, &mut order);
            self.append_columns(&cols)
        };
        self.order = order;
        if res.is_err() {
            // A partition dropped behind our back (or any other surprise) is found again by
            // re-reading the catalog before the retry.
            self.partitions.reset();
        }
        res
    }

    fn sync_services(&mut self, services: &[ServiceSpec]) -> Result<(), StoreError> {
        const OP: &str = "sync services";
        // ON CONFLICT DO UPDATE refuses to touch a row twice in one statement: keep the last
        // definition of an id (names are unique, so this only guards against a caller's bug).
        let mut by_id = std::collections::BTreeMap::new();
        for s in services {
            by_id.insert(to_i64(OP, "service id", s.id.get())?, s);
        }
        let ids: Vec<i64> = by_id.keys().copied().collect();
        let names: Vec<&str> = by_id.values().map(|s| s.name.as_str()).collect();
        let urls: Vec<&str> = by_id.values().map(|s| s.url.as_str()).collect();
        let sources: Vec<&str> = by_id.values().map(|s| s.source.as_str()).collect();
        let specs: Vec<String> = by_id
            .values()
            .map(|s| s.definition_json().to_string())
            .collect();
        let now = UnixMillis::now().0;
        let params: [(&(dyn ToSql + Sync), Type); 6] = [
            (&ids, Type::INT8_ARRAY),
            (&names, Type::TEXT_ARRAY),
            (&urls, Type::TEXT_ARRAY),
            (&sources, Type::TEXT_ARRAY),
            (&specs, Type::TEXT_ARRAY),
            (&now, Type::INT8),
        ];
        let p = &params;
        self.conn
            .run(
                OP,
                |c| async move { c.execute_typed(SYNC_SERVICES, p).await },
            )
            .map(|_| ())
    }

    fn upsert_api_service(&mut self, spec: &ServiceSpec) -> Result<(), StoreError> {
        const OP: &str = "upsert service";
        let id = to_i64(OP, "service id", spec.id.get())?;
        let json = spec.definition_json().to_string();
        let now = UnixMillis::now().0;
        let params: [(&(dyn ToSql + Sync), Type); 5] = [
            (&id, Type::INT8),
            (&spec.name, Type::TEXT),
            (&spec.url, Type::TEXT),
            (&json, Type::TEXT),
            (&now, Type::INT8),
        ];
        let p = &params;
        let n = self
            .conn
            .run(OP, |c| async move { c.execute_typed(UPSERT_API, p).await })?;
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
        let params: [(&(dyn ToSql + Sync), Type); 2] = [(&sid, Type::INT8), (&now, Type::INT8)];
        let p = &params;
        self.conn
            .run(OP, |c| async move { c.execute_typed(DELETE_API, p).await })
            .map(|_| ())
    }

    /// One step: drop one whole day of results older than the cutoff, or else delete a chunk
    /// of old transitions (never a service's latest).
    fn prune(&mut self, cutoff: UnixMillis, max_rows: usize) -> Result<Pruned, StoreError> {
        if let Some(rows) = self.drop_oldest_partition(cutoff.0)? {
            return Ok(Pruned {
                deleted: rows,
                done: false,
            });
        }
        let limit = i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX);
        let params: [(&(dyn ToSql + Sync), Type); 2] =
            [(&cutoff.0, Type::INT8), (&limit, Type::INT8)];
        let p = &params;
        let n = self.conn.run("retention", |c| async move {
            c.execute_typed(PRUNE_TRANSITIONS, p).await
        })?;
        Ok(Pruned {
            deleted: n,
            done: n < limit as u64,
        })
    }
}
