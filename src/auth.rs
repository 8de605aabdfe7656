//! Authentication: static bearer tokens (read or write scope) and JWT HS256.
//!
//! One check serves every route (REST API, `/metrics`, the WebSocket upgrade): the token comes
//! from `Authorization: Bearer ...` or, for clients that cannot set headers (browsers opening a
//! WebSocket), from `?token=`. Static tokens are compared as SHA-256 digests in constant time,
//! so neither the content nor the length of a configured token leaks through timing. Tokens
//! are never logged: errors say what was wrong, not what was sent.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, JwtConfig};
use crate::http::{Request, Response};

pub use crate::config::Scope;

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the request.
    #[error("missing bearer token (send Authorization: Bearer <token>)")]
    Missing,
    /// The token is not valid; the reason never contains the token.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// Valid token, insufficient scope.
    #[error("this route needs a {0} token")]
    Forbidden(&'static str),
}

impl AuthError {
    /// The HTTP answer: 401 with a `WWW-Authenticate` challenge, or 403.
    pub fn response(&self) -> Response {
        match self {
            AuthError::Forbidden(_) => Response::error(403, "forbidden", &self.to_string()),
            AuthError::Missing | AuthError::Invalid(_) => {
                Response::error(401, "unauthorized", &self.to_string())
                    .with_header("WWW-Authenticate", "Bearer realm=\"ringwatch\"")
            }
        }
    }
}

/// The verifier built from the `auth` section; shared read-only by every shard.
#[derive(Debug)]
pub struct Auth {
    /// SHA-256 of each static token, with its scope.
    tokens: Vec<([u8; 32], Scope)>,
    jwt: Option<JwtConfig>,
}

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;
/// Longest token accepted; anything longer is refused before any work.
const MAX_TOKEN_LEN: usize = 8192;

type HmacSha256 = Hmac<Sha256>;

impl Auth {
    /// Builds the verifier; tokens are hashed once here.
    pub fn new(cfg: &AuthConfig) -> Auth {
        Auth {
            tokens: cfg
                .tokens
                .iter()
                .map(|t| (Sha256::digest(t.token.as_bytes()).into(), t.scope))
                .collect(),
            jwt: cfg.jwt.clone(),
        }
    }

    /// True when requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// Lets `req` through when auth is off or its token has at least `need`.
    pub fn check(&self, req: &Request, need: Scope) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let token = token_from(req).ok_or(AuthError::Missing)?;
        let have = self.verify(&token, now_secs())?;
        if have >= need {
            Ok(())
        } else {
            Err(AuthError::Forbidden(need.as_str()))
        }
    }

    /// The scope a token grants at unix time `now` (seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Scope, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid("malformed"));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every configured token is compared, matched or not, so timing says nothing.
        let mut found: Option<Scope> = None;
        for (want, scope) in &self.tokens {
            if bool::from(want.ct_eq(&digest)) {
                found = Some(found.map_or(*scope, |f| f.max(*scope)));
            }
        }
        if let Some(s) = found {
            return Ok(s);
        }
        match &self.jwt {
            Some(jwt) if token.bytes().filter(|b| *b == b'.').count() == 2 => {
                verify_jwt(jwt, token, now)
            }
            _ => Err(AuthError::Invalid("unknown token")),
        }
    }
}

fn now_secs() -> i64 {
    crate::model::UnixMillis::now().0 / 1000
}

/// The bearer token of a request: `Authorization: Bearer X`, else `?token=X`.
pub fn token_from(req: &Request) -> Option<String> {
    if let Some(v) = req.header("authorization") {
        let (scheme, rest) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string());
    }
    req.query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(percent_decode)
}

/// Decodes `%XX` escapes and `+` (query strings); invalid escapes stay as written.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn b64(part: &str) -> Result<Vec<u8>, AuthError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| AuthError::Invalid("malformed JWT"))
}

/// Verifies an HS256 JWT: signature, `alg`, `exp` (required), `nbf`, `iss`, `aud`.
fn verify_jwt(cfg: &JwtConfig, token: &str, now: i64) -> Result<Scope, AuthError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid("malformed JWT"));
    };
    let header: serde_json::Value =
        serde_json::from_slice(&b64(h)?).map_err(|_| AuthError::Invalid("malformed JWT"))?;
    // Only HS256: never `none`, never an algorithm the token picks for us.
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(AuthError::Invalid("JWT alg must be HS256"));
    }
    let mut mac = HmacSha256::new_from_slice(&cfg.secret)
        .map_err(|_| AuthError::Invalid("JWT secret unusable"))?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    // verify_slice compares in constant time.
    mac.verify_slice(&b64(sig)?)
        .map_err(|_| AuthError::Invalid("bad JWT signature"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64(p)?).map_err(|_| AuthError::Invalid("malformed JWT claims"))?;
    let num = |k: &str| claims.get(k).and_then(|v| v.as_f64()).map(|f| f as i64);
    match num("exp") {
        None => return Err(AuthError::Invalid("JWT has no exp")),
        Some(exp) if now > exp + LEEWAY_SECS => return Err(AuthError::Invalid("JWT expired")),
        _ => {}
    }
    if let Some(nbf) = num("nbf") {
        if now + LEEWAY_SECS < nbf {
            return Err(AuthError::Invalid("JWT not yet valid (nbf)"));
        }
    }
    if let Some(iss) = &cfg.issuer {
        if claims.get("iss").and_then(|v| v.as_str()) != Some(iss.as_str()) {
            return Err(AuthError::Invalid("JWT issuer mismatch"));
        }
    }
    if let Some(aud) = &cfg.audience {
        let ok = match claims.get("aud") {
            Some(serde_json::Value::String(s)) => s == aud,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(AuthError::Invalid("JWT audience mismatch"));
        }
    }
    let scopes = claims
        .get("scope")
        .or_else(|| claims.get("scp"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let mut words = scopes.split_whitespace();
    Ok(if scopes.split_whitespace().any(|w| w == "write") {
        Scope::Write
    } else if words.any(|w| w == "read") {
        Scope::Read
    } else {
        cfg.default_scope
    })
}

/// Signs `claims` as an HS256 JWT (tests, and the docs' example tokens).
pub fn sign_jwt(secret: &[u8], claims: &serde_json::Value) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = e.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = e.encode(claims.to_string());
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    let sig = e.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use serde_json::json;

    fn auth() -> Auth {
        Auth::new(&AuthConfig {
            tokens: vec![
                TokenConfig {
                    token: "read-token-0123456789".into(),
                    scope: Scope::Read,
                },
                TokenConfig {
                    token: "write-token-0123456789".into(),
                    scope: Scope::Write,
                },
            ],
            jwt: Some(JwtConfig {
                secret: b"0123456789abcdef0123456789abcdef".to_vec(),
                issuer: Some("me".into()),
                audience: Some("ringwatch".into()),
                default_scope: Scope::Read,
            }),
            allow_unauthenticated: false,
        })
    }

    #[test]
    fn static_tokens_map_to_scopes() {
        let a = auth();
        assert_eq!(a.verify("read-token-0123456789", 0), Ok(Scope::Read));
        assert_eq!(a.verify("write-token-0123456789", 0), Ok(Scope::Write));
        assert!(a.verify("read-token-012345678", 0).is_err());
        assert!(a.verify("", 0).is_err());
    }

    #[test]
    fn jwt_checks_signature_exp_nbf_iss_aud() {
        let a = auth();
        let secret = b"0123456789abcdef0123456789abcdef";
        let ok = json!({"exp": 2000, "nbf": 900, "iss": "me", "aud": ["x", "ringwatch"], "scope": "read write"});
        assert_eq!(a.verify(&sign_jwt(secret, &ok), 1000), Ok(Scope::Write));
        assert_eq!(
            a.verify(&sign_jwt(secret, &ok), 3000),
            Err(AuthError::Invalid("JWT expired"))
        );
        assert!(a.verify(&sign_jwt(secret, &ok), 100).is_err(), "nbf");
        assert!(a
            .verify(&sign_jwt(b"another secret another secret xx", &ok), 1000)
            .is_err());
        let mut bad = ok.clone();
        bad["iss"] = json!("other");
        assert!(a.verify(&sign_jwt(secret, &bad), 1000).is_err());
        let mut bad = ok.clone();
        bad["aud"] = json!("other");
        assert!(a.verify(&sign_jwt(secret, &bad), 1000).is_err());
        let mut no_exp = ok.clone();
        no_exp.as_object_mut().map(|o| o.remove("exp"));
        assert!(a.verify(&sign_jwt(secret, &no_exp), 1000).is_err());
        let mut read = ok.clone();
        read["scope"] = json!("read");
        assert_eq!(a.verify(&sign_jwt(secret, &read), 1000), Ok(Scope::Read));
        // alg none with a valid-looking body is refused.
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            e.encode(br#"{"alg":"none"}"#),
            e.encode(ok.to_string())
        );
        assert!(a.verify(&none, 1000).is_err());
    }

    #[test]
    fn token_comes_from_header_or_query() {
        let mut req = Request {
            method: "GET".into(),
            path: "/ws".into(),
            query: "a=1&token=abc%2Bd".into(),
            headers: vec![],
            body: Default::default(),
        };
        assert_eq!(token_from(&req).as_deref(), Some("abc+d"));
        req.headers
            .push(("Authorization".into(), "Bearer xyz".into()));
        assert_eq!(token_from(&req).as_deref(), Some("xyz"));
    }
}
