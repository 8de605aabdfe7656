//! One shard's WebSocket clients: fan-out, per-client queues, back-pressure, pings, resume ring.
//!
//! Everything here lives on one shard thread (`Rc`, `Cell`, `RefCell`; no locks). The fan-out
//! loop only clones a `Bytes` handle (a reference count) into each matching client's queue;
//! queues reuse their capacity, so steady-state delivery allocates nothing.
//!
//! Plain-TCP clients are written by the hub itself ([`Hub::flush_loop`]): the fan-out marks a
//! client dirty, and once the shard has finished its current work one non-blocking `sendmsg`
//! per dirty client carries everything queued for it since its last write. No task wakes per
//! client per event, and frames that arrive together (a mesh batch, a burst of probe
//! completions) leave in one write. Only a client whose socket buffer is full gets its own
//! task involved, to wait for writability. TLS clients (wss) encrypt per client and keep a
//! writer task (`conn::writer`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::protocol::{self, Filter, ServiceState};
use super::{DropReason, ResultInterest, WsStats};
use crate::config::WsConfig;
use crate::model::Transition;
use crate::pipeline::event::{Event, EventKind};
use crate::rt::notify::Notify;
use crate::wire::frame::{self, code};

/// Most frames one `writev` carries (well under IOV_MAX).
pub const MAX_IOV: usize = 64;

/// Queue capacity (frames) a client keeps between bursts; an idle client's larger queue buffer
/// is freed by the tick, so 10k idle clients do not pin burst-sized buffers.
const KEEP_QUEUE: usize = 16;

/// A point in time in 8 bytes: microseconds since the process's first stamp, plus one (an
/// `Option<Instant>` takes 16 bytes, and every client keeps four of these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(std::num::NonZeroU64);

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        Stamp::of(Instant::now())
    }

    /// The stamp of `t` (times before the process's first stamp read as that stamp).
    pub fn of(t: Instant) -> Stamp {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        let us =
            u64::try_from(t.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX - 1);
        Stamp(std::num::NonZeroU64::MIN.saturating_add(us))
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn duration_since(self, earlier: Stamp) -> Duration {
        Duration::from_micros(self.0.get().saturating_sub(earlier.0.get()))
    }
}

impl std::ops::Add<Duration> for Stamp {
    type Output = Stamp;

    fn add(self, d: Duration) -> Stamp {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Stamp(self.0.saturating_add(us))
    }
}

/// One queued frame.
pub struct Out {
    /// The frame bytes (shared with every other client for events).
    pub bytes: Bytes,
    /// Probe completion time, for push latency (events only).
    pub born: Option<Instant>,
    /// This is our close frame: nothing may follow it.
    pub close: bool,
}

/// A subscription being prepared.
pub struct Subscription {
    /// Generation from `begin_subscribe`.
    pub gen: u32,
    /// Resume-ring position from `begin_subscribe`.
    pub mark: u64,
    /// The requested filter.
    pub filter: Filter,
    /// Replay stored transitions after this seq.
    pub since: Option<u64>,
}

/// Who writes a client's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    /// The hub, with non-blocking `sendmsg` on the raw socket (plain TCP).
    Hub,
    /// The client's own writer task (TLS: frames are encrypted per client).
    Task,
}

/// One connected WebSocket client.
pub struct Client {
    /// The socket, for shutting it down from outside its tasks.
    pub fd: RawFd,
    /// Who writes the socket.
    writer: WritePath,
    /// In the hub's dirty list (hub writer only).
    dirty: Cell<bool>,
    /// The socket buffer was full: the client's task waits for writability and flushes
    /// (hub writer only).
    pub blocked: Cell<bool>,
    /// Bytes of the front queued frame already written (hub writer only).
    front_sent: Cell<u32>,
    /// Something was queued since the last tick (an idle client's queue buffer is freed).
    active: Cell<bool>,
    /// Position in `Hub::clients` (kept current on swap-remove).
    index: Cell<u32>,
    /// Active filter; None = not subscribed.
    filter: RefCell<Option<Filter>>,
    /// A subscribe is being prepared (snapshot, replay): live events wait in the resume ring.
    pending: Cell<bool>,
    /// Bumped on every subscribe/unsubscribe so a stale preparation is discarded.
    pub sub_gen: Cell<u32>,
    /// Seqs already replayed from the store that may still arrive live (dropped when they do).
    /// Boxed so the field takes 8 bytes in every client, though only `since` clients use it.
    #[allow(clippy::box_collection)]
    skip: RefCell<Option<Box<Vec<u64>>>>,
    /// Frames waiting for the writer.
    pub queue: RefCell<VecDeque<Out>>,
    /// Bytes in `queue`.
    pub queued_bytes: Cell<usize>,
    /// Since when the queue has been over its bound.
    pub over_since: Cell<Option<Stamp>>,
    /// When the unanswered ping was sent (None = no ping outstanding).
    pub ping_out: Cell<Option<Stamp>>,
    /// When the last ping was sent.
    last_ping: Cell<Stamp>,
    /// Our close frame is queued: nothing more is queued after it.
    pub close_queued: Cell<bool>,
    /// The client's close frame arrived.
    pub close_received: Cell<bool>,
    /// Our close frame has been written.
    pub close_written: Cell<bool>,
    /// Drop the socket at this time if the close handshake has not finished.
    pub close_deadline: Cell<Option<Stamp>>,
    /// The connection is finished; tasks exit.
    pub done: Cell<bool>,
    /// Wakes the writer task.
    pub wake: Notify,
}

impl Client {
    /// True when the client asked for result events.
    fn wants_results(&self) -> bool {
        self.filter.borrow().as_ref().is_some_and(|f| f.results)
    }

    /// Shuts the socket down both ways: pending reads and writes complete and both tasks end.
    pub fn kill(&self) {
        if !self.done.replace(true) {
            // SAFETY: shutdown(2) on a descriptor we own; it stays open until both halves drop.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        }
        self.wake.notify();
    }
}

/// The shard's WebSocket clients and the state shared by them.
pub struct Hub {
    /// Limits and timers.
    pub cfg: WsConfig,
    /// The process's count of result subscribers, which this hub's clients join and leave.
    interest: ResultInterest,
    clients: RefCell<Vec<Rc<Client>>>,
    /// Recent transition events delivered to this shard, oldest first (resume ring).
    recent: RefCell<VecDeque<Arc<Event>>>,
    /// Events ever pushed into `recent` (position counter).
    pushed: Cell<u64>,
    /// Counters.
    pub stats: RefCell<WsStats>,
    /// Reusable `writev` batches, so writers allocate nothing per write.
    batches: RefCell<Vec<Batch>>,
    /// Ping frame shared by every client.
    ping: Bytes,
    /// Hub-written clients with queued frames, flushed by `flush_loop`.
    dirty: RefCell<Vec<Rc<Client>>>,
    /// Wakes `flush_loop`.
    flush_wake: Notify,
    /// The iovec array of the `sendmsg` being built (reused).
    iov: RefCell<Vec<libc::iovec>>,
}

impl Hub {
    /// An empty hub.
    pub fn new(cfg: WsConfig, interest: ResultInterest) -> Hub {
        Hub {
            cfg,
            interest,
            clients: RefCell::new(Vec::new()),
            recent: RefCell::new(VecDeque::with_capacity(cfg.resume_buffer)),
            pushed: Cell::new(0),
            stats: RefCell::new(WsStats::default()),
            batches: RefCell::new(Vec::new()),
            ping: frame::encode(frame::OP_PING, b""),
            dirty: RefCell::new(Vec::new()),
            flush_wake: Notify::default(),
            iov: RefCell::new(Vec::with_capacity(MAX_IOV)),
        }
    }

    /// Registers a new client on socket `fd`, written by `writer`.
    pub fn add(&self, fd: RawFd, writer: WritePath) -> Rc<Client> {
        let mut clients = self.clients.borrow_mut();
        let c = Rc::new(Client {
            fd,
            writer,
            dirty: Cell::new(false),
            blocked: Cell::new(false),
            front_sent: Cell::new(0),
            active: Cell::new(false),
            index: Cell::new(u32::try_from(clients.len()).unwrap_or(u32::MAX)),
            filter: RefCell::new(None),
            pending: Cell::new(false),
            sub_gen: Cell::new(0),
            skip: RefCell::new(None),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            over_since: Cell::new(None),
            ping_out: Cell::new(None),
            last_ping: Cell::new(Stamp::now()),
            close_queued: Cell::new(false),
            close_received: Cell::new(false),
            close_written: Cell::new(false),
            close_deadline: Cell::new(None),
            done: Cell::new(false),
            wake: Notify::default(),
        });
        clients.push(c.clone());
        let mut st = self.stats.borrow_mut();
        st.clients += 1;
        st.connections += 1;
        c
    }

    /// Removes a finished client.
    pub fn remove(&self, c: &Rc<Client>) {
        self.set_filter(c, None);
        let mut clients = self.clients.borrow_mut();
        let i = c.index.get() as usize;
        if i < clients.len() && Rc::ptr_eq(&clients[i], c) {
            clients.swap_remove(i);
            if let Some(moved) = clients.get(i) {
                moved.index.set(c.index.get());
            }
            self.stats.borrow_mut().clients -= 1;
        }
        c.queue.borrow_mut().clear();
        c.queued_bytes.set(0);
        c.front_sent.set(0);
    }

    /// Replaces a client's filter, keeping the global result-subscriber count right.
    fn set_filter(&self, c: &Client, f: Option<Filter>) {
        let before = c.wants_results();
        *c.filter.borrow_mut() = f;
        let after = c.wants_results();
        if after && !before {
            self.interest.add();
        } else if before && !after {
            self.interest.remove();
        }
    }

    /// Queues a frame for `c` and wakes its writer; enforces the queue bound.
    pub fn push(&self, c: &Client, out: Out) {
        if c.close_queued.get() || c.done.get() {
            return;
        }
        let len = out.bytes.len();
        if out.close {
            c.close_queued.set(true);
        }
        c.queue.borrow_mut().push_back(out);
        let queued = c.queued_bytes.get() + len;
        c.queued_bytes.set(queued);
        if queued > self.cfg.max_queue_bytes {
            let now = Stamp::now();
            match c.over_since.get() {
                None => c.over_since.set(Some(now)),
                Some(t) if now.duration_since(t) > self.cfg.slow_grace => {
                    self.drop_slow(c, now);
                }
                Some(_) => {}
            }
        }
        self.wake_writer(c);
    }

    /// Gets `c`'s queue written: its writer task, or the hub's next flush.
    fn wake_writer(&self, c: &Client) {
        c.active.set(true);
        match c.writer {
            WritePath::Task => c.wake.notify(),
            // A blocked client is flushed by its own task when the socket drains.
            WritePath::Hub if c.blocked.get() || c.dirty.get() => {}
            WritePath::Hub => {
                c.dirty.set(true);
                let mut dirty = self.dirty.borrow_mut();
                match self.clients.borrow().get(c.index.get() as usize) {
                    Some(rc) if std::ptr::eq(&**rc, c) => dirty.push(rc.clone()),
                    // Not registered (removed already): nothing to write to.
                    _ => c.dirty.set(false),
                }
                if dirty.len() == 1 {
                    self.flush_wake.notify();
                }
            }
        }
    }

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

    /// Queues a small per-connection message (JSON text frame).
    pub fn send_text(&self, c: &Client, json: &[u8]) {
        let bytes = frame::encode(frame::OP_TEXT, json);
        self.push(
            c,
            Out {
                bytes,
                born: None,
                close: false,
            },
        );
    }

    /// Queues a control frame.
    pub fn send_control(&self, c: &Client, opcode: u8, payload: &[u8]) {
        self.push(
            c,
            Out {
                bytes: frame::encode(opcode, payload),
                born: None,
                close: false,
            },
        );
    }

    /// Starts the closing handshake with `code`; the socket is dropped after `close_timeout`
    /// if the client does not answer.
    pub fn close(&self, c: &Client, code: u16, reason: &str, why: Option<DropReason>) {
        if c.close_queued.get() || c.done.get() {
            return;
        }
        if let Some(why) = why {
            self.stats.borrow_mut().drop_client(why);
        }
        self.push(
            c,
            Out {
                bytes: frame::close(code, reason),
                born: None,
                close: true,
            },
        );
        c.close_deadline
            .set(Some(Stamp::now() + self.cfg.close_timeout));
    }

    /// A client over its bound past the grace period: its backlog is discarded, a 1008 close
    /// is queued, and the socket is dropped if the close cannot be written within the timeout.
    fn drop_slow(&self, c: &Client, now: Stamp) {
        self.stats.borrow_mut().drop_client(DropReason::Slow);
        let mut q = c.queue.borrow_mut();
        // A frame the hub has partly written must be finished, or the close frame would land
        // in the middle of it.
        let started = match c.front_sent.get() {
            0 => None,
            _ => q.pop_front(),
        };
        q.clear();
        c.queued_bytes.set(0);
        if let Some(o) = started {
            c.queued_bytes
                .set(o.bytes.len() - (c.front_sent.get() as usize).min(o.bytes.len()));
            q.push_back(o);
        }
        drop(q);
        c.over_since.set(None);
        c.queue.borrow_mut().push_back(Out {
            bytes: frame::close(code::POLICY, "client too slow: send queue over its bound"),
            born: None,
            close: true,
        });
        c.close_queued.set(true);
        // The writer may be stuck on a write the client never drains: cut it after the timeout.
        c.close_deadline.set(Some(now + self.cfg.close_timeout));
    }

    /// Fans an event out to every matching client of this shard.
    pub fn deliver(&self, e: &Arc<Event>) {
        if e.kind == EventKind::Transition {
            let mut recent = self.recent.borrow_mut();
            if recent.len() >= self.cfg.resume_buffer {
                recent.pop_front();
            }
            recent.push_back(e.clone());
            self.pushed.set(self.pushed.get() + 1);
        }
        let clients = self.clients.borrow();
        for c in clients.iter() {
            if c.pending.get() || c.close_queued.get() {
                continue;
            }
            let matched = match &*c.filter.borrow() {
                Some(f) => f.matches(e),
                None => false,
            };
            if !matched {
                continue;
            }
            if e.seq != 0 {
                // Only a client that resumed with `since` has seqs to skip.
                if let Some(skip) = c.skip.borrow_mut().as_mut() {
                    if let Some(i) = skip.iter().position(|s| *s == e.seq) {
                        // Already replayed from the store before it reached this shard.
                        skip.swap_remove(i);
                        continue;
                    }
                }
            }
            self.push(
                c,
                Out {
                    bytes: e.frame.clone(),
                    born: Some(e.born),
                    close: false,
                },
            );
        }
    }

    /// Begins a subscription: live events for `c` wait in the resume ring until `finish`.
    /// Returns the generation and ring position the preparation must present.
    pub fn begin_subscribe(&self, c: &Client) -> (u32, u64) {
        let gen = c.sub_gen.get().wrapping_add(1);
        c.sub_gen.set(gen);
        c.pending.set(true);
        *c.skip.borrow_mut() = None;
        (gen, self.pushed.get())
    }

    /// Stops a client's subscription.
    pub fn unsubscribe(&self, c: &Client) {
        c.sub_gen.set(c.sub_gen.get().wrapping_add(1));
        c.pending.set(false);
        *c.skip.borrow_mut() = None;
        self.set_filter(c, None);
    }

    /// The snapshot of the matching services, then a warning for each name in the filter that
    /// matches none of them (a typo must not look like a quiet service).
    fn send_snapshot(&self, c: &Client, states: &[ServiceState], filter: &Filter) {
        self.send_text(c, &protocol::snapshot(states, filter));
        for warning in protocol::unknown_services(states, filter) {
            self.send_text(c, &warning);
        }
    }

    /// Completes a subscription: snapshot, then replayed and buffered events in seq order,
    /// then live delivery. `rows` are stored transitions with seq > `since`.
    pub fn finish_subscribe(
        &self,
        c: &Client,
        sub: Subscription,
        states: &[ServiceState],
        rows: Vec<Transition>,
    ) {
        let Subscription {
            gen,
            mark,
            filter,
            since,
        } = sub;
        if c.sub_gen.get() != gen || c.done.get() {
            return;
        }
        self.send_snapshot(c, states, &filter);
        let recent = self.recent.borrow();
        let pushed = self.pushed.get();
        let oldest_pos = pushed - recent.len() as u64;
        if oldest_pos > mark && since.is_none() {
            // More events arrived while preparing than the ring holds: say so.
            self.stats.borrow_mut().resume_overflows += 1;
            self.send_text(
                c,
                &protocol::error(
                    "events_lost",
                    "events were lost while the subscription was prepared; resubscribe",
                ),
            );
        }
        let mut by_seq: HashMap<u64, Arc<Event>> = HashMap::new();
        let mut ring_min = u64::MAX;
        for (i, e) in recent.iter().enumerate() {
            ring_min = ring_min.min(e.seq);
            let pos = oldest_pos + i as u64;
            let wanted = match since {
                Some(s) => e.seq > s,
                None => pos >= mark,
            };
            if wanted {
                by_seq.insert(e.seq, e.clone());
            }
        }
        drop(recent);
        let tags: HashMap<&str, &[String]> = states
            .iter()
            .map(|s| (s.name.as_str(), &s.tags[..]))
            .collect();
        let mut skip = Vec::new();
        let mut replayed = 0;
        for t in &rows {
            if by_seq.contains_key(&t.seq) {
                continue;
            }
            if t.seq > ring_min && skip.len() < 1024 {
                skip.push(t.seq);
            }
            replayed += 1;
            let e = Event::transition_with(t, None, Instant::now());
            by_seq.insert(t.seq, Arc::new(e));
        }
        let mut events: Vec<Arc<Event>> = by_seq.into_values().collect();
        events.sort_by_key(|e| e.seq);
        for e in &events {
            let ok = match &e.spec {
                Some(_) => filter.matches(e),
                None => {
                    filter.transitions
                        && filter.matches_service(
                            &e.service,
                            tags.get(e.service.as_str()).unwrap_or(&&[][..]),
                        )
                }
            };
            if ok {
                self.push(
                    c,
                    Out {
                        bytes: e.frame.clone(),
                        born: None,
                        close: false,
                    },
                );
            }
        }
        self.stats.borrow_mut().replayed += replayed;
        *c.skip.borrow_mut() = (!skip.is_empty()).then(|| Box::new(skip));
        self.set_filter(c, Some(filter));
        c.pending.set(false);
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

    /// Clients connected now.
    pub fn len(&self) -> usize {
        self.clients.borrow().len()
    }

    /// True when no client is connected.
    pub fn is_empty(&self) -> bool {
        self.clients.borrow().is_empty()
    }

    /// Closes every client with 1001 (shutdown).
    pub fn close_all(&self) {
        let clients: Vec<Rc<Client>> = self.clients.borrow().clone();
        for c in clients {
            self.close(&c, code::GOING_AWAY, "server shutting down", None);
        }
    }

    /// Once per tick: pings, pong deadlines, slow clients with no new traffic, close deadlines.
    fn tick(&self, now: Stamp) {
        // Nothing below adds or removes clients (that happens in their tasks), so the list can
        // stay borrowed instead of being copied every tick.
        let clients = self.clients.borrow();
        for c in clients.iter() {
            if let Some(d) = c.close_deadline.get() {
                if now >= d {
                    c.kill();
                }
                continue;
            }
            if let Some(sent) = c.ping_out.get() {
                if now.duration_since(sent) > self.cfg.pong_timeout {
                    self.close(
                        c,
                        code::POLICY,
                        "pong not received in time",
                        Some(DropReason::PongTimeout),
                    );
                    // A client that ignores pings will not answer a close either.
                    c.close_deadline.set(Some(now));
                    continue;
                }
            }
            if let Some(t) = c.over_since.get() {
                if now.duration_since(t) > self.cfg.slow_grace {
                    self.drop_slow(c, now);
                    self.wake_writer(c);
                    continue;
                }
            }
            if !c.active.replace(false) {
                let mut q = c.queue.borrow_mut();
                if q.is_empty() && q.capacity() > 0 {
                    *q = VecDeque::new();
                }
            } else {
                let mut q = c.queue.borrow_mut();
                if q.is_empty() && q.capacity() > KEEP_QUEUE {
                    q.shrink_to(KEEP_QUEUE);
                }
            }
            if c.ping_out.get().is_none()
                && now.duration_since(c.last_ping.get()) >= self.cfg.ping_interval
            {
                c.last_ping.set(now);
                c.ping_out.set(Some(now));
                self.push(
                    c,
                    Out {
                        bytes: self.ping.clone(),
                        born: None,
                        close: false,
                    },
                );
            }
        }
    }

    /// Runs the tick loop for as long as the shard runs.
    pub async fn tick_loop(self: Rc<Self>) {
        let period = [
            self.cfg.ping_interval,
            self.cfg.pong_timeout,
            self.cfg.slow_grace.max(Duration::from_millis(1)),
            self.cfg.close_timeout,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1))
            / 4;
        let period = period.clamp(Duration::from_millis(5), Duration::from_secs(1));
        loop {
            monoio::time::sleep(period).await;
            self.tick(Stamp::now());
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
    fn stamps_order_and_measure_like_instants() {
        // Times before the first stamp read as the first stamp; start the clock first.
        let _ = Stamp::now();
        let t0 = Instant::now();
        let a = Stamp::of(t0);
        let b = Stamp::of(t0 + Duration::from_millis(1500));
        assert!(a < b);
        assert_eq!(b.duration_since(a), Duration::from_millis(1500));
        assert_eq!(a.duration_since(b), Duration::ZERO);
        assert_eq!(a + Duration::from_millis(1500), b);
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }

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
