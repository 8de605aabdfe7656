//! What results mean: the UNKNOWN -> UP/DOWN state machine with thresholds.
//!
//! Pure and owned by whoever judges a service (its shard standalone, an ingest process in a
//! cluster); numbering the changes it decides is the store's job (`store::Writer`).

use std::num::NonZeroU32;

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

    /// A service whose status was stored before a restart: it keeps that status (and since
    /// when) and needs its thresholds met afresh to change it; the runs of consecutive results
    /// before the restart are not kept.
    pub fn restored(status: Status, since: UnixMillis) -> Self {
        Health {
            status,
            since,
            ok_run: 0,
            fail_run: 0,
        }
    }

    /// A service's health as a store kept it, runs of consecutive results included (cluster
    /// ingest keeps it in a row and judges on).
    pub fn from_parts(status: Status, since: UnixMillis, ok_run: u32, fail_run: u32) -> Self {
        Health {
            status,
            since,
            ok_run,
            fail_run,
        }
    }

    /// The runs of consecutive successes and failures, for a store to keep.
    pub fn runs(&self) -> (u32, u32) {
        (self.ok_run, self.fail_run)
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
    fn a_restored_status_needs_its_threshold_met_again() {
        let mut h = Health::restored(Status::Down, UnixMillis(5));
        // The same status again is no transition.
        assert_eq!(h.observe(false, UnixMillis(6), n(1), n(2)), None);
        assert_eq!(h.observe(true, UnixMillis(7), n(1), n(2)), None);
        let c = h.observe(true, UnixMillis(8), n(1), n(2));
        assert_eq!(c.map(|c| (c.from, c.to)), Some((Status::Down, Status::Up)));
    }

    #[test]
    fn unknown_stays_until_a_threshold_is_met() {
        let mut h = Health::new(UnixMillis(0));
        assert_eq!(h.observe(false, UnixMillis(1), n(2), n(2)), None);
        assert_eq!(h.observe(true, UnixMillis(2), n(2), n(2)), None);
        assert_eq!(h.status, Status::Unknown);
    }
}
