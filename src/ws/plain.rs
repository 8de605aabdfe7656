//! A WebSocket session over plain TCP, shaped for 10k+ mostly idle clients per shard.
//!
//! One task per client, and while the client is quiet that task holds no buffer and no
//! posted read: it waits for readability (an io_uring poll, or epoll on the fallback driver),
//! then reads with non-blocking `recv` into the feed's scratch buffer until the socket is
//! empty. Only a frame cut across reads is kept per client, and only until it completes. The
//! hub writes the socket (`Hub::flush`); this task steps in only when the socket buffer is
//! full, to wait for writability.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use monoio::net::{TcpStream, UnixStream};

use super::conn::{set_send_buffer, Input};
use super::hub::{Client, Hub, WritePath};
use super::protocol;
use super::Feed;
use crate::http::Upgraded;

/// Size of the per-feed read buffer: one `recv` takes everything a burst of client messages
/// leaves in the socket.
pub const SCRATCH: usize = 64 * 1024;

thread_local! {
    /// The feed's read buffer, shared by every plain session on this thread (reads complete
    /// synchronously, so no two sessions use it at once).
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// What woke a waiting session.
#[derive(Clone, Copy)]
enum Wake {
    /// Bytes (or end of stream) to read.
    Readable,
    /// The socket buffer drained: the hub can write again.
    Writable,
    /// The hub asked: the client was killed, or just got blocked.
    Notified,
}

impl Wake {
    /// `self` when the wait it stands for ended it, `Notified` when the hub did.
    fn unless_notified(self, io_ready: bool) -> Wake {
        if io_ready {
            self
        } else {
            Wake::Notified
        }
    }
}

/// How a read pass ended.
enum Read {
    /// The socket is empty; wait again.
    Drained,
    /// End of stream or a socket error: the session ends.
    Closed,
}

/// Starts a session on an upgraded plain-TCP connection; the returned future runs it until
/// the connection closes. Set-up happens here, outside the future, because an async fn keeps
/// its arguments for its whole life: the future keeps only what the session needs while it
/// waits, and every idle client holds one. Fails only when the runtime cannot take the socket
/// back (the connection is then closed).
pub fn run<F: Feed>(
    feed: Rc<F>,
    up: Upgraded<TcpStream>,
) -> std::io::Result<impl Future<Output = ()>> {
    let Upgraded { stream, leftover } = up;
    let sock = Socket::new(stream)?;
    let fd = sock.fd();
    let hub = feed.hub();
    set_send_buffer(fd, hub.cfg.send_buffer_bytes);
    let c = hub.add(fd, WritePath::Hub);
    hub.send_text(&c, &protocol::hello(feed.latest_seq()));
    let mut input = Input::default();
    // The HTTP layer's read buffer (4 KiB) is dropped here rather than kept by every idle
    // session; a frame it cut short moves to the input's small partial buffer.
    let mut first = leftover;
    if !first.is_empty() {
        let (used, _) = input.consume(&feed, hub, &c, &mut first);
        input.keep_partial(&first[used..]);
    }
    // An async block, not an async fn: an async fn would keep a second copy of its
    // arguments (rust-lang/rust#62958).
    Ok(async move {
        loop {
            if c.done.get() {
                break;
            }
            // A blocked client waits for its socket to drain before anything it sent is read:
            // it is not reading what we send, and the close timeout bounds how long that lasts.
            let want = if c.blocked.get() {
                Wake::Writable
            } else {
                Wake::Readable
            };
            let woke = want.unless_notified(either(sock.ready(want), &c).await);
            let hub = feed.hub();
            match woke {
                Wake::Readable => {
                    if let Read::Closed = read_all(&feed, hub, &c, &mut input) {
                        break;
                    }
                }
                Wake::Writable => hub.flush(&c),
                Wake::Notified => {}
            }
        }
        feed.hub().remove(&c);
        // Mark the client done before the descriptor closes: the hub checks `done` before
        // every write, so it never writes to a reused fd.
        c.kill();
        drop(sock);
        feed.session_closed();
    })
}

/// A connected socket seen as just a descriptor with readiness waits.
///
/// monoio offers `readable`/`writable` waits (an io_uring poll, or epoll on the fallback
/// driver) on its stream types. Its `UnixStream` holds nothing but the descriptor (8 bytes,
/// where `TcpStream` keeps 80 for address caches), and a poll does not care which family a
/// socket is, so the session keeps its TCP socket in one: every idle client holds it. All
/// reads and writes are plain `recv`/`sendmsg` calls on the descriptor.
struct Socket(UnixStream);

impl Socket {
    fn new(tcp: TcpStream) -> std::io::Result<Socket> {
        // SAFETY: `into_raw_fd` hands over sole ownership of an open socket to the wrapper.
        let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(tcp.into_raw_fd()) };
        UnixStream::from_std(std).map(Socket)
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Waits until the socket is writable (`Wake::Writable`) or else readable.
    async fn ready(&self, want: Wake) -> std::io::Result<()> {
        match want {
            Wake::Writable => self.0.writable(false).await,
            _ => self.0.readable(false).await,
        }
    }
}

/// Waits for `io` (a readiness wait) or for the hub's call, whichever comes first: true when
/// `io` is ready.
///
/// A hand-written future rather than an async fn: an async fn would store `io` twice (its
/// argument and its pinned copy), and every idle client holds one of these.
fn either<F: Future>(io: F, c: &Client) -> Either<'_, F> {
    Either { io, c }
}

/// The future of [`either`].
struct Either<'a, F> {
    io: F,
    c: &'a Client,
}

impl<F: Future> Future for Either<'_, F> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        if self.c.wake.poll_wait(cx).is_ready() {
            return Poll::Ready(false);
        }
        // SAFETY: `io` is structurally pinned: it is never moved out of `self`, and `Either`
        // has no Drop impl or other access that could move it.
        let io = unsafe { self.map_unchecked_mut(|e| &mut e.io) };
        // An error (the socket was shut down, say) is seen by the read or write that follows.
        io.poll(cx).map(|_| true)
    }
}

/// Reads until the socket is empty, handling every complete frame.
fn read_all<F: Feed>(feed: &Rc<F>, hub: &Rc<Hub>, c: &Rc<Client>, input: &mut Input) -> Read {
    loop {
        let n = if !input.has_partial() {
            SCRATCH_BUF.with_borrow_mut(|buf| {
                let n = recv(c, buf)?;
                let (used, _) = input.consume(feed, hub, c, &mut buf[..n]);
                input.keep_partial(&buf[used..n]);
                // A short read emptied the socket: skip the recv that would say so.
                Some(if n > 0 && n < buf.len() {
                    usize::MAX
                } else {
                    n
                })
            })
        } else {
            input.read_partial(SCRATCH / 4, |room| recv(c, room), feed, hub, c)
        };
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
        let n = unsafe { libc::recv(c.fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
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
