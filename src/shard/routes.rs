//! What a shard answers: HTTP routing, and the hosts the REST API and the WebSocket sessions
//! run against (`api::Host`, `ws::Feed`), so neither of them sees the shard itself.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use super::messages::ShardMsg;
use super::services::slot_view;
use super::Shard;
use crate::api::{Host, Local, Op, Reply, ServiceView};
use crate::auth::Auth;
use crate::config::ServiceDefaults;
use crate::http::{self, HttpReject, Request, Response};
use crate::model::{ServiceId, ServiceSpec, Transition};
use crate::rt::mesh::Pending;
use crate::store::reader::{ReadError, ReadPool};
use crate::store::RegistryHandle;
use crate::ws::{self, protocol::ServiceState, Feed, Hub};

impl http::Handler for Shard {
    async fn handle(&self, req: Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/metrics") => {
                // /metrics needs a read token when auth is on: it reveals fleet size and health.
                if let Err(e) = self.shared.auth.check(&req, crate::auth::Scope::Read) {
                    return e.response();
                }
                let mut r = Response::text(200, self.metrics().await);
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r
            }
            ("GET", "/healthz") => Response::text(200, "ok\n"),
            (_, "/ws") => match ws::handshake::accept(&req) {
                // A valid upgrade still needs a read token when auth is on (header or ?token=).
                Ok(switch) => match self.shared.auth.check(&req, crate::auth::Scope::Read) {
                    Ok(()) => switch,
                    Err(e) => e.response(),
                },
                Err(bad) => bad,
            },
            ("GET", "/readyz") => match self.shared.readiness() {
                Ok(()) => Response::text(200, "ready\n"),
                Err(why) => Response::text(503, format!("{why}\n")),
            },
            (_, "/metrics" | "/healthz" | "/readyz") => Response::error(
                405,
                "method_not_allowed",
                "only GET and HEAD are allowed here",
            )
            .with_header("Allow", "GET, HEAD"),
            (_, p) if p.starts_with("/api/") => {
                let r = crate::api::handle(self, &req).await;
                self.stats.borrow_mut().front.api_response(r.status);
                r
            }
            _ => Response::error(404, "not_found", &format!("no route for {}", req.path)),
        }
    }

    fn on_request(&self) {
        self.stats.borrow_mut().front.http_requests += 1;
    }

    fn on_reject(&self, why: HttpReject) {
        self.stats.borrow_mut().front.reject(why);
    }
}

impl Host for Shard {
    fn shard_id(&self) -> usize {
        self.id
    }

    fn shards(&self) -> usize {
        self.shared.mesh.shards()
    }

    fn auth(&self) -> &Auth {
        &self.shared.auth
    }

    fn defaults(&self) -> &ServiceDefaults {
        &self.shared.defaults
    }

    fn history(&self) -> &ReadPool {
        &self.shared.reader
    }

    fn registry(&self) -> &RegistryHandle {
        &self.shared.registry
    }

    fn latest_seq(&self) -> u64 {
        self.shared.seq.get()
    }

    fn api_local(&self) -> &Local {
        &self.api
    }

    fn view(&self, id: ServiceId) -> Option<ServiceView> {
        self.services.borrow().get(id).map(slot_view)
    }

    fn views(&self, keep: &dyn Fn(&ServiceView) -> bool) -> Vec<ServiceView> {
        self.services
            .borrow()
            .values()
            .map(slot_view)
            .filter(|v| keep(v))
            .collect()
    }

    fn put(&self, spec: Arc<ServiceSpec>) {
        self.upsert(spec);
    }

    fn remove(&self, id: ServiceId) -> bool {
        // Wheel entries of a removed slot are skipped when they surface (no slot, no probe).
        self.services.borrow_mut().remove(id).is_some()
    }

    fn send_op(&self, to: usize, op: Op) -> Pending<Reply> {
        self.ask(to, |tx| ShardMsg::Api(op, tx))
    }
}

impl Feed for Shard {
    fn hub(&self) -> &Rc<Hub> {
        &self.hub
    }

    fn latest_seq(&self) -> u64 {
        self.shared.seq.get()
    }

    fn snapshot(&self) -> impl Future<Output = Vec<ServiceState>> {
        self.all_service_states()
    }

    async fn replay_page(&self, after: u64, limit: usize) -> Result<Vec<Transition>, ReadError> {
        self.shared
            .reader
            .read(move |s| s.transitions_since(after, limit))
            .await
    }

    fn session_closed(&self) {
        self.connections
            .set(self.connections.get().saturating_sub(1));
    }
}
