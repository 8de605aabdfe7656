//! The storage writer thread and the shards' producer handle.
//!
//! Shards `push` into a bounded crossbeam channel (never blocking; full = dropped and counted).
//! One writer thread drains it into the `Store`, one transaction per batch. A failing store
//! keeps the batch in hand and retries with capped backoff while the queue absorbs (then
//! drops) new records. `Writer::finish` drains everything accepted before it was called.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::{Record, StoreCounters, StoreError, StoreInfo, StoreWriter};
use crate::config::StorageConfig;
use crate::model::{ServiceSpec, UnixMillis};

/// Minimum gap between two "queue full" warnings, so a flood of drops logs once per window.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);
/// How often a filling batch looks at the queue: often enough to notice a full batch soon,
/// rarely enough to cost nothing.
const GATHER_STEP: Duration = Duration::from_millis(20);

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

/// Rate limiter for the "queue full" warning, shared by all clones of a handle.
#[derive(Debug)]
struct DropWarn {
    /// Reference point for `last`.
    start: Instant,
    /// Milliseconds after `start` of the last warning plus one (0 = never warned).
    last: AtomicU64,
}

/// Cloneable, `Send` producer side of the writer queue; `push` never blocks.
#[derive(Clone)]
pub struct StoreHandle {
    /// Shared counters.
    pub counters: Arc<StoreCounters>,
    tx: Sender<Record>,
    capacity: usize,
    warn: Arc<DropWarn>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("depth", &self.tx.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Queues a record for the writer; when the queue is full the record is dropped, counted,
    /// and `false` returned. Never blocks, never allocates beyond the record itself.
    pub fn push(&self, rec: Record) -> bool {
        match self.tx.try_send(rec) {
            Ok(()) => {
                self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                true
            }
            // Full, or the writer is gone (after finish): either way the record is lost here.
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.warn_dropped();
                false
            }
        }
    }

    /// Records waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// The queue bound.
    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// The store's families; `seq` is the latest transition seq.
    pub fn render(&self, w: &mut crate::metrics::Exposition, seq: u64) {
        let c = &self.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        w.single(
            "ringwatch_transition_seq",
            "gauge",
            "Latest global transition sequence number.",
            seq as f64,
        );
        let gauges = [
            (
                "ringwatch_store_queue_depth",
                "Records waiting for the storage writer.",
                self.queue_depth() as f64,
            ),
            (
                "ringwatch_store_queue_capacity",
                "Bound of the storage writer queue.",
                self.capacity as f64,
            ),
        ];
        for (name, help, v) in gauges {
            w.single(name, "gauge", help, v);
        }
        let counters = [
            (
                "ringwatch_store_written_total",
                "Records committed to the store.",
                load(&c.written),
            ),
            (
                "ringwatch_store_dropped_total",
                "Records (results and transitions) dropped because the writer queue was full.",
                load(&c.dropped),
            ),
            (
                "ringwatch_store_failed_batches_total",
                "Store batches that failed to commit (and were retried).",
                load(&c.failed_batches),
            ),
            (
                "ringwatch_store_abandoned_total",
                "Records given up at shutdown because the store stayed down.",
                load(&c.abandoned),
            ),
            (
                "ringwatch_store_pruned_total",
                "Rows deleted by retention.",
                load(&c.pruned),
            ),
        ];
        for (name, help, v) in counters {
            w.single(name, "counter", help, v);
        }
        c.render_backend(w);
    }

    /// Logs at most one warning per `DROP_WARN_EVERY` across all shards.
    fn warn_dropped(&self) {
        let now = self.warn.start.elapsed().as_millis() as u64 + 1;
        let last = self.warn.last.load(Ordering::Relaxed);
        if last != 0 && now < last + DROP_WARN_EVERY.as_millis() as u64 {
            return;
        }
        // Only the shard that wins the exchange logs.
        if self
            .warn
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                dropped_total = self.counters.dropped.load(Ordering::Relaxed),
                capacity = self.capacity,
                "store queue full or writer stopped; dropping records"
            );
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
enum Command {
    /// Run `Store::sync_services` with this set.
    Sync(Vec<ServiceSpec>, Sender<Result<(), StoreError>>),
    /// A registry change made over the API; the reply is awaited on a shard.
    Api(
        RegistryWrite,
        futures_channel::oneshot::Sender<Result<(), StoreError>>,
    ),
}

/// A change to one API-defined service's registry row.
#[derive(Debug, Clone)]
pub enum RegistryWrite {
    /// Insert or replace the row (`source = 'api'`).
    Upsert(std::sync::Arc<ServiceSpec>),
    /// Mark the row deleted; results stay.
    Delete(crate::model::ServiceId),
}

/// Cloneable, `Send` handle for API registry writes; usable from a shard without blocking.
#[derive(Clone)]
pub struct RegistryHandle {
    ctrl: Sender<Command>,
}

impl RegistryHandle {
    /// Queues `w` for the writer thread and awaits its commit. A full control queue fails at
    /// once (the caller answers 503) rather than block the shard.
    pub async fn write(&self, w: RegistryWrite) -> Result<(), StoreError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.ctrl
            .try_send(Command::Api(w, tx))
            .map_err(|_| StoreError::Io {
                op: "registry write",
                reason: "store writer busy or stopped; try again".into(),
            })?;
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Io {
                op: "registry write",
                reason: "store writer stopped".into(),
            })
        })
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Writer {
    /// Opens the store on a new writer thread, returning the writer, the producer handle and
    /// what the store holds (max seq).
    pub fn spawn(
        store: Box<dyn StoreWriter>,
        cfg: &StorageConfig,
    ) -> Result<(Writer, StoreHandle, StoreInfo), StoreError> {
        Self::spawn_tuned(store, cfg, Tuning::default())
    }

    /// `spawn` with explicit loop knobs.
    pub(crate) fn spawn_tuned(
        mut store: Box<dyn StoreWriter>,
        cfg: &StorageConfig,
        tuning: Tuning,
    ) -> Result<(Writer, StoreHandle, StoreInfo), StoreError> {
        // A zero-capacity crossbeam channel is a rendezvous: try_send would nearly always fail.
        let capacity = cfg.queue_capacity.max(1);
        let (tx, rx) = bounded(capacity);
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (ctrl_tx, ctrl_rx) = bounded::<Command>(256);
        let (ready_tx, ready_rx) = bounded::<Result<StoreInfo, StoreError>>(1);
        let counters = Arc::new(StoreCounters::default());
        store.attach(counters.clone());
        let mut run = Run {
            rx,
            stop_rx,
            ctrl_rx,
            counters: counters.clone(),
            batch_size: cfg.batch_size.max(1),
            // A zero wait would spin the thread while idle.
            flush_interval: cfg.flush_interval.max(Duration::from_millis(1)),
            retention: cfg.retention,
            tuning,
            stopped_at: None,
            prune_cutoff: None,
            next_prune: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("ringwatch-store".into())
            .spawn(move || {
                // The store is opened (migrated) on its own thread so the first query never
                // runs on the caller's.
                match store.open_info() {
                    Ok(info) => {
                        let _ = ready_tx.send(Ok(info));
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                }
                run.run(store.as_mut())
            })
            .map_err(|e| StoreError::Io {
                op: "spawn writer thread",
                reason: e.to_string(),
            })?;
        match ready_rx.recv() {
            Ok(Ok(info)) => {
                let handle = StoreHandle {
                    counters,
                    tx,
                    capacity,
                    warn: Arc::new(DropWarn {
                        start: Instant::now(),
                        last: AtomicU64::new(0),
                    }),
                };
                let writer = Writer {
                    thread: Some(thread),
                    stop: Some(stop_tx),
                    ctrl: ctrl_tx,
                };
                Ok((writer, handle, info))
            }
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
    rx: Receiver<Record>,
    stop_rx: Receiver<()>,
    ctrl_rx: Receiver<Command>,
    counters: Arc<StoreCounters>,
    batch_size: usize,
    flush_interval: Duration,
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
    fn run(&mut self, store: &mut dyn StoreWriter) -> Result<(), StoreError> {
        let mut batch: Vec<Record> = Vec::with_capacity(self.batch_size);
        loop {
            if self.stopped_at.is_none() {
                self.prune_step(store);
                // While a retention pass runs, only peek at the queue between its steps.
                let wait = if self.prune_cutoff.is_some() {
                    Duration::ZERO
                } else {
                    self.flush_interval
                };
                select! {
                    recv(self.rx) -> msg => match msg {
                        Ok(rec) => batch.push(rec),
                        // Every handle is gone: nothing more can arrive.
                        Err(_) => self.stop(),
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
            self.gather(store, &mut batch);
            if batch.is_empty() {
                if self.stopped_at.is_some() {
                    return Ok(());
                }
                continue;
            }
            self.commit(store, &mut batch)?;
        }
    }

    /// Lets a started batch fill for up to `flush_interval` (or until `batch_size`), then
    /// returns. It deliberately does not block on the record queue meanwhile: a blocked
    /// receiver turns every push into a futex wake on the pushing shard, and committing each
    /// record as it arrives costs several times more per row than one large commit.
    fn gather(&mut self, store: &mut dyn StoreWriter, batch: &mut Vec<Record>) {
        let deadline = Instant::now() + self.flush_interval;
        loop {
            while batch.len() < self.batch_size {
                match self.rx.try_recv() {
                    Ok(rec) => batch.push(rec),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.stop();
                        break;
                    }
                }
            }
            let now = Instant::now();
            if batch.is_empty()
                || batch.len() >= self.batch_size
                || now >= deadline
                || self.stopped_at.is_some()
                || self.prune_cutoff.is_some()
            {
                return;
            }
            select! {
                recv(self.stop_rx) -> _ => self.stop(),
                recv(self.ctrl_rx) -> cmd => {
                    if let Ok(cmd) = cmd {
                        Self::control(store, cmd);
                    }
                },
                default((deadline - now).min(GATHER_STEP)) => {}
            }
        }
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

    /// Appends `batch` until it commits, then clears it. Fails only after `finish` when the
    /// store stayed down past the shutdown budget; queued records are then abandoned.
    fn commit(
        &mut self,
        store: &mut dyn StoreWriter,
        batch: &mut Vec<Record>,
    ) -> Result<(), StoreError> {
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
                    batch.clear();
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
                        let mut lost = batch.len() as u64;
                        batch.clear();
                        while self.rx.try_recv().is_ok() {
                            lost += 1;
                        }
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
