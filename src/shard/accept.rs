//! Accepting connections: one SO_REUSEPORT listener per shard, a connection limit, TLS, and
//! the hand-off of an upgraded connection to a WebSocket session.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener};

use super::Shard;
use crate::http::{self, HttpReject};
use crate::ws::{self, Feed};

/// Binds one SO_REUSEPORT listener per shard on the same address.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let opts = ListenerOpts::default().reuse_port(true).backlog(4096);
    TcpListener::bind_with_config(addr, &opts)
}

impl Shard {
    pub(super) async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        loop {
            let (stream, _peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(shard = self.id, error = %e, "accept failed");
                    // EMFILE and friends: back off instead of spinning.
                    monoio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.connections.get() >= self.shared.server.limits.max_connections {
                self.stats
                    .borrow_mut()
                    .front
                    .reject(HttpReject::ConnectionLimit);
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.connections.set(self.connections.get() + 1);
            self.stats.borrow_mut().front.http_connections += 1;
            let me = self.clone();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            monoio::spawn(async move {
                let upgraded = match me.shared.server.tls.clone() {
                    None => http::serve_upgradable(stream, &*me, me.shared.server.limits)
                        .await
                        .map(|up| {
                            match ws::plain::run(me.clone(), up) {
                                Ok(session) => {
                                    monoio::spawn(session);
                                }
                                Err(e) => {
                                    tracing::warn!(shard = me.id, error = %e, "websocket session could not start");
                                    me.session_closed();
                                }
                            }
                        }),
                    Some(tls) => {
                        let acceptor = monoio_rustls::TlsAcceptor::from(tls.config);
                        // A client that never finishes its handshake loses its slot.
                        match monoio::time::timeout(tls.handshake_timeout, acceptor.accept(stream))
                            .await
                        {
                            // wss: the same session over the TLS stream (its frames are
                            // encrypted per client, which TLS requires anyway).
                            Ok(Ok(s)) => http::serve_upgradable(s, &*me, me.shared.server.limits)
                                .await
                                .map(|up| {
                                    monoio::spawn(ws::conn::run(me.clone(), up, fd));
                                }),
                            Ok(Err(e)) => {
                                tracing::debug!(shard = me.id, error = %e, "TLS handshake failed");
                                me.stats.borrow_mut().front.reject(HttpReject::TlsHandshake);
                                None
                            }
                            Err(_) => {
                                me.stats.borrow_mut().front.reject(HttpReject::TlsHandshake);
                                None
                            }
                        }
                    }
                };
                me.stats.borrow_mut().front.http_connections -= 1;
                // Only /ws answers 101; the session then runs as its own (smaller) task and
                // keeps counting against the connection limit until it ends.
                if upgraded.is_none() {
                    me.connections.set(me.connections.get().saturating_sub(1));
                }
            });
        }
    }
}
