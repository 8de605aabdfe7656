//! Name resolution off the shards: resolver threads with a TTL cache; shards await the answer.
//!
//! `ToSocketAddrs` blocks, so it runs on plain std threads fed by a bounded queue; the shard
//! awaits a `futures_channel::oneshot` (woken across threads thanks to monoio's `sync` feature).
//! The cache lives behind a mutex that only resolver threads take, so shards never contend on it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_channel::oneshot;

/// Why a name could not be resolved.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    /// The system resolver failed or returned nothing.
    #[error("{0}")]
    Lookup(String),
    /// The resolver queue was full; the lookup was not attempted.
    #[error("resolver queue full")]
    Overloaded,
}

pub use crate::config::ResolverConfig;

/// One queued lookup and where to send its answer.
struct Job {
    host: String,
    port: u16,
    reply: oneshot::Sender<Result<SocketAddr, DnsError>>,
}

type Cache = Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>;

/// Cloneable, `Send` handle to the resolver threads.
#[derive(Clone)]
pub struct ResolverHandle {
    tx: Sender<Job>,
    ttl: Duration,
}

impl ResolverHandle {
    /// Starts the resolver threads.
    pub fn spawn(cfg: ResolverConfig) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(cfg.queue);
        let cache: Arc<Cache> = Arc::new(Mutex::new(HashMap::new()));
        for i in 0..cfg.threads {
            let rx = rx.clone();
            let cache = cache.clone();
            let ttl = cfg.ttl;
            let spawned = std::thread::Builder::new()
                .name(format!("resolver-{i}"))
                .spawn(move || resolver_loop(rx, cache, ttl));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start resolver thread");
            }
        }
        // With zero threads `rx` drops here, so name lookups fail fast instead of queueing
        // forever; IP literals still work.
        ResolverHandle { tx, ttl: cfg.ttl }
    }

    /// How long answers stay valid; shard-side caches use the same bound.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Resolves `host:port` without blocking the calling shard. IP literals skip the threads.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DnsError> {
        if let Some(addr) = literal(host, port) {
            return Ok(addr);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            host: host.to_owned(),
            port,
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(DnsError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                return Err(DnsError::Lookup("resolver is not running".into()))
            }
        }
        answer
            .await
            .unwrap_or_else(|_| Err(DnsError::Lookup("resolver thread stopped".into())))
    }
}

/// Parses an IP literal (IPv6 with or without brackets).
pub(crate) fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

fn resolver_loop(rx: Receiver<Job>, cache: Arc<Cache>, ttl: Duration) {
    while let Ok(job) = rx.recv() {
        // The shard gave up (probe timed out): do not spend a lookup on it.
        if job.reply.is_canceled() {
            continue;
        }
        let key = (job.host, job.port);
        let cached = cache
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(addr, _)| addr);
        let answer = match cached {
            Some(addr) => Ok(addr),
            None => {
                let res = lookup(&key.0, key.1);
                if let (Ok(addr), Ok(mut c)) = (&res, cache.lock()) {
                    c.insert(key, (*addr, Instant::now()));
                }
                res
            }
        };
        let _ = job.reply.send(answer);
    }
}

/// Prefers IPv4: "localhost" often lists ::1 first while services listen on 127.0.0.1 only,
/// and we dial a single address (no happy eyeballs).
fn lookup(host: &str, port: u16) -> Result<SocketAddr, DnsError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| DnsError::Lookup(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| DnsError::Lookup(format!("no addresses for {host}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_parse() {
        assert_eq!(
            literal("127.0.0.1", 80),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(literal("[::1]", 443), Some("[::1]:443".parse().unwrap()));
        assert_eq!(literal("::1", 443), Some("[::1]:443".parse().unwrap()));
        assert_eq!(literal("localhost", 80), None);
    }

    #[test]
    fn full_queue_is_overloaded_without_blocking() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let h = ResolverHandle {
            tx,
            ttl: Duration::from_secs(1),
        };
        let (reply, _answer) = oneshot::channel();
        let job = Job {
            host: "queued.example".into(),
            port: 80,
            reply,
        };
        assert!(h.tx.try_send(job).is_ok());
        let res = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .unwrap()
            .block_on(h.resolve("example.com", 80));
        assert_eq!(res, Err(DnsError::Overloaded));
    }

    #[test]
    fn resolver_threads_answer_and_do_not_cache_failures() {
        let h = ResolverHandle::spawn(ResolverConfig::default());
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .unwrap();
        let a = rt.block_on(h.resolve("localhost", 8080)).unwrap();
        assert!(a.ip().is_loopback());
        assert_eq!(a.port(), 8080);
        assert!(rt.block_on(h.resolve("no-such-host.invalid", 80)).is_err());
    }
}
