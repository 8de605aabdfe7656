//! Cluster ingest on PostgreSQL: a batch of results stored and judged in one transaction.
//!
//! 1. insert the results (`ON CONFLICT DO NOTHING RETURNING` the keys that were new: a
//!    redelivered result inserts nothing and so decides nothing);
//! 2. create missing `service_state` rows (from the service's latest stored transition, so a
//!    database carried over from standalone keeps its statuses) and lock the rows of the
//!    services with new results, in id order (two ingest processes never deadlock);
//! 3. run the state machine over each service's new results in `scheduled_at` order, skipping
//!    any not newer than the last one applied (the ordering guard);
//! 4. number the decided transitions from `seq_counter` (its row lock orders the transactions
//!    that produce transitions, so seq is gap-free and in commit order), insert them, update
//!    the state rows, commit.

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::conn::{ClientFuture, Conn};
use super::partitions::{self, day_of, Partitions};
use crate::config::PgConfig;
use crate::model::{Status, Transition, UnixMillis};
use crate::pipeline::judge::Health;
use crate::store::{IngestOutcome, IngestStore, Ingested, StoreError};

const OP: &str = "ingest";

const INSERT_RESULTS: &str = "INSERT INTO results (service_id, scheduled_at, started_at,
        latency_us, connect_us, tls_us, first_byte_us, status_code, bytes, error_kind, error)
    SELECT unnest($1::int8[]), unnest($2::int8[]), unnest($3::int8[]), unnest($4::int8[]),
        unnest($5::int8[]), unnest($6::int8[]), unnest($7::int8[]), unnest($8::int4[]),
        unnest($9::int8[]), unnest($10::text[]), unnest($11::text[])
    ON CONFLICT DO NOTHING
    RETURNING service_id, scheduled_at";

const RESULT_TYPES: &[Type] = &[
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
];

/// New state rows start from the service's latest transition (or unknown). Services that
/// have a row (nearly every one, nearly always) are skipped before the lookups run.
const INIT_STATE: &str = "INSERT INTO service_state (service_id, status, since, ok_run,
        fail_run, updated_at)
    SELECT u.id,
        COALESCE((SELECT to_status FROM transitions t WHERE t.service_id = u.id
                  ORDER BY seq DESC LIMIT 1), 'unknown'),
        COALESCE((SELECT at FROM transitions t WHERE t.service_id = u.id
                  ORDER BY seq DESC LIMIT 1), $2),
        0, 0, $2
    FROM unnest($1::int8[]) AS u(id)
    WHERE NOT EXISTS (SELECT 1 FROM service_state s WHERE s.service_id = u.id)
    ORDER BY u.id
    ON CONFLICT (service_id) DO NOTHING";

const LOCK_STATE: &str = "SELECT service_id, status, since, ok_run, fail_run, last_scheduled_at
    FROM service_state WHERE service_id = ANY($1::int8[]) ORDER BY service_id FOR UPDATE";

const NEXT_SEQ: &str = "UPDATE seq_counter SET last_seq = last_seq + $1 RETURNING last_seq";

const INSERT_TRANSITIONS: &str = "INSERT INTO transitions (seq, service_id, service,
        from_status, to_status, at, latency_us, status_code, error)
    SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[],
        $6::int8[], $7::int8[], $8::int4[], $9::text[])";

const TRANSITION_TYPES: &[Type] = &[
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT4_ARRAY,
    Type::TEXT_ARRAY,
];

const UPDATE_STATE: &str = "UPDATE service_state s SET status = u.status, since = u.since,
        ok_run = u.ok_run, fail_run = u.fail_run, last_scheduled_at = u.last_scheduled_at,
        last_seq = COALESCE(u.last_seq, s.last_seq), updated_at = $8
    FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int4[], $5::int4[], $6::int8[],
        $7::int8[]) AS u(id, status, since, ok_run, fail_run, last_scheduled_at, last_seq)
    WHERE s.service_id = u.id";

const STATE_TYPES: &[Type] = &[
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::INT4_ARRAY,
    Type::INT4_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8,
];

/// The transaction's statements, prepared once per connection: parsed and planned once, and
/// one round trip each per batch instead of two (measured in perf.md, "Cluster").
#[derive(Clone, Debug)]
struct Statements {
    insert_results: Statement,
    init_state: Statement,
    lock_state: Statement,
    next_seq: Statement,
    insert_transitions: Statement,
    update_state: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            insert_results: c.prepare_typed(INSERT_RESULTS, RESULT_TYPES).await?,
            init_state: c
                .prepare_typed(INIT_STATE, &[Type::INT8_ARRAY, Type::INT8])
                .await?,
            lock_state: c.prepare_typed(LOCK_STATE, &[Type::INT8_ARRAY]).await?,
            next_seq: c.prepare_typed(NEXT_SEQ, &[Type::INT8]).await?,
            insert_transitions: c
                .prepare_typed(INSERT_TRANSITIONS, TRANSITION_TYPES)
                .await?,
            update_state: c.prepare_typed(UPDATE_STATE, STATE_TYPES).await?,
        })
    }
}

/// Cluster ingest's connection.
#[derive(Debug)]
pub struct PgIngest {
    conn: Conn,
    partitions: Partitions,
    /// The statements and the session they were prepared on.
    statements: Option<(u64, Statements)>,
}

impl PgIngest {
    /// Connects now, so a wrong URL or a server that is down fails at start.
    pub fn open(cfg: &PgConfig) -> Result<PgIngest, StoreError> {
        let mut conn = Conn::new(cfg)?;
        conn.connect()?;
        Ok(PgIngest {
            conn,
            partitions: Partitions::default(),
            statements: None,
        })
    }

    /// The statements prepared on the live connection (prepared again after a reconnect).
    fn statements(&mut self) -> Result<Statements, StoreError> {
        let session = self.conn.session()?;
        if let Some((on, st)) = &self.statements {
            if *on == session {
                return Ok(st.clone());
            }
        }
        let st = self.conn.exclusive("prepare ingest statements", |c| {
            Box::pin(async move { Statements::prepare(c).await })
        })?;
        self.statements = Some((session, st.clone()));
        Ok(st)
    }
}

impl IngestStore for PgIngest {
    fn ingest(&mut self, batch: &[Ingested]) -> Result<IngestOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let days: Vec<i64> = batch
            .iter()
            .map(|i| day_of(i.result.scheduled_at.0))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        partitions::ensure(&mut self.conn, &mut self.partitions, &days)?;
        let st = self.statements()?;
        // The transaction's future may only borrow the client; it owns its copy of the batch.
        let owned = batch.to_vec();
        let res = self.conn.exclusive(OP, move |c| judge_tx(c, owned, st));
        if res.is_err() {
            self.partitions.reset();
            // A statement may be what failed (dropped by the server): prepare afresh.
            self.statements = None;
        }
        res
    }
}

fn judge_tx(
    client: &mut Client,
    batch: Vec<Ingested>,
    st: Statements,
) -> ClientFuture<'_, IngestOutcome> {
    Box::pin(async move {
        let batch = &batch[..];
        let tx = client.transaction().await?;
        let now = UnixMillis::now().0;
        let new: HashSet<(i64, i64)> = tx
            .query(&st.insert_results, &result_params(batch).refs())
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if new.is_empty() {
            tx.commit().await?;
            return Ok(IngestOutcome::default());
        }
        // Each service's new results, oldest first.
        let mut by_service: BTreeMap<i64, Vec<&Ingested>> = BTreeMap::new();
        for i in batch {
            let key = (i.result.service_id.get() as i64, i.result.scheduled_at.0);
            if new.contains(&key) {
                by_service.entry(key.0).or_default().push(i);
            }
        }
        let ids: Vec<i64> = by_service.keys().copied().collect();
        tx.execute(&st.init_state, &[&ids, &now]).await?;
        let mut states = Vec::with_capacity(ids.len());
        for row in tx.query(&st.lock_state, &[&ids]).await? {
            let status: String = row.get(1);
            states.push(State {
                id: row.get(0),
                health: Health::from_parts(
                    Status::parse(&status).unwrap_or(Status::Unknown),
                    UnixMillis(row.get(2)),
                    u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                    u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
                ),
                last: row.get(5),
                last_seq: None,
            });
        }
        let mut decided = Vec::new();
        for st in &mut states {
            if let Some(results) = by_service.get_mut(&st.id) {
                results.sort_by_key(|i| i.result.scheduled_at);
                st.apply(results, &mut decided);
            }
        }
        let transitions = number(&tx, &st.next_seq, decided, &mut states).await?;
        if !transitions.is_empty() {
            tx.execute(
                &st.insert_transitions,
                &TransitionColumns::of(&transitions).refs(),
            )
            .await?;
        }
        tx.execute(&st.update_state, &StateColumns::of(&states, now).refs())
            .await?;
        tx.commit().await?;
        Ok(IngestOutcome {
            new_rows: new.len(),
            transitions,
        })
    })
}

/// Takes the decided changes' seqs from the counter row (locking it until commit).
async fn number(
    tx: &tokio_postgres::Transaction<'_>,
    next_seq: &Statement,
    decided: Vec<(i64, Transition)>,
    states: &mut [State],
) -> Result<Vec<Transition>, tokio_postgres::Error> {
    if decided.is_empty() {
        return Ok(Vec::new());
    }
    let n = decided.len() as i64;
    let last: i64 = tx.query_one(next_seq, &[&n]).await?.get(0);
    let first = last - n + 1;
    let mut out = Vec::with_capacity(decided.len());
    for ((id, mut t), seq) in decided.into_iter().zip(first..) {
        t.seq = seq as u64;
        if let Some(st) = states.iter_mut().find(|s| s.id == id) {
            st.last_seq = Some(seq);
        }
        out.push(t);
    }
    Ok(out)
}

/// One service's state row while the transaction judges it.
struct State {
    id: i64,
    health: Health,
    /// The newest `scheduled_at` applied (the ordering guard).
    last: Option<i64>,
    last_seq: Option<i64>,
}

impl State {
    /// Folds `results` (oldest first) in; pushes the transitions they decide (seq 0 until
    /// numbered).
    fn apply(&mut self, results: &[&Ingested], decided: &mut Vec<(i64, Transition)>) {
        for i in results {
            let r = &i.result;
            if self.last.is_some_and(|l| r.scheduled_at.0 <= l) {
                continue;
            }
            self.last = Some(r.scheduled_at.0);
            let at = UnixMillis(r.started_at.0 + r.timings.total.as_millis() as i64);
            if let Some(change) =
                self.health
                    .observe(r.ok(), at, i.failure_threshold, i.success_threshold)
            {
                decided.push((
                    self.id,
                    Transition {
                        seq: 0,
                        service_id: r.service_id,
                        service: i.service.clone(),
                        from: change.from,
                        to: change.to,
                        at,
                        latency: r.timings.total,
                        status_code: r.status_code,
                        error: r.error.clone(),
                    },
                ));
            }
        }
    }
}

fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Column arrays for a prepared statement (whose types are fixed at prepare time).
struct Params {
    cols: Vec<Box<dyn ToSql + Sync>>,
}

impl Params {
    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.cols.iter().map(|v| v.as_ref()).collect()
    }
}

fn col<T: ToSql + Sync + 'static>(v: T) -> Box<dyn ToSql + Sync> {
    Box::new(v)
}

fn result_params(batch: &[Ingested]) -> Params {
    let r = |f: &dyn Fn(&Ingested) -> i64| batch.iter().map(f).collect::<Vec<i64>>();
    Params {
        cols: vec![
            col(r(&|i| i.result.service_id.get() as i64)),
            col(r(&|i| i.result.scheduled_at.0)),
            col(r(&|i| i.result.started_at.0)),
            col(r(&|i| micros(i.result.timings.total))),
            col(r(&|i| micros(i.result.timings.connect))),
            col(r(&|i| micros(i.result.timings.tls))),
            col(r(&|i| micros(i.result.timings.first_byte))),
            col(batch
                .iter()
                .map(|i| i.result.status_code.map(i32::from))
                .collect::<Vec<_>>()),
            col(r(&|i| i.result.bytes as i64)),
            col(batch
                .iter()
                .map(|i| i.result.error_kind.map(|k| k.as_str().to_string()))
                .collect::<Vec<_>>()),
            col(batch
                .iter()
                .map(|i| i.result.error.clone())
                .collect::<Vec<_>>()),
        ],
    }
}

/// The transitions' columns.
struct TransitionColumns;

impl TransitionColumns {
    fn of(ts: &[Transition]) -> Params {
        Params {
            cols: vec![
                col(ts.iter().map(|t| t.seq as i64).collect::<Vec<_>>()),
                col(ts
                    .iter()
                    .map(|t| t.service_id.get() as i64)
                    .collect::<Vec<_>>()),
                col(ts.iter().map(|t| t.service.clone()).collect::<Vec<_>>()),
                col(ts
                    .iter()
                    .map(|t| t.from.as_str().to_string())
                    .collect::<Vec<_>>()),
                col(ts
                    .iter()
                    .map(|t| t.to.as_str().to_string())
                    .collect::<Vec<_>>()),
                col(ts.iter().map(|t| t.at.0).collect::<Vec<_>>()),
                col(ts.iter().map(|t| micros(t.latency)).collect::<Vec<_>>()),
                col(ts
                    .iter()
                    .map(|t| t.status_code.map(i32::from))
                    .collect::<Vec<_>>()),
                col(ts.iter().map(|t| t.error.clone()).collect::<Vec<_>>()),
            ],
        }
    }
}

/// The state rows' columns.
struct StateColumns;

impl StateColumns {
    fn of(states: &[State], now: i64) -> Params {
        let runs: Vec<(u32, u32)> = states.iter().map(|s| s.health.runs()).collect();
        let i32of = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        Params {
            cols: vec![
                col(states.iter().map(|s| s.id).collect::<Vec<_>>()),
                col(states
                    .iter()
                    .map(|s| s.health.status.as_str().to_string())
                    .collect::<Vec<_>>()),
                col(states.iter().map(|s| s.health.since.0).collect::<Vec<_>>()),
                col(runs.iter().map(|r| i32of(r.0)).collect::<Vec<_>>()),
                col(runs.iter().map(|r| i32of(r.1)).collect::<Vec<_>>()),
                col(states.iter().map(|s| s.last).collect::<Vec<_>>()),
                col(states.iter().map(|s| s.last_seq).collect::<Vec<_>>()),
                col(now),
            ],
        }
    }
}
