//! The scheduler's side of the jobs stream: due jobs from the shards' timer wheels, written in
//! batches by a script fenced on the lease.
//!
//! Every node with the scheduler role plans every slot (the slots are deterministic, so they
//! all plan the same ones); only the lease holder writes them. A standby keeps the slots it
//! planned during the last `window`. When it takes over, it reads back the jobs written during
//! that window and reconciles: a slot already written is dropped, one whose deadline has not
//! passed is written (so the slots a dead holder planned but never sent are still probed), and
//! one whose deadline passed before anyone wrote it is counted as expired at dispatch, like
//! jobs that could not be written while Redis was away. So every planned slot is either written
//! or counted.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

use super::link::{pause, Link, RETRY_PAUSE};
use super::{reply, RemoteError, JOBS, LEASE};
use crate::model::{ServiceId, UnixMillis};
use crate::pipeline::seam::Dispatch;
use crate::rt::outbox::Inbox;
use crate::wire::entry::{JobEntry, SpecWire};

/// Adds jobs only while this node holds the lease: KEYS[1] lease, KEYS[2] jobs stream;
/// ARGV[1] node, ARGV[2] MAXLEN, ARGV[3..] job documents (in field `j`, `wire::entry::FIELD`).
/// Returns the number added, or -1 when the lease is someone else's.
const FENCED_XADD: &str = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end \
    for i = 3, #ARGV do \
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'j', ARGV[i]) \
    end \
    return #ARGV - 2";

/// How long an idle dispatcher sleeps between looks at the outbox (jobs wait at most this).
const IDLE: Duration = Duration::from_millis(2);

/// The dispatcher's state.
pub struct Dispatcher {
    link: Link,
    inbox: Inbox<Dispatch>,
    /// Jobs taken from the outbox, not yet written (standby: the recent window).
    held: VecDeque<Dispatch>,
    batch: usize,
    maxlen: u64,
    window: Duration,
    was_holder: bool,
}

impl Dispatcher {
    /// A dispatcher reading `inbox`; `window` is how far back a takeover re-sends.
    pub fn new(
        link: Link,
        inbox: Inbox<Dispatch>,
        batch: usize,
        maxlen: u64,
        window: Duration,
    ) -> Self {
        Dispatcher {
            link,
            inbox,
            held: VecDeque::new(),
            batch,
            maxlen,
            window,
            was_holder: false,
        }
    }

    /// Runs for ever.
    pub async fn run(mut self) {
        let mut con: Option<MultiplexedConnection> = None;
        loop {
            self.held.extend(self.inbox.rx.try_iter());
            let holder = self.link.counters.lease_held.load(Ordering::Acquire);
            if !holder {
                self.was_holder = false;
            }
            self.expire(holder && self.was_holder);
            if !holder || self.held.is_empty() {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            let mut c = match con.take() {
                Some(c) => c,
                None => self.link.connect("dispatch", Duration::from_secs(5)).await,
            };
            let step = if self.was_holder {
                self.send(&mut c).await
            } else {
                self.take_over(&mut c).await
            };
            match step {
                Ok(()) => con = Some(c),
                Err(e) => {
                    self.link.failed("dispatch", &e);
                    pause(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Just became the holder: reconciles what the standby kept with what the jobs stream
    /// holds (see the module doc).
    async fn take_over(&mut self, c: &mut MultiplexedConnection) -> Result<(), RemoteError> {
        let Some(oldest) = self.held.iter().map(|d| d.scheduled_at.0).min() else {
            self.was_holder = true;
            return Ok(());
        };
        // Jobs are written at or after their slot, so entry ids (ms) from the oldest held slot
        // on cover every job written for the held slots.
        let written = written_since(c, oldest).await?;
        let now = UnixMillis::now();
        let (mut backfill, mut expired, mut present) = (0u64, 0u64, 0u64);
        self.held.retain(|d| {
            if written.contains(&(d.spec.id, d.scheduled_at.0)) {
                present += 1;
                false
            } else if d.deadline.0 < now.0 {
                expired += 1;
                false
            } else {
                backfill += 1;
                true
            }
        });
        let counters = &self.link.counters;
        counters.backfilled.fetch_add(backfill, Ordering::Relaxed);
        counters
            .expired_dispatch
            .fetch_add(expired, Ordering::Relaxed);
        tracing::info!(
            already_written = present,
            backfill,
            expired,
            "takeover: slots of the last window reconciled with the jobs stream"
        );
        self.was_holder = true;
        Ok(())
    }

    /// Drops what can no longer be useful: as the holder, jobs past their deadline (counted:
    /// this node should have sent them); as a standby, slots older than the takeover window
    /// (a takeover after that long would not know whether they were written).
    fn expire(&mut self, holder: bool) {
        let now = UnixMillis::now();
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        while let Some(front) = self.held.front() {
            let stale = if holder {
                front.deadline.0 < now.0
            } else {
                front.scheduled_at.0 < now.0 - window
            };
            if !stale {
                break;
            }
            if holder {
                self.link
                    .counters
                    .expired_dispatch
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.held.pop_front();
        }
        // The outbox bounds what arrives; a standby's window bounds what it keeps; a holder
        // cut off from Redis keeps at most this much (the rest expires as counted above).
        let cap = self.batch * 4096;
        while self.held.len() > cap {
            self.held.pop_front();
            self.link
                .counters
                .expired_dispatch
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes up to one batch; keeps it on failure.
    async fn send(&mut self, c: &mut MultiplexedConnection) -> Result<(), RemoteError> {
        let n = self.held.len().min(self.batch);
        let epoch = self.link.counters.epoch.load(Ordering::Acquire);
        let script = redis::Script::new(FENCED_XADD);
        let mut inv = script.key(LEASE);
        inv.key(JOBS).arg(&*self.link.node).arg(self.maxlen);
        for d in self.held.iter().take(n) {
            let job = JobEntry {
                spec: SpecWire::from(&*d.spec),
                scheduled_at: d.scheduled_at.0,
                deadline: d.deadline.0,
                epoch,
            };
            match serde_json::to_string(&job) {
                Ok(doc) => {
                    inv.arg(doc);
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a job"),
            }
        }
        let added: i64 = inv.invoke_async(c).await?;
        if added < 0 {
            // The lease moved; the lease task will notice and stand down.
            tracing::warn!("jobs refused: the scheduler lease is held by another node");
            self.link
                .counters
                .lease_held
                .store(false, Ordering::Release);
            return Ok(());
        }
        self.held.drain(..n);
        self.link
            .counters
            .dispatched
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The (service, slot) of every job written to the stream since `from_ms`.
async fn written_since(
    c: &mut MultiplexedConnection,
    from_ms: i64,
) -> Result<HashSet<(ServiceId, i64)>, RemoteError> {
    const PAGE: usize = 4096;
    let mut out = HashSet::new();
    let mut start = format!("{}-0", from_ms.max(0));
    loop {
        let v: Value = redis::cmd("XRANGE")
            .arg(JOBS)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(c)
            .await?;
        let entries = reply::entries("XRANGE", &v)?;
        for e in &entries {
            if let Ok(job) = serde_json::from_slice::<JobEntry>(e.payload()) {
                if let Ok(spec) = crate::model::ServiceSpec::try_from(job.spec) {
                    out.insert((spec.id, job.scheduled_at));
                }
            }
        }
        match entries.last() {
            Some(last) if entries.len() == PAGE => start = format!("({}", last.id),
            _ => return Ok(out),
        }
    }
}
