//! A small pool of blocking reader threads, so shards can query the store without blocking.
//!
//! A shard submits a closure over a read-only `SqliteStore` and awaits the answer on a oneshot
//! channel; the wake crosses threads through monoio's `sync` feature. The job queue is bounded:
//! when it is full the read fails at once with `ReadError::Busy` instead of piling up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};

use super::sqlite::SqliteStore;
use super::StoreError;

/// Why a read did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Every reader is busy and the queue is full.
    #[error("store readers are busy; try again")]
    Busy,
    /// The pool stopped before answering.
    #[error("store readers stopped")]
    Stopped,
    /// The query itself failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

type Job = Box<dyn FnOnce(&SqliteStore) + Send>;

/// Cloneable, `Send` handle to the reader threads.
#[derive(Clone)]
pub struct ReadPool {
    jobs: Sender<Job>,
    _threads: Arc<Vec<JoinHandle<()>>>,
}

impl ReadPool {
    /// Starts `threads` readers on the SQLite file at `path`, with `queue` pending jobs at most.
    pub fn open(path: &Path, threads: usize, queue: usize) -> Result<ReadPool, StoreError> {
        // Open one connection up front so a bad path fails here, not on the first query.
        let first = SqliteStore::open_read_only(path)?;
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue.max(1));
        let mut handles = Vec::new();
        let mut conn = Some(first);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let own_path: PathBuf = path.to_path_buf();
            let pre = conn.take();
            let h = std::thread::Builder::new()
                .name(format!("store-read-{i}"))
                .spawn(move || {
                    let store = match pre
                        .map(Ok)
                        .unwrap_or_else(|| SqliteStore::open_read_only(&own_path))
                    {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %e, "store reader could not open the database");
                            return;
                        }
                    };
                    for job in rx.iter() {
                        job(&store);
                    }
                })
                .map_err(|e| StoreError::Open {
                    what: path.display().to_string(),
                    reason: format!("cannot spawn reader thread: {e}"),
                })?;
            handles.push(h);
        }
        Ok(ReadPool {
            jobs: tx,
            _threads: Arc::new(handles),
        })
    }

    /// Runs `f` on a reader thread and awaits its result without blocking the caller.
    pub async fn read<R, F>(&self, f: F) -> Result<R, ReadError>
    where
        R: Send + 'static,
        F: FnOnce(&SqliteStore) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = futures_channel::oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(f(store));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ReadError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(ReadError::Stopped),
        }
        match rx.await {
            Ok(r) => r.map_err(ReadError::from),
            Err(_) => Err(ReadError::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ServiceId, Status, Transition, UnixMillis};
    use crate::store::{Record, Store};
    use std::time::Duration;

    #[test]
    fn reads_on_threads_and_answers_a_monoio_task() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let mut w = SqliteStore::open(&path).expect("open");
        w.open_info().expect("info");
        let t = |seq| {
            Record::Transition(Transition {
                seq,
                service_id: ServiceId::from_raw(1),
                service: "a".into(),
                from: Status::Unknown,
                to: Status::Up,
                at: UnixMillis(seq as i64),
                latency: Duration::from_millis(1),
                status_code: Some(200),
                error: None,
            })
        };
        w.append(&[t(1), t(2), t(3)]).expect("append");
        let pool = ReadPool::open(&path, 2, 8).expect("pool");
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("rt");
        let got = rt.block_on(async {
            pool.read(|s| s.transitions_since(1, 10))
                .await
                .expect("read")
        });
        assert_eq!(got.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_missing_database_fails_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(ReadPool::open(&dir.path().join("missing/x.db"), 1, 1).is_err());
    }
}
