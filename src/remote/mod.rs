//! Cluster transport: the only code that knows Redis.
//!
//! Redis Streams carry what crosses a process boundary in cluster mode; PostgreSQL stays the
//! source of truth (losing Redis's contents can lose in-flight probes, counted, never a stored
//! result or transition). Three streams:
//!
//! - `ringwatch:jobs`: the active scheduler's planned slots (`wire::entry::JobEntry`), read by
//!   workers through the consumer group `workers`;
//! - `ringwatch:results`: workers' results (`wire::entry::ResultEntry`), read by ingest
//!   processes through the group `ingest`;
//! - `ringwatch:events`: committed transitions, entry id `<seq>-0`, payload the encoded event;
//!   every node reads it whole (no group).
//!
//! Everything here runs on cluster side threads, each with its own small tokio runtime (or a
//! blocking connection where the work is blocking anyway); shards reach it through bounded
//! outboxes and are reached back through the mesh (`Sinks`). Every connection is retried with
//! capped backoff and a log line; a node never exits because Redis is away for a while.

pub mod dispatch;
pub mod events;
pub mod lease;
pub mod link;
pub mod reply;
pub mod status;
pub mod worker;

use std::sync::Arc;

use crate::model::ServiceId;
use crate::pipeline::event::Event;
use crate::wire::entry::JobEntry;

pub use link::Link;
pub use status::{ClusterCounters, ClusterHandle, ClusterSnapshot};

/// Stream of probe jobs.
pub const JOBS: &str = "ringwatch:jobs";
/// Stream of probe results.
pub const RESULTS: &str = "ringwatch:results";
/// Stream of committed transitions (entry id = seq).
pub const EVENTS: &str = "ringwatch:events";
/// Consumer group of the workers on `JOBS`.
pub const WORKERS: &str = "workers";
/// Consumer group of the ingest processes on `RESULTS`.
pub const INGEST: &str = "ingest";
/// The scheduler lease key (value: the holder's node name).
pub const LEASE: &str = "ringwatch:scheduler:lease";
/// The fencing epoch, incremented on every takeover.
pub const EPOCH: &str = "ringwatch:scheduler:epoch";

/// Why a Redis exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The client or the server said no.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply did not have the expected shape.
    #[error("unexpected reply to {cmd}: {what}")]
    Reply {
        /// The command.
        cmd: &'static str,
        /// What was wrong.
        what: String,
    },
}

/// A job read from the jobs stream, ready for a shard: the decoded definition and the entry
/// id to acknowledge once its result is written.
#[derive(Debug, Clone)]
pub struct RemoteJob {
    /// The stream entry id (acknowledged after the result is written).
    pub entry: Arc<str>,
    /// The definition to probe.
    pub spec: Arc<crate::model::ServiceSpec>,
    /// The planned slot.
    pub scheduled_at: crate::model::UnixMillis,
    /// Past this the job is useless.
    pub deadline: crate::model::UnixMillis,
    /// The scheduler epoch that planned it.
    pub epoch: u64,
}

impl RemoteJob {
    /// Decodes a job entry; `entry` is its stream id.
    pub fn decode(
        entry: &str,
        payload: &[u8],
    ) -> Result<RemoteJob, crate::wire::entry::EntryError> {
        let job: JobEntry = serde_json::from_slice(payload)?;
        Ok(RemoteJob {
            entry: entry.into(),
            spec: Arc::new(crate::model::ServiceSpec::try_from(job.spec)?),
            scheduled_at: crate::model::UnixMillis(job.scheduled_at),
            deadline: crate::model::UnixMillis(job.deadline),
            epoch: job.epoch,
        })
    }
}

/// How the cluster side threads reach the shards (implemented by the roles layer, which knows
/// the mesh): the transport knows nothing of shards.
pub trait Sinks: Send + Sync {
    /// A job for the shard that owns its service.
    fn job(&self, job: RemoteJob) -> bool;
    /// A committed transition event for every shard's clients; `to`/`at` update the owner's
    /// view of the service's status.
    fn event(
        &self,
        event: Arc<Event>,
        service: ServiceId,
        to: crate::model::Status,
        at: crate::model::UnixMillis,
    );
}
