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
    /// The service's tags, for subscription filters.
    pub tags: EventTags,
    /// When the probe behind it completed (push latency starts here).
    pub born: Instant,
}

/// Where an event's tags (for subscription filters) come from.
#[derive(Debug, Clone)]
pub enum EventTags {
    /// Not known with the event (a replay from the store): the subscriber's snapshot has them.
    Unknown,
    /// The definition at the origin (a shared handle, no copy).
    Spec(Arc<ServiceSpec>),
    /// Listed with the event (an event from another process).
    Listed(Arc<[String]>),
}

impl EventTags {
    /// The tags; empty when unknown.
    pub fn get(&self) -> &[String] {
        match self {
            EventTags::Unknown => &[],
            EventTags::Spec(s) => &s.tags,
            EventTags::Listed(t) => t,
        }
    }

    /// True when the event carries its tags.
    pub fn known(&self) -> bool {
        !matches!(self, EventTags::Unknown)
    }
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
        Arc::new(Event::transition_with(
            t,
            EventTags::Unknown,
            Instant::now(),
        ))
    }

    /// Serializes and frames a live transition once (the origin counts it).
    pub fn live_transition(t: &Transition, spec: Arc<ServiceSpec>, born: Instant) -> Arc<Event> {
        Arc::new(Event::transition_with(t, EventTags::Spec(spec), born))
    }

    /// Serializes and frames a transition (replays use this without counting).
    pub fn transition_with(t: &Transition, tags: EventTags, born: Instant) -> Event {
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
            tags,
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
            tags: EventTags::Unknown,
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
            ev.tags = EventTags::Spec(spec);
            ev.born = born;
        }
        e
    }
}

/// What a published transition says, read back from its JSON.
#[derive(serde::Deserialize)]
struct Published {
    seq: u64,
    service: String,
    service_id: ServiceId,
    to: String,
    at: String,
}

/// A transition event another process committed and published: its JSON as published (the
/// same bytes every client receives), framed here once, with the service's tags and what the
/// event says about its status.
#[derive(Debug)]
pub struct Received {
    /// The event, ready for fan-out.
    pub event: Arc<Event>,
    /// The status the service changed to.
    pub to: crate::model::Status,
    /// When (the end of the deciding probe).
    pub at: crate::model::UnixMillis,
}

impl Event {
    /// Frames a published transition's JSON; `born` is back-dated to the deciding probe's end
    /// (`at`), so push latency measured from it is the end-to-end latency across processes.
    pub fn received(json: &[u8], tags: Arc<[String]>) -> Result<Received, String> {
        let p: Published = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let to =
            crate::model::Status::parse(&p.to).ok_or_else(|| format!("unknown status {}", p.to))?;
        let at = crate::model::UnixMillis::parse_rfc3339(&p.at)
            .ok_or_else(|| format!("bad time {}", p.at))?;
        let age = crate::model::UnixMillis::now()
            .0
            .saturating_sub(at.0)
            .max(0);
        let now = Instant::now();
        let born = now
            .checked_sub(std::time::Duration::from_millis(age as u64))
            .unwrap_or(now);
        let mut v = Vec::with_capacity(crate::wire::frame::MAX_HEADER + json.len());
        v.resize(crate::wire::frame::MAX_HEADER, 0);
        v.extend_from_slice(json);
        let frame = crate::wire::frame::frame_in_place(v, crate::wire::frame::OP_TEXT);
        let h = crate::wire::frame::header_len(frame.len());
        Ok(Received {
            event: Arc::new(Event {
                kind: EventKind::Transition,
                service_id: p.service_id,
                seq: p.seq,
                json: frame.slice(h..),
                frame,
                service: p.service,
                tags: EventTags::Listed(tags),
                born,
            }),
            to,
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Status, UnixMillis};
    use std::time::Duration;

    #[test]
    fn a_published_transition_frames_back_to_the_same_bytes() {
        let t = Transition {
            seq: 9,
            service_id: ServiceId::from_name("shop"),
            service: "shop".into(),
            from: Status::Up,
            to: Status::Down,
            at: UnixMillis::now(),
            latency: Duration::from_millis(3),
            status_code: None,
            error: Some("timeout".into()),
        };
        let sent = Event::transition(&t);
        let got = Event::received(&sent.json, Arc::from(vec!["web".to_string()])).expect("decode");
        assert_eq!(got.event.frame, sent.frame);
        assert_eq!(got.event.seq, 9);
        assert_eq!(got.event.service_id, t.service_id);
        assert_eq!(got.to, Status::Down);
        assert_eq!(got.at, t.at);
        assert_eq!(got.event.tags.get(), ["web".to_string()]);
        assert!(Event::received(b"{}", Arc::from(Vec::new())).is_err());
    }

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
