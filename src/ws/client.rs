//! One connected WebSocket client as its shard's hub holds it: queue, timers, subscription
//! state, and who writes its socket.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::protocol::Filter;
use crate::rt::notify::Notify;

/// Most frames one `writev` carries (well under IOV_MAX).
pub const MAX_IOV: usize = 64;

/// Queue capacity (frames) a client keeps between bursts; an idle client's larger queue buffer
/// is freed by the tick, so 10k idle clients do not pin burst-sized buffers.
pub(super) const KEEP_QUEUE: usize = 16;

/// A point in time in 8 bytes: microseconds since the process's first stamp, plus one (an
/// `Option<Instant>` takes 16 bytes, and every client keeps four of these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(std::num::NonZeroU64);

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp::of(Instant::now())
    }

    /// The stamp of `t` (times before the process's first stamp read as that stamp).
    pub fn of(t: Instant) -> Stamp {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        let us =
            u64::try_from(t.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX - 1);
        Stamp(std::num::NonZeroU64::MIN.saturating_add(us))
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn duration_since(self, earlier: Stamp) -> Duration {
        Duration::from_micros(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl std::ops::Add<Duration> for Stamp {
    type Output = Stamp;

    fn add(self, d: Duration) -> Stamp {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Stamp(self.0.saturating_add(us))
    }
}

/// One queued frame.
pub struct Out {
    /// The frame bytes (shared with every other client for events).
    pub bytes: Bytes,
    /// Probe completion time, for push latency (events only).
    pub born: Option<Instant>,
    /// This is our close frame: nothing may follow it.
    pub close: bool,
}

/// Who writes a client's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    /// The hub, with non-blocking `sendmsg` on the raw socket (plain TCP).
    Hub,
    /// The client's own writer task (TLS: frames are encrypted per client).
    Task,
}

/// One connected WebSocket client.
pub struct Client {
    /// The socket, for shutting it down from outside its tasks.
    pub fd: RawFd,
    /// Who writes the socket.
    pub(super) writer: WritePath,
    /// In the hub's dirty list (hub writer only).
    pub(super) dirty: Cell<bool>,
    /// The socket buffer was full: the client's task waits for writability and flushes
    /// (hub writer only).
    pub blocked: Cell<bool>,
    /// Bytes of the front queued frame already written (hub writer only).
    pub(super) front_sent: Cell<u32>,
    /// Something was queued since the last tick (an idle client's queue buffer is freed).
    pub(super) active: Cell<bool>,
    /// Position in `Hub::clients` (kept current on swap-remove).
    pub(super) index: Cell<u32>,
    /// Active filter; None = not subscribed.
    pub(super) filter: RefCell<Option<Filter>>,
    /// A subscribe is being prepared (snapshot, replay): live events wait in the resume ring.
    pub(super) pending: Cell<bool>,
    /// Bumped on every subscribe/unsubscribe so a stale preparation is discarded.
    pub sub_gen: Cell<u32>,
    /// Seqs already replayed from the store that may still arrive live (dropped when they do).
    /// Boxed so the field takes 8 bytes in every client, though only `since` clients use it.
    #[allow(clippy::box_collection)]
    pub(super) skip: RefCell<Option<Box<Vec<u64>>>>,
    /// Frames waiting for the writer.
    pub queue: RefCell<VecDeque<Out>>,
    /// Bytes in `queue`.
    pub queued_bytes: Cell<usize>,
    /// Since when the queue has been over its bound.
    pub over_since: Cell<Option<Stamp>>,
    /// When the unanswered ping was sent (None = no ping outstanding).
    pub ping_out: Cell<Option<Stamp>>,
    /// When the last ping was sent.
    pub(super) last_ping: Cell<Stamp>,
    /// Our close frame is queued: nothing more is queued after it.
    pub close_queued: Cell<bool>,
    /// The client's close frame arrived.
    pub close_received: Cell<bool>,
    /// Our close frame has been written.
    pub close_written: Cell<bool>,
    /// Drop the socket at this time if the close handshake has not finished.
    pub close_deadline: Cell<Option<Stamp>>,
    /// The connection is finished; tasks exit.
    pub done: Cell<bool>,
    /// Wakes the writer task.
    pub wake: Notify,
}

impl Client {
    /// True when the client asked for result events.
    pub(super) fn wants_results(&self) -> bool {
        self.filter.borrow().as_ref().is_some_and(|f| f.results)
    }

    /// Shuts the socket down both ways: pending reads and writes complete and both tasks end.
    pub fn kill(&self) {
        if !self.done.replace(true) {
            // SAFETY: shutdown(2) on a descriptor we own; it stays open until both halves drop.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        }
        self.wake.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_order_and_measure_like_instants() {
        // Times before the first stamp read as the first stamp; start the clock first.
        let _ = Stamp::now();
        let t0 = Instant::now();
        let a = Stamp::of(t0);
        let b = Stamp::of(t0 + Duration::from_millis(1500));
        assert!(a < b);
        assert_eq!(b.duration_since(a), Duration::from_millis(1500));
        assert_eq!(a.duration_since(b), Duration::ZERO);
        assert_eq!(a + Duration::from_millis(1500), b);
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }
}
