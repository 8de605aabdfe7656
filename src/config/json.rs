//! A service object in JSON (REST API bodies, the stored registry) -> validated `ServiceSpec`.
//!
//! The object is the config file's service entry, so it goes through the same `RawService`
//! and the same `service::service` as YAML; only the decoding differs. Fields are decoded one
//! by one so every error names its field (`expect.status`, `tags[2]`), which serde's derive
//! cannot do for type errors.

use serde_json::{Map, Value};

use super::defaults::ServiceDefaults;
use super::raw::{Headers, RawExpect, RawService};
use super::service::{self, TlsCache};
use crate::model::{ServiceSpec, Source};

/// Fields a service object may have, in the order responses write them.
pub const SERVICE_FIELDS: [&str; 12] = [
    "name",
    "url",
    "method",
    "headers",
    "body",
    "interval",
    "timeout",
    "tags",
    "expect",
    "failure_threshold",
    "success_threshold",
    "paused",
];

const EXPECT_FIELDS: [&str; 3] = ["status", "body_contains", "max_latency"];

/// Why a JSON service object was refused; `field` is the dotted path of the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", field.as_deref().unwrap_or("body"))]
pub struct JsonError {
    /// Machine-readable code: `unknown_field`, `wrong_type`, `missing_field`, `invalid_value`.
    pub code: &'static str,
    /// Dotted path of the field at fault (None for the whole body).
    pub field: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

fn wrong_type(field: &str, want: &str, got: &Value) -> JsonError {
    JsonError {
        code: "wrong_type",
        field: Some(field.to_string()),
        message: format!("expected {want}, got {}", type_name(got)),
    }
}

/// JSON type name for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn unknown(field: String, allowed: &[&str]) -> JsonError {
    JsonError {
        code: "unknown_field",
        message: format!("unknown field (expected one of {})", allowed.join(", ")),
        field: Some(field),
    }
}

/// An optional string; JSON `null` counts as absent.
fn opt_str(obj: &Map<String, Value>, field: &str, path: &str) -> Result<Option<String>, JsonError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(wrong_type(path, "a string", v)),
    }
}

fn opt_u64(obj: &Map<String, Value>, field: &str) -> Result<Option<u64>, JsonError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong_type(field, "a positive integer", &Value::Number(n.clone()))),
        Some(v) => Err(wrong_type(field, "a positive integer", v)),
    }
}

/// Decodes a JSON service object into the config file's raw form, checking names and types.
fn raw_service(v: &Value) -> Result<RawService, JsonError> {
    let Value::Object(obj) = v else {
        return Err(JsonError {
            code: "wrong_type",
            field: None,
            message: format!("expected a service object, got {}", type_name(v)),
        });
    };
    if let Some(k) = obj.keys().find(|k| !SERVICE_FIELDS.contains(&k.as_str())) {
        return Err(unknown(k.clone(), &SERVICE_FIELDS));
    }
    let required = |f: &str| -> Result<String, JsonError> {
        opt_str(obj, f, f)?.ok_or_else(|| JsonError {
            code: "missing_field",
            field: Some(f.to_string()),
            message: "required".into(),
        })
    };
    let headers = headers(obj.get("headers"))?;
    let tags = tags(obj.get("tags"))?;
    let expect = expect(obj.get("expect"))?;
    let paused = match obj.get("paused") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => Err(wrong_type("paused", "a boolean", v))?,
    };
    Ok(RawService {
        name: required("name")?,
        url: required("url")?,
        method: opt_str(obj, "method", "method")?,
        headers,
        body: opt_str(obj, "body", "body")?,
        interval: opt_str(obj, "interval", "interval")?,
        timeout: opt_str(obj, "timeout", "timeout")?,
        tags,
        expect,
        failure_threshold: opt_u64(obj, "failure_threshold")?,
        success_threshold: opt_u64(obj, "success_threshold")?,
        paused,
        ..RawService::default()
    })
}

/// `headers`: an object of strings, kept in the body's order.
fn headers(v: Option<&Value>) -> Result<Option<Headers>, JsonError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(h)) => {
            let mut out = Vec::with_capacity(h.len());
            for (k, v) in h {
                match v {
                    Value::String(s) => out.push((k.clone(), s.clone())),
                    other => return Err(wrong_type(&format!("headers.{k}"), "a string", other)),
                }
            }
            Ok(Some(Headers(out)))
        }
        Some(v) => Err(wrong_type("headers", "an object of strings", v)),
    }
}

/// `tags`: an array of strings.
fn tags(v: Option<&Value>) -> Result<Option<Vec<String>>, JsonError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, t) in a.iter().enumerate() {
                match t {
                    Value::String(s) => out.push(s.clone()),
                    other => return Err(wrong_type(&format!("tags[{i}]"), "a string", other)),
                }
            }
            Ok(Some(out))
        }
        Some(v) => Err(wrong_type("tags", "an array of strings", v)),
    }
}

/// `expect`: an object with the keys of `EXPECT_FIELDS`, each a string.
fn expect(v: Option<&Value>) -> Result<Option<RawExpect>, JsonError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(e)) => {
            if let Some(k) = e.keys().find(|k| !EXPECT_FIELDS.contains(&k.as_str())) {
                return Err(unknown(format!("expect.{k}"), &EXPECT_FIELDS));
            }
            Ok(Some(RawExpect {
                status: opt_str(e, "status", "expect.status")?,
                body_contains: opt_str(e, "body_contains", "expect.body_contains")?,
                max_latency: opt_str(e, "max_latency", "expect.max_latency")?,
            }))
        }
        Some(v) => Err(wrong_type("expect", "an object", v)),
    }
}

/// Validates a JSON service object exactly as a config-file entry (same rules, same
/// `defaults`), for a service created over the API.
pub fn api_service(v: &Value, defaults: &ServiceDefaults) -> Result<ServiceSpec, JsonError> {
    let raw = raw_service(v)?;
    let mut cache = TlsCache::new();
    // No file paths are accepted over the API (no `tls.ca_file`), so the base is irrelevant.
    let mut spec = service::service("", raw, defaults, std::path::Path::new("."), &mut cache)
        .map_err(|e| JsonError {
            code: "invalid_value",
            field: Some(e.key.clone()).filter(|k| !k.is_empty()),
            message: e.message,
        })?;
    spec.source = Source::Api;
    Ok(spec)
}
