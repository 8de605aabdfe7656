//! The seams between pipeline stages: what crosses each one, and where it may go.
//!
//! Standalone, every stage runs on the shard that owns the service and data crosses a seam by
//! plain function call, with no copy, lock or dynamic dispatch: the job carries the shard's
//! `Rc<Plan>`, the result is moved into the judge. Cluster mode cuts the same pipeline at the
//! same seams and sends what crosses them to another process instead (the scheduler role
//! dispatches jobs to workers, a worker forwards results to ingest). Each route is a two-case
//! enum rather than a trait object so the per-probe path stays a predictable branch.

use std::rc::Rc;
use std::time::Instant;

use crate::model::{ProbeResult, ServiceSpec, UnixMillis};
use crate::probe::plan::Plan;
use crate::rt::outbox::Outbox;
use crate::rt::table::SlotId;

/// A probe that is due, from the scheduler to a prober on the same shard. It exists so the
/// scheduler never calls the prober directly: what it hands over is this value, and the shard
/// decides (by its [`JobRoute`]) whether it is probed here or dispatched.
pub struct Job {
    /// The service's plan (shared with its table slot, not copied).
    pub plan: Rc<Plan>,
    /// Where the service lives in the shard's table (the result goes back there).
    pub slot: SlotId,
    /// When the scheduler planned it (schedule lag is measured from here).
    pub planned: Instant,
}

/// A job as it leaves the process: what a remote worker needs to probe without a database
/// read. `Send`, unlike [`Job`].
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// The definition to probe.
    pub spec: std::sync::Arc<ServiceSpec>,
    /// The planned start: with the service id, the idempotency key of the result.
    pub scheduled_at: UnixMillis,
    /// After this the job is useless and is acknowledged as expired, never probed late.
    pub deadline: UnixMillis,
}

/// Where the scheduler's due jobs go.
pub enum JobRoute {
    /// Probe on this shard (standalone).
    Probe,
    /// Send to remote workers (cluster scheduler role). Slots are deterministic per service
    /// (`sched::slot_after`), so every scheduler plans the same ones.
    Dispatch(Outbox<Dispatch>),
    /// Plan nothing: the services are known here (API, snapshots, status) but probed through
    /// another node's jobs (cluster nodes without the scheduler role).
    Hold,
}

/// A result on its way out of the process: the job it answers (acknowledged once the result
/// is written) and what judging it elsewhere needs.
#[derive(Debug)]
pub struct Forwarded {
    /// The jobs stream entry this answers.
    pub entry: std::sync::Arc<str>,
    /// The result.
    pub result: ProbeResult,
    /// The definition probed (name and thresholds travel with the result).
    pub spec: std::sync::Arc<ServiceSpec>,
    /// When the probe ended.
    pub ended_at: UnixMillis,
    /// The job's scheduler epoch.
    pub epoch: u64,
}

/// Where a finished probe's result goes.
pub enum ResultRoute {
    /// Into this shard's judge (the state machine), then the store and the fan-out.
    Judge,
    /// To remote ingest processes, which judge it (cluster worker role).
    Forward(Outbox<Forwarded>),
}

/// A shard's routes across the seams; standalone is `Probe` and `Judge`.
pub struct Routes {
    /// Scheduler -> prober.
    pub jobs: JobRoute,
    /// Prober -> judge.
    pub results: ResultRoute,
}

impl Routes {
    /// Everything on this shard.
    pub fn local() -> Routes {
        Routes {
            jobs: JobRoute::Probe,
            results: ResultRoute::Judge,
        }
    }
}
