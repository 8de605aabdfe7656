//! Per-shard counters and HDR histograms, merged on scrape into Prometheus text format 0.0.4.
//!
//! Each shard updates its own `ShardStats` without atomics or locks. A scrape asks every shard
//! for a `StatsSnapshot` through the mesh, merges them, adds process-wide figures (store queue)
//! and renders the text.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::http::HttpReject;
use crate::model::{ErrorKind, Status};
use crate::probe::ProberCounters;

/// Histograms record microseconds from 1 us to 1 hour at 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

fn new_hist() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// Records a duration in microseconds, clamped to the histograms' bounds.
pub(crate) fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, HIST_MAX_US);
    // `saturating_record` cannot fail for values within bounds.
    h.saturating_record(us);
}

/// Why a planned probe did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The previous probe of the service was still running.
    Overlap,
    /// The shard was more than an interval behind.
    Behind,
}

/// Everything a shard counts; owned by the shard, never shared.
#[derive(Clone)]
pub struct ShardStats {
    /// Successful probes.
    pub probes_ok: u64,
    /// Failed probes by kind, indexed like `ErrorKind::ALL`.
    pub probes_failed: [u64; ErrorKind::ALL.len()],
    /// Probe total latency.
    pub probe_latency: Histogram<u64>,
    /// Actual start - planned start.
    pub schedule_lag: Histogram<u64>,
    /// Transitions produced.
    pub transitions: u64,
    /// Planned probes skipped because the previous one still ran.
    pub skipped_overlap: u64,
    /// Planned probes skipped because the shard fell behind.
    pub skipped_behind: u64,
    /// Results the store queue refused (full).
    pub results_dropped: u64,
    /// HTTP requests served.
    pub http_requests: u64,
    /// HTTP connections currently open.
    pub http_connections: u64,
    /// HTTP connections refused or closed early, by reason.
    pub http_rejected: [u64; HttpReject::ALL.len()],
    /// Mesh messages received.
    pub mesh_received: u64,
    /// Events delivered to this shard for local fan-out.
    pub events_received: u64,
    /// WebSocket stream counters (filled in from the shard's hub at snapshot time).
    pub ws: crate::ws::WsStats,
    /// REST API responses by class, indexed like `API_CLASSES` (5xx = a bound was hit:
    /// read pool, writer queue or mesh ring full, or a shard too slow).
    pub api_responses: [u64; API_CLASSES.len()],
}

/// Status classes of `ringwatch_api_responses_total`.
pub const API_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

impl ShardStats {
    /// Counts one REST API response by its status class.
    pub fn api_response(&mut self, status: u16) {
        let i = match status {
            500.. => 2,
            400..=499 => 1,
            _ => 0,
        };
        self.api_responses[i] += 1;
    }
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            probes_ok: 0,
            probes_failed: [0; ErrorKind::ALL.len()],
            probe_latency: new_hist(),
            schedule_lag: new_hist(),
            transitions: 0,
            skipped_overlap: 0,
            skipped_behind: 0,
            results_dropped: 0,
            http_requests: 0,
            http_connections: 0,
            http_rejected: [0; HttpReject::ALL.len()],
            mesh_received: 0,
            events_received: 0,
            ws: crate::ws::WsStats::default(),
            api_responses: [0; API_CLASSES.len()],
        }
    }
}

impl ShardStats {
    /// Counts one finished probe.
    pub fn probe(&mut self, error: Option<ErrorKind>, latency: Duration) {
        match error {
            None => self.probes_ok += 1,
            Some(k) => {
                let i = ErrorKind::ALL.iter().position(|x| *x == k).unwrap_or(0);
                self.probes_failed[i] += 1;
            }
        }
        record(&mut self.probe_latency, latency);
    }

    /// Records how late a probe started.
    pub fn lag(&mut self, lag: Duration) {
        record(&mut self.schedule_lag, lag);
    }

    /// Counts a skipped run.
    pub fn skip(&mut self, why: Skip, n: u64) {
        match why {
            Skip::Overlap => self.skipped_overlap += n,
            Skip::Behind => self.skipped_behind += n,
        }
    }

    /// Counts an HTTP rejection.
    pub fn reject(&mut self, why: HttpReject) {
        let i = HttpReject::ALL.iter().position(|x| *x == why).unwrap_or(0);
        self.http_rejected[i] += 1;
    }

    /// Adds another shard's figures (scrape time only).
    pub fn merge(&mut self, st: &ShardStats) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (a, b) in a.iter_mut().zip(b) {
                *a += b;
            }
        }
        self.probes_ok += st.probes_ok;
        add(&mut self.probes_failed, &st.probes_failed);
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.probe_latency.add(&st.probe_latency);
        let _ = self.schedule_lag.add(&st.schedule_lag);
        self.transitions += st.transitions;
        self.skipped_overlap += st.skipped_overlap;
        self.skipped_behind += st.skipped_behind;
        self.results_dropped += st.results_dropped;
        self.http_requests += st.http_requests;
        self.http_connections += st.http_connections;
        add(&mut self.http_rejected, &st.http_rejected);
        self.mesh_received += st.mesh_received;
        self.events_received += st.events_received;
        self.ws.merge(&st.ws);
        add(&mut self.api_responses, &st.api_responses);
    }

    /// Total probes finished.
    pub fn probes_total(&self) -> u64 {
        self.probes_ok + self.probes_failed.iter().sum::<u64>()
    }
}

/// One shard's figures at scrape time.
#[derive(Clone)]
pub struct StatsSnapshot {
    /// Shard index.
    pub shard: usize,
    /// I/O driver the shard runs (`io_uring` or `epoll`).
    pub driver: &'static str,
    /// Counters and histograms.
    pub stats: ShardStats,
    /// Services owned, by status (indexed like `Status::ALL`).
    pub services: [u64; 3],
    /// Paused services owned.
    pub paused: u64,
    /// Probes running now.
    pub inflight: u64,
    /// Prober connection counters.
    pub prober: ProberCounters,
    /// Mesh messages refused because a ring into this shard was full.
    pub mesh_dropped: u64,
}

/// Process-wide figures not owned by any shard.
#[derive(Clone, Debug, Default)]
pub struct GlobalStats {
    /// Store queue depth now.
    pub store_queue_depth: u64,
    /// Store queue bound.
    pub store_queue_capacity: u64,
    /// Records committed.
    pub store_written: u64,
    /// Records dropped because the queue was full.
    pub store_dropped: u64,
    /// Batch commits that failed (each retried).
    pub store_failed_batches: u64,
    /// Records given up at shutdown because the store stayed down.
    pub store_abandoned: u64,
    /// Rows deleted by retention.
    pub store_pruned: u64,
    /// Latest transition seq.
    pub seq: u64,
    /// Seconds since start.
    pub uptime: Duration,
}

struct Writer {
    out: String,
}

impl Writer {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
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

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    fn summary(&mut self, name: &str, help: &str, h: &Histogram<u64>) {
        self.header(name, "summary", help);
        for q in ["0.5", "0.9", "0.99", "0.999"] {
            let qf: f64 = q.parse().unwrap_or(0.5);
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

/// Renders merged shard snapshots and global figures in Prometheus text format 0.0.4.
pub fn render(snaps: &[StatsSnapshot], global: &GlobalStats) -> String {
    let mut w = Writer {
        out: String::with_capacity(8192),
    };
    let mut merged = ShardStats::default();
    let mut services = [0u64; 3];
    let mut paused = 0;
    let mut inflight = 0;
    let mut prober = ProberCounters::default();
    let mut mesh_dropped = 0;
    for s in snaps {
        merged.merge(&s.stats);
        for (a, b) in services.iter_mut().zip(s.services) {
            *a += b;
        }
        paused += s.paused;
        inflight += s.inflight;
        prober.connections_opened += s.prober.connections_opened;
        prober.connections_reused += s.prober.connections_reused;
        prober.idle_dropped += s.prober.idle_dropped;
        mesh_dropped += s.mesh_dropped;
    }

    w.header("ringwatch_build_info", "gauge", "Build version.");
    w.sample(
        "ringwatch_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    w.single(
        "ringwatch_uptime_seconds",
        "gauge",
        "Seconds since the process started.",
        global.uptime.as_secs_f64(),
    );
    w.header(
        "ringwatch_shard_info",
        "gauge",
        "One series per shard, labelled with its I/O driver.",
    );
    for s in snaps {
        let shard = s.shard.to_string();
        w.sample(
            "ringwatch_shard_info",
            &[("shard", &shard), ("driver", s.driver)],
            1.0,
        );
    }

    w.header(
        "ringwatch_probes_total",
        "counter",
        "Finished probes by outcome (ok or the error kind).",
    );
    w.sample(
        "ringwatch_probes_total",
        &[("outcome", "ok")],
        merged.probes_ok as f64,
    );
    for (k, v) in ErrorKind::ALL.iter().zip(merged.probes_failed) {
        w.sample(
            "ringwatch_probes_total",
            &[("outcome", k.as_str())],
            v as f64,
        );
    }
    w.header(
        "ringwatch_shard_probes_total",
        "counter",
        "Finished probes per shard.",
    );
    for s in snaps {
        let shard = s.shard.to_string();
        w.sample(
            "ringwatch_shard_probes_total",
            &[("shard", &shard)],
            s.stats.probes_total() as f64,
        );
    }
    w.summary(
        "ringwatch_probe_latency_seconds",
        "Probe total latency (HDR histogram, all shards).",
        &merged.probe_latency,
    );
    w.summary(
        "ringwatch_schedule_lag_seconds",
        "Actual probe start minus planned start (HDR histogram, all shards).",
        &merged.schedule_lag,
    );
    w.header(
        "ringwatch_probes_skipped_total",
        "counter",
        "Planned probes that did not run, by reason.",
    );
    w.sample(
        "ringwatch_probes_skipped_total",
        &[("reason", "overlap")],
        merged.skipped_overlap as f64,
    );
    w.sample(
        "ringwatch_probes_skipped_total",
        &[("reason", "behind")],
        merged.skipped_behind as f64,
    );
    w.single(
        "ringwatch_probes_inflight",
        "gauge",
        "Probes running now.",
        inflight as f64,
    );

    w.header("ringwatch_services", "gauge", "Services by status.");
    for (st, v) in Status::ALL.iter().zip(services) {
        w.sample("ringwatch_services", &[("status", st.as_str())], v as f64);
    }
    w.single(
        "ringwatch_services_paused",
        "gauge",
        "Paused services (also counted by status).",
        paused as f64,
    );
    w.header(
        "ringwatch_shard_services",
        "gauge",
        "Services owned per shard.",
    );
    for s in snaps {
        let shard = s.shard.to_string();
        w.sample(
            "ringwatch_shard_services",
            &[("shard", &shard)],
            s.services.iter().sum::<u64>() as f64,
        );
    }
    w.single(
        "ringwatch_transitions_total",
        "counter",
        "Status transitions produced.",
        merged.transitions as f64,
    );
    w.single(
        "ringwatch_transition_seq",
        "gauge",
        "Latest global transition sequence number.",
        global.seq as f64,
    );

    w.single(
        "ringwatch_store_queue_depth",
        "gauge",
        "Records waiting for the storage writer.",
        global.store_queue_depth as f64,
    );
    w.single(
        "ringwatch_store_queue_capacity",
        "gauge",
        "Bound of the storage writer queue.",
        global.store_queue_capacity as f64,
    );
    w.single(
        "ringwatch_store_written_total",
        "counter",
        "Records committed to the store.",
        global.store_written as f64,
    );
    w.single(
        "ringwatch_store_dropped_total",
        "counter",
        "Records (results and transitions) dropped because the writer queue was full.",
        global.store_dropped as f64,
    );
    w.single(
        "ringwatch_results_dropped_total",
        "counter",
        "Probe results dropped because the writer queue was full.",
        merged.results_dropped as f64,
    );
    w.single(
        "ringwatch_store_failed_batches_total",
        "counter",
        "Store batches that failed to commit (and were retried).",
        global.store_failed_batches as f64,
    );

    w.single(
        "ringwatch_store_abandoned_total",
        "counter",
        "Records given up at shutdown because the store stayed down.",
        global.store_abandoned as f64,
    );
    w.single(
        "ringwatch_store_pruned_total",
        "counter",
        "Rows deleted by retention.",
        global.store_pruned as f64,
    );
    w.single(
        "ringwatch_probe_connections_opened_total",
        "counter",
        "TCP connections opened by the prober.",
        prober.connections_opened as f64,
    );
    w.single(
        "ringwatch_probe_connections_reused_total",
        "counter",
        "Probes sent over a pooled keep-alive connection.",
        prober.connections_reused as f64,
    );
    w.single(
        "ringwatch_probe_idle_dropped_total",
        "counter",
        "Idle keep-alive connections closed because a pool bound was hit.",
        prober.idle_dropped as f64,
    );

    w.single(
        "ringwatch_http_requests_total",
        "counter",
        "HTTP requests served.",
        merged.http_requests as f64,
    );
    w.single(
        "ringwatch_http_connections",
        "gauge",
        "HTTP connections open.",
        merged.http_connections as f64,
    );
    w.header(
        "ringwatch_http_rejected_total",
        "counter",
        "HTTP connections refused or requests rejected, by reason.",
    );
    for (r, v) in HttpReject::ALL.iter().zip(merged.http_rejected) {
        w.sample(
            "ringwatch_http_rejected_total",
            &[("reason", r.as_str())],
            v as f64,
        );
    }
    w.single(
        "ringwatch_mesh_received_total",
        "counter",
        "Messages received through the shard mesh.",
        merged.mesh_received as f64,
    );
    w.single(
        "ringwatch_mesh_dropped_total",
        "counter",
        "Mesh messages refused because a ring was full.",
        mesh_dropped as f64,
    );
    w.single(
        "ringwatch_events_received_total",
        "counter",
        "Events delivered to shards for local fan-out.",
        merged.events_received as f64,
    );
    w.header(
        "ringwatch_api_responses_total",
        "counter",
        "REST API responses by status class (5xx: a queue or pool bound was hit).",
    );
    for (c, v) in API_CLASSES.iter().zip(merged.api_responses) {
        w.sample("ringwatch_api_responses_total", &[("class", c)], v as f64);
    }
    render_ws(&mut w, &merged.ws);
    w.out
}

/// The WebSocket stream's families.
fn render_ws(w: &mut Writer, ws: &crate::ws::WsStats) {
    w.single(
        "ringwatch_ws_clients",
        "gauge",
        "WebSocket clients connected now.",
        ws.clients as f64,
    );
    w.single(
        "ringwatch_ws_connections_total",
        "counter",
        "WebSocket upgrades accepted.",
        ws.connections as f64,
    );
    w.single(
        "ringwatch_ws_messages_sent_total",
        "counter",
        "WebSocket frames handed to sockets (events, replies, control frames).",
        ws.messages_sent as f64,
    );
    w.single(
        "ringwatch_ws_bytes_sent_total",
        "counter",
        "WebSocket bytes handed to sockets.",
        ws.bytes_sent as f64,
    );
    w.single(
        "ringwatch_ws_writes_total",
        "counter",
        "WebSocket socket writes (each may carry many frames).",
        ws.writes as f64,
    );
    w.single(
        "ringwatch_ws_coalesced_writes_total",
        "counter",
        "WebSocket writes that carried more than one frame queued while a write was in flight.",
        ws.coalesced_writes as f64,
    );
    w.header(
        "ringwatch_ws_dropped_total",
        "counter",
        "WebSocket clients closed by the server, by reason.",
    );
    for (r, v) in crate::ws::DropReason::ALL.iter().zip(ws.dropped) {
        w.sample(
            "ringwatch_ws_dropped_total",
            &[("reason", r.as_str())],
            v as f64,
        );
    }
    w.single(
        "ringwatch_ws_client_errors_total",
        "counter",
        "Bad client messages answered with an error message.",
        ws.client_errors as f64,
    );
    w.single(
        "ringwatch_ws_replayed_total",
        "counter",
        "Stored transitions replayed to clients resuming with since.",
        ws.replayed as f64,
    );
    w.single(
        "ringwatch_ws_resume_overflows_total",
        "counter",
        "Subscriptions that lost live events because the resume ring overflowed.",
        ws.resume_overflows as f64,
    );
    w.single(
        "ringwatch_ws_events_encoded_total",
        "counter",
        "Live events serialized and framed (once per event, whatever the client count).",
        crate::event::EVENTS_ENCODED.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    w.single(
        "ringwatch_ws_result_subscribers",
        "gauge",
        "WebSocket clients subscribed to result events (results are encoded only when > 0).",
        crate::ws::RESULT_SUBSCRIBERS.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    w.summary(
        "ringwatch_ws_push_latency_seconds",
        "Probe completion to WebSocket frame handed to the socket (HDR histogram, all shards).",
        &ws.push_latency,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(shard: usize) -> StatsSnapshot {
        let mut stats = ShardStats::default();
        stats.probe(None, Duration::from_millis(2));
        stats.probe(Some(ErrorKind::Timeout), Duration::from_millis(500));
        stats.lag(Duration::from_micros(300));
        StatsSnapshot {
            shard,
            driver: "io_uring",
            stats,
            services: [1, 2, 0],
            paused: 1,
            inflight: 0,
            prober: ProberCounters::default(),
            mesh_dropped: 0,
        }
    }

    #[test]
    fn merges_shards_and_renders_text_format() {
        let text = render(&[snap(0), snap(1)], &GlobalStats::default());
        assert!(text.contains("ringwatch_probes_total{outcome=\"ok\"} 2\n"));
        assert!(text.contains("ringwatch_probes_total{outcome=\"timeout\"} 2\n"));
        assert!(text.contains("ringwatch_services{status=\"up\"} 4\n"));
        assert!(text.contains("ringwatch_shard_services{shard=\"1\"} 3\n"));
        assert!(text.contains("ringwatch_schedule_lag_seconds_count 2\n"));
        assert!(text.contains("ringwatch_shard_info{shard=\"0\",driver=\"io_uring\"} 1\n"));
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let family = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "undeclared {name}"
            );
        }
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut s = snap(0);
        for _ in 0..98 {
            s.stats.lag(Duration::from_micros(300));
        }
        s.stats.lag(Duration::from_millis(40));
        let text = render(&[s], &GlobalStats::default());
        let p50 = text
            .lines()
            .find(|l| l.starts_with("ringwatch_schedule_lag_seconds{quantile=\"0.5\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("p50 line");
        assert!((0.000299..0.000301).contains(&p50), "{p50}");
    }

    #[test]
    fn empty_histograms_render_nan_quantiles() {
        let text = render(&[], &GlobalStats::default());
        assert!(text.contains("ringwatch_probe_latency_seconds{quantile=\"0.99\"} NaN\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
