//! The live WebSocket stream at `GET /ws`: handshake, framing, protocol and per-shard fan-out.
//!
//! Each shard owns the WebSocket clients it accepted (`hub::Hub`). An event is serialized and
//! framed once at its origin shard (`event::Event::frame`); the same `Arc<Event>` reaches every
//! shard through the mesh, and each shard queues the same `Bytes` for every matching client.
//! A client's writer task sends everything queued while its previous write was in flight in
//! one `writev`. See docs/websocket.md for the protocol.

mod client;
pub mod conn;
mod flush;

pub mod handshake;
pub mod hub;
pub mod plain;
pub mod protocol;
mod subscribe;

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::{add_counts, new_hist, record, Exposition};
use crate::model::Transition;
use crate::store::reader::ReadError;

pub use hub::Hub;

/// What a WebSocket session needs from the server around it, and nothing more: its shard's
/// hub, the latest seq, the subscribe snapshot and stored transitions for `since`. Sessions are
/// generic over it, so the WebSocket code does not know what a shard is (standalone shards and
/// cluster gateways both implement it) and calls are static.
pub trait Feed: 'static {
    /// This shard's clients.
    fn hub(&self) -> &Rc<Hub>;
    /// The latest transition seq a client can be told about (`hello`, `subscribed`).
    fn latest_seq(&self) -> u64;
    /// Current state of every service, on every shard, for the subscribe snapshot.
    fn snapshot(&self) -> impl Future<Output = Vec<protocol::ServiceState>>;
    /// Stored transitions with seq > `after`, in seq order, at most `limit` (for `since`).
    fn replay_page(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Transition>, ReadError>>;
    /// A session ended (it counted against the connection limit).
    fn session_closed(&self);
}

/// Clients, on all shards, whose filter asks for result events. Results are only encoded while
/// some client wants them, so probing stays cheap when nobody listens; each shard's hub counts
/// its own subscribers in, and the origin shard of a result reads the total. One per process,
/// handed to every hub (not a static, so two servers in one test process do not share it).
#[derive(Clone, Debug, Default)]
pub struct ResultInterest(Arc<AtomicUsize>);

impl ResultInterest {
    /// True when some client wants result events.
    pub fn wanted(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }

    /// Clients subscribed to results now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
            push_latency: new_hist(),
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
        record(&mut self.push_latency, d);
    }

    /// Adds another shard's figures.
    pub fn merge(&mut self, o: &WsStats) {
        self.clients += o.clients;
        self.connections += o.connections;
        self.messages_sent += o.messages_sent;
        self.bytes_sent += o.bytes_sent;
        self.writes += o.writes;
        self.coalesced_writes += o.coalesced_writes;
        add_counts(&mut self.dropped, &o.dropped);
        self.client_errors += o.client_errors;
        self.replayed += o.replayed;
        self.resume_overflows += o.resume_overflows;
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.push_latency.add(&o.push_latency);
    }

    /// The WebSocket stream's families (merged figures of every shard); `interest` is the
    /// process's result-subscriber count.
    pub fn render(&self, w: &mut Exposition, interest: &ResultInterest) {
        let counters = [
            ("ringwatch_ws_clients", "gauge", "WebSocket clients connected now.", self.clients),
            ("ringwatch_ws_connections_total", "counter", "WebSocket upgrades accepted.", self.connections),
            ("ringwatch_ws_messages_sent_total", "counter", "WebSocket frames handed to sockets (events, replies, control frames).", self.messages_sent),
            ("ringwatch_ws_bytes_sent_total", "counter", "WebSocket bytes handed to sockets.", self.bytes_sent),
            ("ringwatch_ws_writes_total", "counter", "WebSocket socket writes (each may carry many frames).", self.writes),
            ("ringwatch_ws_coalesced_writes_total", "counter", "WebSocket writes that carried more than one frame queued while a write was in flight.", self.coalesced_writes),
        ];
        for (name, kind, help, v) in counters {
            w.single(name, kind, help, v as f64);
        }
        w.labelled(
            "ringwatch_ws_dropped_total",
            "counter",
            "WebSocket clients closed by the server, by reason.",
            "reason",
            DropReason::ALL
                .iter()
                .zip(self.dropped)
                .map(|(r, v)| (r.as_str(), v as f64)),
        );
        let counters = [
            (
                "ringwatch_ws_client_errors_total",
                "Bad client messages answered with an error message.",
                self.client_errors,
            ),
            (
                "ringwatch_ws_replayed_total",
                "Stored transitions replayed to clients resuming with since.",
                self.replayed,
            ),
            (
                "ringwatch_ws_resume_overflows_total",
                "Subscriptions that lost live events because the resume ring overflowed.",
                self.resume_overflows,
            ),
        ];
        for (name, help, v) in counters {
            w.single(name, "counter", help, v as f64);
        }
        w.single(
            "ringwatch_ws_result_subscribers",
            "gauge",
            "WebSocket clients subscribed to result events (results are encoded only when > 0).",
            interest.count() as f64,
        );
        w.summary(
            "ringwatch_ws_push_latency_seconds",
            "Probe completion to WebSocket frame handed to the socket (HDR histogram, all shards).",
            &self.push_latency,
        );
    }
}
