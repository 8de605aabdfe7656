//! The REST router: a pure function from method and path to a route, so it can be tested (and
//! property-tested) without a server.

use crate::auth::Scope;
use crate::model::ServiceId;

/// Prefix of every REST route.
pub const PREFIX: &str = "/api/v1";

/// A matched REST route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /services`.
    ListServices,
    /// `POST /services`.
    CreateService,
    /// `GET /services/{id}`.
    GetService(ServiceId),
    /// `PATCH /services/{id}`.
    PatchService(ServiceId),
    /// `DELETE /services/{id}`.
    DeleteService(ServiceId),
    /// `POST /services/{id}/pause` (true) or `/resume` (false).
    Pause(ServiceId, bool),
    /// `GET /services/{id}/results`.
    Results(ServiceId),
    /// `GET /services/{id}/transitions`.
    ServiceTransitions(ServiceId),
    /// `GET /transitions`.
    Transitions,
}

impl Route {
    /// The scope a token needs for this route.
    pub fn scope(&self) -> Scope {
        match self {
            Route::CreateService
            | Route::PatchService(_)
            | Route::DeleteService(_)
            | Route::Pause(..) => Scope::Write,
            _ => Scope::Read,
        }
    }

    /// True when the route takes a JSON body.
    pub fn has_body(&self) -> bool {
        matches!(self, Route::CreateService | Route::PatchService(_))
    }
}

/// Why no route matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No such path (404).
    NotFound,
    /// The path exists but not for this method (405); the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// Parses a `{id}` path segment: the 16-hex-digit id, or else a service name.
pub fn parse_id(seg: &str) -> Option<ServiceId> {
    if seg.is_empty() || seg.len() > 128 {
        return None;
    }
    if seg.len() == 16 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u64::from_str_radix(seg, 16)
            .ok()
            .filter(|v| *v <= i64::MAX as u64)
            .map(ServiceId::from_raw);
    }
    // Names are restricted to A-Z a-z 0-9 . _ - (config validation), so anything else is no id.
    seg.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        .then(|| ServiceId::from_name(seg))
}

/// Matches `method` and `path` (without query) against the REST routes.
pub fn route(method: &str, path: &str) -> Result<Route, RouteError> {
    let rest = path.strip_prefix(PREFIX).ok_or(RouteError::NotFound)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segs: Vec<&str> = rest.split('/').skip(1).collect();
    if !rest.starts_with('/') {
        return Err(RouteError::NotFound);
    }
    let m = method;
    let na = RouteError::MethodNotAllowed;
    match segs.as_slice() {
        ["services"] => match m {
            "GET" => Ok(Route::ListServices),
            "POST" => Ok(Route::CreateService),
            _ => Err(na("GET, HEAD, POST")),
        },
        ["transitions"] => match m {
            "GET" => Ok(Route::Transitions),
            _ => Err(na("GET, HEAD")),
        },
        ["services", id] => {
            let id = parse_id(id).ok_or(RouteError::NotFound)?;
            match m {
                "GET" => Ok(Route::GetService(id)),
                "PATCH" => Ok(Route::PatchService(id)),
                "DELETE" => Ok(Route::DeleteService(id)),
                _ => Err(na("GET, HEAD, PATCH, DELETE")),
            }
        }
        ["services", id, action] => {
            let id = parse_id(id).ok_or(RouteError::NotFound)?;
            match (*action, m) {
                ("pause", "POST") => Ok(Route::Pause(id, true)),
                ("resume", "POST") => Ok(Route::Pause(id, false)),
                ("results", "GET") => Ok(Route::Results(id)),
                ("transitions", "GET") => Ok(Route::ServiceTransitions(id)),
                ("pause" | "resume", _) => Err(na("POST")),
                ("results" | "transitions", _) => Err(na("GET, HEAD")),
                _ => Err(RouteError::NotFound),
            }
        }
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_errors() {
        let id = ServiceId::from_name("a");
        assert_eq!(route("GET", "/api/v1/services"), Ok(Route::ListServices));
        assert_eq!(route("POST", "/api/v1/services/"), Ok(Route::CreateService));
        assert_eq!(
            route("GET", "/api/v1/services/a"),
            Ok(Route::GetService(id))
        );
        assert_eq!(
            route("GET", &format!("/api/v1/services/{id}")),
            Ok(Route::GetService(id))
        );
        assert_eq!(
            route("POST", "/api/v1/services/a/pause"),
            Ok(Route::Pause(id, true))
        );
        assert_eq!(
            route("PUT", "/api/v1/services/a"),
            Err(RouteError::MethodNotAllowed("GET, HEAD, PATCH, DELETE"))
        );
        assert_eq!(route("GET", "/api/v1/nope"), Err(RouteError::NotFound));
        assert_eq!(route("GET", "/api/v1"), Err(RouteError::NotFound));
        assert_eq!(
            route("GET", "/api/v1/services/a%20b"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            route("GET", "/api/v1/services/a/b/c"),
            Err(RouteError::NotFound)
        );
    }
}
