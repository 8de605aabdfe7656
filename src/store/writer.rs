//! The storage writer thread: one owner of the store's write side, fed by the shards' lanes.
//!
//! Results arrive in a bounded lane and are committed in large batches (one transaction per
//! batch, filled for up to `flush_interval`). Decided transitions arrive in their own lane and
//! preempt that: the writer numbers them (seq continues after the stored maximum, in commit
//! order, so seq is gap-free), commits them at once, and only then publishes them to the
//! fan-out. A client therefore never sees a transition the store does not hold, and after a
//! crash no seq a client saw can be handed to another transition. A failing store keeps the
//! batch in hand and retries with capped backoff; `Writer::finish` drains everything accepted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::handle::{RegistryHandle, RegistryWrite, StoreHandle};
use super::{Record, StoreCounters, StoreError, StoreInfo, StoreWriter, TransitionRecord};
use crate::config::StorageConfig;
use crate::model::{ProbeResult, ServiceSpec, Transition, UnixMillis};

/// How often a filling batch looks at the queue: often enough to notice a full batch soon,
/// rarely enough to cost nothing.
const GATHER_STEP: Duration = Duration::from_millis(20);

/// Decided transitions waiting for a commit, at most. Past it the lane refuses and shards
/// defer the change (see `handle`); the slots are allocated up front, so it is kept modest.
pub const TRANSITION_LANE: usize = 16_384;

/// Knobs of the writer loop that the config does not expose; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// First retry delay after a failed append.
    pub backoff_min: Duration,
    /// Retry delay cap.
    pub backoff_max: Duration,
    /// After `finish`, how long a failing store is retried before queued records are abandoned.
    pub shutdown_budget: Duration,
    /// Retention passes start at most this often.
    pub prune_every: Duration,
    /// Rows deleted per retention step; batches are committed between steps.
    pub prune_chunk: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            shutdown_budget: Duration::from_secs(15),
            prune_every: Duration::from_secs(60),
            prune_chunk: 2000,
        }
    }
}

/// The writer thread; `finish` drains the queue completely and joins it.
pub struct Writer {
    thread: Option<JoinHandle<Result<(), StoreError>>>,
    /// Dropping it disconnects the writer's stop receiver: that is the stop signal, and it
    /// wakes the writer at once wherever it waits (queue, backoff).
    stop: Option<Sender<()>>,
    /// Requests that must run on the thread owning the store.
    ctrl: Sender<Command>,
}

/// A request to the writer thread, answered on its reply channel.
pub(super) enum Command {
    /// Run `Store::sync_services` with this set.
    Sync(Vec<ServiceSpec>, Sender<Result<(), StoreError>>),
    /// A registry change made over the API; the reply is awaited on a shard.
    Api(
        RegistryWrite,
        futures_channel::oneshot::Sender<Result<(), StoreError>>,
    ),
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

/// Where committed transitions go next: the fan-out. The store knows nothing of shards or
/// clients; whoever spawns the writer says what publishing means (standalone: encode once and
/// hand to every shard through the mesh).
pub trait Publish: Send {
    /// One committed transition, with the definition (for tag filters) and the time its
    /// deciding probe ended (push latency is measured from it).
    fn transition(&mut self, t: &Transition, spec: &Arc<ServiceSpec>, born: Instant);
    /// The end of a committed batch: wake the receivers once.
    fn flush(&mut self) {}
}

/// Publishes nowhere (tools and tests that only store).
struct Nowhere;

impl Publish for Nowhere {
    fn transition(&mut self, _: &Transition, _: &Arc<ServiceSpec>, _: Instant) {}
}

/// The latest seq committed and published: what `hello`, `subscribed` and the API report.
/// Written by the writer after each publish, read by any shard.
#[derive(Clone, Debug, Default)]
pub struct LatestSeq(Arc<AtomicU64>);

impl LatestSeq {
    /// The latest published seq (0 when none).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Advances it (the writer after a publish; a cluster node's events reader).
    pub fn set(&self, seq: u64) {
        self.0.store(seq, Ordering::Release);
    }
}

/// What `Writer::spawn` returns: the writer, the shards' handle, the latest seq, and what the
/// store held at start.
pub struct Spawned {
    /// The writer thread.
    pub writer: Writer,
    /// The shards' lanes.
    pub handle: StoreHandle,
    /// The latest committed and published seq.
    pub latest: LatestSeq,
    /// What the store held at start.
    pub info: StoreInfo,
}

impl Writer {
    /// Opens the store on a new writer thread that publishes nowhere (tools, tests).
    pub fn spawn(
        store: Box<dyn StoreWriter>,
        cfg: &StorageConfig,
    ) -> Result<(Writer, StoreHandle, StoreInfo), StoreError> {
        Self::spawn_tuned(store, cfg, Tuning::default())
    }

    /// `spawn` with explicit loop knobs.
    pub(crate) fn spawn_tuned(
        store: Box<dyn StoreWriter>,
        cfg: &StorageConfig,
        tuning: Tuning,
    ) -> Result<(Writer, StoreHandle, StoreInfo), StoreError> {
        let s = Self::start(store, cfg, tuning, Box::new(Nowhere))?;
        Ok((s.writer, s.handle, s.info))
    }

    /// Opens the store on a new writer thread that hands every committed transition to
    /// `publish`.
    pub fn spawn_publishing(
        store: Box<dyn StoreWriter>,
        cfg: &StorageConfig,
        publish: Box<dyn Publish>,
    ) -> Result<Spawned, StoreError> {
        Self::start(store, cfg, Tuning::default(), publish)
    }

    /// `spawn_publishing` with explicit loop knobs.
    pub(crate) fn start(
        mut store: Box<dyn StoreWriter>,
        cfg: &StorageConfig,
        tuning: Tuning,
        publish: Box<dyn Publish>,
    ) -> Result<Spawned, StoreError> {
        // A zero-capacity crossbeam channel is a rendezvous: try_send would nearly always fail.
        let capacity = cfg.queue_capacity.max(1);
        let (tx, rx) = bounded(capacity);
        let (ttx, trx) = bounded(TRANSITION_LANE);
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (ctrl_tx, ctrl_rx) = bounded::<Command>(256);
        let (ready_tx, ready_rx) = bounded::<Result<StoreInfo, StoreError>>(1);
        let counters = Arc::new(StoreCounters::default());
        store.attach(counters.clone());
        let latest = LatestSeq::default();
        let run = Run {
            rx,
            trx,
            stop_rx,
            ctrl_rx,
            counters: counters.clone(),
            publish,
            latest: latest.clone(),
            next_seq: 1,
            decided: Vec::new(),
            batch_size: cfg.batch_size.max(1),
            // A zero wait would spin the thread while idle.
            flush_interval: cfg.flush_interval.max(Duration::from_millis(1)),
            batch_deadline: None,
            retention: cfg.retention,
            tuning,
            stopped_at: None,
            prune_cutoff: None,
            next_prune: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("ringwatch-store".into())
            .spawn(move || run.open_and_run(store.as_mut(), ready_tx))
            .map_err(|e| StoreError::Io {
                op: "spawn writer thread",
                reason: e.to_string(),
            })?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok(Spawned {
                writer: Writer {
                    thread: Some(thread),
                    stop: Some(stop_tx),
                    ctrl: ctrl_tx,
                },
                handle: StoreHandle::new(counters, tx, ttx, capacity),
                latest,
                info,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(StoreError::Io {
                    op: "open store",
                    reason: "writer thread panicked".into(),
                })
            }
        }
    }

    /// Runs `Store::sync_services(services)` on the writer thread (which owns the store after
    /// `spawn`), e.g. on SIGHUP, and waits for it at most `timeout`. While the store is failing
    /// the request waits behind the batch being retried; on timeout it still runs later.
    pub fn sync_services(
        &self,
        services: Vec<ServiceSpec>,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let (reply_tx, reply_rx) = bounded(1);
        let busy = |reason: String| StoreError::Io {
            op: "sync services",
            reason,
        };
        self.ctrl
            .send_timeout(Command::Sync(services, reply_tx), timeout)
            .map_err(|_| busy(format!("writer busy or stopped (waited {timeout:?})")))?;
        reply_rx
            .recv_timeout(timeout)
            .map_err(|_| busy(format!("no answer from the writer within {timeout:?}")))?
    }

    /// A handle shards use to persist API-defined services on the writer thread.
    pub fn registry(&self) -> RegistryHandle {
        RegistryHandle {
            ctrl: self.ctrl.clone(),
        }
    }

    /// Stops accepting, writes everything still queued, and joins the thread.
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), StoreError> {
        drop(self.stop.take());
        match self.thread.take() {
            None => Ok(()),
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(StoreError::Io {
                    op: "store writer",
                    reason: "writer thread panicked".into(),
                })
            }),
        }
    }
}

impl Drop for Writer {
    /// A writer dropped without `finish` still drains: losing accepted records silently would
    /// be worse than a slow drop.
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            tracing::error!(error = %e, "store writer stopped with an error");
        }
    }
}

/// State of the writer loop.
struct Run {
    rx: Receiver<ProbeResult>,
    trx: Receiver<TransitionRecord>,
    stop_rx: Receiver<()>,
    ctrl_rx: Receiver<Command>,
    counters: Arc<StoreCounters>,
    publish: Box<dyn Publish>,
    latest: LatestSeq,
    /// The seq the next committed transition gets.
    next_seq: u64,
    /// Transitions taken from their lane, waiting for their commit.
    decided: Vec<TransitionRecord>,
    batch_size: usize,
    flush_interval: Duration,
    /// When the results batch being filled must be committed.
    batch_deadline: Option<Instant>,
    retention: Option<Duration>,
    tuning: Tuning,
    /// When the stop signal arrived; from then on the loop drains and exits.
    stopped_at: Option<Instant>,
    /// Cutoff of the retention pass in progress.
    prune_cutoff: Option<UnixMillis>,
    /// Earliest start of the next retention pass.
    next_prune: Instant,
}

impl Run {
    /// Opens (migrates) the store on this thread, so the first query never runs on the
    /// caller's, reports what it holds on `ready`, then runs the loop.
    fn open_and_run(
        mut self,
        store: &mut dyn StoreWriter,
        ready: Sender<Result<StoreInfo, StoreError>>,
    ) -> Result<(), StoreError> {
        match store.open_info() {
            Ok(info) => {
                self.next_seq = info.max_seq + 1;
                self.latest.set(info.max_seq);
                let _ = ready.send(Ok(info));
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return Ok(());
            }
        }
        self.run(store)
    }

    fn run(&mut self, store: &mut dyn StoreWriter) -> Result<(), StoreError> {
        let mut batch: Vec<Record> = Vec::with_capacity(self.batch_size);
        loop {
            if self.stopped_at.is_none() && batch.is_empty() && self.trx.is_empty() {
                self.idle(store, &mut batch);
            }
            if !batch.is_empty() && self.batch_deadline.is_none() {
                self.batch_deadline = Some(Instant::now() + self.flush_interval);
            }
            self.gather(store, &mut batch);
            // Transitions never wait behind a filling results batch.
            self.commit_transitions(store)?;
            if !batch.is_empty() && self.batch_due(&batch) {
                self.commit(store, &batch)?;
                batch.clear();
                self.batch_deadline = None;
            }
            if self.stopped_at.is_some()
                && batch.is_empty()
                && self.rx.is_empty()
                && self.trx.is_empty()
            {
                return Ok(());
            }
        }
    }

    /// Waits (for at most `flush_interval`) for the first record, a command or the stop
    /// signal, running retention steps while nothing else is due.
    fn idle(&mut self, store: &mut dyn StoreWriter, batch: &mut Vec<Record>) {
        self.prune_step(store);
        // While a retention pass runs, only peek at the lanes between its steps.
        let wait = if self.prune_cutoff.is_some() {
            Duration::ZERO
        } else {
            self.flush_interval
        };
        select! {
            recv(self.rx) -> msg => match msg {
                Ok(r) => batch.push(Record::Result(r)),
                // Every handle is gone: nothing more can arrive.
                Err(_) => self.stop(),
            },
            recv(self.trx) -> msg => {
                if let Ok(t) = msg {
                    self.decided.push(t);
                }
            },
            recv(self.stop_rx) -> _ => self.stop(),
            recv(self.ctrl_rx) -> cmd => {
                if let Ok(cmd) = cmd {
                    Self::control(store, cmd);
                }
            },
            default(wait) => {}
        }
    }

    /// True when the results batch must be committed now.
    fn batch_due(&self, batch: &[Record]) -> bool {
        batch.len() >= self.batch_size
            || self.stopped_at.is_some()
            || self.prune_cutoff.is_some()
            || self.batch_deadline.is_none_or(|d| Instant::now() >= d)
    }

    /// Lets a started batch fill until it is due, returning early when a transition arrives.
    /// It deliberately does not block on the results lane meanwhile: a blocked receiver turns
    /// every push into a futex wake on the pushing shard, and committing each record as it
    /// arrives costs several times more per row than one large commit.
    fn gather(&mut self, store: &mut dyn StoreWriter, batch: &mut Vec<Record>) {
        loop {
            while batch.len() < self.batch_size {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(Record::Result(r)),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.stop();
                        break;
                    }
                }
            }
            if batch.is_empty() || self.batch_due(batch) || !self.trx.is_empty() {
                return;
            }
            let left = self.batch_deadline.map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            });
            select! {
                recv(self.trx) -> msg => {
                    if let Ok(t) = msg {
                        self.decided.push(t);
                    }
                    return;
                },
                recv(self.stop_rx) -> _ => self.stop(),
                recv(self.ctrl_rx) -> cmd => {
                    if let Ok(cmd) = cmd {
                        Self::control(store, cmd);
                    }
                },
                default(left.min(GATHER_STEP)) => {}
            }
        }
    }

    /// Numbers every waiting transition in arrival order, commits them in one transaction,
    /// then publishes them: a seq is never shown before it is stored.
    fn commit_transitions(&mut self, store: &mut dyn StoreWriter) -> Result<(), StoreError> {
        self.decided.extend(self.trx.try_iter());
        if self.decided.is_empty() {
            return Ok(());
        }
        let first = self.next_seq;
        let numbered: Vec<Record> = self
            .decided
            .iter()
            .zip(first..)
            .map(|(d, seq)| Record::Transition(d.decided.numbered(seq)))
            .collect();
        self.commit(store, &numbered)?;
        self.next_seq = first + numbered.len() as u64;
        for (rec, d) in numbered.iter().zip(self.decided.drain(..)) {
            if let Record::Transition(t) = rec {
                self.publish.transition(t, &d.spec, d.born);
            }
        }
        self.publish.flush();
        self.counters
            .published
            .fetch_add(numbered.len() as u64, Ordering::Relaxed);
        self.latest.set(self.next_seq - 1);
        Ok(())
    }

    fn control(store: &mut dyn StoreWriter, cmd: Command) {
        match cmd {
            Command::Sync(services, reply) => {
                let r = store.sync_services(&services);
                if let Err(e) = &r {
                    tracing::warn!(error = %e, "service registry sync failed");
                }
                // The caller may have timed out and gone; the sync happened regardless.
                let _ = reply.send(r);
            }
            Command::Api(w, reply) => {
                let r = match &w {
                    RegistryWrite::Upsert(spec) => store.upsert_api_service(spec),
                    RegistryWrite::Delete(id) => store.delete_api_service(*id),
                };
                if let Err(e) = &r {
                    tracing::warn!(error = %e, "API registry write failed");
                }
                let _ = reply.send(r);
            }
        }
    }

    fn stop(&mut self) {
        if self.stopped_at.is_none() {
            self.stopped_at = Some(Instant::now());
            tracing::debug!(queued = self.rx.len(), "store writer draining");
        }
    }

    /// Appends `batch` until it commits. Fails only after `finish` when the
    /// store stayed down past the shutdown budget; queued records are then abandoned.
    fn commit(&mut self, store: &mut dyn StoreWriter, batch: &[Record]) -> Result<(), StoreError> {
        let mut backoff = self.tuning.backoff_min;
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            let appended = store.append(batch);
            self.counters
                .batch_done(appended.is_ok(), started.elapsed());
            let err = match appended {
                Ok(()) => {
                    self.counters
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::info!(failures, records = batch.len(), "store append recovered");
                    }
                    return Ok(());
                }
                Err(e) => e,
            };
            failures += 1;
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %err,
                records = batch.len(),
                queued = self.rx.len(),
                retry_in_ms = backoff.as_millis() as u64,
                "store append failed; keeping the batch and retrying"
            );
            match self.stopped_at {
                None => {
                    // Sleep, but wake at once on the stop signal (then the shutdown budget
                    // applies).
                    if let Err(RecvTimeoutError::Disconnected) = self.stop_rx.recv_timeout(backoff)
                    {
                        self.stop();
                    }
                }
                Some(at) => {
                    let left = self.tuning.shutdown_budget.saturating_sub(at.elapsed());
                    if left.is_zero() {
                        let lost = (batch.len()
                            + self.rx.try_iter().count()
                            + self.trx.try_iter().count())
                            as u64;
                        self.counters.abandoned.fetch_add(lost, Ordering::Relaxed);
                        tracing::error!(
                            error = %err,
                            abandoned = lost,
                            "store still failing at shutdown; abandoning queued records"
                        );
                        return Err(err);
                    }
                    std::thread::sleep(backoff.min(left));
                }
            }
            backoff = (backoff * 2).min(self.tuning.backoff_max);
        }
    }

    /// Runs one bounded retention step when a pass is due or in progress.
    fn prune_step(&mut self, store: &mut dyn StoreWriter) {
        let Some(retention) = self.retention else {
            return;
        };
        let cutoff = match self.prune_cutoff {
            Some(c) => c,
            None => {
                let now = Instant::now();
                if now < self.next_prune {
                    return;
                }
                self.next_prune = now + self.tuning.prune_every;
                let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                let c = UnixMillis(UnixMillis::now().0.saturating_sub(keep_ms));
                self.prune_cutoff = Some(c);
                c
            }
        };
        match store.prune(cutoff, self.tuning.prune_chunk) {
            Ok(p) => {
                self.counters.pruned.fetch_add(p.deleted, Ordering::Relaxed);
                if p.done {
                    self.prune_cutoff = None;
                    tracing::debug!(cutoff = cutoff.0, "retention pass done");
                }
            }
            Err(e) => {
                // Give the pass up until the next minute rather than hammer a failing store.
                self.prune_cutoff = None;
                tracing::warn!(error = %e, "retention step failed");
            }
        }
    }
}
