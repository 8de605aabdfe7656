//! Requests: the parsed form, and the parser that takes one request off the front of a
//! connection's buffer.
//!
//! The parser is a pure function of the bytes received so far, so it is unit- and
//! property-tested without a socket, and a request split across reads parses the same as one
//! that arrived whole.

use bytes::Bytes;

use super::reject::HttpReject;
use super::response::Response;
use crate::config::HttpLimits;

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

/// Why a request was refused before it reached the handler; every case closes the connection,
/// since the end of the refused request in the byte stream is unknown or untrusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The head is larger than `server.limits.max_header_bytes`.
    #[error("request head exceeds the limit of {limit} bytes")]
    HeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More headers than the parser has room for.
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    /// Not HTTP/1.x syntax.
    #[error("malformed request: {0}")]
    Malformed(httparse::Error),
    /// A header value that is not UTF-8.
    #[error("header {name} is not valid UTF-8")]
    NotUtf8 {
        /// The header's name.
        name: String,
    },
    /// A `Content-Length` that is not a decimal number (a sign, a space inside, a non-digit,
    /// an empty list member) or does not fit 64 bits.
    #[error("invalid Content-Length {value:?}")]
    InvalidContentLength {
        /// The value as sent.
        value: String,
    },
    /// Two `Content-Length` values that differ: the body's end is ambiguous, the signature
    /// of request smuggling (RFC 9112 6.3).
    #[error("conflicting Content-Length values {first} and {second}")]
    ConflictingContentLength {
        /// The first value.
        first: u64,
        /// The value that differs from it.
        second: u64,
    },
    /// `Transfer-Encoding` and `Content-Length` together: ambiguous framing (RFC 9112 6.1).
    #[error("Transfer-Encoding and Content-Length together are ambiguous")]
    TransferEncodingWithContentLength,
    /// A request body in a transfer coding (chunked), which this server does not decode.
    #[error("chunked request bodies are not supported; send Content-Length")]
    TransferEncoding,
    /// A `Content-Length` over `server.limits.max_body_bytes`.
    #[error("body of {len} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        limit: usize,
    },
}

impl RequestError {
    /// The reason counted in `ringwatch_http_rejected_total`.
    pub fn reject(&self) -> HttpReject {
        match self {
            RequestError::HeadTooLarge { .. } | RequestError::TooManyHeaders => {
                HttpReject::HeaderTooLarge
            }
            RequestError::BodyTooLarge { .. } => HttpReject::BodyTooLarge,
            _ => HttpReject::Malformed,
        }
    }

    /// The response status.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::HeadTooLarge { .. } | RequestError::TooManyHeaders => 431,
            RequestError::BodyTooLarge { .. } => 413,
            RequestError::TransferEncoding => 501,
            _ => 400,
        }
    }

    /// The error response, in the API's error shape.
    pub fn response(&self) -> Response {
        let code = match self.status() {
            431 => "header_too_large",
            413 => "body_too_large",
            501 => "not_implemented",
            _ => "bad_request",
        };
        Response::error(self.status(), code, &self.to_string())
    }
}

/// Parses one request from `buf` under `limits`.
pub fn parse_request(buf: &[u8], limits: &HttpLimits) -> Parsed {
    match parse(buf, limits) {
        Ok(Some((req, len, close))) => Parsed::Complete { req, len, close },
        Ok(None) => Parsed::Partial,
        Err(e) => Parsed::Reject(e.reject(), e.response()),
    }
}

/// A request head: everything before the body.
struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    /// Bytes of the head, including the blank line.
    len: usize,
    framing: Framing,
}

/// What the headers say about the body and the connection.
#[derive(Debug, Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    close: bool,
}

/// The request, its length in bytes and whether to close after it; `None` while incomplete.
fn parse(buf: &[u8], limits: &HttpLimits) -> Result<Option<(Request, usize, bool)>, RequestError> {
    let Some(head) = parse_head(buf, limits)? else {
        return Ok(None);
    };
    let body_len = body_length(&head.framing, limits)?;
    let total = head.len + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let req = Request {
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        body: Bytes::copy_from_slice(&buf[head.len..total]),
    };
    Ok(Some((req, total, head.framing.close)))
}

/// Parses the head; `None` while it is incomplete and still within the size limit.
fn parse_head(buf: &[u8], limits: &HttpLimits) -> Result<Option<Head>, RequestError> {
    let too_large = RequestError::HeadTooLarge {
        limit: limits.max_header_bytes,
    };
    let mut raw_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw_headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => {
            return Err(too_large)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(e) => return Err(RequestError::Malformed(e)),
    };
    if len > limits.max_header_bytes {
        return Err(too_large);
    }
    // HTTP/1.0 closes unless the client asks for keep-alive.
    let (headers, framing) = read_headers(req.headers, req.version == Some(0))?;
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Head {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        len,
        framing,
    }))
}

/// Copies the headers out of the parse buffer and reads the framing ones.
fn read_headers(
    raw: &[httparse::Header<'_>],
    close_by_default: bool,
) -> Result<(Vec<(String, String)>, Framing), RequestError> {
    let mut framing = Framing {
        close: close_by_default,
        ..Framing::default()
    };
    let mut headers = Vec::with_capacity(raw.len());
    for h in raw {
        let value = std::str::from_utf8(h.value).map_err(|_| RequestError::NotUtf8 {
            name: h.name.to_string(),
        })?;
        // Framing sees the value before the lenient trim: `str::trim` also drops Unicode
        // spaces, which would let "5\u{a0}" pass as a length another parser reads differently.
        framing.note(h.name, value)?;
        headers.push((h.name.to_string(), value.trim().to_string()));
    }
    Ok((headers, framing))
}

impl Framing {
    /// Takes in one header.
    fn note(&mut self, name: &str, value: &str) -> Result<(), RequestError> {
        if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(value)?;
            match self.content_length {
                Some(first) if first != n => {
                    return Err(RequestError::ConflictingContentLength { first, second: n })
                }
                _ => self.content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                self.close = true;
            } else if v.contains("keep-alive") {
                self.close = false;
            }
        }
        Ok(())
    }
}

/// Parses one `Content-Length` field value: `1*DIGIT` (RFC 9112 6.3), nothing else: no sign,
/// no inner space, no hex, no empty value.
///
/// A comma list of one number repeated (`5, 5`) is accepted as that number, as RFC 9110 8.6
/// allows: proxies that merge duplicate header lines produce it, and its framing is
/// unambiguous. A list whose members differ is a conflict, like two lines that differ.
fn content_length(value: &str) -> Result<u64, RequestError> {
    let invalid = || RequestError::InvalidContentLength {
        value: value.to_string(),
    };
    let mut len = None;
    for member in value.split(',') {
        let digits = member.trim_matches([' ', '\t']);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        // Only overflow is left to fail here.
        let n = digits.parse::<u64>().map_err(|_| invalid())?;
        match len {
            Some(first) if first != n => {
                return Err(RequestError::ConflictingContentLength { first, second: n })
            }
            _ => len = Some(n),
        }
    }
    len.ok_or_else(invalid)
}

/// The body's length, once the framing headers are known to be acceptable.
fn body_length(framing: &Framing, limits: &HttpLimits) -> Result<usize, RequestError> {
    // A request with Transfer-Encoding is never read by its Content-Length (RFC 9112 6.1):
    // a front end that honours the coding would see a different request boundary.
    match (framing.transfer_encoding, framing.content_length) {
        (true, Some(_)) => return Err(RequestError::TransferEncodingWithContentLength),
        (true, None) => return Err(RequestError::TransferEncoding),
        (false, _) => {}
    }
    let len = framing.content_length.unwrap_or(0);
    match usize::try_from(len) {
        Ok(n) if n <= limits.max_body_bytes => Ok(n),
        _ => Err(RequestError::BodyTooLarge {
            len,
            limit: limits.max_body_bytes,
        }),
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

    fn with_lengths(lengths: &[&str], rest: &str) -> Vec<u8> {
        let mut raw = String::from("POST / HTTP/1.1\r\nHost: h\r\n");
        for v in lengths {
            raw.push_str(&format!("Content-Length: {v}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(rest);
        raw.into_bytes()
    }

    fn rejected_with(raw: &[u8]) -> Option<(HttpReject, u16)> {
        match parse_request(raw, &limits()) {
            Parsed::Reject(why, r) => Some((why, r.status)),
            _ => None,
        }
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        // `0` then `41`: a server taking the first sees a second request inside the body.
        let smuggle = "GET /admins HTTP/1.1\r\nHost: h\r\nX-A: b\r\n\r\n";
        assert_eq!(smuggle.len(), 41);
        let bad = [
            with_lengths(&["0", "41"], smuggle),
            with_lengths(&["41", "0"], smuggle),
            with_lengths(&["5, 6"], "abcdef"),
            with_lengths(&["5", "5, 6"], "abcdef"),
        ];
        for raw in bad {
            assert_eq!(
                rejected_with(&raw),
                Some((HttpReject::Malformed, 400)),
                "{}",
                String::from_utf8_lossy(&raw)
            );
        }
    }

    #[test]
    fn content_lengths_that_are_not_plain_digits_are_rejected() {
        let bad = [
            "+3",
            " 3x",
            "-1",
            "",
            "3 3",
            "0x10",
            "1_0",
            "3.0",
            "5,",
            ",5",
            "5,,5",
            "\u{a0}5",
            "18446744073709551616",
            "99999999999999999999999",
        ];
        for v in bad {
            assert_eq!(
                rejected_with(&with_lengths(&[v], "abc")),
                Some((HttpReject::Malformed, 400)),
                "{v:?}"
            );
        }
        // The largest u64 is a number, only too large a body.
        assert_eq!(
            rejected_with(&with_lengths(&["18446744073709551615"], "")),
            Some((HttpReject::BodyTooLarge, 413))
        );
    }

    #[test]
    fn identical_repeated_content_lengths_are_one_length() {
        for lengths in [&["5", "5"][..], &["5, 5"], &["5,5", "05"], &["\t5 "]] {
            match parse_request(&with_lengths(lengths, "abcdeGET"), &limits()) {
                Parsed::Complete { req, .. } => assert_eq!(&req.body[..], b"abcde"),
                other => panic!("{lengths:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn transfer_encoding_is_refused_and_never_read_as_content_length() {
        let te = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(rejected_with(te), Some((HttpReject::Malformed, 501)));
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"[..],
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc"[..],
        ] {
            assert_eq!(rejected_with(raw), Some((HttpReject::Malformed, 400)));
        }
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
}
