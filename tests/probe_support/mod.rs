//! Shared helpers for integration tests: real std-thread servers on 127.0.0.1:0, specs, certs.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringwatch::model::{
    Expect, Method, PhaseTimeouts, Scheme, ServiceId, ServiceSpec, Source, StatusRanges, Target,
};
use ringwatch::probe::{ProbeLimits, Prober};
use ringwatch::rt::dns::{ResolverConfig, ResolverHandle};

/// Runs `fut` on a fresh runtime built like a shard's (FusionDriver, timers on).
pub fn run<F: std::future::Future>(fut: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(fut)
}

/// A prober with default limits and a real resolver.
pub fn prober() -> Prober {
    prober_with(ProbeLimits::default())
}

/// A prober with custom limits.
pub fn prober_with(limits: ProbeLimits) -> Prober {
    Prober::new(ResolverHandle::spawn(ResolverConfig::default()), limits)
}

/// A GET spec for `scheme://host:port/path` with short timeouts.
pub fn spec(scheme: Scheme, host: &str, port: u16, path: &str) -> ServiceSpec {
    let name = format!("{}-{host}-{port}{path}", scheme.as_str());
    ServiceSpec {
        id: ServiceId::from_name(&name),
        name,
        target: Target {
            scheme,
            host: host.into(),
            port,
            path: path.into(),
        },
        url: format!("{}://{host}:{port}{path}", scheme.as_str()),
        method: Method::Get,
        headers: Vec::new(),
        body: None,
        interval: Duration::from_secs(30),
        timeout: Duration::from_millis(1500),
        phase_timeouts: PhaseTimeouts {
            connect: Duration::from_millis(1000),
            tls: Duration::from_millis(1000),
            head: Duration::from_millis(1000),
        },
        jitter: 0.0,
        tags: Vec::new(),
        expect: Expect {
            status: StatusRanges::default(),
            body_contains: None,
            max_latency: None,
        },
        failure_threshold: NonZeroU32::MIN,
        success_threshold: NonZeroU32::MIN,
        paused: false,
        tls: None,
        max_body_bytes: 64 * 1024,
        follow_redirects: 0,
        source: Source::Config,
    }
}

/// Plain http spec on 127.0.0.1.
pub fn http(port: u16, path: &str) -> ServiceSpec {
    spec(Scheme::Http, "127.0.0.1", port, path)
}

/// A listening test server; counts accepted connections.
pub struct Server {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

impl Server {
    /// Accepts forever; each connection runs `handler` on its own thread.
    pub fn start<F>(handler: F) -> Server
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                std::thread::spawn(move || handler(stream));
            }
        });
        Server { port, accepted }
    }

    /// A keep-alive server answering every request with `response`.
    pub fn respond(response: &'static [u8]) -> Server {
        Server::start(move |mut s| {
            while read_request(&mut s).is_some() {
                if s.write_all(response).is_err() {
                    return;
                }
            }
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Reads one request head (and a Content-Length body); None on EOF or error.
pub fn read_request(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut req = Vec::new();
    let mut byte = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => req.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    req.extend_from_slice(&body);
    Some(req)
}

/// A port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A CA and a server identity, as the test TLS server needs them.
pub struct Pki {
    /// PEM of the CA certificate (write it to a file for `tls::client_config`).
    pub ca_pem: String,
    /// Server chain and key for rustls.
    pub server: Arc<rustls::ServerConfig>,
}

fn server_config(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: &rcgen::KeyPair,
) -> Arc<rustls::ServerConfig> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    )
}

/// A CA plus an end-entity leaf for `names`, signed by it.
pub fn ca_signed(names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ringwatch test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: server_config(vec![leaf.der().clone()], &leaf_key),
    }
}

/// A self-signed end-entity certificate for `names` (no CA anyone trusts).
pub fn self_signed(names: &[&str]) -> Arc<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    server_config(vec![cert.der().clone()], &key)
}

/// A keep-alive TLS server answering every request with `response`.
pub fn tls_server(cfg: Arc<rustls::ServerConfig>, response: &'static [u8]) -> Server {
    Server::start(move |tcp| {
        let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while read_request(&mut tls).is_some() {
            if tls.write_all(response).and_then(|_| tls.flush()).is_err() {
                return;
            }
        }
    })
}
