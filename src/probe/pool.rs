//! Keep-alive connection pool, per shard, keyed by target (address, scheme, host).
//!
//! Single-threaded by design (one per shard, used through a `RefCell` that is never held across
//! an `.await`). Generic over the connection type so the bookkeeping is testable without sockets.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::model::Scheme;

use super::plan::HostKey;

/// Which connections are interchangeable: same address, same scheme, the same host (TLS SNI
/// and certificate checks depend on it) and the same TLS client configuration (a connection
/// accepted under `insecure_skip_verify` must never serve a verifying service).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Address dialled.
    pub addr: SocketAddr,
    /// http or https.
    pub scheme: Scheme,
    /// Host name used for SNI and `Host` (interned: comparing two keys rarely reads it).
    pub host: HostKey,
    /// Identity (`Arc::as_ptr`) of the TLS config, 0 for plain http. A pooled TLS connection
    /// holds its config alive, so the address cannot be recycled while it is pooled.
    pub tls_config: usize,
}

/// Bounded pool of idle keep-alive connections.
pub struct Pool<C> {
    idle: HashMap<PoolKey, VecDeque<(C, Instant)>>,
    total: usize,
    max_per_target: usize,
    max_total: usize,
    idle_timeout: Duration,
    dropped: u64,
    last_sweep: Instant,
}

impl<C> Pool<C> {
    /// An empty pool with the given bounds.
    pub fn new(max_per_target: usize, max_total: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: HashMap::default(),
            total: 0,
            max_per_target,
            max_total,
            idle_timeout,
            dropped: 0,
            last_sweep: Instant::now(),
        }
    }

    /// Takes the most recently used idle connection for `key`, dropping expired ones.
    ///
    /// An emptied queue stays in the map (the periodic sweep removes it): a busy target's
    /// queue empties and refills on nearly every probe, and re-creating it each time cost an
    /// allocation and a key clone per probe.
    /// `now` is the caller's clock reading (a probe reads the clock once at its start).
    pub fn take(&mut self, key: &PoolKey, now: Instant) -> Option<C> {
        let queue = self.idle.get_mut(key)?;
        let mut found = None;
        while let Some((conn, since)) = queue.pop_back() {
            self.total -= 1;
            if now.duration_since(since) < self.idle_timeout {
                found = Some(conn);
                break;
            }
            self.dropped += 1;
        }
        // Anything left in front is older still; expire it as well.
        while queue
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_timeout)
        {
            queue.pop_front();
            self.total -= 1;
            self.dropped += 1;
        }
        found
    }

    /// Parks `conn` as idle for `key`; evicts the oldest when a bound is hit.
    pub fn put(&mut self, key: &PoolKey, conn: C, now: Instant) {
        if self.max_per_target == 0 || self.max_total == 0 {
            self.dropped += 1;
            return;
        }
        // Targets that stopped being probed would otherwise hold their sockets forever.
        if self.total >= self.max_total
            || now.saturating_duration_since(self.last_sweep) >= self.idle_timeout
        {
            self.expire_all();
        }
        if self.total >= self.max_total {
            self.evict_oldest();
        }
        // Cloning a key costs an address copy and a reference count (the host is interned).
        let queue = self.idle.entry(key.clone()).or_default();
        if queue.len() >= self.max_per_target {
            queue.pop_front();
            self.total -= 1;
            self.dropped += 1;
        }
        queue.push_back((conn, now));
        self.total += 1;
    }

    /// Idle connections currently held.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when nothing is idle.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Idle connections dropped so far (bounds or idle timeout).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Closes every idle connection older than the idle timeout.
    pub fn expire_all(&mut self) {
        let now = Instant::now();
        self.last_sweep = now;
        let timeout = self.idle_timeout;
        let mut expired = 0;
        self.idle.retain(|_, q| {
            let before = q.len();
            q.retain(|(_, since)| now.duration_since(*since) < timeout);
            expired += before - q.len();
            !q.is_empty()
        });
        self.total -= expired;
        self.dropped += expired as u64;
    }

    /// O(targets), but only runs when the shard-wide bound is hit.
    fn evict_oldest(&mut self) {
        let oldest = self
            .idle
            .iter()
            .filter_map(|(k, q)| q.front().map(|(_, since)| (k, *since)))
            .min_by_key(|(_, since)| *since)
            .map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            if let Some(q) = self.idle.get_mut(&key) {
                if q.pop_front().is_some() {
                    self.total -= 1;
                    self.dropped += 1;
                }
                if q.is_empty() {
                    self.idle.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> PoolKey {
        PoolKey {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            scheme: Scheme::Http,
            host: HostKey::new("h"),
            tls_config: 0,
        }
    }

    #[test]
    fn lifo_per_target_and_bounds() {
        let mut p = Pool::new(2, 3, Duration::from_secs(60));
        p.put(&key(1), 'a', Instant::now());
        p.put(&key(1), 'b', Instant::now());
        p.put(&key(1), 'c', Instant::now()); // evicts 'a' (per-target bound)
        assert_eq!((p.len(), p.dropped()), (2, 1));
        p.put(&key(2), 'd', Instant::now());
        p.put(&key(3), 'e', Instant::now()); // shard bound: evicts the oldest overall ('b')
        assert_eq!((p.len(), p.dropped()), (3, 2));
        assert_eq!(p.take(&key(1), Instant::now()), Some('c'));
        assert_eq!(p.take(&key(1), Instant::now()), None);
        assert_eq!(p.take(&key(2), Instant::now()), Some('d'));
        assert_eq!(p.take(&key(3), Instant::now()), Some('e'));
        assert!(p.is_empty());
    }

    #[test]
    fn expired_connections_are_dropped() {
        let mut p = Pool::new(4, 4, Duration::from_millis(0));
        p.put(&key(1), 1, Instant::now());
        p.put(&key(1), 2, Instant::now());
        assert_eq!(p.take(&key(1), Instant::now()), None);
        assert_eq!((p.len(), p.dropped()), (0, 2));
    }

    #[test]
    fn zero_bounds_keep_nothing() {
        let mut p = Pool::new(0, 4, Duration::from_secs(1));
        p.put(&key(1), 1, Instant::now());
        assert!(p.is_empty());
        assert_eq!(p.dropped(), 1);
    }
}
