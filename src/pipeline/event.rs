//! Events as they leave the origin shard: serialized once, then shared by reference.
//!
//! The origin shard turns a transition (or, when someone asked for them, a result) into its
//! wire JSON exactly once; every other shard receives the same `Arc<Event>` through the mesh
//! and hands the same bytes to each of its matching clients.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use crate::model::{round_ms as ms, ProbeResult, ServiceId, ServiceSpec, Transition};

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A status change.
    Transition,
    /// A single probe result.
    Result,
}

/// An event ready for fan-out.
#[derive(Debug)]
pub struct Event {
    /// Transition or result.
    pub kind: EventKind,
    /// The service it is about (for filtering).
    pub service_id: ServiceId,
    /// The transition seq (0 for results).
    pub seq: u64,
    /// The JSON text, as sent to clients.
    pub json: Bytes,
    /// The whole WebSocket text frame carrying `json`; `json` is a slice of the same buffer,
    /// and every client on every shard is written this one buffer.
    pub frame: Bytes,
    /// Service name (filters match on it).
    pub service: String,
    /// The service definition at the origin (its tags, for filters); None when unknown.
    pub spec: Option<Arc<ServiceSpec>>,
    /// When the probe behind it completed (push latency starts here).
    pub born: Instant,
}

/// Serializes `body` once and frames it once, in one buffer: JSON first, header in front.
fn encode<T: Serialize>(body: &T) -> (Bytes, Bytes) {
    // Reserve the largest header in front so the frame needs no second buffer or copy.
    let mut v = vec![0u8; crate::wire::frame::MAX_HEADER];
    // Serializing a struct of plain fields cannot fail.
    let _ = serde_json::to_writer(&mut v, body);
    let frame = crate::wire::frame::frame_in_place(v, crate::wire::frame::OP_TEXT);
    let h = crate::wire::frame::header_len(frame.len());
    (frame.slice(h..), frame)
}

#[derive(Serialize)]
struct TransitionJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    service: &'a str,
    service_id: ServiceId,
    from: &'static str,
    to: &'static str,
    at: String,
    latency_ms: f64,
    status_code: Option<u16>,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct ResultJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    service: &'a str,
    service_id: ServiceId,
    at: String,
    status: &'static str,
    latency_ms: f64,
    status_code: Option<u16>,
    error: Option<&'a str>,
}

impl Event {
    /// Serializes a transition once.
    pub fn transition(t: &Transition) -> Arc<Event> {
        Arc::new(Event::transition_with(t, None, Instant::now()))
    }

    /// Serializes and frames a live transition once (the origin counts it).
    pub fn live_transition(t: &Transition, spec: Arc<ServiceSpec>, born: Instant) -> Arc<Event> {
        Arc::new(Event::transition_with(t, Some(spec), born))
    }

    /// Serializes and frames a transition (replays use this without counting).
    pub fn transition_with(t: &Transition, spec: Option<Arc<ServiceSpec>>, born: Instant) -> Event {
        let body = TransitionJson {
            kind: "transition",
            seq: t.seq,
            service: &t.service,
            service_id: t.service_id,
            from: t.from.as_str(),
            to: t.to.as_str(),
            at: t.at.to_rfc3339(),
            latency_ms: ms(t.latency),
            status_code: t.status_code,
            error: t.error.as_deref(),
        };
        let (json, frame) = encode(&body);
        Event {
            kind: EventKind::Transition,
            service_id: t.service_id,
            seq: t.seq,
            json,
            frame,
            service: t.service.clone(),
            spec,
            born,
        }
    }

    /// Serializes a result once; `status` is the service's status after it.
    pub fn result(
        service: &str,
        r: &ProbeResult,
        status: crate::model::Status,
        at: crate::model::UnixMillis,
    ) -> Arc<Event> {
        let body = ResultJson {
            kind: "result",
            service,
            service_id: r.service_id,
            at: at.to_rfc3339(),
            status: status.as_str(),
            latency_ms: ms(r.timings.total),
            status_code: r.status_code,
            error: r.error.as_deref(),
        };
        let (json, frame) = encode(&body);
        Arc::new(Event {
            kind: EventKind::Result,
            service_id: r.service_id,
            seq: 0,
            json,
            frame,
            service: service.to_string(),
            spec: None,
            born: Instant::now(),
        })
    }

    /// Serializes and frames a live result once (the origin counts it).
    pub fn live_result(
        spec: Arc<ServiceSpec>,
        r: &ProbeResult,
        status: crate::model::Status,
        at: crate::model::UnixMillis,
        born: Instant,
    ) -> Arc<Event> {
        let mut e = Event::result(&spec.name, r, status, at);
        if let Some(ev) = Arc::get_mut(&mut e) {
            ev.spec = Some(spec);
            ev.born = born;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Status, UnixMillis};
    use std::time::Duration;

    #[test]
    fn transition_json_matches_the_protocol() {
        let t = Transition {
            seq: 7,
            service_id: ServiceId::from_raw(42),
            service: "api".into(),
            from: Status::Up,
            to: Status::Down,
            at: UnixMillis(0),
            latency: Duration::from_micros(1500),
            status_code: Some(503),
            error: Some("status 503 not in expected 200-299".into()),
        };
        let e = Event::transition(&t);
        let v: serde_json::Value = serde_json::from_slice(&e.json).expect("json");
        assert_eq!(v["type"], "transition");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["service"], "api");
        assert_eq!(v["from"], "up");
        assert_eq!(v["to"], "down");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["latency_ms"], 1.5);
        assert_eq!(v["status_code"], 503);
        assert_eq!(e.seq, 7);
        // The frame is an unmasked FIN text frame around exactly the JSON.
        let h = crate::wire::frame::header_len(e.frame.len());
        assert_eq!(e.frame[0], 0x81);
        assert_eq!(e.frame.len(), h + e.json.len());
        assert_eq!(&e.frame[h..], &e.json[..]);
    }
}
