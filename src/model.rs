//! Domain types shared by every module: services, their targets, statuses and probe outcomes.
//!
//! These types are plain data. Parsing and validation live in `config`; behaviour lives in the
//! modules that own it (`probe`, `state`, `sched`).

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Stable identifier of a service; the same name always maps to the same id, across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(u64);

impl ServiceId {
    /// Derives the id of a service from its unique name (FNV-1a, 63 bits so it fits SQL `BIGINT`).
    pub fn from_name(name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        ServiceId(h & (i64::MAX as u64))
    }

    /// Wraps a raw id read back from storage.
    pub fn from_raw(raw: u64) -> Self {
        ServiceId(raw)
    }

    /// The raw value, for storage and wire formats.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The shard that owns this service when the process runs `shards` shards.
    pub fn owner(self, shards: usize) -> usize {
        // Mix the bits again: FNV's low bits are weak for short, similar names.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        (x % shards.max(1) as u64) as usize
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

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

/// A fully validated service definition, as probed by a shard.
#[derive(Clone, Debug)]
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
    /// TLS client configuration for https targets (None for http).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Body bytes kept for assertions; the rest is read and dropped.
    pub max_body_bytes: usize,
    /// Where the definition came from.
    pub source: Source,
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

/// Health status decided by the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Not enough results yet.
    Unknown,
    /// Healthy.
    Up,
    /// Failing.
    Down,
}

impl Status {
    /// Lower-case name used in metrics, storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Up => "up",
            Status::Down => "down",
        }
    }

    /// Parses the lower-case name back (storage).
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "unknown" => Some(Status::Unknown),
            "up" => Some(Status::Up),
            "down" => Some(Status::Down),
            _ => None,
        }
    }

    /// All statuses, for exhaustive metric output.
    pub const ALL: [Status; 3] = [Status::Unknown, Status::Up, Status::Down];
}

/// Coarse class of a probe failure; every `ProbeError` maps to exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Name resolution failed.
    Dns,
    /// TCP connection refused.
    Refused,
    /// A phase or the whole probe ran out of time.
    Timeout,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The connection broke (reset, unexpected EOF, other I/O error).
    Connection,
    /// The peer did not speak valid HTTP/1.1 (or exceeded a limit).
    Protocol,
    /// Status code outside `expect.status`.
    Status,
    /// Body did not contain `expect.body_contains`.
    BodyMismatch,
    /// Response slower than `expect.max_latency`.
    Latency,
}

impl ErrorKind {
    /// Lower-case name used in metrics, storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Connection => "connection",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Status => "status",
            ErrorKind::BodyMismatch => "body_mismatch",
            ErrorKind::Latency => "latency",
        }
    }

    /// Parses the lower-case name back (storage).
    pub fn parse(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// All kinds, for exhaustive metric output.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Dns,
        ErrorKind::Refused,
        ErrorKind::Timeout,
        ErrorKind::Tls,
        ErrorKind::Connection,
        ErrorKind::Protocol,
        ErrorKind::Status,
        ErrorKind::BodyMismatch,
        ErrorKind::Latency,
    ];
}

/// Milliseconds since the Unix epoch; the unit of every stored timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// Converts a `SystemTime` (clamped at the epoch).
    pub fn from_system(t: SystemTime) -> Self {
        UnixMillis(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        )
    }

    /// Formats as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T15:51:45.123Z`.
    pub fn to_rfc3339(self) -> String {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (or `+00:00`), the inverse of `to_rfc3339`; None
    /// when it is not such a time.
    pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
        let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
        let (date, time) = s.split_once(['T', 't', ' '])?;
        let mut d = date.split('-');
        let (y, m, dd): (i64, i64, i64) = (
            d.next()?.parse().ok()?,
            d.next()?.parse().ok()?,
            d.next()?.parse().ok()?,
        );
        let (hms, frac) = match time.split_once('.') {
            Some((a, f)) => (a, f),
            None => (time, "0"),
        };
        let mut t = hms.split(':');
        let (h, mi, se): (i64, i64, i64) = (
            t.next()?.parse().ok()?,
            t.next()?.parse().ok()?,
            t.next()?.parse().ok()?,
        );
        if !(1..=12).contains(&m) || !(1..=31).contains(&dd) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let millis: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
        // Days from civil (Howard Hinnant).
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + dd - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(UnixMillis(
            (days * 86_400 + h * 3600 + mi * 60 + se) * 1000 + millis,
        ))
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Phase timings of one probe; a phase that did not run is zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// TCP connect (zero on a reused connection).
    pub connect: Duration,
    /// TLS handshake (zero on http or reuse).
    pub tls: Duration,
    /// Request start to first response byte.
    pub first_byte: Duration,
    /// Whole probe.
    pub total: Duration,
}

/// The stored, reported result of one probe.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    /// Which service.
    pub service_id: ServiceId,
    /// Planned start: unique per service, the idempotency key in storage.
    pub scheduled_at: UnixMillis,
    /// Actual start.
    pub started_at: UnixMillis,
    /// Phase timings.
    pub timings: Timings,
    /// Status code, when a response head arrived.
    pub status_code: Option<u16>,
    /// Response bytes read (head and body).
    pub bytes: u64,
    /// Failure class, None on success.
    pub error_kind: Option<ErrorKind>,
    /// Failure message, None on success.
    pub error: Option<String>,
}

impl ProbeResult {
    /// True when the probe met every expectation.
    pub fn ok(&self) -> bool {
        self.error_kind.is_none()
    }
}

/// A status change, numbered by the global, persisted `seq`.
#[derive(Clone, Debug)]
pub struct Transition {
    /// Global, strictly increasing across the process and restarts.
    pub seq: u64,
    /// Which service.
    pub service_id: ServiceId,
    /// Its name at the time.
    pub service: String,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// When the deciding probe completed.
    pub at: UnixMillis,
    /// Latency of the deciding probe.
    pub latency: Duration,
    /// Status code of the deciding probe.
    pub status_code: Option<u16>,
    /// Error of the deciding probe.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_id_is_stable_and_fits_i64() {
        let a = ServiceId::from_name("api");
        assert_eq!(a, ServiceId::from_name("api"));
        assert_ne!(a, ServiceId::from_name("apj"));
        assert!(a.get() <= i64::MAX as u64);
    }

    #[test]
    fn owners_spread_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[ServiceId::from_name(&format!("svc-{i}")).owner(4)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(UnixMillis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            UnixMillis(1_795_362_705_123).to_rfc3339(),
            "2026-11-22T15:51:45.123Z"
        );
        assert_eq!(
            UnixMillis(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
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

    #[test]
    fn kinds_and_statuses_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
