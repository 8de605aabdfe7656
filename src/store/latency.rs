//! A latency summary that writers record into and a scrape reads, lock-free.
//!
//! The storage writer records one sample per committed batch on its own thread, while a shard
//! renders `/metrics`; shards take no locks, so instead of a shared HDR histogram behind a
//! mutex this keeps log-linear buckets of atomics (8 per power of two, so any quantile is
//! within ~9% of the truth) and copies them into an HDR histogram only when rendering.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Sub-buckets per power of two.
const SUB: usize = 8;
/// Powers of two covered: 1 us up to 2^37 us (~38 hours).
const POWERS: usize = 38;

/// Lock-free buckets of microsecond samples.
pub struct AtomicLatency {
    buckets: Box<[AtomicU64]>,
}

impl Default for AtomicLatency {
    fn default() -> Self {
        AtomicLatency {
            buckets: (0..SUB * POWERS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for AtomicLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicLatency")
            .field("count", &self.snapshot().len())
            .finish()
    }
}

/// The bucket of a value: its power of two, then which eighth of that range.
fn bucket(us: u64) -> usize {
    let us = us.max(1);
    let power = 63 - us.leading_zeros() as usize;
    let sub = if power >= 3 {
        ((us >> (power - 3)) & 7) as usize
    } else {
        ((us << (3 - power)) & 7) as usize
    };
    (power * SUB + sub).min(SUB * POWERS - 1)
}

/// A representative value (the middle) of a bucket, in microseconds.
fn value(bucket: usize) -> u64 {
    let (power, sub) = (bucket / SUB, (bucket % SUB) as u64);
    let low = (1u64 << power) + ((sub << power) >> 3);
    let width = ((1u64 << power) >> 3).max(1);
    low + width / 2
}

impl AtomicLatency {
    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The samples so far as a histogram with the shared bounds (`metrics::new_hist`).
    pub fn snapshot(&self) -> Histogram<u64> {
        let mut h = crate::metrics::new_hist();
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            if n > 0 {
                // Values beyond the histogram's bound saturate, like `metrics::record`.
                let _ = h.record_n(value(i).min(h.high()), n);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let l = AtomicLatency::default();
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        let h = l.snapshot();
        assert_eq!(h.len(), 100);
        let p50 = h.value_at_quantile(0.5) as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.1, "{p50}");
        let p99 = h.value_at_quantile(0.99) as f64;
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.1, "{p99}");
        for us in [0u64, 1, 2, 3, 7, 8, 9, 1000, u64::MAX] {
            let b = bucket(us);
            assert!(b < SUB * POWERS);
            if (8..1 << 30).contains(&us) {
                let v = value(b) as f64;
                assert!((v - us as f64).abs() / us as f64 <= 0.125, "{us} -> {v}");
            }
        }
    }
}
