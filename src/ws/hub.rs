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
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::protocol::Filter;
use super::{DropReason, ResultInterest, WsStats};
use crate::config::WsConfig;
use crate::pipeline::event::{Event, EventKind};
use crate::rt::notify::Notify;
use crate::wire::frame::{self, code};

use super::client::KEEP_QUEUE;
pub use super::client::{Client, Out, Stamp, WritePath, MAX_IOV};
pub use super::flush::Batch;
pub use super::subscribe::Subscription;

/// The shard's WebSocket clients and the state shared by them.
pub struct Hub {
    /// Limits and timers.
    pub cfg: WsConfig,
    /// The process's count of result subscribers, which this hub's clients join and leave.
    pub(super) interest: ResultInterest,
    pub(super) clients: RefCell<Vec<Rc<Client>>>,
    /// Recent transition events delivered to this shard, oldest first (resume ring).
    pub(super) recent: RefCell<VecDeque<Arc<Event>>>,
    /// Events ever pushed into `recent` (position counter).
    pub(super) pushed: Cell<u64>,
    /// Counters.
    pub stats: RefCell<WsStats>,
    /// Reusable `writev` batches, so writers allocate nothing per write.
    pub(super) batches: RefCell<Vec<Batch>>,
    /// Ping frame shared by every client.
    pub(super) ping: Bytes,
    /// Hub-written clients with queued frames, flushed by `flush_loop`.
    pub(super) dirty: RefCell<Vec<Rc<Client>>>,
    /// Wakes `flush_loop`.
    pub(super) flush_wake: Notify,
    /// The iovec array of the `sendmsg` being built (reused).
    pub(super) iov: RefCell<Vec<libc::iovec>>,
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
    pub(super) fn set_filter(&self, c: &Client, f: Option<Filter>) {
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
