//! The JSON protocol on top of the frames: client operations, filters, and server messages.
//!
//! Client messages are parsed strictly (unknown ops, unknown filter keys and wrong types are
//! errors with a code and a readable message); server messages other than events are built
//! per connection, since they are rare (hello, subscribed, snapshot, error).

use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;

use crate::model::{ServiceId, Status, UnixMillis};
use crate::pipeline::event::{Event, EventKind};

/// Which services and which kinds of event a client wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Service names (empty = every service).
    pub services: Vec<String>,
    /// Tags; a service matches when it has any of them (empty = no tag condition).
    pub tags: Vec<String>,
    /// Send transition events.
    pub transitions: bool,
    /// Send result events.
    pub results: bool,
}

impl Filter {
    /// True when a service with this name and these tags passes the name and tag conditions.
    pub fn matches_service(&self, name: &str, tags: &[String]) -> bool {
        (self.services.is_empty() || self.services.iter().any(|s| s == name))
            && (self.tags.is_empty() || self.tags.iter().any(|t| tags.contains(t)))
    }

    /// True when this live event should go to the client.
    pub fn matches(&self, e: &Event) -> bool {
        let kind_ok = match e.kind {
            EventKind::Transition => self.transitions,
            EventKind::Result => self.results,
        };
        if !kind_ok {
            return false;
        }
        self.matches_service(&e.service, e.tags.get())
    }
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// Start (or replace) a subscription.
    Subscribe {
        /// What to send.
        filter: Filter,
        /// Replay stored transitions with seq > this first.
        since: Option<u64>,
    },
    /// Stop sending events.
    Unsubscribe,
}

/// A client message the server cannot act on; sent back as `{"type":"error",...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    /// Machine-readable code.
    pub code: &'static str,
    /// What was wrong.
    pub message: String,
}

fn perr<T>(code: &'static str, message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError {
        code,
        message: message.into(),
    })
}

fn string_list(v: &Value, key: &str) -> Result<Vec<String>, ProtocolError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                _ => perr("invalid_type", format!("{key} must be an array of strings")),
            })
            .collect(),
        _ => perr("invalid_type", format!("{key} must be an array of strings")),
    }
}

/// Parses one client text message.
pub fn parse(text: &str) -> Result<ClientOp, ProtocolError> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return perr("invalid_json", format!("message is not valid JSON: {e}")),
    };
    let Value::Object(obj) = v else {
        return perr("invalid_type", "message must be a JSON object");
    };
    let op = match obj.get("op") {
        Some(Value::String(op)) => op.as_str(),
        Some(_) => return perr("invalid_type", "op must be a string"),
        None => return perr("missing_op", "message has no op"),
    };
    match op {
        "subscribe" => {
            for k in obj.keys() {
                if !matches!(k.as_str(), "op" | "filter" | "since") {
                    return perr("unknown_field", format!("unknown field {k:?} in subscribe"));
                }
            }
            let mut filter = Filter {
                transitions: true,
                ..Filter::default()
            };
            match obj.get("filter") {
                None | Some(Value::Null) => {}
                Some(Value::Object(f)) => {
                    for (k, val) in f {
                        match k.as_str() {
                            "services" => filter.services = string_list(val, "filter.services")?,
                            "tags" => filter.tags = string_list(val, "filter.tags")?,
                            "events" => {
                                let events = string_list(val, "filter.events")?;
                                if !events.is_empty() {
                                    filter.transitions = false;
                                }
                                for e in events {
                                    match e.as_str() {
                                        "transition" => filter.transitions = true,
                                        "result" => filter.results = true,
                                        other => {
                                            return perr(
                                                "invalid_value",
                                                format!(
                                                    "unknown event kind {other:?} (expected \
                                                     \"transition\" or \"result\")"
                                                ),
                                            )
                                        }
                                    }
                                }
                            }
                            other => {
                                return perr(
                                    "unknown_field",
                                    format!("unknown field {other:?} in filter"),
                                )
                            }
                        }
                    }
                }
                Some(_) => return perr("invalid_type", "filter must be an object"),
            }
            let since = match obj.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(s) => Some(s),
                    None => return perr("invalid_type", "since must be a non-negative integer"),
                },
                Some(_) => return perr("invalid_type", "since must be a non-negative integer"),
            };
            Ok(ClientOp::Subscribe { filter, since })
        }
        "unsubscribe" => Ok(ClientOp::Unsubscribe),
        other => perr(
            "unknown_op",
            format!("unknown op {other:?} (expected subscribe or unsubscribe)"),
        ),
    }
}

/// One service's current state, as a shard reports it for snapshots.
#[derive(Debug, Clone)]
pub struct ServiceState {
    /// Service id.
    pub id: ServiceId,
    /// Name.
    pub name: String,
    /// Tags (for filters).
    pub tags: Vec<String>,
    /// Status now.
    pub status: Status,
    /// When it took that status.
    pub since: UnixMillis,
    /// Latency of the last probe, ms.
    pub latency_ms: f64,
}

#[derive(Serialize)]
struct Hello<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'a str,
    seq: u64,
}

/// `{"type":"hello","version","seq"}`.
pub fn hello(seq: u64) -> Vec<u8> {
    to_vec(&Hello {
        kind: "hello",
        version: env!("CARGO_PKG_VERSION"),
        seq,
    })
}

/// `{"type":"subscribed","seq"}`.
pub fn subscribed(seq: u64) -> Vec<u8> {
    to_vec(&serde_json::json!({"type": "subscribed", "seq": seq}))
}

/// `{"type":"unsubscribed"}` (an addition to the design: confirms the stop).
pub fn unsubscribed() -> Vec<u8> {
    br#"{"type":"unsubscribed"}"#.to_vec()
}

#[derive(Serialize)]
struct SnapEntry<'a> {
    service: &'a str,
    status: &'static str,
    since: String,
    latency_ms: f64,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    services: Vec<SnapEntry<'a>>,
}

/// `{"type":"snapshot","services":[...]}` of the states that match `filter`, sorted by name.
pub fn snapshot(states: &[ServiceState], filter: &Filter) -> Vec<u8> {
    let mut services: Vec<SnapEntry<'_>> = states
        .iter()
        .filter(|s| filter.matches_service(&s.name, &s.tags))
        .map(|s| SnapEntry {
            service: &s.name,
            status: s.status.as_str(),
            since: s.since.to_rfc3339(),
            latency_ms: s.latency_ms,
        })
        .collect();
    services.sort_by(|a, b| a.service.cmp(b.service));
    to_vec(&Snapshot {
        kind: "snapshot",
        services,
    })
}

/// `{"type":"warning","code":"unknown_service","service","message"}`, one per name in
/// `filter.services` that matches no service in `states` (each name once). The subscription
/// stands, since the service may be created later; the warning is there so that a typo in a
/// name does not look like a quiet service.
pub fn unknown_services(states: &[ServiceState], filter: &Filter) -> Vec<Vec<u8>> {
    if filter.services.is_empty() {
        return Vec::new();
    }
    let known: HashSet<&str> = states.iter().map(|s| s.name.as_str()).collect();
    let mut warned = HashSet::new();
    filter
        .services
        .iter()
        .filter(|name| !known.contains(name.as_str()) && warned.insert(name.as_str()))
        .map(|name| {
            to_vec(&serde_json::json!({
                "type": "warning",
                "code": "unknown_service",
                "service": name,
                "message": format!("no service named {name} (yet)"),
            }))
        })
        .collect()
}

/// `{"type":"error","code","message"}`.
pub fn error(code: &str, message: &str) -> Vec<u8> {
    to_vec(&serde_json::json!({"type": "error", "code": code, "message": message}))
}

fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs and json! values always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_defaults_to_transitions_of_everything() {
        assert_eq!(
            parse(r#"{"op":"subscribe"}"#),
            Ok(ClientOp::Subscribe {
                filter: Filter {
                    transitions: true,
                    ..Filter::default()
                },
                since: None
            })
        );
    }

    #[test]
    fn subscribe_with_every_field() {
        let op = parse(
            r#"{"op":"subscribe","filter":{"services":["a"],"tags":["t"],"events":["result"]},"since":5}"#,
        );
        assert_eq!(
            op,
            Ok(ClientOp::Subscribe {
                filter: Filter {
                    services: vec!["a".into()],
                    tags: vec!["t".into()],
                    transitions: false,
                    results: true
                },
                since: Some(5)
            })
        );
    }

    #[test]
    fn bad_messages_get_codes() {
        let code = |t: &str| parse(t).expect_err("error").code;
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[]"), "invalid_type");
        assert_eq!(code(r#"{"op":"dance"}"#), "unknown_op");
        assert_eq!(code(r#"{"op":1}"#), "invalid_type");
        assert_eq!(code(r#"{}"#), "missing_op");
        assert_eq!(code(r#"{"op":"subscribe","since":"x"}"#), "invalid_type");
        assert_eq!(code(r#"{"op":"subscribe","since":-1}"#), "invalid_type");
        assert_eq!(code(r#"{"op":"subscribe","filter":[]}"#), "invalid_type");
        assert_eq!(
            code(r#"{"op":"subscribe","filter":{"services":"a"}}"#),
            "invalid_type"
        );
        assert_eq!(
            code(r#"{"op":"subscribe","filter":{"events":["x"]}}"#),
            "invalid_value"
        );
        assert_eq!(
            code(r#"{"op":"subscribe","filter":{"colour":1}}"#),
            "unknown_field"
        );
    }

    #[test]
    fn unknown_service_names_are_warned_about_once_each() {
        let state = |name: &str| ServiceState {
            id: ServiceId::from_name(name),
            name: name.into(),
            tags: Vec::new(),
            status: Status::Up,
            since: UnixMillis(0),
            latency_ms: 0.0,
        };
        let states = [state("api"), state("db")];
        let filter = |names: &[&str]| Filter {
            services: names.iter().map(|n| n.to_string()).collect(),
            ..Filter::default()
        };
        assert!(unknown_services(&states, &filter(&[])).is_empty());
        assert!(unknown_services(&states, &filter(&["api", "db"])).is_empty());
        let w = unknown_services(&states, &filter(&["api", "nosuch", "nosuch", "x"]));
        assert_eq!(w.len(), 2);
        let v: Value = serde_json::from_slice(&w[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "warning", "code": "unknown_service", "service": "nosuch",
                "message": "no service named nosuch (yet)"})
        );
    }

    #[test]
    fn filters_combine_names_and_tags() {
        let f = Filter {
            services: vec!["a".into(), "b".into()],
            tags: vec!["prod".into()],
            transitions: true,
            results: false,
        };
        assert!(f.matches_service("a", &["prod".into()]));
        assert!(!f.matches_service("a", &["dev".into()]));
        assert!(!f.matches_service("c", &["prod".into()]));
        assert!(Filter::default().matches_service("x", &[]));
    }
}
