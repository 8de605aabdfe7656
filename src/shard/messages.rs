//! What shards and control threads ask a shard through the mesh, and the loop that answers.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use super::gather::StatsSnapshot;
use super::Shard;
use crate::model::{ServiceId, ServiceSpec, Status, UnixMillis};
use crate::pipeline::event::Event;
use crate::remote::RemoteJob;
use crate::rt::mesh::{From, Pending};
use crate::ws::protocol::ServiceState;

/// Messages shards (and control threads) send each other through the mesh.
pub enum ShardMsg {
    /// An event to fan out to this shard's clients.
    Event(Arc<Event>),
    /// Reply with this shard's stats.
    Stats(oneshot::Sender<StatsSnapshot>),
    /// The full set of config-defined services this shard must own now (SIGHUP reload).
    ReplaceConfig(Vec<Arc<ServiceSpec>>),
    /// Every service this shard must know now, whatever its source (a cluster node's mirror
    /// of the registry in PostgreSQL).
    ReplaceAll(Vec<Arc<ServiceSpec>>),
    /// A job from the jobs stream to probe here (cluster worker).
    Job(RemoteJob),
    /// A status another process decided, for this shard's view of the service.
    Status(ServiceId, Status, UnixMillis),
    /// Stop probing, finish in-flight probes (up to the grace period) and exit.
    Shutdown,
    /// A REST operation on a service this shard owns; the answer goes back on the oneshot.
    Api(crate::api::Op, oneshot::Sender<crate::api::Reply>),
    /// Reply with the current state of every service this shard owns (WebSocket snapshots).
    States(oneshot::Sender<Vec<ServiceState>>),
}

impl Shard {
    /// Processes mesh messages until told to shut down, then drains in-flight probes.
    pub(super) async fn mesh_loop(self: Rc<Self>) {
        let mut batch = Vec::with_capacity(256);
        loop {
            batch.clear();
            let mesh = self.shared.mesh.clone();
            mesh.recv_batch(self.id, &mut batch, 256).await;
            self.stats.borrow_mut().front.mesh_received += batch.len() as u64;
            for msg in batch.drain(..) {
                if let ShardMsg::Shutdown = msg {
                    self.drain().await;
                    return;
                }
                self.answer(msg);
            }
        }
    }

    /// Handles one message other than `Shutdown`.
    fn answer(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Event(e) => self.deliver(&e),
            ShardMsg::Stats(reply) => {
                let _ = reply.send(self.snapshot());
            }
            ShardMsg::ReplaceConfig(specs) => self.replace_services(specs, false),
            ShardMsg::ReplaceAll(specs) => self.replace_services(specs, true),
            ShardMsg::Job(job) => self.take_job(job),
            ShardMsg::Status(id, to, at) => self.mirror_status(id, to, at),
            ShardMsg::Api(op, reply) => {
                // Writes await the writer thread; a task keeps the mesh loop moving.
                let me = self.clone();
                monoio::spawn(async move {
                    let _ = reply.send(crate::api::services::apply(&*me, op).await);
                });
            }
            ShardMsg::States(reply) => {
                let _ = reply.send(self.local_states());
            }
            ShardMsg::Shutdown => {}
        }
    }

    /// Stops probing, closes WebSocket clients, and waits (bounded) for in-flight probes.
    async fn drain(&self) {
        self.stopping.set(true);
        // WebSocket clients get a 1001 close; their writers run while probes finish.
        self.hub.close_all();
        self.wake_sched.notify();
        let deadline = Instant::now() + self.shared.server.shutdown_grace;
        while self.inflight.get() > 0 && Instant::now() < deadline {
            self.probe_done.wait_or(Some(deadline)).await;
        }
        // Let the close handshakes finish (bounded), so clients see 1001 rather than a reset.
        let ws_deadline = Instant::now() + self.shared.server.ws.close_timeout;
        while !self.hub.is_empty() && Instant::now() < ws_deadline {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(
            shard = self.id,
            abandoned = self.inflight.get(),
            "shard stopped"
        );
    }

    /// Sends `make(reply)` to every shard but this one, without waiting; pair with
    /// `rt::mesh::gather`. Doing local work between the two lets every shard work at once.
    pub(super) fn ask_others<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> ShardMsg,
    ) -> Vec<Pending<T>> {
        (0..self.shared.mesh.shards())
            .filter(|to| *to != self.id)
            .map(|to| self.ask(to, &make))
            .collect()
    }

    /// Sends `make(reply)` to shard `to`; `None` when its ring is full.
    pub(super) fn ask<T>(
        &self,
        to: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> ShardMsg,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .mesh
            .send(From::Shard(self.id), to, make(tx))
            .ok()
            .map(|()| rx)
    }
}
