//! The `defaults` section, and the rules of every key a service can inherit from it (interval,
//! timeout, jitter, thresholds, method, body limit, phase timeouts): `defaults.*` and
//! `services[i].*` are checked by the same functions, so their ranges cannot drift apart.

use std::num::NonZeroU32;
use std::time::Duration;

use super::raw::{RawDefaults, RawTimeouts};
use super::validate::{dur_range, duration, err, int, positive, Result, MIB};
use crate::model::{Method, PhaseTimeouts};

/// Shortest probe interval.
pub(super) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest probe interval.
pub(super) const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Shortest whole-probe timeout.
pub(super) const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Largest failure or success threshold.
const MAX_THRESHOLD: u64 = 1000;
/// Largest `max_body_bytes`.
pub(super) const MAX_PROBE_BODY: u64 = 16 * MIB;

/// Effective `defaults` section after validation; services from the API inherit it too.
#[derive(Debug, Clone)]
pub struct ServiceDefaults {
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) jitter: f64,
    pub(super) failure_threshold: NonZeroU32,
    pub(super) success_threshold: NonZeroU32,
    pub(super) max_body_bytes: usize,
    pub(super) method: Method,
    /// Kept as written: a service's own phase timeouts are clamped to its own `timeout`.
    pub(super) timeouts: RawTimeouts,
}

impl Default for ServiceDefaults {
    fn default() -> Self {
        // An absent `defaults` section always validates.
        ServiceDefaults::from_raw(None)
            .unwrap_or_else(|_| unreachable!("built-in defaults are valid"))
    }
}

impl ServiceDefaults {
    /// Validates the `defaults` section (absent = the built-in defaults).
    pub(super) fn from_raw(d: Option<&RawDefaults>) -> Result<ServiceDefaults> {
        let empty = RawDefaults::default();
        let d = d.unwrap_or(&empty);
        let interval = interval("defaults.interval", &d.interval, Duration::from_secs(30))?;
        let timeout = timeout("defaults.timeout", &d.timeout, Duration::from_secs(5))?;
        let timeouts = d.timeouts.clone().unwrap_or_default();
        // Validate the phase timeouts here too, so a bad default is reported at its own key.
        phase_timeouts(
            "defaults.timeouts",
            &timeouts,
            &RawTimeouts::default(),
            timeout,
        )?;
        Ok(ServiceDefaults {
            interval,
            timeout,
            jitter: jitter("defaults.jitter", d.jitter.as_deref(), 0.1)?,
            failure_threshold: threshold("defaults.failure_threshold", d.failure_threshold, 1)?,
            success_threshold: threshold("defaults.success_threshold", d.success_threshold, 1)?,
            max_body_bytes: max_body_bytes("defaults.max_body_bytes", d.max_body_bytes, 65_536)?,
            method: method("defaults.method", d.method.as_deref(), Method::Get)?,
            timeouts,
        })
    }
}

/// An interval in `MIN_INTERVAL..=MAX_INTERVAL`, or `default`.
pub(super) fn interval(key: &str, v: &Option<String>, default: Duration) -> Result<Duration> {
    let d = duration(key, v, default)?;
    dur_range(key, d, MIN_INTERVAL, Some(MAX_INTERVAL))
}

/// A whole-probe timeout of at least `MIN_TIMEOUT`, or `default`.
pub(super) fn timeout(key: &str, v: &Option<String>, default: Duration) -> Result<Duration> {
    let d = duration(key, v, default)?;
    dur_range(key, d, MIN_TIMEOUT, None)
}

/// Bytes of a response body kept for `body_contains`, or `default`.
pub(super) fn max_body_bytes(key: &str, v: Option<u64>, default: u64) -> Result<usize> {
    int(key, v, default, 0, MAX_PROBE_BODY)
}

/// A failure or success threshold in `1..=MAX_THRESHOLD`, or `default`.
pub(super) fn threshold(key: &str, v: Option<u64>, default: u32) -> Result<NonZeroU32> {
    let n = int(key, v, u64::from(default), 1, MAX_THRESHOLD)?;
    // int() guarantees 1..=1000, so both conversions hold.
    NonZeroU32::new(n as u32).map_or_else(|| err(key, "must be at least 1"), Ok)
}

/// A probe method, in any case, or `default`.
pub(super) fn method(key: &str, v: Option<&str>, default: Method) -> Result<Method> {
    match v.map(|m| m.trim().to_ascii_uppercase()).as_deref() {
        None => Ok(default),
        Some("GET") => Ok(Method::Get),
        Some("HEAD") => Ok(Method::Head),
        Some("POST") => Ok(Method::Post),
        Some(_) => err(
            key,
            format!(
                "unsupported method \"{}\" (expected GET, HEAD or POST)",
                v.unwrap_or_default()
            ),
        ),
    }
}

/// Jitter as a fraction: `10%` or `0.1`, within 0..=50%.
pub(super) fn jitter(key: &str, v: Option<&str>, default: f64) -> Result<f64> {
    let Some(text) = v.map(str::trim) else {
        return Ok(default);
    };
    let parsed = match text.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    };
    let hint = "(expected a percentage such as 10% or a fraction such as 0.1, from 0 to 50%)";
    match parsed {
        Ok(f) if f.is_finite() && (0.0..=0.5).contains(&f) => Ok(f),
        Ok(_) => err(key, format!("{text} is out of range {hint}")),
        Err(_) => err(key, format!("invalid jitter \"{text}\" {hint}")),
    }
}

/// Phase timeouts: the service's own, else the defaults', else the whole-probe timeout;
/// each clamped to the whole-probe timeout, which always wins anyway.
pub(super) fn phase_timeouts(
    key: &str,
    own: &RawTimeouts,
    inherited: &RawTimeouts,
    timeout: Duration,
) -> Result<PhaseTimeouts> {
    let one = |name: &str, own: &Option<String>, inh: &Option<String>| -> Result<Duration> {
        let k = format!("{key}.{name}");
        let d = match (own, inh) {
            (Some(_), _) => positive(&k, own, timeout)?,
            // An inherited value was already checked at its own key (defaults.timeouts.*).
            (None, Some(_)) => positive(&format!("defaults.timeouts.{name}"), inh, timeout)?,
            (None, None) => timeout,
        };
        Ok(d.min(timeout))
    };
    Ok(PhaseTimeouts {
        connect: one("connect", &own.connect, &inherited.connect)?,
        tls: one("tls", &own.tls, &inherited.tls)?,
        head: one("head", &own.head, &inherited.head)?,
    })
}
