//! Writing clients' sockets: the hub's flush pass for plain-TCP clients (one non-blocking
//! `sendmsg` per dirty client, everything queued since its last write) and the reusable
//! `writev` batches the TLS writer tasks use.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::client::{Client, MAX_IOV};
use super::hub::Hub;

impl Hub {
    /// Writes dirty clients' queues, each in one `sendmsg`, after the shard's current work.
    pub async fn flush_loop(self: Rc<Self>) {
        let mut work: Vec<Rc<Client>> = Vec::new();
        loop {
            self.flush_wake.wait().await;
            std::mem::swap(&mut work, &mut *self.dirty.borrow_mut());
            for c in work.drain(..) {
                c.dirty.set(false);
                if !c.blocked.get() {
                    self.flush(&c);
                }
            }
        }
    }

    /// Writes as much of a hub-written client's queue as the socket takes, without blocking.
    /// When the socket buffer fills, the client is marked blocked and its task is woken to
    /// wait for writability (and call this again).
    pub fn flush(&self, c: &Client) {
        loop {
            if c.done.get() {
                return;
            }
            let (wanted, frames) = {
                let q = c.queue.borrow();
                if q.is_empty() {
                    c.blocked.set(false);
                    return;
                }
                let mut iov = self.iov.borrow_mut();
                iov.clear();
                let mut skip = c.front_sent.get() as usize;
                let mut wanted = 0;
                for o in q.iter().take(MAX_IOV) {
                    let part = &o.bytes[skip.min(o.bytes.len())..];
                    skip = 0;
                    wanted += part.len();
                    iov.push(libc::iovec {
                        iov_base: part.as_ptr() as *mut libc::c_void,
                        iov_len: part.len(),
                    });
                }
                (wanted, iov.len())
            };
            let n = {
                let mut iov = self.iov.borrow_mut();
                // SAFETY: a zeroed msghdr is valid; the iovecs point into `Bytes` held by the
                // queue, which is not touched until sendmsg returns.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = frames as _;
                // SAFETY: `fd` is this client's socket: it is closed only after `done` is set,
                // checked above on this same thread.
                unsafe { libc::sendmsg(c.fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) }
            };
            if n < 0 {
                match std::io::Error::last_os_error().kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => {
                        c.blocked.set(true);
                        c.wake.notify();
                    }
                    _ => c.kill(),
                }
                return;
            }
            let n = n as usize;
            self.sent(c, n);
            if n < wanted {
                // The socket buffer is full: wait for it to drain.
                c.blocked.set(true);
                c.wake.notify();
                return;
            }
        }
    }

    /// Accounts `n` bytes written from the front of a hub-written client's queue.
    fn sent(&self, c: &Client, n: usize) {
        let now = Instant::now();
        let mut q = c.queue.borrow_mut();
        let mut st = self.stats.borrow_mut();
        let mut left = c.front_sent.get() as usize + n;
        let mut frames = 0u64;
        let mut close = false;
        while let Some(o) = q.front() {
            if left < o.bytes.len() {
                break;
            }
            left -= o.bytes.len();
            if let Some(b) = o.born {
                st.push(now.saturating_duration_since(b));
            }
            close |= o.close;
            frames += 1;
            q.pop_front();
        }
        // `left` is below the front frame's length, which fits a u32 (frames are far smaller).
        c.front_sent.set(u32::try_from(left).unwrap_or(u32::MAX));
        c.queued_bytes.set(c.queued_bytes.get().saturating_sub(n));
        st.note_write(frames, n);
        drop(st);
        drop(q);
        self.after_write(c, close);
    }

    /// Bookkeeping after a write: the queue bound, and the close handshake once our close
    /// frame is out.
    pub fn after_write(&self, c: &Client, close_written: bool) {
        if c.queued_bytes.get() <= self.cfg.max_queue_bytes {
            c.over_since.set(None);
        }
        if close_written {
            c.close_written.set(true);
            if c.close_received.get() {
                c.kill();
            }
        }
    }

    /// Takes a reusable write batch.
    pub fn take_batch(&self) -> Batch {
        self.batches.borrow_mut().pop().unwrap_or_default()
    }

    /// Returns a write batch for reuse.
    pub fn put_batch(&self, mut b: Batch) {
        b.clear();
        let mut pool = self.batches.borrow_mut();
        // Keep a few; a burst of stalled clients must not pin memory forever.
        if pool.len() < 256 {
            pool.push(b);
        }
    }
}

/// A `writev` batch: the frames' `Bytes` handles and their iovecs, reused across writes.
#[derive(Default)]
pub struct Batch {
    bufs: Vec<Bytes>,
    iov: Vec<libc::iovec>,
    start: usize,
}

impl Batch {
    /// Adds a frame.
    pub fn push(&mut self, b: Bytes) {
        self.iov.push(libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        });
        self.bufs.push(b);
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Total bytes.
    pub fn bytes(&self) -> usize {
        self.bufs.iter().map(|b| b.len()).sum()
    }

    /// Marks `n` more bytes as written; returns true when bytes remain.
    pub fn advance(&mut self, mut n: usize) -> bool {
        while self.start < self.iov.len() {
            let v = &mut self.iov[self.start];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.start += 1;
            } else {
                // SAFETY: n < iov_len, so the new base stays inside the same buffer.
                v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut libc::c_void;
                v.iov_len -= n;
                return true;
            }
        }
        false
    }

    fn clear(&mut self) {
        self.bufs.clear();
        self.iov.clear();
        self.start = 0;
    }
}

// SAFETY: the iovecs point into `bufs`, whose heap buffers do not move while the batch is
// owned by the runtime; the iovec array itself is not touched during the operation.
unsafe impl monoio::buf::IoVecBuf for Batch {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.start..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_advances_across_and_within_buffers() {
        let mut b = Batch::default();
        b.push(Bytes::from_static(b"abc"));
        b.push(Bytes::from_static(b"defg"));
        assert!(b.advance(4));
        assert_eq!(b.start, 1);
        assert_eq!(b.iov[1].iov_len, 3);
        assert!(!b.advance(3));
    }
}
