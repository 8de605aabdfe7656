//! HTTP/1.1 request encoding and response parsing (httparse for the head; our own body framing).
//!
//! Everything here is pure and synchronous so the parser edge cases can be unit-tested without
//! sockets; the prober's exchange drives it with bytes read from the connection. Body framing
//! and decoding live in `body`.

mod body;

pub use self::body::{contains, keep_bounded, BodyDecoder, Framing};

use crate::model::{Method, ServiceSpec, Target};

/// Most response headers we look at; more is treated as a protocol error (a probe target that
/// sends 100+ headers is broken or hostile).
pub const MAX_HEADERS: usize = 100;

/// A response the peer got wrong (maps to `ProbeError::Protocol`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// Value of the `User-Agent` header we send unless the service overrides it.
pub const USER_AGENT: &str = concat!("ringwatch/", env!("CARGO_PKG_VERSION"));

/// What a request is made of: a service's own request, or a redirect hop's (another target,
/// maybe another method, some headers left out).
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    /// Request method.
    pub method: Method,
    /// Where it goes: the request target and the `Host` header.
    pub target: &'a Target,
    /// The service's extra headers, in order.
    pub headers: &'a [(String, String)],
    /// Names among `headers` not to send (credentials on a redirect to another origin).
    pub omit: fn(&str) -> bool,
    /// Request body (POST).
    pub body: Option<&'a [u8]>,
}

impl<'a> RequestParts<'a> {
    /// The request `spec` describes, every header included.
    pub fn of(spec: &'a ServiceSpec) -> Self {
        RequestParts {
            method: spec.method,
            target: &spec.target,
            headers: &spec.headers,
            omit: |_| false,
            body: spec.body.as_deref(),
        }
    }
}

/// Encodes the request for `spec` into `out` (cleared first) so the caller can reuse one buffer.
pub fn encode_request(spec: &ServiceSpec, out: &mut Vec<u8>) {
    encode(&RequestParts::of(spec), out);
}

/// Encodes `parts` into `out` (cleared first).
pub fn encode(parts: &RequestParts<'_>, out: &mut Vec<u8>) {
    out.clear();
    let sent = || parts.headers.iter().filter(|(n, _)| !(parts.omit)(n));
    let has = |name: &str| sent().any(|(n, _)| n.eq_ignore_ascii_case(name));
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !has("host") {
        push_host(out, parts.target);
    }
    if !has("user-agent") {
        push_header(out, "User-Agent", USER_AGENT);
    }
    if !has("accept") {
        push_header(out, "Accept", "*/*");
    }
    if !has("connection") {
        push_header(out, "Connection", "keep-alive");
    }
    for (name, value) in sent() {
        // Framing is ours to decide: a user-supplied length could desynchronise the connection.
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        // Header injection guard: config validation should already refuse these.
        if name
            .bytes()
            .chain(value.bytes())
            .any(|b| b == b'\r' || b == b'\n')
        {
            continue;
        }
        push_header(out, name, value);
    }
    match (parts.body, parts.method) {
        (Some(body), _) => {
            let mut n = itoa::Buffer::new();
            push_header(out, "Content-Length", n.format(body.len()));
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
        (None, Method::Post) => {
            push_header(out, "Content-Length", "0");
            out.extend_from_slice(b"\r\n");
        }
        (None, _) => out.extend_from_slice(b"\r\n"),
    }
}

/// The `Host` header: the same value as `Target::host_header`, written in place to avoid a
/// `String`.
fn push_host(out: &mut Vec<u8>, t: &Target) {
    out.extend_from_slice(b"Host: ");
    if t.host.contains(':') {
        out.push(b'[');
        out.extend_from_slice(t.host.as_bytes());
        out.push(b']');
    } else {
        out.extend_from_slice(t.host.as_bytes());
    }
    if t.port != t.scheme.default_port() {
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(t.port).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// What the response head says about the status and how the body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// `Content-Length`, when present and valid.
    pub content_length: Option<u64>,
    /// True when the last transfer coding is `chunked`.
    pub chunked: bool,
    /// A `Transfer-Encoding` other than chunked: the body runs until close.
    pub other_encoding: bool,
    /// The connection must not be reused after this response.
    pub close: bool,
    /// `Location` of a redirect (301, 302, 303, 307, 308), as sent but with bytes a URL cannot
    /// hold percent-encoded; None for any other status.
    pub location: Option<Box<str>>,
}

/// Parses a response head from the start of `buf`. `Ok(None)` means "need more bytes";
/// `Ok(Some((head, n)))` consumed `n` bytes. Heads larger than `max` are refused.
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    // Left uninitialised: zeroing 100 header slots (3.2 KB) per response cost more than parsing
    // a typical head.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let n = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max {
                return Err(HttpError(format!("response head exceeds {max} bytes")));
            }
            return Ok(None);
        }
        Err(e) => return Err(HttpError(format!("malformed response head: {e}"))),
    };
    if n > max {
        return Err(HttpError(format!("response head exceeds {max} bytes")));
    }
    let status = resp
        .code
        .ok_or_else(|| HttpError("missing status code".into()))?;
    let minor = resp.version.unwrap_or(1);
    let mut head = scan_headers(resp.headers, status, minor)?;
    // A second look at the headers, only for a redirect: the common response pays nothing.
    if is_redirect(status) {
        head.location = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("location"))
            .map(|h| url_bytes(h.value.trim_ascii()))
            .filter(|l| !l.is_empty());
    }
    Ok(Some((head, n)))
}

/// The statuses that redirect to their `Location` (RFC 9110 15.4); 300 and 304 do not.
pub fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// `value` with spaces, controls and non-ASCII bytes percent-encoded (as browsers do), so a
/// Location a server wrote carelessly still makes a valid request line.
fn url_bytes(value: &[u8]) -> Box<str> {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if (0x21..0x7f).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out.into_boxed_str()
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The framing and connection headers of a response head (the others are ignored).
fn scan_headers(
    headers: &[httparse::Header<'_>],
    status: u16,
    minor: u8,
) -> Result<ResponseHead, HttpError> {
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut other_encoding = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| HttpError("invalid Content-Length".into()))?;
            if content_length.is_some_and(|old| old != v) {
                return Err(HttpError("conflicting Content-Length headers".into()));
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h
                .value
                .split(|b| *b == b',')
                .map(|t| t.trim_ascii())
                .rfind(|t| !t.is_empty());
            match last {
                Some(t) if t.eq_ignore_ascii_case(b"chunked") => {
                    chunked = true;
                    other_encoding = false;
                }
                Some(_) => {
                    chunked = false;
                    other_encoding = true;
                }
                None => {}
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',').map(|t| t.trim_ascii()) {
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        }
    }
    let close = if minor == 0 {
        conn_close || !conn_keep_alive
    } else {
        conn_close
    };
    // Both framings at once is a smuggling vector: honour TE but never reuse the connection.
    let close = close || ((chunked || other_encoding) && content_length.is_some());
    Ok(ResponseHead {
        status,
        content_length,
        chunked,
        other_encoding,
        close,
        location: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec(host: &str, port: u16, scheme: crate::model::Scheme) -> ServiceSpec {
        use crate::model::*;
        use std::time::Duration;
        let d = Duration::from_secs(1);
        ServiceSpec {
            id: ServiceId::from_name("t"),
            name: "t".into(),
            target: Target {
                scheme,
                host: host.into(),
                port,
                path: "/p".into(),
            },
            url: String::new(),
            method: Method::Get,
            headers: Vec::new(),
            body: None,
            interval: d,
            timeout: d,
            phase_timeouts: PhaseTimeouts {
                connect: d,
                tls: d,
                head: d,
            },
            jitter: 0.0,
            tags: Vec::new(),
            expect: Expect::default(),
            failure_threshold: std::num::NonZeroU32::MIN,
            success_threshold: std::num::NonZeroU32::MIN,
            paused: false,
            tls: None,
            max_body_bytes: 10,
            follow_redirects: 0,
            source: Source::Config,
        }
    }

    #[test]
    fn request_encoding() {
        use crate::model::Scheme;
        let mut out = b"stale".to_vec();
        let s = spec("::1", 8443, Scheme::Https);
        encode_request(&s, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("GET /p HTTP/1.1\r\nHost: [::1]:8443\r\n"),
            "{text}"
        );
        assert!(text.ends_with("Connection: keep-alive\r\n\r\n"), "{text}");
        assert_eq!(s.target.host_header(), "[::1]:8443");

        let mut s = spec("example.com", 80, Scheme::Http);
        s.method = Method::Post;
        s.headers = vec![
            ("host".into(), "virtual.example".into()),
            ("Content-Length".into(), "999".into()),
            ("X-Evil".into(), "a\r\nInjected: 1".into()),
        ];
        encode_request(&s, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("host: virtual.example\r\n"), "{text}");
        assert!(!text.contains("Host: example.com"), "{text}");
        assert!(
            !text.contains("999") && !text.contains("Injected"),
            "{text}"
        );
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    }

    #[test]
    fn head_basic_and_keep_alive_rules() {
        let (h, n) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.close, n),
            (200, Some(5), false, 38)
        );
        let (h, _) = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert!(h.close, "HTTP/1.0 defaults to close");
        let (h, _) = parse_head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert!(!h.close);
        let (h, _) = parse_head(b"HTTP/1.1 200 OK\r\nConnection: foo, close\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert!(h.close);
    }

    #[test]
    fn head_partial_oversized_and_malformed() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nX: y", 1024), Ok(None));
        assert_eq!(parse_head(b"HTT", 1024), Ok(None));
        let big = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; 200]].concat();
        assert!(parse_head(&big, 64).is_err());
        let mut complete_big = big.clone();
        complete_big.extend_from_slice(b"\r\n\r\n");
        assert!(parse_head(&complete_big, 64).is_err());
        assert!(parse_head(b"garbage\r\n\r\n", 1024).is_err());
        assert!(parse_head(b"HTTP/1.1 2x0 OK\r\n\r\n", 1024).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 1024).is_err());
        assert!(parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            1024
        )
        .is_err());
        let many: Vec<u8> = std::iter::once(b"HTTP/1.1 200 OK\r\n".to_vec())
            .chain((0..MAX_HEADERS + 1).map(|i| format!("X{i}: v\r\n").into_bytes()))
            .chain(std::iter::once(b"\r\n".to_vec()))
            .flatten()
            .collect();
        assert!(parse_head(&many, 1 << 20).is_err());
    }

    #[test]
    fn redirects_keep_their_location_and_nothing_else_does() {
        let head = |s: &[u8]| parse_head(s, 1024).unwrap().unwrap().0.location;
        assert_eq!(
            head(b"HTTP/1.1 301 Moved\r\nLocation:  /a b\xff?q=1 \r\nContent-Length: 0\r\n\r\n")
                .as_deref(),
            Some("/a%20b%FF?q=1")
        );
        assert_eq!(
            head(b"HTTP/1.1 308 Permanent\r\nlocation: https://x/\r\n\r\n").as_deref(),
            Some("https://x/")
        );
        for not_followed in [
            b"HTTP/1.1 200 OK\r\nLocation: /a\r\n\r\n".as_slice(),
            b"HTTP/1.1 300 Multiple Choices\r\nLocation: /a\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nLocation: /a\r\n\r\n",
            b"HTTP/1.1 302 Found\r\nLocation: \r\n\r\n",
            b"HTTP/1.1 302 Found\r\n\r\n",
        ] {
            assert_eq!(
                head(not_followed),
                None,
                "{}",
                String::from_utf8_lossy(not_followed)
            );
        }
    }

    #[test]
    fn framing_rules() {
        let head = |s: &[u8]| parse_head(s, 1024).unwrap().unwrap().0;
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(Framing::of(&h, Method::Get), Framing::Length(3));
        assert_eq!(Framing::of(&h, Method::Head), Framing::Empty);
        let h = head(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(Framing::of(&h, Method::Get), Framing::Empty);
        let h = head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(Framing::of(&h, Method::Get), Framing::Chunked);
        assert!(h.close, "TE + CL must not be reused");
        let h = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(Framing::of(&h, Method::Get), Framing::UntilClose);
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(Framing::of(&h, Method::Get), Framing::UntilClose);
    }

    #[test]
    fn random_peer_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: &[u8] = b"0123456789abcdefABCDEF;\r\n :HTTP/1.chunked";
        for _ in 0..5000 {
            let len = rng.usize(0..200);
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.bool() {
                        alphabet[rng.usize(..alphabet.len())]
                    } else {
                        rng.u8(..)
                    }
                })
                .collect();
            let _ = parse_head(&input, 64);
            for framing in [Framing::Chunked, Framing::Length(50), Framing::UntilClose] {
                let mut d = BodyDecoder::new(framing, 16);
                let split = rng.usize(..=input.len());
                let mut n = 0;
                if let Ok(used) = d.feed(&input[..split], &mut |b| n += b.len()) {
                    assert!(used <= split);
                    let _ = d.feed(&input[split..], &mut |b| n += b.len());
                }
                assert!(n <= input.len());
                let _ = d.eof();
            }
        }
    }
}
