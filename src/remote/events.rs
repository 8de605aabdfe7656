//! The events stream: committed transitions, entry id `<seq>-0`, published in seq order by
//! ingest processes (see `relay`), read whole by every node.
//!
//! A reader starts after the latest seq the store held when the process started (older ones
//! are in PostgreSQL, where `since` reads them) and delivers each seq at most once: an entry at
//! or below the last delivered seq (a relay publishing again after Redis lost its tail) is
//! skipped and counted. Each event goes to every shard's clients and tells the shard that owns
//! the service its new status (the API and snapshots read it there).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::link::{pause, Link, RETRY_PAUSE};
use super::reply;
use super::{RemoteError, Sinks, EVENTS};
use crate::pipeline::event::Event;
use crate::store::LatestSeq;

/// Field of the tags list in an event entry (the event itself is in `wire::entry::FIELD`).
pub const TAGS_FIELD: &str = "t";

/// How long one `XREAD` blocks.
const BLOCK: Duration = Duration::from_secs(1);

/// Reads the events stream for ever, after `latest` (advanced as events are delivered).
pub async fn read(link: Link, sinks: Arc<dyn Sinks>, latest: LatestSeq, batch: usize) {
    let mut con: Option<MultiplexedConnection> = None;
    loop {
        let mut c = match con.take() {
            Some(c) => c,
            None => link.connect("events", BLOCK + Duration::from_secs(2)).await,
        };
        let after = latest.get();
        let read: Result<Value, redis::RedisError> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(batch)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(EVENTS)
            .arg(format!("{after}-0"))
            .query_async(&mut c)
            .await;
        match read
            .map_err(RemoteError::from)
            .and_then(|v| raw_entries(&v))
        {
            Ok(entries) => {
                deliver(&link, &*sinks, &latest, entries);
                con = Some(c);
            }
            Err(e) => {
                link.failed("events", &e);
                pause(RETRY_PAUSE).await;
            }
        }
    }
}

/// Entries with their tags decoded.
fn raw_entries(v: &Value) -> Result<Vec<(reply::Entry, Vec<String>)>, RemoteError> {
    Ok(reply::read("XREAD", v)?
        .into_iter()
        .map(|e| {
            let tags: Vec<String> = serde_json::from_slice(e.field(TAGS_FIELD)).unwrap_or_default();
            (e, tags)
        })
        .collect())
}

fn deliver(
    link: &Link,
    sinks: &dyn Sinks,
    latest: &LatestSeq,
    entries: Vec<(reply::Entry, Vec<String>)>,
) {
    for (e, tags) in entries {
        link.counters.events_read.fetch_add(1, Ordering::Relaxed);
        let Some(seq) = e.seq() else {
            continue;
        };
        if seq <= latest.get() {
            link.counters.events_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match Event::received(e.payload(), Arc::from(tags)) {
            Ok(r) => {
                let service = r.event.service_id;
                sinks.event(r.event, service, r.to, r.at);
                latest.set(seq);
            }
            Err(err) => {
                tracing::warn!(entry = %e.id, error = %err, "malformed event skipped");
                latest.set(seq);
            }
        }
    }
}
