//! A single-waiter wake-up flag for tasks on one shard (`Cell`s, no atomics, no locks).
//!
//! The scheduler, the prober's completion wait, the WebSocket flush pass and each WebSocket
//! session wait on one of these: a notification sent while nobody waits is kept, so it is
//! never lost, and several notifications before the waiter runs wake it once.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// A single-waiter notification for tasks on one thread.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    /// Sets the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Ready (consuming the notification) if notified; otherwise registers `cx`'s waker.
    pub fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set.replace(false) {
            Poll::Ready(())
        } else {
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    /// Waits until notified (consumes the notification).
    pub async fn wait(&self) {
        poll_fn(|cx| self.poll_wait(cx)).await
    }

    /// Waits for a notification or until `deadline`, whichever is first.
    pub async fn wait_or(&self, deadline: Option<Instant>) {
        let mut sleep = pin!(async move {
            match deadline {
                Some(d) => monoio::time::sleep_until(monoio::time::Instant::from_std(d)).await,
                None => std::future::pending::<()>().await,
            }
        });
        poll_fn(|cx| {
            if self.poll_wait(cx).is_ready() {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;
    use std::time::Duration;

    #[test]
    fn wakes_a_waiter_once_and_honours_the_deadline() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let n = Rc::new(Notify::default());
            let n2 = n.clone();
            monoio::spawn(async move { n2.notify() });
            n.wait_or(None).await;
            // With no notification pending, the deadline ends the wait.
            let t = Instant::now();
            n.wait_or(Some(t + Duration::from_millis(20))).await;
            assert!(t.elapsed() >= Duration::from_millis(15));
        });
    }
}
