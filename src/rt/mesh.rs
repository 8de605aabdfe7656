//! The ring mesh: bounded lock-free queues between every ordered pair of shards.
//!
//! Shards own their data and never share it behind a lock; when one shard needs another to do
//! something (fan out an event, report its stats, adopt a service) it sends a message here.
//! Ring `(from, to)` has exactly one producer (shard `from`) and one consumer (shard `to`); three
//! extra rings per shard carry messages from side threads: control (signals, reloads), the
//! storage writer (committed transitions) and the cluster transport (jobs, events).
//!
//! Waking is batched by construction: a sender wakes the receiver through an `AtomicWaker`,
//! which holds a waker only while the receiver is parked. While the receiver is busy draining,
//! further sends cost one atomic swap; the cross-thread wake (an eventfd write in monoio) is
//! paid once per park, not once per message.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

/// Who is sending into the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    /// A shard, by index.
    Shard(usize),
    /// A control thread (signal handler, main thread).
    Control,
    /// The storage writer (committed transitions).
    Store,
    /// The cluster transport thread (jobs and events from Redis).
    Remote,
}

/// Rings per receiving shard that do not come from a shard: `Control`, `Store`, `Remote`.
const SIDE_ROWS: usize = 3;

/// The mesh of `n * (n + SIDE_ROWS)` rings shared by all shards.
pub struct Mesh<T> {
    shards: usize,
    rings: Vec<ArrayQueue<T>>,
    wakers: Vec<AtomicWaker>,
    dropped: Vec<AtomicU64>,
}

impl<T: Send> Mesh<T> {
    /// Creates a mesh for `shards` shards with rings of `capacity` messages each.
    pub fn new(shards: usize, capacity: usize) -> Arc<Self> {
        let shards = shards.max(1);
        let rings = (0..shards * (shards + SIDE_ROWS))
            .map(|_| ArrayQueue::new(capacity.max(1)))
            .collect();
        Arc::new(Mesh {
            shards,
            rings,
            wakers: (0..shards).map(|_| AtomicWaker::new()).collect(),
            dropped: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    fn ring(&self, from: From, to: usize) -> &ArrayQueue<T> {
        let row = match from {
            From::Shard(i) => i,
            From::Control => self.shards,
            From::Store => self.shards + 1,
            From::Remote => self.shards + 2,
        };
        &self.rings[row * self.shards + to]
    }

    /// Sends `msg` to shard `to`. A full ring hands the message back and counts a drop.
    pub fn send(&self, from: From, to: usize, msg: T) -> Result<(), T> {
        match self.ring(from, to).push(msg) {
            Ok(()) => {
                self.wakers[to].wake();
                Ok(())
            }
            Err(msg) => {
                self.dropped[to].fetch_add(1, Ordering::Relaxed);
                Err(msg)
            }
        }
    }

    /// Messages refused because a ring into shard `to` was full.
    pub fn dropped(&self, to: usize) -> u64 {
        self.dropped[to].load(Ordering::Relaxed)
    }

    /// Moves every waiting message for shard `to` into `out`; returns how many.
    fn drain_into(&self, to: usize, out: &mut Vec<T>, max: usize) -> usize {
        let before = out.len();
        for row in 0..self.shards + SIDE_ROWS {
            let ring = &self.rings[row * self.shards + to];
            while out.len() - before < max {
                match ring.pop() {
                    Some(m) => out.push(m),
                    None => break,
                }
            }
        }
        out.len() - before
    }

    /// Waits until at least one message for shard `to` is available, then moves up to `max`
    /// into `out`; returns how many arrived. Only shard `to` may call this (one consumer per ring).
    pub async fn recv_batch(&self, to: usize, out: &mut Vec<T>, max: usize) -> usize {
        let before = out.len();
        poll_fn(|cx| {
            if self.drain_into(to, out, max) > 0 {
                return Poll::Ready(());
            }
            self.wakers[to].register(cx.waker());
            // A send between the first drain and the registration would otherwise be missed.
            if self.drain_into(to, out, max) > 0 {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        out.len() - before
    }
}

/// A reply awaited from another shard; `None` where the ring to it was full.
pub type Pending<T> = Option<futures_channel::oneshot::Receiver<T>>;

/// Awaits replies asked for through the mesh, each for at most `wait`; `None` for a shard that
/// could not be asked or did not answer in time (a busy shard is left out rather than hang the
/// caller).
pub async fn gather<T>(pending: Vec<Pending<T>>, wait: std::time::Duration) -> Vec<Option<T>> {
    let mut out = Vec::with_capacity(pending.len());
    for rx in pending {
        out.push(match rx {
            Some(rx) => monoio::time::timeout(wait, rx)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ring_returns_message_and_counts() {
        let mesh = Mesh::new(2, 2);
        assert!(mesh.send(From::Shard(0), 1, 1u32).is_ok());
        assert!(mesh.send(From::Shard(0), 1, 2u32).is_ok());
        assert_eq!(mesh.send(From::Shard(0), 1, 3u32), Err(3));
        assert_eq!(mesh.dropped(1), 1);
        // Another producer's ring into the same shard is independent.
        assert!(mesh.send(From::Control, 1, 4u32).is_ok());
    }

    #[test]
    fn cross_thread_batches_arrive_in_order_per_producer() {
        let mesh = Mesh::new(2, 1024);
        let producer = {
            let mesh = mesh.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u32 {
                    let mut m = i;
                    loop {
                        match mesh.send(From::Shard(0), 1, m) {
                            Ok(()) => break,
                            Err(back) => {
                                m = back;
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            })
        };
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime");
        let got = rt.block_on(async {
            let mut all = Vec::new();
            let mut buf = Vec::new();
            while all.len() < 10_000 {
                buf.clear();
                mesh.recv_batch(1, &mut buf, 256).await;
                all.extend_from_slice(&buf);
            }
            all
        });
        producer.join().expect("producer");
        assert!(got.iter().enumerate().all(|(i, v)| *v == i as u32));
    }
}
