//! Expectations, applied once a response is complete: status, then body, then latency.

use super::plan::Plan;
use super::{ProbeError, ProbeReport};

/// Applies `expect` in order: status, body, latency (the first failure is reported).
pub(super) fn expectations(
    plan: &Plan,
    report: &ProbeReport,
    body_ok: bool,
) -> Result<(), ProbeError> {
    if let Some(code) = report.status_code {
        if !plan.status_ok(code) {
            return Err(ProbeError::Status {
                got: code,
                expected: plan.spec.expect.status.to_string(),
            });
        }
    }
    if !body_ok {
        return Err(ProbeError::BodyMismatch {
            needle: plan.spec.expect.body_contains.clone().unwrap_or_default(),
        });
    }
    // `then`, not `then_some`: the spec is read only when the plan says there is a bound.
    if let Some(max) = plan
        .latency_bound
        .then(|| plan.spec.expect.max_latency)
        .flatten()
    {
        if report.timings.total > max {
            return Err(ProbeError::Latency {
                got_ms: u64::try_from(report.timings.total.as_millis()).unwrap_or(u64::MAX),
                max_ms: u64::try_from(max.as_millis()).unwrap_or(u64::MAX),
            });
        }
    }
    Ok(())
}
