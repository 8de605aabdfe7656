//! What probing produces: results, failure classes, statuses and transitions.

use std::time::Duration;

use super::{ServiceId, UnixMillis};

/// Health status decided by the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Not enough results yet.
    Unknown,
    /// Healthy.
    Up,
    /// Failing.
    Down,
}

impl Status {
    /// Lower-case name used in metrics, storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Up => "up",
            Status::Down => "down",
        }
    }

    /// Parses the lower-case name back (storage).
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "unknown" => Some(Status::Unknown),
            "up" => Some(Status::Up),
            "down" => Some(Status::Down),
            _ => None,
        }
    }

    /// All statuses, for exhaustive metric output.
    pub const ALL: [Status; 3] = [Status::Unknown, Status::Up, Status::Down];
}

/// Coarse class of a probe failure; every `ProbeError` maps to exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Name resolution failed.
    Dns,
    /// TCP connection refused.
    Refused,
    /// A phase or the whole probe ran out of time.
    Timeout,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The connection broke (reset, unexpected EOF, other I/O error).
    Connection,
    /// The peer did not speak valid HTTP/1.1 (or exceeded a limit).
    Protocol,
    /// Status code outside `expect.status`.
    Status,
    /// Body did not contain `expect.body_contains`.
    BodyMismatch,
    /// Response slower than `expect.max_latency`.
    Latency,
}

impl ErrorKind {
    /// Lower-case name used in metrics, storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Connection => "connection",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status => "status",
            ErrorKind::BodyMismatch => "body_mismatch",
            ErrorKind::Latency => "latency",
        }
    }

    /// Parses the lower-case name back (storage).
    pub fn parse(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// All kinds, for exhaustive metric output.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Dns,
        ErrorKind::Refused,
        ErrorKind::Timeout,
        ErrorKind::Tls,
        ErrorKind::Connection,
        ErrorKind::Protocol,
        ErrorKind::Status,
        ErrorKind::BodyMismatch,
        ErrorKind::Latency,
    ];
}

/// Phase timings of one probe; a phase that did not run is zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// TCP connect (zero on a reused connection).
    pub connect: Duration,
    /// TLS handshake (zero on http or reuse).
    pub tls: Duration,
    /// Request start to first response byte.
    pub first_byte: Duration,
    /// Whole probe.
    pub total: Duration,
}

/// The stored, reported result of one probe.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    /// Which service.
    pub service_id: ServiceId,
    /// Planned start: unique per service, the idempotency key in storage.
    pub scheduled_at: UnixMillis,
    /// Actual start.
    pub started_at: UnixMillis,
    /// Phase timings.
    pub timings: Timings,
    /// Status code, when a response head arrived.
    pub status_code: Option<u16>,
    /// Response bytes read (head and body).
    pub bytes: u64,
    /// Failure class, None on success.
    pub error_kind: Option<ErrorKind>,
    /// Failure message, None on success.
    pub error: Option<String>,
}

impl ProbeResult {
    /// True when the probe met every expectation.
    pub fn ok(&self) -> bool {
        self.error_kind.is_none()
    }
}

/// A status change, numbered by the global, persisted `seq`.
#[derive(Clone, Debug)]
pub struct Transition {
    /// Global, strictly increasing across the process and restarts.
    pub seq: u64,
    /// Which service.
    pub service_id: ServiceId,
    /// Its name at the time.
    pub service: String,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// When the deciding probe completed.
    pub at: UnixMillis,
    /// Latency of the deciding probe.
    pub latency: Duration,
    /// Status code of the deciding probe.
    pub status_code: Option<u16>,
    /// Error of the deciding probe.
    pub error: Option<String>,
}

/// A status change a judge decided, not yet numbered: the store gives it its `seq` when it
/// commits it, so seqs are gap-free, in commit order, and never shown before they are stored.
#[derive(Clone, Debug)]
pub struct Decided {
    /// Which service.
    pub service_id: ServiceId,
    /// Its name at the time.
    pub service: String,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// When the deciding probe completed.
    pub at: UnixMillis,
    /// Latency of the deciding probe.
    pub latency: Duration,
    /// Status code of the deciding probe.
    pub status_code: Option<u16>,
    /// Error of the deciding probe.
    pub error: Option<String>,
}

impl Decided {
    /// The transition this change becomes as number `seq`.
    pub fn numbered(&self, seq: u64) -> Transition {
        Transition {
            seq,
            service_id: self.service_id,
            service: self.service.clone(),
            from: self.from,
            to: self.to,
            at: self.at,
            latency: self.latency,
            status_code: self.status_code,
            error: self.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
