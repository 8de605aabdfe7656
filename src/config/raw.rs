//! The YAML file as written: every key optional, scalars kept loose (durations, jitter and
//! status ranges as strings) so validation can report them with their exact key path.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<RawServer>,
    pub storage: Option<RawStorage>,
    pub log: Option<RawLog>,
    pub defaults: Option<RawDefaults>,
    pub services: Option<Vec<RawService>>,
}

/// `server`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub shards: Option<u64>,
    pub pin: Option<bool>,
    pub driver: Option<String>,
    pub shutdown_grace: Option<String>,
    pub limits: Option<RawLimits>,
    pub probe: Option<RawProbe>,
    pub resolver: Option<RawResolver>,
}

/// `server.limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<u64>,
}

/// `server.probe`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub max_header_bytes: Option<u64>,
    pub max_idle_per_target: Option<u64>,
    pub max_idle_total: Option<u64>,
    pub idle_timeout: Option<String>,
}

/// `server.resolver`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    pub threads: Option<u64>,
    pub queue: Option<u64>,
    pub ttl: Option<String>,
}

/// `storage`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    pub queue_capacity: Option<u64>,
    pub batch_size: Option<u64>,
    pub flush_interval: Option<String>,
    pub retention: Option<String>,
}

/// `log`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

/// `defaults`: values every service inherits unless it sets its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub jitter: Option<String>,
    pub failure_threshold: Option<u64>,
    pub success_threshold: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub method: Option<String>,
    pub timeouts: Option<RawTimeouts>,
}

/// `timeouts` (per phase).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub tls: Option<String>,
    pub head: Option<String>,
}

/// One entry of `services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub url: String,
    pub method: Option<String>,
    pub headers: Option<Headers>,
    pub body: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub jitter: Option<String>,
    pub tags: Option<Vec<String>>,
    pub expect: Option<RawExpect>,
    pub failure_threshold: Option<u64>,
    pub success_threshold: Option<u64>,
    pub paused: Option<bool>,
    pub tls: Option<RawTls>,
    pub timeouts: Option<RawTimeouts>,
    pub max_body_bytes: Option<u64>,
}

/// `services[i].expect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    pub status: Option<String>,
    pub body_contains: Option<String>,
    pub max_latency: Option<String>,
}

/// `services[i].tls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca_file: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

/// A header mapping that keeps the file's order (headers are sent in that order).
#[derive(Debug, Default)]
pub struct Headers(pub Vec<(String, String)>);

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
