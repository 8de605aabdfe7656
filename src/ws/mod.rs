//! The live WebSocket stream at `GET /ws`: handshake, framing, protocol and per-shard fan-out.
//!
//! Each shard owns the WebSocket clients it accepted (`hub::Hub`). An event is serialized and
//! framed once at its origin shard (`event::Event::frame`); the same `Arc<Event>` reaches every
//! shard through the mesh, and each shard queues the same `Bytes` for every matching client.
//! A client's writer task sends everything queued while its previous write was in flight in
//! one `writev`. See docs/websocket.md for the protocol.

pub mod conn;
pub mod frame;
pub mod handshake;
pub mod hub;
pub mod plain;
pub mod protocol;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

pub use hub::Hub;

/// Clients (on all shards) whose filter asks for result events; results are only encoded
/// while this is above zero, so probing stays cheap when nobody listens.
pub static RESULT_SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);

/// True when some client wants result events.
pub fn results_wanted() -> bool {
    RESULT_SUBSCRIBERS.load(Ordering::Relaxed) > 0
}

/// Why the server closed a WebSocket client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Queue over its bound past the grace period (1008).
    Slow,
    /// No pong within the deadline.
    PongTimeout,
    /// A frame broke RFC 6455 (1002).
    Protocol,
    /// A frame or message over the size limit (1009).
    TooBig,
    /// Text that is not UTF-8 (1007).
    InvalidData,
}

impl DropReason {
    /// Every reason, in export order.
    pub const ALL: [DropReason; 5] = [
        DropReason::Slow,
        DropReason::PongTimeout,
        DropReason::Protocol,
        DropReason::TooBig,
        DropReason::InvalidData,
    ];

    /// Label value in /metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Slow => "slow",
            DropReason::PongTimeout => "pong_timeout",
            DropReason::Protocol => "protocol_error",
            DropReason::TooBig => "too_big",
            DropReason::InvalidData => "invalid_data",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// One shard's WebSocket counters; merged across shards on scrape.
#[derive(Clone)]
pub struct WsStats {
    /// Clients connected now.
    pub clients: u64,
    /// Upgrades accepted.
    pub connections: u64,
    /// Frames handed to sockets (events, replies, control frames).
    pub messages_sent: u64,
    /// Bytes handed to sockets.
    pub bytes_sent: u64,
    /// Socket writes (each may carry many frames).
    pub writes: u64,
    /// Writes that carried more than one frame (coalesced while a write was in flight).
    pub coalesced_writes: u64,
    /// Clients closed by the server, by reason (indexed like `DropReason::ALL`).
    pub dropped: [u64; DropReason::ALL.len()],
    /// Error replies to bad client messages.
    pub client_errors: u64,
    /// Stored transitions replayed for `since`.
    pub replayed: u64,
    /// Live events a pending (subscribing) client missed because the resume ring overflowed.
    pub resume_overflows: u64,
    /// Probe completion -> frame handed to the socket.
    pub push_latency: Histogram<u64>,
}

impl Default for WsStats {
    fn default() -> Self {
        WsStats {
            clients: 0,
            connections: 0,
            messages_sent: 0,
            bytes_sent: 0,
            writes: 0,
            coalesced_writes: 0,
            dropped: [0; DropReason::ALL.len()],
            client_errors: 0,
            replayed: 0,
            resume_overflows: 0,
            // Same bounds as the other latency histograms: 1 us to 1 hour, 3 digits.
            push_latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }
}

impl WsStats {
    /// Counts a client closed by the server.
    pub fn drop_client(&mut self, why: DropReason) {
        self.dropped[why.index()] += 1;
    }

    /// Counts one socket write of `frames` complete frames and `bytes` bytes.
    pub fn note_write(&mut self, frames: u64, bytes: usize) {
        self.messages_sent += frames;
        self.bytes_sent += bytes as u64;
        self.writes += 1;
        if frames > 1 {
            self.coalesced_writes += 1;
        }
    }

    /// Records one push latency.
    pub fn push(&mut self, d: Duration) {
        crate::stats::record(&mut self.push_latency, d);
    }

    /// Adds another shard's figures.
    pub fn merge(&mut self, o: &WsStats) {
        self.clients += o.clients;
        self.connections += o.connections;
        self.messages_sent += o.messages_sent;
        self.bytes_sent += o.bytes_sent;
        self.writes += o.writes;
        self.coalesced_writes += o.coalesced_writes;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
        self.client_errors += o.client_errors;
        self.replayed += o.replayed;
        self.resume_overflows += o.resume_overflows;
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.push_latency.add(&o.push_latency);
    }
}
