//! The prober: one hand-rolled HTTP/1.1 (+TLS) request per probe, with keep-alive reuse.
//!
//! A `Prober` lives on one shard and is shared by that shard's probe tasks (`Rc`). It never
//! blocks: names are resolved by the `dns` resolver thread, and every phase has a deadline that
//! the whole-probe timeout overrides.

pub mod http1;
pub mod pool;
pub mod tls;

use std::time::Duration;

use crate::dns::ResolverHandle;
use crate::model::{ErrorKind, ServiceSpec, Timings};

/// Why a probe failed; each variant maps to one `ErrorKind`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// Name resolution failed.
    #[error("dns lookup of {host} failed: {reason}")]
    Dns {
        /// The host name.
        host: String,
        /// Resolver's message.
        reason: String,
    },
    /// Connection refused.
    #[error("connection to {addr} refused")]
    Refused {
        /// The address dialled.
        addr: String,
    },
    /// A phase (connect, tls, head, body) or the whole probe ran out of time.
    #[error("timed out after {elapsed_ms} ms waiting for {phase}")]
    Timeout {
        /// The phase that was running.
        phase: &'static str,
        /// Time since the probe started.
        elapsed_ms: u64,
    },
    /// Handshake or certificate failure.
    #[error("tls: {0}")]
    Tls(String),
    /// Reset, unexpected EOF or another I/O error.
    #[error("connection error: {0}")]
    Connection(String),
    /// Invalid HTTP or a limit exceeded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Status outside the expected ranges.
    #[error("status {got} not in expected {expected}")]
    Status {
        /// Received status code.
        got: u16,
        /// Expected ranges, as configured.
        expected: String,
    },
    /// Body lacks the expected substring.
    #[error("body does not contain {needle:?}")]
    BodyMismatch {
        /// The expected substring.
        needle: String,
    },
    /// Slower than `expect.max_latency`.
    #[error("latency {got_ms} ms over max {max_ms} ms")]
    Latency {
        /// Measured total latency.
        got_ms: u64,
        /// Configured maximum.
        max_ms: u64,
    },
}

impl ProbeError {
    /// The coarse class, for metrics and storage.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProbeError::Dns { .. } => ErrorKind::Dns,
            ProbeError::Refused { .. } => ErrorKind::Refused,
            ProbeError::Timeout { .. } => ErrorKind::Timeout,
            ProbeError::Tls(_) => ErrorKind::Tls,
            ProbeError::Connection(_) => ErrorKind::Connection,
            ProbeError::Protocol(_) => ErrorKind::Protocol,
            ProbeError::Status { .. } => ErrorKind::Status,
            ProbeError::BodyMismatch { .. } => ErrorKind::BodyMismatch,
            ProbeError::Latency { .. } => ErrorKind::Latency,
        }
    }
}

/// What one probe observed.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Phase timings.
    pub timings: Timings,
    /// Status code, when a head arrived.
    pub status_code: Option<u16>,
    /// Bytes read (head + body).
    pub bytes: u64,
    /// True when the request went over a pooled keep-alive connection.
    pub reused: bool,
    /// The failure, None on success.
    pub error: Option<ProbeError>,
}

/// Bounds on what a prober keeps and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeLimits {
    /// Largest response head accepted.
    pub max_header_bytes: usize,
    /// Idle keep-alive connections kept per target.
    pub max_idle_per_target: usize,
    /// Idle keep-alive connections kept per shard.
    pub max_idle_total: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            max_header_bytes: 16 * 1024,
            max_idle_per_target: 4,
            max_idle_total: 4096,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters a prober keeps; read by the shard's stats.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProberCounters {
    /// New TCP connections opened.
    pub connections_opened: u64,
    /// Requests sent over a reused connection.
    pub connections_reused: u64,
    /// Idle connections dropped because a pool bound was hit.
    pub idle_dropped: u64,
}

/// A shard's prober (not `Send`: it lives on one shard).
pub struct Prober {
    #[allow(dead_code)]
    resolver: ResolverHandle,
    #[allow(dead_code)]
    limits: ProbeLimits,
}

impl Prober {
    /// Creates a prober that resolves names through `resolver`.
    pub fn new(resolver: ResolverHandle, limits: ProbeLimits) -> Self {
        Prober { resolver, limits }
    }

    /// Runs one probe of `spec`, applying every expectation. Never panics on peer input.
    pub async fn probe(&self, _spec: &ServiceSpec) -> ProbeReport {
        todo!("prober")
    }

    /// Snapshot of the counters.
    pub fn counters(&self) -> ProberCounters {
        ProberCounters::default()
    }
}
