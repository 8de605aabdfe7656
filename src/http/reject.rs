//! Why the HTTP server refused a connection or a request, as counted in
//! `ringwatch_http_rejected_total{reason}`.

/// Why the HTTP server refused or closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpReject {
    /// Per-shard connection limit reached at accept.
    ConnectionLimit,
    /// Request head larger than the limit.
    HeaderTooLarge,
    /// Request head not complete within the header timeout.
    HeaderTimeout,
    /// Request body larger than the limit.
    BodyTooLarge,
    /// Unparseable request.
    Malformed,
    /// TLS handshake failed or timed out.
    TlsHandshake,
}

impl HttpReject {
    /// Every reason, in the order the per-shard counters are indexed.
    pub const ALL: [HttpReject; 6] = [
        HttpReject::ConnectionLimit,
        HttpReject::HeaderTooLarge,
        HttpReject::HeaderTimeout,
        HttpReject::BodyTooLarge,
        HttpReject::Malformed,
        HttpReject::TlsHandshake,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpReject::ConnectionLimit => "connection_limit",
            HttpReject::HeaderTooLarge => "header_too_large",
            HttpReject::HeaderTimeout => "header_timeout",
            HttpReject::BodyTooLarge => "body_too_large",
            HttpReject::Malformed => "malformed",
            HttpReject::TlsHandshake => "tls_handshake",
        }
    }
}
