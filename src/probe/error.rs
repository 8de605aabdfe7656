//! `ProbeError`: every way a probe can fail, each mapped to one coarse `ErrorKind`.

use std::io;
use std::net::SocketAddr;

use crate::model::ErrorKind;

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
    /// A redirect outside the expected statuses, with `follow_redirects` off: says where it
    /// pointed and that it was not followed, so the fix is obvious.
    #[error(
        "status {got} not in expected {expected} (redirect to {location} not followed; set follow_redirects)"
    )]
    RedirectNotFollowed {
        /// Received status code.
        got: u16,
        /// Expected ranges, as configured.
        expected: String,
        /// Where it pointed (resolved against the request URL when valid).
        location: String,
    },
    /// More redirects than `follow_redirects` allows (a redirect loop ends here too).
    #[error("too many redirects (max {max}); the next one pointed to {location}")]
    TooManyRedirects {
        /// The configured bound.
        max: u8,
        /// Where the redirect past the bound pointed.
        location: String,
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
            ProbeError::Status { .. } | ProbeError::RedirectNotFollowed { .. } => ErrorKind::Status,
            // A redirect chain that does not end is the peer's HTTP going wrong.
            ProbeError::TooManyRedirects { .. } => ErrorKind::Protocol,
            ProbeError::BodyMismatch { .. } => ErrorKind::BodyMismatch,
            ProbeError::Latency { .. } => ErrorKind::Latency,
        }
    }
}

/// A failed connect: refused is its own kind (nothing listens), anything else a connection error.
pub(super) fn connect_error(addr: SocketAddr, e: io::Error) -> ProbeError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        ProbeError::Refused {
            addr: addr.to_string(),
        }
    } else {
        ProbeError::Connection(format!("connect to {addr}: {e}"))
    }
}

/// An I/O failure while `context` (sending, reading the head or the body).
pub(super) fn io_error(context: &str, e: &io::Error) -> ProbeError {
    ProbeError::Connection(format!("{context}: {e}"))
}

/// The handshake failure as a `ProbeError::Tls` message.
pub(super) fn tls_error(e: monoio_rustls::TlsError) -> String {
    match e {
        monoio_rustls::TlsError::Rustls(e) => format!("handshake failed: {e}"),
        monoio_rustls::TlsError::Io(e) => format!("handshake failed: {e}"),
    }
}
