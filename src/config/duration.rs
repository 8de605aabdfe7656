//! Durations written as an integer plus unit (`250ms`, `30s`, `5m`, `1h30m`, `1d`).

use std::time::Duration;

/// Units accepted in a duration, longest first so `ms` wins over `m`.
const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Hint appended to every rejection so the user sees what would have worked.
const FORMS: &str = "use an integer and a unit: ms, s, m, h, d, e.g. 250ms, 30s, 5m, 1h30m";

/// Parses a duration such as `250ms`, `30s`, `5m`, `2h`, `1d` or a sum like `1h30m`.
///
/// Bare numbers are rejected on purpose: `timeout: 5` is ambiguous (seconds? milliseconds?).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let fail = |why: String| Err(format!("invalid duration \"{s}\": {why}"));
    if text.is_empty() {
        return fail(format!("empty ({FORMS})"));
    }
    if text.starts_with('-') {
        return fail(format!("negative durations are not allowed ({FORMS})"));
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return fail(format!("expected a number at \"{rest}\" ({FORMS})"));
        }
        let (num, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(|b| !b.is_ascii_digit()).count();
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return fail(format!("missing unit after {num} ({FORMS})"));
        }
        if unit.starts_with(['.', ',']) {
            return fail(
                "fractions are not supported (use a smaller unit, e.g. 1500ms for 1.5s)".into(),
            );
        }
        let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return fail(format!("unknown unit \"{unit}\" (use ms, s, m, h, d)"));
        };
        let value: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration \"{s}\": number {num} is too large"))?;
        total_ms = value
            .checked_mul(scale)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("invalid duration \"{s}\": too large"))?;
        rest = next;
    }
    Ok(Duration::from_millis(total_ms))
}

pub use crate::model::format_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn accepts_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("0s"), Ok(ms(0)));
        assert_eq!(parse_duration(" 10s "), Ok(ms(10_000)));
    }

    #[test]
    fn accepts_compound_forms() {
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("1m30s500ms"), Ok(ms(90_500)));
    }

    #[test]
    fn rejects_bare_numbers() {
        let e = parse_duration("30").unwrap_err();
        assert!(e.contains("missing unit"), "{e}");
        assert!(e.contains("ms, s, m, h, d"), "{e}");
    }

    #[test]
    fn rejects_negative() {
        let e = parse_duration("-5s").unwrap_err();
        assert!(e.contains("negative"), "{e}");
    }

    #[test]
    fn rejects_unknown_units() {
        assert_eq!(
            parse_duration("5x").unwrap_err(),
            "invalid duration \"5x\": unknown unit \"x\" (use ms, s, m, h, d)"
        );
        assert!(parse_duration("5 s").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("5sec").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("1.5s").unwrap_err().contains("fractions"));
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("s")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_duration("99999999999999999999s")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("999999999999999d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_in_largest_exact_unit() {
        assert_eq!(format_duration(ms(30_000)), "30s");
        assert_eq!(format_duration(ms(1_500)), "1500ms");
        assert_eq!(format_duration(ms(3_600_000)), "1h");
        assert_eq!(format_duration(ms(0)), "0s");
    }
}
