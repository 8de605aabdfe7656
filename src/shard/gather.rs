//! Gathering from every shard: stats for `/metrics` and service states for WebSocket
//! snapshots. The shard that answers asks the others through the mesh, merges, and renders;
//! each component renders its own families (`pipeline::stats`, `probe`, `store`, `ws`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::messages::ShardMsg;
use super::Shard;
use crate::http::HttpReject;
use crate::metrics::{add_counts, Exposition};
use crate::model::{ServiceSpec, Status, UnixMillis};
use crate::pipeline::stats::PipelineStats;
use crate::probe::ProberCounters;
use crate::rt::mesh::gather;
use crate::ws::protocol::ServiceState;
use crate::ws::WsStats;

/// How long a scrape or a snapshot waits for each shard: a shard busy for longer is left out
/// rather than hang the request.
const GATHER_WAIT: Duration = Duration::from_secs(1);

/// Status classes of `ringwatch_api_responses_total`.
pub const API_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

/// What a shard's front end counts: HTTP, the mesh, the REST API.
#[derive(Clone, Debug, Default)]
pub struct FrontStats {
    /// HTTP requests served.
    pub http_requests: u64,
    /// HTTP connections currently open.
    pub http_connections: u64,
    /// HTTP connections refused or closed early, by reason (indexed like `HttpReject::ALL`).
    pub http_rejected: [u64; HttpReject::ALL.len()],
    /// Mesh messages received.
    pub mesh_received: u64,
    /// Events delivered to this shard for local fan-out.
    pub events_received: u64,
    /// REST API responses by class, indexed like `API_CLASSES` (5xx = a bound was hit:
    /// read pool, writer queue or mesh ring full, or a shard too slow).
    pub api_responses: [u64; API_CLASSES.len()],
}

impl FrontStats {
    /// Counts one REST API response by its status class.
    pub fn api_response(&mut self, status: u16) {
        let i = match status {
            500.. => 2,
            400..=499 => 1,
            _ => 0,
        };
        self.api_responses[i] += 1;
    }

    /// Counts an HTTP rejection.
    pub fn reject(&mut self, why: HttpReject) {
        let i = HttpReject::ALL.iter().position(|x| *x == why).unwrap_or(0);
        self.http_rejected[i] += 1;
    }

    /// Adds another shard's figures.
    pub fn merge(&mut self, o: &FrontStats) {
        self.http_requests += o.http_requests;
        self.http_connections += o.http_connections;
        add_counts(&mut self.http_rejected, &o.http_rejected);
        self.mesh_received += o.mesh_received;
        self.events_received += o.events_received;
        add_counts(&mut self.api_responses, &o.api_responses);
    }

    /// The front end's families.
    fn render(&self, w: &mut Exposition, mesh_dropped: u64) {
        w.single(
            "ringwatch_http_requests_total",
            "counter",
            "HTTP requests served.",
            self.http_requests as f64,
        );
        w.single(
            "ringwatch_http_connections",
            "gauge",
            "HTTP connections open.",
            self.http_connections as f64,
        );
        w.labelled(
            "ringwatch_http_rejected_total",
            "counter",
            "HTTP connections refused or requests rejected, by reason.",
            "reason",
            HttpReject::ALL
                .iter()
                .zip(self.http_rejected)
                .map(|(r, v)| (r.as_str(), v as f64)),
        );
        w.single(
            "ringwatch_mesh_received_total",
            "counter",
            "Messages received through the shard mesh.",
            self.mesh_received as f64,
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
            self.events_received as f64,
        );
        w.labelled(
            "ringwatch_api_responses_total",
            "counter",
            "REST API responses by status class (5xx: a queue or pool bound was hit).",
            "class",
            API_CLASSES
                .iter()
                .zip(self.api_responses)
                .map(|(c, v)| (*c, v as f64)),
        );
    }
}

/// Everything a shard counts; owned by the shard, never shared.
#[derive(Clone, Default)]
pub struct ShardStats {
    /// The pipeline's counters and histograms.
    pub pipeline: PipelineStats,
    /// HTTP, mesh and API counters.
    pub front: FrontStats,
    /// WebSocket counters (filled in from the shard's hub at snapshot time).
    pub ws: WsStats,
}

impl ShardStats {
    /// Adds another shard's figures (scrape time only).
    pub fn merge(&mut self, o: &ShardStats) {
        self.pipeline.merge(&o.pipeline);
        self.front.merge(&o.front);
        self.ws.merge(&o.ws);
    }
}

/// One service's figures for the per-service families.
#[derive(Clone)]
pub struct ServiceSample {
    /// The definition (its name labels the series).
    pub spec: Arc<ServiceSpec>,
    /// Current status.
    pub status: Status,
    /// Latency of the last probe.
    pub latency: Duration,
    /// When the last probe ended (zero before the first).
    pub last_probe: UnixMillis,
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
    /// Per-service figures (empty unless `server.per_service_metrics`).
    pub per_service: Vec<ServiceSample>,
}

impl Shard {
    /// This shard's figures now.
    pub(super) fn snapshot(&self) -> StatsSnapshot {
        let services = self.services.borrow();
        let mut by_status = [0u64; 3];
        let mut paused = 0;
        for slot in services.values() {
            let i = Status::ALL
                .iter()
                .position(|s| *s == slot.health.status)
                .unwrap_or(0);
            by_status[i] += 1;
            paused += u64::from(slot.spec().paused);
        }
        let per_service = if self.shared.server.per_service_metrics {
            services
                .values()
                .map(|slot| ServiceSample {
                    spec: slot.spec().clone(),
                    status: slot.health.status,
                    latency: slot.last_latency,
                    last_probe: slot.last_probe,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut stats = self.stats.borrow().clone();
        stats.ws = self.hub.stats.borrow().clone();
        StatsSnapshot {
            shard: self.id,
            driver: self.driver,
            stats,
            services: by_status,
            paused,
            inflight: self.inflight.get() as u64,
            prober: self.prober.counters(),
            mesh_dropped: self.shared.mesh.dropped(self.id),
            per_service,
        }
    }

    /// Collects every shard's snapshot through the mesh and renders `/metrics`.
    pub(super) async fn metrics(&self) -> String {
        let pending = self.ask_others(ShardMsg::Stats);
        let mut snaps = vec![self.snapshot()];
        snaps.extend(gather(pending, GATHER_WAIT).await.into_iter().flatten());
        snaps.sort_by_key(|s| s.shard);
        let mut w = Exposition::default();
        self.render_process(&mut w, &snaps);
        // Transition events are encoded once by the store's publisher, result events by their
        // origin shard: the encoded count is both.
        let published = self.shared.store.counters.published.load(Ordering::Relaxed);
        let merged = render_shards(&mut w, &snaps, published);
        self.shared.store.render(&mut w, self.shared.seq.get());
        merged.ws.render(&mut w, &self.shared.interest);
        if let Some(c) = &self.shared.cluster {
            c.render(&mut w, &c.snapshot(GATHER_WAIT).await);
        }
        if self.shared.server.per_service_metrics {
            render_services(&mut w, &snaps);
        }
        w.finish()
    }

    /// Build, uptime and one series per shard.
    fn render_process(&self, w: &mut Exposition, snaps: &[StatsSnapshot]) {
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
            self.shared.started.elapsed().as_secs_f64(),
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
    }

    /// Current state of every service on every shard, gathered through the mesh.
    pub(super) async fn all_service_states(&self) -> Vec<ServiceState> {
        let pending = self.ask_others(ShardMsg::States);
        let mut all = self.local_states();
        for s in gather(pending, GATHER_WAIT).await.into_iter().flatten() {
            all.extend(s);
        }
        all
    }
}

/// Merges the shards' snapshots and renders the per-shard and merged families; returns the
/// merged stats for the families rendered after it.
fn render_shards(w: &mut Exposition, snaps: &[StatsSnapshot], published: u64) -> ShardStats {
    let mut merged = ShardStats::default();
    let (mut services, mut paused, mut inflight, mut mesh_dropped) = ([0u64; 3], 0, 0, 0);
    let mut prober = ProberCounters::default();
    for s in snaps {
        merged.merge(&s.stats);
        add_counts(&mut services, &s.services);
        paused += s.paused;
        inflight += s.inflight;
        prober.merge(&s.prober);
        mesh_dropped += s.mesh_dropped;
    }
    merged.pipeline.events_encoded += published;
    merged.pipeline.render(w);
    per_shard(
        w,
        "ringwatch_shard_probes_total",
        "counter",
        "Finished probes per shard.",
        snaps,
        |s| s.stats.pipeline.probes_total(),
    );
    w.single(
        "ringwatch_probes_inflight",
        "gauge",
        "Probes running now.",
        inflight as f64,
    );
    w.labelled(
        "ringwatch_services",
        "gauge",
        "Services by status.",
        "status",
        Status::ALL
            .iter()
            .zip(services)
            .map(|(st, v)| (st.as_str(), v as f64)),
    );
    w.single(
        "ringwatch_services_paused",
        "gauge",
        "Paused services (also counted by status).",
        paused as f64,
    );
    per_shard(
        w,
        "ringwatch_shard_services",
        "gauge",
        "Services owned per shard.",
        snaps,
        |s| s.services.iter().sum(),
    );
    prober.render(w);
    merged.front.render(w, mesh_dropped);
    merged
}

/// The per-service families: one series per service and family, labelled by name.
fn render_services(w: &mut Exposition, snaps: &[StatsSnapshot]) {
    let all = || snaps.iter().flat_map(|s| s.per_service.iter());
    let family =
        |w: &mut Exposition, name: &str, help: &str, value: &dyn Fn(&ServiceSample) -> f64| {
            w.header(name, "gauge", help);
            for s in all() {
                w.sample(name, &[("service", &s.spec.name)], value(s));
            }
        };
    family(
        w,
        "ringwatch_service_up",
        "Service status: 1 up, 0 down, -1 unknown (not enough results yet).",
        &|s| match s.status {
            Status::Up => 1.0,
            Status::Down => 0.0,
            Status::Unknown => -1.0,
        },
    );
    family(
        w,
        "ringwatch_service_latency_seconds",
        "Total latency of the service's last probe.",
        &|s| s.latency.as_secs_f64(),
    );
    family(
        w,
        "ringwatch_service_last_probe_timestamp_seconds",
        "When the service's last probe ended, Unix time (0 before the first).",
        &|s| s.last_probe.0 as f64 / 1000.0,
    );
}

/// A family with one sample per shard.
fn per_shard(
    w: &mut Exposition,
    name: &str,
    kind: &str,
    help: &str,
    snaps: &[StatsSnapshot],
    value: impl Fn(&StatsSnapshot) -> u64,
) {
    w.labelled(
        name,
        kind,
        help,
        "shard",
        snaps.iter().map(|s| (s.shard.to_string(), value(s) as f64)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ErrorKind;

    fn snap(shard: usize) -> StatsSnapshot {
        let mut stats = ShardStats::default();
        stats.pipeline.probe(None, Duration::from_millis(2));
        stats
            .pipeline
            .probe(Some(ErrorKind::Timeout), Duration::from_millis(500));
        stats.pipeline.lag(Duration::from_micros(300));
        StatsSnapshot {
            shard,
            driver: "io_uring",
            stats,
            services: [1, 2, 0],
            paused: 1,
            inflight: 0,
            prober: ProberCounters::default(),
            mesh_dropped: 0,
            per_service: Vec::new(),
        }
    }

    #[test]
    fn merges_shards_and_renders_text_format() {
        let mut w = Exposition::default();
        render_shards(&mut w, &[snap(0), snap(1)], 0);
        let text = w.finish();
        assert!(text.contains("ringwatch_probes_total{outcome=\"ok\"} 2\n"));
        assert!(text.contains("ringwatch_probes_total{outcome=\"timeout\"} 2\n"));
        assert!(text.contains("ringwatch_services{status=\"up\"} 4\n"));
        assert!(text.contains("ringwatch_shard_services{shard=\"1\"} 3\n"));
        assert!(text.contains("ringwatch_schedule_lag_seconds_count 2\n"));
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
}
