//! The connection loop: reads, answers every buffered request, writes, and enforces the
//! timeouts; hands the stream back when a handler switches protocols.

use std::future::Future;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::time::Instant;

use super::reject::HttpReject;
use super::request::{parse_request, Parsed, Request};
use super::response::{encode_response, Response};
use crate::config::HttpLimits;

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
                conn.time_out().await;
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
                    self.handler.on_request();
                    let resp = self.handler.handle(req).await;
                    let upgrade = resp.status == 101;
                    encode_response(&resp, close && !upgrade, &mut self.out);
                    if upgrade {
                        break Next::Upgrade;
                    }
                    if close {
                        break Next::Close;
                    }
                }
                Parsed::Partial => break Next::Read,
                Parsed::Reject(why, resp) => {
                    self.handler.on_reject(why);
                    encode_response(&resp, true, &mut self.out);
                    break Next::Close;
                }
            }
        };
        self.buf.drain(..consumed);
        next
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
    /// it was idle between requests.
    async fn time_out(&mut self) {
        if self.request_started.is_none() {
            return;
        }
        self.handler.on_reject(HttpReject::HeaderTimeout);
        let resp = Response::error(
            408,
            "request_timeout",
            "request not received within the header timeout",
        );
        encode_response(&resp, true, &mut self.out);
        self.flush().await;
    }
}
