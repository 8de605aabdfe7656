//! Hand-rolled parser for probe URLs: `http(s)://host[:port][/path][?query]`.
//!
//! The accepted grammar is deliberately small (no userinfo, no fragment, no IDNA), so a
//! dedicated URL crate would add weight without catching anything we do not already reject.

use std::net::Ipv6Addr;

use crate::model::{Scheme, Target};

/// Parses a probe URL into a `Target`; the error says what is wrong and what is accepted.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let fail = |why: &str| Err(format!("invalid URL \"{url}\": {why}"));
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return fail("contains spaces or control characters");
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
        Some((s, _)) => {
            return fail(&format!(
                "scheme \"{s}\" is not supported (use http or https)"
            ))
        }
        None => return fail("expected http://host[:port]/path or https://..."),
    };
    if rest.contains('#') {
        return fail("fragments (#...) are not sent to servers; remove them");
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if authority.contains('@') {
        return fail("credentials in the URL (user@host) are not supported; use a header");
    }
    let (host, port) =
        split_host_port(authority).map_err(|why| format!("invalid URL \"{url}\": {why}"))?;
    let port = match port {
        None => scheme.default_port(),
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return fail(&format!("port \"{p}\" is not a number in 1..=65535")),
        },
    };
    let path = if tail.is_empty() {
        "/".to_string()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_string()
    };
    Ok(Target {
        scheme,
        host,
        port,
        path,
    })
}

/// Splits `host[:port]` / `[v6][:port]`; the host comes back without brackets.
fn split_host_port(authority: &str) -> Result<(String, Option<&str>), String> {
    if authority.is_empty() {
        return Err("missing host".into());
    }
    if let Some(after) = authority.strip_prefix('[') {
        let Some((v6, rest)) = after.split_once(']') else {
            return Err("unclosed '[' in IPv6 address".into());
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("\"{v6}\" is not a valid IPv6 address"));
        }
        let port = match rest {
            "" => None,
            r => match r.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err("unexpected text after ']' (expected :port)".into()),
            },
        };
        return Ok((v6.to_string(), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if port.is_some_and(|p| p.contains(':')) {
        return Err("IPv6 addresses must be in brackets, e.g. http://[::1]:8080/".into());
    }
    if host.is_empty() {
        return Err("missing host".into());
    }
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid {
        return Err(format!(
            "host \"{host}\" has characters outside A-Z, a-z, 0-9, '-', '.', '_'"
        ));
    }
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(scheme: Scheme, host: &str, port: u16, path: &str) -> Target {
        Target {
            scheme,
            host: host.into(),
            port,
            path: path.into(),
        }
    }

    #[test]
    fn parses_ipv4_and_names_with_default_ports() {
        assert_eq!(
            parse_url("http://127.0.0.1").unwrap(),
            t(Scheme::Http, "127.0.0.1", 80, "/")
        );
        assert_eq!(
            parse_url("https://Example.com/healthz").unwrap(),
            t(Scheme::Https, "example.com", 443, "/healthz")
        );
        assert_eq!(
            parse_url("http://localhost:8080/a/b").unwrap(),
            t(Scheme::Http, "localhost", 8080, "/a/b")
        );
    }

    #[test]
    fn parses_ipv6_in_brackets() {
        assert_eq!(
            parse_url("http://[::1]:9000/x").unwrap(),
            t(Scheme::Http, "::1", 9000, "/x")
        );
        assert_eq!(
            parse_url("https://[2001:db8::1]").unwrap(),
            t(Scheme::Https, "2001:db8::1", 443, "/")
        );
    }

    #[test]
    fn keeps_query() {
        assert_eq!(parse_url("http://h/p?a=1&b=2").unwrap().path, "/p?a=1&b=2");
        assert_eq!(parse_url("http://h?a=1").unwrap().path, "/?a=1");
        assert_eq!(parse_url("http://h:81?a=1").unwrap().port, 81);
    }

    #[test]
    fn rejects_other_schemes() {
        let e = parse_url("ftp://example.com/").unwrap_err();
        assert!(e.contains("\"ftp\" is not supported"), "{e}");
        assert!(parse_url("example.com/x").unwrap_err().contains("http://"));
    }

    #[test]
    fn rejects_missing_host() {
        assert!(parse_url("http:///x").unwrap_err().contains("missing host"));
        assert!(parse_url("http://:80/")
            .unwrap_err()
            .contains("missing host"));
        assert!(parse_url("https://").unwrap_err().contains("missing host"));
    }

    #[test]
    fn rejects_bad_ports() {
        for u in [
            "http://h:0/",
            "http://h:65536/",
            "http://h:abc/",
            "http://h:/",
        ] {
            assert!(parse_url(u).unwrap_err().contains("1..=65535"), "{u}");
        }
        assert_eq!(parse_url("http://h:65535/").unwrap().port, 65535);
    }

    #[test]
    fn rejects_userinfo_fragment_and_junk() {
        assert!(parse_url("http://u:p@h/")
            .unwrap_err()
            .contains("credentials"));
        assert!(parse_url("http://h/#x").unwrap_err().contains("fragment"));
        assert!(parse_url("http://h /").unwrap_err().contains("spaces"));
        assert!(parse_url("http://::1/").unwrap_err().contains("brackets"));
        assert!(parse_url("http://[::1/").unwrap_err().contains("unclosed"));
        assert!(parse_url("http://[zz]/").unwrap_err().contains("IPv6"));
        assert!(parse_url("http://h%41/")
            .unwrap_err()
            .contains("characters"));
    }
}
