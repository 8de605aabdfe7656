//! Start-up while the database is away: retry with capped backoff, log each failure, and
//! meanwhile answer on the node's port so probes and scrapes see why it is not serving.
//!
//! Why not exit: under systemd or compose a node that exits on a PostgreSQL outage restarts in
//! a loop, and a whole cluster restarting together hits the database the moment it returns.
//! Why answer at all: a closed port reads as "process dead"; `/readyz` 503 naming the store
//! reads as what it is, and `/metrics` shows `ringwatch_store_up 0` with the attempts so far.
//! Only what a retry can fix is retried (`StoreError::is_transient`): a wrong password or a
//! missing database ends start-up at once with its message.
//!
//! The responder is a plain blocking thread: it lives only until the store opens, answers one
//! short request per connection, and is gone (port released) before the shards bind.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::ServerError;
use crate::auth::{Auth, Scope};
use crate::config::{AuthConfig, ServerConfig};
use crate::http::{encode_response, parse_request, Parsed, Response};
use crate::metrics::Exposition;

/// First delay after a failed attempt; it doubles per failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts: a database that is back is noticed within this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Time one client has to send its request (or finish a TLS handshake) to the responder.
const CLIENT_WAIT: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds or fails with an error a retry cannot fix. Between
/// transient failures it sleeps (250 ms doubling to 10 s) while a responder serves the port.
pub(super) fn retry_store<T>(
    server: &ServerConfig,
    auth: &AuthConfig,
    mut attempt: impl FnMut() -> Result<T, ServerError>,
) -> Result<T, ServerError> {
    let mut delay = FIRST_BACKOFF;
    let mut responder: Option<Responder> = None;
    loop {
        match attempt() {
            Ok(v) => {
                if let Some(r) = responder.take() {
                    tracing::info!(
                        attempts = r.status.attempts.load(Ordering::Relaxed) + 1,
                        "store reachable; starting"
                    );
                    r.stop();
                }
                return Ok(v);
            }
            Err(e) if e.is_transient() => {
                let r = responder.get_or_insert_with(|| Responder::start(server, auth));
                let n = r.status.attempts.fetch_add(1, Ordering::Relaxed) + 1;
                if let Ok(mut reason) = r.status.reason.lock() {
                    *reason = e.to_string();
                }
                tracing::warn!(error = %e, attempt = n, retry_in = ?delay, "store unreachable at start; retrying (/readyz answers 503 meanwhile)");
                super::service_manager::waiting(delay, &e.to_string());
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the responder reports, updated by the retry loop.
#[derive(Default)]
struct Status {
    /// Failed attempts so far.
    attempts: AtomicU64,
    /// The last failure, as `/readyz` gives it.
    reason: Mutex<String>,
    /// Set to end the accept loop.
    stop: AtomicBool,
}

/// The stand-in listener while the store is away.
struct Responder {
    status: Arc<Status>,
    /// The bound address and the accept thread; None when the port could not be bound (the
    /// wait then goes on without it: the log still says why).
    listening: Option<(SocketAddr, JoinHandle<()>)>,
}

impl Responder {
    fn start(server: &ServerConfig, auth: &AuthConfig) -> Responder {
        let status = Arc::new(Status::default());
        let listening = match TcpListener::bind(server.listen) {
            Ok(l) => {
                let addr = l.local_addr().unwrap_or(server.listen);
                let ctx = Ctx {
                    status: status.clone(),
                    auth: Auth::new(auth),
                    server: server.clone(),
                };
                std::thread::Builder::new()
                    .name("ringwatch-waiting".into())
                    .spawn(move || ctx.accept(l))
                    .ok()
                    .map(|t| (addr, t))
            }
            Err(e) => {
                tracing::warn!(addr = %server.listen, error = %e, "cannot answer on the port while waiting for the store");
                None
            }
        };
        Responder { status, listening }
    }

    /// Ends the accept loop and waits for it, so the port is free for the shards.
    fn stop(self) {
        self.status.stop.store(true, Ordering::Release);
        if let Some((addr, thread)) = self.listening {
            // The loop blocks in accept: one connection wakes it to see the flag.
            let _ = TcpStream::connect_timeout(&reachable(addr), CLIENT_WAIT);
            let _ = thread.join();
        }
    }
}

/// A connectable address for a listener bound to `addr` (a wildcard is reached on loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// What the accept thread needs.
struct Ctx {
    status: Arc<Status>,
    auth: Auth,
    server: ServerConfig,
}

impl Ctx {
    fn accept(&self, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.status.stop.load(Ordering::Acquire) {
                return;
            }
            // One at a time: this answers health checks for a node that is not up, and each
            // client is bounded by CLIENT_WAIT.
            if let Ok(s) = stream {
                let _ = s.set_read_timeout(Some(CLIENT_WAIT));
                let _ = s.set_write_timeout(Some(CLIENT_WAIT));
                self.serve(s);
            }
        }
    }

    fn serve(&self, tcp: TcpStream) {
        match &self.server.tls {
            None => self.exchange(tcp),
            Some(tls) => match rustls::ServerConnection::new(tls.config.clone()) {
                Ok(conn) => self.exchange(rustls::StreamOwned::new(conn, tcp)),
                Err(e) => tracing::debug!(error = %e, "TLS session could not start"),
            },
        }
    }

    /// Reads one request and writes one answer, then closes.
    fn exchange(&self, mut s: impl Read + Write) {
        let limits = self.server.limits;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        let resp = loop {
            match parse_request(&buf, &limits) {
                Parsed::Complete { req, .. } => break self.answer(&req),
                Parsed::Reject(_, resp) => break resp,
                Parsed::Partial => match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
            }
        };
        let mut out = Vec::with_capacity(512);
        encode_response(&resp, true, &mut out);
        let _ = s.write_all(&out);
        let _ = s.flush();
    }

    fn answer(&self, req: &crate::http::Request) -> Response {
        let reason = self
            .status
            .reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        match req.path.as_str() {
            "/healthz" => Response::text(200, "ok\n"),
            "/readyz" => Response::text(503, format!("waiting for the store: {reason}\n")),
            "/metrics" => match self.auth.check(req, Scope::Read) {
                Err(e) => e.response(),
                Ok(()) => {
                    let mut r = Response::text(200, self.metrics());
                    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                    r
                }
            },
            _ => Response::error(
                503,
                "store_unavailable",
                &format!("starting: waiting for the store: {reason}"),
            )
            .with_header("Retry-After", "5"),
        }
    }

    fn metrics(&self) -> String {
        let mut w = Exposition::default();
        w.single(
            "ringwatch_store_up",
            "gauge",
            "1 while the store accepts writes, 0 while it fails.",
            0.0,
        );
        w.single(
            "ringwatch_store_start_failures_total",
            "counter",
            "Failed attempts to open the store at start (the node serves nothing else until one succeeds).",
            self.status.attempts.load(Ordering::Relaxed) as f64,
        );
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn unreachable() -> ServerError {
        ServerError::Store(StoreError::Unreachable {
            what: "postgres://db".into(),
            reason: "connection refused".into(),
        })
    }

    fn server() -> ServerConfig {
        let mut s = crate::config::Config::parse("services: []\n", std::path::Path::new("."))
            .map(|c| c.server)
            .unwrap_or_else(|e| panic!("{e}"));
        s.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        s
    }

    #[test]
    fn a_transient_failure_is_retried_until_it_succeeds() {
        let mut calls = 0;
        let got = retry_store(&server(), &AuthConfig::default(), || {
            calls += 1;
            if calls < 3 {
                Err(unreachable())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got.ok(), Some(3));
    }

    #[test]
    fn a_permanent_failure_ends_at_once() {
        let mut calls = 0;
        let got: Result<(), _> = retry_store(&server(), &AuthConfig::default(), || {
            calls += 1;
            Err(ServerError::Store(StoreError::Open {
                what: "postgres://db".into(),
                reason: "password authentication failed".into(),
            }))
        });
        assert!(got.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9".parse().unwrap_or_else(|e| panic!("{e}"));
        let v6: SocketAddr = "[::]:9".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            reachable(v4),
            "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(
            reachable(v6),
            "[::1]:9".parse().unwrap_or_else(|e| panic!("{e}"))
        );
    }
}
