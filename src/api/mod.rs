//! The REST API under `/api/v1`: services (create, list, read, change, pause, delete) and their
//! history (results, transitions).
//!
//! Any shard can receive any request. A service lives on its owner shard
//! (`ServiceId::owner`), so service operations travel there (`Host::send_op`) with a oneshot
//! reply; the owner alone decides name conflicts, since the id is a hash of the name. Lists ask
//! every shard and merge. History reads go to the store's reader threads (`ReadPool`), never
//! the database on a shard. Persisting API services goes through the storage writer thread
//! (`RegistryHandle`). The API sees the shard only through [`Host`].

pub mod cursor;
pub mod history;
pub mod routes;
pub mod services;

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::Auth;
use crate::config::ServiceDefaults;
use crate::http::{Request, Response};
use crate::model::{ServiceId, ServiceSpec, Status, UnixMillis};
use crate::rt::mesh::Pending;
use crate::store::reader::ReadPool;
use crate::store::RegistryHandle;

pub use routes::{route, Route, RouteError, ServiceRef};
pub use services::{Op, Reply};

/// An API error, rendered as `{"error":{"code","message","field"?}}` with its status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Dotted path of the offending field or query parameter.
    pub field: Option<String>,
}

impl ApiError {
    /// An error without a field.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 400 about one field or parameter.
    pub fn field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            code,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// The HTTP response.
    pub fn response(&self) -> Response {
        let mut e = Map::new();
        e.insert("code".into(), self.code.into());
        e.insert("message".into(), self.message.clone().into());
        if let Some(f) = &self.field {
            e.insert("field".into(), f.clone().into());
        }
        let body = serde_json::json!({ "error": e });
        Response::json(self.status, body.to_string())
    }
}

/// A service as the API shows it: its definition plus runtime state from its owner.
#[derive(Debug, Clone)]
pub struct ServiceView {
    /// The definition.
    pub spec: Arc<ServiceSpec>,
    /// Current status.
    pub status: Status,
    /// When the status last changed.
    pub since: UnixMillis,
}

impl ServiceView {
    /// The service object (`name, url, ...`) plus `id, source, paused, status, status_since`.
    pub fn to_json(&self) -> Value {
        let mut obj = match self.spec.definition_json() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        obj.insert("id".into(), self.spec.id.to_string().into());
        obj.insert("source".into(), self.spec.source.as_str().into());
        obj.insert("paused".into(), self.spec.paused.into());
        obj.insert("status".into(), self.status.as_str().into());
        obj.insert("status_since".into(), self.since.to_rfc3339().into());
        obj.insert(
            "revision".into(),
            format!("{:016x}", self.spec.revision()).into(),
        );
        Value::Object(obj)
    }
}

/// Per-shard API state: ids with a change in flight, so two concurrent creates (or a create
/// and a delete) of one service cannot interleave across the writer round trip.
#[derive(Debug, Default)]
pub struct Local {
    pending: RefCell<HashSet<ServiceId>>,
}

impl Local {
    /// Marks `id` busy; false when it already is.
    fn reserve(&self, id: ServiceId) -> bool {
        self.pending.borrow_mut().insert(id)
    }

    fn release(&self, id: ServiceId) {
        self.pending.borrow_mut().remove(&id);
    }
}

/// What the API needs from the shard it runs on, and nothing more; implemented by
/// `shard::Shard`. Narrow on purpose: the API decides what to do, the host knows where things
/// are (which shard owns what, the stores, the token verifier).
pub trait Host {
    /// This shard's index.
    fn shard_id(&self) -> usize;
    /// Shards in the process (a service's owner is `id.owner(shards)`).
    fn shards(&self) -> usize;
    /// Token verifier.
    fn auth(&self) -> &Auth;
    /// Config `defaults`, applied to services created over the API.
    fn defaults(&self) -> &ServiceDefaults;
    /// The store's reader threads, for history.
    fn history(&self) -> &ReadPool;
    /// Persists API-defined services on the writer thread.
    fn registry(&self) -> &RegistryHandle;
    /// The latest transition seq (history pages report it).
    fn latest_seq(&self) -> u64;
    /// This shard's API bookkeeping.
    fn api_local(&self) -> &Local;
    /// A service this shard owns.
    fn view(&self, id: ServiceId) -> Option<ServiceView>;
    /// Owned services matching `keep`.
    fn views(&self, keep: &dyn Fn(&ServiceView) -> bool) -> Vec<ServiceView>;
    /// Adds or replaces an owned service (health kept on replace).
    fn put(&self, spec: Arc<ServiceSpec>);
    /// Stops and forgets an owned service; false when it was not there.
    fn remove(&self, id: ServiceId) -> bool;
    /// Sends `op` to shard `to` for it to `services::apply`; `None` when its ring is full.
    fn send_op(&self, to: usize, op: Op) -> Pending<Reply>;
}

/// Parsed query string, percent-decoded; `token` (auth) is left out.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (
                crate::auth::percent_decode(k),
                crate::auth::percent_decode(v),
            ),
            None => (crate::auth::percent_decode(kv), String::new()),
        })
        .filter(|(k, _)| k != "token")
        .collect()
}

/// Checks that only `allowed` parameters are present, each at most once.
pub fn check_params(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    for (i, (k, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::field(
                "unknown_parameter",
                k,
                format!("unknown query parameter (expected {})", allowed.join(", ")),
            ));
        }
        if pairs[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(ApiError::field("invalid_value", k, "given more than once"));
        }
    }
    Ok(())
}

/// The value of parameter `k`.
pub fn param<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// `limit`: 1..=1000, default 100.
pub fn limit_param(pairs: &[(String, String)]) -> Result<usize, ApiError> {
    match param(pairs, "limit") {
        None => Ok(100),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(ApiError::field(
                "invalid_value",
                "limit",
                format!("\"{v}\" is not an integer from 1 to 1000"),
            )),
        },
    }
}

/// Parses a request body as JSON, checking the content type first.
pub fn json_body(req: &Request) -> Result<Value, ApiError> {
    let ct = req.header("content-type").unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    // A PATCH body is a JSON merge patch, whose registered type is
    // application/merge-patch+json (RFC 7396); plain JSON stays accepted for curl users. A
    // merge patch is no service object, so POST takes application/json only.
    let patch = req.method == "PATCH";
    let accepted = mime.eq_ignore_ascii_case("application/json")
        || (patch && mime.eq_ignore_ascii_case("application/merge-patch+json"));
    if !accepted {
        return Err(ApiError {
            status: 415,
            code: "unsupported_media_type",
            message: format!(
                "Content-Type must be application/json{} (got {})",
                if patch {
                    " or application/merge-patch+json"
                } else {
                    ""
                },
                if ct.is_empty() { "none" } else { ct }
            ),
            field: None,
        });
    }
    serde_json::from_slice(&req.body).map_err(|e| ApiError {
        status: 400,
        code: "invalid_json",
        // serde_json's message already ends with "at line L column C".
        message: format!("invalid JSON: {e}"),
        field: None,
    })
}

/// Answers a request under `/api/`; every error has the design's shape.
pub async fn handle<H: Host>(host: &H, req: &Request) -> Response {
    match handle_inner(host, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn handle_inner<H: Host>(host: &H, req: &Request) -> Result<Response, ApiError> {
    let route = match route(&req.method, &req.path) {
        Ok(r) => r,
        Err(RouteError::NotFound) => {
            return Err(ApiError::new(
                404,
                "not_found",
                format!("no route for {}", req.path),
            ))
        }
        Err(RouteError::MethodNotAllowed(allow)) => {
            return Ok(ApiError::new(
                405,
                "method_not_allowed",
                format!("{} is not allowed here (allowed: {allow})", req.method),
            )
            .response()
            .with_header("Allow", allow))
        }
    };
    if let Err(e) = host.auth().check(req, route.scope()) {
        return Ok(e.response());
    }
    let pairs = query_pairs(&req.query);
    match route {
        Route::Results(r) => history::results(host, &r, &pairs).await,
        Route::ServiceTransitions(r) => history::service_transitions(host, &r, &pairs).await,
        Route::Transitions => history::transitions(host, &pairs).await,
        other => services::handle(host, other, req, &pairs).await,
    }
}
