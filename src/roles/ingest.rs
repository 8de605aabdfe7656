//! The ingest role: results from the results stream stored and judged in PostgreSQL, then the
//! committed transitions published to the events stream.
//!
//! One thread, blocking all the way (a Redis connection of its own, the store's ingest side):
//! read a batch with `XREADGROUP`, commit it in one transaction (`store::IngestStore`), then
//! `XACK`. A batch that fails stays in hand and is retried; the process dying before the ack
//! leaves it pending, and another ingest takes it over (`XAUTOCLAIM`): the redelivered rows are
//! already stored, so they insert nothing and decide nothing. Transitions are then published
//! by the relay, which any ingest process runs: it reads the events stream's last seq and
//! appends every stored transition after it, in seq order, with the entry id `<seq>-0`. Redis
//! refuses an id not above the stream's top, so two relays (or one publishing twice) never
//! duplicate or reorder, and a transition whose committing process died before publishing is
//! published by the next relay pass of any ingest.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;

use super::standalone::ServerError;
use crate::config::{ClusterConfig, Config};
use crate::model::{ServiceId, Transition};
use crate::pipeline::event::Event;
use crate::remote::events::TAGS_FIELD;
use crate::remote::{reply, ClusterCounters, EVENTS, INGEST, RESULTS};
use crate::store::{self, IngestStore, Ingested, StoreReader};
use crate::wire::entry::{ResultEntry, FIELD};

/// How long one `XREADGROUP` blocks.
const BLOCK: Duration = Duration::from_millis(500);
/// A read that brought a small batch waits this long and tops it up once: a trickle of
/// results then costs one transaction per linger instead of one per worker pipeline. The
/// transaction's cost is mostly per batch: at 2,000 results/s this cut PostgreSQL's CPU by
/// 60% and the cluster's by a third, for ~6 ms more median latency (perf.md, "Cluster").
const LINGER: Duration = Duration::from_millis(10);
/// Without its own commits, the relay still looks this often (another ingest may have died
/// between its commit and its publish).
const RELAY_EVERY: Duration = Duration::from_millis(500);
/// Transitions published per relay step at most.
const RELAY_BATCH: usize = 1000;
/// On an empty events stream (fresh, or Redis lost it) the relay starts this far behind the
/// stored maximum: gateways skip what they delivered, and older transitions are in PostgreSQL.
const RELAY_WINDOW: u64 = 10_000;
/// Retry delay cap for a failing store or Redis.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The ingest side's database connections, opened at start with the rest of the store (so a
/// database that is away is waited for in one place, `waiting`).
pub(super) struct IngestConns {
    store: Box<dyn IngestStore>,
    reader: Box<dyn StoreReader>,
}

/// Opens the ingest side's connections.
pub(super) fn open(cfg: &Config) -> Result<IngestConns, ServerError> {
    Ok(IngestConns {
        store: store::open_ingest(&cfg.storage)?,
        reader: store::open_reader(&cfg.storage)?,
    })
}

/// Starts the ingest thread, counting into the node's `counters` (rendered on `/metrics`).
pub(super) fn spawn(
    conns: IngestConns,
    cluster: &ClusterConfig,
    node: &str,
    counters: Arc<ClusterCounters>,
) -> Result<(), ServerError> {
    let mut ingest = Ingest {
        client: client(cluster)?,
        node: node.to_string(),
        store: conns.store,
        reader: conns.reader,
        batch: cluster.batch,
        maxlen: cluster.stream_maxlen,
        claim_idle: cluster.claim_idle,
        counters,
        tags: HashMap::new(),
    };
    std::thread::Builder::new()
        .name("ringwatch-ingest".into())
        .spawn(move || ingest.run())
        .map(|_| ())
        .map_err(|source| ServerError::Os {
            what: "spawning the ingest thread",
            source,
        })
}

fn client(cluster: &ClusterConfig) -> Result<redis::Client, ServerError> {
    let fail = |e: redis::RedisError| ServerError::Os {
        what: "connecting to redis",
        source: std::io::Error::other(e.to_string()),
    };
    let mut info =
        redis::IntoConnectionInfo::into_connection_info(cluster.redis.as_str()).map_err(fail)?;
    if let Some(p) = &cluster.password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info).map_err(fail)
}

struct Ingest {
    client: redis::Client,
    node: String,
    store: Box<dyn IngestStore>,
    reader: Box<dyn StoreReader>,
    batch: usize,
    maxlen: u64,
    claim_idle: Duration,
    counters: Arc<ClusterCounters>,
    /// Tags by service, for the events' subscription filters.
    tags: HashMap<ServiceId, Arc<[String]>>,
}

impl Ingest {
    fn run(&mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session() {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "ingest: redis unavailable; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One connection's life: reads, commits and acknowledges until a Redis error.
    fn session(&mut self) -> Result<(), redis::RedisError> {
        let mut con = self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(BLOCK + Duration::from_secs(2)))?;
        ensure_group(&mut con)?;
        let mut last_relay = Instant::now() - RELAY_EVERY;
        let mut last_claim = Instant::now();
        loop {
            let mut entries = self.read(&mut con, self.batch, Some(BLOCK))?;
            if !entries.is_empty() && entries.len() < self.batch / 4 {
                std::thread::sleep(LINGER);
                entries.extend(self.read(&mut con, self.batch - entries.len(), None)?);
            }
            if last_claim.elapsed() >= self.claim_idle / 2 {
                last_claim = Instant::now();
                entries.extend(self.claim(&mut con)?);
            }
            let committed = if entries.is_empty() {
                false
            } else {
                self.commit(&mut con, entries)?
            };
            if committed || last_relay.elapsed() >= RELAY_EVERY {
                last_relay = Instant::now();
                self.relay(&mut con)?;
            }
        }
    }

    /// Up to `count` new results, waiting up to `block` for the first (none: answer at once).
    fn read(
        &self,
        con: &mut redis::Connection,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<reply::Entry>, redis::RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(INGEST)
            .arg(&self.node)
            .arg("COUNT")
            .arg(count);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        let v: Value = cmd.arg("STREAMS").arg(RESULTS).arg(">").query(con)?;
        reply::read("XREADGROUP", &v).map_err(reply_error)
    }

    /// Results another ingest left pending past `claim_idle` (it died before its ack).
    fn claim(&self, con: &mut redis::Connection) -> Result<Vec<reply::Entry>, redis::RedisError> {
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(RESULTS)
            .arg(INGEST)
            .arg(&self.node)
            .arg(self.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.batch)
            .query(con)?;
        let (_, entries) = reply::autoclaim(&v).map_err(reply_error)?;
        Ok(entries)
    }

    /// Commits a batch (retrying while the store fails), then acknowledges it. Returns whether
    /// it committed transitions.
    fn commit(
        &mut self,
        con: &mut redis::Connection,
        entries: Vec<reply::Entry>,
    ) -> Result<bool, redis::RedisError> {
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let batch: Vec<Ingested> = entries.iter().filter_map(|e| self.decode(e)).collect();
        let mut backoff = Duration::from_millis(100);
        let outcome = loop {
            match self.store.ingest(&batch) {
                Ok(o) => break o,
                Err(e) => {
                    tracing::warn!(error = %e, results = batch.len(), "ingest commit failed; keeping the batch and retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        let c = &self.counters;
        c.ingested
            .fetch_add(outcome.new_rows as u64, Ordering::Relaxed);
        c.duplicates
            .fetch_add((batch.len() - outcome.new_rows) as u64, Ordering::Relaxed);
        c.transitions_committed
            .fetch_add(outcome.transitions.len() as u64, Ordering::Relaxed);
        let _: i64 = redis::cmd("XACK")
            .arg(RESULTS)
            .arg(INGEST)
            .arg(&ids)
            .query(con)?;
        Ok(!outcome.transitions.is_empty())
    }

    fn decode(&self, e: &reply::Entry) -> Option<Ingested> {
        let decoded = serde_json::from_slice::<ResultEntry>(e.field(FIELD))
            .map_err(|err| err.to_string())
            .and_then(|r| {
                let result = r.result().map_err(|err| err.to_string())?;
                let (failure_threshold, success_threshold) =
                    r.thresholds().map_err(|err| err.to_string())?;
                Ok(Ingested {
                    result,
                    service: r.service,
                    failure_threshold,
                    success_threshold,
                })
            });
        match decoded {
            Ok(i) => Some(i),
            Err(err) => {
                tracing::warn!(entry = %e.id, error = %err, "malformed result dropped");
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Publishes the stored transitions after the events stream's last seq, in seq order.
    fn relay(&mut self, con: &mut redis::Connection) -> Result<(), redis::RedisError> {
        let top: Value = redis::cmd("XREVRANGE")
            .arg(EVENTS)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(con)?;
        let top = reply::entries("XREVRANGE", &top)
            .map_err(reply_error)?
            .first()
            .and_then(reply::Entry::seq)
            .unwrap_or(0);
        let after = if top == 0 {
            self.reader
                .max_seq()
                .map(|m| m.saturating_sub(RELAY_WINDOW))
                .unwrap_or(0)
        } else {
            top
        };
        let pending = match self.reader.transitions_since(after, RELAY_BATCH) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "relay cannot read transitions");
                return Ok(());
            }
        };
        for t in pending {
            self.publish(con, &t)?;
        }
        Ok(())
    }

    fn publish(
        &mut self,
        con: &mut redis::Connection,
        t: &Transition,
    ) -> Result<(), redis::RedisError> {
        let tags = self.tags_of(t.service_id);
        let json = Event::transition(t).json.clone();
        let tags_json = serde_json::to_vec(&*tags).unwrap_or_else(|_| b"[]".to_vec());
        let r: redis::RedisResult<Value> = redis::cmd("XADD")
            .arg(EVENTS)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.maxlen)
            .arg(format!("{}-0", t.seq))
            .arg(FIELD)
            .arg(&json[..])
            .arg(TAGS_FIELD)
            .arg(tags_json)
            .query(con);
        match r {
            Ok(_) => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // Another relay (or an earlier pass of this one) got there first.
            Err(e) if e.to_string().contains("equal or smaller") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn tags_of(&mut self, id: ServiceId) -> Arc<[String]> {
        if let Some(t) = self.tags.get(&id) {
            return t.clone();
        }
        let tags: Arc<[String]> = self
            .reader
            .service(id)
            .ok()
            .flatten()
            .and_then(|row| serde_json::from_str::<serde_json::Value>(&row.spec).ok())
            .and_then(|v| {
                v.get("tags")?.as_array().map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect::<Vec<_>>()
                })
            })
            .unwrap_or_default()
            .into();
        self.tags.insert(id, tags.clone());
        tags
    }
}

fn ensure_group(con: &mut redis::Connection) -> Result<(), redis::RedisError> {
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(RESULTS)
        .arg(INGEST)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

fn reply_error(e: crate::remote::RemoteError) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        e.to_string(),
    ))
}
