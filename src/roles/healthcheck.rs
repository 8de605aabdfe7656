//! `ringwatch healthcheck`: one `GET /readyz`, so a container image or a script needs no curl.
//!
//! The target is `--url` when given, otherwise the config's `server.listen` (an unspecified
//! address such as `0.0.0.0` or `[::]` is reached on loopback), otherwise the default
//! `127.0.0.1:8080`. With `server.tls` configured (or an `https://` URL) the request goes over
//! TLS *without verifying the certificate*: the check asks "is this process ready?", sends no
//! credential (`/readyz` needs none) and trusts nothing it reads beyond the status code, so an
//! impostor could at worst fake readiness, which anyone who can answer on that port can do anyway.
//!
//! This runs in its own short-lived process, never on a shard, so it uses blocking `std::net`
//! with a deadline on every step.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::parse_url;
use crate::model::{Scheme, Target};

/// Default time allowed for the whole check (connect, TLS, request, response head).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest response read; `/readyz` answers a few bytes.
const MAX_RESPONSE: usize = 16 * 1024;

/// Why the check failed: exit 1 for "not ready", exit 2 for a usage or config problem.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The config file could not be loaded, or `--url` is not a URL.
    #[error("{0}")]
    Usage(String),
    /// Nothing answered, or the connection failed or timed out.
    #[error("{url}: {what}: {source}")]
    Unreachable {
        /// The URL checked.
        url: String,
        /// Which step failed (connect, tls, request, response).
        what: &'static str,
        /// The OS or TLS error.
        source: std::io::Error,
    },
    /// The server answered something that is not an HTTP response.
    #[error("{url}: bad response: {reason}")]
    BadResponse {
        /// The URL checked.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The server answered, but not 200.
    #[error("{url}: not ready: HTTP {status} {body}")]
    NotReady {
        /// The URL checked.
        url: String,
        /// The status code.
        status: u16,
        /// The first line of the body (`starting`, `shutting down`).
        body: String,
    },
}

impl HealthError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            HealthError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Where to send the check: the URL as parsed, and the address to connect to.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    /// Scheme, host (for `Host` and SNI), port and path.
    pub target: Target,
    /// Where to connect (resolved once).
    pub addr: SocketAddr,
}

impl CheckTarget {
    /// The URL, for messages (the port always shown).
    pub fn url(&self) -> String {
        let t = &self.target;
        let host = if t.host.contains(':') {
            format!("[{}]", t.host)
        } else {
            t.host.clone()
        };
        format!("{}://{host}:{}{}", t.scheme.as_str(), t.port, t.path)
    }
}

/// The check target for a listen address: loopback when it is unspecified, https with TLS.
pub fn target_for_listen(listen: SocketAddr, tls: bool) -> CheckTarget {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, listen.port());
    CheckTarget {
        target: Target {
            scheme: if tls { Scheme::Https } else { Scheme::Http },
            host: ip.to_string(),
            port: listen.port(),
            path: "/readyz".into(),
        },
        addr,
    }
}

/// The check target for `--url`: a URL without a path (or with just `/`) checks `/readyz`.
pub fn target_for_url(url: &str) -> Result<CheckTarget, HealthError> {
    let mut target = parse_url(url).map_err(HealthError::Usage)?;
    if target.path == "/" {
        target.path = "/readyz".into();
    }
    let addr = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| HealthError::Usage(format!("{url}: cannot resolve {}: {e}", target.host)))?
        .next()
        .ok_or_else(|| HealthError::Usage(format!("{url}: {} has no address", target.host)))?;
    Ok(CheckTarget { target, addr })
}

/// Resolves what to check from the command line: `--url` first, then the config's `server`
/// section, then the default listen address.
pub fn resolve(config: Option<&Path>, url: Option<&str>) -> Result<CheckTarget, HealthError> {
    if let Some(url) = url {
        return target_for_url(url);
    }
    let Some(path) = config else {
        return Ok(target_for_listen(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            false,
        ));
    };
    let (listen, tls) = read_server(path)?;
    Ok(target_for_listen(listen, tls))
}

/// The top level of the config file, reduced to what the check needs; every other key is
/// skipped unread, not validated.
#[derive(serde::Deserialize)]
struct TopLevel {
    server: Option<ServerKeys>,
}

/// `server.listen` and whether `server.tls` is set.
#[derive(serde::Deserialize)]
struct ServerKeys {
    listen: Option<String>,
    tls: Option<serde::de::IgnoredAny>,
}

/// Reads `server.listen` (default 127.0.0.1:8080) and whether `server.tls` is set, without
/// loading the rest: a full `Config::load` of a 100,000-service file takes about a second and
/// 150-180 MB (docs/perf.md), too much to repeat every few seconds beside the monitor. The
/// running server validated the whole file already.
pub fn read_server(path: &Path) -> Result<(SocketAddr, bool), HealthError> {
    let usage = |what: String| HealthError::Usage(format!("{}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read: {e}")))?;
    let parse = |text: &str| {
        let opts = serde_saphyr::Options {
            budget: Some(crate::config::yaml_budget()),
            ..serde_saphyr::Options::default()
        };
        serde_saphyr::from_str_with_options::<Option<TopLevel>>(text, opts)
    };
    // The `server:` block alone parses in microseconds; the whole file (still skipping the
    // services) is the fallback for layouts the cut does not handle (flow style, aliases).
    let top = match server_block(&text).map(|block| parse(&block)) {
        Some(Ok(top)) => top,
        _ => parse(&text).map_err(|e| usage(format!("not a config file: {e}")))?,
    };
    let server = top.and_then(|t| t.server);
    let tls = server.as_ref().is_some_and(|s| s.tls.is_some());
    let listen = match server.and_then(|s| s.listen) {
        None => SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
        Some(text) => text.trim().parse().map_err(|_| {
            usage(format!(
                "server.listen: invalid address \"{text}\" (expected IP:port)"
            ))
        })?,
    };
    Ok((listen, tls))
}

/// `ringwatch healthcheck`: checks, prints one line, and returns the exit code (0 = ready).
pub fn cli(config: Option<&Path>, url: Option<&str>, timeout: Duration) -> ExitCode {
    let outcome = resolve(config, url).and_then(|t| check(&t, timeout).map(|()| t));
    match outcome {
        Ok(t) => {
            println!("{}: ready", t.url());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The lines of the top-level `server:` block (the key at column 0, then every indented,
/// blank or comment line), or None when the file has no such line.
fn server_block(text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("server:"));
    let first = lines.next()?;
    let mut block = String::from(first);
    for line in lines.take_while(|l| {
        l.is_empty() || l.starts_with(' ') || l.starts_with('\t') || l.starts_with('#')
    }) {
        block.push('\n');
        block.push_str(line);
    }
    Some(block)
}

/// GETs the target once within `timeout`; Ok only for HTTP 200.
pub fn check(t: &CheckTarget, timeout: Duration) -> Result<(), HealthError> {
    let url = t.url();
    let deadline = Instant::now() + timeout;
    let fail = |what: &'static str| {
        let url = url.clone();
        move |source: std::io::Error| HealthError::Unreachable { url, what, source }
    };
    let tcp = TcpStream::connect_timeout(&t.addr, timeout).map_err(fail("connect"))?;
    let _ = tcp.set_nodelay(true);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringwatch-healthcheck\r\nConnection: close\r\n\r\n",
        t.target.path,
        t.target.host_header()
    );
    let raw = match t.target.scheme {
        Scheme::Http => exchange(tcp, request.as_bytes(), deadline),
        Scheme::Https => {
            let tls = tls_client(&t.target.host).map_err(fail("tls"))?;
            let stream = rustls::StreamOwned::new(tls, tcp);
            exchange(stream, request.as_bytes(), deadline)
        }
    }
    .map_err(fail("request"))?;
    let (status, body) = parse_response(&raw).map_err(|reason| HealthError::BadResponse {
        url: url.clone(),
        reason,
    })?;
    if status == 200 {
        Ok(())
    } else {
        Err(HealthError::NotReady { url, status, body })
    }
}

/// A TLS client session that accepts the server's certificate as it is (see the module doc).
fn tls_client(host: &str) -> std::io::Result<rustls::ClientConnection> {
    let cfg = crate::probe::tls::client_config(None, true).map_err(std::io::Error::other)?;
    let name = crate::probe::tls::server_name(host).map_err(std::io::Error::other)?;
    rustls::ClientConnection::new(Arc::clone(&cfg), name).map_err(std::io::Error::other)
}

/// The socket under a stream, to set its timeouts.
trait Socket: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// Writes the request and reads the response until the server closes, the head and a little
/// body are in, or the deadline passes.
fn exchange(mut s: impl Socket, request: &[u8], deadline: Instant) -> std::io::Result<Vec<u8>> {
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    s.tcp().set_write_timeout(Some(remaining()?))?;
    s.write_all(request)?;
    s.flush()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        s.tcp().set_read_timeout(Some(remaining()?))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() >= MAX_RESPONSE {
                    break;
                }
            }
            // A peer that closes without TLS close_notify after a complete answer is fine.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out waiting for the response",
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The status code and the first body line of a raw HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    if raw.is_empty() {
        return Err("connection closed without a response".into());
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("incomplete response head".into()),
        Err(e) => return Err(format!("not HTTP: {e}")),
    };
    let status = resp.code.ok_or("no status code")?;
    let body = String::from_utf8_lossy(&raw[head_len..]);
    let first = body.lines().next().unwrap_or("").trim();
    Ok((status, first.chars().take(200).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_is_checked_on_loopback() {
        let t = target_for_listen("0.0.0.0:9000".parse().expect("addr"), false);
        assert_eq!(t.addr, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(t.url(), "http://127.0.0.1:9000/readyz");
        let t = target_for_listen("[::]:9000".parse().expect("addr"), true);
        assert_eq!(t.addr, "[::1]:9000".parse().expect("addr"));
        assert_eq!(t.url(), "https://[::1]:9000/readyz");
        let t = target_for_listen("10.1.2.3:80".parse().expect("addr"), false);
        assert_eq!(t.addr, "10.1.2.3:80".parse().expect("addr"));
    }

    #[test]
    fn url_without_path_checks_readyz() {
        let t = target_for_url("http://127.0.0.1:8080").expect("url");
        assert_eq!(t.target.path, "/readyz");
        let t = target_for_url("http://127.0.0.1:8080/").expect("url");
        assert_eq!(t.target.path, "/readyz");
        let t = target_for_url("https://127.0.0.1:8443/healthz").expect("url");
        assert_eq!(t.target.path, "/healthz");
        assert_eq!(t.target.scheme, Scheme::Https);
        assert!(matches!(
            target_for_url("ftp://x"),
            Err(HealthError::Usage(_))
        ));
    }

    #[test]
    fn reads_listen_and_tls_from_the_server_block_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        let mut text = String::from(
            "# comment\nlog: {level: info}\nserver:\n  shards: 2\n\n  # x\n  listen: 0.0.0.0:9100\n  tls:\n    cert: c.pem\n    key: k.pem\nservices:\n",
        );
        for i in 0..3 {
            text.push_str(&format!("  - {{name: s{i}, url: \"http://x/\"}}\n"));
        }
        std::fs::write(&path, &text).expect("write");
        assert_eq!(
            read_server(&path).expect("read"),
            ("0.0.0.0:9100".parse().expect("addr"), true)
        );
        // Flow style at the top: the cut finds nothing, the whole-file parse answers.
        std::fs::write(&path, "{server: {listen: \"127.0.0.1:9101\"}}\n").expect("write");
        assert_eq!(
            read_server(&path).expect("read"),
            ("127.0.0.1:9101".parse().expect("addr"), false)
        );
        std::fs::write(&path, "").expect("write");
        assert_eq!(
            read_server(&path).expect("read"),
            ("127.0.0.1:8080".parse().expect("addr"), false)
        );
        std::fs::write(&path, "server:\n  listen: nowhere\n").expect("write");
        assert!(matches!(read_server(&path), Err(HealthError::Usage(_))));
        std::fs::write(&path, "server: [\n").expect("write");
        assert!(matches!(read_server(&path), Err(HealthError::Usage(_))));
    }

    #[test]
    fn response_parsing() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nready\n"),
            Ok((200, "ready".into()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 503 X\r\n\r\nshutting down\n"),
            Ok((503, "shutting down".into()))
        );
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nX: y").is_err());
    }
}
