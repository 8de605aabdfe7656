//! A small pool of blocking reader threads, so shards can query the store without blocking.
//!
//! A shard submits a closure over the backend's read side (`StoreReader`) and awaits the answer
//! on a oneshot channel; the wake crosses threads through monoio's `sync` feature. Each thread
//! owns one reader connection, opened by the factory it was given, so the pool does not know
//! which backend it reads. The job queue is bounded: when it is full the read fails at once with
//! `ReadError::Busy` instead of piling up.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};

use super::{StoreError, StoreReader};

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

type Job = Box<dyn FnOnce(&dyn StoreReader) + Send>;

/// Cloneable, `Send` handle to the reader threads.
#[derive(Clone)]
pub struct ReadPool {
    jobs: Sender<Job>,
    _threads: Arc<Vec<JoinHandle<()>>>,
}

impl ReadPool {
    /// Starts `threads` readers, each on a connection from `open`, with `queue` pending jobs at
    /// most. The first connection is opened here, so a bad store fails now, not on a query.
    pub fn open<O>(open: O, threads: usize, queue: usize) -> Result<ReadPool, StoreError>
    where
        O: Fn() -> Result<Box<dyn StoreReader>, StoreError> + Send + Sync + 'static,
    {
        let open = Arc::new(open);
        let first = open()?;
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue.max(1));
        let mut handles = Vec::new();
        let mut conn = Some(first);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let open = open.clone();
            let pre = conn.take();
            let h = std::thread::Builder::new()
                .name(format!("store-read-{i}"))
                .spawn(move || {
                    let store = match pre.map(Ok).unwrap_or_else(|| open()) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %e, "store reader could not open the database");
                            return;
                        }
                    };
                    for job in rx.iter() {
                        job(store.as_ref());
                    }
                })
                .map_err(|e| StoreError::Open {
                    what: "store readers".into(),
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
        F: FnOnce(&dyn StoreReader) -> Result<R, StoreError> + Send + 'static,
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
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Record, StoreReader, StoreWriter};
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
        let p2 = path.clone();
        let pool = ReadPool::open(
            move || Ok(Box::new(SqliteStore::open_read_only(&p2)?) as Box<dyn StoreReader>),
            2,
            8,
        )
        .expect("pool");
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
        let path = dir.path().join("missing/x.db");
        let open =
            move || Ok(Box::new(SqliteStore::open_read_only(&path)?) as Box<dyn StoreReader>);
        assert!(ReadPool::open(open, 1, 1).is_err());
    }
}
