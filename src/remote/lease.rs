//! The scheduler lease: exactly one node dispatches jobs at a time.
//!
//! `SET lease <node> NX PX <ttl>` takes it; the holder renews it every third of the TTL with a
//! script that extends it only while it still holds it; every takeover increments the fencing
//! epoch (`INCR`). A holder that cannot renew for a whole TTL (Redis away, the process
//! stalled) stops dispatching on its own: by then another node may hold the lease. Writing
//! jobs is itself fenced (see `dispatch`): the jobs are added by a script that first checks
//! the lease is still this node's, so a stalled former holder cannot add jobs after losing it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::link::{pause, Link, RETRY_PAUSE};
use super::{RemoteError, EPOCH, LEASE};

/// Extends the lease only for its holder: KEYS[1] lease, ARGV[1] node, ARGV[2] ttl ms.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Runs the lease loop for ever: acquires, renews, notices loss.
pub async fn run(link: Link, ttl: Duration) {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let step = ttl / 3;
    let mut con: Option<MultiplexedConnection> = None;
    let mut last_renew = tokio::time::Instant::now();
    loop {
        let mut c = match con.take() {
            Some(c) => c,
            None => link.connect("lease", Duration::from_secs(2)).await,
        };
        let held = link.counters.lease_held.load(Ordering::Acquire);
        let result = if held {
            renew(&mut c, &link, ttl_ms).await
        } else {
            acquire(&mut c, &link, ttl_ms).await
        };
        match result {
            Ok(true) => {
                last_renew = tokio::time::Instant::now();
                con = Some(c);
            }
            Ok(false) => {
                if held {
                    tracing::warn!(node = %link.node, "scheduler lease lost to another node");
                    link.counters.lease_held.store(false, Ordering::Release);
                }
                con = Some(c);
            }
            Err(e) => {
                link.failed("lease", &e);
                pause(RETRY_PAUSE).await;
            }
        }
        // Self-fencing: unable to renew for a whole TTL means the lease may be someone else's.
        if link.counters.lease_held.load(Ordering::Acquire) && last_renew.elapsed() >= ttl {
            tracing::warn!(node = %link.node, "scheduler lease not renewed within its ttl; standing down");
            link.counters.lease_held.store(false, Ordering::Release);
        }
        tokio::time::sleep(step).await;
    }
}

async fn acquire(
    c: &mut MultiplexedConnection,
    link: &Link,
    ttl_ms: u64,
) -> Result<bool, RemoteError> {
    let ok: Option<String> = redis::cmd("SET")
        .arg(LEASE)
        .arg(&*link.node)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms)
        .query_async(c)
        .await?;
    if ok.is_none() {
        return Ok(false);
    }
    let epoch: u64 = redis::cmd("INCR").arg(EPOCH).query_async(c).await?;
    link.counters.epoch.store(epoch, Ordering::Release);
    link.counters.takeovers.fetch_add(1, Ordering::Relaxed);
    link.counters.lease_held.store(true, Ordering::Release);
    tracing::info!(node = %link.node, epoch, "scheduler lease acquired");
    Ok(true)
}

async fn renew(
    c: &mut MultiplexedConnection,
    link: &Link,
    ttl_ms: u64,
) -> Result<bool, RemoteError> {
    let n: i64 = redis::Script::new(RENEW)
        .key(LEASE)
        .arg(&*link.node)
        .arg(ttl_ms)
        .invoke_async(c)
        .await?;
    Ok(n == 1)
}
