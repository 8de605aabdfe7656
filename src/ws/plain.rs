//! A WebSocket session over plain TCP, shaped for 10k+ mostly idle clients per shard.
//!
//! One task per client, and while the client is quiet that task holds no buffer and no
//! posted read: it waits for readability (an io_uring poll, or epoll on the fallback driver),
//! then reads with non-blocking `recv` into the shard's scratch buffer until the socket is
//! empty. Only a frame cut across reads is kept per client, and only until it completes. The
//! hub writes the socket (`Hub::flush`); this task steps in only when the socket buffer is
//! full, to wait for writability.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use monoio::net::TcpStream;

use super::conn::{set_send_buffer, Input};
use super::hub::{Client, Hub, Writer};
use super::protocol;
use crate::http::Upgraded;
use crate::shard::Shard;

/// Size of the per-shard read buffer: one `recv` takes everything a burst of client messages
/// leaves in the socket.
pub const SCRATCH: usize = 64 * 1024;

thread_local! {
    /// The shard's read buffer, shared by every plain session on this thread (reads complete
    /// synchronously, so no two sessions use it at once).
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// What woke a waiting session.
enum Wake {
    /// Bytes (or end of stream) to read.
    Readable,
    /// The socket buffer drained: the hub can write again.
    Writable,
    /// The hub asked: the client was killed, or just got blocked.
    Notified,
}

/// How a read pass ended.
enum Read {
    /// The socket is empty; wait again.
    Drained,
    /// End of stream or a socket error: the session ends.
    Closed,
}

/// Runs an upgraded plain-TCP connection until it closes.
pub async fn run(shard: Rc<Shard>, up: Upgraded<TcpStream>) {
    let stream = up.stream;
    let fd = stream.as_raw_fd();
    let hub = shard.ws_hub().clone();
    set_send_buffer(fd, hub.cfg.send_buffer_bytes);
    let c = hub.add(fd, Writer::Hub);
    hub.send_text(&c, &protocol::hello(shard.shared().seq.latest()));
    let mut input = Input::default();
    // Bytes of a frame cut across reads; empty (no allocation) between frames.
    let mut partial = Vec::new();
    if !up.leftover.is_empty() {
        let mut first = up.leftover;
        let (used, _) = input.consume(&shard, &hub, &c, &mut first);
        partial.extend_from_slice(&first[used..]);
    }
    loop {
        if c.done.get() {
            break;
        }
        match wait(&stream, &c).await {
            Wake::Readable => {
                if let Read::Closed = read_all(&shard, &hub, &c, &mut input, &mut partial) {
                    break;
                }
            }
            Wake::Writable => hub.flush(&c),
            Wake::Notified => {}
        }
    }
    hub.remove(&c);
    // Mark the client done before the descriptor closes: the hub checks `done` before every
    // write, so it never writes to a reused fd.
    c.kill();
    drop(stream);
    shard.ws_closed();
}

/// Waits for input, for writability while the client is blocked, or for the hub's call.
async fn wait(stream: &TcpStream, c: &Client) -> Wake {
    let mut readable = pin!(stream.readable(false));
    let blocked = c.blocked.get();
    let mut writable = pin!(async {
        if blocked {
            stream.writable(false).await
        } else {
            std::future::pending().await
        }
    });
    let mut woken = pin!(c.wake.wait());
    std::future::poll_fn(|cx| {
        if woken.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Notified);
        }
        // An error (the socket was shut down, say) is seen by the read that follows.
        if readable.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Readable);
        }
        if writable.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Writable);
        }
        Poll::Pending
    })
    .await
}

/// Reads until the socket is empty, handling every complete frame.
fn read_all(
    shard: &Rc<Shard>,
    hub: &Rc<Hub>,
    c: &Rc<Client>,
    input: &mut Input,
    partial: &mut Vec<u8>,
) -> Read {
    loop {
        let n = if partial.is_empty() {
            SCRATCH_BUF.with_borrow_mut(|buf| {
                let n = recv(c, buf)?;
                let (used, _) = input.consume(shard, hub, c, &mut buf[..n]);
                partial.extend_from_slice(&buf[used..n]);
                // A short read emptied the socket: skip the recv that would say so.
                Some(if n > 0 && n < buf.len() { usize::MAX } else { n })
            })
        } else {
            // A frame is in transit: read straight behind it, growing the buffer to the size
            // its header announced (bounded by the frame limit the header check enforces).
            let have = partial.len();
            if partial.capacity() - have < SCRATCH / 4 {
                partial.reserve(SCRATCH / 4);
            }
            partial.resize(partial.capacity(), 0);
            let got = recv(c, &mut partial[have..]);
            partial.truncate(have + got.unwrap_or(0));
            got.map(|n| {
                let (used, need) = input.consume(shard, hub, c, partial);
                partial.drain(..used);
                if need > partial.len() {
                    partial.reserve(need - partial.len());
                }
                if partial.is_empty() {
                    // Back to zero bytes held while idle.
                    *partial = Vec::new();
                }
                n
            })
        };
        if input.stopped() {
            partial.clear();
        }
        match n {
            None => return Read::Drained,
            Some(0) => return Read::Closed,
            Some(_) if c.done.get() => return Read::Closed,
            Some(usize::MAX) => return Read::Drained,
            Some(_) => {}
        }
    }
}

/// One non-blocking `recv`: `Some(0)` at end of stream or on a socket error (the session
/// ends), `None` when the socket is empty.
fn recv(c: &Client, buf: &mut [u8]) -> Option<usize> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes; the descriptor is this
        // session's own socket, open until the session ends.
        let n = unsafe {
            libc::recv(
                c.fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Some(n as usize);
        }
        match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => return None,
            _ => return Some(0),
        }
    }
}
