//! What a cluster node reports: counters every task updates (atomics), and the streams' state
//! (lengths, pending entries, consumer lag, lease holder), refreshed by a status task once a
//! second and handed to a shard on request (no lock on either side).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use futures_channel::oneshot;
use redis::aio::MultiplexedConnection;
use redis::Value;

use super::link::Link;
use super::{RemoteError, EPOCH, EVENTS, INGEST, JOBS, LEASE, RESULTS, WORKERS};
use crate::metrics::Exposition;

/// How often the streams' state is read.
const REFRESH: Duration = Duration::from_secs(1);

/// Counters and flags every cluster task updates.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// The last connect or command succeeded.
    pub redis_up: AtomicBool,
    /// Commands that failed on an open connection (each followed by a reconnect).
    pub reconnects: AtomicU64,
    /// This node holds the scheduler lease.
    pub lease_held: AtomicBool,
    /// The fencing epoch of this node's lease (0 = never held).
    pub epoch: AtomicU64,
    /// Lease acquisitions by this node.
    pub takeovers: AtomicU64,
    /// Jobs written to the jobs stream.
    pub dispatched: AtomicU64,
    /// Jobs re-sent after a takeover (their slot may already have been sent).
    pub backfilled: AtomicU64,
    /// Jobs that expired before this node could send them (dispatch failed or a takeover came
    /// too late for their slot).
    pub expired_dispatch: AtomicU64,
    /// Jobs read by this worker.
    pub jobs_read: AtomicU64,
    /// Jobs taken over from a dead worker (`XAUTOCLAIM`).
    pub reclaimed: AtomicU64,
    /// Jobs acknowledged without probing because their deadline had passed.
    pub expired_worker: AtomicU64,
    /// Jobs that could not be decoded (acknowledged and dropped).
    pub malformed: AtomicU64,
    /// Jobs refused because a shard's ring was full (left pending; reclaimed later).
    pub jobs_refused: AtomicU64,
    /// Results written to the results stream.
    pub results_written: AtomicU64,
    /// Results ingested (new rows stored; duplicates excluded).
    pub ingested: AtomicU64,
    /// Result entries that were already stored (redeliveries).
    pub duplicates: AtomicU64,
    /// Transitions this node committed.
    pub transitions_committed: AtomicU64,
    /// Transitions this node put on the events stream.
    pub published: AtomicU64,
    /// Events read from the events stream.
    pub events_read: AtomicU64,
    /// Events skipped because their seq was already delivered here.
    pub events_skipped: AtomicU64,
}

/// The streams as last seen, and who holds the lease.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    /// `XLEN` of jobs, results, events.
    pub lengths: [u64; 3],
    /// Pending entries of the workers and ingest groups.
    pub pending: [u64; 2],
    /// Entries not yet delivered to the workers and ingest groups (Redis 7 `lag`).
    pub lag: [u64; 2],
    /// The lease holder's node name (empty = none).
    pub holder: String,
    /// The current fencing epoch in Redis.
    pub epoch: u64,
}

/// A shard's way to ask the status task for the latest snapshot.
#[derive(Clone)]
pub struct ClusterHandle {
    ask: Sender<oneshot::Sender<ClusterSnapshot>>,
    /// Shared counters.
    pub counters: Arc<ClusterCounters>,
    /// This node's roles, for `/metrics`.
    pub roles: String,
    /// This node's name.
    pub node: Arc<str>,
}

impl ClusterHandle {
    /// A handle and the receiving end for the status task.
    pub fn new(
        counters: Arc<ClusterCounters>,
        roles: String,
        node: Arc<str>,
    ) -> (ClusterHandle, Receiver<oneshot::Sender<ClusterSnapshot>>) {
        let (tx, rx) = crossbeam_channel::bounded(64);
        (
            ClusterHandle {
                ask: tx,
                counters,
                roles,
                node,
            },
            rx,
        )
    }

    /// The latest snapshot (waits at most `wait`; a default one when the task is busy).
    pub async fn snapshot(&self, wait: Duration) -> ClusterSnapshot {
        let (tx, rx) = oneshot::channel();
        if self.ask.try_send(tx).is_err() {
            return ClusterSnapshot::default();
        }
        monoio::time::timeout(wait, rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// True when Redis answered last time.
    pub fn redis_up(&self) -> bool {
        self.counters.redis_up.load(Ordering::Acquire)
    }

    /// The cluster's families.
    pub fn render(&self, w: &mut Exposition, s: &ClusterSnapshot) {
        self.render_state(w, s);
        self.render_counters(w);
    }

    /// Node, lease and streams.
    fn render_state(&self, w: &mut Exposition, s: &ClusterSnapshot) {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        w.header(
            "ringwatch_cluster_node_info",
            "gauge",
            "This node's name and roles.",
        );
        w.sample(
            "ringwatch_cluster_node_info",
            &[("node", &self.node), ("roles", &self.roles)],
            1.0,
        );
        w.single(
            "ringwatch_cluster_redis_up",
            "gauge",
            "Redis answered this node's last command (1) or not (0).",
            f64::from(u8::from(self.redis_up())),
        );
        w.single(
            "ringwatch_cluster_lease_held",
            "gauge",
            "This node holds the scheduler lease.",
            f64::from(u8::from(c.lease_held.load(Ordering::Relaxed))),
        );
        w.single(
            "ringwatch_cluster_epoch",
            "gauge",
            "The scheduler fencing epoch in Redis (increases on every takeover).",
            s.epoch as f64,
        );
        w.header(
            "ringwatch_cluster_lease_holder_info",
            "gauge",
            "The node holding the scheduler lease.",
        );
        w.sample(
            "ringwatch_cluster_lease_holder_info",
            &[("node", &s.holder)],
            1.0,
        );
        w.labelled(
            "ringwatch_cluster_stream_length",
            "gauge",
            "Entries in each stream.",
            "stream",
            [
                ("jobs", s.lengths[0] as f64),
                ("results", s.lengths[1] as f64),
                ("events", s.lengths[2] as f64),
            ],
        );
        w.labelled(
            "ringwatch_cluster_pending",
            "gauge",
            "Entries delivered to a consumer group and not yet acknowledged.",
            "group",
            [
                ("workers", s.pending[0] as f64),
                ("ingest", s.pending[1] as f64),
            ],
        );
        w.labelled(
            "ringwatch_cluster_consumer_lag",
            "gauge",
            "Entries not yet delivered to a consumer group.",
            "group",
            [("workers", s.lag[0] as f64), ("ingest", s.lag[1] as f64)],
        );
        w.labelled("ringwatch_cluster_jobs_expired_total", "counter", "Jobs never probed because their deadline passed, by where (dispatch: not sent in time, e.g. Redis down or a scheduler takeover; worker: read or reclaimed too late).", "stage", [("dispatch", load(&c.expired_dispatch)), ("worker", load(&c.expired_worker))]);
    }

    /// What this node's tasks counted.
    fn render_counters(&self, w: &mut Exposition) {
        for (name, help, field) in COUNTERS {
            w.single(
                name,
                "counter",
                help,
                field(&self.counters).load(Ordering::Relaxed) as f64,
            );
        }
    }
}

/// The counters of `ClusterCounters` as exported: name, help, field.
#[allow(clippy::type_complexity)]
const COUNTERS: [(&str, &str, fn(&ClusterCounters) -> &AtomicU64); 15] = [
    (
        "ringwatch_cluster_reconnects_total",
        "Redis commands that failed on an open connection.",
        |c| &c.reconnects,
    ),
    (
        "ringwatch_cluster_takeovers_total",
        "Scheduler lease acquisitions by this node.",
        |c| &c.takeovers,
    ),
    (
        "ringwatch_cluster_jobs_dispatched_total",
        "Jobs written to the jobs stream by this node.",
        |c| &c.dispatched,
    ),
    (
        "ringwatch_cluster_jobs_backfilled_total",
        "Jobs re-sent after a takeover (the result is stored once either way).",
        |c| &c.backfilled,
    ),
    (
        "ringwatch_cluster_jobs_read_total",
        "Jobs read by this worker.",
        |c| &c.jobs_read,
    ),
    (
        "ringwatch_cluster_jobs_reclaimed_total",
        "Jobs taken over from a worker that stopped acknowledging.",
        |c| &c.reclaimed,
    ),
    (
        "ringwatch_cluster_jobs_malformed_total",
        "Jobs that could not be decoded (acknowledged and dropped).",
        |c| &c.malformed,
    ),
    (
        "ringwatch_cluster_jobs_refused_total",
        "Jobs a shard's ring refused (left pending, reclaimed later).",
        |c| &c.jobs_refused,
    ),
    (
        "ringwatch_cluster_results_written_total",
        "Results written to the results stream by this worker.",
        |c| &c.results_written,
    ),
    (
        "ringwatch_cluster_results_ingested_total",
        "Results stored by this ingest process (new rows).",
        |c| &c.ingested,
    ),
    (
        "ringwatch_cluster_results_duplicate_total",
        "Result entries already stored (redeliveries, duplicate probes).",
        |c| &c.duplicates,
    ),
    (
        "ringwatch_cluster_transitions_committed_total",
        "Transitions committed by this ingest process.",
        |c| &c.transitions_committed,
    ),
    (
        "ringwatch_cluster_events_published_total",
        "Transitions this node put on the events stream.",
        |c| &c.published,
    ),
    (
        "ringwatch_cluster_events_read_total",
        "Events read from the events stream.",
        |c| &c.events_read,
    ),
    (
        "ringwatch_cluster_events_skipped_total",
        "Events skipped because their seq was already delivered here.",
        |c| &c.events_skipped,
    ),
];

/// Keeps the snapshot current and answers shards' requests for it.
pub async fn serve(link: Link, asks: Receiver<oneshot::Sender<ClusterSnapshot>>) {
    let mut snap = ClusterSnapshot::default();
    let mut con: Option<MultiplexedConnection> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        while let Ok(reply) = asks.try_recv() {
            let _ = reply.send(snap.clone());
        }
        if tokio::time::Instant::now() >= next {
            next += REFRESH;
            let c = match con.take() {
                Some(c) => c,
                None => match link.try_connect(Duration::from_secs(2)).await {
                    Ok(c) => c,
                    Err(_) => continue,
                },
            };
            let mut c = c;
            match refresh(&mut c).await {
                Ok(s) => {
                    snap = s;
                    con = Some(c);
                }
                Err(e) => tracing::debug!(error = %e, "cluster status refresh failed"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn refresh(c: &mut MultiplexedConnection) -> Result<ClusterSnapshot, RemoteError> {
    let mut s = ClusterSnapshot::default();
    for (i, stream) in [JOBS, RESULTS, EVENTS].into_iter().enumerate() {
        s.lengths[i] = redis::cmd("XLEN").arg(stream).query_async(c).await?;
    }
    for (i, (stream, group)) in [(JOBS, WORKERS), (RESULTS, INGEST)].into_iter().enumerate() {
        let v: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(c)
            .await
            .unwrap_or(Value::Nil);
        if let Some((pending, lag)) = group_info(&v, group) {
            s.pending[i] = pending;
            s.lag[i] = lag;
        }
    }
    let holder: Option<String> = redis::cmd("GET").arg(LEASE).query_async(c).await?;
    s.holder = holder.unwrap_or_default();
    let epoch: Option<u64> = redis::cmd("GET").arg(EPOCH).query_async(c).await?;
    s.epoch = epoch.unwrap_or(0);
    Ok(s)
}

/// `pending` and `lag` of `group` in an `XINFO GROUPS` reply (a list of field/value lists).
fn group_info(v: &Value, group: &str) -> Option<(u64, u64)> {
    let Value::Array(groups) = v else {
        return None;
    };
    for g in groups {
        let fields: Vec<(String, &Value)> = match g {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|p| match p {
                    [Value::BulkString(k), v] => Some((String::from_utf8_lossy(k).into_owned(), v)),
                    [Value::SimpleString(k), v] => Some((k.clone(), v)),
                    _ => None,
                })
                .collect(),
            Value::Map(kv) => kv
                .iter()
                .filter_map(|(k, v)| match k {
                    Value::BulkString(k) => Some((String::from_utf8_lossy(k).into_owned(), v)),
                    Value::SimpleString(k) => Some((k.clone(), v)),
                    _ => None,
                })
                .collect(),
            _ => continue,
        };
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let is_group = matches!(get("name"), Some(Value::BulkString(n)) if n == group.as_bytes());
        if is_group {
            let num = |v: Option<&Value>| match v {
                Some(Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
                _ => 0,
            };
            return Some((num(get("pending")), num(get("lag"))));
        }
    }
    None
}
