//! The opening handshake (RFC 6455 section 4.2), checked on the request `http::serve` parsed.
//!
//! A valid upgrade gets `101 Switching Protocols`; `http::serve` then hands the connection to
//! the WebSocket session. Anything else gets a 400 that says what was wrong, and the HTTP
//! connection carries on as HTTP.

use crate::http::{Request, Response};

/// Whether a header's comma-separated value list contains `token` (case-insensitive).
fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Checks an upgrade request; `Ok` is the 101 response, `Err` the 400 to send instead.
pub fn accept(req: &Request) -> Result<Response, Response> {
    let bad = |why: &str| Response::error(400, "bad_upgrade", why);
    if req.method != "GET" {
        return Err(bad("a WebSocket upgrade must use GET"));
    }
    if !has_token(req.header("upgrade"), "websocket") {
        return Err(bad("missing \"Upgrade: websocket\" header"));
    }
    if !has_token(req.header("connection"), "upgrade") {
        return Err(bad("missing \"Connection: Upgrade\" header"));
    }
    match req.header("sec-websocket-version") {
        Some("13") => {}
        Some(v) => {
            return Err(bad(&format!(
                "unsupported Sec-WebSocket-Version {v:?} (only 13)"
            ))
            .with_header("Sec-WebSocket-Version", "13"))
        }
        None => return Err(bad("missing Sec-WebSocket-Version header")),
    }
    let Some(key) = req.header("sec-websocket-key") else {
        return Err(bad("missing Sec-WebSocket-Key header"));
    };
    // The key must be 16 random bytes in base64: 24 characters ending in "==".
    let valid_key = key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid_key {
        return Err(bad("Sec-WebSocket-Key is not 16 bytes in base64"));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(Response::text(101, "")
        .with_header("Upgrade", "websocket")
        .with_header("Connection", "Upgrade")
        .with_header("Sec-WebSocket-Accept", accept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(method: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: "/ws".into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Bytes::new(),
        }
    }

    const GOOD: [(&str, &str); 4] = [
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn rfc_example_key_is_accepted() {
        let r = accept(&req("GET", &GOOD)).expect("101");
        assert_eq!(r.status, 101);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "Sec-WebSocket-Accept" && v == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn bad_upgrades_get_400_with_a_reason() {
        let body = |r: Response| String::from_utf8_lossy(&r.body).to_string();
        let e = accept(&req("POST", &GOOD)).expect_err("400");
        assert!(e.status == 400 && body(e).contains("GET"));
        let e = accept(&req("GET", &GOOD[..3])).expect_err("400");
        assert!(body(e).contains("Sec-WebSocket-Key"));
        let mut h = GOOD;
        h[2] = ("Sec-WebSocket-Version", "8");
        assert!(body(accept(&req("GET", &h)).expect_err("400")).contains("Version"));
        h = GOOD;
        h[3] = ("Sec-WebSocket-Key", "short");
        assert!(body(accept(&req("GET", &h)).expect_err("400")).contains("base64"));
        h = GOOD;
        h[0] = ("Upgrade", "h2c");
        assert!(body(accept(&req("GET", &h)).expect_err("400")).contains("Upgrade"));
    }
}
