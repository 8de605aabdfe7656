//! A service definition: what to probe, how often, and what counts as healthy.
//!
//! Plain, comparable data (equality is derived): what is built from a definition (the TLS
//! client config, the probe plan) lives with the prober, not here.

use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::{format_duration, ServiceId};

/// URL scheme of a probe target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP/1.1 over TCP.
    Http,
    /// HTTP/1.1 over TLS (rustls).
    Https,
}

impl Scheme {
    /// Port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A parsed `http(s)://host[:port]/path?query` probe target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// http or https.
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port (the scheme's default when the URL has none).
    pub port: u16,
    /// Path and query, always starting with `/`.
    pub path: String,
}

impl Target {
    /// The `Host` header value: host, plus the port when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.host_header(),
            self.path
        )
    }
}

/// HTTP method a probe sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET (the default).
    Get,
    /// HEAD: no body is read.
    Head,
    /// POST with the service's body.
    Post,
}

impl Method {
    /// The method token as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
        }
    }
}

/// Inclusive ranges of acceptable HTTP status codes, e.g. `200-299,304`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRanges(pub Vec<(u16, u16)>);

impl StatusRanges {
    /// True when `code` falls in one of the ranges.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }
}

impl Default for StatusRanges {
    fn default() -> Self {
        StatusRanges(vec![(200, 299)])
    }
}

impl fmt::Display for StatusRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// What a response must satisfy for the probe to count as a success.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expect {
    /// Acceptable status codes (default 200-299).
    pub status: StatusRanges,
    /// A substring the first `max_body_bytes` of the body must contain.
    pub body_contains: Option<String>,
    /// A response slower than this fails with `latency`.
    pub max_latency: Option<Duration>,
}

/// Per-phase timeouts; the whole-probe `timeout` always wins over these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// TLS handshake.
    pub tls: Duration,
    /// From request written to the end of the response head.
    pub head: Duration,
}

/// `tls` of an https service: which roots to trust.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TlsSettings {
    /// Extra CA certificates (PEM), trusted besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (testing only).
    pub insecure_skip_verify: bool,
}

/// A fully validated service definition, as probed by a shard. Equality is derived, so a field
/// added later takes part in "did this definition change" without anyone remembering it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    /// Stable id (derived from the name).
    pub id: ServiceId,
    /// Unique, human-chosen name.
    pub name: String,
    /// Where to probe.
    pub target: Target,
    /// The URL as the user wrote it, for display.
    pub url: String,
    /// Request method.
    pub method: Method,
    /// Extra request headers, in order.
    pub headers: Vec<(String, String)>,
    /// Request body (POST).
    pub body: Option<Bytes>,
    /// Time between probe starts.
    pub interval: Duration,
    /// Whole-probe deadline.
    pub timeout: Duration,
    /// Phase deadlines, each at most `timeout`.
    pub phase_timeouts: PhaseTimeouts,
    /// Fraction of the interval used as +- jitter (0.0..=0.5).
    pub jitter: f64,
    /// Free-form labels for filtering.
    pub tags: Vec<String>,
    /// Success criteria.
    pub expect: Expect,
    /// Consecutive failures before DOWN.
    pub failure_threshold: NonZeroU32,
    /// Consecutive successes before UP.
    pub success_threshold: NonZeroU32,
    /// Paused services keep their state and are not probed.
    pub paused: bool,
    /// TLS settings for https targets (None for http); the client config is built from them
    /// by the prober.
    pub tls: Option<TlsSettings>,
    /// Body bytes kept for assertions; the rest is read and dropped.
    pub max_body_bytes: usize,
    /// Redirects (301, 302, 303, 307, 308) followed at most; 0 = off (the 3xx is the response
    /// the expectations see).
    pub follow_redirects: u8,
    /// Where the definition came from.
    pub source: Source,
}

impl ServiceSpec {
    /// Most redirects a service may follow: every hop is a request inside the one probe
    /// timeout, and real chains are 1-3 hops (http -> https -> canonical host -> path).
    pub const MAX_REDIRECTS: u8 = 10;

    /// The definition's revision: a 64-bit FNV-1a hash of every field, so equal definitions
    /// have equal revisions on every node and any change of any field (even one the JSON
    /// object leaves out, like phase timeouts) gives a new one. Shown by the API; a cluster
    /// worker keeps a plan per service while its job's definition keeps its revision.
    pub fn revision(&self) -> u64 {
        // `Debug` lists every field in declaration order, deterministically (derived), so a
        // field added later takes part without anyone remembering it.
        let text = format!("{self:?}");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// The user-visible definition as JSON: the same object as in the config file and the REST
    /// API (`name, url, method, headers, body, interval, timeout, tags, expect,
    /// follow_redirects, failure_threshold, success_threshold, paused`). The id, source and TLS
    /// settings are not part of it; a body that is not UTF-8 is written lossily, as the API
    /// only accepts text.
    pub fn definition_json(&self) -> serde_json::Value {
        use serde_json::{Map, Value};
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut expect = Map::new();
        expect.insert("status".into(), self.expect.status.to_string().into());
        if let Some(b) = &self.expect.body_contains {
            expect.insert("body_contains".into(), b.clone().into());
        }
        if let Some(l) = self.expect.max_latency {
            expect.insert("max_latency".into(), format_duration(l).into());
        }
        let mut obj = Map::new();
        obj.insert("name".into(), self.name.clone().into());
        obj.insert("url".into(), self.url.clone().into());
        obj.insert("method".into(), self.method.as_str().into());
        obj.insert("headers".into(), headers.into());
        if let Some(b) = &self.body {
            obj.insert(
                "body".into(),
                String::from_utf8_lossy(b).into_owned().into(),
            );
        }
        obj.insert("interval".into(), format_duration(self.interval).into());
        obj.insert("timeout".into(), format_duration(self.timeout).into());
        obj.insert("tags".into(), self.tags.clone().into());
        obj.insert("expect".into(), expect.into());
        obj.insert("follow_redirects".into(), self.follow_redirects.into());
        obj.insert(
            "failure_threshold".into(),
            self.failure_threshold.get().into(),
        );
        obj.insert(
            "success_threshold".into(),
            self.success_threshold.get().into(),
        );
        obj.insert("paused".into(), self.paused.into());
        Value::Object(obj)
    }
}

/// Origin of a service definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The YAML config file (reconciled on SIGHUP).
    Config,
    /// The REST API (persisted in the store).
    Api,
}

impl Source {
    /// Lower-case name used in storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_changes_with_any_field_and_only_then() {
        let a = ServiceSpec {
            id: ServiceId::from_name("a"),
            name: "a".into(),
            target: Target {
                scheme: Scheme::Http,
                host: "h".into(),
                port: 80,
                path: "/".into(),
            },
            url: "http://h/".into(),
            method: Method::Get,
            headers: Vec::new(),
            body: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            phase_timeouts: PhaseTimeouts {
                connect: Duration::from_secs(1),
                tls: Duration::from_secs(1),
                head: Duration::from_secs(1),
            },
            jitter: 0.1,
            tags: Vec::new(),
            expect: Expect::default(),
            failure_threshold: NonZeroU32::MIN,
            success_threshold: NonZeroU32::MIN,
            paused: false,
            tls: None,
            max_body_bytes: 1024,
            follow_redirects: 0,
            source: Source::Config,
        };
        let mut b = a.clone();
        assert_eq!(a.revision(), b.revision());
        b.phase_timeouts.connect = Duration::from_secs(2);
        assert_ne!(a.revision(), b.revision());
        let mut c = a.clone();
        c.follow_redirects = 3;
        assert_ne!(a.revision(), c.revision());
    }

    #[test]
    fn status_ranges_contain_and_print() {
        let r = StatusRanges(vec![(200, 299), (304, 304)]);
        assert!(r.contains(204) && r.contains(304) && !r.contains(301));
        assert_eq!(r.to_string(), "200-299,304");
    }

    #[test]
    fn host_header_omits_default_port_and_brackets_v6() {
        let t = Target {
            scheme: Scheme::Https,
            host: "::1".into(),
            port: 8443,
            path: "/".into(),
        };
        assert_eq!(t.host_header(), "[::1]:8443");
        let t = Target {
            scheme: Scheme::Http,
            host: "example.com".into(),
            port: 80,
            path: "/x".into(),
        };
        assert_eq!(t.to_string(), "http://example.com/x");
    }
}
