//! Daily partitions of `results` and retention by dropping them.
//!
//! `results` is partitioned by RANGE of `scheduled_at` (Unix ms), one partition per UTC day,
//! named `results_YYYYMMDD`. The writer creates them ahead of time (today and the next
//! `AHEAD_DAYS`, checked before every batch against an in-memory set, so it costs nothing per
//! batch) and also creates the partition of any other day a batch touches (a late result from
//! yesterday, a clock that jumped) before inserting, so an insert never fails for want of a
//! partition. Creating a partition briefly locks the parent, which is why it is done ahead and
//! not at midnight on the hot path.
//!
//! Retention drops whole partitions whose day ended before the cutoff: one `DROP TABLE`, no
//! row-by-row DELETE, no scan, no vacuum debt. So up to one day more than `storage.retention`
//! is kept.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::model::UnixMillis;

/// Milliseconds in a UTC day (partition width).
pub(super) const DAY_MS: i64 = 86_400_000;
/// Days after today whose partitions always exist.
pub(super) const AHEAD_DAYS: i64 = 2;
/// Advisory lock serializing partition DDL between processes (cluster ingest nodes), so two
/// `CREATE TABLE IF NOT EXISTS` of the same partition cannot collide in the catalog.
const PARTITION_LOCK: i64 = 0x7269_6e67_7061_7274;
/// A partition drop waits at most this long for the parent's lock (readers and writers of
/// other connections), then gives up until the next retention pass instead of queueing
/// everyone behind it.
pub(super) const DROP_LOCK_TIMEOUT: &str = "5s";

/// The UTC day number (days since the epoch) of a timestamp.
pub(super) fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// `results_YYYYMMDD` for a day number.
pub(super) fn name_of(day: i64) -> String {
    let date = UnixMillis(day.saturating_mul(DAY_MS)).to_rfc3339();
    // `YYYY-MM-DDT...`: keep the digits of the date.
    let digits: String = date.chars().take(10).filter(char::is_ascii_digit).collect();
    format!("results_{digits}")
}

/// The day number of a `results_YYYYMMDD` name, None for any other table.
pub(super) fn day_of_name(name: &str) -> Option<i64> {
    let d = name.strip_prefix("results_")?;
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = UnixMillis::parse_rfc3339(&format!("{}-{}-{}T00:00:00Z", &d[..4], &d[4..6], &d[6..]))?;
    // Reject dates that normalised (20260231) so the name round-trips exactly.
    let day = day_of(t.0);
    (name_of(day) == name).then_some(day)
}

/// `CREATE TABLE IF NOT EXISTS` for one day's partition, under the DDL advisory lock.
fn create_sql(day: i64) -> String {
    let from = day.saturating_mul(DAY_MS);
    let to = from.saturating_add(DAY_MS);
    format!(
        "BEGIN; SELECT pg_advisory_xact_lock({PARTITION_LOCK}); \
         CREATE TABLE IF NOT EXISTS {} PARTITION OF results FOR VALUES FROM ({from}) TO ({to}); \
         COMMIT;",
        name_of(day)
    )
}

/// Partitions this process knows to exist.
#[derive(Debug, Default)]
pub(super) struct Partitions {
    known: BTreeSet<i64>,
    /// The catalog has been read since the last reset.
    loaded: bool,
}

/// Creates the partitions of today, the next days and `days` that `known` does not know to
/// exist (the writer's and ingest's connections each keep their own `known`).
pub(super) fn ensure(
    conn: &mut super::conn::Conn,
    known: &mut Partitions,
    days: &[i64],
) -> Result<(), crate::store::StoreError> {
    if known.needs_load() {
        let listed = conn.run("list partitions", |c| async move { list(&c).await })?;
        known.loaded(listed.into_iter().map(|(d, _)| d));
    }
    let missing = known.missing(day_of(crate::model::UnixMillis::now().0), days);
    if missing.is_empty() {
        return Ok(());
    }
    let m = &missing;
    conn.run("create partitions", |c| async move { create(&c, m).await })?;
    for d in missing {
        known.created(d);
    }
    Ok(())
}

impl Partitions {
    /// Forgets what it knew (after an insert found a partition missing).
    pub(super) fn reset(&mut self) {
        self.known.clear();
        self.loaded = false;
    }

    /// Marks a day's partition gone (after retention dropped it).
    pub(super) fn forget(&mut self, day: i64) {
        self.known.remove(&day);
    }

    /// The days from today to `AHEAD_DAYS` ahead and the `days` of a batch, without the ones
    /// known to exist.
    pub(super) fn missing(&self, today: i64, days: &[i64]) -> Vec<i64> {
        (today..=today + AHEAD_DAYS)
            .chain(days.iter().copied())
            .filter(|d| !self.known.contains(d))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Whether the catalog must be read before `missing` can be trusted.
    pub(super) fn needs_load(&self) -> bool {
        !self.loaded
    }

    /// Records the partitions listed in the catalog.
    pub(super) fn loaded(&mut self, days: impl IntoIterator<Item = i64>) {
        self.known.extend(days);
        self.loaded = true;
    }

    /// Records a partition created.
    pub(super) fn created(&mut self, day: i64) {
        self.known.insert(day);
    }
}

/// Every `results_YYYYMMDD` partition attached to `results`, as (day, name), oldest first.
pub(super) async fn list(client: &Client) -> Result<Vec<(i64, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'results'::regclass",
            &[],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let name: String = r.try_get(0)?;
        if let Some(day) = day_of_name(&name) {
            out.push((day, name));
        }
    }
    out.sort();
    Ok(out)
}

/// Creates the partitions of `days` (idempotent; safe against other processes doing the same).
pub(super) async fn create(client: &Client, days: &[i64]) -> Result<(), tokio_postgres::Error> {
    for &day in days {
        client.batch_execute(&create_sql(day)).await?;
    }
    Ok(())
}

/// The planner's row estimate of a partition (`pg_class.reltuples`, kept by autovacuum and
/// ANALYZE; 0 when never analysed): what retention reports as deleted, without counting.
pub(super) async fn estimated_rows(
    client: &Client,
    name: &str,
) -> Result<u64, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT reltuples::float8 FROM pg_class WHERE relname = $1 AND relkind = 'r'",
            &[&name],
        )
        .await?;
    let n: f64 = match row {
        Some(r) => r.try_get(0)?,
        None => 0.0,
    };
    Ok(if n > 0.0 { n as u64 } else { 0 })
}

/// Drops one partition: a single statement, whatever its size.
pub(super) async fn drop_one(client: &Client, name: &str) -> Result<(), tokio_postgres::Error> {
    // `name` comes from `list`, which only returns names matching results_YYYYMMDD.
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'; DROP TABLE IF EXISTS {name}; COMMIT;"
        ))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        let day = day_of(1_795_362_705_123);
        assert_eq!(name_of(day), "results_20261122");
        assert_eq!(day_of_name("results_20261122"), Some(day));
        assert_eq!(day_of_name("results_20260231"), None);
        assert_eq!(day_of_name("results_2026112"), None);
        assert_eq!(day_of_name("results_staging"), None);
        assert_eq!(name_of(0), "results_19700101");
        assert_eq!(day_of(-1), -1, "before the epoch rounds down");
    }

    #[test]
    fn missing_lists_ahead_and_batch_days_once() {
        let mut p = Partitions::default();
        assert!(p.needs_load());
        p.loaded([10, 11]);
        assert_eq!(p.missing(10, &[3, 12, 3]), vec![3, 12]);
        p.created(12);
        p.created(3);
        assert!(p.missing(10, &[3]).is_empty());
        p.forget(3);
        assert_eq!(p.missing(10, &[3]), vec![3]);
        p.reset();
        assert!(p.needs_load());
    }
}
