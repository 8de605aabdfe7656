//! The shards' side of the writer: two bounded lanes and the registry request queue.
//!
//! Results and transitions travel in separate lanes because they may not be treated alike:
//! a result may be dropped (and counted) when the writer falls behind, a transition never.
//! The results lane drops at its own bound. The transition lane refuses at its bound instead,
//! handing the transition back, and the shard then leaves the service's state where it was
//! (the next result decides again), so nothing a client could see is ever lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use super::writer::Command;
use super::{StoreCounters, StoreError, TransitionRecord};
use crate::metrics::Exposition;
use crate::model::{ProbeResult, ServiceId, ServiceSpec};

/// Minimum gap between two "queue full" warnings, so a flood of drops logs once per window.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Rate limiter for the "queue full" warning, shared by all clones of a handle.
#[derive(Debug)]
struct DropWarn {
    /// Reference point for `last`.
    start: Instant,
    /// Milliseconds after `start` of the last warning plus one (0 = never warned).
    last: AtomicU64,
}

/// Cloneable, `Send` producer side of the writer's lanes; nothing here blocks.
#[derive(Clone)]
pub struct StoreHandle {
    /// Shared counters.
    pub counters: Arc<StoreCounters>,
    results: Sender<ProbeResult>,
    transitions: Sender<TransitionRecord>,
    capacity: usize,
    warn: Arc<DropWarn>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("depth", &self.results.len())
            .field("capacity", &self.capacity)
            .field("transitions", &self.transitions.len())
            .finish_non_exhaustive()
    }
}

impl StoreHandle {
    pub(super) fn new(
        counters: Arc<StoreCounters>,
        results: Sender<ProbeResult>,
        transitions: Sender<TransitionRecord>,
        capacity: usize,
    ) -> StoreHandle {
        StoreHandle {
            counters,
            results,
            transitions,
            capacity,
            warn: Arc::new(DropWarn {
                start: Instant::now(),
                last: AtomicU64::new(0),
            }),
        }
    }

    /// Queues a result for the writer; when its lane is full the result is dropped, counted,
    /// and `false` returned. Never blocks, never allocates beyond the result itself.
    pub fn push_result(&self, r: ProbeResult) -> bool {
        match self.results.try_send(r) {
            Ok(()) => {
                self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                true
            }
            // Full, or the writer is gone (after finish): either way the result is lost here.
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.warn_dropped();
                false
            }
        }
    }

    /// Queues a decided transition for the writer, which numbers, commits and then publishes
    /// it. When the lane is full (the store has been down for long) the transition is handed
    /// back: the caller must not consider it decided.
    pub fn push_transition(&self, t: TransitionRecord) -> Result<(), TransitionRecord> {
        match self.transitions.try_send(t) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(t) | TrySendError::Disconnected(t)) => {
                self.counters.deferred.fetch_add(1, Ordering::Relaxed);
                Err(t)
            }
        }
    }

    /// Results waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.results.len()
    }

    /// The results lane's bound.
    pub fn queue_capacity(&self) -> usize {
        self.capacity
    }

    /// Decided transitions waiting to be committed.
    pub fn transitions_waiting(&self) -> usize {
        self.transitions.len()
    }

    /// The store's families; `seq` is the latest published transition seq.
    pub fn render(&self, w: &mut Exposition, seq: u64) {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        w.single(
            "ringwatch_transition_seq",
            "gauge",
            "Latest transition sequence number committed and published.",
            seq as f64,
        );
        let gauges = [
            (
                "ringwatch_store_queue_depth",
                "Results waiting for the storage writer.",
                self.queue_depth() as f64,
            ),
            (
                "ringwatch_store_queue_capacity",
                "Bound of the storage writer's results lane.",
                self.capacity as f64,
            ),
            (
                "ringwatch_store_transitions_waiting",
                "Decided transitions waiting to be committed.",
                self.transitions_waiting() as f64,
            ),
        ];
        for (name, help, v) in gauges {
            w.single(name, "gauge", help, v);
        }
        let counters = [
            ("ringwatch_store_written_total", "Records committed to the store.", load(&c.written)),
            ("ringwatch_store_dropped_total", "Results dropped because the writer's results lane was full (transitions are never dropped).", load(&c.dropped)),
            ("ringwatch_transitions_deferred_total", "Status changes not taken because the transition lane was full; the state machine stayed put and decides again on the next result.", load(&c.deferred)),
            ("ringwatch_store_failed_batches_total", "Store batches that failed to commit (and were retried).", load(&c.failed_batches)),
            ("ringwatch_store_abandoned_total", "Records given up at shutdown because the store stayed down.", load(&c.abandoned)),
            ("ringwatch_store_pruned_total", "Rows deleted by retention.", load(&c.pruned)),
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
                "store results lane full or writer stopped; dropping results"
            );
        }
    }
}

/// A change to one API-defined service's registry row.
#[derive(Debug, Clone)]
pub enum RegistryWrite {
    /// Insert or replace the row (`source = 'api'`).
    Upsert(Arc<ServiceSpec>),
    /// Mark the row deleted; results stay.
    Delete(ServiceId),
}

/// Cloneable, `Send` handle for API registry writes; usable from a shard without blocking.
#[derive(Clone)]
pub struct RegistryHandle {
    pub(super) ctrl: Sender<Command>,
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
