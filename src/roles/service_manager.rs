//! Tells systemd (or any `sd_notify` listener) what the process is doing, for `Type=notify`.
//!
//! - `READY=1` once every shard listens and the signal handlers are installed (a SIGHUP sent
//!   by `systemctl reload` right after start then reloads instead of killing the process);
//! - `RELOADING=1` with `MONOTONIC_USEC` when a SIGHUP reload starts, `READY=1` when it is done
//!   (also when the new file was refused: the old config keeps running);
//! - while the database is away at start, `EXTEND_TIMEOUT_USEC` before each wait, so the
//!   start timeout does not kill a node that is waiting as designed (`waiting`);
//! - `STOPPING=1` when shutdown begins (in-flight probes finish, the store drains);
//! - a human-readable `STATUS=` with each, shown by `systemctl status`.
//!
//! Without `NOTIFY_SOCKET` in the environment every call is a no-op. A failed send is logged
//! and otherwise ignored: the service manager's bookkeeping never stops the monitor.

use sd_notify::NotifyState;

/// Sends `states` plus `STATUS=status`; logs instead of failing.
fn send(states: &[NotifyState<'_>], status: &str) {
    let status = one_line(status);
    let mut all = states.to_vec();
    all.push(NotifyState::Status(&status));
    if let Err(e) = sd_notify::notify(&all) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// STATUS is one line of the datagram; a newline inside would start a bogus assignment.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// `READY=1` after start: every shard listens on `listen`.
pub fn started(listen: std::net::SocketAddr, shards: usize) {
    send(
        &[NotifyState::Ready],
        &format!("serving on {listen} ({shards} shards)"),
    );
}

/// Runs `reload` between `RELOADING=1` (with the `MONOTONIC_USEC` systemd matches to the
/// reload request) and `READY=1`, whose `STATUS=` says whether the new config was taken.
pub fn reload<T, E: std::fmt::Display>(reload: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let status = "reloading the config";
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now], status),
        Err(_) => send(&[NotifyState::Reloading], status),
    }
    let outcome = reload();
    let status = match &outcome {
        Ok(_) => "serving; config reloaded".to_string(),
        Err(e) => format!("serving the previous config; reload refused: {e}"),
    };
    send(&[NotifyState::Ready], &status);
    outcome
}

/// Start-up is waiting `wait` for the store: extends the start timeout past it.
pub fn waiting(wait: std::time::Duration, reason: &str) {
    // Headroom for the next attempt itself (a connect is bounded by storage.connect_timeout).
    let usec = (wait + std::time::Duration::from_secs(60)).as_micros();
    send(
        &[NotifyState::ExtendTimeoutUsec(
            u32::try_from(usec).unwrap_or(u32::MAX),
        )],
        &format!("starting: waiting for the store: {reason}"),
    );
}

/// `STOPPING=1`: shutdown has begun.
pub fn stopping() {
    send(
        &[NotifyState::Stopping],
        "stopping: finishing in-flight probes, draining the store",
    );
}

#[cfg(test)]
mod tests {
    // The messages on a real socket are tested end to end in tests/service_manager.rs, with the
    // real binary: setting NOTIFY_SOCKET here would race with other tests reading the
    // environment (getaddrinfo does) in this multi-threaded test process.
    #[test]
    fn status_is_one_line() {
        assert_eq!(super::one_line("a\nb\r\nc"), "a b  c");
    }
}
