//! A cluster worker's probes: jobs from the jobs stream run on the shard that owns their
//! service, with the same prober as the shard's own schedule, and leave through the result
//! route to the results stream (judged by ingest elsewhere).

use std::rc::Rc;
use std::time::Instant;

use super::Shard;
use crate::model::{ServiceSpec, UnixMillis};
use crate::pipeline::seam::{Forwarded, ResultRoute};
use crate::probe::plan::Plan;
use crate::remote::RemoteJob;

impl Shard {
    /// Starts a job now, or queues it while `max_inflight` probes run (bounded by the same
    /// limit; past it the job stays pending in the stream and is reclaimed later).
    pub(super) fn take_job(self: &Rc<Self>, job: RemoteJob) {
        let max = self.shared.server.probe.max_inflight;
        if self.inflight.get() < max {
            self.start_job(job);
            return;
        }
        let mut queue = self.remote_queue.borrow_mut();
        if queue.len() < max {
            queue.push_back(job);
        } else {
            self.stats.borrow_mut().pipeline.jobs_refused += 1;
        }
    }

    fn start_job(self: &Rc<Self>, job: RemoteJob) {
        self.inflight.set(self.inflight.get() + 1);
        monoio::spawn(self.clone().run_job(job));
    }

    /// Probes one job and forwards its result with the job's slot as `scheduled_at`.
    async fn run_job(self: Rc<Self>, job: RemoteJob) {
        let plan = self.job_plan(&job.spec);
        let start = Instant::now();
        let started_at = UnixMillis::now();
        let report = self.prober.probe_planned(&plan, start).await;
        let result = super::probing::result_of(&plan, &report, job.scheduled_at, started_at);
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.probe_done.notify();
        // Schedule lag across the cluster: from the planned slot to this start.
        let lag =
            std::time::Duration::from_millis((started_at.0 - job.scheduled_at.0).max(0) as u64);
        self.count(&plan, &result, lag);
        let ended_at = UnixMillis(started_at.0 + result.timings.total.as_millis() as i64);
        if let ResultRoute::Forward(out) = &self.routes.results {
            // A full outbox leaves the job pending: it is reclaimed (or expires) elsewhere.
            if !out.push(Forwarded {
                entry: job.entry,
                result,
                spec: job.spec,
                ended_at,
                epoch: job.epoch,
            }) {
                self.stats.borrow_mut().pipeline.results_dropped += 1;
            }
        }
        let next = self.remote_queue.borrow_mut().pop_front();
        if let Some(next) = next {
            self.start_job(next);
        }
    }

    /// The plan for a job's definition: reused while the definition is unchanged (a job
    /// carries it whole), made afresh when it changed.
    fn job_plan(&self, spec: &std::sync::Arc<ServiceSpec>) -> Rc<Plan> {
        let mut plans = self.remote_plans.borrow_mut();
        if let Some(p) = plans.get(&spec.id) {
            if *p.spec == **spec {
                return p.clone();
            }
        }
        // Plans of services no longer probed here would pile up: start over past a bound.
        if plans.len() >= MAX_JOB_PLANS {
            plans.clear();
        }
        let plan = self.prober.plan(spec.clone());
        plans.insert(spec.id, plan.clone());
        plan
    }
}

/// Job plans a shard keeps (one per service it probed recently).
const MAX_JOB_PLANS: usize = 1 << 20;
