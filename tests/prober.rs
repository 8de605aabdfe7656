//! Prober against real sockets: std-thread HTTP(S) servers on 127.0.0.1, one monoio runtime per
//! test. Assertions are on error kinds and connection counts, not on tight timings.

mod probe_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use probe_support::*;
use ringwatch::model::{ErrorKind, Method, Scheme, StatusRanges, TlsSettings};
use ringwatch::probe::{ProbeError, ProbeLimits, ProbeReport};
use ringwatch::rt::dns::{ResolverConfig, ResolverHandle};

fn kind(r: &ProbeReport) -> Option<ErrorKind> {
    r.error.as_ref().map(ProbeError::kind)
}

fn timeout_phase(r: &ProbeReport) -> &'static str {
    match &r.error {
        Some(ProbeError::Timeout { phase, .. }) => phase,
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn ok_200_records_status_bytes_and_timings() {
    let srv = Server::respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let r = run(async { prober().probe(&http(srv.port, "/")).await });
    assert_eq!(r.error, None);
    assert_eq!(r.status_code, Some(200));
    assert_eq!(r.bytes, 40);
    assert!(!r.reused);
    assert!(r.timings.total >= r.timings.first_byte);
    assert!(r.timings.first_byte > Duration::ZERO);
}

#[test]
fn server_error_is_a_status_failure() {
    let srv = Server::respond(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n");
    let r = run(async { prober().probe(&http(srv.port, "/")).await });
    assert_eq!(kind(&r), Some(ErrorKind::Status));
    assert_eq!(r.status_code, Some(503));
}

#[test]
fn request_carries_default_and_custom_headers_and_body() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let srv = Server::start(move |mut s| {
        if let Some(req) = read_request(&mut s) {
            *store.lock().unwrap() = req;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let mut spec = spec(Scheme::Http, "localhost", srv.port, "/post?x=1");
    spec.method = Method::Post;
    spec.headers = vec![("X-Probe".into(), "yes".into())];
    spec.body = Some(bytes::Bytes::from_static(b"{\"a\":1}"));
    let r = run(async { prober().probe(&spec).await });
    assert_eq!(r.error, None);
    let req = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
    assert!(req.starts_with("POST /post?x=1 HTTP/1.1\r\n"), "{req}");
    for want in [
        format!("Host: localhost:{}\r\n", srv.port),
        format!("User-Agent: ringwatch/{}\r\n", env!("CARGO_PKG_VERSION")),
        "Accept: */*\r\n".into(),
        "Connection: keep-alive\r\n".into(),
        "X-Probe: yes\r\n".into(),
        "Content-Length: 7\r\n".into(),
    ] {
        assert!(req.contains(&want), "missing {want:?} in {req}");
    }
    assert!(req.ends_with("\r\n\r\n{\"a\":1}"));
}

#[test]
fn body_contains_with_content_length() {
    let srv = Server::respond(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\nstatus: all good!");
    let mut s = http(srv.port, "/");
    s.expect.body_contains = Some("all good".into());
    let r = run(async { prober().probe(&s).await });
    assert_eq!(r.error, None);
}

#[test]
fn body_contains_with_chunked_split_across_chunks_and_trailers() {
    let srv = Server::respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          7\r\nstatus:\r\n6;ext=x\r\n all g\r\n4\r\nood!\r\n0\r\nX-Checksum: 1\r\n\r\n",
    );
    let p = prober();
    let mut s = http(srv.port, "/");
    s.expect.body_contains = Some("all good".into());
    let (a, b) = run(async { (p.probe(&s).await, p.probe(&s).await) });
    assert_eq!(a.error, None);
    // The trailers were consumed exactly: the connection is clean for the next request.
    assert_eq!(b.error, None);
    assert!(b.reused);
    assert_eq!(srv.accepted(), 1);
}

#[test]
fn body_contains_only_sees_max_body_bytes_and_rest_is_drained() {
    let srv = Server::respond(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n0123456789abcdefNEED");
    let p = prober();
    let mut s = http(srv.port, "/");
    s.max_body_bytes = 10;
    s.expect.body_contains = Some("NEED".into());
    let (a, b) = run(async { (p.probe(&s).await, p.probe(&s).await) });
    assert_eq!(kind(&a), Some(ErrorKind::BodyMismatch));
    assert_eq!(a.bytes, 59);
    assert!(b.reused, "discarded body must still be consumed");
}

#[test]
fn endless_body_is_cut_off_not_timed_out() {
    let srv = Server::start(|mut s| {
        let _ = read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\nneedle");
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..40 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    let p = prober();
    let mut s = http(srv.port, "/");
    s.expect.body_contains = Some("needle".into());
    let r = run(async { p.probe(&s).await });
    assert_eq!(r.error, None);
    assert_eq!(
        p.idle_connections(),
        0,
        "a half-read connection must not be pooled"
    );
}

#[test]
fn body_mismatch() {
    let srv = Server::respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    let mut s = http(srv.port, "/");
    s.expect.body_contains = Some("bye".into());
    let r = run(async { prober().probe(&s).await });
    assert_eq!(kind(&r), Some(ErrorKind::BodyMismatch));
    assert_eq!(r.status_code, Some(200));
}

#[test]
fn read_until_close_http10_body() {
    let srv = Server::start(|mut s| {
        if read_request(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nold but fine");
        }
    });
    let mut s = http(srv.port, "/");
    s.expect.body_contains = Some("fine".into());
    let p = prober();
    let r = run(async { p.probe(&s).await });
    assert_eq!(r.error, None);
    assert_eq!(p.idle_connections(), 0);
}

#[test]
fn head_request_and_interim_responses_have_no_body() {
    let srv = Server::respond(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    );
    let p = prober();
    let mut s = http(srv.port, "/");
    s.method = Method::Head;
    let (a, b) = run(async { (p.probe(&s).await, p.probe(&s).await) });
    assert_eq!((a.error, a.status_code), (None, Some(200)));
    assert_eq!(b.error, None);
    assert!(b.reused);
}

#[test]
fn keep_alive_reuses_one_connection() {
    let srv = Server::respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let p = prober();
    let s = http(srv.port, "/");
    let reports = run(async {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(p.probe(&s).await);
        }
        v
    });
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.error, None, "probe {i}");
        assert_eq!(r.reused, i > 0, "probe {i}");
    }
    assert_eq!(reports[1].timings.connect, Duration::ZERO);
    assert_eq!(srv.accepted(), 1);
    let c = p.counters();
    assert_eq!((c.connections_opened, c.connections_reused), (1, 4));
}

#[test]
fn pool_bound_per_target_drops_extra_idle_connections() {
    let srv = Server::respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let p = prober_with(ProbeLimits {
        max_idle_per_target: 1,
        ..ProbeLimits::default()
    });
    let s = http(srv.port, "/");
    let (a, b) = run(async { monoio::join!(p.probe(&s), p.probe(&s)) });
    assert_eq!((a.error, b.error), (None, None));
    let c = p.counters();
    assert_eq!(
        c.connections_opened, 2,
        "concurrent probes need two connections"
    );
    assert_eq!(c.idle_dropped, 1);
    assert_eq!(p.idle_connections(), 1);
}

#[test]
fn response_trickling_in_tiny_pieces_is_reassembled() {
    let srv = Server::start(|mut s| {
        let _ = s.set_nodelay(true);
        while read_request(&mut s).is_some() {
            let resp =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
            for piece in resp.chunks(3) {
                if s.write_all(piece).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let mut s = http(srv.port, "/");
    s.expect.body_contains = Some("hello".into());
    let p = prober();
    let (a, b) = run(async { (p.probe(&s).await, p.probe(&s).await) });
    assert_eq!((a.error, b.error), (None, None));
    assert!(b.reused);
}

#[test]
fn connection_close_response_is_not_reused() {
    let srv = Server::start(|mut s| {
        if read_request(&mut s).is_some() {
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let p = prober();
    let s = http(srv.port, "/");
    let (a, b) = run(async { (p.probe(&s).await, p.probe(&s).await) });
    assert_eq!((a.error, b.error), (None, None));
    assert!(!b.reused);
    assert_eq!(srv.accepted(), 2);
}

#[test]
fn stale_keep_alive_connection_is_retried_once() {
    // Answers one request per connection but claims keep-alive, then hangs up: the pooled
    // connection is dead by the time the second probe uses it.
    let srv = Server::start(|mut s| {
        if read_request(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let p = prober();
    let s = http(srv.port, "/");
    let (a, b) = run(async {
        let a = p.probe(&s).await;
        monoio::time::sleep(Duration::from_millis(50)).await;
        (a, p.probe(&s).await)
    });
    assert_eq!(a.error, None);
    assert_eq!(b.error, None, "stale connection must be retried");
    assert!(!b.reused);
    assert_eq!(srv.accepted(), 2);
}

#[test]
fn response_head_never_arrives() {
    let srv = Server::start(|mut s| {
        let _ = read_request(&mut s);
        std::thread::sleep(Duration::from_secs(2));
    });
    let mut s = http(srv.port, "/");
    s.phase_timeouts.head = Duration::from_millis(300);
    let r = run(async { prober().probe(&s).await });
    assert_eq!(timeout_phase(&r), "response head");
    assert_eq!(r.status_code, None);
}

#[test]
fn body_hangs_midway() {
    let srv = Server::start(|mut s| {
        let _ = read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
        std::thread::sleep(Duration::from_secs(2));
    });
    let mut s = http(srv.port, "/");
    s.timeout = Duration::from_millis(300);
    let r = run(async { prober().probe(&s).await });
    assert_eq!(timeout_phase(&r), "body");
    assert_eq!(r.status_code, Some(200));
}

#[test]
fn whole_probe_timeout_wins_over_longer_phase_timeout() {
    let srv = Server::start(|mut s| {
        let _ = read_request(&mut s);
        std::thread::sleep(Duration::from_secs(3));
    });
    let mut s = http(srv.port, "/");
    s.timeout = Duration::from_millis(300);
    s.phase_timeouts.head = Duration::from_secs(5);
    let started = Instant::now();
    let r = run(async { prober().probe(&s).await });
    assert_eq!(timeout_phase(&r), "response head");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn connection_refused() {
    let r = run(async { prober().probe(&http(dead_port(), "/")).await });
    assert_eq!(kind(&r), Some(ErrorKind::Refused), "{:?}", r.error);
}

#[test]
fn reset_mid_response_is_a_connection_error() {
    let srv = Server::start(|mut s| {
        let _ = read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
        std::thread::sleep(Duration::from_millis(50));
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        drop(s);
    });
    let r = run(async { prober().probe(&http(srv.port, "/")).await });
    assert_eq!(kind(&r), Some(ErrorKind::Connection), "{:?}", r.error);
}

#[test]
fn eof_mid_body_is_a_connection_error() {
    let srv = Server::start(|mut s| {
        let _ = read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
    });
    let r = run(async { prober().probe(&http(srv.port, "/")).await });
    assert_eq!(kind(&r), Some(ErrorKind::Connection), "{:?}", r.error);
}

#[test]
fn malformed_status_line_is_a_protocol_error() {
    let srv = Server::respond(b"HTTP/1.1 OK 200\r\n\r\n");
    let r = run(async { prober().probe(&http(srv.port, "/")).await });
    assert_eq!(kind(&r), Some(ErrorKind::Protocol), "{:?}", r.error);
}

#[test]
fn bad_chunk_is_a_protocol_error() {
    let srv = Server::respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    let r = run(async { prober().probe(&http(srv.port, "/")).await });
    assert_eq!(kind(&r), Some(ErrorKind::Protocol), "{:?}", r.error);
}

#[test]
fn oversized_head_is_a_protocol_error() {
    let srv = Server::start(|mut s| {
        let _ = read_request(&mut s);
        let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..20 {
            resp.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(200)).as_bytes());
        }
        resp.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let _ = s.write_all(&resp);
        std::thread::sleep(Duration::from_millis(500));
    });
    let p = prober_with(ProbeLimits {
        max_header_bytes: 1024,
        ..ProbeLimits::default()
    });
    let r = run(async { p.probe(&http(srv.port, "/")).await });
    assert_eq!(kind(&r), Some(ErrorKind::Protocol), "{:?}", r.error);
    let msg = r.error.unwrap().to_string();
    assert!(msg.contains("exceeds 1024 bytes"), "{msg}");
}

#[test]
fn expected_status_ranges() {
    let srv = Server::respond(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n");
    let mut s = http(srv.port, "/");
    s.expect.status = StatusRanges(vec![(200, 299), (418, 418)]);
    let mut strict = s.clone();
    strict.expect.status = StatusRanges(vec![(200, 299)]);
    // One runtime for both: pooled connections belong to the runtime that opened them.
    let p = prober();
    let (ok, bad) = run(async { (p.probe(&s).await, p.probe(&strict).await) });
    assert_eq!(ok.error, None);
    assert_eq!(
        bad.error,
        Some(ProbeError::Status {
            got: 418,
            expected: "200-299".into()
        })
    );
}

#[test]
fn max_latency_exceeded() {
    let srv = Server::start(|mut s| {
        let _ = read_request(&mut s);
        std::thread::sleep(Duration::from_millis(200));
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    });
    let mut s = http(srv.port, "/");
    s.expect.max_latency = Some(Duration::from_millis(50));
    let r = run(async { prober().probe(&s).await });
    assert_eq!(kind(&r), Some(ErrorKind::Latency), "{:?}", r.error);
}

#[test]
fn dns_localhost_resolves_and_invalid_fails() {
    let srv = Server::respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let p = prober();
    let ok = spec(Scheme::Http, "localhost", srv.port, "/");
    let bad = spec(Scheme::Http, "no-such-host.invalid", 80, "/");
    let (a, b) = run(async { (p.probe(&ok).await, p.probe(&bad).await) });
    assert_eq!(a.error, None);
    assert_eq!(kind(&b), Some(ErrorKind::Dns), "{:?}", b.error);
}

#[test]
fn ip_literals_bypass_resolver_threads() {
    // No threads: any name lookup fails, literals still resolve.
    let r = ResolverHandle::spawn(ResolverConfig {
        threads: 0,
        queue: 1,
        ttl: Duration::from_secs(1),
    });
    let (v4, v6, name) = run(async {
        (
            r.resolve("127.0.0.1", 80).await,
            r.resolve("::1", 443).await,
            r.resolve("localhost", 80).await,
        )
    });
    assert_eq!(v4, Ok("127.0.0.1:80".parse().unwrap()));
    assert_eq!(v6, Ok("[::1]:443".parse().unwrap()));
    assert!(name.is_err());
}

fn write_ca(pki: &Pki) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(pki.ca_pem.as_bytes()).unwrap();
    f
}

#[test]
fn https_with_test_ca_is_up() {
    let pki = ca_signed(&["localhost", "127.0.0.1"]);
    let ca = write_ca(&pki);
    let srv = tls_server(
        pki.server.clone(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure",
    );
    let mut s = spec(Scheme::Https, "localhost", srv.port, "/");
    s.tls = Some(TlsSettings {
        ca_file: Some(ca.path().to_path_buf()),
        insecure_skip_verify: false,
    });
    s.expect.body_contains = Some("secure".into());
    let p = prober();
    let (a, b) = run(async { (p.probe(&s).await, p.probe(&s).await) });
    assert_eq!(a.error, None);
    assert!(a.timings.tls > Duration::ZERO);
    assert_eq!(b.error, None);
    assert!(b.reused);
    assert_eq!(b.timings.tls, Duration::ZERO);
    assert_eq!(srv.accepted(), 1);

    // The same CA works for an IP literal target (IP SAN, no SNI).
    let mut s = spec(Scheme::Https, "127.0.0.1", srv.port, "/");
    s.tls = Some(TlsSettings {
        ca_file: Some(ca.path().to_path_buf()),
        insecure_skip_verify: false,
    });
    let r = run(async { prober().probe(&s).await });
    assert_eq!(r.error, None);
}

#[test]
fn insecure_connection_is_never_reused_by_a_verifying_service() {
    let srv = tls_server(
        self_signed(&["localhost"]),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let mut insecure = spec(Scheme::Https, "localhost", srv.port, "/");
    insecure.tls = Some(TlsSettings {
        ca_file: None,
        insecure_skip_verify: true,
    });
    let mut strict = insecure.clone();
    strict.tls = Some(TlsSettings::default());
    let p = prober();
    let (a, b) = run(async { (p.probe(&insecure).await, p.probe(&strict).await) });
    assert_eq!(a.error, None);
    assert_eq!(kind(&b), Some(ErrorKind::Tls), "{:?}", b.error);
    assert!(!b.reused);
}

#[test]
fn https_self_signed_without_ca_is_tls_error() {
    let srv = tls_server(
        self_signed(&["localhost"]),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    let mut s = spec(Scheme::Https, "localhost", srv.port, "/");
    s.tls = Some(TlsSettings::default());
    let r = run(async { prober().probe(&s).await });
    assert_eq!(kind(&r), Some(ErrorKind::Tls), "{:?}", r.error);
}

#[test]
fn https_wrong_host_name_is_tls_error() {
    let pki = ca_signed(&["other.example"]);
    let ca = write_ca(&pki);
    let srv = tls_server(pki.server, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let mut s = spec(Scheme::Https, "localhost", srv.port, "/");
    s.tls = Some(TlsSettings {
        ca_file: Some(ca.path().to_path_buf()),
        insecure_skip_verify: false,
    });
    let r = run(async { prober().probe(&s).await });
    assert_eq!(kind(&r), Some(ErrorKind::Tls), "{:?}", r.error);
    let msg = r.error.unwrap().to_string();
    assert!(msg.contains("tls"), "{msg}");
}

#[test]
fn https_insecure_skip_verify_accepts_self_signed() {
    let srv = tls_server(
        self_signed(&["whatever.example"]),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    let mut s = spec(Scheme::Https, "localhost", srv.port, "/");
    s.tls = Some(TlsSettings {
        ca_file: None,
        insecure_skip_verify: true,
    });
    let r = run(async { prober().probe(&s).await });
    assert_eq!(r.error, None);
    assert_eq!(r.status_code, Some(200));
}

/// The probe future is spawned (moved) once per probe and lives in every in-flight probe task:
/// keep it from silently growing back (it was ~2.8 KB before the whole-probe and phase timers
/// stopped storing a second copy of the future they wrap).
#[test]
fn probe_future_stays_small() {
    let p = prober();
    let s = spec(Scheme::Http, "127.0.0.1", 9, "/");
    let size = std::mem::size_of_val(&p.probe(&s));
    eprintln!("probe future: {size} bytes");
    assert!(size <= 4096, "probe future grew to {size} bytes");
}

// Redirects (`follow_redirects`).

/// A keep-alive server answering each request with `answer(request)`; keeps every request.
fn routed(
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (Server, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let srv = Server::start(move |mut s| {
        while let Some(req) = read_request(&mut s) {
            let req = String::from_utf8_lossy(&req).into_owned();
            let resp = answer(&req);
            log.lock().unwrap().push(req);
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    });
    (srv, seen)
}

fn moved(status: &str, location: &str) -> String {
    format!("HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
}

fn ok_body(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn request_lines(seen: &Mutex<Vec<String>>) -> Vec<String> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .map(|r| r.lines().next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn follows_a_relative_location_over_the_same_connection() {
    let (srv, seen) = routed(|req| {
        if req.starts_with("GET /dir/old ") {
            moved("301 Moved Permanently", "../new/./page?x=1#frag")
        } else {
            ok_body("landed")
        }
    });
    let mut s = http(srv.port, "/dir/old");
    s.follow_redirects = 3;
    s.expect.body_contains = Some("landed".into());
    let r = run(async { prober().probe(&s).await });
    assert_eq!(r.error, None);
    assert_eq!(r.status_code, Some(200));
    assert_eq!(
        request_lines(&seen),
        ["GET /dir/old HTTP/1.1", "GET /new/page?x=1 HTTP/1.1"]
    );
    // Same scheme, host and port: the hop went over the connection the redirect came on.
    assert_eq!(srv.accepted(), 1);
    assert!(r.reused);
    let first = moved("301 Moved Permanently", "../new/./page?x=1#frag").len();
    assert_eq!(r.bytes, (first + ok_body("landed").len()) as u64);
}

#[test]
fn follows_an_absolute_location_to_another_port_without_its_credentials() {
    let (target, target_seen) = routed(|_| ok_body("final"));
    let to = format!("http://127.0.0.1:{}/final", target.port);
    let (srv, seen) = routed(move |_| moved("302 Found", &to));
    let mut s = http(srv.port, "/start");
    s.follow_redirects = 1;
    s.headers = vec![
        ("Authorization".into(), "Bearer secret".into()),
        ("X-Probe".into(), "yes".into()),
    ];
    s.expect.body_contains = Some("final".into());
    let p = prober();
    let r = run(async { p.probe(&s).await });
    assert_eq!(r.error, None);
    assert_eq!(r.status_code, Some(200));
    assert!(!r.reused);
    assert_eq!((srv.accepted(), target.accepted()), (1, 1));
    assert_eq!(p.counters().connections_opened, 2);
    assert!(seen.lock().unwrap()[0].contains("Authorization: Bearer secret\r\n"));
    let hop = target_seen.lock().unwrap()[0].clone();
    assert!(hop.starts_with("GET /final HTTP/1.1\r\n"), "{hop}");
    assert!(
        hop.contains(&format!("Host: 127.0.0.1:{}\r\n", target.port)),
        "{hop}"
    );
    assert!(!hop.contains("Authorization"), "credentials leaked: {hop}");
    assert!(hop.contains("X-Probe: yes\r\n"), "{hop}");
}

fn post_spec(port: u16, path: &str) -> ringwatch::model::ServiceSpec {
    let mut s = http(port, path);
    s.method = Method::Post;
    s.headers = vec![("Content-Type".into(), "application/json".into())];
    s.body = Some(bytes::Bytes::from_static(b"{\"a\":1}"));
    s.follow_redirects = 2;
    s
}

#[test]
fn see_other_turns_post_into_get_without_the_body() {
    let (srv, seen) = routed(|req| {
        if req.starts_with("POST /form ") {
            moved("303 See Other", "/done")
        } else {
            ok_body("done")
        }
    });
    let r = run(async { prober().probe(&post_spec(srv.port, "/form")).await });
    assert_eq!(r.error, None);
    let seen = seen.lock().unwrap();
    assert!(seen[0].starts_with("POST /form HTTP/1.1\r\n"));
    assert!(seen[0].ends_with("\r\n\r\n{\"a\":1}"), "{}", seen[0]);
    let hop = &seen[1];
    assert!(hop.starts_with("GET /done HTTP/1.1\r\n"), "{hop}");
    assert!(hop.ends_with("\r\n\r\n"), "a GET carries no body: {hop}");
    assert!(!hop.contains("Content-"), "{hop}");
}

#[test]
fn temporary_redirect_keeps_post_and_its_body() {
    let (srv, seen) = routed(|req| {
        if req.starts_with("POST /form ") {
            moved("307 Temporary Redirect", "/again")
        } else {
            ok_body("kept")
        }
    });
    let r = run(async { prober().probe(&post_spec(srv.port, "/form")).await });
    assert_eq!(r.error, None);
    let hop = seen.lock().unwrap()[1].clone();
    assert!(hop.starts_with("POST /again HTTP/1.1\r\n"), "{hop}");
    assert!(hop.contains("Content-Type: application/json\r\n"), "{hop}");
    assert!(hop.contains("Content-Length: 7\r\n"), "{hop}");
    assert!(hop.ends_with("\r\n\r\n{\"a\":1}"), "{hop}");
}

#[test]
fn a_redirect_loop_fails_at_the_hop_bound() {
    let (srv, seen) = routed(|req| {
        if req.starts_with("GET /a ") {
            moved("302 Found", "/b")
        } else {
            moved("302 Found", "/a")
        }
    });
    let mut s = http(srv.port, "/a");
    s.follow_redirects = 4;
    let r = run(async { prober().probe(&s).await });
    assert_eq!(kind(&r), Some(ErrorKind::Protocol), "{:?}", r.error);
    let msg = r.error.unwrap().to_string();
    assert_eq!(
        msg,
        format!(
            "too many redirects (max 4); the next one pointed to http://127.0.0.1:{}/b",
            srv.port
        )
    );
    assert_eq!(seen.lock().unwrap().len(), 5, "the request and four hops");
    assert_eq!(r.status_code, Some(302));
}

#[test]
fn a_redirect_past_the_probe_timeout_times_out() {
    let slow = Server::start(|mut s| {
        let _ = read_request(&mut s);
        std::thread::sleep(Duration::from_secs(2));
    });
    let to = format!("http://127.0.0.1:{}/slow", slow.port);
    let (srv, _) = routed(move |_| moved("301 Moved Permanently", &to));
    let mut s = http(srv.port, "/");
    s.follow_redirects = 5;
    s.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let r = run(async { prober().probe(&s).await });
    assert_eq!(timeout_phase(&r), "response head");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // The first response still counts.
    assert!(r.bytes > 0);
}

#[test]
fn a_redirect_not_followed_says_so() {
    let (srv, _) = routed(|_| moved("301 Moved Permanently", "/next"));
    let s = http(srv.port, "/");
    let mut expecting = s.clone();
    expecting.expect.status = StatusRanges(vec![(301, 301)]);
    let p = prober();
    let (r, fine) = run(async { (p.probe(&s).await, p.probe(&expecting).await) });
    assert_eq!(kind(&r), Some(ErrorKind::Status));
    assert_eq!(r.status_code, Some(301));
    assert_eq!(
        r.error.unwrap().to_string(),
        format!(
            "status 301 not in expected 200-299 (redirect to http://127.0.0.1:{}/next not \
             followed; set follow_redirects)",
            srv.port
        )
    );
    // A service that checks the redirect itself is as it was.
    assert_eq!(fine.error, None);
}

#[test]
fn https_is_not_downgraded_to_http() {
    let (plain, plain_seen) = routed(|_| ok_body("clear"));
    let response = moved(
        "301 Moved Permanently",
        &format!("http://127.0.0.1:{}/", plain.port),
    );
    let srv = tls_server(
        self_signed(&["localhost"]),
        Box::leak(response.into_boxed_str()).as_bytes(),
    );
    let mut s = spec(Scheme::Https, "localhost", srv.port, "/");
    s.tls = Some(TlsSettings {
        ca_file: None,
        insecure_skip_verify: true,
    });
    s.follow_redirects = 3;
    let r = run(async { prober().probe(&s).await });
    assert_eq!(kind(&r), Some(ErrorKind::Protocol), "{:?}", r.error);
    let msg = r.error.unwrap().to_string();
    assert!(msg.contains("https is not downgraded to http"), "{msg}");
    assert!(plain_seen.lock().unwrap().is_empty());
}
