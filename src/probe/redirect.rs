//! Following redirects (`follow_redirects`): where the next request goes, with which method and
//! headers, and the hops themselves, all inside the one whole-probe deadline.
//!
//! Cold path: an exchange reports a redirect only for 301, 302, 303, 307 or 308 with a
//! `Location`, and only then is the plan's setting read. Following runs boxed, so a probe that
//! gets no redirect carries none of this state. The rules (docs/configuration.md, "Redirects"):
//! - at most `follow_redirects` hops; the redirect after the last one fails with
//!   `TooManyRedirects`, which is also how a loop ends (no visited set: the bound is small);
//! - `Location` is resolved against the URL of the request that got it (RFC 3986 5.2, dot
//!   segments removed, the fragment dropped); only http and https are followed;
//! - https -> http is refused: the service asked for https, and its headers would go out in
//!   clear text;
//! - 303 turns any method but HEAD into GET without a body; 301 and 302 turn POST into GET
//!   without a body (what browsers and curl do, whatever RFC 9110 allows); 307 and 308 keep the
//!   method and the body;
//! - the service's headers go along, except that a hop to another origin (scheme, host, port)
//!   than the service's URL leaves out `Host`, `Authorization`, `Proxy-Authorization` and
//!   `Cookie` (credentials do not follow a redirect elsewhere), and a body dropped by the method
//!   change takes its `Content-*` headers with it;
//! - a hop dials only when the pool holds no idle connection for its target, so a redirect on
//!   the same scheme, host and port reuses the connection it came on when that allows keep-alive.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::parse_url;
use crate::model::{Method, Scheme, ServiceSpec, Target};

use super::clock::Clock;
use super::conn::Dial;
use super::exchange::{Exchange, Progress, Route};
use super::http1::{self, RequestParts};
use super::plan::Plan;
use super::pool::PoolKey;
use super::{ProbeError, ProbeReport, Prober};

/// The outcome of a redirect that is not followed (`follow_redirects: 0`): fine when its status
/// is expected (a service checking that a redirect is in place), else a status failure that
/// says where it pointed and that it was not followed.
fn not_followed(
    plan: &Plan,
    progress: &Progress,
    location: &str,
    body_ok: bool,
) -> Result<bool, ProbeError> {
    let got = progress.status.unwrap_or_default();
    if plan.status_ok(got) {
        return Ok(body_ok);
    }
    Err(ProbeError::RedirectNotFollowed {
        got,
        expected: plan.spec.expect.status.to_string(),
        location: shown(&plan.spec.target, location),
    })
}

/// `location` resolved against `base`, for messages; as sent when it does not resolve.
fn shown(base: &Target, location: &str) -> String {
    resolve(base, location).map_or_else(|_| location.to_string(), |t| t.to_string())
}

/// One request of a redirect chain.
struct Hop {
    target: Target,
    method: Method,
    /// The service's body goes along (a POST that 307 or 308 kept).
    body: bool,
}

impl Hop {
    /// The service's own request, where the chain starts.
    fn first(spec: &ServiceSpec) -> Hop {
        Hop {
            target: spec.target.clone(),
            method: spec.method,
            body: spec.body.is_some(),
        }
    }

    /// The request that a redirect with `status` to `location` asks for after this one.
    fn next(&self, status: u16, location: &str) -> Result<Hop, ProbeError> {
        let target = resolve(&self.target, location)
            .map_err(|e| ProbeError::Protocol(format!("redirect {status}: {e}")))?;
        if self.target.scheme == Scheme::Https && target.scheme == Scheme::Http {
            return Err(ProbeError::Protocol(format!(
                "redirect {status} from {} to {target} refused: https is not downgraded to http",
                self.target
            )));
        }
        let (method, body) = match (status, self.method) {
            (303, Method::Head) => (Method::Head, false),
            (303, _) | (301 | 302, Method::Post) => (Method::Get, false),
            _ => (self.method, self.body),
        };
        Ok(Hop {
            target,
            method,
            body,
        })
    }

    /// This hop's request bytes: the service's headers, without those tied to its origin on a
    /// hop elsewhere, nor those describing a body the method change dropped.
    fn encode(&self, spec: &ServiceSpec) -> Vec<u8> {
        let own = &spec.target;
        let same_origin = self.target.scheme == own.scheme
            && self.target.host == own.host
            && self.target.port == own.port;
        let body_dropped = spec.body.is_some() && !self.body;
        let omit: fn(&str) -> bool = match (same_origin, body_dropped) {
            (true, false) => |_| false,
            (true, true) => body_bound,
            (false, false) => origin_bound,
            (false, true) => |n| origin_bound(n) || body_bound(n),
        };
        let mut out = Vec::new();
        http1::encode(
            &RequestParts {
                method: self.method,
                target: &self.target,
                headers: &spec.headers,
                omit,
                body: spec.body.as_deref().filter(|_| self.body),
            },
            &mut out,
        );
        out
    }
}

/// Headers that belong to the service's origin: not sent to another.
fn origin_bound(name: &str) -> bool {
    ["host", "authorization", "proxy-authorization", "cookie"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Headers that describe a request body: not sent once a redirect dropped it.
fn body_bound(name: &str) -> bool {
    [
        "content-type",
        "content-encoding",
        "content-language",
        "content-location",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

impl Prober {
    /// What a redirect to `location` in the first response leads to: the verdict on it
    /// when `follow_redirects` is off, else the hops (boxed: their state is allocated only
    /// when a redirect is followed).
    pub(super) async fn redirected(
        &self,
        plan: &Rc<Plan>,
        clock: Clock<'_>,
        report: &mut ProbeReport,
        progress: &mut Progress,
        location: Box<str>,
        body_ok: bool,
    ) -> Result<bool, ProbeError> {
        if plan.follow_redirects == 0 {
            return not_followed(plan, progress, &location, body_ok);
        }
        Box::pin(self.follow(plan, clock, report, progress, location)).await
    }

    /// Follows the redirect the first response made to `location`, hop by hop, at most
    /// `plan.follow_redirects` times; the final response is the one the expectations see.
    ///
    /// `report.bytes` adds up every hop; `connect` and `tls` are the sums over the connections
    /// opened; `first_byte`, `status_code` and `reused` are the final response's.
    async fn follow(
        &self,
        plan: &Rc<Plan>,
        clock: Clock<'_>,
        report: &mut ProbeReport,
        progress: &mut Progress,
        location: Box<str>,
    ) -> Result<bool, ProbeError> {
        let max = plan.follow_redirects;
        let mut hop = Hop::first(&plan.spec);
        let mut location = location;
        // The first response's bytes are in `report.bytes` already: `progress` counts only what
        // is still in flight, so the whole-probe timer can add it without counting twice.
        progress.bytes = 0;
        let mut dialled = (report.timings.connect, report.timings.tls);
        for _ in 0..max {
            hop = hop.next(progress.status.unwrap_or_default(), &location)?;
            report.timings.connect = Duration::ZERO;
            report.timings.tls = Duration::ZERO;
            let res = self.hop(plan, &hop, clock, report, progress).await;
            dialled.0 += report.timings.connect;
            dialled.1 += report.timings.tls;
            (report.timings.connect, report.timings.tls) = dialled;
            let ex = res?;
            match ex.redirect {
                Some(next) => location = next,
                None => return Ok(ex.body_ok),
            }
        }
        Err(ProbeError::TooManyRedirects {
            max,
            location: shown(&hop.target, &location),
        })
    }

    /// One hop: a pooled connection to its target or a new one, then the exchange, retried once
    /// on a new connection when a pooled one turns out closed (as `Prober::run` does for the
    /// first request, which keeps its own copy of this loop so the hot path stays as it was).
    async fn hop(
        &self,
        plan: &Plan,
        hop: &Hop,
        clock: Clock<'_>,
        report: &mut ProbeReport,
        progress: &mut Progress,
    ) -> Result<Exchange, ProbeError> {
        let spec = &*plan.spec;
        let t = &hop.target;
        clock.phase.set("dns");
        let addr = self
            .resolve(&t.host, t.port)
            .await
            .map_err(|e| ProbeError::Dns {
                host: t.host.clone(),
                reason: e.to_string(),
            })?;
        // The service's TLS settings apply to every https hop (the defaults for an http one).
        let tls = match t.scheme {
            Scheme::Https => self
                .tls
                .for_settings(spec.tls.clone().unwrap_or_default(), &spec.name),
            Scheme::Http => None,
        };
        let key = PoolKey {
            addr,
            scheme: t.scheme,
            host: self.hosts.intern(&t.host),
            tls_config: tls.as_ref().map_or(0, |c| Arc::as_ptr(c) as usize),
        };
        let to = Dial {
            host: &t.host,
            addr,
            tls: tls.as_ref(),
        };
        let route = Route {
            key,
            to,
            now: Instant::now(),
        };
        let request = hop.encode(spec);
        self.send(
            plan,
            route,
            || request.clone(),
            hop.method,
            clock,
            report,
            progress,
        )
        .await
    }
}

/// Resolves the reference `location` against `base` (RFC 3986 5.2.2; a reference with a scheme
/// is absolute). The fragment is dropped (it is never sent); only http and https resolve.
fn resolve(base: &Target, location: &str) -> Result<Target, String> {
    let reference = location.split_once('#').map_or(location, |(r, _)| r);
    if has_scheme(reference) {
        let mut t = parse_url(reference)?;
        t.path = normalized(&t.path);
        return Ok(t);
    }
    if let Some(rest) = reference.strip_prefix("//") {
        let mut t = parse_url(&format!("{}://{rest}", base.scheme.as_str()))?;
        t.path = normalized(&t.path);
        return Ok(t);
    }
    let (base_path, base_query) = split_query(&base.path);
    let (path, query) = split_query(reference);
    let (path, query) = if path.is_empty() {
        // The same document: its path, and its query unless the reference brings one.
        (base_path.to_string(), query.or(base_query))
    } else if path.starts_with('/') {
        (remove_dot_segments(path), query)
    } else {
        // Merge (5.2.3): the base path up to its last '/', then the reference.
        let dir = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        (remove_dot_segments(&format!("{dir}{path}")), query)
    };
    Ok(Target {
        path: path + query.unwrap_or_default(),
        ..base.clone()
    })
}

/// RFC 3986 3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` before the first ':'.
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// `path` and its `?query` (with the '?'), split at the first '?'.
fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.find('?') {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    }
}

/// A path and query with the path's dot segments removed (the query is left as it is).
fn normalized(path_and_query: &str) -> String {
    let (path, query) = split_query(path_and_query);
    remove_dot_segments(path) + query.unwrap_or_default()
}

/// RFC 3986 5.2.4 for an absolute path: `.` segments dropped, `..` removes the one before
/// (never above the root); a path ending in either keeps a trailing '/'.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path.strip_prefix('/').unwrap_or(path).split('/') {
        trailing = matches!(seg, "." | "..");
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len() + 1);
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing || out.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        parse_url(url).expect("test url")
    }

    fn resolved(base: &str, reference: &str) -> String {
        resolve(&target(base), reference)
            .map(|t| t.to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn rfc3986_reference_resolution_examples() {
        // RFC 3986 5.4.1 and 5.4.2 (fragments dropped; the base's host is `a`).
        let base = "http://a/b/c/d;p?q";
        for (reference, want) in [
            ("g", "http://a/b/c/g"),
            ("./g", "http://a/b/c/g"),
            ("g/", "http://a/b/c/g/"),
            ("/g", "http://a/g"),
            ("//g", "http://g/"),
            ("?y", "http://a/b/c/d;p?y"),
            ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q"),
            ("g#s", "http://a/b/c/g"),
            ("g?y#s", "http://a/b/c/g?y"),
            (";x", "http://a/b/c/;x"),
            ("g;x", "http://a/b/c/g;x"),
            ("g;x?y#s", "http://a/b/c/g;x?y"),
            ("", "http://a/b/c/d;p?q"),
            (".", "http://a/b/c/"),
            ("./", "http://a/b/c/"),
            ("..", "http://a/b/"),
            ("../", "http://a/b/"),
            ("../g", "http://a/b/g"),
            ("../..", "http://a/"),
            ("../../", "http://a/"),
            ("../../g", "http://a/g"),
            ("../../../g", "http://a/g"),
            ("../../../../g", "http://a/g"),
            ("/./g", "http://a/g"),
            ("/../g", "http://a/g"),
            ("g.", "http://a/b/c/g."),
            (".g", "http://a/b/c/.g"),
            ("g..", "http://a/b/c/g.."),
            ("..g", "http://a/b/c/..g"),
            ("./../g", "http://a/b/g"),
            ("./g/.", "http://a/b/c/g/"),
            ("g/./h", "http://a/b/c/g/h"),
            ("g/../h", "http://a/b/c/h"),
            ("g;x=1/./y", "http://a/b/c/g;x=1/y"),
            ("g;x=1/../y", "http://a/b/c/y"),
            ("g?y/./x", "http://a/b/c/g?y/./x"),
            ("g?y/../x", "http://a/b/c/g?y/../x"),
            ("g#s/./x", "http://a/b/c/g"),
            ("HTTPS://Other:8443/x/../y?z", "https://other:8443/y?z"),
        ] {
            assert_eq!(resolved(base, reference), want, "reference {reference:?}");
        }
        // Only http and https are followed; a scheme alone is not a URL we can probe.
        for bad in ["g:h", "ftp://a/b", "mailto:x@a", "http:g", "http://u@a/"] {
            assert!(resolved(base, bad).starts_with("error"), "{bad}");
        }
        assert_eq!(resolved("https://a:8443/x", "//b/y"), "https://b/y");
    }

    #[test]
    fn methods_follow_common_practice() {
        let mut spec = crate::probe::http1::tests::spec("a", 80, Scheme::Http);
        spec.method = Method::Post;
        spec.body = Some(bytes::Bytes::from_static(b"{}"));
        let post = Hop::first(&spec);
        let next = |hop: &Hop, status| {
            let h = hop.next(status, "/next").expect("next");
            (h.method, h.body)
        };
        assert_eq!(next(&post, 301), (Method::Get, false));
        assert_eq!(next(&post, 302), (Method::Get, false));
        assert_eq!(next(&post, 303), (Method::Get, false));
        assert_eq!(next(&post, 307), (Method::Post, true));
        assert_eq!(next(&post, 308), (Method::Post, true));
        spec.method = Method::Head;
        spec.body = None;
        let head = Hop::first(&spec);
        for status in [301, 302, 303, 307, 308] {
            assert_eq!(next(&head, status), (Method::Head, false), "{status}");
        }
    }

    #[test]
    fn https_is_not_downgraded() {
        let spec = crate::probe::http1::tests::spec("a", 443, Scheme::Https);
        let e = Hop::first(&spec)
            .next(301, "http://a/")
            .err()
            .expect("refused");
        assert!(e.to_string().contains("https is not downgraded"), "{e}");
        let up = Hop::first(&crate::probe::http1::tests::spec("a", 80, Scheme::Http))
            .next(301, "https://a/")
            .expect("upgrade");
        assert_eq!(up.target.scheme, Scheme::Https);
    }

    #[test]
    fn credentials_stay_with_their_origin() {
        let mut spec = crate::probe::http1::tests::spec("a", 80, Scheme::Http);
        spec.method = Method::Post;
        spec.body = Some(bytes::Bytes::from_static(b"{}"));
        spec.headers = vec![
            ("Authorization".into(), "Bearer secret".into()),
            ("Content-Type".into(), "application/json".into()),
            ("X-Trace".into(), "1".into()),
        ];
        let first = Hop::first(&spec);
        let text = |hop: &Hop| String::from_utf8(hop.encode(&spec)).expect("utf-8");
        let same = text(&first.next(307, "/again").expect("307"));
        assert!(
            same.starts_with("POST /again HTTP/1.1\r\nHost: a\r\n"),
            "{same}"
        );
        assert!(same.contains("Authorization: Bearer secret\r\n"), "{same}");
        assert!(same.ends_with("Content-Length: 2\r\n\r\n{}"), "{same}");
        let other = text(&first.next(303, "http://b:8080/done").expect("303"));
        assert!(
            other.starts_with("GET /done HTTP/1.1\r\nHost: b:8080\r\n"),
            "{other}"
        );
        assert!(!other.contains("Authorization"), "{other}");
        assert!(!other.contains("Content-"), "{other}");
        assert!(other.contains("X-Trace: 1\r\n"), "{other}");
    }
}
