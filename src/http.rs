//! The shards' HTTP/1.1 server: httparse request heads, Content-Length bodies, keep-alive,
//! pipelining, and the limits that keep one bad client from hurting the others.
//!
//! Routing is not here: a `Handler` (the shard) turns a `Request` into a `Response`. Later
//! protocols (the REST API, the WebSocket upgrade) plug in through the same trait.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::time::Instant;

use crate::config::HttpLimits;

/// Why the HTTP server refused or closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpReject {
    /// Per-shard connection limit reached at accept.
    ConnectionLimit,
    /// Request head larger than the limit.
    HeaderTooLarge,
    /// Request head not complete within the header timeout.
    HeaderTimeout,
    /// Request body larger than the limit.
    BodyTooLarge,
    /// Unparseable request.
    Malformed,
    /// TLS handshake failed or timed out.
    TlsHandshake,
}

impl HttpReject {
    /// Every reason, in export order.
    pub const ALL: [HttpReject; 6] = [
        HttpReject::ConnectionLimit,
        HttpReject::HeaderTooLarge,
        HttpReject::HeaderTimeout,
        HttpReject::BodyTooLarge,
        HttpReject::Malformed,
        HttpReject::TlsHandshake,
    ];

    /// Label value in /metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpReject::ConnectionLimit => "connection_limit",
            HttpReject::HeaderTooLarge => "header_too_large",
            HttpReject::HeaderTimeout => "header_timeout",
            HttpReject::BodyTooLarge => "body_too_large",
            HttpReject::Malformed => "malformed",
            HttpReject::TlsHandshake => "tls_handshake",
        }
    }
}

/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// A parsed request; the body is complete.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method token, e.g. `GET`.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string (without `?`), possibly empty.
    pub query: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Request body (empty when none).
    pub body: Bytes,
}

impl Request {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response to write.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The design's error shape: `{"error":{"code","message"}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({"error": {"code": code, "message": message}});
        Response::json(status, body.to_string())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the server needs from its owner: routing and counters.
pub trait Handler {
    /// Answers one request.
    fn handle(&self, req: Request) -> impl Future<Output = Response>;
    /// Counts a served request.
    fn on_request(&self);
    /// Counts a rejected request or connection.
    fn on_reject(&self, why: HttpReject);
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends the wire form of `resp` to `out`.
pub fn encode_response(resp: &Response, close: bool, out: &mut Vec<u8>) {
    use std::io::Write as _;
    if resp.status == 101 {
        // A 1xx response has no body and must not carry Content-Length (RFC 9110 8.6).
        let _ = write!(out, "HTTP/1.1 101 {}\r\n", reason(101));
        for (k, v) in &resp.headers {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        return;
    }
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&resp.body);
}

/// Outcome of trying to parse one request from the front of a buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A whole request of `len` bytes; `close` when the client asked to close.
    Complete {
        /// The request.
        req: Request,
        /// Bytes consumed.
        len: usize,
        /// The connection must close after the response.
        close: bool,
    },
    /// More bytes are needed (head or body incomplete).
    Partial,
    /// The request is unacceptable; answer with this and close.
    Reject(HttpReject, Response),
}

/// Parses one request from `buf` under `limits`.
pub fn parse_request(buf: &[u8], limits: &HttpLimits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_header_bytes {
                return too_large_head(limits);
            }
            return Parsed::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(
                HttpReject::HeaderTooLarge,
                Response::error(
                    431,
                    "header_too_large",
                    &format!("more than {MAX_HEADERS} headers"),
                ),
            )
        }
        Err(e) => {
            return Parsed::Reject(
                HttpReject::Malformed,
                Response::error(400, "bad_request", &format!("malformed request: {e}")),
            )
        }
    };
    if head_len > limits.max_header_bytes {
        return too_large_head(limits);
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let http10 = req.version == Some(0);
    let mut close = http10;
    let mut content_length: usize = 0;
    let mut out_headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = match std::str::from_utf8(h.value) {
            Ok(v) => v.trim().to_string(),
            Err(_) => {
                return Parsed::Reject(
                    HttpReject::Malformed,
                    Response::error(
                        400,
                        "bad_request",
                        &format!("header {} is not valid UTF-8", h.name),
                    ),
                )
            }
        };
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => content_length = n,
                Err(_) => {
                    return Parsed::Reject(
                        HttpReject::Malformed,
                        Response::error(
                            400,
                            "bad_request",
                            &format!("invalid Content-Length {value:?}"),
                        ),
                    )
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Reject(
                HttpReject::Malformed,
                Response::error(
                    501,
                    "not_implemented",
                    "chunked request bodies are not supported; send Content-Length",
                ),
            );
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
        out_headers.push((h.name.to_string(), value));
    }
    if content_length > limits.max_body_bytes {
        return Parsed::Reject(
            HttpReject::BodyTooLarge,
            Response::error(
                413,
                "body_too_large",
                &format!(
                    "body of {content_length} bytes exceeds the limit of {} bytes",
                    limits.max_body_bytes
                ),
            ),
        );
    }
    let total = head_len + content_length;
    if buf.len() < total {
        return Parsed::Partial;
    }
    Parsed::Complete {
        req: Request {
            method,
            path,
            query,
            headers: out_headers,
            body: Bytes::copy_from_slice(&buf[head_len..total]),
        },
        len: total,
        close,
    }
}

fn too_large_head(limits: &HttpLimits) -> Parsed {
    Parsed::Reject(
        HttpReject::HeaderTooLarge,
        Response::error(
            431,
            "header_too_large",
            &format!(
                "request head exceeds the limit of {} bytes",
                limits.max_header_bytes
            ),
        ),
    )
}

/// Serves one connection (plain TCP or TLS) until the client closes, a limit is hit, or an
/// error occurs.
///
/// Pipelined requests are answered in order, and the responses to every request found in one
/// read go out in one write.
pub async fn serve<S, H>(stream: S, handler: &H, limits: HttpLimits)
where
    S: AsyncReadRent + AsyncWriteRent,
    H: Handler,
{
    // A connection whose owner does not take upgrades is closed after the 101.
    let _ = serve_upgradable(stream, handler, limits).await;
}

/// A connection the handler switched to another protocol with a `101` response.
pub struct Upgraded<S> {
    /// The stream, after the 101 was written.
    pub stream: S,
    /// Bytes the client sent after the upgrade request (already read from the stream).
    pub leftover: Vec<u8>,
}

/// Like `serve`, but when the handler answers `101 Switching Protocols` the 101 is written and
/// the stream is handed back with any bytes read past the request, for the new protocol.
pub async fn serve_upgradable<S, H>(
    mut stream: S,
    handler: &H,
    limits: HttpLimits,
) -> Option<Upgraded<S>>
where
    S: AsyncReadRent + AsyncWriteRent,
    H: Handler,
{
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    // When the request now being received started; None while idle between requests.
    let mut request_started: Option<Instant> = None;
    loop {
        let mut consumed = 0;
        let mut close = false;
        let mut upgrade = false;
        out.clear();
        loop {
            match parse_request(&buf[consumed..], &limits) {
                Parsed::Complete { req, len, close: c } => {
                    consumed += len;
                    handler.on_request();
                    let resp = handler.handle(req).await;
                    close = c;
                    upgrade = resp.status == 101;
                    encode_response(&resp, close && !upgrade, &mut out);
                    if close || upgrade {
                        break;
                    }
                }
                Parsed::Partial => break,
                Parsed::Reject(why, resp) => {
                    handler.on_reject(why);
                    encode_response(&resp, true, &mut out);
                    close = true;
                    break;
                }
            }
        }
        buf.drain(..consumed);
        if !out.is_empty() {
            let (res, o) = stream.write_all(std::mem::take(&mut out)).await;
            out = o;
            if res.is_err() {
                return None;
            }
        }
        if upgrade {
            return Some(Upgraded {
                stream,
                leftover: buf,
            });
        }
        if close {
            return None;
        }
        request_started = if buf.is_empty() {
            None
        } else {
            request_started.or_else(|| Some(Instant::now()))
        };
        let wait = match request_started {
            None => limits.idle_timeout,
            Some(t) => limits.header_timeout.saturating_sub(t.elapsed()),
        };
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        // Read into the spare capacity after what is buffered: monoio reads into a `Vec` from
        // index 0, which would overwrite the start of a request split across reads.
        let filled = buf.len();
        let read = monoio::time::timeout(
            wait.max(Duration::from_millis(1)),
            stream.read(buf.slice_mut(filled..)),
        );
        match read.await {
            Ok((Ok(0), _)) | Ok((Err(_), _)) => return None,
            Ok((Ok(_), b)) => {
                buf = b.into_inner();
                if request_started.is_none() {
                    request_started = Some(Instant::now());
                }
            }
            Err(_elapsed) => {
                if request_started.is_some() {
                    handler.on_reject(HttpReject::HeaderTimeout);
                    let resp = Response::error(
                        408,
                        "request_timeout",
                        "request not received within the header timeout",
                    );
                    let mut o = Vec::new();
                    encode_response(&resp, true, &mut o);
                    let _ = stream.write_all(o).await;
                }
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            max_header_bytes: 256,
            max_body_bytes: 16,
            ..HttpLimits::default()
        }
    }

    #[test]
    fn parses_a_request_with_query_and_body() {
        let raw = b"POST /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET";
        match parse_request(raw, &limits()) {
            Parsed::Complete { req, len, close } => {
                assert_eq!(req.method, "POST");
                assert_eq!(req.path, "/a/b");
                assert_eq!(req.query, "x=1&y=2");
                assert_eq!(&req.body[..], b"abc");
                assert_eq!(req.header("host"), Some("h"));
                assert_eq!(len, raw.len() - 3);
                assert!(!close);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_head_and_partial_body_wait_for_more() {
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost:", &limits()),
            Parsed::Partial
        ));
        assert!(matches!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", &limits()),
            Parsed::Partial
        ));
    }

    #[test]
    fn limits_and_garbage_are_rejected_with_reasons() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(300));
        assert!(matches!(
            parse_request(big.as_bytes(), &limits()),
            Parsed::Reject(HttpReject::HeaderTooLarge, ref r) if r.status == 431
        ));
        assert!(matches!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n", &limits()),
            Parsed::Reject(HttpReject::BodyTooLarge, ref r) if r.status == 413
        ));
        assert!(matches!(
            parse_request(b"GE T / HTTP/1.1\r\n\r\n", &limits()),
            Parsed::Reject(HttpReject::Malformed, ref r) if r.status == 400
        ));
        assert!(matches!(
            parse_request(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", &limits()),
            Parsed::Reject(HttpReject::Malformed, _)
        ));
    }

    #[test]
    fn http10_and_connection_close_close() {
        for raw in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            &b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        ] {
            assert!(matches!(
                parse_request(raw, &limits()),
                Parsed::Complete { close: true, .. }
            ));
        }
    }

    #[test]
    fn encodes_status_line_length_and_close() {
        let mut out = Vec::new();
        encode_response(
            &Response::text(404, "nope").with_header("Allow", "GET"),
            true,
            &mut out,
        );
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Content-Length: 4\r\n"));
        assert!(s.contains("Allow: GET\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\nnope"));
    }

    #[test]
    fn switching_protocols_has_no_length_or_type() {
        let mut out = Vec::new();
        encode_response(
            &Response::text(101, "").with_header("Upgrade", "websocket"),
            false,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        );
    }
}
