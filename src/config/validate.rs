//! Raw YAML structs -> validated `Config`: ties the sections together and holds the small rules
//! every section shares (durations, ranges, paths).
//!
//! Every check builds its error with the dotted key it is about, so the message can be acted on
//! without opening the docs. Each section lives in its own file (`server`, `auth`, `storage`,
//! `log`, `defaults`, `service`); this one only calls them in order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::defaults::ServiceDefaults;
use super::duration::{format_duration, parse_duration};
use super::raw::RawConfig;
use super::service::{service, TlsCache};
use super::{Config, ConfigError};

/// A mebibyte, for byte limits.
pub(super) const MIB: u64 = 1024 * 1024;

/// Every validation step returns this.
pub(super) type Result<T> = std::result::Result<T, ConfigError>;

/// An error at `key`.
pub(super) fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(ConfigError {
        key: key.into(),
        message: message.into(),
    })
}

/// Validates the whole file; `base` is the directory relative paths resolve against.
pub(super) fn validate(raw: RawConfig, base: &Path) -> Result<Config> {
    let server = super::server::server(raw.server.as_ref(), base)?;
    let storage = super::storage::storage(raw.storage.as_ref(), base)?;
    let log = super::log::log(raw.log.as_ref())?;
    let defaults = ServiceDefaults::from_raw(raw.defaults.as_ref())?;
    let mut services = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut tls_cache = TlsCache::new();
    for (i, s) in raw.services.unwrap_or_default().into_iter().enumerate() {
        let prefix = format!("services[{i}].");
        let spec = service(&prefix, s, &defaults, base, &mut tls_cache)?;
        if let Some(first) = seen.insert(spec.name.clone(), i) {
            return err(
                format!("services[{i}].name"),
                format!("duplicate name \"{}\" (also services[{first}])", spec.name),
            );
        }
        services.push(spec);
    }
    let auth = super::auth::auth(raw.auth.as_ref(), &server)?;
    let cluster = super::cluster::cluster(raw.cluster.as_ref(), base)?;
    if cluster.is_some() && !matches!(storage.kind, super::StorageKind::Postgres { .. }) {
        return err(
            "storage.kind",
            "a cluster stores in PostgreSQL: set storage.kind: postgres (and storage.url)",
        );
    }
    Ok(Config {
        server,
        storage,
        log,
        services,
        auth,
        defaults: Arc::new(defaults),
        cluster,
    })
}

/// Parses an optional duration at `key`, falling back to `default`.
pub(super) fn duration(key: &str, v: &Option<String>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).or_else(|m| err(key, m)),
    }
}

/// Checks `lo <= d <= hi` (hi None = unbounded).
pub(super) fn dur_range(
    key: &str,
    d: Duration,
    lo: Duration,
    hi: Option<Duration>,
) -> Result<Duration> {
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
    if let Some(hi) = hi.filter(|hi| d > *hi) {
        return err(
            key,
            format!(
                "{} is too long (maximum {})",
                format_duration(d),
                format_duration(hi)
            ),
        );
    }
    Ok(d)
}

/// A duration that must be greater than zero (a zero timeout would fire immediately).
pub(super) fn positive(key: &str, v: &Option<String>, default: Duration) -> Result<Duration> {
    let d = duration(key, v, default)?;
    dur_range(key, d, Duration::from_millis(1), None)
}

/// An optional integer at `key` in `lo..=hi`, or `default`.
pub(super) fn int(key: &str, v: Option<u64>, default: u64, lo: u64, hi: u64) -> Result<usize> {
    let n = v.unwrap_or(default);
    if n < lo {
        return err(key, format!("must be at least {lo} (got {n})"));
    }
    if n > hi {
        return err(key, format!("must be at most {hi} (got {n})"));
    }
    usize::try_from(n).or_else(|_| err(key, format!("{n} is too large for this platform")))
}

/// Resolves a path from the file against the file's directory.
pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads a file the config names (a PEM file), naming `key` and the OS reason on failure.
pub(super) fn read_file(key: &str, what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).or_else(|e| err(key, format!("cannot read {what} {}: {e}", path.display())))
}
