//! The scheduler's side of the jobs stream: due jobs from the shards' timer wheels, written in
//! batches by a script fenced on the lease.
//!
//! Every node with the scheduler role plans every slot (the slots are deterministic, so they
//! all plan the same ones); only the lease holder writes them. A standby keeps the slots it
//! planned during the last two lease TTLs: when it takes over, it sends those whose deadline
//! has not passed, so the slots a dead holder planned but never sent are still probed (a slot
//! sent twice is probed twice and stored once). Slots whose deadline passed first are counted
//! as expired at dispatch, like jobs that could not be sent while Redis was away.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::link::{pause, Link, RETRY_PAUSE};
use super::{RemoteError, JOBS, LEASE};
use crate::model::UnixMillis;
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
            if holder && !self.was_holder {
                self.take_over();
            }
            self.was_holder = holder;
            self.expire(holder);
            if !holder || self.held.is_empty() {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            let mut c = match con.take() {
                Some(c) => c,
                None => self.link.connect("dispatch", Duration::from_secs(5)).await,
            };
            match self.send(&mut c).await {
                Ok(()) => con = Some(c),
                Err(e) => {
                    self.link.failed("dispatch", &e);
                    pause(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Just became the holder: what the standby kept is sent (counted as backfill).
    fn take_over(&mut self) {
        let n = self.held.len() as u64;
        self.link
            .counters
            .backfilled
            .fetch_add(n, Ordering::Relaxed);
        tracing::info!(
            jobs = n,
            "takeover: re-sending the slots planned during the last lease window"
        );
    }

    /// Drops what can no longer be useful: past its deadline (counted when this node should
    /// have sent it), or, on a standby, older than the takeover window (the holder sent it).
    fn expire(&mut self, holder: bool) {
        let now = UnixMillis::now();
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        while let Some(front) = self.held.front() {
            let stale = if holder {
                front.deadline.0 < now.0
            } else {
                front.scheduled_at.0 < now.0 - window || front.deadline.0 < now.0
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
