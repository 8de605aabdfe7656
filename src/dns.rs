//! Name resolution off the shards: resolver threads with a TTL cache; shards await the answer.

use std::net::SocketAddr;
use std::time::Duration;

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

/// Resolver settings.
#[derive(Debug, Clone, Copy)]
pub struct ResolverConfig {
    /// Resolver threads (a slow lookup occupies one).
    pub threads: usize,
    /// Pending lookups accepted before `Overloaded`.
    pub queue: usize,
    /// How long a successful answer is cached.
    pub ttl: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            threads: 2,
            queue: 1024,
            ttl: Duration::from_secs(60),
        }
    }
}

/// Cloneable, `Send` handle to the resolver threads.
#[derive(Clone)]
pub struct ResolverHandle {}

impl ResolverHandle {
    /// Starts the resolver threads.
    pub fn spawn(_cfg: ResolverConfig) -> Self {
        ResolverHandle {}
    }

    /// Resolves `host:port` without blocking the calling shard. IP literals skip the threads.
    pub async fn resolve(&self, _host: &str, _port: u16) -> Result<SocketAddr, DnsError> {
        todo!("resolver")
    }
}
