//! History routes: results and transitions, read on the store's blocking pool.
//!
//! Every page is a keyset page on an index (`results` primary key `(service_id,
//! scheduled_at)`, `transitions` primary key `seq` and `(service_id, seq)`), so the first page
//! costs the same over a thousand rows or a million, and appends never shift a later page.

use serde_json::{json, Value};

use super::{check_params, cursor, limit_param, param, ApiError, Host, ServiceRef};
use crate::http::Response;
use crate::model::{round_ms as ms, ProbeResult, Transition, UnixMillis};
use crate::pipeline::event::Event;
use crate::store::reader::ReadError;
use crate::store::{StoreError, StoreReader};

fn read_failed(e: ReadError) -> ApiError {
    match e {
        ReadError::Busy => ApiError::new(503, "busy", e.to_string()),
        _ => ApiError::new(503, "store_unavailable", e.to_string()),
    }
}

/// One result as JSON.
pub fn result_json(r: &ProbeResult) -> Value {
    json!({
        "service_id": r.service_id.to_string(),
        "scheduled_at": r.scheduled_at.to_rfc3339(),
        "started_at": r.started_at.to_rfc3339(),
        "ok": r.ok(),
        "latency_ms": ms(r.timings.total),
        "connect_ms": ms(r.timings.connect),
        "tls_ms": ms(r.timings.tls),
        "first_byte_ms": ms(r.timings.first_byte),
        "status_code": r.status_code,
        "bytes": r.bytes,
        "error_kind": r.error_kind.map(|k| k.as_str()),
        "error": r.error,
    })
}

/// One transition as JSON: the WebSocket `transition` event, byte for byte.
pub fn transition_json(t: &Transition) -> Value {
    serde_json::from_slice(&Event::transition(t).json).unwrap_or(Value::Null)
}

/// Parses a time bound: unix milliseconds or RFC 3339 (`2026-11-22T15:51:45.123Z`).
pub fn parse_time(field: &str, v: &str) -> Result<UnixMillis, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(UnixMillis(ms));
    }
    UnixMillis::parse_rfc3339(v).ok_or_else(|| {
        ApiError::field(
            "invalid_value",
            field,
            format!("\"{v}\" is not unix milliseconds or an RFC 3339 UTC time"),
        )
    })
}

/// `GET /services/{id}/results?from&to&limit&cursor`: newest first.
pub async fn results<H: Host>(
    host: &H,
    r: &ServiceRef,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    check_params(pairs, &["from", "to", "limit", "cursor"])?;
    let limit = limit_param(pairs)?;
    let from = param(pairs, "from")
        .map(|v| parse_time("from", v))
        .transpose()?;
    let mut to = param(pairs, "to")
        .map(|v| parse_time("to", v))
        .transpose()?;
    if let Some(c) = param(pairs, "cursor").filter(|c| !c.is_empty()) {
        let at = cursor::decode('r', c).ok_or_else(|| {
            ApiError::field("invalid_value", "cursor", "not a cursor from this list")
        })?;
        // The cursor is the last item's scheduled_at; the next page is strictly older.
        to = Some(UnixMillis(to.map_or(at, |t| t.0.min(at))));
    }
    let id = r.id;
    let page = service_rows(host, r, move |s| s.results_range(id, from, to, limit + 1)).await?;
    Ok(keyset_page(&page, limit, result_json, |r| {
        cursor::encode('r', r.scheduled_at.0)
    }))
}

/// `GET /services/{id}/transitions?limit&cursor`: newest first.
pub async fn service_transitions<H: Host>(
    host: &H,
    r: &ServiceRef,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    check_params(pairs, &["limit", "cursor"])?;
    let limit = limit_param(pairs)?;
    let before = match param(pairs, "cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            cursor::decode('t', c)
                .filter(|v| *v >= 0)
                .map(|v| v as u64)
                .ok_or_else(|| {
                    ApiError::field("invalid_value", "cursor", "not a cursor from this list")
                })?,
        ),
    };
    let id = r.id;
    let page = service_rows(host, r, move |s| s.transitions_for(id, before, limit + 1)).await?;
    Ok(keyset_page(&page, limit, transition_json, |t| {
        cursor::encode('t', t.seq as i64)
    }))
}

/// Runs `rows` on a store reader thread for service `r`; 404 when the service is unknown.
async fn service_rows<H, T, F>(host: &H, r: &ServiceRef, rows: F) -> Result<Vec<T>, ApiError>
where
    H: Host,
    T: Send + 'static,
    F: FnOnce(&dyn StoreReader) -> Result<Vec<T>, StoreError> + Send + 'static,
{
    let id = r.id;
    host.history()
        .read(move |s| {
            if s.service(id)?.is_none() {
                return Ok(None);
            }
            rows(s).map(Some)
        })
        .await
        .map_err(read_failed)?
        .ok_or_else(|| super::services::not_found(r))
}

/// A newest-first keyset page from `limit + 1` rows: at most `limit` items, and the cursor of
/// the last one when the extra row shows that more exist.
fn keyset_page<T>(
    rows: &[T],
    limit: usize,
    json: impl Fn(&T) -> Value,
    cursor: impl Fn(&T) -> String,
) -> Response {
    let items: Vec<Value> = rows.iter().take(limit).map(json).collect();
    let next = (rows.len() > limit)
        .then(|| rows.get(limit.wrapping_sub(1)).map(&cursor))
        .flatten();
    Response::json(
        200,
        json!({"items": items, "next_cursor": next}).to_string(),
    )
}

/// `GET /transitions?since=SEQ&limit`: oldest first, every service; `next_cursor` is the seq
/// to pass as `since` for the next page.
pub async fn transitions<H: Host>(
    host: &H,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    check_params(pairs, &["since", "limit", "cursor"])?;
    let limit = limit_param(pairs)?;
    let since_text = param(pairs, "cursor")
        .filter(|c| !c.is_empty())
        .map(|c| ("cursor", c))
        .or_else(|| param(pairs, "since").map(|s| ("since", s)));
    let since = match since_text {
        None => 0,
        Some((f, v)) => v.parse::<u64>().map_err(|_| {
            ApiError::field(
                "invalid_value",
                f,
                format!("\"{v}\" is not a non-negative integer"),
            )
        })?,
    };
    let page = host
        .history()
        .read(move |s| s.transitions_since(since, limit))
        .await
        .map_err(read_failed)?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|t| t.seq.to_string()))
        .flatten();
    let items: Vec<Value> = page.iter().map(transition_json).collect();
    Ok(Response::json(
        200,
        json!({"items": items, "next_cursor": next, "seq": host.latest_seq()}).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_the_formatter() {
        for ms in [0i64, 1_700_000_000_123, 951_782_400_000, 4_102_444_800_999] {
            let s = UnixMillis(ms).to_rfc3339();
            assert_eq!(UnixMillis::parse_rfc3339(&s), Some(UnixMillis(ms)), "{s}");
        }
        assert_eq!(UnixMillis::parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(UnixMillis::parse_rfc3339("nope"), None);
    }
}
