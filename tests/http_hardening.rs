//! The shards' HTTP server under hostile clients, over raw sockets against the real binary:
//! one test per limit, plus pipelining.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn start(limits: &str) -> (tempfile::TempDir, Ringwatch) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = base_config(
        port,
        &dir.path().join("rw.db"),
        1,
        &format!("  limits:\n{limits}"),
    );
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    (dir, rw)
}

fn connect(rw: &Ringwatch) -> TcpStream {
    let s = TcpStream::connect(rw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the peer closes (or the read timeout); returns what arrived.
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// Reads one response with a Content-Length body off a keep-alive connection.
fn read_one(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                return String::from_utf8_lossy(&buf[..i + 4 + len]).to_string();
            }
        }
        let n = s.read(&mut b).expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&b[..n]);
    }
}

#[test]
fn oversized_header_gets_431_and_close() {
    let (_d, rw) = start("    max_header_bytes: 1024\n");
    let mut s = connect(&rw);
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4000)
    );
    s.write_all(raw.as_bytes()).unwrap();
    let out = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(out.contains("header_too_large"));
    assert!(rw.metric("ringwatch_http_rejected_total{reason=\"header_too_large\"}") >= 1.0);
}

#[test]
fn slowloris_head_gets_408_after_the_header_timeout() {
    let (_d, rw) = start("    header_timeout: 500ms\n");
    let mut s = connect(&rw);
    let t = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Trickle bytes: keep the connection busy but never finish the head.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(100));
        let _ = s.write_all(b"X-A: b\r\n");
    }
    let out = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (_d, rw) = start("    idle_timeout: 400ms\n");
    let mut s = connect(&rw);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_one(&mut s).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let mut b = [0u8; 64];
    // The server closes the idle connection: EOF, no response.
    assert_eq!(s.read(&mut b).unwrap_or(0), 0);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn connections_over_the_per_shard_limit_are_closed_at_accept() {
    let (_d, rw) = start("    max_connections: 2\n");
    // Two held connections, each proven accepted by a served request.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&rw);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(read_one(&mut s).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = connect(&rw);
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let out = read_all(&mut third);
    assert!(out.is_empty(), "third connection served: {out}");
    drop(held);
    // Slots free up once the held connections close.
    assert!(eventually(Duration::from_secs(5), || {
        http_get(rw.addr, "/healthz").is_ok_and(|(c, _)| c == 200)
    }));
    let mut s = connect(&rw);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let body = read_all(&mut s);
    let n = metric_value(
        body.split_once("\r\n\r\n").map_or("", |b| b.1),
        "ringwatch_http_rejected_total{reason=\"connection_limit\"}",
    );
    assert!(n.unwrap_or(0.0) >= 1.0, "{body}");
}

#[test]
fn body_over_the_limit_gets_413_without_reading_it() {
    let (_d, rw) = start("    max_body_bytes: 1024\n");
    let mut s = connect(&rw);
    // Announce 10 MB but send none of it: the answer must not wait for the body.
    s.write_all(b"POST /api/v1/services HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n").unwrap();
    let out = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("body_too_large"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_d, rw) = start("    max_body_bytes: 4096\n");
    let mut s = connect(&rw);
    let body = r#"{"name":"p","url":"http://127.0.0.1:9/"}"#;
    let raw = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /api/v1/services HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
         GET /api/v1/services/p HTTP/1.1\r\nHost: x\r\n\r\n\
         PUT /readyz HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(raw.as_bytes()).unwrap();
    let out = read_all(&mut s);
    let codes: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(codes, ["200", "404", "201", "200", "405", "200"], "{out}");
}

#[test]
fn a_request_split_across_many_writes_is_served() {
    // Regression: monoio reads into a Vec from index 0, so a second read used to overwrite the
    // first part of the request.
    let (_d, rw) = start("    max_body_bytes: 4096\n");
    let mut s = connect(&rw);
    s.set_nodelay(true).unwrap();
    let body = r#"{"name":"split","url":"http://127.0.0.1:9/","interval":"1m"}"#;
    let raw = format!(
        "POST /api/v1/services HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    for chunk in raw.as_bytes().chunks(7) {
        s.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = read_all(&mut s);
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
}

/// POSTs `body_len` bytes to `url` with Python's `urllib.request`, which sends the whole body
/// before it reads the response; prints `status N` or the exception it got.
const URLLIB_POST: &str = r#"
import ssl, sys, urllib.error, urllib.request
url, size, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile) if cafile else None
req = urllib.request.Request(url, data=b"x" * size, method="POST",
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
        print("status", r.status)
except urllib.error.HTTPError as e:
    print("status", e.code)
except Exception as e:
    print("error", type(e).__name__, e)
"#;

fn urllib_post(url: &str, body_len: usize, cafile: Option<&std::path::Path>) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", URLLIB_POST, url, &body_len.to_string()])
        .arg(cafile.map_or_else(Default::default, |p| p.as_os_str().to_owned()))
        .output()
        .expect("run python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_client_that_sends_its_body_before_reading_gets_the_413_not_a_reset() {
    let (_d, rw) = start("    max_body_bytes: 1024\n");
    let url = format!("http://{}/api/v1/services", rw.addr);
    assert_eq!(urllib_post(&url, 8 << 20, None), "status 413");
    // The connection slot is given back after the lingering close.
    assert_eq!(rw.get("/healthz").0, 200);
}

/// A ringwatch process serving HTTPS with a leaf certificate for `127.0.0.1` from a test CA.
struct TlsRingwatch {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    /// The CA certificate, for the client.
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsRingwatch {
    fn start(limits: &str) -> TlsRingwatch {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // OpenSSL (Python's client) takes a leaf whose issuer equals its subject for
        // self-signed; rcgen's default names are equal.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringwatch test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf");
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).expect("write");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        let port = free_port();
        let cfg = base_config(
            port,
            &dir.path().join("rw.db"),
            1,
            &format!("  limits:\n{limits}  tls:\n    cert: cert.pem\n    key: key.pem\n"),
        );
        let path = dir.path().join("ringwatch.yaml");
        std::fs::write(&path, cfg).expect("write config");
        let child = std::process::Command::new(bin())
            .args(["run", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ringwatch");
        let rw = TlsRingwatch {
            child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            ca: dir.path().join("ca.pem"),
            _dir: dir,
        };
        // `/readyz` is HTTPS only here; with one shard, a listening socket means it serves.
        assert!(eventually(Duration::from_secs(20), || {
            TcpStream::connect(rw.addr).is_ok()
        }));
        rw
    }
}

impl Drop for TlsRingwatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn over_tls_too_a_client_that_sends_its_body_first_gets_the_413() {
    let rw = TlsRingwatch::start("    max_body_bytes: 1024\n");
    let url = format!("https://{}/api/v1/services", rw.addr);
    assert_eq!(urllib_post(&url, 8 << 20, Some(&rw.ca)), "status 413");
}

/// Splits a stream of responses, answers to `methods` in order: a HEAD answer has no body
/// whatever its Content-Length. Returns (status, Content-Length, body) per response and
/// asserts nothing is left over.
fn split_responses(raw: &[u8], methods: &[&str]) -> Vec<(u16, usize, String)> {
    let mut rest = raw;
    let mut out = Vec::new();
    for m in methods {
        let i = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head for {m} in {}", String::from_utf8_lossy(rest)));
        let head = String::from_utf8_lossy(&rest[..i]).to_string();
        let status = head[9..12].parse().expect("status");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .expect("Content-Length");
        let body_len = if *m == "HEAD" { 0 } else { len };
        let body = String::from_utf8_lossy(&rest[i + 4..i + 4 + body_len]).to_string();
        out.push((status, len, body));
        rest = &rest[i + 4 + body_len..];
    }
    assert!(
        rest.is_empty(),
        "bytes after the last response: {}",
        String::from_utf8_lossy(rest)
    );
    out
}

#[test]
fn head_is_get_without_the_body_on_every_get_route() {
    let (_d, rw) = start("    max_body_bytes: 4096\n");
    let paths = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/services",
        "/api/v1/transitions",
        "/api/v1/services/nope",
    ];
    // Pipelined on one keep-alive connection: a HEAD answer that carried a body would shift
    // every later response.
    let mut raw = String::new();
    let mut methods = Vec::new();
    for p in paths {
        raw.push_str(&format!("HEAD {p} HTTP/1.1\r\nHost: x\r\n\r\n"));
        raw.push_str(&format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n"));
        methods.extend(["HEAD", "GET"]);
    }
    raw.push_str("PUT /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    methods.push("PUT");
    let mut s = connect(&rw);
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let got = split_responses(&out, &methods);
    for (i, p) in paths.iter().enumerate() {
        let (head, get) = (&got[2 * i], &got[2 * i + 1]);
        assert_eq!(head.0, get.0, "{p}: HEAD and GET status");
        assert!(head.2.is_empty(), "{p}: HEAD body");
        if *p == "/metrics" {
            // The request counters move between the two; the length is the GET's all the same.
            assert!(head.1 > 1000, "{p}: Content-Length {}", head.1);
        } else {
            assert_eq!(head.1, get.1, "{p}: Content-Length");
        }
    }
    assert_eq!(got[0].0, 200);
    assert_eq!(got[10].0, 404);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
}

#[test]
fn a_head_that_looks_like_a_websocket_upgrade_does_not_switch_protocols() {
    let (_d, rw) = start("    max_body_bytes: 4096\n");
    let mut s = connect(&rw);
    s.write_all(
        b"HEAD /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let got = split_responses(&out, &["HEAD", "GET"]);
    assert_eq!(
        (got[0].0, got[1].0),
        (400, 200),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
