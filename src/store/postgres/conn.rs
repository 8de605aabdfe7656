//! One PostgreSQL connection with its own current-thread tokio runtime, owned by one side
//! thread (the writer or one reader), reconnecting when the server went away.
//!
//! The store traits are synchronous and run on side threads, never on a shard, so each call
//! `block_on`s this runtime. The runtime polls the connection task only while a call runs; that
//! is all it needs, since nothing else is pending between calls. Every wait is bounded: the
//! connect (TCP, startup, authentication) by `storage.connect_timeout`, each statement by
//! `storage.query_timeout`; on a timeout the connection is dropped and the next call makes a
//! new one.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::config::{PgConfig, PgHost};
use crate::store::{StoreCounters, StoreError};

/// Whether a failed connect is the server's absence rather than a refusal a retry would get
/// again: no answer at all (refused, reset, unreachable), or the server saying it is starting,
/// stopping or full.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match e.as_db_error() {
        // A client-side failure is transient only when it is I/O (a missing password is not).
        None => {
            let mut src = std::error::Error::source(e);
            while let Some(cause) = src {
                if cause.is::<std::io::Error>() {
                    return true;
                }
                src = cause.source();
            }
            e.is_closed()
        }
        Some(db) => [
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(db.code()),
    }
}

/// A driver error as one line: the server's severity, message and SQLSTATE when the server
/// answered, else the client's description with its cause.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str("; ");
                s.push_str(d);
            }
            s
        }
        None => {
            // The driver's Display names only the kind ("error connecting to server"); the
            // cause ("Connection refused") is in the source chain.
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(cause) = src {
                s.push_str(": ");
                s.push_str(&cause.to_string());
                src = cause.source();
            }
            s.replace('\n', " ")
        }
    }
}

/// Whether an error means the connection is gone rather than the statement failing: closed
/// by the client library, a FATAL from the server (it ends the session), or SQLSTATE classes
/// 08 (connection exception) and 57 (operator intervention: shutdown, restart).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            matches!(db.severity(), "FATAL" | "PANIC")
                || code.starts_with("08")
                // 57014 is a cancelled statement (statement_timeout), not a lost session.
                || (code.starts_with("57") && code != "57014")
        }
        // An I/O error talking to the server: the socket is unusable.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// A live connection: the client and the task that drives its socket.
struct Session {
    client: Arc<Client>,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The task would otherwise keep a half-dead socket open until the server notices.
        self.task.abort();
    }
}

/// A connection that remakes itself after failures.
pub(super) struct Conn {
    rt: Runtime,
    pg: tokio_postgres::Config,
    /// Where the password comes from: read again at every connect (a rotated secret).
    cfg: PgConfig,
    /// The URL without password, for messages.
    what: String,
    connect_timeout: Duration,
    query_timeout: Duration,
    session: Option<Session>,
    /// Connections made so far; every one after the first is a reconnect.
    connects: u64,
    /// Where reconnects are counted (the writer's connection only).
    counters: Option<Arc<StoreCounters>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("what", &self.what)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A connection to `cfg`'s server, not yet connected.
    pub(super) fn new(cfg: &PgConfig) -> Result<Conn, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| StoreError::Open {
                what: cfg.redacted_url(),
                reason: format!("cannot build the client runtime: {e}"),
            })?;
        let mut pg = tokio_postgres::Config::new();
        match &cfg.host {
            PgHost::Tcp(h) => pg.host(h),
            PgHost::Socket(dir) => pg.host_path(dir),
        };
        pg.port(cfg.port)
            .user(&cfg.user)
            .dbname(&cfg.dbname)
            .application_name(&cfg.application_name)
            .connect_timeout(cfg.connect_timeout)
            // A server that vanished without a reset is noticed within about a minute even
            // between statements.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        Ok(Conn {
            rt,
            pg,
            cfg: cfg.clone(),
            what: cfg.redacted_url(),
            connect_timeout: cfg.connect_timeout,
            query_timeout: cfg.query_timeout,
            session: None,
            connects: 0,
            counters: None,
        })
    }

    /// The URL without password.
    pub(super) fn what(&self) -> &str {
        &self.what
    }

    /// Counts this connection's reconnects in `counters`.
    pub(super) fn count_reconnects(&mut self, counters: Arc<StoreCounters>) {
        self.counters = Some(counters);
    }

    /// Connects unless connected; the error names the server and the reason.
    pub(super) fn connect(&mut self) -> Result<Arc<Client>, StoreError> {
        if let Some(s) = &self.session {
            if !s.client.is_closed() {
                return Ok(s.client.clone());
            }
        }
        self.session = None;
        let fail = |reason: String| StoreError::Open {
            what: self.what.clone(),
            reason,
        };
        let mut pg = self.pg.clone();
        if let Some(p) = self.cfg.password().map_err(|e| fail(e.to_string()))? {
            pg.password(p.expose());
        }
        let connecting = pg.connect(NoTls);
        // The timer must be made inside the runtime, hence the async block.
        let limit = self.connect_timeout;
        let (client, connection) = match self
            .rt
            .block_on(async { tokio::time::timeout(limit, connecting).await })
        {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) if unreachable(&e) => {
                return Err(StoreError::Unreachable {
                    what: self.what.clone(),
                    reason: describe(&e),
                })
            }
            Ok(Err(e)) => return Err(fail(describe(&e))),
            Err(_) => {
                return Err(StoreError::Unreachable {
                    what: self.what.clone(),
                    reason: format!(
                        "no connection within {:?} (storage.connect_timeout)",
                        self.connect_timeout
                    ),
                })
            }
        };
        let what = self.what.clone();
        let task = self.rt.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(server = %what, error = %describe(&e), "postgres connection closed");
            }
        });
        self.connects += 1;
        if self.connects > 1 {
            if let Some(c) = &self.counters {
                c.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(server = %self.what, "reconnected to postgres");
        }
        let client = Arc::new(client);
        self.session = Some(Session {
            client: client.clone(),
            task,
        });
        Ok(client)
    }

    /// Connects if needed and names the live session: a number that changes with every new
    /// connection, so what was prepared on an earlier one is known to be gone.
    pub(super) fn session(&mut self) -> Result<u64, StoreError> {
        self.connect()?;
        Ok(self.connects)
    }

    /// Runs `f` on the runtime with the connection's client, bounded by the query timeout.
    /// When the connection turns out to be closed (a server restart since the last call), it
    /// reconnects and runs `f` once more, so `f` must be safe to repeat: every statement of the
    /// store is idempotent or read-only.
    pub(super) fn run<T, F, Fut>(&mut self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let fresh = self.session.is_none();
        match self.run_once(op, &f) {
            Err(Failure::Closed(_)) if !fresh => {}
            other => return other.map_err(|e| e.into_store(op)),
        }
        self.run_once(op, &f).map_err(|e| e.into_store(op))
    }

    fn run_once<T, F, Fut>(&mut self, op: &'static str, f: &F) -> Result<T, Failure>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.connect().map_err(|e| match e {
            StoreError::Open { what, reason } => {
                Failure::Other(format!("cannot connect to {what}: {reason}"))
            }
            other => Failure::Other(other.to_string()),
        })?;
        let limit = self.query_timeout;
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, f(client)).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let closed = connection_lost(&e)
                    || self.session.as_ref().is_none_or(|s| s.client.is_closed());
                if closed {
                    self.session = None;
                    Err(Failure::Closed(describe(&e)))
                } else {
                    Err(Failure::Other(describe(&e)))
                }
            }
            Err(_) => {
                // The statement may still be running on a connection we cannot trust now.
                self.session = None;
                tracing::warn!(server = %self.what, op, timeout = ?self.query_timeout, "postgres statement timed out; dropping the connection");
                Err(Failure::Other(format!(
                    "no answer within {:?} (storage.query_timeout)",
                    self.query_timeout
                )))
            }
        }
    }

    /// Runs `f` with exclusive access to the client (migrations need `&mut Client`).
    pub(super) fn with_client_mut<T, F>(&mut self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c Runtime, &'c mut Client) -> Result<T, StoreError>,
    {
        self.connect()?;
        let Some(session) = self.session.as_mut() else {
            return Err(StoreError::Open {
                what: self.what.clone(),
                reason: "connection lost".into(),
            });
        };
        let Some(client) = Arc::get_mut(&mut session.client) else {
            return Err(StoreError::Open {
                what: self.what.clone(),
                reason: "connection in use".into(),
            });
        };
        f(&self.rt, client)
    }
}

/// A future borrowing the client for the length of a transaction.
pub(super) type ClientFuture<'c, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + 'c>>;

impl Conn {
    /// Runs `f` with exclusive access to the client (a transaction), bounded by the query
    /// timeout. Not retried here: a transaction that failed is retried by its caller as a
    /// whole; a lost session is dropped so the next call reconnects.
    pub(super) fn exclusive<T, F>(&mut self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut Client) -> ClientFuture<'c, T>,
    {
        self.connect()?;
        let limit = self.query_timeout;
        let Conn { rt, session, .. } = self;
        let Some(client) = session.as_mut().and_then(|s| Arc::get_mut(&mut s.client)) else {
            *session = None;
            return Err(StoreError::Io {
                op,
                reason: "connection in use or lost".into(),
            });
        };
        match rt.block_on(async { tokio::time::timeout(limit, f(client)).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if connection_lost(&e) || session.as_ref().is_none_or(|s| s.client.is_closed()) {
                    *session = None;
                }
                Err(StoreError::Io {
                    op,
                    reason: describe(&e),
                })
            }
            Err(_) => {
                *session = None;
                Err(StoreError::Io {
                    op,
                    reason: format!("no answer within {limit:?} (storage.query_timeout)"),
                })
            }
        }
    }
}

/// Why one attempt failed: a closed connection is worth one immediate retry.
enum Failure {
    Closed(String),
    Other(String),
}

impl Failure {
    fn into_store(self, op: &'static str) -> StoreError {
        let (Failure::Closed(reason) | Failure::Other(reason)) = self;
        StoreError::Io { op, reason }
    }
}
