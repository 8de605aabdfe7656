//! The `auth` section: static bearer tokens, JWT HS256, and the rule that a non-loopback
//! listener needs one of them (or an explicit opt-out).

use std::net::SocketAddr;

use super::raw::{RawAuth, RawJwt, RawToken};
use super::validate::{err, Result};
use super::{AuthConfig, JwtConfig, Scope, ServerConfig, TokenConfig};

/// The `auth` section; refuses a non-loopback listener without auth unless explicitly allowed.
pub(super) fn auth(a: Option<&RawAuth>, server: &ServerConfig) -> Result<AuthConfig> {
    let default = RawAuth::default();
    let a = a.unwrap_or(&default);
    let tokens = a
        .tokens
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| token(i, t))
        .collect::<Result<Vec<_>>>()?;
    let cfg = AuthConfig {
        tokens,
        jwt: a.jwt.as_ref().map(jwt).transpose()?,
        allow_unauthenticated: a.allow_unauthenticated.unwrap_or(false),
    };
    listener_rule(&cfg, server.listen)?;
    Ok(cfg)
}

/// A listener on a non-loopback address needs tokens, JWT or `allow_unauthenticated`.
pub(super) fn listener_rule(cfg: &AuthConfig, listen: SocketAddr) -> Result<()> {
    if !cfg.enabled() && !cfg.allow_unauthenticated && !listen.ip().is_loopback() {
        return err(
            "auth",
            format!(
                "server.listen {listen} is not a loopback address and auth is off: add \
                 auth.tokens or auth.jwt, or set auth.allow_unauthenticated: true"
            ),
        );
    }
    Ok(())
}

/// `auth.tokens[i]`: a literal or an environment variable, never both.
fn token(i: usize, t: &RawToken) -> Result<TokenConfig> {
    let k = |f: &str| format!("auth.tokens[{i}].{f}");
    let token = match (&t.token, &t.token_env) {
        (Some(_), Some(_)) => return err(k("token"), "set token or token_env, not both"),
        (Some(v), None) => v.clone(),
        (None, Some(name)) => env_secret(&k("token_env"), name)?,
        (None, None) => return err(k("token"), "required (or token_env)"),
    };
    // Short tokens are guessable; 16 characters is the floor for a bearer secret.
    if token.len() < 16 || token.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return err(
            k("token"),
            "must be at least 16 printable characters without spaces",
        );
    }
    let scope = scope(&k("scope"), t.scope.as_deref(), Scope::Read)?;
    Ok(TokenConfig { token, scope })
}

/// `auth.jwt`: the secret comes from the environment so it never sits in the file.
fn jwt(j: &RawJwt) -> Result<JwtConfig> {
    let Some(name) = j.secret_env.as_deref() else {
        return err(
            "auth.jwt.secret_env",
            "required: the variable holding the HS256 secret",
        );
    };
    let secret = env_secret("auth.jwt.secret_env", name)?;
    if secret.len() < 32 {
        return err(
            "auth.jwt.secret_env",
            format!("the secret in {name} must be at least 32 bytes for HS256"),
        );
    }
    Ok(JwtConfig {
        secret: secret.into_bytes(),
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        default_scope: scope("auth.jwt.scope", j.scope.as_deref(), Scope::Read)?,
    })
}

/// Scope names as written in the file.
fn scope(key: &str, v: Option<&str>, default: Scope) -> Result<Scope> {
    match v.map(str::trim) {
        None => Ok(default),
        Some("read") => Ok(Scope::Read),
        Some("write") => Ok(Scope::Write),
        Some(other) => err(
            key,
            format!("unknown scope \"{other}\" (expected read or write)"),
        ),
    }
}

/// Reads a secret from the environment variable named at `key`.
fn env_secret(key: &str, name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        // The message names the variable, never its value.
        _ => err(
            key,
            format!("environment variable {name} is not set or empty"),
        ),
    }
}
