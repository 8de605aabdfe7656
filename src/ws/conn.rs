//! One WebSocket connection's protocol: frames in, client messages, subscriptions.
//!
//! Two transports share it. Plain TCP (`plain`) waits for readability and reads into a
//! per-feed buffer, with the hub writing the socket, so an idle client costs one small task.
//! TLS (`run`, for wss) keeps a reader task and a writer task over the encrypted stream; its
//! writer sends everything queued since its last write in one `writev` of the shared `Bytes`.

use std::os::fd::RawFd;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Split, Splitable};

use super::hub::{Client, Hub, Subscription, WritePath, MAX_IOV};
use super::protocol::{self, ClientOp, Filter};
use super::DropReason;
use super::Feed;
use crate::http::Upgraded;
use crate::model::Transition;
use crate::wire::frame::{self, code, FrameError, Header};

/// Read size for idle clients; client messages are small.
const READ_CHUNK: usize = 256;
/// Stored transitions fetched per store query during a replay.
const PAGE: usize = 10_000;

/// Sets the socket's kernel send buffer (`server.ws.send_buffer_bytes`; 0 = kernel default).
pub(super) fn set_send_buffer(fd: RawFd, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt on a descriptor we own with a correctly sized int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Runs an upgraded TLS connection (wss) until it closes. `fd` is the underlying TCP socket:
/// it sizes the kernel send buffer and lets the hub shut the connection down from outside
/// the session.
pub async fn run<F: Feed, S>(feed: Rc<F>, up: Upgraded<S>, fd: RawFd)
where
    S: Split + AsyncReadRent + AsyncWriteRent + 'static,
{
    let hub = feed.hub().clone();
    set_send_buffer(fd, hub.cfg.send_buffer_bytes);
    let c = hub.add(fd, WritePath::Task);
    hub.send_text(&c, &protocol::hello(feed.latest_seq()));
    let (mut rd, wr) = up.stream.into_split();
    monoio::spawn(writer(hub.clone(), c.clone(), wr));
    reader(&feed, &hub, &c, &mut rd, up.leftover).await;
    hub.remove(&c);
    // The read half still holds the descriptor open, so this cannot hit a reused fd.
    c.kill();
    drop(rd);
    feed.session_closed();
}

fn reason_of(code: u16) -> DropReason {
    match code {
        code::TOO_BIG => DropReason::TooBig,
        code::INVALID_DATA => DropReason::InvalidData,
        _ => DropReason::Protocol,
    }
}

/// Input buffers, allocated only while a fragmented message or a cut frame is in transit.
#[derive(Default)]
struct Bufs {
    /// A fragmented message being assembled (text or binary).
    msg: Vec<u8>,
    /// Bytes of a frame cut across reads (plain sessions).
    partial: Vec<u8>,
}

/// What a connection's input side remembers between reads: 16 bytes while nothing is in
/// transit, because every idle plain-TCP session holds one.
#[derive(Default)]
pub(super) struct Input {
    bufs: Option<Box<Bufs>>,
    /// Opcode of the message being assembled.
    msg_op: Option<u8>,
    /// After a protocol error or the client's close, input is no longer interpreted.
    stopped: bool,
}

impl Input {
    /// True while bytes of a frame cut across reads are held.
    pub(super) fn has_partial(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.partial.is_empty())
    }

    /// Keeps the unused tail of a read (the start of a frame), unless input has stopped.
    pub(super) fn keep_partial(&mut self, tail: &[u8]) {
        if !self.stopped && !tail.is_empty() {
            let b = self.bufs.get_or_insert_with(Box::default);
            b.partial.extend_from_slice(tail);
        }
    }

    /// Frees the buffers once nothing is in transit.
    fn tidy(&mut self) {
        if self
            .bufs
            .as_ref()
            .is_some_and(|b| b.msg.is_empty() && b.partial.is_empty())
        {
            self.bufs = None;
        }
    }

    /// Reads more of a cut frame with `read` (straight behind the held bytes, into room for
    /// at least `min` bytes or what the frame's header announced), then handles every
    /// complete frame. Returns what `read` returned.
    pub(super) fn read_partial<F: Feed>(
        &mut self,
        min: usize,
        read: impl FnOnce(&mut [u8]) -> Option<usize>,
        feed: &Rc<F>,
        hub: &Rc<Hub>,
        c: &Rc<Client>,
    ) -> Option<usize> {
        let mut p = match self.bufs.as_mut() {
            Some(b) => std::mem::take(&mut b.partial),
            None => Vec::new(),
        };
        let have = p.len();
        if p.capacity() - have < min {
            p.reserve(min);
        }
        p.resize(p.capacity(), 0);
        let got = read(&mut p[have..]);
        p.truncate(have + got.unwrap_or(0));
        let (used, need) = self.consume(feed, hub, c, &mut p);
        p.drain(..used);
        if !p.is_empty() && !self.stopped {
            if need > p.len() {
                p.reserve(need - p.len());
            }
            self.bufs.get_or_insert_with(Box::default).partial = p;
        }
        self.tidy();
        got
    }

    /// Handles every complete frame at the front of `buf` (unmasking in place) and returns
    /// how many bytes it used, and how many the next frame needs in all (0 = unknown).
    pub(super) fn consume<F: Feed>(
        &mut self,
        feed: &Rc<F>,
        hub: &Rc<Hub>,
        c: &Rc<Client>,
        buf: &mut [u8],
    ) -> (usize, usize) {
        let mut used = 0;
        while !self.stopped {
            let rest = &mut buf[used..];
            let h = match frame::parse_header(rest, hub.cfg.max_frame_bytes) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    hub.close(c, e.code, e.reason, Some(reason_of(e.code)));
                    self.stopped = true;
                    break;
                }
            };
            let total = h.header_len + h.payload_len;
            if rest.len() < total {
                return (used, total);
            }
            frame::unmask(&mut rest[h.header_len..total], h.mask);
            let payload = &rest[h.header_len..total];
            let r = on_frame(feed, hub, c, h, payload, &mut self.msg_op, &mut self.bufs);
            used += total;
            match r {
                Ok(true) => {}
                Ok(false) => self.stopped = true,
                Err(e) => {
                    hub.close(c, e.code, e.reason, Some(reason_of(e.code)));
                    self.stopped = true;
                }
            }
        }
        self.tidy();
        if self.stopped {
            // Whatever follows is ignored.
            return (buf.len(), 0);
        }
        (used, 0)
    }
}

async fn reader<F: Feed, S: Split + AsyncReadRent + AsyncWriteRent>(
    feed: &Rc<F>,
    hub: &Rc<Hub>,
    c: &Rc<Client>,
    rd: &mut OwnedReadHalf<S>,
    mut buf: Vec<u8>,
) {
    let mut input = Input::default();
    loop {
        let (used, need) = input.consume(feed, hub, c, &mut buf);
        buf.drain(..used);
        if need > buf.len() {
            buf.reserve(need - buf.len());
        }
        if c.done.get() {
            return;
        }
        // Give back what a large frame needed, so idle clients stay small.
        if buf.is_empty() && buf.capacity() > 4 * READ_CHUNK {
            buf = Vec::with_capacity(READ_CHUNK);
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        // Read into the spare capacity: a plain Vec would be filled from its start.
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, b) = rd.read(buf.slice_mut(len..cap)).await;
        buf = b.into_inner();
        match res {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// Handles one complete frame; `Ok(false)` stops reading (close received).
fn on_frame<F: Feed>(
    feed: &Rc<F>,
    hub: &Rc<Hub>,
    c: &Rc<Client>,
    h: Header,
    payload: &[u8],
    msg_op: &mut Option<u8>,
    bufs: &mut Option<Box<Bufs>>,
) -> Result<bool, FrameError> {
    let max = hub.cfg.max_message_bytes;
    let too_big = FrameError {
        code: code::TOO_BIG,
        reason: "message larger than the server limit",
    };
    match h.opcode {
        frame::OP_PING => hub.send_control(c, frame::OP_PONG, payload),
        frame::OP_PONG => c.ping_out.set(None),
        frame::OP_CLOSE => {
            let echo = frame::check_close_payload(payload)?;
            c.close_received.set(true);
            if c.close_queued.get() {
                if c.close_written.get() {
                    c.kill();
                }
            } else {
                hub.close(c, echo, "", None);
            }
            return Ok(false);
        }
        frame::OP_TEXT | frame::OP_BINARY => {
            if msg_op.is_some() {
                return Err(FrameError {
                    code: code::PROTOCOL,
                    reason: "new message before the previous one was finished",
                });
            }
            if payload.len() > max {
                return Err(too_big);
            }
            if h.fin {
                complete(feed, hub, c, h.opcode, payload)?;
            } else {
                *msg_op = Some(h.opcode);
                let b = bufs.get_or_insert_with(Box::default);
                b.msg.extend_from_slice(payload);
            }
        }
        _ => {
            let Some(op) = *msg_op else {
                return Err(FrameError {
                    code: code::PROTOCOL,
                    reason: "continuation frame without a message",
                });
            };
            let msg = &mut bufs.get_or_insert_with(Box::default).msg;
            if msg.len() + payload.len() > max {
                return Err(too_big);
            }
            msg.extend_from_slice(payload);
            if h.fin {
                let data = std::mem::take(msg);
                *msg_op = None;
                complete(feed, hub, c, op, &data)?;
            }
        }
    }
    Ok(true)
}

/// Handles one complete message.
fn complete<F: Feed>(
    feed: &Rc<F>,
    hub: &Rc<Hub>,
    c: &Rc<Client>,
    opcode: u8,
    data: &[u8],
) -> Result<(), FrameError> {
    if c.close_queued.get() {
        return Ok(());
    }
    if opcode == frame::OP_BINARY {
        hub.stats.borrow_mut().client_errors += 1;
        hub.send_text(
            c,
            &protocol::error(
                "unsupported",
                "binary messages are not supported; send JSON text",
            ),
        );
        return Ok(());
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return Err(FrameError {
            code: code::INVALID_DATA,
            reason: "text message is not valid UTF-8",
        });
    };
    match protocol::parse(text) {
        Err(e) => {
            hub.stats.borrow_mut().client_errors += 1;
            hub.send_text(c, &protocol::error(e.code, &e.message));
        }
        Ok(ClientOp::Unsubscribe) => {
            hub.unsubscribe(c);
            hub.send_text(c, &protocol::unsubscribed());
        }
        Ok(ClientOp::Subscribe { filter, since }) => {
            let (gen, mark) = hub.begin_subscribe(c);
            hub.send_text(c, &protocol::subscribed(feed.latest_seq()));
            monoio::spawn(prepare(feed.clone(), c.clone(), gen, mark, filter, since));
        }
    }
    Ok(())
}

/// Gathers the snapshot (all shards) and, for `since`, the stored transitions, then completes
/// the subscription on this shard.
async fn prepare<F: Feed>(
    feed: Rc<F>,
    c: Rc<Client>,
    gen: u32,
    mark: u64,
    filter: Filter,
    since: Option<u64>,
) {
    let hub = feed.hub().clone();
    let states = feed.snapshot().await;
    let mut rows = Vec::new();
    if let Some(since) = since {
        match load_since(&feed, since).await {
            Ok(r) => rows = r,
            Err(msg) => {
                if c.sub_gen.get() == gen {
                    hub.send_text(&c, &protocol::error("replay_failed", &msg));
                }
            }
        }
        // No second look is needed: a transition is published only after it is committed,
        // so the store already holds everything this shard's resume ring has seen.
    }
    let sub = Subscription {
        gen,
        mark,
        filter,
        since,
    };
    hub.finish_subscribe(&c, sub, &states, rows);
}

/// Stored transitions with seq > `since`, in seq order, read on the store's reader threads.
async fn load_since<F: Feed>(feed: &Rc<F>, since: u64) -> Result<Vec<Transition>, String> {
    let max = feed.hub().cfg.max_replay;
    let mut out: Vec<Transition> = Vec::new();
    let mut after = since;
    loop {
        let page = feed
            .replay_page(after, PAGE)
            .await
            .map_err(|e| format!("cannot read stored transitions: {e}"))?;
        let n = page.len();
        if let Some(last) = page.last() {
            after = last.seq;
        }
        out.extend(page);
        if out.len() > max {
            return Err(format!(
                "more than {max} transitions since {since}; fetch them from the REST API"
            ));
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}

async fn writer<S: Split + AsyncReadRent + AsyncWriteRent>(
    hub: Rc<Hub>,
    c: Rc<Client>,
    mut wr: OwnedWriteHalf<S>,
) {
    loop {
        if c.done.get() {
            return;
        }
        if c.queue.borrow().is_empty() {
            c.wake.wait().await;
            continue;
        }
        let mut batch = hub.take_batch();
        let mut close = false;
        {
            let now = std::time::Instant::now();
            let mut q = c.queue.borrow_mut();
            let mut st = hub.stats.borrow_mut();
            while batch.len() < MAX_IOV {
                let Some(o) = q.pop_front() else { break };
                if let Some(b) = o.born {
                    st.push(now.saturating_duration_since(b));
                }
                close |= o.close;
                batch.push(o.bytes);
            }
            let taken = batch.bytes();
            c.queued_bytes
                .set(c.queued_bytes.get().saturating_sub(taken));
            st.note_write(batch.len() as u64, taken);
        }
        let mut ok = true;
        loop {
            let (res, b) = wr.writev(batch).await;
            batch = b;
            match res {
                Ok(n) if n > 0 => {
                    if !batch.advance(n) {
                        break;
                    }
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        hub.put_batch(batch);
        if !ok {
            c.kill();
            return;
        }
        hub.after_write(&c, close);
        if c.done.get() {
            return;
        }
    }
}
