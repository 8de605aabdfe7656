//! Keep-alive connection pool, per shard, keyed by target (address, scheme, host).
//!
//! Single-threaded by design (one per shard, used through a `RefCell` that is never held across
//! an `.await`). Generic over the connection type so the bookkeeping is testable without sockets.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::model::Scheme;

/// Which connections are interchangeable: same address, same scheme, the same host (TLS SNI
/// and certificate checks depend on it) and the same TLS client configuration (a connection
/// accepted under `insecure_skip_verify` must never serve a verifying service).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Address dialled.
    pub addr: SocketAddr,
    /// http or https.
    pub scheme: Scheme,
    /// Host name used for SNI and `Host`.
    pub host: String,
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
    pub fn take(&mut self, key: &PoolKey) -> Option<C> {
        let now = Instant::now();
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
        if queue.is_empty() {
            self.idle.remove(key);
        }
        found
    }

    /// Parks `conn` as idle for `key`; evicts the oldest when a bound is hit.
    pub fn put(&mut self, key: PoolKey, conn: C) {
        if self.max_per_target == 0 || self.max_total == 0 {
            self.dropped += 1;
            return;
        }
        // Targets that stopped being probed would otherwise hold their sockets forever.
        if self.total >= self.max_total || self.last_sweep.elapsed() >= self.idle_timeout {
            self.expire_all();
        }
        if self.total >= self.max_total {
            self.evict_oldest();
        }
        let queue = self.idle.entry(key).or_default();
        if queue.len() >= self.max_per_target {
            queue.pop_front();
            self.total -= 1;
            self.dropped += 1;
        }
        queue.push_back((conn, Instant::now()));
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
            host: "h".into(),
            tls_config: 0,
        }
    }

    #[test]
    fn lifo_per_target_and_bounds() {
        let mut p = Pool::new(2, 3, Duration::from_secs(60));
        p.put(key(1), 'a');
        p.put(key(1), 'b');
        p.put(key(1), 'c'); // evicts 'a' (per-target bound)
        assert_eq!((p.len(), p.dropped()), (2, 1));
        p.put(key(2), 'd');
        p.put(key(3), 'e'); // shard bound: evicts the oldest overall ('b')
        assert_eq!((p.len(), p.dropped()), (3, 2));
        assert_eq!(p.take(&key(1)), Some('c'));
        assert_eq!(p.take(&key(1)), None);
        assert_eq!(p.take(&key(2)), Some('d'));
        assert_eq!(p.take(&key(3)), Some('e'));
        assert!(p.is_empty());
    }

    #[test]
    fn expired_connections_are_dropped() {
        let mut p = Pool::new(4, 4, Duration::from_millis(0));
        p.put(key(1), 1);
        p.put(key(1), 2);
        assert_eq!(p.take(&key(1)), None);
        assert_eq!((p.len(), p.dropped()), (0, 2));
    }

    #[test]
    fn zero_bounds_keep_nothing() {
        let mut p = Pool::new(0, 4, Duration::from_secs(1));
        p.put(key(1), 1);
        assert!(p.is_empty());
        assert_eq!(p.dropped(), 1);
    }
}
