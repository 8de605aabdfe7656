//! Property tests (the fuzzing stand-in: cargo-fuzz needs nightly): the HTTP request parser,
//! the REST router and JSON service bodies never panic, and valid inputs round-trip.
//!
//! `PROPTEST_CASES=200000 cargo test --release --test props` runs a long campaign; see
//! docs/fuzzing.md.

use proptest::prelude::*;
use ringwatch::api::{route, Route, ServiceRef};
use ringwatch::config::{api_service, HttpLimits, ServiceDefaults};
use ringwatch::http::{parse_request, HttpReject, Parsed};
use ringwatch::model::ServiceId;
use serde_json::{json, Value};

fn limits() -> HttpLimits {
    HttpLimits {
        max_header_bytes: 2048,
        max_body_bytes: 512,
        ..HttpLimits::default()
    }
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

/// A generated request: method, path, query, headers, body.
type Req = (String, String, String, Vec<(String, String)>, Vec<u8>);

/// A well-formed request.
fn request() -> impl Strategy<Value = Req> {
    (
        prop_oneof![Just("GET".to_string()), Just("POST".to_string()), token()],
        "(/[A-Za-z0-9._~-]{0,10}){1,4}",
        "([a-z]{1,5}=[A-Za-z0-9]{0,5}(&[a-z]{1,5}=[A-Za-z0-9]{0,5}){0,3})?",
        prop::collection::vec((token(), "[ -~&&[^ ]]([ -~]{0,20}[!-~])?"), 0..6),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_filter("reserved headers", |(_, _, _, h, _)| {
            h.iter().all(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k != "content-length" && k != "transfer-encoding" && k != "connection"
            })
        })
}

fn encode((method, path, query, headers, body): &Req) -> Vec<u8> {
    let mut out = format!("{method} {path}");
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out.push_str(" HTTP/1.1\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = out.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("30s")),
        Just(json!("http://127.0.0.1:8080/x")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("url".to_string()),
                    Just("interval".to_string()),
                    Just("timeout".to_string()),
                    Just("expect".to_string()),
                    Just("status".to_string()),
                    Just("tags".to_string()),
                    Just("headers".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Valid service objects.
fn service() -> impl Strategy<Value = Value> {
    (
        "[A-Za-z0-9._-]{1,20}",
        prop_oneof![Just("http"), Just("https")],
        "[a-z]{1,10}(\\.[a-z]{2,5})?",
        any::<Option<u16>>(),
        "(/[a-z0-9]{0,6}){0,3}",
        1u64..3600,
        prop::collection::vec("[a-z0-9-]{1,8}", 0..4),
        (1u64..20, 1u64..20, any::<bool>()),
        prop_oneof![Just("GET"), Just("HEAD"), Just("POST")],
        prop::option::of("[a-zA-Z0-9]{1,10}"),
    )
        .prop_map(
            |(name, scheme, host, port, path, interval_s, tags, (f, s, paused), method, hv)| {
                let port = port.map(|p| format!(":{}", p.max(1))).unwrap_or_default();
                let mut v = json!({
                    "name": name,
                    "url": format!("{scheme}://{host}{port}{path}"),
                    "method": method,
                    "interval": format!("{interval_s}s"),
                    "timeout": format!("{}ms", interval_s * 500),
                    "tags": tags,
                    "failure_threshold": f,
                    "success_threshold": s,
                    "paused": paused,
                    "expect": {"status": "200-299,304"},
                });
                if let Some(hv) = hv {
                    v["headers"] = json!({"X-Test": hv});
                }
                if method == "POST" {
                    v["body"] = json!("{}");
                }
                v
            },
        )
}

proptest! {
    #[test]
    fn parser_never_panics_on_bytes(raw in prop::collection::vec(any::<u8>(), 0..3000)) {
        let _ = parse_request(&raw, &limits());
    }

    #[test]
    fn parser_never_panics_on_mutated_requests(
        req in request(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut raw = encode(&req);
        for (i, b) in flips {
            let n = raw.len();
            raw[i.index(n)] = b;
        }
        let n = raw.len();
        let _ = parse_request(&raw[..cut.index(n + 1)], &limits());
    }

    #[test]
    fn valid_requests_round_trip_and_prefixes_are_partial(
        req in request(),
        cut in any::<prop::sample::Index>(),
    ) {
        let raw = encode(&req);
        let head_len = raw.len() - req.4.len();
        prop_assume!(head_len <= limits().max_header_bytes);
        match parse_request(&raw, &limits()) {
            Parsed::Complete { req: got, len, close } => {
                prop_assert_eq!(len, raw.len());
                prop_assert!(!close);
                prop_assert_eq!(&got.method, &req.0);
                prop_assert_eq!(&got.path, &req.1);
                prop_assert_eq!(&got.query, &req.2);
                prop_assert_eq!(&got.body[..], &req.4[..]);
                for (k, v) in &req.3 {
                    prop_assert!(got.headers.iter().any(|(gk, gv)| gk == k && gv == v.trim()));
                }
            }
            Parsed::Reject(_, r) => prop_assert_eq!(r.status, 413, "only the body limit may refuse it"),
            Parsed::Partial => prop_assert!(false, "complete request reported partial"),
        }
        let c = cut.index(raw.len());
        prop_assert!(matches!(parse_request(&raw[..c], &limits()), Parsed::Partial | Parsed::Reject(..)));
    }

    #[test]
    fn router_never_panics(method in ".{0,8}", path in "(/[^/?]{0,12}){0,6}/?") {
        let _ = route(&method, &path);
        let _ = route(&method, &format!("/api/v1{path}"));
    }

    #[test]
    fn routes_round_trip(raw_id in 0u64..(i64::MAX as u64), name in "[A-Za-z0-9._-]{1,30}", pick in 0usize..9) {
        let id = ServiceId::from_raw(raw_id);
        let by_id = ServiceRef::id(id);
        let (m, p, want) = match pick {
            0 => ("GET", "/api/v1/services".to_string(), Route::ListServices),
            1 => ("POST", "/api/v1/services".to_string(), Route::CreateService),
            2 => ("GET", format!("/api/v1/services/{id}"), Route::GetService(by_id.clone())),
            3 => ("PATCH", format!("/api/v1/services/{id}"), Route::PatchService(by_id.clone())),
            4 => ("DELETE", format!("/api/v1/services/{id}/"), Route::DeleteService(by_id.clone())),
            5 => ("POST", format!("/api/v1/services/{id}/pause"), Route::Pause(by_id.clone(), true)),
            6 => ("GET", format!("/api/v1/services/{id}/results"), Route::Results(by_id.clone())),
            7 => ("GET", "/api/v1/transitions".to_string(), Route::Transitions),
            _ => {
                // By name: unless the name looks like a 16-hex-digit id.
                let by_name = ServiceRef::name(&name);
                let r = route("GET", &format!("/api/v1/services/{name}/transitions"));
                if name.len() != 16 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    prop_assert_eq!(r, Ok(Route::ServiceTransitions(by_name)));
                }
                return Ok(());
            }
        };
        prop_assert_eq!(route(m, &p), Ok(want));
    }

    #[test]
    fn service_json_never_panics(v in json_value()) {
        let _ = api_service(&v, &ServiceDefaults::default());
    }

    #[test]
    fn service_json_never_panics_on_bytes(raw in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&raw) {
            let _ = api_service(&v, &ServiceDefaults::default());
        }
    }

    #[test]
    fn valid_services_round_trip(v in service()) {
        let d = ServiceDefaults::default();
        let spec = match api_service(&v, &d) {
            Ok(s) => s,
            Err(e) => return Err(TestCaseError::fail(format!("{v}: {e}"))),
        };
        let out: Value = serde_json::from_str(&spec.definition_json().to_string()).unwrap();
        let again = api_service(&out, &d).map_err(|e| TestCaseError::fail(format!("{out}: {e}")))?;
        prop_assert_eq!(again.definition_json().to_string(), spec.definition_json().to_string());
        prop_assert_eq!(&out["name"], &v["name"]);
        prop_assert_eq!(&out["url"], &v["url"]);
        prop_assert_eq!(&out["tags"], &v["tags"]);
        prop_assert_eq!(&out["paused"], &v["paused"]);
    }
}

/// An in-memory connection: reads hand out `chunks` one by one (split as the test chose), then
/// EOF; writes are collected.
struct Chunked {
    chunks: std::collections::VecDeque<Vec<u8>>,
    out: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
}

impl monoio::io::AsyncReadRent for Chunked {
    async fn read<T: monoio::buf::IoBufMut>(&mut self, mut buf: T) -> monoio::BufResult<usize, T> {
        let Some(mut chunk) = self.chunks.pop_front() else {
            return (Ok(0), buf);
        };
        let n = chunk.len().min(buf.bytes_total());
        // SAFETY: write_ptr is valid for bytes_total bytes and n <= bytes_total.
        unsafe {
            std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.write_ptr(), n);
            buf.set_init(n);
        }
        if n < chunk.len() {
            self.chunks.push_front(chunk.split_off(n));
        }
        (Ok(n), buf)
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        (Err(std::io::Error::other("readv unused")), buf)
    }
}

impl monoio::io::AsyncWriteRent for Chunked {
    async fn write<T: monoio::buf::IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        // SAFETY: read_ptr is valid for bytes_init bytes.
        let s = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        self.out.borrow_mut().extend_from_slice(s);
        (Ok(s.len()), buf)
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        (Err(std::io::Error::other("writev unused")), buf)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Answers `METHOD PATH BODYLEN` so responses identify their request.
struct Echo;

impl ringwatch::http::Handler for Echo {
    async fn handle(&self, req: ringwatch::http::Request) -> ringwatch::http::Response {
        ringwatch::http::Response::text(
            200,
            format!("{} {} {}", req.method, req.path, req.body.len()),
        )
    }
    fn on_request(&self) {}
    fn on_reject(&self, _why: HttpReject) {}
}

/// Serves `chunks` as one connection and returns everything written.
fn serve_chunks(chunks: Vec<Vec<u8>>) -> Vec<u8> {
    let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let conn = Chunked {
        chunks: chunks.into(),
        out: out.clone(),
    };
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime");
    rt.block_on(ringwatch::http::serve(conn, &Echo, limits()));
    let v = out.borrow().clone();
    v
}

/// A request head with one `Content-Length` line per value, then `rest`.
fn with_lengths(lengths: &[String], rest: &[u8]) -> Vec<u8> {
    let mut raw = String::from("POST /a HTTP/1.1\r\nHost: h\r\n");
    for v in lengths {
        raw.push_str(&format!("Content-Length: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(rest);
    raw
}

/// A `Content-Length` value that is not `1*DIGIT`: signed, with a visible non-digit (other than
/// the list comma), or too large for 64 bits.
fn bad_length() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+-][0-9]{1,6}",
        "[0-9]{0,3}[!-+\\--/:-~][0-9]{0,3}",
        "[0-9]{1,3} [0-9]{1,3}",
        "[1-9][0-9]{20,24}",
    ]
}

proptest! {
    /// Two different lengths, as two lines or one list, in either order: 400 and close, and the
    /// bytes after the head are never served as a second request (request smuggling).
    #[test]
    fn conflicting_content_lengths_get_400_and_close(
        a in 0u64..2000,
        b in 0u64..2000,
        as_list in any::<bool>(),
    ) {
        prop_assume!(a != b);
        let lengths = if as_list { vec![format!("{a}, {b}")] } else { vec![a.to_string(), b.to_string()] };
        let mut rest = vec![b'x'; a.min(b) as usize];
        rest.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n");
        let raw = with_lengths(&lengths, &rest);
        match parse_request(&raw, &limits()) {
            Parsed::Reject(HttpReject::Malformed, r) => prop_assert_eq!(r.status, 400),
            other => prop_assert!(false, "{:?}", other),
        }
        let out = String::from_utf8_lossy(&serve_chunks(vec![raw])).to_string();
        prop_assert!(out.starts_with("HTTP/1.1 400 "), "{}", out);
        prop_assert!(out.contains("\r\nConnection: close\r\n"), "{}", out);
        prop_assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{}", out);
    }

    /// A signed, non-digit or overflowing length is a 400, wherever it appears among valid ones.
    #[test]
    fn non_digit_content_lengths_get_400(bad in bad_length(), before in any::<bool>()) {
        let lengths = if before { vec![bad.clone(), "3".into()] } else { vec!["3".into(), bad.clone()] };
        for raw in [with_lengths(std::slice::from_ref(&bad), b"abc"), with_lengths(&lengths, b"abc")] {
            match parse_request(&raw, &limits()) {
                Parsed::Reject(HttpReject::Malformed, r) => prop_assert_eq!(r.status, 400, "{:?}", bad),
                other => prop_assert!(false, "{:?}: {:?}", bad, other),
            }
        }
    }

    /// One length repeated, as lines or as a list, frames the body like the length once.
    #[test]
    fn identical_content_lengths_are_one_length(n in 0usize..=512, times in 2usize..4, as_list in any::<bool>()) {
        let lengths = if as_list { vec![vec![n.to_string(); times].join(", ")] } else { vec![n.to_string(); times] };
        let mut rest = vec![b'y'; n];
        rest.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let raw = with_lengths(&lengths, &rest);
        match parse_request(&raw, &limits()) {
            Parsed::Complete { req, len, .. } => {
                prop_assert_eq!(req.body.len(), n);
                prop_assert_eq!(len, raw.len() - 18);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// However the bytes of pipelined requests are split across reads, the server answers the
    /// same, in order. (A request split across reads was corrupted before the fix.)
    #[test]
    fn pipelined_requests_survive_any_read_split(
        reqs in prop::collection::vec(request(), 1..5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let reqs: Vec<Req> = reqs
            .into_iter()
            .filter(|r| encode(r).len() - r.4.len() <= limits().max_header_bytes && r.4.len() <= limits().max_body_bytes)
            .collect();
        prop_assume!(!reqs.is_empty());
        let raw: Vec<u8> = reqs.iter().flat_map(encode).collect();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(raw.len())).collect();
        points.sort_unstable();
        points.dedup();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([raw.len()]) {
            if p > last {
                chunks.push(raw[last..p].to_vec());
                last = p;
            }
        }
        let split = serve_chunks(chunks);
        let whole = serve_chunks(vec![raw.clone()]);
        prop_assert_eq!(&split, &whole);
        let text = String::from_utf8_lossy(&split).to_string();
        let bodies: Vec<&str> = text
            .split("HTTP/1.1 200 OK\r\n")
            .skip(1)
            .map(|r| r.split_once("\r\n\r\n").map_or("", |x| x.1))
            .collect();
        let want: Vec<String> = reqs.iter().map(|r| format!("{} {} {}", r.0, r.1, r.4.len())).collect();
        prop_assert_eq!(bodies, want);
    }
}
