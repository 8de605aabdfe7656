//! What results mean: the UNKNOWN -> UP/DOWN state machine with thresholds, and the global seq.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::{Status, UnixMillis};

/// Health of one service, owned by its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// Current status.
    pub status: Status,
    /// When it took the current status (or when the service was added).
    pub since: UnixMillis,
    /// Consecutive successes (reset by a failure).
    ok_run: u32,
    /// Consecutive failures (reset by a success).
    fail_run: u32,
}

/// A change of status decided by one result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
}

impl Health {
    /// A service with no results yet.
    pub fn new(now: UnixMillis) -> Self {
        Health {
            status: Status::Unknown,
            since: now,
            ok_run: 0,
            fail_run: 0,
        }
    }

    /// Folds one result in; returns the change when a threshold is crossed.
    pub fn observe(
        &mut self,
        ok: bool,
        at: UnixMillis,
        failure_threshold: NonZeroU32,
        success_threshold: NonZeroU32,
    ) -> Option<Change> {
        let target = if ok {
            self.ok_run = self.ok_run.saturating_add(1);
            self.fail_run = 0;
            (self.ok_run >= success_threshold.get()).then_some(Status::Up)
        } else {
            self.fail_run = self.fail_run.saturating_add(1);
            self.ok_run = 0;
            (self.fail_run >= failure_threshold.get()).then_some(Status::Down)
        }?;
        if target == self.status {
            return None;
        }
        let change = Change {
            from: self.status,
            to: target,
        };
        self.status = target;
        self.since = at;
        Some(change)
    }
}

/// The process-wide transition counter; starts after the largest stored seq.
#[derive(Clone, Debug)]
pub struct SeqCounter(Arc<AtomicU64>);

impl SeqCounter {
    /// Continues numbering after `last` (the largest seq in the store).
    pub fn starting_after(last: u64) -> Self {
        SeqCounter(Arc::new(AtomicU64::new(last)))
    }

    /// Takes the next seq: strictly increasing across all shards.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The latest seq handed out.
    pub fn latest(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).expect("nonzero")
    }

    #[test]
    fn thresholds_of_one_flip_immediately() {
        let mut h = Health::new(UnixMillis(0));
        let c = h.observe(true, UnixMillis(1), n(1), n(1));
        assert_eq!(
            c,
            Some(Change {
                from: Status::Unknown,
                to: Status::Up
            })
        );
        assert_eq!(h.observe(true, UnixMillis(2), n(1), n(1)), None);
        let c = h.observe(false, UnixMillis(3), n(1), n(1));
        assert_eq!(c.map(|c| c.to), Some(Status::Down));
        assert_eq!(h.since, UnixMillis(3));
    }

    #[test]
    fn failure_threshold_needs_consecutive_failures() {
        let mut h = Health::new(UnixMillis(0));
        h.observe(true, UnixMillis(1), n(3), n(1));
        assert_eq!(h.observe(false, UnixMillis(2), n(3), n(1)), None);
        assert_eq!(h.observe(false, UnixMillis(3), n(3), n(1)), None);
        // A success in between resets the run.
        assert_eq!(h.observe(true, UnixMillis(4), n(3), n(1)), None);
        assert_eq!(h.observe(false, UnixMillis(5), n(3), n(1)), None);
        assert_eq!(h.observe(false, UnixMillis(6), n(3), n(1)), None);
        let c = h.observe(false, UnixMillis(7), n(3), n(1));
        assert_eq!(c.map(|c| (c.from, c.to)), Some((Status::Up, Status::Down)));
    }

    #[test]
    fn success_threshold_needs_consecutive_successes() {
        let mut h = Health::new(UnixMillis(0));
        assert!(h.observe(false, UnixMillis(1), n(1), n(2)).is_some());
        assert_eq!(h.observe(true, UnixMillis(2), n(1), n(2)), None);
        assert_eq!(h.status, Status::Down);
        let c = h.observe(true, UnixMillis(3), n(1), n(2));
        assert_eq!(c.map(|c| c.to), Some(Status::Up));
    }

    #[test]
    fn unknown_stays_until_a_threshold_is_met() {
        let mut h = Health::new(UnixMillis(0));
        assert_eq!(h.observe(false, UnixMillis(1), n(2), n(2)), None);
        assert_eq!(h.observe(true, UnixMillis(2), n(2), n(2)), None);
        assert_eq!(h.status, Status::Unknown);
    }

    #[test]
    fn seq_continues_after_the_stored_maximum() {
        let s = SeqCounter::starting_after(41);
        assert_eq!(s.next(), 42);
        assert_eq!(s.clone().next(), 43);
        assert_eq!(s.latest(), 43);
    }
}
