//! The `server` section: listen address, shards, driver, and its sub-sections `limits`,
//! `probe`, `resolver`, `ws` and `tls`, one function each.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawLimits, RawProbe, RawResolver, RawServer, RawServerTls, RawWs};
use super::validate::{dur_range, duration, err, int, positive, read_file, resolve, Result, MIB};
use super::WsConfig;
use super::{DriverChoice, HttpLimits, ProbeLimits, ResolverConfig, ServerConfig, ServerTls};

/// Default address: loopback only, so a fresh install is not exposed.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Upper bound on shards: far above any core count, low enough to catch typos.
const MAX_SHARDS: u64 = 1024;

/// The `server` section (absent = every default).
pub(super) fn server(s: Option<&RawServer>, base: &Path) -> Result<ServerConfig> {
    let default = RawServer::default();
    let s = s.unwrap_or(&default);
    let shutdown_grace = duration(
        "server.shutdown_grace",
        &s.shutdown_grace,
        Duration::from_secs(5),
    )?;
    dur_range(
        "server.shutdown_grace",
        shutdown_grace,
        Duration::ZERO,
        Some(Duration::from_secs(3600)),
    )?;
    Ok(ServerConfig {
        listen: listen(s.listen.as_deref())?,
        shards: int("server.shards", s.shards, 0, 0, MAX_SHARDS)?,
        pin: s.pin.unwrap_or(true),
        driver: driver(s.driver.as_deref())?,
        limits: limits(s.limits.as_ref())?,
        probe: probe(s.probe.as_ref())?,
        resolver: resolver(s.resolver.as_ref())?,
        shutdown_grace,
        ws: ws(s.ws.as_ref())?,
        tls: s.tls.as_ref().map(|t| tls(t, base)).transpose()?,
        per_service_metrics: s.per_service_metrics.unwrap_or(true),
    })
}

/// `server.listen`: an IP literal and port (no names: binding must not depend on DNS).
fn listen(v: Option<&str>) -> Result<SocketAddr> {
    let text = v.unwrap_or(DEFAULT_LISTEN);
    text.trim().parse().or_else(|_| {
        err(
            "server.listen",
            format!(
                "invalid address \"{text}\" (expected IP:port such as 127.0.0.1:8080, \
                 0.0.0.0:8080 or [::1]:8080; host names are not accepted)"
            ),
        )
    })
}

/// `server.driver`.
fn driver(v: Option<&str>) -> Result<DriverChoice> {
    match v.map(str::trim) {
        None | Some("auto") => Ok(DriverChoice::Auto),
        Some("io_uring") | Some("iouring") => Ok(DriverChoice::IoUring),
        Some("epoll") | Some("legacy") => Ok(DriverChoice::Epoll),
        Some(other) => err(
            "server.driver",
            format!("unknown driver \"{other}\" (expected auto, io_uring or epoll)"),
        ),
    }
}

/// `server.limits`: the HTTP server's bounds.
fn limits(l: Option<&RawLimits>) -> Result<HttpLimits> {
    let d = HttpLimits::default();
    let default = RawLimits::default();
    let l = l.unwrap_or(&default);
    Ok(HttpLimits {
        max_header_bytes: int(
            "server.limits.max_header_bytes",
            l.max_header_bytes,
            d.max_header_bytes as u64,
            1024,
            MIB,
        )?,
        max_body_bytes: int(
            "server.limits.max_body_bytes",
            l.max_body_bytes,
            d.max_body_bytes as u64,
            0,
            64 * MIB,
        )?,
        header_timeout: positive(
            "server.limits.header_timeout",
            &l.header_timeout,
            d.header_timeout,
        )?,
        idle_timeout: positive(
            "server.limits.idle_timeout",
            &l.idle_timeout,
            d.idle_timeout,
        )?,
        max_connections: int(
            "server.limits.max_connections",
            l.max_connections,
            d.max_connections as u64,
            1,
            10_000_000,
        )?,
    })
}

/// `server.probe`: what a prober keeps and reads.
fn probe(p: Option<&RawProbe>) -> Result<ProbeLimits> {
    let d = ProbeLimits::default();
    let default = RawProbe::default();
    let p = p.unwrap_or(&default);
    Ok(ProbeLimits {
        max_header_bytes: int(
            "server.probe.max_header_bytes",
            p.max_header_bytes,
            d.max_header_bytes as u64,
            1024,
            MIB,
        )?,
        max_idle_per_target: int(
            "server.probe.max_idle_per_target",
            p.max_idle_per_target,
            d.max_idle_per_target as u64,
            0,
            1024,
        )?,
        max_idle_total: int(
            "server.probe.max_idle_total",
            p.max_idle_total,
            d.max_idle_total as u64,
            0,
            1_000_000,
        )?,
        idle_timeout: positive("server.probe.idle_timeout", &p.idle_timeout, d.idle_timeout)?,
        max_inflight: int(
            "server.probe.max_inflight",
            p.max_inflight,
            d.max_inflight as u64,
            1,
            1_000_000,
        )?,
    })
}

/// `server.resolver`: the DNS threads.
fn resolver(r: Option<&RawResolver>) -> Result<ResolverConfig> {
    let d = ResolverConfig::default();
    let default = RawResolver::default();
    let r = r.unwrap_or(&default);
    Ok(ResolverConfig {
        threads: int(
            "server.resolver.threads",
            r.threads,
            d.threads as u64,
            1,
            64,
        )?,
        queue: int(
            "server.resolver.queue",
            r.queue,
            d.queue as u64,
            1,
            1_000_000,
        )?,
        ttl: positive("server.resolver.ttl", &r.ttl, d.ttl)?,
    })
}

/// `server.ws`: WebSocket limits and timers.
fn ws(w: Option<&RawWs>) -> Result<WsConfig> {
    let d = WsConfig::default();
    let default = RawWs::default();
    let w = w.unwrap_or(&default);
    let bytes = |key: &str, v: Option<u64>, default: usize, lo: u64, hi: u64| {
        int(&format!("server.ws.{key}"), v, default as u64, lo, hi)
    };
    let time = |key: &str, v: &Option<String>, default: Duration| {
        positive(&format!("server.ws.{key}"), v, default)
    };
    Ok(WsConfig {
        max_frame_bytes: bytes(
            "max_frame_bytes",
            w.max_frame_bytes,
            d.max_frame_bytes,
            125,
            64 * MIB,
        )?,
        max_message_bytes: bytes(
            "max_message_bytes",
            w.max_message_bytes,
            d.max_message_bytes,
            125,
            64 * MIB,
        )?,
        max_queue_bytes: bytes(
            "max_queue_bytes",
            w.max_queue_bytes,
            d.max_queue_bytes,
            1024,
            1024 * MIB,
        )?,
        // Zero is allowed: close a slow client as soon as it is over its queue bound.
        slow_grace: duration("server.ws.slow_grace", &w.slow_grace, d.slow_grace)?,
        ping_interval: time("ping_interval", &w.ping_interval, d.ping_interval)?,
        pong_timeout: time("pong_timeout", &w.pong_timeout, d.pong_timeout)?,
        close_timeout: time("close_timeout", &w.close_timeout, d.close_timeout)?,
        resume_buffer: bytes(
            "resume_buffer",
            w.resume_buffer,
            d.resume_buffer,
            16,
            1_000_000,
        )?,
        max_replay: bytes("max_replay", w.max_replay, d.max_replay, 1, 10_000_000)?,
        send_buffer_bytes: bytes(
            "send_buffer_bytes",
            w.send_buffer_bytes,
            d.send_buffer_bytes,
            0,
            64 * MIB,
        )?,
    })
}

/// `server.tls`: loads the PEM chain and key into a rustls server config (ring provider).
fn tls(t: &RawServerTls, base: &Path) -> Result<ServerTls> {
    let Some(cert) = t.cert.as_deref() else {
        return err("server.tls.cert", "required: PEM certificate chain file");
    };
    let Some(key) = t.key.as_deref() else {
        return err("server.tls.key", "required: PEM private key file");
    };
    let (cert, key) = (resolve(base, cert.trim()), resolve(base, key.trim()));
    let cert_pem = read_file("server.tls.cert", "certificate file", &cert)?;
    let key_pem = read_file("server.tls.key", "private key file", &key)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<std::result::Result<_, _>>()
        .or_else(|e| err("server.tls.cert", format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return err(
            "server.tls.cert",
            format!("no certificate in {}", cert.display()),
        );
    }
    let key_der = match rustls_pemfile::private_key(&mut &key_pem[..]) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return err(
                "server.tls.key",
                format!("no private key in {}", key.display()),
            )
        }
        Err(e) => return err("server.tls.key", format!("invalid PEM: {e}")),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .or_else(|e| err("server.tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .or_else(|e| {
            err(
                "server.tls.key",
                format!("does not match the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let handshake_timeout = positive(
        "server.tls.handshake_timeout",
        &t.handshake_timeout,
        Duration::from_secs(10),
    )?;
    Ok(ServerTls {
        config: Arc::new(config),
        handshake_timeout,
    })
}
