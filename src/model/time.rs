//! Time as ringwatch stores and shows it: Unix milliseconds, RFC 3339, durations, and the one
//! place that rounds a duration to milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Formats a duration the way the config file writes it, in its largest exact unit (`250ms`,
/// `30s`, `5m`, `2h`, `1d`; zero is `0s`): for messages, JSON and storage alike.
pub fn format_duration(d: Duration) -> String {
    const UNITS: [(&str, u128); 4] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ];
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    UNITS
        .iter()
        .find(|(_, scale)| ms % scale == 0)
        .map(|(unit, scale)| format!("{}{unit}", ms / scale))
        .unwrap_or_else(|| format!("{ms}ms"))
}

/// A duration in milliseconds rounded to whole microseconds (`1.5` for 1,500 us): the one
/// rounding every JSON `latency_ms` uses, so the API, the stream and snapshots agree.
pub fn round_ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn durations_format_in_their_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(round_ms(Duration::from_micros(1500)), 1.5);
    }
}
