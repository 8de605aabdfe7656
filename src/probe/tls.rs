//! rustls client configurations (ring provider): webpki roots, extra CA file, or no verification.

use std::path::Path;
use std::sync::Arc;

/// Failure to build a TLS client configuration (bad CA file).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("CA file {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Builds (or reuses) a client config trusting webpki roots plus `ca_file`, or nothing at all
/// when `insecure_skip_verify` is set. Call off the shards: it may read a file.
pub fn client_config(
    _ca_file: Option<&Path>,
    _insecure_skip_verify: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    todo!("tls config")
}
