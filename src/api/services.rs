//! Service routes: the receiving shard validates and forwards; the owner shard decides.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{check_params, limit_param, param, ApiError, Host, Route, ServiceRef, ServiceView};
use crate::http::{Request, Response};
use crate::model::{ServiceId, ServiceSpec, Source, Status};
use crate::store::RegistryWrite;

/// An operation on the services a shard owns, sent to that shard.
#[derive(Debug)]
pub enum Op {
    /// Services with id > `after`, matching the filters, at most `limit`, by id.
    List {
        /// Only services with this tag.
        tag: Option<String>,
        /// Only services in this status.
        status: Option<Status>,
        /// Keyset cursor: ids strictly greater.
        after: Option<ServiceId>,
        /// Most items returned.
        limit: usize,
    },
    /// One service.
    Get(ServiceRef),
    /// A new API service (already validated); 409 when the id exists.
    Create(Arc<ServiceSpec>),
    /// JSON merge patch of an API service.
    Patch(ServiceRef, Value),
    /// Remove an API service.
    Delete(ServiceRef),
    /// Pause (true) or resume (false).
    Pause(ServiceRef, bool),
}

/// The owner's answer: the affected services, or why not.
pub type Reply = Result<Vec<ServiceView>, ApiError>;

/// How long a shard waits for another shard's answer before answering 503.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `op` on the shard that owns the service (this one or another, through the mesh).
async fn on_owner<H: Host>(host: &H, owner: usize, op: Op) -> Reply {
    if owner == host.shard_id() {
        return apply(host, op).await;
    }
    let Some(rx) = host.send_op(owner, op) else {
        return Err(busy("shard mesh ring full"));
    };
    match monoio::time::timeout(FORWARD_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        _ => Err(busy("owner shard did not answer in time")),
    }
}

fn busy(why: &str) -> ApiError {
    ApiError::new(503, "unavailable", format!("{why}; try again"))
}

/// 404 in the user's terms: `no service named shop`, or `no service with id ...` when they
/// gave an id.
pub fn not_found(r: &ServiceRef) -> ApiError {
    ApiError::new(404, "not_found", format!("no service {r}"))
}

fn config_owned(spec: &ServiceSpec) -> ApiError {
    ApiError::new(
        409,
        "config_service",
        format!(
            "service {} is defined in the config file; change it there and reload",
            spec.name
        ),
    )
}

fn store_failed(e: crate::store::StoreError) -> ApiError {
    ApiError::new(503, "store_unavailable", e.to_string())
}

/// Applies `op` on the owner shard. Never holds a borrow across an await.
pub async fn apply<H: Host>(host: &H, op: Op) -> Reply {
    match op {
        Op::List {
            tag,
            status,
            after,
            limit,
        } => {
            let mut v = host.views(&|v: &ServiceView| {
                after.is_none_or(|a| v.spec.id > a)
                    && status.is_none_or(|s| v.status == s)
                    && tag.as_ref().is_none_or(|t| v.spec.tags.contains(t))
            });
            v.sort_by_key(|v| v.spec.id);
            v.truncate(limit);
            Ok(v)
        }
        Op::Get(r) => found(host, &r),
        Op::Create(spec) => create(host, spec).await,
        Op::Patch(r, patch) => {
            let cur = host.view(r.id).ok_or_else(|| not_found(&r))?;
            if cur.spec.source == Source::Config {
                return Err(config_owned(&cur.spec));
            }
            let mut merged = cur.spec.definition_json();
            merge_patch(&mut merged, &patch);
            if merged.get("name").and_then(|n| n.as_str()) != Some(cur.spec.name.as_str()) {
                return Err(ApiError::field(
                    "invalid_value",
                    "name",
                    "cannot be changed (create a new service instead)",
                ));
            }
            let spec =
                Arc::new(crate::config::api_service(&merged, host.defaults()).map_err(json_error)?);
            persist_and_put(host, &r, spec).await
        }
        Op::Pause(r, paused) => {
            let cur = host.view(r.id).ok_or_else(|| not_found(&r))?;
            let mut spec = (*cur.spec).clone();
            spec.paused = paused;
            let spec = Arc::new(spec);
            if spec.source == Source::Config {
                // Config services pause in memory only: the file stays the source of truth,
                // so a reload or restart applies the file's `paused` again.
                host.put(spec);
                return found(host, &r);
            }
            persist_and_put(host, &r, spec).await
        }
        Op::Delete(r) => delete(host, &r).await,
    }
}

/// The service `r` names, as a one-item reply, or 404 in the user's terms.
fn found<H: Host>(host: &H, r: &ServiceRef) -> Reply {
    host.view(r.id).map(|v| vec![v]).ok_or_else(|| not_found(r))
}

/// `Op::Create`: 409 when the name is taken; persisted before it is scheduled.
async fn create<H: Host>(host: &H, spec: Arc<ServiceSpec>) -> Reply {
    let id = spec.id;
    if let Some(v) = host.view(id) {
        return Err(ApiError {
            status: 409,
            code: "conflict",
            message: format!(
                "a service named {} already exists (source {})",
                v.spec.name,
                v.spec.source.as_str()
            ),
            field: Some("name".into()),
        });
    }
    persist(host, id, RegistryWrite::Upsert(spec.clone())).await?;
    let created = ServiceRef::name(&spec.name);
    host.put(spec);
    found(host, &created)
}

/// Writes `w` to the registry on the writer thread, with the service's id reserved so two
/// changes to one service cannot interleave across the round trip.
async fn persist<H: Host>(host: &H, id: ServiceId, w: RegistryWrite) -> Result<(), ApiError> {
    if !host.api_local().reserve(id) {
        return Err(in_flight(id));
    }
    let written = host.registry().write(w).await;
    host.api_local().release(id);
    written.map_err(store_failed)
}

/// `Op::Delete`: API services only; removed once the store has marked it deleted.
async fn delete<H: Host>(host: &H, r: &ServiceRef) -> Reply {
    let id = r.id;
    let cur = host.view(id).ok_or_else(|| not_found(r))?;
    if cur.spec.source == Source::Config {
        return Err(config_owned(&cur.spec));
    }
    persist(host, id, RegistryWrite::Delete(id)).await?;
    host.remove(id);
    Ok(Vec::new())
}

fn in_flight(id: ServiceId) -> ApiError {
    ApiError::new(
        409,
        "conflict",
        format!("another change to service {id} is in progress; retry"),
    )
}

async fn persist_and_put<H: Host>(host: &H, r: &ServiceRef, spec: Arc<ServiceSpec>) -> Reply {
    let id = spec.id;
    persist(host, id, RegistryWrite::Upsert(spec.clone())).await?;
    // The service may have been deleted while the write ran; a patch must not revive it.
    if host.view(id).is_none() {
        return Err(not_found(r));
    }
    host.put(spec);
    found(host, r)
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes, the rest replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// A JSON validation error as an API error (400, with the field).
pub fn json_error(e: crate::config::JsonError) -> ApiError {
    ApiError {
        status: 400,
        code: e.code,
        message: e.message,
        field: e.field,
    }
}

fn one(mut v: Vec<ServiceView>, status: u16) -> Response {
    match v.pop() {
        Some(v) => Response::json(status, v.to_json().to_string()),
        None => Response {
            status: 204,
            ..Response::json(204, "")
        },
    }
}

/// Receiving-shard side of the service routes.
pub async fn handle<H: Host>(
    host: &H,
    route: Route,
    req: &Request,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    let n = host.shards();
    if !matches!(route, Route::ListServices) {
        check_params(pairs, &[])?;
    }
    match route {
        Route::ListServices => list(host, pairs).await,
        Route::CreateService => {
            let body = super::json_body(req)?;
            let spec =
                Arc::new(crate::config::api_service(&body, host.defaults()).map_err(json_error)?);
            let id = spec.id;
            let v = on_owner(host, id.owner(n), Op::Create(spec)).await?;
            Ok(one(v, 201).with_header("Location", format!("/api/v1/services/{id}")))
        }
        Route::GetService(r) => Ok(one(on_owner(host, r.id.owner(n), Op::Get(r)).await?, 200)),
        Route::PatchService(r) => {
            let body = super::json_body(req)?;
            if !body.is_object() {
                return Err(ApiError {
                    status: 400,
                    code: "wrong_type",
                    message: format!(
                        "expected a JSON object (merge patch), got {}",
                        crate::config::type_name(&body)
                    ),
                    field: None,
                });
            }
            Ok(one(
                on_owner(host, r.id.owner(n), Op::Patch(r, body)).await?,
                200,
            ))
        }
        Route::DeleteService(r) => Ok(one(
            on_owner(host, r.id.owner(n), Op::Delete(r)).await?,
            204,
        )),
        Route::Pause(r, p) => Ok(one(
            on_owner(host, r.id.owner(n), Op::Pause(r, p)).await?,
            200,
        )),
        _ => Err(ApiError::new(404, "not_found", "no such route")),
    }
}

/// `GET /services`: every shard's matching services after the cursor, merged by id.
async fn list<H: Host>(host: &H, pairs: &[(String, String)]) -> Result<Response, ApiError> {
    check_params(pairs, &["tag", "status", "limit", "cursor"])?;
    let limit = limit_param(pairs)?;
    let status = match param(pairs, "status") {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::field(
                "invalid_value",
                "status",
                format!("\"{s}\" is not a status (expected unknown, up or down)"),
            )
        })?),
    };
    let after = match param(pairs, "cursor") {
        None | Some("") => None,
        Some(c) => Some(
            super::cursor::decode('s', c)
                .filter(|v| *v >= 0)
                .map(|v| ServiceId::from_raw(v as u64))
                .ok_or_else(|| {
                    ApiError::field("invalid_value", "cursor", "not a cursor from this list")
                })?,
        ),
    };
    let tag = param(pairs, "tag").map(str::to_string);
    let mut items = Vec::new();
    // One extra item per shard tells whether another page exists.
    let make = || Op::List {
        tag: tag.clone(),
        status,
        after,
        limit: limit + 1,
    };
    let pending: Vec<_> = (0..host.shards())
        .filter(|to| *to != host.shard_id())
        .map(|to| host.send_op(to, make()))
        .collect();
    if pending.iter().any(Option::is_none) {
        return Err(busy("shard mesh ring full"));
    }
    items.extend(apply(host, make()).await?);
    for r in crate::rt::mesh::gather(pending, FORWARD_TIMEOUT).await {
        // A partial list would silently hide services, so a missing shard fails the request.
        match r {
            Some(r) => items.extend(r?),
            None => return Err(busy("a shard did not answer in time")),
        }
    }
    items.sort_by_key(|v| v.spec.id);
    let next = if items.len() > limit {
        items.truncate(limit);
        items
            .last()
            .map(|v| super::cursor::encode('s', v.spec.id.get() as i64))
    } else {
        None
    };
    let body = serde_json::json!({
        "items": items.iter().map(ServiceView::to_json).collect::<Vec<_>>(),
        "next_cursor": next,
    });
    Ok(Response::json(200, body.to_string()))
}
