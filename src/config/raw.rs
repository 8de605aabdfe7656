//! The YAML file as written: every key optional, scalars kept loose (durations, jitter and
//! status ranges as strings) so validation can report them with their exact key path.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: Option<RawServer>,
    pub(super) storage: Option<RawStorage>,
    pub(super) log: Option<RawLog>,
    pub(super) defaults: Option<RawDefaults>,
    pub(super) services: Option<Vec<RawService>>,
    pub(super) auth: Option<RawAuth>,
    pub(super) cluster: Option<RawCluster>,
}

/// `cluster`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) redis: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) roles: Option<Vec<String>>,
    pub(super) node: Option<String>,
    pub(super) lease_ttl: Option<String>,
    pub(super) claim_idle: Option<String>,
    pub(super) batch: Option<u64>,
    pub(super) stream_maxlen: Option<u64>,
}

/// `server`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) shards: Option<u64>,
    pub(super) pin: Option<bool>,
    pub(super) driver: Option<String>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) limits: Option<RawLimits>,
    pub(super) probe: Option<RawProbe>,
    pub(super) resolver: Option<RawResolver>,
    pub(super) ws: Option<RawWs>,
    pub(super) tls: Option<RawServerTls>,
    pub(super) per_service_metrics: Option<bool>,
}

/// `server.tls`: serve https with these PEM files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) handshake_timeout: Option<String>,
}

/// `auth`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) tokens: Option<Vec<RawToken>>,
    pub(super) jwt: Option<RawJwt>,
    pub(super) allow_unauthenticated: Option<bool>,
}

/// `auth.tokens[i]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) token: Option<String>,
    pub(super) token_env: Option<String>,
    pub(super) scope: Option<String>,
}

/// `auth.jwt`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwt {
    pub(super) secret_env: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) audience: Option<String>,
    pub(super) scope: Option<String>,
}

/// `server.limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_header_bytes: Option<u64>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) header_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_connections: Option<u64>,
}

/// `server.probe`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub(super) max_header_bytes: Option<u64>,
    pub(super) max_idle_per_target: Option<u64>,
    pub(super) max_idle_total: Option<u64>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_inflight: Option<u64>,
}

/// `server.ws`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWs {
    pub(super) max_frame_bytes: Option<u64>,
    pub(super) max_message_bytes: Option<u64>,
    pub(super) max_queue_bytes: Option<u64>,
    pub(super) slow_grace: Option<String>,
    pub(super) ping_interval: Option<String>,
    pub(super) pong_timeout: Option<String>,
    pub(super) close_timeout: Option<String>,
    pub(super) resume_buffer: Option<u64>,
    pub(super) max_replay: Option<u64>,
    pub(super) send_buffer_bytes: Option<u64>,
}

/// `server.resolver`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolver {
    pub(super) threads: Option<u64>,
    pub(super) queue: Option<u64>,
    pub(super) ttl: Option<String>,
}

/// `storage`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) kind: Option<String>,
    pub(super) path: Option<String>,
    pub(super) url: Option<String>,
    pub(super) queue_capacity: Option<u64>,
    pub(super) batch_size: Option<u64>,
    pub(super) flush_interval: Option<String>,
    pub(super) retention: Option<String>,
    pub(super) pool: Option<u64>,
    pub(super) connect_timeout: Option<String>,
    pub(super) query_timeout: Option<String>,
    pub(super) password_file: Option<String>,
}

/// `log`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<String>,
}

/// `defaults`: values every service inherits unless it sets its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) jitter: Option<String>,
    pub(super) failure_threshold: Option<u64>,
    pub(super) success_threshold: Option<u64>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) method: Option<String>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) follow_redirects: Option<u64>,
}

/// `timeouts` (per phase).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<String>,
    pub(super) tls: Option<String>,
    pub(super) head: Option<String>,
}

/// One entry of `services`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) method: Option<String>,
    pub(super) headers: Option<Headers>,
    pub(super) body: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) jitter: Option<String>,
    pub(super) tags: Option<Vec<String>>,
    pub(super) expect: Option<RawExpect>,
    pub(super) failure_threshold: Option<u64>,
    pub(super) success_threshold: Option<u64>,
    pub(super) paused: Option<bool>,
    pub(super) tls: Option<RawTls>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) follow_redirects: Option<u64>,
}

/// `services[i].expect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    pub(super) status: Option<String>,
    pub(super) body_contains: Option<String>,
    pub(super) max_latency: Option<String>,
}

/// `services[i].tls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) ca_file: Option<String>,
    pub(super) insecure_skip_verify: Option<bool>,
}

/// A header mapping that keeps the file's order (headers are sent in that order).
#[derive(Debug, Default)]
pub(super) struct Headers(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Headers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of header names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    out.push(entry);
                }
                Ok(Headers(out))
            }
            fn visit_unit<E>(self) -> Result<Headers, E> {
                Ok(Headers::default())
            }
        }
        d.deserialize_map(V)
    }
}
