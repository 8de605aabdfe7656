//! What the pipeline counts on each shard: probes by outcome, latency and schedule lag, skipped
//! runs, transitions, dropped results and encoded events. Owned by one shard, merged on scrape.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::{add_counts, new_hist, record, Exposition};
use crate::model::ErrorKind;

/// Why a planned probe did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The previous probe of the service was still running.
    Overlap,
    /// The shard was more than an interval behind.
    Behind,
}

/// One shard's pipeline counters and histograms.
#[derive(Clone)]
pub struct PipelineStats {
    /// Successful probes.
    pub probes_ok: u64,
    /// Failed probes by kind, indexed like `ErrorKind::ALL`.
    pub probes_failed: [u64; ErrorKind::ALL.len()],
    /// Probe total latency.
    pub probe_latency: Histogram<u64>,
    /// Actual start - planned start.
    pub schedule_lag: Histogram<u64>,
    /// Transitions decided (handed to the store's transition lane).
    pub transitions: u64,

    /// Planned probes skipped because the previous one still ran.
    pub skipped_overlap: u64,
    /// Planned probes skipped because the shard fell behind.
    pub skipped_behind: u64,
    /// Results the store queue (or a worker's results outbox) refused (full).
    pub results_dropped: u64,
    /// Cluster jobs a saturated shard could not take (left pending, reclaimed later).
    pub jobs_refused: u64,
    /// Live result events serialized and framed here (once per event, whatever the client
    /// count); transition events are encoded by the store's publisher and added at scrape.
    pub events_encoded: u64,
}

impl Default for PipelineStats {
    fn default() -> Self {
        PipelineStats {
            probes_ok: 0,
            probes_failed: [0; ErrorKind::ALL.len()],
            probe_latency: new_hist(),
            schedule_lag: new_hist(),
            transitions: 0,
            skipped_overlap: 0,
            skipped_behind: 0,
            results_dropped: 0,
            jobs_refused: 0,
            events_encoded: 0,
        }
    }
}

impl PipelineStats {
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

    /// Total probes finished.
    pub fn probes_total(&self) -> u64 {
        self.probes_ok + self.probes_failed.iter().sum::<u64>()
    }

    /// Adds another shard's figures (scrape time only).
    pub fn merge(&mut self, o: &PipelineStats) {
        self.probes_ok += o.probes_ok;
        add_counts(&mut self.probes_failed, &o.probes_failed);
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.probe_latency.add(&o.probe_latency);
        let _ = self.schedule_lag.add(&o.schedule_lag);
        self.transitions += o.transitions;

        self.skipped_overlap += o.skipped_overlap;
        self.skipped_behind += o.skipped_behind;
        self.results_dropped += o.results_dropped;
        self.jobs_refused += o.jobs_refused;
        self.events_encoded += o.events_encoded;
    }

    /// The pipeline's families (merged figures of every shard).
    pub fn render(&self, w: &mut Exposition) {
        let outcomes = std::iter::once(("ok", self.probes_ok as f64)).chain(
            ErrorKind::ALL
                .iter()
                .zip(self.probes_failed)
                .map(|(k, v)| (k.as_str(), v as f64)),
        );
        w.labelled(
            "ringwatch_probes_total",
            "counter",
            "Finished probes by outcome (ok or the error kind).",
            "outcome",
            outcomes,
        );
        w.summary(
            "ringwatch_probe_latency_seconds",
            "Probe total latency (HDR histogram, all shards).",
            &self.probe_latency,
        );
        w.summary(
            "ringwatch_schedule_lag_seconds",
            "Actual probe start minus planned start (HDR histogram, all shards).",
            &self.schedule_lag,
        );
        w.labelled(
            "ringwatch_probes_skipped_total",
            "counter",
            "Planned probes that did not run, by reason.",
            "reason",
            [
                ("overlap", self.skipped_overlap as f64),
                ("behind", self.skipped_behind as f64),
            ],
        );
        w.single(
            "ringwatch_transitions_total",
            "counter",
            "Status transitions decided (each is then numbered, stored and published).",
            self.transitions as f64,
        );
        w.single(
            "ringwatch_results_dropped_total",
            "counter",
            "Probe results dropped because the writer queue was full.",
            self.results_dropped as f64,
        );
        w.single(
            "ringwatch_ws_events_encoded_total",
            "counter",
            "Live events serialized and framed (once per event, whatever the client count).",
            self.events_encoded as f64,
        );
    }
}
