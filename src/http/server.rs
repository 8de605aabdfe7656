//! The connection loop: reads, answers every buffered request, writes, and enforces the
//! timeouts; hands the stream back when a handler switches protocols.

use std::future::Future;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::time::Instant;

use super::reject::HttpReject;
use super::request::{parse_request, Parsed, Request};
use super::response::{encode_head, encode_response, Response};
use crate::config::HttpLimits;

/// Most bytes read and dropped after a final error response. A client that sends its whole body
/// before reading (urllib, anything without `Expect: 100-continue`) must see that body consumed,
/// or our close finds unread input, the kernel answers with a reset, and the reset discards the
/// response still in the client's receive buffer. 16 MiB covers any body this API expects while
/// capping what one client can make a shard read for nothing.
const LINGER_BYTES: usize = 16 << 20;

/// Longest time spent reading and dropping after a final error response: enough for 16 MiB on
/// a LAN or loopback, short because a lingering connection still counts against the shard's
/// `max_connections` (nginx's default lingering_time is 30 s).
const LINGER_TIME: Duration = Duration::from_secs(3);

/// Read size while lingering; larger than a request read, since only throughput matters here.
const LINGER_CHUNK: usize = 64 << 10;

/// What the server needs from its owner: routing and counters.
pub trait Handler {
    /// Answers one request.
    fn handle(&self, req: Request) -> impl Future<Output = Response>;
    /// Counts a served request.
    fn on_request(&self);
    /// Counts a rejected request or connection.
    fn on_reject(&self, why: HttpReject);
}

/// Serves one connection (plain TCP or TLS) until the client closes, a limit is hit, or an
/// error occurs.
///
/// Pipelined requests are answered in order, and the responses to every request found in one
/// read go out in one write.
pub async fn serve<S, H>(stream: S, handler: &H, limits: HttpLimits)
where
    S: AsyncReadRent + AsyncWriteRent,
    H: Handler,
{
    // A connection whose owner does not take upgrades is closed after the 101.
    let _ = serve_upgradable(stream, handler, limits).await;
}

/// A connection the handler switched to another protocol with a `101` response.
pub struct Upgraded<S> {
    /// The stream, after the 101 was written.
    pub stream: S,
    /// Bytes the client sent after the upgrade request (already read from the stream).
    pub leftover: Vec<u8>,
}

/// Like `serve`, but when the handler answers `101 Switching Protocols` the 101 is written and
/// the stream is handed back with any bytes read past the request, for the new protocol.
pub async fn serve_upgradable<S, H>(
    stream: S,
    handler: &H,
    limits: HttpLimits,
) -> Option<Upgraded<S>>
where
    S: AsyncReadRent + AsyncWriteRent,
    H: Handler,
{
    let mut conn = Conn {
        stream,
        handler,
        limits,
        buf: Vec::with_capacity(4096),
        out: Vec::with_capacity(4096),
        request_started: None,
    };
    loop {
        let next = conn.answer_buffered().await;
        if !conn.flush().await {
            return None;
        }
        match next {
            Next::Read => {}
            Next::Close => return None,
            Next::Linger => {
                conn.linger_close().await;
                return None;
            }
            Next::Upgrade => {
                return Some(Upgraded {
                    stream: conn.stream,
                    leftover: conn.buf,
                })
            }
        }
        match conn.read_more().await {
            Read::Data => {}
            Read::Closed => return None,
            Read::TimedOut => {
                if conn.time_out().await {
                    conn.linger_close().await;
                }
                return None;
            }
        }
    }
}

/// One connection between reads.
struct Conn<'h, S, H> {
    stream: S,
    handler: &'h H,
    limits: HttpLimits,
    /// Bytes read and not yet answered.
    buf: Vec<u8>,
    /// Responses waiting for the next write.
    out: Vec<u8>,
    /// When the request now being received started; None while idle between requests.
    request_started: Option<Instant>,
}

/// What the connection does once the buffered requests are answered.
enum Next {
    /// Wait for more bytes.
    Read,
    /// Close after the write.
    Close,
    /// Close after the write, reading what the client still sends (a final error response).
    Linger,
    /// Hand the stream to the protocol the handler switched to.
    Upgrade,
}

/// How a wait for more bytes ended.
enum Read {
    /// Bytes arrived.
    Data,
    /// The client closed or the read failed.
    Closed,
    /// The header or idle timeout passed first.
    TimedOut,
}

impl<S, H> Conn<'_, S, H>
where
    S: AsyncReadRent + AsyncWriteRent,
    H: Handler,
{
    /// Answers every complete request in the buffer, queueing the responses in `out`.
    async fn answer_buffered(&mut self) -> Next {
        let mut consumed = 0;
        let next = loop {
            match parse_request(&self.buf[consumed..], &self.limits) {
                Parsed::Complete { req, len, close } => {
                    consumed += len;
                    if let Some(next) = self.respond(req, close).await {
                        break next;
                    }
                }
                Parsed::Partial => break Next::Read,
                Parsed::Reject(why, resp) => {
                    self.handler.on_reject(why);
                    encode_response(&resp, true, &mut self.out);
                    break Next::Linger;
                }
            }
        };
        self.buf.drain(..consumed);
        next
    }

    /// Answers one request into `out`; `Some` when no request may follow it on this connection.
    async fn respond(&mut self, mut req: Request, close: bool) -> Option<Next> {
        self.handler.on_request();
        // HEAD is GET without the body (RFC 9110 9.3.2): handled here, every GET route answers
        // it with the headers and Content-Length its GET would have.
        let head = req.method == "HEAD";
        if head {
            req.method = String::from("GET");
        }
        let mut resp = self.handler.handle(req).await;
        if head && resp.status == 101 {
            // Only a GET may switch protocols (RFC 6455 4.1); a HEAD that looked like an
            // upgrade must not leave the connection in another protocol.
            resp = Response::error(400, "bad_upgrade", "a protocol upgrade must use GET");
        }
        let upgrade = resp.status == 101;
        if head {
            encode_head(&resp, close, &mut self.out);
        } else {
            encode_response(&resp, close && !upgrade, &mut self.out);
        }
        if upgrade {
            Some(Next::Upgrade)
        } else if close {
            Some(Next::Close)
        } else {
            None
        }
    }

    /// Writes the queued responses; false when the connection is broken.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let (res, mut out) = self.stream.write_all(std::mem::take(&mut self.out)).await;
        out.clear();
        self.out = out;
        res.is_ok()
    }

    /// Waits for more bytes, up to the idle timeout between requests or what is left of the
    /// header timeout within one.
    async fn read_more(&mut self) -> Read {
        self.request_started = if self.buf.is_empty() {
            None
        } else {
            self.request_started.or_else(|| Some(Instant::now()))
        };
        let wait = match self.request_started {
            None => self.limits.idle_timeout,
            Some(t) => self.limits.header_timeout.saturating_sub(t.elapsed()),
        };
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(4096);
        }
        // Read into the spare capacity after what is buffered: monoio reads into a `Vec` from
        // index 0, which would overwrite the start of a request split across reads.
        let filled = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let read = monoio::time::timeout(
            wait.max(Duration::from_millis(1)),
            self.stream.read(buf.slice_mut(filled..)),
        );
        match read.await {
            Ok((Ok(0), b)) | Ok((Err(_), b)) => {
                self.buf = b.into_inner();
                Read::Closed
            }
            Ok((Ok(_), b)) => {
                self.buf = b.into_inner();
                if self.request_started.is_none() {
                    self.request_started = Some(Instant::now());
                }
                Read::Data
            }
            Err(_elapsed) => Read::TimedOut,
        }
    }

    /// Ends a connection whose timeout passed: 408 when a request was under way, silence when
    /// it was idle between requests. True when the 408 went out.
    async fn time_out(&mut self) -> bool {
        if self.request_started.is_none() {
            return false;
        }
        self.handler.on_reject(HttpReject::HeaderTimeout);
        let resp = Response::error(
            408,
            "request_timeout",
            "request not received within the header timeout",
        );
        encode_response(&resp, true, &mut self.out);
        self.flush().await
    }

    /// Closes after a final error response the way nginx does: half-close, so the client reads
    /// the response and then EOF, and read and drop what it still sends, bounded by
    /// `LINGER_BYTES` and `LINGER_TIME`, until it closes too.
    async fn linger_close(&mut self) {
        // TCP: shutdown(SHUT_WR). TLS: close_notify, then the same on the socket.
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        let mut scratch = std::mem::take(&mut self.buf);
        scratch.clear();
        scratch.reserve(LINGER_CHUNK);
        let mut left = LINGER_BYTES;
        while left > 0 {
            match monoio::time::timeout_at(deadline, self.stream.read(scratch)).await {
                Ok((Ok(n), b)) if n > 0 => {
                    left = left.saturating_sub(n);
                    scratch = b;
                }
                // EOF, a read error, or the deadline: nothing more worth waiting for.
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use monoio::buf::{IoBuf, IoVecBuf, IoVecBufMut};
    use monoio::BufResult;

    use super::*;

    /// What a scripted connection saw the server do.
    #[derive(Default)]
    struct Seen {
        written: Vec<u8>,
        /// Bytes handed out after the scripted request, when the write side was shut.
        read_after_shutdown: usize,
        shut: bool,
    }

    /// Hands out `first`, then endless filler (`endless`) or a read that never completes.
    struct Scripted {
        first: Option<Vec<u8>>,
        endless: bool,
        seen: Rc<RefCell<Seen>>,
    }

    impl AsyncReadRent for Scripted {
        async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
            let chunk = match self.first.take() {
                Some(c) => c,
                None if self.endless => vec![b'x'; buf.bytes_total().min(LINGER_CHUNK)],
                None => std::future::pending().await,
            };
            let n = chunk.len().min(buf.bytes_total());
            // SAFETY: write_ptr is valid for bytes_total bytes and n <= bytes_total.
            unsafe {
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.write_ptr(), n);
                buf.set_init(n);
            }
            let mut seen = self.seen.borrow_mut();
            if seen.shut {
                seen.read_after_shutdown += n;
            }
            (Ok(n), buf)
        }

        async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            (Err(std::io::Error::other("readv unused")), buf)
        }
    }

    impl AsyncWriteRent for Scripted {
        async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            // SAFETY: read_ptr is valid for bytes_init bytes.
            let s = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            self.seen.borrow_mut().written.extend_from_slice(s);
            (Ok(s.len()), buf)
        }

        async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            (Err(std::io::Error::other("writev unused")), buf)
        }

        async fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }

        async fn shutdown(&mut self) -> std::io::Result<()> {
            self.seen.borrow_mut().shut = true;
            Ok(())
        }
    }

    struct Nothing;

    impl Handler for Nothing {
        async fn handle(&self, _req: Request) -> Response {
            Response::text(200, "")
        }
        fn on_request(&self) {}
        fn on_reject(&self, _why: HttpReject) {}
    }

    /// Serves a request announcing too large a body, then `endless` or silent input.
    fn serve_oversized(endless: bool) -> (Seen, Duration) {
        let seen = Rc::new(RefCell::new(Seen::default()));
        let conn = Scripted {
            first: Some(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nxx".to_vec()),
            endless,
            seen: seen.clone(),
        };
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let took = rt.block_on(async {
            let t = Instant::now();
            serve(conn, &Nothing, HttpLimits::default()).await;
            t.elapsed()
        });
        let seen = seen.take();
        (seen, took)
    }

    #[test]
    fn after_a_final_error_the_server_half_closes_then_drains_a_bounded_amount() {
        let (seen, _) = serve_oversized(true);
        assert!(seen.written.starts_with(b"HTTP/1.1 413 "));
        assert!(seen.shut, "the write side was not shut");
        assert!(
            (LINGER_BYTES..LINGER_BYTES + LINGER_CHUNK).contains(&seen.read_after_shutdown),
            "{} bytes drained",
            seen.read_after_shutdown
        );
    }

    #[test]
    fn after_a_final_error_a_silent_client_is_dropped_after_the_linger_time() {
        let (seen, took) = serve_oversized(false);
        assert!(seen.written.starts_with(b"HTTP/1.1 413 "));
        assert!(
            took >= LINGER_TIME && took < LINGER_TIME + Duration::from_secs(2),
            "{took:?}"
        );
    }
}
