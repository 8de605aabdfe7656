//! One WebSocket connection: a reader task (frames in, protocol) and a writer task (frames out).
//!
//! The reader keeps a small buffer that only grows while a large frame is in transit, so an
//! idle client holds a few hundred bytes. The writer sends everything queued since its last
//! write in one `writev` of the shared `Bytes` (no copy), up to `MAX_IOV` frames at a time.

use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Split, Splitable};

use super::frame::{self, code, FrameError, Header};
use super::hub::{Client, Hub, Subscription, MAX_IOV};
use super::protocol::{self, ClientOp, Filter};
use super::DropReason;
use crate::http::Upgraded;
use crate::model::Transition;
use crate::shard::Shard;

/// Read size for idle clients; client messages are small.
const READ_CHUNK: usize = 256;
/// Stored transitions fetched per store query during a replay.
const PAGE: usize = 10_000;

/// Runs an upgraded connection (plain TCP, or TLS for wss) until it closes. `fd` is the
/// underlying TCP socket: it sizes the kernel send buffer and lets the hub shut the
/// connection down from outside the session.
pub async fn run<S>(shard: Rc<Shard>, up: Upgraded<S>, fd: RawFd)
where
    S: Split + AsyncReadRent + AsyncWriteRent + 'static,
{
    let hub = shard.ws_hub().clone();
    let sndbuf = hub.cfg.send_buffer_bytes;
    if sndbuf > 0 {
        let v = libc::c_int::try_from(sndbuf).unwrap_or(libc::c_int::MAX);
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
    let c = hub.add(fd);
    hub.send_text(&c, &protocol::hello(shard.shared().seq.latest()));
    let (mut rd, wr) = up.stream.into_split();
    monoio::spawn(writer(hub.clone(), c.clone(), wr));
    reader(&shard, &hub, &c, &mut rd, up.leftover).await;
    hub.remove(&c);
    // The read half still holds the descriptor open, so this cannot hit a reused fd.
    c.kill();
    drop(rd);
    shard.ws_closed();
}

fn reason_of(code: u16) -> DropReason {
    match code {
        code::TOO_BIG => DropReason::TooBig,
        code::INVALID_DATA => DropReason::InvalidData,
        _ => DropReason::Protocol,
    }
}

/// Partial message assembly (fragmented text or binary).
#[derive(Default)]
struct Assembly {
    opcode: Option<u8>,
    data: Vec<u8>,
}

async fn reader<S: Split + AsyncReadRent + AsyncWriteRent>(
    shard: &Rc<Shard>,
    hub: &Rc<Hub>,
    c: &Rc<Client>,
    rd: &mut OwnedReadHalf<S>,
    mut buf: Vec<u8>,
) {
    let mut msg = Assembly::default();
    // After a protocol error or the client's close, input is no longer interpreted.
    let mut stopped = false;
    loop {
        while !stopped {
            let h = match frame::parse_header(&buf, hub.cfg.max_frame_bytes) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    hub.close(c, e.code, e.reason, Some(reason_of(e.code)));
                    stopped = true;
                    break;
                }
            };
            let total = h.header_len + h.payload_len;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                break;
            }
            frame::unmask(&mut buf[h.header_len..total], h.mask);
            let r = on_frame(shard, hub, c, h, &buf[h.header_len..total], &mut msg);
            buf.drain(..total);
            match r {
                Ok(true) => {}
                Ok(false) => stopped = true,
                Err(e) => {
                    hub.close(c, e.code, e.reason, Some(reason_of(e.code)));
                    stopped = true;
                }
            }
        }
        if stopped {
            buf.clear();
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
fn on_frame(
    shard: &Rc<Shard>,
    hub: &Rc<Hub>,
    c: &Rc<Client>,
    h: Header,
    payload: &[u8],
    msg: &mut Assembly,
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
            if msg.opcode.is_some() {
                return Err(FrameError {
                    code: code::PROTOCOL,
                    reason: "new message before the previous one was finished",
                });
            }
            if payload.len() > max {
                return Err(too_big);
            }
            if h.fin {
                complete(shard, hub, c, h.opcode, payload)?;
            } else {
                msg.opcode = Some(h.opcode);
                msg.data.extend_from_slice(payload);
            }
        }
        _ => {
            let Some(op) = msg.opcode else {
                return Err(FrameError {
                    code: code::PROTOCOL,
                    reason: "continuation frame without a message",
                });
            };
            if msg.data.len() + payload.len() > max {
                return Err(too_big);
            }
            msg.data.extend_from_slice(payload);
            if h.fin {
                let data = std::mem::take(&mut msg.data);
                msg.opcode = None;
                complete(shard, hub, c, op, &data)?;
            }
        }
    }
    Ok(true)
}

/// Handles one complete message.
fn complete(
    shard: &Rc<Shard>,
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
            hub.send_text(c, &protocol::subscribed(shard.shared().seq.latest()));
            monoio::spawn(prepare(shard.clone(), c.clone(), gen, mark, filter, since));
        }
    }
    Ok(())
}

/// Gathers the snapshot (all shards) and, for `since`, the stored transitions, then completes
/// the subscription on this shard.
async fn prepare(
    shard: Rc<Shard>,
    c: Rc<Client>,
    gen: u64,
    mark: u64,
    filter: Filter,
    since: Option<u64>,
) {
    let hub = shard.ws_hub().clone();
    let states = shard.all_service_states().await;
    let mut rows = Vec::new();
    if let Some(since) = since {
        match load_since(&shard, since).await {
            Ok(r) => rows = r,
            Err(msg) => {
                if c.sub_gen.get() == gen {
                    hub.send_text(&c, &protocol::error("replay_failed", &msg));
                }
            }
        }
        // The store lags the mesh by up to a flush interval: ask again rather than leave a hole.
        for _ in 0..10 {
            if !hub.has_gap(since, &rows) || c.sub_gen.get() != gen {
                break;
            }
            monoio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(r) = load_since(&shard, since).await {
                rows = r;
            }
        }
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
async fn load_since(shard: &Rc<Shard>, since: u64) -> Result<Vec<Transition>, String> {
    let pool = shard.shared().reader.clone();
    let max = shard.ws_hub().cfg.max_replay;
    let mut out: Vec<Transition> = Vec::new();
    let mut after = since;
    loop {
        let page = pool
            .read(move |s| s.transitions_since(after, PAGE))
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
            let mut taken = 0usize;
            while batch.len() < MAX_IOV {
                let Some(o) = q.pop_front() else { break };
                taken += o.bytes.len();
                if let Some(b) = o.born {
                    st.push(now.saturating_duration_since(b));
                }
                close |= o.close;
                batch.push(o.bytes);
            }
            c.queued_bytes
                .set(c.queued_bytes.get().saturating_sub(taken));
            st.messages_sent += batch.len() as u64;
            st.bytes_sent += taken as u64;
            st.writes += 1;
            if batch.len() > 1 {
                st.coalesced_writes += 1;
            }
        }
        if c.queued_bytes.get() <= hub.cfg.max_queue_bytes {
            c.over_since.set(None);
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
        if close {
            c.close_written.set(true);
            if c.close_received.get() {
                c.kill();
                return;
            }
        }
    }
}
