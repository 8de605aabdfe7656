//! Responses and their HTTP/1.1 wire form.

use std::io::Write as _;

use bytes::Bytes;

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
    encode_head(resp, close, out);
    if resp.status != 101 {
        out.extend_from_slice(&resp.body);
    }
}

/// Appends the status line and headers of `resp` to `out` without the body: the answer to a
/// HEAD, whose Content-Length is still the body's.
pub(super) fn encode_head(resp: &Response, close: bool, out: &mut Vec<u8>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_head_answer_keeps_the_length_and_drops_the_body() {
        let mut out = Vec::new();
        encode_head(&Response::text(200, "ok\n"), false, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\r\n"
        );
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
