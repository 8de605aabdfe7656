//! The pipeline on a shard: the scheduler loop hands due jobs to the prober, and a finished
//! probe is observed (state machine), recorded (store) and published (fan-out). Transitions are
//! published by the storage writer once committed (`store::Publish`); result events, which
//! have no seq and are not stored as events, are published from here.
//!
//! Each step crosses a seam of `pipeline::seam` through the shard's `Routes`: standalone, all
//! of them stay on this shard and nothing is copied or locked on the way.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::messages::ShardMsg;
use super::Shard;
use crate::model::{Decided, ProbeResult, UnixMillis};
use crate::pipeline::event::Event;
use crate::pipeline::sched::{self, Due};
use crate::pipeline::seam::{Dispatch, Job, JobRoute};
use crate::pipeline::stats::Skip;
use crate::probe::plan::Plan;
use crate::rt::mesh::From;
use crate::rt::table::{prefetch_read, SlotId};
use crate::store::TransitionRecord;

/// When a probe ended: `born` on the monotonic clock (push latency is measured from it) and
/// `now` on the wall clock (transition and result times).
#[derive(Clone, Copy)]
struct Ended {
    born: Instant,
    now: UnixMillis,
}

impl Shard {
    /// Plans and starts every due probe, then sleeps until the next one (or a change).
    pub(super) async fn scheduler_loop(self: Rc<Self>) {
        loop {
            if self.stopping.get() {
                return;
            }
            let now = Instant::now();
            let max_inflight = self.shared.server.probe.max_inflight;
            loop {
                if self.inflight.get() >= max_inflight {
                    break;
                }
                let due = self.sched.borrow_mut().pop_due(now);
                match due {
                    Some(due) => self.start_due(due, now),
                    None => break,
                }
                self.prefetch_upcoming();
            }
            if self.inflight.get() >= max_inflight {
                self.probe_done.wait_or(None).await;
                continue;
            }
            let next = self.sched.borrow().next_at();
            self.wake_sched.wait_or(next).await;
        }
    }

    /// Warms the cache for the next probes to start: the slot of the one after next, and the
    /// plan of the next (whose slot the previous call warmed). At 100k+ services these loads
    /// are cache misses that otherwise stall `start_due` and the probe's first steps.
    fn prefetch_upcoming(&self) {
        let services = self.services.borrow();
        let sched = self.sched.borrow();
        let mut next = sched.upcoming(2);
        if let Some(d) = next.next() {
            if let Some(slot) = services.at(d.slot) {
                prefetch_read(&*slot.plan);
                prefetch_read(&slot.plan.request);
            }
        }
        if let Some(d) = next.next() {
            services.prefetch(d.slot);
        }
    }

    /// Replans a due entry and hands its job across the scheduler -> prober seam.
    fn start_due(self: &Rc<Self>, due: Due, now: Instant) {
        let plan = {
            let mut services = self.services.borrow_mut();
            let Some(slot) = services.at_mut(due.slot) else {
                return;
            };
            // Pausing bumps the generation and plans nothing, so a current entry is never of a
            // paused service; the definition itself is not read here.
            if slot.generation != due.generation {
                return;
            }
            debug_assert!(!slot.spec().paused);
            // A cluster scheduler stays on the service's grid of slots: no jitter.
            let jitter = match self.routes.jobs {
                JobRoute::Probe => f64::from(slot.plan.jitter),
                _ => 0.0,
            };
            let (next, skipped) = sched::next_run(due.at, now, slot.plan.interval.get(), jitter);
            self.sched.borrow_mut().push(Due { at: next, ..due });
            if skipped > 0 {
                self.stats.borrow_mut().pipeline.skip(Skip::Behind, skipped);
            }
            if slot.running {
                self.stats.borrow_mut().pipeline.skip(Skip::Overlap, 1);
                return;
            }
            slot.running = matches!(self.routes.jobs, JobRoute::Probe);
            if matches!(self.routes.jobs, JobRoute::Hold) {
                return;
            }
            slot.plan.clone()
        };
        let job = Job {
            plan,
            slot: due.slot,
            planned: due.at,
        };
        match &self.routes.jobs {
            JobRoute::Probe => {
                self.inflight.set(self.inflight.get() + 1);
                monoio::spawn(self.clone().run_probe(job));
            }
            JobRoute::Dispatch(out) => {
                let (spec, interval) = (&job.plan.spec, job.plan.interval.get());
                let lag = now.saturating_duration_since(job.planned);
                let planned = UnixMillis(UnixMillis::now().0 - lag.as_millis() as i64);
                // The clocks' mapping is off by a millisecond or two: the slot is the nearest
                // point of the service's grid, the same on every scheduler.
                let scheduled_at =
                    sched::nearest_slot(planned, sched::phase(spec.id, interval), interval);
                let deadline = UnixMillis(scheduled_at.0 + interval.as_millis() as i64);
                out.push(Dispatch {
                    spec: spec.clone(),
                    scheduled_at,
                    deadline,
                });
            }
            // Nothing is planned on a holding shard; an entry from before a route change is
            // dropped.
            JobRoute::Hold => {}
        }
    }

    /// Runs one job on this shard's prober and finishes it.
    async fn run_probe(self: Rc<Self>, job: Job) {
        let Job {
            plan,
            slot,
            planned,
        } = job;
        let start = Instant::now();
        let lag = start.saturating_duration_since(planned);
        let started_at = UnixMillis::now();
        let scheduled_at = UnixMillis(started_at.0 - lag.as_millis() as i64);
        let report = self.prober.probe_planned(&plan, start).await;
        let result = result_of(&plan, &report, scheduled_at, started_at);
        // The probe's own end reading serves as "now" (no further clock reads per probe).
        let ended = Ended {
            born: start + report.timings.total,
            now: UnixMillis(started_at.0 + report.timings.total.as_millis() as i64),
        };
        self.finish_probe(&plan, slot, result, lag, ended);
    }

    /// A finished probe of this shard's own schedule crosses the prober -> judge seam: counted,
    /// then judged here (observe, record, publish). (A cluster worker's probes finish in
    /// `remote`, forwarded to ingest.)
    fn finish_probe(
        &self,
        plan: &Plan,
        at: SlotId,
        result: ProbeResult,
        lag: Duration,
        ended: Ended,
    ) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.probe_done.notify();
        self.count(plan, &result, lag);
        self.observe(plan, at, &result, ended);
        // Result events are encoded only while some client asked for them.
        if self.shared.interest.wanted() {
            if let Some(e) = self.result_event(plan, &result, ended) {
                self.publish(e);
            }
        }
        self.record(result);
    }

    /// Stats and the probe's log line.
    pub(super) fn count(&self, plan: &Plan, result: &ProbeResult, lag: Duration) {
        let latency = result.timings.total;
        {
            let mut stats = self.stats.borrow_mut();
            stats.pipeline.lag(lag);
            stats.pipeline.probe(result.error_kind, latency);
        }
        // The definition is only read for log lines that are enabled.
        let latency_ms = latency.as_secs_f64() * 1000.0;
        match &result.error {
            None => {
                tracing::debug!(service = %plan.spec.name, outcome = "ok", latency_ms, status_code = result.status_code, "probe")
            }
            Some(err) => tracing::info!(
                service = %plan.spec.name,
                outcome = result.error_kind.map(|k| k.as_str()).unwrap_or("error"),
                latency_ms,
                error = %err,
                "probe failed"
            ),
        }
    }

    /// The state machine: folds the result into the service's health. A crossed threshold
    /// becomes a decided transition in the store's transition lane; the writer numbers,
    /// commits and publishes it. If the lane refuses it (the store has been down for long),
    /// the health stays as it was, so the next result decides again and nothing is lost.
    /// The service may have been removed while its probe ran (and its slot reused by another):
    /// then the result is kept and no state moves.
    fn observe(&self, plan: &Plan, at: SlotId, result: &ProbeResult, ended: Ended) {
        let mut services = self.services.borrow_mut();
        let Some(slot) = services.at_mut(at).filter(|s| s.plan.id == plan.id) else {
            return;
        };
        slot.running = false;
        slot.last_latency = result.timings.total;
        slot.last_probe = ended.now;
        let before = slot.health;
        let Some(change) = slot.health.observe(
            result.ok(),
            ended.now,
            slot.plan.failure_threshold,
            slot.plan.success_threshold,
        ) else {
            return;
        };
        let record = TransitionRecord {
            decided: Decided {
                service_id: plan.id,
                service: plan.spec.name.clone(),
                from: change.from,
                to: change.to,
                at: ended.now,
                latency: result.timings.total,
                status_code: result.status_code,
                error: result.error.clone(),
            },
            spec: plan.spec.clone(),
            born: ended.born,
        };
        if self.shared.store.push_transition(record).is_err() {
            // Counted by the store handle (`ringwatch_transitions_deferred_total`).
            slot.health = before;
            return;
        }
        drop(services);
        self.stats.borrow_mut().pipeline.transitions += 1;
    }

    /// A result event for clients that asked for results (encoded once, here).
    fn result_event(&self, plan: &Plan, result: &ProbeResult, ended: Ended) -> Option<Arc<Event>> {
        let status = self.services.borrow().get(plan.id)?.health.status;
        self.stats.borrow_mut().pipeline.events_encoded += 1;
        Some(Event::live_result(
            plan.spec.clone(),
            result,
            status,
            ended.now,
            ended.born,
        ))
    }

    /// Hands the result to the storage writer (dropped and counted when its lane is full).
    fn record(&self, result: ProbeResult) {
        if !self.shared.store.push_result(result) {
            self.stats.borrow_mut().pipeline.results_dropped += 1;
        }
    }

    /// Sends an event to every other shard and delivers it locally.
    pub(super) fn publish(&self, event: Arc<Event>) {
        for to in 0..self.shared.mesh.shards() {
            if to != self.id {
                // A full ring drops the event for that shard's clients; the mesh counts it.
                let _ =
                    self.shared
                        .mesh
                        .send(From::Shard(self.id), to, ShardMsg::Event(event.clone()));
            }
        }
        self.deliver(&event);
    }

    /// Local fan-out of an event (WebSocket clients attach here).
    pub(super) fn deliver(&self, event: &Arc<Event>) {
        self.stats.borrow_mut().front.events_received += 1;
        self.hub.deliver(event);
    }
}

/// The stored result of a probe of `plan` planned for `scheduled_at` that started at
/// `started_at` and reported `report`.
pub(super) fn result_of(
    plan: &Plan,
    report: &crate::probe::ProbeReport,
    scheduled_at: UnixMillis,
    started_at: UnixMillis,
) -> ProbeResult {
    ProbeResult {
        service_id: plan.id,
        scheduled_at,
        started_at,
        timings: report.timings,
        status_code: report.status_code,
        bytes: report.bytes,
        error_kind: report.error.as_ref().map(|e| e.kind()),
        error: report.error.as_ref().map(|e| e.to_string()),
    }
}
