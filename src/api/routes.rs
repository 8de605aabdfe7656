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
    GetService(ServiceRef),
    /// `PATCH /services/{id}`.
    PatchService(ServiceRef),
    /// `DELETE /services/{id}`.
    DeleteService(ServiceRef),
    /// `POST /services/{id}/pause` (true) or `/resume` (false).
    Pause(ServiceRef, bool),
    /// `GET /services/{id}/results`.
    Results(ServiceRef),
    /// `GET /services/{id}/transitions`.
    ServiceTransitions(ServiceRef),
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

/// A `{id}` path segment: the service id it stands for, and the name when the user wrote a
/// name. The id is what routing needs (the owner shard is derived from it); the name is kept so
/// an error can speak of what the user asked for instead of a hash they never saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// The service id (for a name, its hash).
    pub id: ServiceId,
    /// The name as written; `None` when the segment was an id.
    pub name: Option<String>,
}

impl ServiceRef {
    /// A reference written as the 16-hex-digit id.
    pub fn id(id: ServiceId) -> ServiceRef {
        ServiceRef { id, name: None }
    }

    /// A reference written as a name.
    pub fn name(name: &str) -> ServiceRef {
        ServiceRef {
            id: ServiceId::from_name(name),
            name: Some(name.to_string()),
        }
    }
}

/// `named shop` or `with id 46dc5e18e28e2409`, as the user wrote it, for messages.
impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "named {name}"),
            None => write!(f, "with id {}", self.id),
        }
    }
}

/// Parses a `{id}` path segment: the 16-hex-digit id, or else a service name.
pub fn parse_id(seg: &str) -> Option<ServiceRef> {
    if seg.is_empty() || seg.len() > 128 {
        return None;
    }
    if seg.len() == 16 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u64::from_str_radix(seg, 16)
            .ok()
            .filter(|v| *v <= i64::MAX as u64)
            .map(|v| ServiceRef::id(ServiceId::from_raw(v)));
    }
    // Names are restricted to A-Z a-z 0-9 . _ - (config validation), so anything else is no id.
    seg.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        .then(|| ServiceRef::name(seg))
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
            Ok(Route::GetService(ServiceRef::name("a")))
        );
        assert_eq!(
            route("GET", &format!("/api/v1/services/{id}")),
            Ok(Route::GetService(ServiceRef::id(id)))
        );
        assert_eq!(
            route("POST", "/api/v1/services/a/pause"),
            Ok(Route::Pause(ServiceRef::name("a"), true))
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

    #[test]
    fn a_reference_keeps_what_the_user_wrote() {
        let by_name = parse_id("shop").expect("a name");
        assert_eq!(by_name.id, ServiceId::from_name("shop"));
        assert_eq!(by_name.to_string(), "named shop");
        let by_id = parse_id("46dc5e18e28e2409").expect("an id");
        assert_eq!(by_id.name, None);
        assert_eq!(by_id.to_string(), "with id 46dc5e18e28e2409");
    }
}
