//! When to probe: a per-shard min-heap of planned starts, with jitter.
//!
//! Each entry is `(planned start, service, generation)`. Changing or removing a service bumps its
//! generation instead of searching the heap, so stale entries are skipped when they surface;
//! this keeps insert and pop at O(log n) for 100k+ services and 24 bytes per entry.
//!
//! Planned times advance from the previous *planned* time, not from when the probe ran, so a
//! slow shard does not drift; a shard that fell more than one interval behind skips the missed
//! runs (counted) rather than firing a burst.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::model::ServiceId;

/// One planned probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    /// Planned start.
    pub at: Instant,
    /// Which service.
    pub service: ServiceId,
    /// The service's generation when this was planned; stale if it differs now.
    pub generation: u32,
}

/// Min-heap of planned probes.
#[derive(Default)]
pub struct Scheduler {
    heap: BinaryHeap<Reverse<Due>>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Scheduler::default()
    }

    /// Plans a probe.
    pub fn push(&mut self, due: Due) {
        self.heap.push(Reverse(due));
    }

    /// The earliest planned start, if any.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }

    /// Entries in the heap, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is planned.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops stale entries when they outnumber live ones, so churn cannot grow the heap.
    pub fn compact(&mut self, live: impl Fn(&Due) -> bool) {
        let heap = std::mem::take(&mut self.heap);
        self.heap = heap.into_iter().filter(|Reverse(d)| live(d)).collect();
    }
}

/// A uniformly random offset in `[-fraction, +fraction] * interval`.
pub fn jitter(interval: Duration, fraction: f64) -> (Duration, bool) {
    if fraction <= 0.0 {
        return (Duration::ZERO, false);
    }
    let span = interval.as_secs_f64() * fraction;
    let x = (fastrand::f64() * 2.0 - 1.0) * span;
    (Duration::from_secs_f64(x.abs()), x < 0.0)
}

/// The first planned start of a newly added service: uniform over one interval from `now`.
///
/// Spreading first runs over the whole interval (not just +-jitter) keeps a restart with 100k
/// services from turning into a burst of 100k simultaneous probes.
pub fn first_run(now: Instant, interval: Duration) -> Instant {
    now + interval.mul_f64(fastrand::f64())
}

/// The planned start after `prev`: one interval later, +- jitter. Returns it and how many runs
/// were skipped because the shard was more than an interval behind `now`.
pub fn next_run(prev: Instant, now: Instant, interval: Duration, fraction: f64) -> (Instant, u64) {
    let mut base = prev + interval;
    let mut skipped = 0;
    if now > base + interval {
        // Far behind: skip whole intervals so the next start lands within one interval of now.
        let behind = now.duration_since(base);
        let n = (behind.as_nanos() / interval.as_nanos().max(1)) as u32;
        base += interval * n;
        skipped = u64::from(n);
    }
    let (j, negative) = jitter(interval, fraction);
    let at = if negative {
        base.checked_sub(j).unwrap_or(base)
    } else {
        base + j
    };
    // Never plan before the previous run: a large negative jitter must not reorder runs.
    (at.max(prev + interval / 2), skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(at: Instant, n: u64) -> Due {
        Due {
            at,
            service: ServiceId::from_raw(n),
            generation: 0,
        }
    }

    #[test]
    fn pops_in_time_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut s = Scheduler::new();
        s.push(due(t0 + Duration::from_millis(30), 3));
        s.push(due(t0 + Duration::from_millis(10), 1));
        s.push(due(t0 + Duration::from_millis(20), 2));
        assert_eq!(s.next_at(), Some(t0 + Duration::from_millis(10)));
        assert!(s.pop_due(t0).is_none());
        let now = t0 + Duration::from_millis(25);
        let got: Vec<u64> = std::iter::from_fn(|| s.pop_due(now))
            .map(|d| d.service.get())
            .collect();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn jitter_stays_within_fraction() {
        let interval = Duration::from_secs(60);
        for _ in 0..10_000 {
            let (j, _) = jitter(interval, 0.1);
            assert!(j <= Duration::from_secs(6));
        }
        assert_eq!(jitter(interval, 0.0), (Duration::ZERO, false));
    }

    #[test]
    fn next_run_follows_plan_not_actual_start() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        // Ran 3 s late: next is still t0 + 10 s (no jitter).
        let (n, skipped) = next_run(t0, t0 + Duration::from_secs(3), i, 0.0);
        assert_eq!((n, skipped), (t0 + i, 0));
    }

    #[test]
    fn next_run_skips_missed_intervals() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        let now = t0 + Duration::from_secs(45);
        let (n, skipped) = next_run(t0, now, i, 0.0);
        assert_eq!(skipped, 3);
        assert!(n >= now - i && n <= now + i, "{:?}", n - t0);
    }

    #[test]
    fn first_runs_spread_over_the_interval() {
        let t0 = Instant::now();
        let i = Duration::from_secs(60);
        let firsts: Vec<_> = (0..1000).map(|_| first_run(t0, i) - t0).collect();
        assert!(firsts.iter().all(|d| *d < i));
        assert!(firsts.iter().any(|d| *d < Duration::from_secs(10)));
        assert!(firsts.iter().any(|d| *d > Duration::from_secs(50)));
    }

    #[test]
    fn compact_drops_stale_entries() {
        let t0 = Instant::now();
        let mut s = Scheduler::new();
        for n in 0..100 {
            s.push(due(t0, n));
        }
        s.compact(|d| d.service.get() % 2 == 0);
        assert_eq!(s.len(), 50);
    }
}
