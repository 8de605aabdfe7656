//! Connections to Redis: opened on demand, retried with capped backoff, state counted.
//!
//! Blocking reads (`XREADGROUP ... BLOCK`) hold their connection for the whole wait, so each
//! task that blocks gets its own connection rather than sharing a multiplexed one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};

use super::status::ClusterCounters;
use super::RemoteError;
use crate::config::ClusterConfig;

/// First retry delay after a failed connect.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Retry delay cap: a node notices Redis back within this.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis endpoint and this node's identity on it.
#[derive(Clone)]
pub struct Link {
    client: Client,
    /// This node's name (consumer name, lease value).
    pub node: Arc<str>,
    /// Shared counters (connection state, reconnects).
    pub counters: Arc<ClusterCounters>,
}

impl Link {
    /// A link for `cfg`; fails only on a URL the client cannot use.
    pub fn new(
        cfg: &ClusterConfig,
        node: &str,
        counters: Arc<ClusterCounters>,
    ) -> Result<Link, RemoteError> {
        let mut info = cfg.redis.as_str().into_connection_info()?;
        if let Some(p) = &cfg.password {
            let settings = info.redis_settings().clone().set_password(p);
            info = info.set_redis_settings(settings);
        }
        Ok(Link {
            client: Client::open(info)?,
            node: node.into(),
            counters,
        })
    }

    /// One connection attempt; `reply_wait` bounds each command (longer than any BLOCK).
    pub async fn try_connect(
        &self,
        reply_wait: Duration,
    ) -> Result<MultiplexedConnection, RemoteError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(reply_wait));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }

    /// Connects, retrying with capped backoff until it succeeds; logs the first failure of a
    /// run and the recovery, and keeps `redis_up` current for `/readyz` and `/metrics`.
    pub async fn connect(&self, task: &'static str, reply_wait: Duration) -> MultiplexedConnection {
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u32;
        loop {
            match self.try_connect(reply_wait).await {
                Ok(c) => {
                    if failures > 0 {
                        tracing::info!(task, failures, "redis reachable again");
                    }
                    self.counters.redis_up.store(true, Ordering::Release);
                    return c;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(task, error = %e, "cannot reach redis; retrying with backoff");
                    }
                    failures += 1;
                    self.down();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// A command failed on an open connection: count it and mark Redis down until the next
    /// successful connect.
    pub fn failed(&self, task: &'static str, e: &RemoteError) {
        tracing::warn!(task, error = %e, "redis command failed; reconnecting");
        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        self.down();
    }

    fn down(&self) {
        self.counters.redis_up.store(false, Ordering::Release);
    }
}

/// Waits `d`, for callers that back off after a failed command.
pub async fn pause(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The pause after a failed command before reconnecting.
pub const RETRY_PAUSE: Duration = BACKOFF_MIN;
