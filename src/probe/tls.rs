//! rustls client configurations (ring provider): webpki roots, extra CA file, or no verification.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::model::{Scheme, ServiceSpec, TlsSettings};

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

/// The verifying, webpki-roots-only config: identical for every service, so built once.
static DEFAULT_CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
/// The insecure config carries no per-service state either.
static INSECURE_CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// We only speak HTTP/1.1; saying so via ALPN stops servers that default to h2 from guessing.
fn http11_only(mut cfg: ClientConfig) -> ClientConfig {
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

fn build(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    Ok(http11_only(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// Builds (or reuses) a client config trusting webpki roots plus `ca_file`, or nothing at all
/// when `insecure_skip_verify` is set. Call off the shards: it may read a file.
pub fn client_config(
    ca_file: Option<&Path>,
    insecure_skip_verify: bool,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    if insecure_skip_verify {
        if let Some(cfg) = INSECURE_CONFIG.get() {
            return Ok(cfg.clone());
        }
        let cfg = insecure_config().map_err(|e| TlsConfigError::Invalid {
            path: String::new(),
            reason: e.to_string(),
        })?;
        return Ok(INSECURE_CONFIG.get_or_init(|| Arc::new(cfg)).clone());
    }
    let Some(path) = ca_file else {
        if let Some(cfg) = DEFAULT_CONFIG.get() {
            return Ok(cfg.clone());
        }
        let cfg = build(webpki_roots()).map_err(|e| TlsConfigError::Invalid {
            path: String::new(),
            reason: e.to_string(),
        })?;
        return Ok(DEFAULT_CONFIG.get_or_init(|| Arc::new(cfg)).clone());
    };
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut roots = webpki_roots();
    let mut added = 0usize;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| TlsConfigError::Invalid {
            path: shown.clone(),
            reason: format!("bad PEM: {e}"),
        })?;
        roots.add(cert).map_err(|e| TlsConfigError::Invalid {
            path: shown.clone(),
            reason: format!("unusable CA certificate: {e}"),
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(TlsConfigError::Invalid {
            path: shown,
            reason: "no CERTIFICATE block found".into(),
        });
    }
    build(roots)
        .map(Arc::new)
        .map_err(|e| TlsConfigError::Invalid {
            path: shown,
            reason: e.to_string(),
        })
}

/// One shard's TLS client configs by the definitions' settings: thousands of https services
/// usually share one, and each build copies the whole root store. Built when a plan is made
/// (a definition added or changed), never per probe.
#[derive(Default)]
pub(crate) struct Configs {
    built: RefCell<HashMap<TlsSettings, Arc<ClientConfig>>>,
}

impl Configs {
    /// The client config for an https `spec` (None for http). A CA file that no longer loads
    /// (it was checked when the definition was validated) falls back to the webpki roots, so
    /// the probe fails its certificate check with a TLS error rather than not running.
    pub(crate) fn for_spec(&self, spec: &ServiceSpec) -> Option<Arc<ClientConfig>> {
        if spec.target.scheme != Scheme::Https {
            return None;
        }
        self.for_settings(spec.tls.clone().unwrap_or_default(), &spec.name)
    }

    /// The client config for `settings` of service `name` (also for a redirect to https: the
    /// service's own settings, the defaults for an http service).
    pub(crate) fn for_settings(
        &self,
        settings: TlsSettings,
        name: &str,
    ) -> Option<Arc<ClientConfig>> {
        if let Some(cfg) = self.built.borrow().get(&settings) {
            return Some(cfg.clone());
        }
        let cfg = client_config(settings.ca_file.as_deref(), settings.insecure_skip_verify)
            .or_else(|e| {
                tracing::error!(service = %name, error = %e, "TLS settings no longer load; trusting the webpki roots only");
                client_config(None, false)
            })
            .ok()?;
        self.built.borrow_mut().insert(settings, cfg.clone());
        Some(cfg)
    }
}

fn insecure_config() -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnyCert {
        provider: provider.clone(),
    });
    Ok(http11_only(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// The TLS server name for `host`: IP literals are matched against IP SANs, names get SNI.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned()).map_err(|e| format!("invalid server name {host:?}: {e}"))
}

/// Accepts any certificate chain, but still insists the handshake signatures are well-formed
/// and made by the presented key, so a garbled handshake is still caught.
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_cached() {
        let a = client_config(None, false).unwrap();
        let b = client_config(None, false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn missing_and_empty_ca_files_are_errors() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem")), false).unwrap_err();
        assert!(matches!(err, TlsConfigError::Read { .. }), "{err}");
        let f = tempfile::NamedTempFile::new().unwrap();
        let err = client_config(Some(f.path()), false).unwrap_err();
        assert!(matches!(err, TlsConfigError::Invalid { .. }), "{err}");
    }

    #[test]
    fn self_signed_leaf_is_accepted_as_extra_root() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, cert.cert.pem().as_bytes()).unwrap();
        assert!(client_config(Some(f.path()), false).is_ok());
        std::fs::write(f.path(), "not a pem").unwrap();
        let err = client_config(Some(f.path()), false).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name!").is_err());
    }
}
