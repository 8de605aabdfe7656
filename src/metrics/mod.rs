//! Prometheus text exposition (format 0.0.4) and the HDR histogram conventions every component
//! uses.
//!
//! Each component keeps its own counters and renders its own families into an [`Exposition`]
//! (`pipeline::stats`, `probe`, `store`, `ws`, the shard's front-end counters); the shard that
//! answers a scrape merges what every shard reports and calls them in turn. This module knows
//! the format, not the figures, so it imports nothing above `model`.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Histograms record microseconds from 1 us to 1 hour at 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

/// A latency histogram with the bounds every component shares (so any two can be merged).
pub fn new_hist() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// Records a duration in microseconds, clamped to the histograms' bounds.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, HIST_MAX_US);
    // `saturating_record` cannot fail for values within bounds.
    h.saturating_record(us);
}

/// Adds `b` into `a` element-wise (per-reason counter arrays of two shards).
pub fn add_counts<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
}

/// A scrape's text, built family by family.
pub struct Exposition {
    out: String,
}

impl Default for Exposition {
    fn default() -> Self {
        Exposition {
            out: String::with_capacity(8192),
        }
    }
}

impl Exposition {
    /// The `# HELP` and `# TYPE` lines of a family.
    pub fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", fmt_value(value));
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one sample per label value (e.g. per reason), from parallel slices.
    pub fn labelled<L: AsRef<str>>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (L, f64)>,
    ) {
        self.header(name, kind, help);
        for (l, v) in values {
            self.sample(name, &[(label, l.as_ref())], v);
        }
    }

    /// A summary with p50/p90/p99/p99.9 in seconds from a microsecond histogram.
    pub fn summary(&mut self, name: &str, help: &str, h: &Histogram<u64>) {
        self.header(name, "summary", help);
        for (q, qf) in [("0.5", 0.5), ("0.9", 0.9), ("0.99", 0.99), ("0.999", 0.999)] {
            let v = if h.is_empty() {
                f64::NAN
            } else {
                h.value_at_quantile(qf) as f64 / 1e6
            };
            self.sample(name, &[("quantile", q)], v);
        }
        let sum = h.mean() * h.len() as f64 / 1e6;
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], h.len() as f64);
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn empty_histograms_render_nan_quantiles() {
        let mut w = Exposition::default();
        w.summary("x_seconds", "X.", &new_hist());
        assert!(w.finish().contains("x_seconds{quantile=\"0.99\"} NaN\n"));
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut h = new_hist();
        for _ in 0..99 {
            record(&mut h, Duration::from_micros(300));
        }
        record(&mut h, Duration::from_millis(40));
        let mut w = Exposition::default();
        w.summary("lag_seconds", "Lag.", &h);
        let text = w.finish();
        let p50 = text
            .lines()
            .find(|l| l.starts_with("lag_seconds{quantile=\"0.5\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("p50 line");
        assert!((0.000299..0.000301).contains(&p50), "{p50}");
        assert!(text.contains("lag_seconds_count 100\n"));
    }
}
