//! Versioned schema migrations (`migrations/postgres/V*__*.sql`, embedded at build time and
//! applied by refinery), serialized across processes by an advisory lock.
//!
//! refinery records applied versions in `refinery_schema_history` but takes no lock, so two
//! processes starting together would both try to create that table and apply V1. A session
//! advisory lock held on the migrating connection makes the second wait until the first has
//! committed, then find nothing left to do. The wait is bounded (`LOCK_WAIT`).

use std::time::{Duration, Instant};

use super::conn::{describe, Conn};
use crate::store::StoreError;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Advisory lock key of the migration step ("ringwatch" folded into 63 bits; any constant that
/// no other application on the database uses).
const MIGRATION_LOCK: i64 = 0x7269_6e67_7761_7463;
/// How long a process waits for another one's migration before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Pause between two attempts to take the lock.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run, in order (`V1__initial`, ...).
    pub applied: Vec<String>,
    /// Schema version after the run.
    pub version: u32,
}

/// The newest schema version this binary carries.
pub fn latest_version() -> u32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version() as u32)
        .max()
        .unwrap_or(0)
}

/// Applies every pending migration under the advisory lock.
pub(super) fn run(conn: &mut Conn) -> Result<MigrationReport, StoreError> {
    let what = conn.what().to_string();
    let fail = |reason: String| StoreError::Open {
        what: what.clone(),
        reason,
    };
    conn.with_client_mut(|rt, client| {
        rt.block_on(async {
            let started = Instant::now();
            loop {
                let row = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK])
                    .await
                    .map_err(|e| fail(format!("migration lock: {}", describe(&e))))?;
                let locked: bool = row
                    .try_get(0)
                    .map_err(|e| fail(format!("migration lock: {}", describe(&e))))?;
                if locked {
                    break;
                }
                if started.elapsed() > LOCK_WAIT {
                    return Err(fail(format!(
                        "another process held the migration lock for over {LOCK_WAIT:?}"
                    )));
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
            let result = embedded::migrations::runner()
                .set_abort_divergent(true)
                .run_async(client)
                .await;
            // Unlock whatever happened; a lost connection releases it anyway.
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await;
            let report =
                result.map_err(|e| fail(format!("migration failed: {}", refinery_reason(&e))))?;
            let last = embedded::migrations::runner()
                .get_last_applied_migration_async(client)
                .await
                .map_err(|e| {
                    fail(format!(
                        "reading the schema version: {}",
                        refinery_reason(&e)
                    ))
                })?;
            let version = last.map_or(0, |m| m.version() as u32);
            if version > latest_version() {
                return Err(fail(format!(
                    "schema version {version} is newer than this binary supports ({})",
                    latest_version()
                )));
            }
            Ok(MigrationReport {
                applied: report
                    .applied_migrations()
                    .iter()
                    .map(|m| format!("V{}__{}", m.version(), m.name()))
                    .collect(),
                version,
            })
        })
    })
}

/// One line for a refinery error, with the server's own message when there is one.
fn refinery_reason(e: &refinery::Error) -> String {
    use std::error::Error as _;
    match e.kind() {
        refinery::error::Kind::Connection(msg, src) => {
            let inner = src
                .downcast_ref::<tokio_postgres::Error>()
                .map(describe)
                .unwrap_or_else(|| src.to_string());
            format!("{msg}: {inner}")
        }
        other => match e.source() {
            Some(s) => format!("{other}: {s}"),
            None => other.to_string(),
        },
    }
}
