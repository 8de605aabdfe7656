//! The worker's side of the streams: jobs in (consumer group `workers`), results out.
//!
//! Jobs are read in batches with `XREADGROUP` and handed to the shard that owns the service
//! (through `Sinks`); a job whose deadline has passed is acknowledged and counted as expired,
//! never probed late. Results come back from the shards through an outbox and are written in
//! one pipeline per batch (`XADD` to the results stream, then `XACK` of their jobs), so a job
//! is acknowledged only once its result is in Redis. Jobs a dead worker left pending are
//! taken over with `XAUTOCLAIM` once idle for `claim_idle`, and treated like fresh ones.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::link::{pause, Link, RETRY_PAUSE};
use super::reply::{self, Entry};
use super::{RemoteError, RemoteJob, Sinks, JOBS, RESULTS, WORKERS};
use crate::model::UnixMillis;
use crate::pipeline::seam::Forwarded;
use crate::rt::outbox::Inbox;
use crate::wire::entry::{ResultEntry, FIELD};

/// How long one `XREADGROUP` blocks waiting for jobs.
const BLOCK: Duration = Duration::from_secs(1);

/// Creates the consumer group `group` on `stream` (and the stream) unless it exists.
pub async fn ensure_group(
    c: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<(), RemoteError> {
    let r: Result<Value, redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(c)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads jobs for this worker for ever.
pub async fn read_jobs(link: Link, sinks: Arc<dyn Sinks>, batch: usize) {
    let mut con: Option<MultiplexedConnection> = None;
    loop {
        let mut c = match con.take() {
            Some(c) => c,
            None => {
                let mut c = link.connect("jobs", BLOCK + Duration::from_secs(2)).await;
                if let Err(e) = ensure_group(&mut c, JOBS, WORKERS).await {
                    link.failed("jobs", &e);
                    pause(RETRY_PAUSE).await;
                    continue;
                }
                c
            }
        };
        let read: Result<Value, redis::RedisError> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(WORKERS)
            .arg(&*link.node)
            .arg("COUNT")
            .arg(batch)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(JOBS)
            .arg(">")
            .query_async(&mut c)
            .await;
        match read
            .map_err(RemoteError::from)
            .and_then(|v| reply::read("XREADGROUP", &v))
        {
            Ok(entries) => {
                link.counters
                    .jobs_read
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                let dead = hand_out(&link, &*sinks, entries);
                if let Err(e) = ack(&mut c, &dead).await {
                    link.failed("jobs", &e);
                    pause(RETRY_PAUSE).await;
                    continue;
                }
                con = Some(c);
            }
            Err(e) => {
                link.failed("jobs", &e);
                pause(RETRY_PAUSE).await;
            }
        }
    }
}

/// Hands fresh jobs to the shards; returns the ids to acknowledge without probing (expired or
/// malformed). A job a shard refused stays pending and is reclaimed later.
fn hand_out(link: &Link, sinks: &dyn Sinks, entries: Vec<Entry>) -> Vec<String> {
    let now = UnixMillis::now();
    let mut dead = Vec::new();
    for e in entries {
        match RemoteJob::decode(&e.id, e.payload()) {
            Err(err) => {
                tracing::warn!(entry = %e.id, error = %err, "malformed job dropped");
                link.counters.malformed.fetch_add(1, Ordering::Relaxed);
                dead.push(e.id);
            }
            Ok(job) if job.deadline.0 < now.0 => {
                link.counters.expired_worker.fetch_add(1, Ordering::Relaxed);
                dead.push(e.id);
            }
            Ok(job) => {
                if !sinks.job(job) {
                    link.counters.jobs_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    dead
}

async fn ack(c: &mut MultiplexedConnection, ids: &[String]) -> Result<(), RemoteError> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: i64 = redis::cmd("XACK")
        .arg(JOBS)
        .arg(WORKERS)
        .arg(ids)
        .query_async(c)
        .await?;
    Ok(())
}

/// Takes over jobs other workers left pending for longer than `idle`, for ever.
pub async fn reclaim(link: Link, sinks: Arc<dyn Sinks>, batch: usize, idle: Duration) {
    let mut con: Option<MultiplexedConnection> = None;
    loop {
        tokio::time::sleep(idle / 2).await;
        let mut c = match con.take() {
            Some(c) => c,
            None => link.connect("reclaim", Duration::from_secs(5)).await,
        };
        match reclaim_pass(&link, &*sinks, &mut c, batch, idle).await {
            Ok(()) => con = Some(c),
            Err(e) => link.failed("reclaim", &e),
        }
    }
}

async fn reclaim_pass(
    link: &Link,
    sinks: &dyn Sinks,
    c: &mut MultiplexedConnection,
    batch: usize,
    idle: Duration,
) -> Result<(), RemoteError> {
    ensure_group(c, JOBS, WORKERS).await?;
    let mut cursor = "0-0".to_string();
    loop {
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(JOBS)
            .arg(WORKERS)
            .arg(&*link.node)
            .arg(idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(batch)
            .query_async(c)
            .await?;
        let (next, entries) = reply::autoclaim(&v)?;
        link.counters
            .reclaimed
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let dead = hand_out(link, sinks, entries);
        ack(c, &dead).await?;
        if next == "0-0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// Writes the shards' results and acknowledges their jobs, for ever.
pub async fn write_results(link: Link, inbox: Inbox<Forwarded>, batch: usize, maxlen: u64) {
    let mut con: Option<MultiplexedConnection> = None;
    let mut hand: Vec<Forwarded> = Vec::with_capacity(batch);
    loop {
        if hand.is_empty() {
            hand.extend(inbox.rx.try_iter().take(batch));
            if hand.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
        }
        let mut c = match con.take() {
            Some(c) => c,
            None => link.connect("results", Duration::from_secs(5)).await,
        };
        match write_batch(&mut c, &hand, maxlen).await {
            Ok(()) => {
                link.counters
                    .results_written
                    .fetch_add(hand.len() as u64, Ordering::Relaxed);
                hand.clear();
                con = Some(c);
            }
            // The batch stays in hand; its jobs stay pending, so nothing is lost if this
            // process dies meanwhile (they are reclaimed, or expire, elsewhere).
            Err(e) => {
                link.failed("results", &e);
                pause(RETRY_PAUSE).await;
            }
        }
    }
}

async fn write_batch(
    c: &mut MultiplexedConnection,
    hand: &[Forwarded],
    maxlen: u64,
) -> Result<(), RemoteError> {
    let mut pipe = redis::pipe();
    let mut ids = Vec::with_capacity(hand.len());
    for f in hand {
        let entry = ResultEntry::new(&f.result, &f.spec, f.ended_at, f.epoch);
        let doc = serde_json::to_string(&entry).map_err(|e| RemoteError::Reply {
            cmd: "XADD",
            what: e.to_string(),
        })?;
        pipe.cmd("XADD")
            .arg(RESULTS)
            .arg("MAXLEN")
            .arg("~")
            .arg(maxlen)
            .arg("*")
            .arg(FIELD)
            .arg(doc)
            .ignore();
        ids.push(&*f.entry);
    }
    pipe.cmd("XACK").arg(JOBS).arg(WORKERS).arg(ids).ignore();
    let _: () = pipe.query_async(c).await?;
    Ok(())
}
