//! A bounded hand-off from a shard to a side thread: the shard never blocks and never waits;
//! when the side thread falls behind, items are dropped at the bound and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// The producer side, held by shards (cloneable, `Send`).
pub struct Outbox<T> {
    tx: Sender<T>,
    dropped: Arc<AtomicU64>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Outbox {
            tx: self.tx.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

/// The consumer side, held by one side thread.
pub struct Inbox<T> {
    /// Items in arrival order.
    pub rx: Receiver<T>,
    dropped: Arc<AtomicU64>,
}

/// A bounded outbox and its inbox.
pub fn outbox<T>(capacity: usize) -> (Outbox<T>, Inbox<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        Outbox {
            tx,
            dropped: dropped.clone(),
        },
        Inbox { rx, dropped },
    )
}

impl<T> Outbox<T> {
    /// Queues `item`; false (and counted) when the outbox is full or its reader is gone.
    pub fn push(&self, item: T) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Items waiting.
    pub fn depth(&self) -> usize {
        self.tx.len()
    }
}

impl<T> Inbox<T> {
    /// Items dropped at the bound so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_drops_and_counts() {
        let (tx, rx) = outbox::<u32>(2);
        assert!(tx.push(1) && tx.push(2));
        assert!(!tx.push(3));
        assert_eq!(rx.dropped(), 1);
        assert_eq!(tx.depth(), 2);
        assert_eq!(rx.rx.try_iter().collect::<Vec<_>>(), vec![1, 2]);
    }
}
