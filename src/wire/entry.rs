//! Stream entries of cluster mode: a probe job (scheduler -> workers), a probe result (workers ->
//! ingest). Each is one JSON document in one field of a Redis stream entry.
//!
//! A job carries the whole definition, so a worker probes without reading the database and
//! without trusting its own copy of the registry to be current. The definition travels in a
//! complete, plain form (`SpecWire`), not the REST API's object: the API object leaves out what
//! only the config file may set (phase timeouts, body limits, TLS files), and a job must
//! reproduce the definition exactly. Decoding checks the invariants the validated type holds.

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::model::{
    ErrorKind, Expect, Method, PhaseTimeouts, ProbeResult, Scheme, ServiceId, ServiceSpec, Source,
    StatusRanges, Target, Timings, TlsSettings, UnixMillis,
};

/// Field name of the JSON document in every entry.
pub const FIELD: &str = "j";

/// Why an entry could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Not the JSON this version writes.
    #[error("malformed entry: {0}")]
    Json(#[from] serde_json::Error),
    /// Well-formed but impossible (a zero threshold, an unknown kind).
    #[error("invalid entry: {0}")]
    Invalid(String),
}

/// A service definition, complete, as it travels in a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecWire {
    name: String,
    url: String,
    scheme: String,
    host: String,
    port: u16,
    path: String,
    method: Method,
    headers: Vec<(String, String)>,
    body: Option<String>,
    interval_ms: u64,
    timeout_ms: u64,
    connect_ms: u64,
    tls_ms: u64,
    head_ms: u64,
    jitter: f64,
    tags: Vec<String>,
    status: Vec<(u16, u16)>,
    body_contains: Option<String>,
    max_latency_ms: Option<u64>,
    failure_threshold: u32,
    success_threshold: u32,
    paused: bool,
    tls: Option<TlsSettings>,
    max_body_bytes: usize,
    source: String,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&ServiceSpec> for SpecWire {
    fn from(s: &ServiceSpec) -> SpecWire {
        SpecWire {
            name: s.name.clone(),
            url: s.url.clone(),
            scheme: s.target.scheme.as_str().into(),
            host: s.target.host.clone(),
            port: s.target.port,
            path: s.target.path.clone(),
            method: s.method,
            headers: s.headers.clone(),
            body: s
                .body
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            interval_ms: ms(s.interval),
            timeout_ms: ms(s.timeout),
            connect_ms: ms(s.phase_timeouts.connect),
            tls_ms: ms(s.phase_timeouts.tls),
            head_ms: ms(s.phase_timeouts.head),
            jitter: s.jitter,
            tags: s.tags.clone(),
            status: s.expect.status.0.clone(),
            body_contains: s.expect.body_contains.clone(),
            max_latency_ms: s.expect.max_latency.map(ms),
            failure_threshold: s.failure_threshold.get(),
            success_threshold: s.success_threshold.get(),
            paused: s.paused,
            tls: s.tls.clone(),
            max_body_bytes: s.max_body_bytes,
            source: s.source.as_str().into(),
        }
    }
}

impl TryFrom<SpecWire> for ServiceSpec {
    type Error = EntryError;

    fn try_from(w: SpecWire) -> Result<ServiceSpec, EntryError> {
        let bad = |m: &str| EntryError::Invalid(format!("{}: {m}", w.name));
        let scheme = match w.scheme.as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad("scheme")),
        };
        let threshold = |v: u32| NonZeroU32::new(v).ok_or_else(|| bad("zero threshold"));
        let (failure_threshold, success_threshold) = (
            threshold(w.failure_threshold)?,
            threshold(w.success_threshold)?,
        );
        if w.interval_ms == 0 || w.timeout_ms == 0 || w.status.is_empty() {
            return Err(bad("zero interval, zero timeout or no accepted status"));
        }
        let source = match w.source.as_str() {
            "config" => Source::Config,
            _ => Source::Api,
        };
        let d = Duration::from_millis;
        Ok(ServiceSpec {
            id: ServiceId::from_name(&w.name),
            target: Target {
                scheme,
                host: w.host,
                port: w.port,
                path: w.path,
            },
            url: w.url,
            method: w.method,
            headers: w.headers,
            body: w.body.map(Bytes::from),
            interval: d(w.interval_ms),
            timeout: d(w.timeout_ms),
            phase_timeouts: PhaseTimeouts {
                connect: d(w.connect_ms),
                tls: d(w.tls_ms),
                head: d(w.head_ms),
            },
            jitter: w.jitter,
            tags: w.tags,
            expect: Expect {
                status: StatusRanges(w.status),
                body_contains: w.body_contains,
                max_latency: w.max_latency_ms.map(d),
            },
            failure_threshold,
            success_threshold,
            paused: w.paused,
            tls: w.tls,
            max_body_bytes: w.max_body_bytes,
            source,
            name: w.name,
        })
    }
}

/// A probe job: one planned slot of one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEntry {
    /// The definition to probe.
    pub spec: SpecWire,
    /// The planned slot (unix ms): with the service id, the idempotency key of the result.
    pub scheduled_at: i64,
    /// After this (unix ms) the job is acknowledged as expired, never probed late.
    pub deadline: i64,
    /// The fencing epoch of the scheduler that planned it.
    pub epoch: u64,
}

/// A probe result on its way to ingest, with what judging it needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultEntry {
    /// Service id (hex string).
    pub service_id: ServiceId,
    /// Its name (transitions carry it).
    pub service: String,
    /// The planned slot (unix ms).
    pub scheduled_at: i64,
    /// Actual start (unix ms).
    pub started_at: i64,
    /// When the probe ended (unix ms): end-to-end latency is measured from here.
    pub ended_at: i64,
    /// Phase timings in microseconds: connect, tls, first byte, total.
    pub timings_us: [u64; 4],
    /// HTTP status code, when a head arrived.
    pub status_code: Option<u16>,
    /// Response bytes read.
    pub bytes: u64,
    /// Failure class (`ErrorKind::as_str`), None on success.
    pub error_kind: Option<String>,
    /// Failure message.
    pub error: Option<String>,
    /// Consecutive failures before DOWN.
    pub failure_threshold: u32,
    /// Consecutive successes before UP.
    pub success_threshold: u32,
    /// The job's scheduler epoch.
    pub epoch: u64,
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl ResultEntry {
    /// The entry for `r`, a probe of `spec` that ended at `ended_at`.
    pub fn new(r: &ProbeResult, spec: &ServiceSpec, ended_at: UnixMillis, epoch: u64) -> Self {
        ResultEntry {
            service_id: r.service_id,
            service: spec.name.clone(),
            scheduled_at: r.scheduled_at.0,
            started_at: r.started_at.0,
            ended_at: ended_at.0,
            timings_us: [
                us(r.timings.connect),
                us(r.timings.tls),
                us(r.timings.first_byte),
                us(r.timings.total),
            ],
            status_code: r.status_code,
            bytes: r.bytes,
            error_kind: r.error_kind.map(|k| k.as_str().to_string()),
            error: r.error.clone(),
            failure_threshold: spec.failure_threshold.get(),
            success_threshold: spec.success_threshold.get(),
            epoch,
        }
    }

    /// The result as the store keeps it.
    pub fn result(&self) -> Result<ProbeResult, EntryError> {
        let error_kind = match &self.error_kind {
            None => None,
            Some(k) => Some(
                ErrorKind::parse(k)
                    .ok_or_else(|| EntryError::Invalid(format!("unknown error kind {k}")))?,
            ),
        };
        let d = Duration::from_micros;
        Ok(ProbeResult {
            service_id: self.service_id,
            scheduled_at: UnixMillis(self.scheduled_at),
            started_at: UnixMillis(self.started_at),
            timings: Timings {
                connect: d(self.timings_us[0]),
                tls: d(self.timings_us[1]),
                first_byte: d(self.timings_us[2]),
                total: d(self.timings_us[3]),
            },
            status_code: self.status_code,
            bytes: self.bytes,
            error_kind,
            error: self.error.clone(),
        })
    }

    /// The thresholds, checked.
    pub fn thresholds(&self) -> Result<(NonZeroU32, NonZeroU32), EntryError> {
        let nz = |v| NonZeroU32::new(v).ok_or_else(|| EntryError::Invalid("zero threshold".into()));
        Ok((nz(self.failure_threshold)?, nz(self.success_threshold)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            id: ServiceId::from_name("shop"),
            name: "shop".into(),
            target: Target {
                scheme: Scheme::Https,
                host: "example.test".into(),
                port: 8443,
                path: "/health?x=1".into(),
            },
            url: "https://example.test:8443/health?x=1".into(),
            method: Method::Post,
            headers: vec![("X-A".into(), "1".into())],
            body: Some(Bytes::from_static(b"{}")),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            phase_timeouts: PhaseTimeouts {
                connect: Duration::from_secs(1),
                tls: Duration::from_secs(2),
                head: Duration::from_secs(3),
            },
            jitter: 0.1,
            tags: vec!["web".into()],
            expect: Expect {
                status: StatusRanges(vec![(200, 299), (304, 304)]),
                body_contains: Some("ok".into()),
                max_latency: Some(Duration::from_millis(900)),
            },
            failure_threshold: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            success_threshold: NonZeroU32::MIN,
            paused: false,
            tls: Some(TlsSettings {
                ca_file: Some("/etc/ca.pem".into()),
                insecure_skip_verify: false,
            }),
            max_body_bytes: 4096,
            source: Source::Config,
        }
    }

    #[test]
    fn a_definition_survives_the_trip_exactly() {
        let s = spec();
        let text = serde_json::to_string(&JobEntry {
            spec: SpecWire::from(&s),
            scheduled_at: 1,
            deadline: 2,
            epoch: 3,
        })
        .expect("encode");
        let back: JobEntry = serde_json::from_str(&text).expect("decode");
        assert_eq!(ServiceSpec::try_from(back.spec).expect("valid"), s);
    }

    #[test]
    fn impossible_definitions_are_refused() {
        let mut w = SpecWire::from(&spec());
        w.failure_threshold = 0;
        assert!(ServiceSpec::try_from(w).is_err());
        assert!(serde_json::from_str::<JobEntry>("{\"spec\":1}").is_err());
    }

    #[test]
    fn a_result_round_trips_with_its_thresholds() {
        let s = spec();
        let r = ProbeResult {
            service_id: s.id,
            scheduled_at: UnixMillis(1000),
            started_at: UnixMillis(1001),
            timings: Timings {
                connect: Duration::from_micros(10),
                tls: Duration::from_micros(20),
                first_byte: Duration::from_micros(30),
                total: Duration::from_micros(40),
            },
            status_code: Some(503),
            bytes: 12,
            error_kind: Some(ErrorKind::Status),
            error: Some("status 503".into()),
        };
        let e = ResultEntry::new(&r, &s, UnixMillis(1002), 7);
        let e: ResultEntry =
            serde_json::from_str(&serde_json::to_string(&e).expect("encode")).expect("decode");
        let back = e.result().expect("result");
        assert_eq!(back.timings, r.timings);
        assert_eq!(back.error_kind, r.error_kind);
        assert_eq!(e.thresholds().expect("thresholds").0.get(), 3);
        assert_eq!(e.service, "shop");
    }
}
