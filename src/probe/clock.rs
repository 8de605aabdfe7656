//! The probe's clock: its start, the whole-probe deadline every phase is clipped to, and the
//! phase running now.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use super::ProbeError;

/// Probe start, the whole-probe deadline every phase is clipped to, and the phase running now
/// (so the one whole-probe timer can say where it fired).
#[derive(Clone, Copy)]
pub(super) struct Clock<'a> {
    /// When the probe started (the caller's clock reading).
    pub(super) start: Instant,
    /// `start` plus the whole-probe timeout.
    pub(super) deadline: Instant,
    /// The phase running now.
    pub(super) phase: &'a Cell<&'static str>,
}

impl Clock<'_> {
    /// The timeout error for `phase`, with the time since the probe started.
    pub(super) fn timeout(&self, phase: &'static str) -> ProbeError {
        ProbeError::Timeout {
            phase,
            elapsed_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Runs `fut` as `phase`, for at most the phase limit. Only a limit tighter than what is left of
/// the probe needs a timer of its own; otherwise the whole-probe timer around `Prober::run`
/// covers it, so a default probe arms one timer instead of one per phase.
///
/// Used on the cold, boxed dialling path only: it stores `fut` twice (as its argument and inside
/// the timeout), so the hot path applies `phase_limit` in place instead.
pub(super) async fn within<T>(
    phase: &'static str,
    limit: Option<Duration>,
    clock: Clock<'_>,
    fut: impl Future<Output = T>,
) -> Result<T, ProbeError> {
    clock.phase.set(phase);
    match phase_limit(limit, clock) {
        Some(l) => monoio::time::timeout(l, fut)
            .await
            .map_err(|_| clock.timeout(phase)),
        None => Ok(fut.await),
    }
}

/// The phase limit when it is tighter than what is left of the probe (then the phase needs a
/// timer of its own), else None (the whole-probe timer covers it).
pub(super) fn phase_limit(limit: Option<Duration>, clock: Clock<'_>) -> Option<Duration> {
    let l = limit?;
    // A limit no tighter than the whole budget can never be the tighter one: skip the clock read.
    if l >= clock.deadline.saturating_duration_since(clock.start) {
        return None;
    }
    (l < clock.deadline.saturating_duration_since(Instant::now())).then_some(l)
}
