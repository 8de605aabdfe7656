//! Raw YAML structs -> validated `Config`: defaults, ranges, cross-field rules.
//!
//! Every check builds its error with the dotted key it is about, so the message can be acted on
//! without opening the docs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::duration::{format_duration, parse_duration};
use super::raw::{RawConfig, RawDefaults, RawService, RawTimeouts};
use super::url::parse_url;
use super::{
    AuthConfig, Config, ConfigError, DriverChoice, HttpLimits, JwtConfig, LogConfig, LogFormat,
    ProbeLimits, ResolverConfig, Scope, ServerConfig, ServerTls, StorageConfig, StorageKind,
    TokenConfig,
};
use crate::model::{
    Expect, Method, PhaseTimeouts, Scheme, ServiceId, ServiceSpec, Source, StatusRanges,
    TlsSettings,
};

/// Default address: loopback only, so a fresh install is not exposed.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Upper bound on shards: far above any core count, low enough to catch typos.
const MAX_SHARDS: u64 = 1024;
const MIB: u64 = 1024 * 1024;

type Result<T> = std::result::Result<T, ConfigError>;

fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(ConfigError {
        key: key.into(),
        message: message.into(),
    })
}

/// Parses an optional duration at `key`, falling back to `default`.
fn duration(key: &str, v: &Option<String>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).or_else(|m| err(key, m)),
    }
}

/// Checks `lo <= d <= hi` (hi None = unbounded).
fn dur_range(key: &str, d: Duration, lo: Duration, hi: Option<Duration>) -> Result<Duration> {
    if d < lo {
        return err(
            key,
            format!(
                "{} is too short (minimum {})",
                format_duration(d),
                format_duration(lo)
            ),
        );
    }
    if let Some(hi) = hi {
        if d > hi {
            return err(
                key,
                format!(
                    "{} is too long (maximum {})",
                    format_duration(d),
                    format_duration(hi)
                ),
            );
        }
    }
    Ok(d)
}

/// An optional integer at `key` in `lo..=hi`, or `default`.
fn int(key: &str, v: Option<u64>, default: u64, lo: u64, hi: u64) -> Result<usize> {
    let n = v.unwrap_or(default);
    if n < lo {
        return err(key, format!("must be at least {lo} (got {n})"));
    }
    if n > hi {
        return err(key, format!("must be at most {hi} (got {n})"));
    }
    usize::try_from(n).or_else(|_| err(key, format!("{n} is too large for this platform")))
}

/// Validates the whole file; `base` is the directory relative paths resolve against.
pub(super) fn validate(raw: RawConfig, base: &Path) -> Result<Config> {
    let server = server(&raw, base)?;
    let storage = storage(&raw, base)?;
    let log = log(&raw)?;
    let defaults = Defaults::from_raw(raw.defaults.as_ref())?;
    let mut services = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut tls_cache = TlsCache::new();
    for (i, s) in raw.services.unwrap_or_default().into_iter().enumerate() {
        let spec = service(
            &format!("services[{i}]."),
            s,
            &defaults,
            base,
            &mut tls_cache,
        )?;
        if let Some(first) = seen.insert(spec.name.clone(), i) {
            return err(
                format!("services[{i}].name"),
                format!("duplicate name \"{}\" (also services[{first}])", spec.name),
            );
        }
        services.push(spec);
    }
    let auth = auth(raw.auth.as_ref(), &server)?;
    Ok(Config {
        server,
        storage,
        log,
        services,
        auth,
        defaults: Arc::new(defaults),
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

/// The `auth` section; refuses a non-loopback listener without auth unless explicitly allowed.
fn auth(a: Option<&super::raw::RawAuth>, server: &ServerConfig) -> Result<AuthConfig> {
    let default = super::raw::RawAuth::default();
    let a = a.unwrap_or(&default);
    let mut tokens = Vec::new();
    for (i, t) in a.tokens.iter().flatten().enumerate() {
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
        tokens.push(TokenConfig { token, scope });
    }
    let jwt = match &a.jwt {
        None => None,
        Some(j) => {
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
            Some(JwtConfig {
                secret: secret.into_bytes(),
                issuer: j.issuer.clone(),
                audience: j.audience.clone(),
                default_scope: scope("auth.jwt.scope", j.scope.as_deref(), Scope::Read)?,
            })
        }
    };
    let cfg = AuthConfig {
        tokens,
        jwt,
        allow_unauthenticated: a.allow_unauthenticated.unwrap_or(false),
    };
    if !cfg.enabled() && !cfg.allow_unauthenticated && !server.listen.ip().is_loopback() {
        return err(
            "auth",
            format!(
                "server.listen {} is not a loopback address and auth is off: add auth.tokens or \
                 auth.jwt, or set auth.allow_unauthenticated: true",
                server.listen
            ),
        );
    }
    Ok(cfg)
}

/// `server.tls`: loads the PEM chain and key into a rustls server config (ring provider).
fn server_tls(t: &super::raw::RawServerTls, base: &Path) -> Result<ServerTls> {
    let Some(cert) = t.cert.as_deref() else {
        return err("server.tls.cert", "required: PEM certificate chain file");
    };
    let Some(key) = t.key.as_deref() else {
        return err("server.tls.key", "required: PEM private key file");
    };
    let (cert, key) = (resolve(base, cert.trim()), resolve(base, key.trim()));
    let read = |k: &str, p: &Path| -> Result<Vec<u8>> {
        std::fs::read(p).or_else(|e| err(k, format!("cannot read {}: {e}", p.display())))
    };
    let cert_pem = read("server.tls.cert", &cert)?;
    let key_pem = read("server.tls.key", &key)?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<std::result::Result<_, _>>()
        .or_else(|e| err("server.tls.cert", format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return err(
            "server.tls.cert",
            format!("no certificate in {}", cert.display()),
        );
    }
    let key_der = match rustls_pemfile::private_key(&mut &key_pem[..]) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return err(
                "server.tls.key",
                format!("no private key in {}", key.display()),
            )
        }
        Err(e) => return err("server.tls.key", format!("invalid PEM: {e}")),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .or_else(|e| err("server.tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .or_else(|e| {
            err(
                "server.tls.key",
                format!("does not match the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let handshake_timeout = positive(
        "server.tls.handshake_timeout",
        &t.handshake_timeout,
        Duration::from_secs(10),
    )?;
    Ok(ServerTls {
        config: Arc::new(config),
        handshake_timeout,
    })
}

fn server(raw: &RawConfig, base: &Path) -> Result<ServerConfig> {
    let default = super::raw::RawServer::default();
    let s = raw.server.as_ref().unwrap_or(&default);
    let listen_text = s.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text.trim().parse().or_else(|_| {
        err(
            "server.listen",
            format!(
                "invalid address \"{listen_text}\" (expected IP:port such as 127.0.0.1:8080, \
                 0.0.0.0:8080 or [::1]:8080; host names are not accepted)"
            ),
        )
    })?;
    let shards = int("server.shards", s.shards, 0, 0, MAX_SHARDS)?;
    let driver = match s.driver.as_deref().map(str::trim) {
        None | Some("auto") => DriverChoice::Auto,
        Some("io_uring") | Some("iouring") => DriverChoice::IoUring,
        Some("epoll") | Some("legacy") => DriverChoice::Epoll,
        Some(other) => {
            return err(
                "server.driver",
                format!("unknown driver \"{other}\" (expected auto, io_uring or epoll)"),
            )
        }
    };
    let shutdown_grace = duration(
        "server.shutdown_grace",
        &s.shutdown_grace,
        Duration::from_secs(5),
    )?;
    dur_range(
        "server.shutdown_grace",
        shutdown_grace,
        Duration::ZERO,
        Some(Duration::from_secs(3600)),
    )?;

    let d = HttpLimits::default();
    let l = s.limits.as_ref();
    let limits = HttpLimits {
        max_header_bytes: int(
            "server.limits.max_header_bytes",
            l.and_then(|l| l.max_header_bytes),
            d.max_header_bytes as u64,
            1024,
            MIB,
        )?,
        max_body_bytes: int(
            "server.limits.max_body_bytes",
            l.and_then(|l| l.max_body_bytes),
            d.max_body_bytes as u64,
            0,
            64 * MIB,
        )?,
        header_timeout: positive(
            "server.limits.header_timeout",
            &l.and_then(|l| l.header_timeout.clone()),
            d.header_timeout,
        )?,
        idle_timeout: positive(
            "server.limits.idle_timeout",
            &l.and_then(|l| l.idle_timeout.clone()),
            d.idle_timeout,
        )?,
        max_connections: int(
            "server.limits.max_connections",
            l.and_then(|l| l.max_connections),
            d.max_connections as u64,
            1,
            10_000_000,
        )?,
    };

    let d = ProbeLimits::default();
    let p = s.probe.as_ref();
    let probe = ProbeLimits {
        max_header_bytes: int(
            "server.probe.max_header_bytes",
            p.and_then(|p| p.max_header_bytes),
            d.max_header_bytes as u64,
            1024,
            MIB,
        )?,
        max_idle_per_target: int(
            "server.probe.max_idle_per_target",
            p.and_then(|p| p.max_idle_per_target),
            d.max_idle_per_target as u64,
            0,
            1024,
        )?,
        max_idle_total: int(
            "server.probe.max_idle_total",
            p.and_then(|p| p.max_idle_total),
            d.max_idle_total as u64,
            0,
            1_000_000,
        )?,
        idle_timeout: positive(
            "server.probe.idle_timeout",
            &p.and_then(|p| p.idle_timeout.clone()),
            d.idle_timeout,
        )?,
        max_inflight: int(
            "server.probe.max_inflight",
            p.and_then(|p| p.max_inflight),
            d.max_inflight as u64,
            1,
            1_000_000,
        )?,
    };

    let d = ResolverConfig::default();
    let r = s.resolver.as_ref();
    let resolver = ResolverConfig {
        threads: int(
            "server.resolver.threads",
            r.and_then(|r| r.threads),
            d.threads as u64,
            1,
            64,
        )?,
        queue: int(
            "server.resolver.queue",
            r.and_then(|r| r.queue),
            d.queue as u64,
            1,
            1_000_000,
        )?,
        ttl: positive("server.resolver.ttl", &r.and_then(|r| r.ttl.clone()), d.ttl)?,
    };

    let ws = ws(s.ws.as_ref())?;
    let tls = match &s.tls {
        Some(t) => Some(server_tls(t, base)?),
        None => None,
    };

    Ok(ServerConfig {
        listen,
        shards,
        pin: s.pin.unwrap_or(true),
        driver,
        limits,
        probe,
        resolver,
        shutdown_grace,
        ws,
        tls,
    })
}

/// `server.ws`: WebSocket limits and timers.
fn ws(w: Option<&super::raw::RawWs>) -> Result<super::WsConfig> {
    let d = super::WsConfig::default();
    Ok(super::WsConfig {
        max_frame_bytes: int(
            "server.ws.max_frame_bytes",
            w.and_then(|w| w.max_frame_bytes),
            d.max_frame_bytes as u64,
            125,
            64 * MIB,
        )?,
        max_message_bytes: int(
            "server.ws.max_message_bytes",
            w.and_then(|w| w.max_message_bytes),
            d.max_message_bytes as u64,
            125,
            64 * MIB,
        )?,
        max_queue_bytes: int(
            "server.ws.max_queue_bytes",
            w.and_then(|w| w.max_queue_bytes),
            d.max_queue_bytes as u64,
            1024,
            1024 * MIB,
        )?,
        slow_grace: duration(
            "server.ws.slow_grace",
            &w.and_then(|w| w.slow_grace.clone()),
            d.slow_grace,
        )?,
        ping_interval: positive(
            "server.ws.ping_interval",
            &w.and_then(|w| w.ping_interval.clone()),
            d.ping_interval,
        )?,
        pong_timeout: positive(
            "server.ws.pong_timeout",
            &w.and_then(|w| w.pong_timeout.clone()),
            d.pong_timeout,
        )?,
        close_timeout: positive(
            "server.ws.close_timeout",
            &w.and_then(|w| w.close_timeout.clone()),
            d.close_timeout,
        )?,
        resume_buffer: int(
            "server.ws.resume_buffer",
            w.and_then(|w| w.resume_buffer),
            d.resume_buffer as u64,
            16,
            1_000_000,
        )?,
        max_replay: int(
            "server.ws.max_replay",
            w.and_then(|w| w.max_replay),
            d.max_replay as u64,
            1,
            10_000_000,
        )?,
        send_buffer_bytes: int(
            "server.ws.send_buffer_bytes",
            w.and_then(|w| w.send_buffer_bytes),
            d.send_buffer_bytes as u64,
            0,
            64 * MIB,
        )?,
    })
}

/// A duration that must be greater than zero (a zero timeout would fire immediately).
fn positive(key: &str, v: &Option<String>, default: Duration) -> Result<Duration> {
    let d = duration(key, v, default)?;
    dur_range(key, d, Duration::from_millis(1), None)
}

fn storage(raw: &RawConfig, base: &Path) -> Result<StorageConfig> {
    let default = super::raw::RawStorage::default();
    let s = raw.storage.as_ref().unwrap_or(&default);
    let kind = match s.kind.as_deref().map(str::trim) {
        None | Some("sqlite") => {
            super::postgres::only_with_postgres(s)?;
            if s.url.is_some() {
                return err(
                    "storage.url",
                    "only used with kind: postgres (sqlite uses path)",
                );
            }
            let path = s.path.as_deref().unwrap_or("ringwatch.db").trim();
            if path.is_empty() {
                return err("storage.path", "must not be empty");
            }
            StorageKind::Sqlite {
                path: resolve(base, path),
            }
        }
        Some("postgres") | Some("postgresql") => {
            if s.path.is_some() {
                return err(
                    "storage.path",
                    "only used with kind: sqlite (postgres uses url)",
                );
            }
            let Some(url) = s.url.as_deref().map(str::trim) else {
                return err(
                    "storage.url",
                    "required with kind: postgres (e.g. postgres://user:pass@host:5432/ringwatch)",
                );
            };
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return err(
                    "storage.url",
                    "must start with postgres:// or postgresql:// (e.g. postgres://user:pass@host:5432/ringwatch)",
                );
            }
            super::postgres::storage_kind(s, url, base)?
        }
        Some(other) => {
            return err(
                "storage.kind",
                format!("unknown storage kind \"{other}\" (expected sqlite or postgres)"),
            )
        }
    };
    let queue_capacity = int(
        "storage.queue_capacity",
        s.queue_capacity,
        65_536,
        1,
        100_000_000,
    )?;
    // Large batches are much cheaper per row (each touched page is written once per commit):
    // 2.6 us per row at 65,536 rows against ~4.5 at 16,384 (bench/benches/store_append.rs).
    let batch_size = int("storage.batch_size", s.batch_size, 65_536, 1, 1_000_000)?;
    if batch_size > queue_capacity {
        return err(
            "storage.batch_size",
            format!("{batch_size} is larger than storage.queue_capacity {queue_capacity}"),
        );
    }
    let flush_interval = duration(
        "storage.flush_interval",
        &s.flush_interval,
        Duration::from_secs(1),
    )?;
    dur_range(
        "storage.flush_interval",
        flush_interval,
        Duration::from_millis(1),
        Some(Duration::from_secs(60)),
    )?;
    let retention = match &s.retention {
        None => None,
        Some(r) => {
            let d = parse_duration(r).or_else(|m| err("storage.retention", m))?;
            // Anything shorter is almost certainly a unit slip (e.g. 30m for 30d).
            Some(dur_range(
                "storage.retention",
                d,
                Duration::from_secs(3600),
                None,
            )?)
        }
    };
    Ok(StorageConfig {
        kind,
        queue_capacity,
        batch_size,
        flush_interval,
        retention,
    })
}

fn log(raw: &RawConfig) -> Result<LogConfig> {
    let level = raw
        .log
        .as_ref()
        .and_then(|l| l.level.clone())
        .unwrap_or_else(|| "info".to_string());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        return err(
            "log.level",
            format!("invalid filter \"{level}\": {e} (e.g. info, debug, ringwatch=debug,warn)"),
        );
    }
    let format = match raw
        .log
        .as_ref()
        .and_then(|l| l.format.as_deref())
        .map(str::trim)
    {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return err(
                "log.format",
                format!("unknown format \"{other}\" (expected text or json)"),
            )
        }
    };
    Ok(LogConfig { level, format })
}

/// Resolves a path from the file against the file's directory.
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Effective `defaults` section after validation; services from the API inherit it too.
#[derive(Debug, Clone)]
pub struct ServiceDefaults {
    interval: Duration,
    timeout: Duration,
    jitter: f64,
    failure_threshold: NonZeroU32,
    success_threshold: NonZeroU32,
    max_body_bytes: usize,
    method: Method,
    timeouts: RawTimeouts,
}

type Defaults = ServiceDefaults;

impl Default for ServiceDefaults {
    fn default() -> Self {
        // An absent `defaults` section always validates.
        Defaults::from_raw(None).unwrap_or_else(|_| unreachable!("built-in defaults are valid"))
    }
}

const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_THRESHOLD: u64 = 1000;
const MAX_PROBE_BODY: u64 = 16 * MIB;

impl Defaults {
    fn from_raw(d: Option<&RawDefaults>) -> Result<Defaults> {
        let empty = RawDefaults::default();
        let d = d.unwrap_or(&empty);
        let interval = duration("defaults.interval", &d.interval, Duration::from_secs(30))?;
        dur_range(
            "defaults.interval",
            interval,
            MIN_INTERVAL,
            Some(MAX_INTERVAL),
        )?;
        let timeout = duration("defaults.timeout", &d.timeout, Duration::from_secs(5))?;
        dur_range("defaults.timeout", timeout, MIN_TIMEOUT, None)?;
        let timeouts = d.timeouts.clone().unwrap_or_default();
        // Validate the phase timeouts here too, so a bad default is reported at its own key.
        phase_timeouts(
            "defaults.timeouts",
            &timeouts,
            &RawTimeouts::default(),
            timeout,
        )?;
        Ok(Defaults {
            interval,
            timeout,
            jitter: jitter("defaults.jitter", d.jitter.as_deref(), 0.1)?,
            failure_threshold: threshold("defaults.failure_threshold", d.failure_threshold, 1)?,
            success_threshold: threshold("defaults.success_threshold", d.success_threshold, 1)?,
            max_body_bytes: int(
                "defaults.max_body_bytes",
                d.max_body_bytes,
                65_536,
                0,
                MAX_PROBE_BODY,
            )?,
            method: method("defaults.method", d.method.as_deref(), Method::Get)?,
            timeouts,
        })
    }
}

fn threshold(key: &str, v: Option<u64>, default: u32) -> Result<NonZeroU32> {
    let n = int(key, v, u64::from(default), 1, MAX_THRESHOLD)?;
    // int() guarantees 1..=1000, so both conversions hold.
    NonZeroU32::new(n as u32).map_or_else(|| err(key, "must be at least 1"), Ok)
}

fn method(key: &str, v: Option<&str>, default: Method) -> Result<Method> {
    match v.map(|m| m.trim().to_ascii_uppercase()).as_deref() {
        None => Ok(default),
        Some("GET") => Ok(Method::Get),
        Some("HEAD") => Ok(Method::Head),
        Some("POST") => Ok(Method::Post),
        Some(_) => err(
            key,
            format!(
                "unsupported method \"{}\" (expected GET, HEAD or POST)",
                v.unwrap_or_default()
            ),
        ),
    }
}

/// Jitter as a fraction: `10%` or `0.1`, within 0..=50%.
fn jitter(key: &str, v: Option<&str>, default: f64) -> Result<f64> {
    let Some(text) = v.map(str::trim) else {
        return Ok(default);
    };
    let parsed = match text.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    };
    let hint = "(expected a percentage such as 10% or a fraction such as 0.1, from 0 to 50%)";
    match parsed {
        Ok(f) if f.is_finite() && (0.0..=0.5).contains(&f) => Ok(f),
        Ok(_) => err(key, format!("{text} is out of range {hint}")),
        Err(_) => err(key, format!("invalid jitter \"{text}\" {hint}")),
    }
}

/// Phase timeouts: the service's own, else the defaults', else the whole-probe timeout;
/// each clamped to the whole-probe timeout, which always wins anyway.
fn phase_timeouts(
    key: &str,
    own: &RawTimeouts,
    inherited: &RawTimeouts,
    timeout: Duration,
) -> Result<PhaseTimeouts> {
    let one = |name: &str, own: &Option<String>, inh: &Option<String>| -> Result<Duration> {
        let k = format!("{key}.{name}");
        let d = match (own, inh) {
            (Some(_), _) => positive(&k, own, timeout)?,
            // An inherited value was already checked at its own key (defaults.timeouts.*).
            (None, Some(_)) => positive(&format!("defaults.timeouts.{name}"), inh, timeout)?,
            (None, None) => timeout,
        };
        Ok(d.min(timeout))
    };
    Ok(PhaseTimeouts {
        connect: one("connect", &own.connect, &inherited.connect)?,
        tls: one("tls", &own.tls, &inherited.tls)?,
        head: one("head", &own.head, &inherited.head)?,
    })
}

/// Parses `200-299,304`; codes must be 100..=599 and ranges ascending.
pub fn parse_status_ranges(text: &str) -> std::result::Result<StatusRanges, String> {
    let hint = "(expected codes or ranges in 100..=599, e.g. \"200-299,304\")";
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!(
                "invalid status list \"{text}\": empty entry {hint}"
            ));
        }
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let code = |c: &str| match c.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(n),
            _ => Err(format!("invalid status \"{c}\" in \"{text}\" {hint}")),
        };
        let (lo, hi) = (code(lo)?, code(hi)?);
        if lo > hi {
            return Err(format!("range \"{part}\" is reversed (write {hi}-{lo})"));
        }
        out.push((lo, hi));
    }
    Ok(StatusRanges(out))
}

/// An RFC 9110 token character (valid in a header name).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// CA files already checked in this parse: thousands of https services usually share one.
pub(super) type TlsCache = HashMap<PathBuf, ()>;

/// Checks that a CA file holds at least one PEM certificate, so `ringwatch check` names the key
/// of a bad file; the prober builds its TLS client config from the same file later.
fn check_ca_file(path: &Path) -> std::result::Result<(), String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("CA file {}: invalid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("CA file {}: no certificate found", path.display()));
    }
    Ok(())
}

/// Validates one service; `prefix` starts every key (`services[3].` in the file, empty for an
/// API body).
pub(super) fn service(
    prefix: &str,
    s: RawService,
    d: &Defaults,
    base: &Path,
    tls_cache: &mut TlsCache,
) -> Result<ServiceSpec> {
    let k = |field: &str| format!("{prefix}{field}");

    let name = s.name.trim().to_string();
    if name.is_empty() || name.len() > 128 {
        return err(k("name"), "must be 1 to 128 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return err(
            k("name"),
            format!("\"{name}\" contains {c:?} (use only A-Z, a-z, 0-9, '.', '_', '-')"),
        );
    }

    let url = s.url.trim().to_string();
    let target = parse_url(&url).or_else(|m| err(k("url"), m))?;
    let method = method(&k("method"), s.method.as_deref(), d.method)?;

    let mut headers = Vec::new();
    for (hname, value) in s.headers.map(|h| h.0).unwrap_or_default() {
        let hk = k(&format!("headers.{hname}"));
        if hname.is_empty() || !hname.bytes().all(is_tchar) {
            return err(hk, format!("\"{hname}\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"));
        }
        let lower = hname.to_ascii_lowercase();
        if lower == "content-length" || lower == "transfer-encoding" {
            // The prober frames the body itself; a user value would corrupt the request.
            return err(hk, "is set by the prober from the body; remove it");
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return err(hk, "value must not contain CR, LF or NUL");
        }
        headers.push((hname, value));
    }

    let body = match s.body {
        Some(_) if method != Method::Post => {
            return err(
                k("body"),
                format!("a body needs method: POST (method is {})", method.as_str()),
            )
        }
        Some(b) => Some(Bytes::from(b)),
        None => None,
    };

    let interval = match &s.interval {
        Some(_) => dur_range(
            &k("interval"),
            duration(&k("interval"), &s.interval, d.interval)?,
            MIN_INTERVAL,
            Some(MAX_INTERVAL),
        )?,
        None => d.interval,
    };
    let timeout = match &s.timeout {
        Some(_) => dur_range(
            &k("timeout"),
            duration(&k("timeout"), &s.timeout, d.timeout)?,
            MIN_TIMEOUT,
            None,
        )?,
        None => d.timeout,
    };
    if timeout >= interval {
        // Blame the key the user wrote in this service; if neither, the defaults clash.
        let key = if s.timeout.is_some() {
            k("timeout")
        } else if s.interval.is_some() {
            k("interval")
        } else {
            "defaults.timeout".to_string()
        };
        return err(
            key,
            format!(
                "{} must be shorter than interval {}",
                format_duration(timeout),
                format_duration(interval)
            ),
        );
    }
    let phase_timeouts = phase_timeouts(
        &k("timeouts"),
        s.timeouts.as_ref().unwrap_or(&RawTimeouts::default()),
        &d.timeouts,
        timeout,
    )?;
    let jitter = match &s.jitter {
        Some(j) => jitter(&k("jitter"), Some(j), d.jitter)?,
        None => d.jitter,
    };

    let mut tags = Vec::new();
    for (t, tag) in s.tags.unwrap_or_default().into_iter().enumerate() {
        let tag = tag.trim().to_string();
        if tag.is_empty()
            || tag.len() > 64
            || tag
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return err(
                k(&format!("tags[{t}]")),
                format!("invalid tag \"{tag}\" (1 to 64 characters, no spaces or commas)"),
            );
        }
        tags.push(tag);
    }

    let max_body_bytes = match s.max_body_bytes {
        Some(_) => int(&k("max_body_bytes"), s.max_body_bytes, 0, 0, MAX_PROBE_BODY)?,
        None => d.max_body_bytes,
    };

    let mut expect = Expect::default();
    if let Some(e) = s.expect {
        if let Some(st) = e.status {
            expect.status = parse_status_ranges(&st).or_else(|m| err(k("expect.status"), m))?;
        }
        if let Some(needle) = e.body_contains {
            if needle.is_empty() {
                return err(k("expect.body_contains"), "must not be empty");
            }
            if method == Method::Head {
                return err(
                    k("expect.body_contains"),
                    "HEAD responses have no body; use GET",
                );
            }
            if needle.len() > max_body_bytes {
                return err(
                    k("expect.body_contains"),
                    format!(
                        "is longer than max_body_bytes ({max_body_bytes}), so it could never match"
                    ),
                );
            }
            expect.body_contains = Some(needle);
        }
        if e.max_latency.is_some() {
            let key = k("expect.max_latency");
            let ml = duration(&key, &e.max_latency, timeout)?;
            dur_range(&key, ml, Duration::from_millis(1), None)?;
            if ml > timeout {
                // The probe is cut off at `timeout`, so a larger bound could never fire.
                return err(
                    key,
                    format!(
                        "{} is longer than timeout {}, so it could never apply",
                        format_duration(ml),
                        format_duration(timeout)
                    ),
                );
            }
            expect.max_latency = Some(ml);
        }
    }

    let tls = match (target.scheme, s.tls) {
        (Scheme::Http, Some(_)) => return err(k("tls"), "only applies to https:// URLs"),
        (Scheme::Http, None) => None,
        (Scheme::Https, t) => {
            let t = t.unwrap_or_default();
            let ca = t.ca_file.as_deref().map(|p| resolve(base, p.trim()));
            if let Some(ca) = &ca {
                if !tls_cache.contains_key(ca) {
                    check_ca_file(ca).or_else(|e| err(k("tls.ca_file"), e))?;
                    tls_cache.insert(ca.clone(), ());
                }
            }
            Some(TlsSettings {
                ca_file: ca,
                insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
            })
        }
    };

    Ok(ServiceSpec {
        id: ServiceId::from_name(&name),
        name,
        target,
        url,
        method,
        headers,
        body,
        interval,
        timeout,
        phase_timeouts,
        jitter,
        tags,
        expect,
        failure_threshold: match s.failure_threshold {
            Some(_) => threshold(&k("failure_threshold"), s.failure_threshold, 1)?,
            None => d.failure_threshold,
        },
        success_threshold: match s.success_threshold {
            Some(_) => threshold(&k("success_threshold"), s.success_threshold, 1)?,
            None => d.success_threshold,
        },
        paused: s.paused.unwrap_or(false),
        tls,
        max_body_bytes,
        source: Source::Config,
    })
}
