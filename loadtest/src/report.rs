//! Report directory writer: `summary.md`, `summary.json`, `latency.svg` (HDR-style percentile
//! distribution) and `throughput.svg` (a value over time). The plots are hand-written SVG
//! polylines with axes and labels; no plotting crate.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// One summary figure: a key, a value and its unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Name, e.g. `probes_per_s`.
    pub key: String,
    /// Value (non-finite values are written as `null` in JSON and `-` in Markdown).
    pub value: f64,
    /// Unit, e.g. `1/s`, `ms`, `s`.
    pub unit: String,
}

impl Metric {
    /// A metric from its parts.
    pub fn new(key: &str, value: f64, unit: &str) -> Self {
        Metric {
            key: key.to_string(),
            value,
            unit: unit.to_string(),
        }
    }
}

/// One ringwatch / peer comparison, measured in the same run.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRow {
    /// The peer, e.g. `wrk`, `blackbox_exporter`, `node ws`.
    pub peer: String,
    /// What is compared, e.g. `work per CPU-second (ringwatch probes, wrk requests)`.
    pub metric: String,
    /// Unit of both values.
    pub unit: String,
    /// ringwatch's value.
    pub ringwatch: f64,
    /// The peer's value.
    pub peer_value: f64,
    /// Whether a larger value is better (throughput) or worse (latency, CPU per message), so a
    /// reader knows which side of 1.0 the ratio should be on.
    pub higher_is_better: bool,
}

impl PeerRow {
    /// ringwatch / peer; NaN when either side is unknown or the peer's value is 0.
    pub fn ratio(&self) -> f64 {
        if self.ringwatch.is_finite() && self.peer_value.is_finite() && self.peer_value != 0.0 {
            self.ringwatch / self.peer_value
        } else {
            f64::NAN
        }
    }
}

/// One pass/fail check of a run (the soak scenario's delivery checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. `exactly once at every client`.
    pub name: String,
    /// Whether it held.
    pub pass: bool,
    /// The counts behind the verdict.
    pub detail: String,
}

/// Everything one run reports.
pub struct Report<'a> {
    /// Scenario name (`probe`, `fanout`, `soak`).
    pub scenario: &'a str,
    /// Summary figures, in display order.
    pub summary: &'a [Metric],
    /// Latency distribution.
    pub latency: Latency<'a>,
    /// What the latency histogram measures (plot title), e.g. `probe latency`.
    pub latency_label: &'a str,
    /// Throughput over time: (seconds since start, value).
    pub throughput: &'a [(f64, f64)],
    /// What the throughput series measures, with its unit, e.g. `probes/s`.
    pub throughput_label: &'a str,
    /// ringwatch / peer comparisons (empty: no peers were asked for).
    pub peers: &'a [PeerRow],
    /// Pass/fail checks (empty: the scenario has none).
    pub checks: &'a [Check],
    /// Free-text notes, e.g. why a peer could not be measured.
    pub notes: &'a [String],
}

impl Report<'_> {
    /// True when every check passed (also when there are none).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }
}

/// A latency distribution: a full HDR histogram, or the percentile points a Prometheus
/// summary exposes (when the histogram lives in another process).
#[derive(Clone, Copy)]
pub enum Latency<'a> {
    /// An HDR histogram recorded in microseconds.
    Hdr(&'a Histogram<u64>),
    /// `(percentile, ms)` points, ascending in percentile, and the sample count.
    Quantiles {
        /// `(percentile in 0..100, milliseconds)`; non-finite values are skipped.
        points: &'a [(f64, f64)],
        /// How many samples the points summarize.
        count: u64,
    },
}

impl Latency<'_> {
    /// Number of samples.
    pub fn count(&self) -> u64 {
        match self {
            Latency::Hdr(h) => h.len(),
            Latency::Quantiles { count, .. } => *count,
        }
    }

    /// Latency at percentile `pct` in ms; for quantile points only an exact point is known.
    pub fn ms_at(&self, pct: f64) -> Option<f64> {
        match self {
            Latency::Hdr(h) if h.is_empty() => None,
            Latency::Hdr(h) => Some(h.value_at_quantile(pct / 100.0) as f64 / 1000.0),
            Latency::Quantiles { points, .. } => points
                .iter()
                .find(|p| (p.0 - pct).abs() < 1e-9 && p.1.is_finite())
                .map(|p| p.1),
        }
    }

    /// Largest value in ms, when known.
    pub fn max_ms(&self) -> Option<f64> {
        match self {
            Latency::Hdr(h) if !h.is_empty() => Some(h.max() as f64 / 1000.0),
            _ => None,
        }
    }

    /// Plot points: `(log10(1/(1-p)), ms)`.
    fn plot_points(&self) -> Vec<(f64, f64)> {
        match self {
            // x from 0 (p0) to 5 (p99.999) in 0.05 steps: 101 points.
            Latency::Hdr(_) => (0..=100)
                .filter_map(|i| {
                    let x = i as f64 * 0.05;
                    let pct = (1.0 - 10f64.powf(-x)) * 100.0;
                    self.ms_at(pct).map(|ms| (x, ms))
                })
                .collect(),
            Latency::Quantiles { points, .. } => points
                .iter()
                .filter(|p| p.0 < 100.0 && p.1.is_finite())
                .map(|&(pct, ms)| ((1.0 / (1.0 - pct / 100.0)).log10(), ms))
                .collect(),
        }
    }
}

/// Percentiles shown in the Markdown and JSON summaries and as plot ticks.
pub const PERCENTILES: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 99.99];

fn pct_key(p: f64) -> String {
    format!("p{}", p.to_string().replace('.', "_"))
}

/// The JSON summary of a report.
pub fn to_json(r: &Report) -> Value {
    let mut summary = Map::new();
    for m in r.summary {
        summary.insert(m.key.clone(), json!({ "value": m.value, "unit": m.unit }));
    }
    let mut lat = Map::new();
    lat.insert("count".into(), json!(r.latency.count()));
    for p in PERCENTILES {
        lat.insert(pct_key(p), json!(r.latency.ms_at(p)));
    }
    lat.insert("max".into(), json!(r.latency.max_ms()));
    let peers: Vec<Value> = r
        .peers
        .iter()
        .map(|p| {
            json!({
                "peer": p.peer,
                "metric": p.metric,
                "unit": p.unit,
                "ringwatch": p.ringwatch,
                "peer_value": p.peer_value,
                "ratio": p.ratio(),
                "higher_is_better": p.higher_is_better,
            })
        })
        .collect();
    let checks: Vec<Value> = r
        .checks
        .iter()
        .map(|c| json!({ "name": c.name, "pass": c.pass, "detail": c.detail }))
        .collect();
    let mut v = json!({
        "scenario": r.scenario,
        "summary": summary,
        "latency": { "label": r.latency_label, "unit": "ms", "percentiles": lat },
        "throughput": { "label": r.throughput_label, "series": r.throughput },
    });
    // Only scenarios that have them carry these keys, so older readers of probe/fanout JSON
    // see the same document as before.
    if !r.peers.is_empty() {
        v["peers"] = json!(peers);
    }
    if !r.checks.is_empty() {
        v["checks"] = json!(checks);
        v["pass"] = json!(r.passed());
    }
    if !r.notes.is_empty() {
        v["notes"] = json!(r.notes);
    }
    v
}

fn fmt_value(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "-".to_string()
    }
}

/// The Markdown summary of a report.
pub fn to_markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ringwatch loadtest: {}\n", r.scenario);
    if !r.checks.is_empty() {
        let verdict = if r.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(s, "## Checks: {verdict}\n");
        let _ = writeln!(s, "| Check | Result | Detail |\n|---|---|---|");
        for c in r.checks {
            let res = if c.pass { "PASS" } else { "FAIL" };
            let _ = writeln!(s, "| {} | {res} | {} |", c.name, c.detail.replace('|', "/"));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "| Metric | Value | Unit |\n|---|---:|---|");
    for m in r.summary {
        let _ = writeln!(s, "| {} | {} | {} |", m.key, fmt_value(m.value), m.unit);
    }
    if !r.peers.is_empty() {
        let _ = writeln!(
            s,
            "\n## Peers (same run; ratio = ringwatch / peer)\n\n\
             | Peer | Metric | Unit | ringwatch | peer | ratio | better |\n\
             |---|---|---|---:|---:|---:|---|"
        );
        for p in r.peers {
            let better = if p.higher_is_better {
                "higher"
            } else {
                "lower"
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {better} |",
                p.peer,
                p.metric,
                p.unit,
                fmt_value(p.ringwatch),
                fmt_value(p.peer_value),
                fmt_value(p.ratio())
            );
        }
    }
    if !r.notes.is_empty() {
        s.push_str("\n## Notes\n\n");
        for n in r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(
        s,
        "\n## {} (ms, {} samples)\n",
        r.latency_label,
        r.latency.count()
    );
    let _ = writeln!(
        s,
        "| p50 | p90 | p99 | p99.9 | p99.99 |\n|---:|---:|---:|---:|---:|"
    );
    let cells: Vec<String> = PERCENTILES
        .iter()
        .map(|&p| {
            r.latency
                .ms_at(p)
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
        })
        .collect();
    let _ = writeln!(s, "| {} |", cells.join(" | "));
    let _ = writeln!(
        s,
        "\n![latency](latency.svg)\n\n![throughput](throughput.svg)"
    );
    s
}

const W: f64 = 640.0;
const H: f64 = 360.0;
const L: f64 = 70.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 50.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line plot: `points` in data space, x ticks `(value, label)`, y from 0 to the max.
fn line_svg(
    xrange: Option<(f64, f64)>,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    points: &[(f64, f64)],
    xticks: &[(f64, String)],
) -> String {
    let finite = |v: &f64| v.is_finite();
    let xmin = points
        .iter()
        .map(|p| p.0)
        .filter(finite)
        .fold(f64::INFINITY, f64::min);
    let xmax = points
        .iter()
        .map(|p| p.0)
        .filter(finite)
        .fold(f64::NEG_INFINITY, f64::max);
    let (xmin, xmax) = if let Some(r) = xrange {
        r
    } else if xmin.is_finite() && xmax > xmin {
        (xmin, xmax)
    } else {
        (0.0, 1.0)
    };
    let ymax = points
        .iter()
        .map(|p| p.1)
        .filter(finite)
        .fold(0.0, f64::max);
    let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
    let px = |x: f64| L + (x - xmin) / (xmax - xmin) * (W - L - R);
    let py = |y: f64| H - B - y / ymax * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Axes.
    let _ = writeln!(
        s,
        r#"<path d="M{L} {T} V{} H{}" fill="none" stroke="black"/>"#,
        H - B,
        W - R
    );
    for (x, label) in xticks {
        if *x < xmin || *x > xmax {
            continue;
        }
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(*x),
            T,
            H - B,
            H - B + 16.0,
            esc(label)
        );
    }
    for i in 0..=4 {
        let y = ymax * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(y),
            W - R,
            L - 6.0,
            py(y) + 4.0,
            fmt_tick(y)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 12.0,
        esc(xlabel)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        (T + H - B) / 2.0,
        esc(ylabel)
    );
    let pts: Vec<String> = points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        pts.join(" ")
    );
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The HDR-style percentile plot: x = log10(1/(1-p)), y = latency in ms.
pub fn latency_svg(r: &Report) -> String {
    let points = r.latency.plot_points();
    let ticks: Vec<(f64, String)> = PERCENTILES
        .iter()
        .map(|&p| ((1.0 / (1.0 - p / 100.0)).log10(), format!("{p}%")))
        .collect();
    // From p0 to p99.999 (HDR) or p99.99 (summary points), so every tick shows.
    let xmax = match r.latency {
        Latency::Hdr(_) => 5.0,
        Latency::Quantiles { .. } => 4.0,
    };
    line_svg(
        Some((0.0, xmax)),
        &format!(
            "{} by percentile ({} samples)",
            r.latency_label,
            r.latency.count()
        ),
        "percentile (log 1/(1-p))",
        "ms",
        &points,
        &ticks,
    )
}

/// The throughput-over-time plot.
pub fn throughput_svg(r: &Report) -> String {
    let end = r.throughput.iter().map(|p| p.0).fold(0.0, f64::max);
    let step = (end / 6.0).ceil().max(1.0);
    let ticks: Vec<(f64, String)> = (0..=7)
        .map(|i| (i as f64 * step, format!("{}", i as f64 * step)))
        .collect();
    line_svg(
        Some((0.0, end.max(1.0))),
        &format!("{} over time", r.throughput_label),
        "seconds",
        r.throughput_label,
        r.throughput,
        &ticks,
    )
}

/// Writes `summary.md`, `summary.json`, `latency.svg` and `throughput.svg` into `dir`
/// (created if missing).
pub fn write(dir: &Path, r: &Report) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(&to_json(r)).map_err(io::Error::other)?;
    fs::write(dir.join("summary.json"), json + "\n")?;
    fs::write(dir.join("summary.md"), to_markdown(r))?;
    fs::write(dir.join("latency.svg"), latency_svg(r))?;
    fs::write(dir.join("throughput.svg"), throughput_svg(r))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_svg(s: &str) {
        assert!(s.starts_with("<svg"), "{s}");
        assert!(s.trim_end().ends_with("</svg>"), "{s}");
        assert!(s.contains("<polyline points=\""));
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
        assert_eq!(s.matches('<').count(), s.matches('>').count());
    }

    #[test]
    fn writes_all_files() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for i in 1..=10_000u64 {
            h.record(i * 10).expect("in range");
        }
        let summary = [
            Metric::new("probes_per_s", 1234.5, "1/s"),
            Metric::new("cpu_seconds", f64::NAN, "s"),
        ];
        let tp: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 1000.0 + i as f64)).collect();
        let r = Report {
            scenario: "probe",
            summary: &summary,
            latency: Latency::Hdr(&h),
            latency_label: "probe latency",
            throughput: &tp,
            throughput_label: "probes/s",
            peers: &[],
            checks: &[],
            notes: &[],
        };
        let dir = std::env::temp_dir().join(format!("rw-report-test-{}", std::process::id()));
        write(&dir, &r).expect("write");
        let j: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("summary.json")).expect("json"))
                .expect("parses");
        assert_eq!(j["scenario"], "probe");
        assert_eq!(j["summary"]["probes_per_s"]["value"], 1234.5);
        assert!(j["summary"]["cpu_seconds"]["value"].is_null());
        let p50 = j["latency"]["percentiles"]["p50"].as_f64().expect("p50");
        assert!((p50 - 50.0).abs() < 0.5, "{p50}");
        assert_eq!(j["throughput"]["series"].as_array().map(Vec::len), Some(10));
        let md = fs::read_to_string(dir.join("summary.md")).expect("md");
        assert!(md.contains("| probes_per_s | 1234.500 | 1/s |"), "{md}");
        assert!(!md.contains("Peers") && !md.contains("Checks"), "{md}");
        assert!(j.get("peers").is_none() && j.get("checks").is_none());
        for f in ["latency.svg", "throughput.svg"] {
            check_svg(&fs::read_to_string(dir.join(f)).expect("svg"));
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_inputs_still_plot() {
        let h = Histogram::<u64>::new(3).expect("hist");
        let r = Report {
            scenario: "x",
            summary: &[],
            latency: Latency::Hdr(&h),
            latency_label: "l",
            throughput: &[],
            throughput_label: "t<&>",
            peers: &[],
            checks: &[],
            notes: &[],
        };
        check_svg(&latency_svg(&r));
        check_svg(&throughput_svg(&r));
        assert!(to_json(&r)["latency"]["percentiles"]["p99"].is_null());
        let pts = [(50.0, 1.5), (90.0, 2.0), (99.0, f64::NAN), (99.9, 9.0)];
        let q = Report {
            latency: Latency::Quantiles {
                points: &pts,
                count: 7,
            },
            ..r
        };
        let svg = latency_svg(&q);
        check_svg(&svg);
        let j = to_json(&q);
        assert_eq!(j["latency"]["percentiles"]["p90"], 2.0);
        assert!(j["latency"]["percentiles"]["p99"].is_null());
        assert!(to_markdown(&q).contains("| 1.500 | 2.000 | - | 9.000 | - |"));
    }

    #[test]
    fn peers_checks_and_notes() {
        let h = Histogram::<u64>::new(3).expect("hist");
        let peers = [
            PeerRow {
                peer: "wrk".into(),
                metric: "work per CPU-second".into(),
                unit: "1/s".into(),
                ringwatch: 50_000.0,
                peer_value: 80_000.0,
                higher_is_better: true,
            },
            PeerRow {
                peer: "blackbox_exporter".into(),
                metric: "work per CPU-second".into(),
                unit: "1/s".into(),
                ringwatch: 50_000.0,
                peer_value: 0.0,
                higher_is_better: true,
            },
        ];
        let checks = [
            Check {
                name: "a".into(),
                pass: true,
                detail: "0 missing".into(),
            },
            Check {
                name: "b".into(),
                pass: false,
                detail: "2 duplicates | x".into(),
            },
        ];
        let notes = ["node: not found; run scripts/install-ws-peer.sh".to_string()];
        let r = Report {
            scenario: "soak",
            summary: &[],
            latency: Latency::Hdr(&h),
            latency_label: "l",
            throughput: &[],
            throughput_label: "t",
            peers: &peers,
            checks: &checks,
            notes: &notes,
        };
        assert!(!r.passed());
        assert!((peers[0].ratio() - 0.625).abs() < 1e-12);
        assert!(peers[1].ratio().is_nan());
        let md = to_markdown(&r);
        assert!(md.contains("## Checks: FAIL"), "{md}");
        assert!(md.contains("| b | FAIL | 2 duplicates / x |"), "{md}");
        assert!(
            md.contains(
                "| wrk | work per CPU-second | 1/s | 50000.000 | 80000.000 | 0.625 | higher |"
            ),
            "{md}"
        );
        assert!(md.contains("- node: not found"), "{md}");
        let j = to_json(&r);
        assert_eq!(j["pass"], false);
        assert_eq!(j["checks"][1]["pass"], false);
        assert_eq!(j["peers"][0]["ratio"], 0.625);
        assert!(j["peers"][1]["ratio"].is_null());
        assert_eq!(j["notes"][0], notes[0]);
    }
}
