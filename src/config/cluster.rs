//! The `cluster` section: Redis Streams transport and the roles this process plays.
//!
//! Every node of a cluster can share one file apart from `server.listen`; the roles may also
//! come from `ringwatch run --role` (which wins). The Redis password never has to be in the
//! file: it is read from the environment (`RINGWATCH_REDIS_PASSWORD`) or a `password_file`.

use std::path::Path;
use std::time::Duration;

use super::raw::RawCluster;
use super::validate::{dur_range, duration, err, int, Result};
use super::{ClusterConfig, Roles};

/// Environment variable holding the Redis password.
pub const REDIS_PASSWORD_ENV: &str = "RINGWATCH_REDIS_PASSWORD";

/// Validates `cluster` (absent = a standalone process).
pub(super) fn cluster(c: Option<&RawCluster>, base: &Path) -> Result<Option<ClusterConfig>> {
    let Some(c) = c else {
        return Ok(None);
    };
    let Some(redis) = c.redis.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        return err(
            "cluster.redis",
            "required: a Redis URL, e.g. redis://redis:6379",
        );
    };
    if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
        return err(
            "cluster.redis",
            format!("\"{redis}\" is not a redis:// or rediss:// URL"),
        );
    }
    if redis.contains('@') {
        return err(
            "cluster.redis",
            format!("do not put credentials in the URL; set {REDIS_PASSWORD_ENV} or cluster.password_file"),
        );
    }
    let password = password(c, base)?;
    let roles = match &c.roles {
        None => Roles::ALL,
        Some(list) => Roles::parse_list(list.iter().map(String::as_str))
            .or_else(|m| err("cluster.roles", m))?,
    };
    let lease_ttl = duration("cluster.lease_ttl", &c.lease_ttl, Duration::from_secs(5))?;
    dur_range(
        "cluster.lease_ttl",
        lease_ttl,
        Duration::from_millis(500),
        Some(Duration::from_secs(60)),
    )?;
    let claim_idle = duration("cluster.claim_idle", &c.claim_idle, Duration::from_secs(10))?;
    dur_range(
        "cluster.claim_idle",
        claim_idle,
        Duration::from_millis(500),
        Some(Duration::from_secs(600)),
    )?;
    Ok(Some(ClusterConfig {
        redis: redis.to_string(),
        password,
        roles,
        node: c.node.clone(),
        lease_ttl,
        claim_idle,
        batch: int("cluster.batch", c.batch, 256, 1, 10_000)?,
        stream_maxlen: int(
            "cluster.stream_maxlen",
            c.stream_maxlen,
            1_000_000,
            1_000,
            100_000_000,
        )? as u64,
    }))
}

/// The Redis password: `password_file` (first line), else the environment, else none.
fn password(c: &RawCluster, base: &Path) -> Result<Option<String>> {
    if let Some(f) = &c.password_file {
        let path = super::validate::resolve(base, f.trim());
        let text = std::fs::read_to_string(&path).or_else(|e| {
            err(
                "cluster.password_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let first = text.lines().next().unwrap_or("").trim_end().to_string();
        if first.is_empty() {
            return err(
                "cluster.password_file",
                format!("{} is empty", path.display()),
            );
        }
        return Ok(Some(first));
    }
    Ok(std::env::var(REDIS_PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty()))
}
