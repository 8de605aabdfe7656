//! The `storage` section: the backend (SQLite file or PostgreSQL URL) and the writer's queue,
//! batching and retention.

use std::path::Path;
use std::time::Duration;

use super::duration::parse_duration;
use super::raw::RawStorage;
use super::validate::{dur_range, duration, err, int, resolve, Result};
use super::{StorageConfig, StorageKind};

/// The `storage` section (absent = SQLite `ringwatch.db` next to the config file).
pub(super) fn storage(s: Option<&RawStorage>, base: &Path) -> Result<StorageConfig> {
    let default = RawStorage::default();
    let s = s.unwrap_or(&default);
    let kind = kind(s, base)?;
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

/// `storage.kind` with the keys that belong to it (`path` for sqlite, `url` for postgres).
fn kind(s: &RawStorage, base: &Path) -> Result<StorageKind> {
    match s.kind.as_deref().map(str::trim) {
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
            Ok(StorageKind::Sqlite {
                path: resolve(base, path),
            })
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
            super::postgres::storage_kind(s, url, base)
        }
        Some(other) => err(
            "storage.kind",
            format!("unknown storage kind \"{other}\" (expected sqlite or postgres)"),
        ),
    }
}
