//! YAML configuration: parsing, defaults and validation into ready-to-run `ServiceSpec`s.
//!
//! Every error names the offending key (`services[2].interval`) and says why, so
//! `ringwatch check` and `ringwatch run` can refuse a bad file with one readable line.

mod auth;
mod cluster;
mod defaults;
mod duration;
mod json;
mod locate;
mod log;
mod postgres;
mod raw;
mod server;
mod service;
mod storage;
mod url;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cluster::REDIS_PASSWORD_ENV;
pub use defaults::ServiceDefaults;
pub use duration::{format_duration, parse_duration};
pub use json::{api_service, type_name, JsonError, SERVICE_FIELDS};
pub use postgres::{PgConfig, PgHost, PgPassword, LIBPQ_PASSWORD_ENV, PASSWORD_ENV};
pub use service::parse_status_ranges;
pub use url::parse_url;

use crate::model::ServiceSpec;

/// A configuration problem, with the dotted path of the key at fault.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}", render(key, message))]
pub struct ConfigError {
    /// Path of the key, e.g. `services[1].expect.status` (empty for file-level errors).
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// `key: message`, or just the message for file-level errors (empty key).
fn render(key: &str, message: &str) -> String {
    if key.is_empty() {
        message.to_string()
    } else {
        format!("{key}: {message}")
    }
}

/// Why `Config::load` failed: the file could not be read, or what it holds is invalid. Both
/// name the file, once.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read; the OS reason is kept.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file was read but a key in it is invalid.
    #[error("{}: {error}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key at fault and why.
        error: ConfigError,
    },
}

impl LoadError {
    /// The key-level error, when the file could be read.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match self {
            LoadError::Read { .. } => None,
            LoadError::Invalid { error, .. } => Some(error),
        }
    }
}

/// What a token may do; `Write` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// GET routes.
    Read,
    /// Routes that change services.
    Write,
}

impl Scope {
    /// Lower-case name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// Resolver settings.
#[derive(Debug, Clone, Copy)]
pub struct ResolverConfig {
    /// Resolver threads (a slow lookup occupies one). Zero means only IP literals resolve.
    pub threads: usize,
    /// Pending lookups accepted before `Overloaded`.
    pub queue: usize,
    /// How long a successful answer is cached.
    pub ttl: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            threads: 2,
            queue: 1024,
            ttl: Duration::from_secs(60),
        }
    }
}

/// Bounds on what a prober keeps and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeLimits {
    /// Largest response head accepted.
    pub max_header_bytes: usize,
    /// Idle keep-alive connections kept per target.
    pub max_idle_per_target: usize,
    /// Idle keep-alive connections kept per shard.
    pub max_idle_total: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// Probes a shard runs at once; beyond it due probes wait (and their lag shows it).
    pub max_inflight: usize,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            max_header_bytes: 16 * 1024,
            max_idle_per_target: 4,
            max_idle_total: 4096,
            idle_timeout: Duration::from_secs(30),
            max_inflight: 4096,
        }
    }
}

/// Which io_uring/epoll driver the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring, falling back to epoll when it cannot be set up.
    Auto,
    /// io_uring only (fail if unavailable).
    IoUring,
    /// epoll only.
    Epoll,
}

/// Limits of the shards' HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time allowed to send a complete request head (slowloris guard).
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle_timeout: Duration,
    /// Connections per shard; more are closed at accept.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// The `server` section.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the HTTP port (every shard listens on it with SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Shard count; 0 = one per core.
    pub shards: usize,
    /// Pin each shard to a core.
    pub pin: bool,
    /// I/O driver.
    pub driver: DriverChoice,
    /// HTTP server limits.
    pub limits: HttpLimits,
    /// Prober limits.
    pub probe: ProbeLimits,
    /// DNS resolver settings.
    pub resolver: ResolverConfig,
    /// How long shutdown waits for in-flight probes.
    pub shutdown_grace: Duration,
    /// `server.tls`: when set, every connection is TLS (https, wss).
    pub tls: Option<ServerTls>,
    /// WebSocket stream settings (`server.ws`).
    pub ws: WsConfig,
    /// `/metrics` carries per-service series (status, last latency, last probe time).
    pub per_service_metrics: bool,
}

/// `server.tls`, loaded: the rustls config built from the PEM files.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Certificate chain and key, ring provider, ALPN http/1.1.
    pub config: std::sync::Arc<rustls::ServerConfig>,
    /// A handshake not finished within this is dropped (a stalled client holds no slot).
    pub handshake_timeout: Duration,
}

/// One configured bearer token.
#[derive(Clone)]
pub struct TokenConfig {
    /// The secret (never logged: `Debug` hides it).
    pub token: String,
    /// What it may do.
    pub scope: Scope,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"***")
            .field("scope", &self.scope)
            .finish()
    }
}

/// `auth.jwt`: HS256 tokens signed with a secret from the environment.
#[derive(Clone)]
pub struct JwtConfig {
    /// HMAC secret (never logged).
    pub secret: Vec<u8>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (string or one of an array), when set.
    pub audience: Option<String>,
    /// Scope of a token without a `scope` claim.
    pub default_scope: Scope,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &"***")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The `auth` section.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Static bearer tokens.
    pub tokens: Vec<TokenConfig>,
    /// JWT HS256 settings.
    pub jwt: Option<JwtConfig>,
    /// Serve without auth even on a non-loopback address.
    pub allow_unauthenticated: bool,
}

impl AuthConfig {
    /// True when requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }
}

/// Limits and timers of the WebSocket stream (`server.ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsConfig {
    /// Largest client frame payload; larger frames are closed with 1009.
    pub max_frame_bytes: usize,
    /// Largest client message (all fragments); larger messages are closed with 1009.
    pub max_message_bytes: usize,
    /// Bytes queued for one client before it counts as slow.
    pub max_queue_bytes: usize,
    /// How long a client may stay over `max_queue_bytes` before it is closed with 1008.
    pub slow_grace: Duration,
    /// Server ping period.
    pub ping_interval: Duration,
    /// A ping not answered within this closes the client.
    pub pong_timeout: Duration,
    /// After a close frame is sent, how long to wait for the client before dropping the socket.
    pub close_timeout: Duration,
    /// Recent transition events kept per shard for gap-free resume.
    pub resume_buffer: usize,
    /// Most stored transitions replayed for one `since`.
    pub max_replay: usize,
    /// SO_SNDBUF for WebSocket sockets (0 = kernel autotuning); caps kernel memory per client
    /// and makes a stalled client reach its queue bound sooner.
    pub send_buffer_bytes: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_frame_bytes: 64 * 1024,
            max_message_bytes: 64 * 1024,
            max_queue_bytes: 1024 * 1024,
            slow_grace: Duration::from_secs(5),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            resume_buffer: 4096,
            max_replay: 100_000,
            send_buffer_bytes: 0,
        }
    }
}

/// Storage backend choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKind {
    /// Embedded SQLite file.
    Sqlite {
        /// Database file.
        path: PathBuf,
    },
    /// PostgreSQL server.
    Postgres(PgConfig),
}

/// The `storage` section.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Backend.
    pub kind: StorageKind,
    /// Bound of the shard -> writer queue; beyond it records are dropped and counted.
    pub queue_capacity: usize,
    /// Records per transaction at most.
    pub batch_size: usize,
    /// Longest a record waits before its batch is flushed.
    pub flush_interval: Duration,
    /// Results older than this are deleted (None = keep forever).
    pub retention: Option<Duration>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `log` section.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `ringwatch=debug`.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// The roles a cluster process plays (any combination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Holds (or stands by for) the scheduler lease and dispatches jobs.
    pub scheduler: bool,
    /// Probes jobs from the jobs stream.
    pub worker: bool,
    /// Stores results and decides transitions in PostgreSQL.
    pub ingest: bool,
    /// Streams transitions to WebSocket clients.
    pub gateway: bool,
}

impl Roles {
    /// Every role: standalone behaviour over Redis and PostgreSQL.
    pub const ALL: Roles = Roles {
        scheduler: true,
        worker: true,
        ingest: true,
        gateway: true,
    };

    /// Parses role names (`scheduler`, `worker`, `ingest`, `gateway`, `all`).
    pub fn parse_list<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Roles, String> {
        let mut r = Roles {
            scheduler: false,
            worker: false,
            ingest: false,
            gateway: false,
        };
        for n in names {
            match n.trim() {
                "all" => r = Roles::ALL,
                "scheduler" => r.scheduler = true,
                "worker" => r.worker = true,
                "ingest" => r.ingest = true,
                "gateway" => r.gateway = true,
                other => {
                    return Err(format!(
                    "unknown role \"{other}\" (expected scheduler, worker, ingest, gateway or all)"
                ))
                }
            }
        }
        if r == (Roles {
            scheduler: false,
            worker: false,
            ingest: false,
            gateway: false,
        }) {
            return Err("no role given".into());
        }
        Ok(r)
    }

    /// The role names, comma-separated (logs, metrics).
    pub fn names(&self) -> String {
        [
            (self.scheduler, "scheduler"),
            (self.worker, "worker"),
            (self.ingest, "ingest"),
            (self.gateway, "gateway"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
    }
}

/// The `cluster` section: present = this process is a node of a cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Redis URL (no credentials).
    pub redis: String,
    /// Redis password (from the environment or `password_file`; never logged).
    pub password: Option<String>,
    /// Roles of this process (`--role` overrides).
    pub roles: Roles,
    /// This node's name in consumer groups and the lease (default: host name and port).
    pub node: Option<String>,
    /// Scheduler lease time to live: a standby takes over within it.
    pub lease_ttl: Duration,
    /// A job pending this long without an acknowledgement is taken over by another worker
    /// (`XAUTOCLAIM` min-idle); longer than any probe's timeout.
    pub claim_idle: Duration,
    /// Entries read or written per stream round trip.
    pub batch: usize,
    /// Approximate bound of each stream (`MAXLEN ~`).
    pub stream_maxlen: u64,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &self.redis)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("roles", &self.roles)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `server` section.
    pub server: ServerConfig,
    /// `storage` section.
    pub storage: StorageConfig,
    /// `log` section.
    pub log: LogConfig,
    /// Config-defined services, validated, names unique.
    pub services: Vec<ServiceSpec>,
    /// `auth` section.
    pub auth: AuthConfig,
    /// Effective `defaults`, applied to services created over the API too.
    pub defaults: std::sync::Arc<ServiceDefaults>,
    /// `cluster` section; None for a standalone process.
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// Reads and validates a YAML file; relative paths in it resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Config::parse(&text, base).map_err(|error| LoadError::Invalid {
            path: path.to_path_buf(),
            error,
        })
    }

    /// Moves the listener to `addr` (`ringwatch run --listen`) under the rule the file's
    /// `server.listen` obeys: a non-loopback address needs auth or
    /// `auth.allow_unauthenticated`.
    pub fn set_listen(&mut self, addr: SocketAddr) -> Result<(), ConfigError> {
        auth::listener_rule(&self.auth, addr)?;
        self.server.listen = addr;
        Ok(())
    }

    /// Parses YAML text; `base` is the directory relative paths resolve against.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let opts = serde_saphyr::Options {
            // We render our own one-line messages with the key path; snippets would be noise.
            with_snippet: false,
            budget: Some(yaml_budget()),
            ..serde_saphyr::Options::default()
        };
        let raw: raw::RawConfig = serde_saphyr::from_str_with_options(text, opts)
            .map_err(|e| locate::yaml_error(text, &e))?;
        validate::validate(raw, base)
    }
}

/// Parser limits sized for large fleets: the library default (250,000 nodes) stops near
/// 25,000 services, while a host may monitor 1,000,000. The alias limits, which guard against
/// "billion laughs" files, stay at their defaults.
pub(crate) fn yaml_budget() -> serde_saphyr::Budget {
    serde_saphyr::Budget {
        max_reader_input_bytes: Some(1024 * 1024 * 1024),
        max_events: 100_000_000,
        max_nodes: 50_000_000,
        max_total_scalar_bytes: 1024 * 1024 * 1024,
        ..serde_saphyr::Budget::default()
    }
}

#[cfg(test)]
mod tests;
