//! Path scripting and HTTP/1.1 framing for the target fleet.
//!
//! The request path alone decides how the fleet answers, so one fleet process covers every
//! probe scenario and a generated config only has to pick URLs. Everything here is pure
//! (no I/O) so it can be unit-tested and reused by other harness pieces.

/// Longest `/delay/MS` accepted; longer delays are a typo rather than a scenario.
pub const MAX_DELAY_MS: u64 = 600_000;
/// Largest `/bytes/N` body accepted (1 GiB): big enough for throughput tests, small enough
/// that a typo cannot keep a connection busy for hours.
pub const MAX_BODY_BYTES: u64 = 1 << 30;
/// Largest request head the fleet buffers before answering 431 and closing; bounds the
/// per-connection buffer.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers parsed per request; probes send a handful.
const MAX_HEADERS: usize = 32;

/// The behaviour a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/ok`: 200 with body `ok`.
    Ok,
    /// `/status/NNN`: that status (200..=599).
    Status(u16),
    /// `/delay/MS`: 200 after MS milliseconds.
    Delay(u64),
    /// `/hang`: read the request, never answer.
    Hang,
    /// `/flap/PERIOD_MS`: 200 for one period, 500 for the next, by wall clock.
    Flap(u64),
    /// `/close`: 200 with `Connection: close`, then close.
    Close,
    /// `/chunked`: 200 with a chunked body.
    Chunked,
    /// `/bytes/N`: 200 with an N-byte body.
    Bytes(u64),
    /// `/reset`: start a response, then reset the connection (RST).
    Reset,
    /// Any other path: 404.
    NotFound,
    /// A known prefix with a bad argument (e.g. `/status/abc`): 400.
    BadArg,
}

/// Maps a request target (path plus optional query) to its [`Route`].
///
/// The query string is ignored so generated configs can add `?i=N` to make every service
/// URL distinct while sharing one behaviour.
pub fn parse_route(target: &str) -> Route {
    let path = match target.find(['?', '#']) {
        Some(i) => &target[..i],
        None => target,
    };
    match path {
        "/ok" | "/" => return Route::Ok,
        "/hang" => return Route::Hang,
        "/close" => return Route::Close,
        "/chunked" => return Route::Chunked,
        "/reset" => return Route::Reset,
        _ => {}
    }
    let Some((prefix, arg)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return Route::NotFound;
    };
    let n = parse_u64(arg);
    match prefix {
        "status" => match n {
            Some(c @ 200..=599) => Route::Status(c as u16),
            _ => Route::BadArg,
        },
        "delay" => match n {
            Some(ms) if ms <= MAX_DELAY_MS => Route::Delay(ms),
            _ => Route::BadArg,
        },
        "flap" => match n {
            Some(p) if p > 0 => Route::Flap(p),
            _ => Route::BadArg,
        },
        "bytes" => match n {
            Some(b) if b <= MAX_BODY_BYTES => Route::Bytes(b),
            _ => Route::BadArg,
        },
        _ => Route::NotFound,
    }
}

/// Strict decimal parse: digits only (no sign, no spaces), at most 12 of them.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Status a `/flap/PERIOD_MS` request gets at wall-clock time `now_unix_ms`.
///
/// Derived from the wall clock rather than a per-connection counter, so every probe of the
/// same URL (from any connection, any fleet thread) sees the same phase at the same moment.
pub fn flap_status(period_ms: u64, now_unix_ms: u64) -> u16 {
    if (now_unix_ms / period_ms.max(1)).is_multiple_of(2) {
        200
    } else {
        500
    }
}

/// One parsed request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What to answer.
    pub route: Route,
    /// Bytes of the head (request line plus headers plus the blank line).
    pub head_len: usize,
    /// `Content-Length` of the request body, which must be skipped before the next request.
    pub body_len: u64,
    /// The client asked to close after this response (`Connection: close`, or HTTP/1.0
    /// without keep-alive).
    pub close: bool,
    /// `HEAD` request: send the head only.
    pub head_only: bool,
}

/// Result of parsing the front of a connection's read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A full head is present.
    Complete(Request),
    /// More bytes are needed.
    Partial,
    /// The head is (or will be) longer than [`MAX_HEAD_BYTES`]: 431 and close.
    TooLarge,
    /// Not HTTP/1.x we can serve (malformed, too many headers, chunked request body): 400
    /// and close, since the framing of anything after it is unknown.
    Invalid,
}

/// Parses one request head from the front of `buf` without allocating.
///
/// Only the head is consumed; the caller skips `body_len` bytes afterwards, which keeps
/// pipelined requests correctly framed.
pub fn parse_request(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD_BYTES => return Parsed::TooLarge,
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Parsed::TooLarge,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let (Some(path), Some(version), Some(method)) = (req.path, req.version, req.method) else {
        return Parsed::Invalid;
    };
    let mut body_len = 0u64;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| parse_u64(v.trim()))
            else {
                return Parsed::Invalid;
            };
            body_len = n;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Probes never send chunked bodies; decoding them is not worth the code here.
            return Parsed::Invalid;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for tok in h.value.split(|&b| b == b',') {
                let tok = tok.trim_ascii();
                conn_close |= tok.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= tok.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let close = conn_close || (version == 0 && !conn_keep_alive);
    Parsed::Complete(Request {
        route: parse_route(path),
        head_len,
        body_len,
        close,
        head_only: method == "HEAD",
    })
}

/// Canonical reason phrase; clients ignore it, humans reading a capture do not.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// How the body of a response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: N`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No body and no length header (204 and 304 must not carry one).
    NoBody,
}

/// Appends a response head to `out` (reused per connection, so no allocation once warm).
pub fn write_head(out: &mut Vec<u8>, status: u16, framing: Framing, close: bool) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(num.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain\r\n");
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(num.format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::NoBody => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete response with a small in-memory body.
pub fn write_simple(out: &mut Vec<u8>, status: u16, body: &[u8], close: bool, head_only: bool) {
    if status == 204 || status == 304 {
        write_head(out, status, Framing::NoBody, close);
        return;
    }
    write_head(out, status, Framing::Length(body.len() as u64), close);
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// The `/ok` response on a keep-alive connection, precomputed because it is the hot path
/// of every throughput test.
pub const OK_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

/// Body of `/chunked`, already chunk-encoded: `ok` then `-chunked\n`, then the terminator.
pub const CHUNKED_BODY: &[u8] = b"2\r\nok\r\n9\r\n-chunked\n\r\n0\r\n\r\n";

/// The decoded `/chunked` body, for tests and clients that check it.
pub const CHUNKED_DECODED: &[u8] = b"ok-chunked\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route("/ok"), Route::Ok);
        assert_eq!(parse_route("/ok?i=17"), Route::Ok);
        assert_eq!(parse_route("/status/503"), Route::Status(503));
        assert_eq!(parse_route("/status/503?i=2"), Route::Status(503));
        assert_eq!(parse_route("/status/99"), Route::BadArg);
        assert_eq!(parse_route("/status/600"), Route::BadArg);
        assert_eq!(parse_route("/status/+200"), Route::BadArg);
        assert_eq!(parse_route("/delay/50"), Route::Delay(50));
        assert_eq!(parse_route("/delay/999999999"), Route::BadArg);
        assert_eq!(parse_route("/flap/30000"), Route::Flap(30000));
        assert_eq!(parse_route("/flap/0"), Route::BadArg);
        assert_eq!(parse_route("/bytes/1024"), Route::Bytes(1024));
        assert_eq!(parse_route("/bytes/"), Route::BadArg);
        assert_eq!(parse_route("/hang"), Route::Hang);
        assert_eq!(parse_route("/close"), Route::Close);
        assert_eq!(parse_route("/chunked"), Route::Chunked);
        assert_eq!(parse_route("/reset"), Route::Reset);
        assert_eq!(parse_route("/nope"), Route::NotFound);
        assert_eq!(parse_route("/nope/1"), Route::NotFound);
        assert_eq!(parse_route("*"), Route::NotFound);
    }

    #[test]
    fn flap_phases_follow_wall_clock() {
        assert_eq!(flap_status(1000, 0), 200);
        assert_eq!(flap_status(1000, 999), 200);
        assert_eq!(flap_status(1000, 1000), 500);
        assert_eq!(flap_status(1000, 2500), 200);
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let buf = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nPOST /status/503 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /close HTTP/1.1\r\nConnection: close\r\n\r\nGET /o";
        let Parsed::Complete(r1) = parse_request(buf) else {
            panic!("first")
        };
        assert_eq!(r1.route, Route::Ok);
        assert!(!r1.close);
        let rest = &buf[r1.head_len..];
        let Parsed::Complete(r2) = parse_request(rest) else {
            panic!("second")
        };
        assert_eq!(r2.route, Route::Status(503));
        assert_eq!(r2.body_len, 3);
        let rest = &rest[r2.head_len + 3..];
        let Parsed::Complete(r3) = parse_request(rest) else {
            panic!("third")
        };
        assert_eq!(r3.route, Route::Close);
        assert!(r3.close);
        assert_eq!(parse_request(&rest[r3.head_len..]), Parsed::Partial);
    }

    #[test]
    fn http10_and_bad_input() {
        let Parsed::Complete(r) = parse_request(b"HEAD /ok HTTP/1.0\r\n\r\n") else {
            panic!()
        };
        assert!(r.close && r.head_only);
        let Parsed::Complete(r) =
            parse_request(b"GET /ok HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        else {
            panic!()
        };
        assert!(!r.close);
        assert_eq!(parse_request(b"\x00\x01garbage\r\n\r\n"), Parsed::Invalid);
        let big = format!(
            "GET /ok HTTP/1.1\r\nX: {}\r\n\r\n",
            "p".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(parse_request(big.as_bytes()), Parsed::TooLarge);
        assert_eq!(
            parse_request(&big.as_bytes()[..MAX_HEAD_BYTES + 1]),
            Parsed::TooLarge
        );
        assert_eq!(
            parse_request(b"POST /ok HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Parsed::Invalid
        );
        assert_eq!(
            parse_request(b"POST /ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Invalid
        );
    }

    #[test]
    fn heads_are_well_formed() {
        let mut out = Vec::new();
        write_simple(&mut out, 200, b"ok", false, false);
        // The precomputed hot-path constant must be exactly what the writer produces.
        assert_eq!(out, OK_RESPONSE);
        out.clear();
        write_simple(&mut out, 204, b"ignored", true, false);
        assert_eq!(
            out,
            b"HTTP/1.1 204 No Content\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n"
        );
    }
}
